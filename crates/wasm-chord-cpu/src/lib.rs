//! The CPU backend: plain threaded kernels, the reference every other backend is tested against.
//!
//! Activations are f32 [`CpuTensor`]s; weights are [`CpuWeight`] views on the file's bytes in
//! their stored type (nothing is expanded at load); the key/value cache is f16 or Q8_0.

pub mod kernels;
pub mod ops;
pub mod tensor;
pub mod threads;

use wasm_chord_core::backend::{
    Activation, AttentionKind, AttentionParams, Backend, BackendError, KvType, Op, RopeParams, WeightData,
};
use wasm_chord_core::TensorType;

pub use tensor::{CacheData, CpuCache, CpuTensor, CpuWeight};
use threads::Threads;

/// CPU backend settings.
#[derive(Clone, Debug)]
pub struct CpuOptions {
    /// Worker threads; 0 means one per physical core.
    pub n_threads: usize,
    /// Round activations, queries, attention weights and GeLU inputs the way llama.cpp's CPU
    /// backend does, so logits agree with it to float noise. Off computes in plain f32.
    pub ggml_rounding: bool,
    /// Flash (tiled) or standard attention. Standard by default: with `ggml_rounding` it is
    /// llama.cpp's non-flash attention bit for bit, and with AVX2 (register tiles) also the
    /// faster of the two. Without `ggml_rounding` standard is the plain scalar reference and
    /// flash the faster.
    pub attention: AttentionKind,
    /// How cache rows are stored.
    pub kv_type: KvType,
}

impl Default for CpuOptions {
    fn default() -> Self {
        Self { n_threads: 0, ggml_rounding: true, attention: AttentionKind::Standard, kv_type: KvType::default() }
    }
}

/// The CPU backend.
pub struct CpuBackend {
    threads: Threads,
    ggml_rounding: bool,
    attention: AttentionKind,
    kv_type: KvType,
}

impl CpuBackend {
    pub fn new(opts: &CpuOptions) -> Self {
        Self { threads: Threads::new(opts.n_threads), ggml_rounding: opts.ggml_rounding, attention: opts.attention, kv_type: opts.kv_type }
    }

    /// Threads the kernels are split over.
    pub fn n_threads(&self) -> usize {
        self.threads.count()
    }
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new(&CpuOptions::default())
    }
}

