//! Matmul of many tokens (prompt processing) on the tensor cores: the weight matrix is
//! dequantized into an f16 scratch matrix (one pass over its quantized bytes), the activations
//! are converted to f16, and cuBLAS (`cublasGemmEx`, f16 operands, f32 accumulation and output)
//! multiplies them; see `kernels/gemm.cu`. Below [`MIN_TOKENS`] tokens the matvec kernels are
//! faster (they read the quantized weights once and write nothing but the output).

use std::sync::Mutex;

use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use wasm_chord_core::backend::{BackendError, Op};

use super::{i32_of, launch_err, op_err};
use crate::backend::{CudaTensor, CudaWeight};
use crate::device::CudaDevice;
use crate::error::CudaError;
use crate::kernels::KernelFile;

pub const SOURCE: KernelFile = KernelFile { name: "gemm", source: include_str!("../../kernels/gemm.cu") };

/// Token counts from which `CudaBackend::matmul` takes this path: one more than the 8-token
/// kernel's batch, so speculative decoding's 2-8 token batches stay on the exact f32 kernels.
pub const MIN_TOKENS: usize = 9;

/// Most weights dequantized at once (128 MiB of f16): bigger matrices (a vocabulary's output
/// matrix, 13B's 13824 x 5120 feed-forward) are multiplied in row chunks so the scratch stays
/// bounded.
const CHUNK_ELEMS: usize = 64 << 20;

/// Chunks are whole multiples of this many rows. cuBLAS picks its fast tensor-core kernels only
/// for 16-byte aligned operands and tile-friendly sizes: a chunk of 13107 rows (13B's
/// feed-forward cut at `CHUNK_ELEMS`) left the next chunk's output 4-byte aligned and an odd
/// row count, which took 13B's pp512 below 7B's per-weight speed by 2x (H100).
const CHUNK_ROW_ALIGN: usize = 128;

/// Rows per chunk: the matrix cut into equal chunks of at most `CHUNK_ELEMS` weights (or
/// `CHUNK_ROW_ALIGN` rows), each a multiple of `CHUNK_ROW_ALIGN` rows but the last.
fn chunk_rows(rows: usize, cols: usize) -> usize {
    let n_chunks = (rows * cols).div_ceil(CHUNK_ELEMS).max(1);
    rows.div_ceil(n_chunks).next_multiple_of(CHUNK_ROW_ALIGN).min(rows).max(1)
}

/// Threads per block of the gemm.cu kernels; `DQ_THREADS` in the dequantization.
const THREADS: u32 = 256;

/// A cuBLAS handle on the device stream and the f16 scratch buffers, grown on demand.
pub struct Gemm {
    blas: CudaBlas,
    scratch: Mutex<Scratch>,
}

#[derive(Default)]
struct Scratch {
    w: Option<CudaSlice<u16>>,
    x: Option<CudaSlice<u16>>,
}

/// `buf` with room for at least `n` values, reallocated (contents dropped) if it is smaller.
fn grow<'a>(dev: &CudaDevice, buf: &'a mut Option<CudaSlice<u16>>, n: usize) -> Result<&'a mut CudaSlice<u16>, BackendError> {
    if buf.as_ref().is_none_or(|b| b.len() < n) {
        *buf = None; // free the old buffer before taking the new one
        *buf = Some(dev.stream().alloc_zeros::<u16>(n.max(1)).map_err(launch_err(Op::Alloc))?);
    }
    buf.as_mut().ok_or_else(|| BackendError::Other { op: Op::Alloc, detail: "gemm scratch".into() })
}

fn blas_err(op: Op) -> impl Fn(blas::CublasError) -> BackendError {
    move |e| BackendError::Other { op, detail: format!("cuBLAS: {e:?}") }
}

