//! Causal attention over the cache (f16 or q8_0) with an online softmax, one block per query row
//! and head: the `AttentionKind::Standard` path; see `kernels/attention.cu`.

use cudarc::driver::{LaunchConfig, PushKernelArg};
use wasm_chord_core::backend::{AttentionParams, BackendError, Op};

use super::{i32_of, launch_err, op_err};
use crate::backend::{CacheData, CudaCache, CudaTensor};
use crate::device::CudaDevice;
use crate::kernels::KernelFile;

pub const SOURCE: KernelFile = KernelFile { name: "attention", source: include_str!("../../kernels/attention.cu") };

/// Largest head dimension the kernel holds in registers (`32 * ATT_MAX_PER_LANE`).
const MAX_HEAD_DIM: usize = 256;

pub fn attention(
    dev: &CudaDevice,
    q: &CudaTensor,
    k: &CudaCache,
    v: &CudaCache,
    kv_len: usize,
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
        && k.cols == p.n_head_kv * dk
        && v.cols == p.n_head_kv * dv
        && kv_len <= k.capacity
        && kv_len <= v.capacity
        && p.q_pos0 + q.rows <= kv_len
        && p.window != Some(0)
        && k.kv_type() == v.kv_type();
    if !ok {
        return Err(BackendError::Shape {
            op,
            detail: format!(
                "q [{}, {}], k/v caches of {}/{} cols, kv_len {kv_len}, out [{}, {}], {p:?} (head dims must be multiples of 32 up to {MAX_HEAD_DIM})",
                q.rows, q.cols, k.cols, v.cols, out.rows, out.cols
            ),
        });
    }
    if q.rows == 0 {
        return Ok(());
    }
    let name = match k.data {
        CacheData::F16(_) => "attention",
        CacheData::Q8_0 { .. } => "attention_q8_0",
    };
    let f = dev.function(name).map_err(op_err(op))?;
    let cfg = LaunchConfig {
        grid_dim: (i32_of(op, "n_head", p.n_head)? as u32, i32_of(op, "rows", q.rows)? as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let (nh, nkv, dk, dv) = (i32_of(op, "n_head", p.n_head)?, i32_of(op, "n_head_kv", p.n_head_kv)?, dk as i32, dv as i32);
    let (kvl, qp) = (i32_of(op, "kv_len", kv_len)?, i32_of(op, "q_pos0", p.q_pos0)?);
    let window = i32_of(op, "window", p.window.unwrap_or(0))?;
    let softcap = p.softcap.unwrap_or(0.0);
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&q.data);
    match (&k.data, &v.data) {
        (CacheData::F16(kd), CacheData::F16(vd)) => b.arg(kd).arg(vd).arg(kd).arg(vd),
        (CacheData::Q8_0 { qs: kq, d: kd }, CacheData::Q8_0 { qs: vq, d: vd }) => b.arg(kq).arg(vq).arg(kd).arg(vd),
        _ => return Err(BackendError::Shape { op, detail: "keys and values of different cache types".into() }),
    };
    b.arg(&mut out.data);
    b.arg(&nh).arg(&nkv).arg(&dk).arg(&dv).arg(&kvl).arg(&qp).arg(&window).arg(&p.scale).arg(&softcap);
    // SAFETY: matches ATTENTION_ARGS; shapes checked above, so keys 0..kv_len lie in the caches.
    unsafe { b.launch(cfg) }.map_err(launch_err(op))?;
    Ok(())
}
