//! The kernel sources: each `.cu` file under `kernels/` is embedded by the op module that
//! launches it (`ops/<op>.rs` beside `kernels/<op>.cu`); the shared headers are listed here and
//! handed to NVRTC by name.

/// One kernel source file, compiled as one module.
#[derive(Clone, Copy, Debug)]
pub struct KernelFile {
    /// File name without `.cu`.
    pub name: &'static str,
    pub source: &'static str,
}

/// Headers the kernel files include, by the name they include them under.
pub const HEADERS: [(&str, &str); 5] = [
    ("attention.cuh", include_str!("../kernels/attention.cuh")),
    ("common.cuh", include_str!("../kernels/common.cuh")),
    ("dequant.cuh", include_str!("../kernels/dequant.cuh")),
    ("matvec.cuh", include_str!("../kernels/matvec.cuh")),
    ("mmvq.cuh", include_str!("../kernels/mmvq.cuh")),
];

/// Every kernel file.
pub fn all() -> [KernelFile; 9] {
    [
        crate::ops::matvec::SOURCE,
        crate::ops::mmvq::SOURCE,
        crate::ops::norm::SOURCE,
        crate::ops::rope::SOURCE,
        crate::ops::elementwise::SOURCE,
        crate::ops::attention::SOURCE,
        crate::ops::gemm::SOURCE,
        crate::ops::flash::SOURCE,
        crate::ops::step::SOURCE,
    ]
}
