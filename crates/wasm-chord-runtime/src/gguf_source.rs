//! GGUF files as model sources: tensors are views on the file's (memory-mapped) bytes.

use std::sync::Arc;

use wasm_chord_core::backend::SharedBytes;
use wasm_chord_core::gguf::GgufFile;
use wasm_chord_core::hparams::MetadataSource;

use crate::models::{ModelSource, TensorView};

/// A GGUF file seen as a [`ModelSource`].
pub struct GgufSource {
    file: Arc<GgufFile>,
}

impl GgufSource {
    pub fn new(file: Arc<GgufFile>) -> Self {
        Self { file }
    }
}

impl ModelSource for GgufSource {
    fn metadata(&self) -> &dyn MetadataSource {
        self.file.metadata()
    }

    fn tensor(&self, name: &str) -> Option<TensorView> {
        let info = self.file.tensor(name)?;
        let data = self.file.tensor_data(info);
        // The tensor's range within the file, from the slice the reader bounds-checked.
        let start = (data.as_ptr() as usize).checked_sub(self.file.bytes().as_ptr() as usize)?;
        let bytes = SharedBytes::from_file(self.file.clone(), start..start + data.len())?;
        Some(TensorView { ty: info.ty, dims: info.dims.clone(), bytes })
    }

    fn weight_bytes(&self) -> Option<u64> {
        Some(self.file.tensors().iter().map(|t| self.file.tensor_data(t).len() as u64).sum())
    }
}
