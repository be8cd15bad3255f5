//! Host wrappers of the kernels, one module per kernel file (`ops/<op>.rs` beside
//! `kernels/<op>.cu`). They check shapes, pick the kernel and launch it on the device stream.

pub mod attention;
pub mod elementwise;
pub mod flash;
pub mod gemm;
pub mod matvec;
pub mod mmvq;
pub mod norm;
pub mod rope;
pub mod step;

use cudarc::driver::LaunchConfig;
use wasm_chord_core::backend::{BackendError, Op};

use crate::error::CudaError;

/// Threads per block of the element-wise kernels.
pub(crate) const THREADS: u32 = 256;

/// A 1-D launch covering `n` elements.
pub(crate) fn linear(n: usize) -> Result<LaunchConfig, BackendError> {
    let blocks = n.div_ceil(THREADS as usize);
    let blocks = u32::try_from(blocks.max(1)).map_err(|_| BackendError::Other { op: Op::Alloc, detail: format!("{n} elements exceed one launch") })?;
    Ok(LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 })
}

/// A backend error for op `op` from a CUDA error.
pub(crate) fn op_err(op: Op) -> impl Fn(CudaError) -> BackendError {
    move |e| BackendError::Other { op, detail: e.to_string() }
}

/// A backend error for op `op` from a driver error (a failed launch or copy).
pub(crate) fn launch_err(op: Op) -> impl Fn(cudarc::driver::DriverError) -> BackendError {
    move |e| BackendError::Other { op, detail: format!("CUDA: {e}") }
}

/// Converts a size to the i32 a kernel takes.
pub(crate) fn i32_of(op: Op, what: &str, n: usize) -> Result<i32, BackendError> {
    i32::try_from(n).map_err(|_| BackendError::Shape { op, detail: format!("{what} = {n} exceeds i32") })
}
