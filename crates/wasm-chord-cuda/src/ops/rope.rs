//! Rotary position embeddings; see `kernels/rope.cu`. The YaRN correction dims and the angle
//! step are computed here exactly as the CPU reference computes them.

use cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};
use wasm_chord_core::backend::{BackendError, Op, RopeMode, RopeParams};

use super::{i32_of, launch_err, linear, op_err};
use crate::backend::CudaTensor;
use crate::device::CudaDevice;
use crate::kernels::KernelFile;
use crate::launch::Launch;

pub const SOURCE: KernelFile = KernelFile { name: "rope", source: include_str!("../../kernels/rope.cu") };

fn yarn_corr_dims(n_dims: usize, n_ctx_orig: usize, base: f32, beta_fast: f32, beta_slow: f32) -> [f32; 2] {
    let dim = |n_rot: f32| n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln() / (2.0 * base.ln());
    let start = dim(beta_fast).floor();
    let end = dim(beta_slow).ceil();
    [start.max(0.0), end.min(n_dims as f32 - 1.0)]
}

/// `RopeArgs` in rope.cu: everything the kernels need besides the tensors.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct RopeArgs {
    head_dim: i32,
    n_rot: i32,
    neox: i32,
    theta_scale: f32,
    freq_scale: f32,
    ext_factor: f32,
    attn_factor: f32,
    corr0: f32,
    corr1: f32,
}

// SAFETY: plain old data laid out as rope.cu's `RopeArgs` (three ints, six floats).
unsafe impl DeviceRepr for RopeArgs {}

impl RopeArgs {
    fn new(op: Op, head_dim: usize, p: &RopeParams) -> Result<Self, BackendError> {
        let n_rot = p.n_rot;
        let corr = yarn_corr_dims(n_rot, p.n_ctx_orig, p.freq_base, p.beta_fast, p.beta_slow);
        Ok(Self {
            head_dim: i32_of(op, "head_dim", head_dim)?,
            n_rot: i32_of(op, "n_rot", n_rot)?,
            neox: i32::from(p.mode == RopeMode::Neox),
            theta_scale: p.freq_base.powf(-2.0 / n_rot as f32),
            freq_scale: p.freq_scale,
            ext_factor: p.ext_factor,
            attn_factor: p.attn_factor,
            corr0: corr[0],
            corr1: corr[1],
        })
    }
}

/// Checks a rope of heads of `head_dim` over `cols` columns.
fn check(op: Op, rows: usize, cols: usize, head_dim: usize, positions: usize, freq_factors: Option<&CudaSlice<f32>>, p: &RopeParams) -> Result<(), BackendError> {
    let n_rot = p.n_rot;
    if head_dim == 0 || cols % head_dim != 0 || positions != rows || n_rot > head_dim || n_rot % 2 != 0 {
        return Err(BackendError::Shape { op, detail: format!("x [{rows}, {cols}], head_dim {head_dim}, n_rot {n_rot}, {positions} positions") });
    }
    if freq_factors.is_some_and(|f| f.len() < n_rot / 2) {
        return Err(BackendError::Shape { op, detail: format!("fewer than {} frequency factors", n_rot / 2) });
    }
    Ok(())
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
    check(op, x.rows, x.cols, head_dim, positions.len(), freq_factors, p)?;
    let n = x.rows * (x.cols / head_dim) * (p.n_rot / 2);
    if n == 0 {
        return Ok(());
    }
    let f = dev.function("rope").map_err(op_err(op))?;
    let args = RopeArgs::new(op, head_dim, p)?;
    let (rows, cols) = (i32_of(op, "rows", x.rows)?, i32_of(op, "cols", x.cols)?);
    let null = 0u64;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&mut x.data).arg(positions).arg(&rows).arg(&cols).arg(&args);
    match freq_factors {
        Some(ff) => b.arg(ff),
        None => b.arg(&null),
    };
    // SAFETY: matches `rope`; the kernel bounds-checks its flat index against `n`.
    unsafe { b.launch(linear(n)?) }.map_err(launch_err(op))?;
    Ok(())
}

/// Where the rows of [`rope_store_kv_f16`] go in the caches.
pub enum CacheRow<'a> {
    /// A row index known on the host.
    Host(usize),
    /// The row index in device memory (a decode step replayed from a graph); the caller checked
    /// its value on the host.
    Device(&'a CudaSlice<i32>),
}

/// `rope` of `q` and `k` and the f16 cache writes of `k` and `v` at rows `start..` in one
/// launch (`rope_store_kv_f16` in rope.cu).
#[allow(clippy::too_many_arguments)]
pub fn rope_store_kv_f16(
    dev: &CudaDevice,
    q: &mut CudaTensor,
    k: &mut CudaTensor,
    v: &CudaTensor,
    head_dim: usize,
    positions: &CudaSlice<i32>,
    freq_factors: Option<&CudaSlice<f32>>,
    p: &RopeParams,
    k_cache: (&mut CudaSlice<u16>, usize),
    v_cache: (&mut CudaSlice<u16>, usize),
    start: CacheRow<'_>,
) -> Result<(), BackendError> {
    let op = Op::Rope;
    check(op, q.rows, q.cols, head_dim, positions.len(), freq_factors, p)?;
    check(op, k.rows, k.cols, head_dim, positions.len(), freq_factors, p)?;
    let first = match start {
        CacheRow::Host(s) => s,
        CacheRow::Device(_) => 0,
    };
    let rows = q.rows;
    let fits = |cache: &CudaSlice<u16>, cols: usize| (first + rows).checked_mul(cols).is_some_and(|n| n <= cache.len());
    if v.rows != rows || k.cols != k_cache.1 || v.cols != v_cache.1 || !fits(k_cache.0, k.cols) || !fits(v_cache.0, v.cols) {
        return Err(BackendError::Shape {
            op: Op::StoreKv,
            detail: format!("k [{}, {}] and v [{}, {}] at row {first} into caches of {}/{} cols", k.rows, k.cols, v.rows, v.cols, k_cache.1, v_cache.1),
        });
    }
    let half = p.n_rot / 2;
    let n = rows * (q.cols / head_dim) * half + rows * (k.cols / head_dim) * (head_dim - p.n_rot + half) + rows * v.cols;
    if n == 0 {
        return Ok(());
    }
    let f = dev.function("rope_store_kv_f16").map_err(op_err(op))?;
    let args = RopeArgs::new(op, head_dim, p)?;
    let (rows_i, qc, kc, vc) = (i32_of(op, "rows", rows)?, i32_of(op, "cols", q.cols)?, i32_of(op, "cols", k.cols)?, i32_of(op, "cols", v.cols)?);
    let start_i = i32_of(op, "start", first)?;
    let null = 0u64;
    let mut b = Launch::new(dev, &f);
    b.arg(&q.data).arg(&k.data).arg(&v.data).arg(&*k_cache.0).arg(&*v_cache.0).arg(positions);
    match &start {
        CacheRow::Device(pos) => b.arg(*pos),
        CacheRow::Host(_) => b.arg(&null),
    };
    b.arg(&start_i).arg(&rows_i).arg(&qc).arg(&kc).arg(&vc).value(&args);
    match freq_factors {
        Some(ff) => b.arg(ff),
        None => b.arg(&null),
    };
    // SAFETY: matches `rope_store_kv_f16`; the kernel bounds-checks its flat index against
    // `n`, and the cache rows were checked above (a device row by the caller). It waits for
    // its predecessor (PDL).
    unsafe { b.launch(linear(n)?, dev.pdl()) }.map_err(launch_err(op))?;
    Ok(())
}
