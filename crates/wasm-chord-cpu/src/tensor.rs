//! The CPU backend's tensors: f32 activations, quantized weight views, f16 or Q8_0 cache rows.

use half::f16;
use wasm_chord_core::backend::{BackendError, KvType, Op, SharedBytes};
use wasm_chord_core::quant::BlockQ8_0;
use wasm_chord_core::TensorType;

use crate::kernels::{Kernels, PackedWeight};
use crate::ops::flash_attention::KvRows;
use std::sync::Arc;

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
    /// The same rows repacked for the chosen kernels, where they have a packed layout for `ty`.
    pub packed: Option<Arc<PackedWeight>>,
}

impl CpuWeight {
    /// A view of `rows` rows of `cols` weights of type `ty` in `bytes`, not packed; `None` if
    /// the lengths do not describe that shape.
    pub fn new(ty: TensorType, rows: usize, cols: usize, bytes: SharedBytes) -> Option<Self> {
        let row_bytes = ty.row_bytes(cols).ok()?;
        (row_bytes.checked_mul(rows)? == bytes.bytes().len()).then_some(Self { ty, rows, cols, row_bytes, bytes, packed: None })
    }

    /// This weight with its rows also repacked for `kernels`, where they have a layout for it.
    /// Matmuls then read only the packed copy, so the file's pages of the rows are released as
    /// they are packed ([`SharedBytes::release_pages`]: the copy and the file never both sit
    /// in memory); `embed` reads rows back out of the packed copy ([`PackedWeight::file_row`]).
    pub fn packed_for(mut self, kernels: &Kernels) -> Self {
        let bytes = self.bytes.clone();
        self.packed = kernels.pack(self.ty, self.rows, self.cols, self.bytes.bytes(), &mut |r| bytes.release_pages(r)).map(Arc::new);
        self
    }

    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.bytes.bytes()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}

/// Cache storage of one layer: `capacity` rows of `cols` values.
#[derive(Clone, Debug)]
pub struct CpuCache {
    pub cols: usize,
    pub capacity: usize,
    pub data: CacheData,
}

/// The cache's values in their stored type.
#[derive(Clone, Debug)]
pub enum CacheData {
    F16(Vec<f16>),
    /// `cols / 32` blocks per row.
    Q8_0(Vec<BlockQ8_0>),
}

impl CpuCache {
    /// Zeroed storage for `capacity` rows of `cols` values of type `ty`; an error that names
    /// the bytes needed when they cannot be had.
    pub fn new(ty: KvType, capacity: usize, cols: usize) -> Result<Self, BackendError> {
        let fail = |why: &str| {
            let bytes = ty.row_bytes(cols).and_then(|r| r.checked_mul(capacity));
            let need = bytes.map_or("more than the address space".to_string(), |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64));
            BackendError::Other { op: Op::Alloc, detail: format!("{} cache of {capacity} x {cols}: {why} (needs {need})", ty.name()) }
        };
        let n = capacity.checked_mul(cols).ok_or_else(|| fail("size overflows"))?;
        let data = match ty {
            KvType::F16 => CacheData::F16(zeroed(n, f16::ZERO).map_err(|_| fail("out of memory"))?),
            KvType::Q8_0 => {
                if cols % 32 != 0 {
                    return Err(fail("rows must be whole blocks of 32 values"));
                }
                CacheData::Q8_0(zeroed(n / 32, BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }).map_err(|_| fail("out of memory"))?)
            }
        };
        Ok(Self { cols, capacity, data })
    }

    /// A cache holding f16 `data`, `data.len() / cols` rows.
    pub fn from_f16(cols: usize, data: Vec<f16>) -> Self {
        Self { cols, capacity: data.len().checked_div(cols).unwrap_or(0), data: CacheData::F16(data) }
    }

    pub fn kv_type(&self) -> KvType {
        match self.data {
            CacheData::F16(_) => KvType::F16,
            CacheData::Q8_0(_) => KvType::Q8_0,
        }
    }

    /// The rows as the attention kernels read them.
    pub fn rows(&self) -> KvRows<'_> {
        match &self.data {
            CacheData::F16(data) => KvRows::F16 { cols: self.cols, data },
            CacheData::Q8_0(data) => KvRows::Q8_0 { cols: self.cols, data },
        }
    }
}

/// `n` zeroed values, or an error instead of an abort when the memory is not there.
fn zeroed<T: Clone>(n: usize, zero: T) -> Result<Vec<T>, std::collections::TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)?;
    v.resize(n, zero);
    Ok(v)
}
