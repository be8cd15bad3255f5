//! The CPU backend: plain threaded kernels, the reference every other backend is tested against.

pub mod kernels;
