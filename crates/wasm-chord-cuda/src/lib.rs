//! The CUDA backend: weights uploaded once and kept in their file type on the device, kernels
//! in `kernels/*.cu` compiled at run time with NVRTC for the device's architecture.
//!
//! The CUDA driver and NVRTC are loaded dynamically (cudarc's `dynamic-loading`), so building
//! needs no CUDA toolkit and a binary without a GPU fails with [`CudaError::NoDriver`] or
//! [`CudaError::NoDevice`] when the backend is created, not at start-up.

pub mod backend;
pub mod buffer;
pub mod device;
pub mod error;
pub mod kernels;
pub mod launch;
pub mod nvrtc;
pub mod ops;
pub mod repack;
pub mod step;

pub use backend::{CacheData, CudaBackend, CudaCache, CudaOptions, CudaTensor, CudaWeight};
pub use buffer::DeviceBuf;
pub use device::CudaDevice;
pub use error::CudaError;
pub use repack::Layout;
pub use step::StepStats;
