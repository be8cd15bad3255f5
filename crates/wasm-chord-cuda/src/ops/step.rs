//! Kernels of the graph-captured decode step (position read from device memory) and the
//! greedy argmax; see `kernels/step.cu`.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use wasm_chord_core::backend::{AttentionParams, BackendError, Op};

use super::{i32_of, launch_err, linear, op_err};
use crate::backend::CudaTensor;
use crate::device::CudaDevice;
use crate::kernels::KernelFile;

pub const SOURCE: KernelFile = KernelFile { name: "step", source: include_str!("../../kernels/step.cu") };

/// Head dimensions up to this fit the step attention's registers (`32 * STEP_ATT_MAX_PER_LANE`).
const MAX_HEAD_DIM: usize = 256;

/// Writes the rows of `x` into the f16 cache rows (of `x.cols` values) starting at `pos[0]`;
/// the caller checked that they fit.
pub fn store_f16_at(dev: &CudaDevice, cache: &mut CudaSlice<u16>, pos: &CudaSlice<i32>, x: &CudaTensor) -> Result<(), BackendError> {
    let op = Op::StoreKv;
    if x.rows * x.cols > cache.len() {
        return Err(BackendError::Shape { op, detail: format!("{} rows of {} into a cache of {} values", x.rows, x.cols, cache.len()) });
    }
    let n = x.rows * x.cols;
    if n == 0 {
        return Ok(());
    }
    let f = dev.function("store_f16_at").map_err(op_err(op))?;
    let (cols, n64) = (i32_of(op, "cols", x.cols)?, n as u64);
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&x.data).arg(cache).arg(pos).arg(&cols).arg(&n64);
    // SAFETY: matches `store_f16_at`; the position was checked on the host when it was set.
    unsafe { b.launch(linear(n)?) }.map_err(launch_err(op))?;
    Ok(())
}

/// Writes the rows of `x` into the q8_0 cache (int8 values `qs`, f16 scales `d`; rows of
/// `x.cols` values) starting at row `pos[0]` (`store_q8_0_at` in flash.cu); the caller checked
/// that they fit.
pub fn store_q8_0_at(dev: &CudaDevice, qs: &mut CudaSlice<i8>, d: &mut CudaSlice<u16>, pos: &CudaSlice<i32>, x: &CudaTensor) -> Result<(), BackendError> {
    let op = Op::StoreKv;
    let n = x.rows * x.cols;
    if n > qs.len() || x.cols % 32 != 0 || n / 32 > d.len() {
        return Err(BackendError::Shape { op, detail: format!("{} rows of {} into a q8_0 cache of {} values", x.rows, x.cols, qs.len()) });
    }
    if n == 0 {
        return Ok(());
    }
    let f = dev.function("store_q8_0_at").map_err(op_err(op))?;
    let (cols, blocks) = (i32_of(op, "cols", x.cols)?, (n / 32) as u64);
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&x.data).arg(qs).arg(d).arg(pos).arg(&cols).arg(&blocks);
    // SAFETY: matches `store_q8_0_at`; one warp per block of 32 values, the rows at pos[0]
    // checked on the host when the position was set.
    unsafe { b.launch(linear(n)?) }.map_err(launch_err(op))?;
    Ok(())
}

/// Attention of the query rows at positions `pos[0]..` over the f16 cache rows up to them;
/// `k` and `v` are the caches with their row widths. The caller checked that the rows fit.
pub fn attention_at(
    dev: &CudaDevice,
    q: &CudaTensor,
    k: (&CudaSlice<u16>, usize),
    v: (&CudaSlice<u16>, usize),
    pos: &CudaSlice<i32>,
    p: &AttentionParams,
    out: &mut CudaTensor,
) -> Result<(), BackendError> {
    let op = Op::Attention;
    let (dk, dv) = (p.head_dim_k, p.head_dim_v);
    let ok = p.n_head > 0
        && p.n_head_kv > 0
        && p.n_head % p.n_head_kv == 0
        && dk % 32 == 0
        && dv % 32 == 0
        && dk > 0
        && dv > 0
        && dk <= MAX_HEAD_DIM
        && dv <= MAX_HEAD_DIM
        && q.cols == p.n_head * dk
        && out.cols == p.n_head * dv
        && out.rows == q.rows
        && k.1 == p.n_head_kv * dk
        && v.1 == p.n_head_kv * dv
        && p.window != Some(0);
    if !ok {
        return Err(BackendError::Shape {
            op,
            detail: format!("q [{}, {}], k/v caches of {}/{} cols, out [{}, {}], {p:?}", q.rows, q.cols, k.1, v.1, out.rows, out.cols),
        });
    }
    if q.rows == 0 {
        return Ok(());
    }
    let f = dev.function("attention_at").map_err(op_err(op))?;
    let cfg = LaunchConfig {
        grid_dim: (i32_of(op, "n_head", p.n_head)? as u32, i32_of(op, "rows", q.rows)? as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let (nh, nkv, dk, dv) = (i32_of(op, "n_head", p.n_head)?, i32_of(op, "n_head_kv", p.n_head_kv)?, dk as i32, dv as i32);
    let window = i32_of(op, "window", p.window.unwrap_or(0))?;
    let softcap = p.softcap.unwrap_or(0.0);
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&q.data).arg(k.0).arg(v.0).arg(&mut out.data).arg(pos);
    b.arg(&nh).arg(&nkv).arg(&dk).arg(&dv).arg(&window).arg(&p.scale).arg(&softcap);
    // SAFETY: matches `attention_at`; shapes checked above and the position on the host when
    // it was set, so keys 0..=pos lie in the caches.
    unsafe { b.launch(cfg) }.map_err(launch_err(op))?;
    Ok(())
}

/// `out[0]` = the column of the largest value of row `row` of `x` (ties: lower index).
pub fn argmax(dev: &CudaDevice, x: &CudaTensor, row: usize, out: &mut CudaSlice<u32>) -> Result<(), BackendError> {
    let op = Op::TopK;
    if row >= x.rows || x.cols == 0 {
        return Err(BackendError::Shape { op, detail: format!("argmax of row {row} of [{}, {}]", x.rows, x.cols) });
    }
    let f = dev.function("argmax_row").map_err(op_err(op))?;
    let src = x.data.slice(row * x.cols..(row + 1) * x.cols);
    let cols = i32_of(op, "cols", x.cols)?;
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&src).arg(&cols).arg(out);
    // SAFETY: matches `argmax_row`; `src` holds `cols` values and `out` one.
    unsafe { b.launch(cfg) }.map_err(launch_err(op))?;
    Ok(())
}
