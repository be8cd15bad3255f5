//! RMS normalization; see `kernels/norm.cu`.

use cudarc::driver::{CudaSlice, LaunchConfig};
use wasm_chord_core::backend::{BackendError, Op};

use super::{i32_of, launch_err, op_err};
use crate::backend::CudaTensor;
use crate::device::CudaDevice;
use crate::kernels::KernelFile;
use crate::launch::Launch;
use crate::ops::mmvq::{self, QuantizedActs};
use crate::step::address;

pub const SOURCE: KernelFile = KernelFile { name: "norm", source: include_str!("../../kernels/norm.cu") };

/// Most threads of an `rms_norm_vec4` block; each takes up to two float4 (groups of up to
/// 8192 values).
const VEC4_MAX_THREADS: usize = 1024;

/// Whether `rms_norm_vec4` takes groups of `g` values.
fn vec4(g: usize) -> bool {
    g % 4 == 0 && g <= 8 * VEC4_MAX_THREADS
}

/// Whether [`rms_norm_q8`] takes rows of `cols` values normed as one group.
pub fn quantizes(cols: usize) -> bool {
    cols % 32 == 0 && vec4(cols)
}

/// Normalizes each group of `weight.len()` values of every row of `x` into `out`.
pub fn rms_norm(dev: &CudaDevice, x: &CudaTensor, weight: &CudaSlice<f32>, eps: f32, out: &mut CudaTensor) -> Result<(), BackendError> {
    launch(dev, x, weight, eps, out, None)
}

/// [`rms_norm`] of whole rows (`weight.len() == x.cols`, [`quantizes`]) that also leaves the
/// normed rows quantized for the int8 matvec in `scratch` (at least `mmvq::scratch_len`
/// elements), byte for byte what `mmvq::quantize` of `out` would write.
pub fn rms_norm_q8(dev: &CudaDevice, x: &CudaTensor, weight: &CudaSlice<f32>, eps: f32, out: &mut CudaTensor, scratch: &mut CudaTensor) -> Result<QuantizedActs, BackendError> {
    let op = Op::RmsNorm;
    if weight.len() != x.cols || !quantizes(x.cols) || scratch.len() < mmvq::scratch_len(x.rows, x.cols) {
        return Err(BackendError::Shape { op, detail: format!("int8 rows of x [{}, {}] in groups of {} into {} floats", x.rows, x.cols, weight.len(), scratch.len()) });
    }
    let base = address(&scratch.data, dev.stream());
    let xq = (base, base + (x.rows * x.cols) as u64);
    launch(dev, x, weight, eps, out, Some(xq))?;
    Ok(QuantizedActs::at(base, x.rows, x.cols))
}

fn launch(dev: &CudaDevice, x: &CudaTensor, weight: &CudaSlice<f32>, eps: f32, out: &mut CudaTensor, xq: Option<(u64, u64)>) -> Result<(), BackendError> {
    let op = Op::RmsNorm;
    let g = weight.len();
    if g == 0 || x.cols % g != 0 || out.rows != x.rows || out.cols != x.cols {
        return Err(BackendError::Shape { op, detail: format!("x [{}, {}] in groups of {g} -> out [{}, {}]", x.rows, x.cols, out.rows, out.cols) });
    }
    let groups = x.rows * (x.cols / g);
    if groups == 0 {
        return Ok(());
    }
    let cfg = |threads: usize| LaunchConfig { grid_dim: (groups as u32, 1, 1), block_dim: (threads as u32, 1, 1), shared_mem_bytes: 0 };
    i32_of(op, "groups", groups)?;
    let group = i32_of(op, "group", g)?;
    // Up to two float4 per thread when the group fits a block that way (rows of decode steps
    // and QK-norm heads); the strided kernel otherwise.
    if vec4(g) {
        let f = dev.function("rms_norm_vec4").map_err(op_err(op))?;
        let threads = (g / 4).div_ceil((g / 4).div_ceil(VEC4_MAX_THREADS)).next_multiple_of(32);
        let (xq, xd) = xq.unwrap_or((0, 0));
        let mut b = Launch::new(dev, &f);
        b.arg(&x.data).arg(weight).arg(&out.data).arg(&group).arg(&eps).arg(&xq).arg(&xd);
        // SAFETY: matches `rms_norm_vec4` (16-byte aligned groups: device buffers and a group of
        // a multiple of 4 floats, at most two float4 per thread); the grid covers exactly the
        // groups of `x`; xq/xd, when set, hold the rows' bytes and pairs (`rms_norm_q8`). It
        // waits for its predecessor (PDL).
        unsafe { b.launch(cfg(threads), dev.pdl()) }.map_err(launch_err(op))?;
        return Ok(());
    }
    let f = dev.function("rms_norm").map_err(op_err(op))?;
    let mut b = Launch::new(dev, &f);
    b.arg(&x.data).arg(weight).arg(&out.data).arg(&group).arg(&eps);
    // SAFETY: matches `rms_norm` (which waits for its predecessor); the grid covers exactly the
    // groups of `x`.
    unsafe { b.launch(cfg(if g >= 1024 { 256 } else { 128 }), dev.pdl()) }.map_err(launch_err(op))?;
    Ok(())
}
