//! Model graphs, one file per architecture, built from the shared blocks in [`blocks`].
//!
//! Adding an architecture means one new file and one line in [`ARCHITECTURES`].

pub mod blocks;
pub mod gemma3;
#[cfg(test)]
mod layer_goldens;
pub mod llama;
pub mod qwen2;

use wasm_chord_core::backend::{Backend, SharedBytes, WeightData};
use wasm_chord_core::hparams::{HParams, MetadataSource};
use wasm_chord_core::TensorType;

use crate::error::RuntimeError;
use crate::kv_cache::{KvCache, LayerCache};

/// A tensor as the model file stores it.
#[derive(Clone, Debug)]
pub struct TensorView {
    pub ty: TensorType,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<usize>,
    pub bytes: SharedBytes,
}

/// What a model is loaded from: metadata and named tensors (a GGUF file, or a test fixture).
pub trait ModelSource {
    fn metadata(&self) -> &dyn MetadataSource;
    fn tensor(&self, name: &str) -> Option<TensorView>;
    /// Bytes of all tensors, when known (checked against a device's free memory before loading).
    fn weight_bytes(&self) -> Option<u64> {
        None
    }
}

/// A loaded architecture: weights on a backend and the forward pass over them, in three
/// stages so tests can run a single layer from a reference hidden state.
pub trait Architecture<B: Backend>: Send + Sync {
    /// Key and value row widths of every layer's cache.
    fn cache_widths(&self) -> Vec<(usize, usize)>;

    /// The hidden state `[n, n_embd]` entering layer 0.
    fn embed(&self, b: &B, batch: &blocks::Batch<'_>) -> Result<B::Tensor, RuntimeError>;

    /// Runs layer `il` on hidden state `x`, writing the batch's keys and values into `cache`.
    fn layer(&self, b: &B, il: usize, cache: &mut LayerCache<B>, batch: &blocks::Batch<'_>, x: B::Tensor) -> Result<B::Tensor, RuntimeError>;

    /// Runs layer `il` like [`Architecture::layer`] but returns only the hidden-state rows
    /// `rows` (in that order). The last layer runs this way when not every position needs
    /// logits: keys and values are still written for the whole batch, but an architecture may
    /// skip the other rows' work after attention, as llama.cpp does (`inp_out_ids`).
    fn layer_rows(&self, b: &B, il: usize, cache: &mut LayerCache<B>, batch: &blocks::Batch<'_>, x: B::Tensor, rows: &[usize]) -> Result<B::Tensor, RuntimeError> {
        let y = self.layer(b, il, cache, batch, x)?;
        blocks::pick_rows(b, &y, rows)
    }

    /// Logits `[rows.len(), n_vocab]` of the chosen rows of the final hidden state.
    fn head(&self, b: &B, x: &B::Tensor, rows: &[usize]) -> Result<B::Tensor, RuntimeError>;

    /// Runs `tokens` at positions `kv.len()..` (writing their keys and values into `kv`,
    /// without advancing its length) and returns the logits `[rows.len(), n_vocab]` of the
    /// batch rows `rows`.
    fn forward(&self, b: &B, kv: &mut KvCache<B>, tokens: &[u32], rows: &[usize]) -> Result<B::Tensor, RuntimeError> {
        let batch = blocks::Batch::new(tokens, kv.len());
        let mut x = self.embed(b, &batch)?;
        let n_layer = kv.layers.len();
        // Every row is needed when all positions get logits; otherwise the last layer keeps
        // only the output rows, which the head then takes in order.
        let all_rows = rows.len() == batch.len() && rows.iter().enumerate().all(|(i, &r)| i == r);
        for (il, cache) in kv.layers.iter_mut().enumerate() {
            if il + 1 == n_layer && !all_rows {
                x = self.layer_rows(b, il, cache, &batch, x, rows)?;
                let kept: Vec<usize> = (0..rows.len()).collect();
                return self.head(b, &x, &kept);
            }
            x = self.layer(b, il, cache, &batch, x)?;
        }
        self.head(b, &x, rows)
    }
}

type Constructor<B> = fn(&B, &HParams, &dyn ModelSource) -> Result<Box<dyn Architecture<B>>, RuntimeError>;

/// `general.architecture` names and their constructors.
fn architectures<B: Backend + 'static>() -> [(&'static str, Constructor<B>); 3] {
    [
        ("llama", llama::Llama::load),
        ("qwen2", qwen2::Qwen2::load),
        ("gemma3", gemma3::Gemma3::load),
    ]
}

/// The names of the supported architectures.
pub fn supported_architectures() -> Vec<&'static str> {
    architectures::<wasm_chord_cpu::CpuBackend>().iter().map(|(name, _)| *name).collect()
}

/// Builds the graph for `hp.arch` (the `&'static` name is returned for display).
pub(crate) fn load<B: Backend + 'static>(
    backend: &B,
    hp: &HParams,
    src: &dyn ModelSource,
) -> Result<(&'static str, Box<dyn Architecture<B>>), RuntimeError> {
    let (name, build) = architectures::<B>()
        .into_iter()
        .find(|(name, _)| *name == hp.arch)
        .ok_or_else(|| RuntimeError::UnknownArchitecture { arch: hp.arch.clone(), supported: supported_architectures() })?;
    Ok((name, build(backend, hp, src)?))
}

/// Fetches tensors by name, checks their shapes and hands them to the backend.
pub struct WeightLoader<'a, B: Backend> {
    pub backend: &'a B,
    pub src: &'a dyn ModelSource,
}

impl<'a, B: Backend> WeightLoader<'a, B> {
    /// Tensor `name` of shape `dims` (ggml order); absent is `Ok(None)`.
    pub fn optional(&self, name: &str, dims: &[usize]) -> Result<Option<B::Weight>, RuntimeError> {
        let Some(t) = self.src.tensor(name) else { return Ok(None) };
        if trim_ones(&t.dims) != trim_ones(dims) {
            return Err(RuntimeError::TensorShape { name: name.to_string(), expected: dims.to_vec(), got: t.dims });
        }
        if !self.backend.supports_weight(t.ty) {
            return Err(RuntimeError::TensorType { name: name.to_string(), ty: t.ty, backend: self.backend.name() });
        }
        let cols = dims.first().copied().unwrap_or(1);
        let rows = dims.iter().skip(1).product::<usize>();
        Ok(Some(self.backend.load_weight(WeightData { ty: t.ty, rows, cols, bytes: t.bytes })?))
    }

    /// Tensor `name` of shape `dims`; absent is an error.
    pub fn required(&self, name: &str, dims: &[usize]) -> Result<B::Weight, RuntimeError> {
        self.optional(name, dims)?.ok_or_else(|| RuntimeError::MissingTensor { name: name.to_string() })
    }

    /// A small f32 vector read on the host (rope frequency factors).
    pub fn host_f32(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, RuntimeError> {
        let Some(t) = self.src.tensor(name) else { return Ok(None) };
        if t.dims.iter().product::<usize>() != len {
            return Err(RuntimeError::TensorShape { name: name.to_string(), expected: vec![len], got: t.dims });
        }
        let mut out = vec![0.0; len];
        wasm_chord_core::quant::dequantize(t.ty, t.bytes.bytes(), &mut out).map_err(|e| RuntimeError::File(format!("{name}: {e}")))?;
        Ok(Some(out))
    }
}

/// Dims without trailing 1s, so [576] and [576, 1] compare equal.
fn trim_ones(dims: &[usize]) -> &[usize] {
    let n = dims.iter().rposition(|d| *d != 1).map_or(0, |i| i + 1);
    &dims[..n]
}