fn f32_weight(w: &CpuWeight, op: Op) -> Result<Vec<f32>, BackendError> {
    ops::matmul::dequantize_all(w).map_err(|e| BackendError::Other { op, detail: e.to_string() })
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Weight = CpuWeight;
    type Cache = CpuCache;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn kv_type(&self) -> KvType {
        self.kv_type
    }

    fn supports_weight(&self, ty: TensorType) -> bool {
        // Every type core can dequantize; exhaustive so a new type is a decision here.
        match ty {
            TensorType::F32
            | TensorType::F16
            | TensorType::BF16
            | TensorType::Q4_0
            | TensorType::Q4_1
            | TensorType::Q5_0
            | TensorType::Q5_1
            | TensorType::Q8_0
            | TensorType::Q2_K
            | TensorType::Q3_K
            | TensorType::Q4_K
            | TensorType::Q5_K
            | TensorType::Q6_K
            | TensorType::Q8_K
            | TensorType::IQ4_NL
            | TensorType::IQ4_XS => true,
        }
    }

    fn tensor(&self, rows: usize, cols: usize) -> Result<CpuTensor, BackendError> {
        Ok(CpuTensor::zeros(rows, cols))
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<CpuTensor, BackendError> {
        if data.len() != rows * cols {
            return Err(BackendError::Shape { op: Op::Transfer, detail: format!("{} values for [{rows}, {cols}]", data.len()) });
        }
        Ok(CpuTensor { rows, cols, data: data.to_vec() })
    }

    fn download(&self, t: &CpuTensor, out: &mut Vec<f32>) -> Result<(), BackendError> {
        out.clear();
        out.extend_from_slice(&t.data);
        Ok(())
    }

    fn shape(&self, t: &CpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn load_weight(&self, w: WeightData) -> Result<CpuWeight, BackendError> {
        if !self.supports_weight(w.ty) {
            return Err(BackendError::UnsupportedType { backend: "cpu", op: Op::LoadWeight, ty: w.ty });
        }
        w.validate()?;
        let row_bytes = w.ty.row_bytes(w.cols).map_err(|e| BackendError::Other { op: Op::LoadWeight, detail: e.to_string() })?;
        let w = CpuWeight { ty: w.ty, rows: w.rows, cols: w.cols, row_bytes, bytes: w.bytes, packed: None };
        // Only the fused path (llama.cpp's rounding) reads packed rows.
        Ok(if self.ggml_rounding { w.packed_for(kernels::Kernels::get()) } else { w })
    }

    fn weight_shape(&self, w: &CpuWeight) -> (usize, usize, TensorType) {
        (w.rows, w.cols, w.ty)
    }

    fn cache(&self, capacity: usize, cols: usize) -> Result<CpuCache, BackendError> {
        CpuCache::new(self.kv_type, capacity, cols)
    }

    fn matmul(&self, w: &CpuWeight, bias: Option<&CpuWeight>, x: &CpuTensor, out: &mut CpuTensor) -> Result<(), BackendError> {
        ops::matmul::matmul(&self.threads, w, bias, x, out, self.ggml_rounding)
    }

    fn matmul_act_mul(&self, act: Activation, gate: &CpuWeight, up: &CpuWeight, x: &CpuTensor, out: &mut CpuTensor) -> Result<(), BackendError> {
        ops::matmul::matmul_act_mul(&self.threads, act, gate, up, x, out, self.ggml_rounding)
    }

    fn matmul_add(&self, w: &CpuWeight, bias: Option<&CpuWeight>, x: &CpuTensor, acc: &mut CpuTensor) -> Result<(), BackendError> {
        ops::matmul::matmul_add(&self.threads, w, bias, x, acc, self.ggml_rounding)
    }

    fn embed(&self, table: &CpuWeight, ids: &[u32], scale: f32, out: &mut CpuTensor) -> Result<(), BackendError> {
        ops::embed::embed(table, ids, scale, out)
    }

    fn rms_norm(&self, x: &CpuTensor, weight: &CpuWeight, eps: f32, out: &mut CpuTensor) -> Result<(), BackendError> {
        ops::rms_norm::rms_norm(&self.threads, x, &f32_weight(weight, Op::RmsNorm)?, eps, out)
    }

    fn rope(&self, x: &mut CpuTensor, head_dim: usize, positions: &[usize], p: &RopeParams) -> Result<(), BackendError> {
        ops::rope::rope(x, head_dim, positions, p)
    }

    fn store_kv(&self, cache: &mut CpuCache, start: usize, x: &CpuTensor) -> Result<(), BackendError> {
        ops::copy::store_kv(cache, start, x)
    }

    fn attention(
        &self,
        q: &CpuTensor,
        k: &CpuCache,
        v: &CpuCache,
        kv_len: usize,
        p: &AttentionParams,
        out: &mut CpuTensor,
    ) -> Result<(), BackendError> {
        match self.attention {
            AttentionKind::Flash => {
                ops::flash_attention::flash_attention(&self.threads, q, k.rows(), v.rows(), kv_len, p, out, self.ggml_rounding)
            }
            AttentionKind::Standard => ops::attention::attention(&self.threads, q, k, v, kv_len, p, out, self.ggml_rounding),
        }
    }

    fn act_mul(&self, act: Activation, gate: &CpuTensor, up: &CpuTensor, out: &mut CpuTensor) -> Result<(), BackendError> {
        ops::act_mul::act_mul(&self.threads, act, gate, up, out, self.ggml_rounding)
    }

    fn add(&self, acc: &mut CpuTensor, x: &CpuTensor) -> Result<(), BackendError> {
        ops::elementwise::add(acc, x)
    }

    fn scale(&self, x: &mut CpuTensor, s: f32) -> Result<(), BackendError> {
        ops::elementwise::scale(x, s);
        Ok(())
    }

    fn copy_rows(&self, x: &CpuTensor, rows: &[usize], out: &mut CpuTensor) -> Result<(), BackendError> {
        ops::copy::copy_rows(x, rows, out)
    }

    fn softmax(&self, x: &mut CpuTensor) -> Result<(), BackendError> {
        ops::softmax::softmax(x);
        Ok(())
    }

    fn top_k(&self, x: &CpuTensor, row: usize, k: usize) -> Result<Vec<(u32, f32)>, BackendError> {
        ops::softmax::top_k(x, row, k)
    }

    fn argmax(&self, x: &CpuTensor, row: usize) -> Result<u32, BackendError> {
        ops::softmax::argmax(x, row)
    }
}
