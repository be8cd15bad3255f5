//! The CPU backend's tensors: f32 activations, quantized weight views, f16 cache rows.

use half::f16;
use wasm_chord_core::backend::SharedBytes;
use wasm_chord_core::TensorType;

/// An f32 activation matrix `[rows, cols]`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl CpuTensor {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self { rows, cols, data: vec![0.0; rows * cols] }
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// A weight viewed in place, in its file type: `rows` rows of `cols` elements.
#[derive(Clone, Debug)]
pub struct CpuWeight {
    pub ty: TensorType,
    pub rows: usize,
    pub cols: usize,
    /// Bytes per row.
    pub row_bytes: usize,
    pub bytes: SharedBytes,
}

impl CpuWeight {
    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.bytes.bytes()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}

/// Cache storage: `capacity` rows of `cols` f16 values.
#[derive(Clone, Debug)]
pub struct CpuCache {
    pub cols: usize,
    pub capacity: usize,
    pub data: Vec<f16>,
}
