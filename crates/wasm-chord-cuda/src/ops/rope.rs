//! Rotary position embeddings; see `kernels/rope.cu`. The YaRN correction dims and the angle
//! step are computed here exactly as the CPU reference computes them.

use cudarc::driver::{CudaSlice, PushKernelArg};
use wasm_chord_core::backend::{BackendError, Op, RopeMode, RopeParams};

use super::{i32_of, launch_err, linear, op_err};
use crate::backend::CudaTensor;
use crate::device::CudaDevice;
use crate::kernels::KernelFile;

pub const SOURCE: KernelFile = KernelFile { name: "rope", source: include_str!("../../kernels/rope.cu") };

fn yarn_corr_dims(n_dims: usize, n_ctx_orig: usize, base: f32, beta_fast: f32, beta_slow: f32) -> [f32; 2] {
    let dim = |n_rot: f32| n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln() / (2.0 * base.ln());
    let start = dim(beta_fast).floor();
    let end = dim(beta_slow).ceil();
    [start.max(0.0), end.min(n_dims as f32 - 1.0)]
}

/// Rotates every head of `head_dim` values of `x` in place; `positions` (one per row) and
/// `freq_factors` already on the device.
pub fn rope(
    dev: &CudaDevice,
    x: &mut CudaTensor,
    head_dim: usize,
    positions: &CudaSlice<i32>,
    freq_factors: Option<&CudaSlice<f32>>,
    p: &RopeParams,
) -> Result<(), BackendError> {
    let op = Op::Rope;
    let n_rot = p.n_rot;
    if head_dim == 0 || x.cols % head_dim != 0 || positions.len() != x.rows || n_rot > head_dim || n_rot % 2 != 0 {
        return Err(BackendError::Shape {
            op,
            detail: format!("x [{}, {}], head_dim {head_dim}, n_rot {n_rot}, {} positions", x.rows, x.cols, positions.len()),
        });
    }
    if freq_factors.is_some_and(|f| f.len() < n_rot / 2) {
        return Err(BackendError::Shape { op, detail: format!("fewer than {} frequency factors", n_rot / 2) });
    }
    let n = x.rows * (x.cols / head_dim) * (n_rot / 2);
    if n == 0 {
        return Ok(());
    }
    let f = dev.function("rope").map_err(op_err(op))?;
    let theta_scale = p.freq_base.powf(-2.0 / n_rot as f32);
    let corr = yarn_corr_dims(n_rot, p.n_ctx_orig, p.freq_base, p.beta_fast, p.beta_slow);
    let (rows, cols, hd, nr) = (i32_of(op, "rows", x.rows)?, i32_of(op, "cols", x.cols)?, i32_of(op, "head_dim", head_dim)?, i32_of(op, "n_rot", n_rot)?);
    let neox = i32::from(p.mode == RopeMode::Neox);
    let null = 0u64;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&mut x.data).arg(positions).arg(&rows).arg(&cols).arg(&hd).arg(&nr).arg(&neox);
    b.arg(&theta_scale).arg(&p.freq_scale).arg(&p.ext_factor).arg(&p.attn_factor).arg(&corr[0]).arg(&corr[1]);
    match freq_factors {
        Some(ff) => b.arg(ff),
        None => b.arg(&null),
    };
    // SAFETY: matches `rope`; the kernel bounds-checks its flat index against `n`.
    unsafe { b.launch(linear(n)?) }.map_err(launch_err(op))?;
    Ok(())
}