fn grid(n: usize, op: Op) -> Result<LaunchConfig, BackendError> {
    let blocks = u32::try_from(n.div_ceil(THREADS as usize)).map_err(|_| BackendError::Shape { op, detail: format!("{n} threads exceed one launch") })?;
    Ok(LaunchConfig { grid_dim: (blocks.max(1), 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 })
}

impl Gemm {
    /// A cuBLAS handle on the device's stream; an error if libcublas cannot be loaded.
    pub fn new(dev: &CudaDevice) -> Result<Self, CudaError> {
        // SAFETY: only tries to open the library; cudarc panics on first use if it is missing.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(CudaError::NoCublas);
        }
        let blas = CudaBlas::new(dev.stream().clone()).map_err(|e| CudaError::Cublas { context: "creating a handle".into(), detail: format!("{e:?}") })?;
        Ok(Self { blas, scratch: Mutex::new(Scratch::default()) })
    }

    /// `out[t, o] = sum_k w[o, k] * x[t, k] (+ bias[o])` with f16 operands (shapes and type
    /// already checked by the caller: `matvec::check`).
    pub fn matmul(&self, dev: &CudaDevice, w: &CudaWeight, bias: Option<&CudaSlice<f32>>, x: &CudaTensor, out: &mut CudaTensor) -> Result<(), BackendError> {
        let op = Op::MatMul;
        let (rows, cols, n_tok) = (w.rows, w.cols, x.rows);
        if rows == 0 || n_tok == 0 {
            return Ok(());
        }
        let stream = dev.stream();
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let Scratch { w: w16, x: x16 } = &mut *scratch;

        let x16 = grow(dev, x16, n_tok * cols)?;
        let n = (n_tok * cols) as u64;
        let f = dev.function("f32_to_f16").map_err(op_err(op))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&x.data).arg(&mut *x16).arg(&n);
        // SAFETY: matches `f32_to_f16`; both buffers hold at least n values.
        unsafe { b.launch(grid(n_tok * cols, op)?) }.map_err(launch_err(op))?;

        let chunk = chunk_rows(rows, cols);
        let w16 = grow(dev, w16, chunk * cols)?;
        let dequant = dev.function(&format!("dequant_f16_{}", w.layout.kernel_type(w.ty))).map_err(op_err(op))?;
        let (cols_i, n_tok_i, rows_i) = (i32_of(op, "cols", cols)?, i32_of(op, "tokens", n_tok)?, i32_of(op, "rows", rows)?);
        let row_stride = w.row_stride as u64;
        let (alpha, beta) = (1.0f32, 0.0f32);
        for row0 in (0..rows).step_by(chunk) {
            let n_rows = chunk.min(rows - row0);
            let (row0_i, n_rows_i) = (i32_of(op, "row", row0)?, i32_of(op, "rows", n_rows)?);
            let mut b = stream.launch_builder(&dequant);
            b.arg(&w.bytes).arg(&row_stride).arg(&row0_i).arg(&n_rows_i).arg(&cols_i).arg(&mut *w16);
            // SAFETY: matches `dequant_f16_<type>`; rows row0 .. row0 + n_rows exist in `w` and
            // the scratch holds n_rows * cols values.
            unsafe { b.launch(grid(n_rows * (cols / 32), op)?) }.map_err(launch_err(op))?;

            // In cuBLAS' column-major terms: C [n_rows, n_tok] (ld rows: these rows of the
            // row-major out [n_tok, rows]) = A^T B, where A is the row-major scratch
            // [n_rows, cols] read as a column-major [cols, n_rows] and B the row-major x16
            // [n_tok, cols] read as a column-major [cols, n_tok].
            let (wp, _w_guard) = w16.device_ptr(stream);
            let (xp, _x_guard) = x16.device_ptr(stream);
            let (yp, _y_guard) = out.data.device_ptr_mut(stream);
            let c = yp + (row0 * std::mem::size_of::<f32>()) as u64;
            // SAFETY: the pointers are live device buffers of the sizes the dimensions imply
            // (A: n_rows x cols, B: n_tok x cols, C: n_tok columns of `rows` floats from row0);
            // alpha and beta are host f32 as the default pointer mode and compute type expect.
            unsafe {
                blas::gemm_ex(
                    *self.blas.handle(),
                    blas_sys::cublasOperation_t::CUBLAS_OP_T,
                    blas_sys::cublasOperation_t::CUBLAS_OP_N,
                    n_rows_i,
                    n_tok_i,
                    cols_i,
                    (&alpha as *const f32).cast(),
                    wp as *const _,
                    blas_sys::cudaDataType::CUDA_R_16F,
                    cols_i,
                    xp as *const _,
                    blas_sys::cudaDataType::CUDA_R_16F,
                    cols_i,
                    (&beta as *const f32).cast(),
                    c as *mut _,
                    blas_sys::cudaDataType::CUDA_R_32F,
                    rows_i,
                    blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(blas_err(op))?;
        }

        if let Some(bias) = bias {
            let n = (n_tok * rows) as u64;
            let f = dev.function("add_bias_rows").map_err(op_err(op))?;
            let mut b = stream.launch_builder(&f);
            b.arg(&mut out.data).arg(bias).arg(&rows_i).arg(&n);
            // SAFETY: matches `add_bias_rows`; out holds n values and bias `rows`.
            unsafe { b.launch(grid(n_tok * rows, op)?) }.map_err(launch_err(op))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_aligned_and_bounded() {
        for (rows, cols) in [(13824, 5120), (5120, 13824), (32000, 5120), (32000, 4096), (11008, 4096), (100, 64), (1, 8192 * 8192 + 32)] {
            let c = chunk_rows(rows, cols);
            assert!(c >= 1 && c <= rows, "{rows}x{cols}: {c}");
            assert!(c == rows || c % CHUNK_ROW_ALIGN == 0, "{rows}x{cols}: {c} rows is not aligned");
            assert!(c * cols <= CHUNK_ELEMS + CHUNK_ROW_ALIGN * cols, "{rows}x{cols}: {c} rows exceed the scratch");
        }
        assert_eq!(chunk_rows(13824, 5120), 6912);
        assert_eq!(chunk_rows(11008, 4096), 11008);
    }
}
