//! Errors of the CUDA backend: what failed (driver, NVRTC, a kernel), where, and why.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver found (libcuda.so.1 could not be loaded): is the NVIDIA driver installed? Use another backend otherwise")]
    NoDriver,
    #[error("no CUDA GPU found: {detail}")]
    NoDevice { detail: String },
    #[error("NVRTC not found (libnvrtc.so.13): set WASM_CHORD_NVRTC_LIB to its path, or run scripts/install-nvrtc.sh; tried {tried}")]
    NoNvrtc { tried: String },
    #[error("CUDA runtime headers (cuda_fp16.h) not found: set WASM_CHORD_CUDA_INCLUDE, or run scripts/install-nvrtc.sh; tried {tried}")]
    NoHeaders { tried: String },
    #[error("NVRTC could not compile {file}.cu for {arch}: {log}")]
    Compile { file: String, arch: String, log: String },
    #[error("NVRTC call {call} failed for {file}.cu: {detail}")]
    Nvrtc { call: &'static str, file: String, detail: String },
    #[error("CUDA driver: {context}: {source}")]
    Driver { context: String, source: cudarc::driver::DriverError },
    #[error("kernel {name} is not in any compiled kernel file")]
    MissingKernel { name: String },
    #[error("cuBLAS not found (libcublas.so.13): prompts use the slower matmul kernels; add the CUDA toolkit's lib64 to LD_LIBRARY_PATH")]
    NoCublas,
    #[error("cuBLAS: {context}: {detail}")]
    Cublas { context: String, detail: String },
    #[error("kernel cache {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
}

/// Wraps a driver error with what was being done.
pub(crate) fn driver(context: impl Into<String>) -> impl FnOnce(cudarc::driver::DriverError) -> CudaError {
    let context = context.into();
    move |source| CudaError::Driver { context, source }
}
