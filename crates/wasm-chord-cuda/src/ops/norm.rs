//! RMS normalization; see `kernels/norm.cu`.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use wasm_chord_core::backend::{BackendError, Op};

use super::{i32_of, launch_err, op_err};
use crate::backend::CudaTensor;
use crate::device::CudaDevice;
use crate::kernels::KernelFile;

pub const SOURCE: KernelFile = KernelFile { name: "norm", source: include_str!("../../kernels/norm.cu") };

/// Most threads of an `rms_norm_vec4` block (groups of up to 4096 values).
const VEC4_MAX_THREADS: usize = 1024;

/// Normalizes each group of `weight.len()` values of every row of `x` into `out`.
pub fn rms_norm(dev: &CudaDevice, x: &CudaTensor, weight: &CudaSlice<f32>, eps: f32, out: &mut CudaTensor) -> Result<(), BackendError> {
    let op = Op::RmsNorm;
    let g = weight.len();
    if g == 0 || x.cols % g != 0 || out.rows != x.rows || out.cols != x.cols {
        return Err(BackendError::Shape { op, detail: format!("x [{}, {}] in groups of {g} -> out [{}, {}]", x.rows, x.cols, out.rows, out.cols) });
    }
    let groups = x.rows * (x.cols / g);
    if groups == 0 {
        return Ok(());
    }
    // One float4 per thread when the group fits a block that way (rows of decode steps and
    // QK-norm heads); the strided kernel otherwise.
    let vec4 = g % 4 == 0 && g / 4 <= VEC4_MAX_THREADS;
    let (name, threads) = if vec4 {
        ("rms_norm_vec4", (g / 4).next_multiple_of(32) as u32)
    } else {
        ("rms_norm", if g >= 1024 { 256 } else { 128 })
    };
    let f = dev.function(name).map_err(op_err(op))?;
    let cfg = LaunchConfig { grid_dim: (i32_of(op, "groups", groups)? as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
    let group = i32_of(op, "group", g)?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&x.data).arg(weight).arg(&mut out.data).arg(&group).arg(&eps);
    // SAFETY: matches `rms_norm` / `rms_norm_vec4` (16-byte aligned groups: device buffers and a
    // group of a multiple of 4 floats); the grid covers exactly the groups of `x`.
    unsafe { b.launch(cfg) }.map_err(launch_err(op))?;
    Ok(())
}
