//! Flash attention on tensor cores for prefill, split over the key sequence for decode
//! (flash-decoding); see `kernels/flash.cu`.
//!
//! The launch takes every per-call scalar (`kv_len`, `q_pos0`) as a kernel argument and the
//! grid only from shapes and the split length. Decode steps replayed from a CUDA graph use
//! [`flash_attention_at`]: the position is read from device memory, the number of splits is
//! planned for the cache's capacity, and the kernel spreads the keys present over them (splits
//! past `kv_len` see no key and are ignored by the combine), so one grid serves every position.

use std::collections::HashMap;
use std::sync::Mutex;

use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaSlice, LaunchConfig};
use wasm_chord_core::backend::{AttentionParams, BackendError, Op};

use super::{i32_of, launch_err, op_err};
use crate::device::CudaDevice;
use crate::kernels::KernelFile;
use crate::launch::Launch;

pub const SOURCE: KernelFile = KernelFile { name: "flash", source: include_str!("../../kernels/flash.cu") };

const LOG2E: f32 = std::f32::consts::LOG2_E;

/// Head dimensions the kernels are built for (keys and values of one size).
pub const HEAD_DIMS: [usize; 3] = [64, 128, 256];

/// Keys or values as the kernels read them.
#[derive(Clone, Copy)]
pub enum KvData<'a> {
    /// f16 bits, `capacity * cols` values.
    F16(&'a CudaSlice<u16>),
    /// bf16 bits, `capacity * cols` values (tests and benches; the engine's cache is f16 or q8_0).
    Bf16(&'a CudaSlice<u16>),
    /// q8_0 kept as two arrays: `capacity * cols` int8 values and `capacity * cols / 32` f16 scales.
    Q8_0 { qs: &'a CudaSlice<i8>, d: &'a CudaSlice<u16> },
}

/// One layer's keys or values: `capacity` rows of `cols` values.
#[derive(Clone, Copy)]
pub struct KvView<'a> {
    pub data: KvData<'a>,
    pub cols: usize,
    pub capacity: usize,
}

impl KvView<'_> {
    fn tag(&self) -> &'static str {
        match self.data {
            KvData::F16(_) => "f16",
            KvData::Bf16(_) => "bf16",
            KvData::Q8_0 { .. } => "q8_0",
        }
    }
}

/// Kernel choices: accuracy against speed, and which prefill variant (for tests and benches).
#[derive(Clone, Copy, Debug, Default)]
pub struct FlashOptions {
    /// bf16 only: round P to bf16 once, as FlashAttention does (about 1e-3 relative error),
    /// instead of carrying it as a sum of two bf16 values (1.5x the P V tensor-core work).
    pub fast_bf16: bool,
    /// Prefill with 4 warps of 32 rows (`Some(true)`) or 8 warps of 16 (`Some(false)`);
    /// `None` takes [`PREFILL_W4`]. Head dimension 256 always uses 8 warps.
    pub prefill_w4: Option<bool>,
}

/// The default prefill variant: 4 warps of 32 query rows each read every K/V fragment from
/// shared memory once for two mmas (half the shared-memory traffic of 8 warps of 16 rows).
pub const PREFILL_W4: bool = true;

/// Scratch for split partials, grown on demand and kept (a graph capture must find it already
/// large enough: run one call of the same shape before capturing), and the blocks per
/// multiprocessor of each kernel used so far (its shared-memory limit raised once).
#[derive(Default)]
pub struct FlashWorkspace {
    partials: Mutex<Option<CudaSlice<f32>>>,
    occupancy: Mutex<HashMap<String, usize>>,
}

/// Whether the flash kernels handle these parameters (other head sizes use the standard kernel).
pub fn supports(p: &AttentionParams) -> bool {
    p.head_dim_k == p.head_dim_v && HEAD_DIMS.contains(&p.head_dim_k)
}

/// Whether [`flash_attention_at`] takes these rows: the decode kernels' (at most 16 packed
/// rows per KV head), the only ones that read the position from device memory.
pub fn decodes_at(n_q: usize, p: &AttentionParams) -> bool {
    supports(p) && p.n_head_kv > 0 && n_q * (p.n_head / p.n_head_kv) <= 16
}

/// Query rows per block (16 when a KV head has at most 16 packed query rows: decode), keys
/// per tile, and warps per block (decode: warps split each tile's keys), as flash.cu
/// instantiates them.
fn tile_shape(rows: usize, d: usize, w4: bool) -> (usize, usize, usize) {
    let bn = if d >= 256 { 32 } else { 64 };
    if rows <= 16 {
        (16, bn, if d >= 256 { 2 } else { 4 })
    } else if w4 {
        (128, if d == 128 { 32 } else { 64 }, 4)
    } else {
        (128, bn, 8)
    }
}

/// Shared memory of one block, as `FlashSmem` in flash.cu computes it, and at least what the
/// decode kernels' final merge of `warps` partial results needs.
fn smem_bytes(d: usize, q8: bool, bm: usize, bn: usize, warps: usize) -> usize {
    let sd = d + 8;
    let q = bm * sd * 2;
    let tiles = if q8 { 2 } else { 4 } * bn * sd * 2;
    let raw = if q8 { 2 * 2 * (bn * d + bn * (d / 32) * 2) } else { 0 };
    let merge = if bm == 16 { warps * 16 * (d + 2) * 4 } else { 0 };
    (q + tiles + raw).max(merge)
}

/// How the key sequence is split: `(splits, split_len)`, for `blocks` blocks per split and
/// `slots` blocks resident on the whole GPU at once. One split when the blocks already fill
/// half the slots; else as many splits as fit in one wave (a second, partial wave would cost
/// nearly a whole one), each at least two tiles of `bn` keys.
pub fn split_plan(blocks: usize, kv_len: usize, bn: usize, slots: usize) -> (usize, usize) {
    let whole = kv_len.max(1).next_multiple_of(bn);
    if 2 * blocks > slots || kv_len <= 2 * bn {
        return (1, whole);
    }
    let splits = (slots / blocks).min(kv_len.div_ceil(2 * bn)).max(1);
    let split_len = kv_len.div_ceil(splits).next_multiple_of(bn);
    (kv_len.div_ceil(split_len), split_len)
}

/// Attention of `n_q` query rows `q` (`[n_q, n_head * d]` f32) over key/value rows `0..kv_len`
/// into `out` (`[n_q, n_head * d]`), with the causal mask, sliding window and softcap of `p`.
/// Shapes are checked by the caller ([`check`]).
#[allow(clippy::too_many_arguments)]
pub fn flash_attention(
    dev: &CudaDevice,
    ws: &FlashWorkspace,
    q: &CudaSlice<f32>,
    n_q: usize,
    k: &KvView,
    v: &KvView,
    kv_len: usize,
    p: &AttentionParams,
    opts: FlashOptions,
    out: &mut CudaSlice<f32>,
) -> Result<(), BackendError> {
    launch(dev, ws, q, n_q, k, v, kv_len, p, opts, None, None, out).map(|_| ())
}

/// [`flash_attention`] for a decode step captured in a CUDA graph: the query rows sit at
/// positions `pos[0]..` and see keys `0..pos[0] + n_q`, read on the device; `kv_len` is the
/// host's value of that, for the shape check. The grid depends only on shapes and the caches'
/// capacity. Inside a capture (`may_grow` false) nothing is allocated: `Ok(false)` says the
/// workspace is too small and nothing was launched (run the step eagerly once first, which
/// grows it and sets the kernel's shared-memory limit). The caller notes
/// [`FlashWorkspace::partials_address`] in the step's fingerprint.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_at(
    dev: &CudaDevice,
    ws: &FlashWorkspace,
    q: &CudaSlice<f32>,
    n_q: usize,
    k: &KvView,
    v: &KvView,
    kv_len: usize,
    pos: &CudaSlice<i32>,
    p: &AttentionParams,
    may_grow: bool,
    out: &mut CudaSlice<f32>,
) -> Result<bool, BackendError> {
    flash_attention_at_q8(dev, ws, q, n_q, k, v, kv_len, pos, p, may_grow, None, out).map(|r| r.is_some())
}

/// [`flash_attention_at`] that, when the keys are split (the combine kernel writes `out`), also
/// quantizes `out` for the int8 matvec as `mmvq::quantize` would (same bytes): `q8` = the
/// (bytes, scale/sum pairs) addresses of an `mmvq::scratch_len` scratch. `None`: nothing was
/// launched (workspace too small, as `Ok(false)` there); `Some(true)`: `q8` now holds `out`'s
/// int8 activations; `Some(false)`: one split, not quantized.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_at_q8(
    dev: &CudaDevice,
    ws: &FlashWorkspace,
    q: &CudaSlice<f32>,
    n_q: usize,
    k: &KvView,
    v: &KvView,
    kv_len: usize,
    pos: &CudaSlice<i32>,
    p: &AttentionParams,
    may_grow: bool,
    q8: Option<(u64, u64)>,
    out: &mut CudaSlice<f32>,
) -> Result<Option<bool>, BackendError> {
    if !decodes_at(n_q, p) {
        return Err(shape_err(format!("{n_q} query rows of {p:?}: more than 16 packed rows per KV head for a device-side position")));
    }
    if q8.is_some() && p.head_dim_v % 32 != 0 {
        return Err(shape_err(format!("int8 output of heads of {} values", p.head_dim_v)));
    }
    launch(dev, ws, q, n_q, k, v, kv_len, p, FlashOptions::default(), Some((pos, may_grow)), q8, out)
}

impl FlashWorkspace {
    /// Device address of the split partials (0 before the first split launch): a graph that
    /// captured a split launch is valid only while this stays the same.
    pub fn partials_address(&self, dev: &CudaDevice) -> u64 {
        let guard = self.partials.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map_or(0, |b| crate::step::address(b, dev.stream()))
    }
}

#[allow(clippy::too_many_arguments)]
fn launch(
    dev: &CudaDevice,
    ws: &FlashWorkspace,
    q: &CudaSlice<f32>,
    n_q: usize,
    k: &KvView,
    v: &KvView,
    kv_len: usize,
    p: &AttentionParams,
    opts: FlashOptions,
    pos: Option<(&CudaSlice<i32>, bool)>,
    int8_out: Option<(u64, u64)>,
    out: &mut CudaSlice<f32>,
) -> Result<Option<bool>, BackendError> {
    let op = Op::Attention;
    check(n_q, k, v, kv_len, p)?;
    let (qn, on) = (n_q * p.n_head * p.head_dim_k, n_q * p.n_head * p.head_dim_v);
    if q.len() < qn || out.len() < on {
        return Err(shape_err(format!("q of {} values, out of {} for {n_q} rows of {p:?}", q.len(), out.len())));
    }
    if n_q == 0 {
        return Ok(Some(false));
    }
    let may_grow = pos.is_none_or(|(_, grow)| grow);
    let d = p.head_dim_k;
    let g = p.n_head / p.n_head_kv;
    let rows = n_q * g;
    let q8 = matches!(k.data, KvData::Q8_0 { .. });
    let bf16 = matches!(k.data, KvData::Bf16(_));
    let fast = opts.fast_bf16 && bf16 && rows > 16;
    let w4 = rows > 16 && d <= 128 && !(bf16 && !fast && d == 128) && opts.prefill_w4.unwrap_or(PREFILL_W4);
    let (bm, bn, warps) = tile_shape(rows, d, w4);
    let name = format!("flash_{}_d{d}_m{bm}{}{}", k.tag(), if w4 { "w4" } else { "" }, if fast { "_fast" } else { "" });
    let f = dev.function(&name).map_err(op_err(op))?;
    let smem = smem_bytes(d, q8, bm, bn, warps);
    let per_sm = {
        let mut occupancy = ws.occupancy.lock().unwrap_or_else(|e| e.into_inner());
        match occupancy.get(&name) {
            Some(&n) => n,
            None if !may_grow => return Ok(None),
            None => {
                if smem > 48 * 1024 {
                    f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
                        .map_err(launch_err(op))?;
                }
                let n = f.occupancy_max_active_blocks_per_multiprocessor(warps as u32 * 32, smem, None).map_err(launch_err(op))?;
                occupancy.insert(name.clone(), n.max(1) as usize);
                n.max(1) as usize
            }
        }
    };
    let tiles = rows.div_ceil(bm);
    // A graph-captured step plans its splits for the most keys it can see (the kernel then
    // spreads the keys present over them).
    let plan_len = if pos.is_some() { k.capacity.min(v.capacity) } else { kv_len };
    let (splits, split_len) = split_plan(tiles * p.n_head_kv, plan_len, bn, per_sm * dev.sm_count());
    let (softcap_mul, qscale) = match p.softcap {
        Some(cap) if cap > 0.0 => (cap * p.scale * LOG2E, 1.0 / cap),
        _ => (0.0f32, p.scale * LOG2E),
    };
    let cfg = LaunchConfig {
        grid_dim: (u32::try_from(tiles).map_err(|_| shape_err(format!("{tiles} query tiles")))?, p.n_head_kv as u32, splits as u32),
        block_dim: (warps as u32 * 32, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let ints = [
        i32_of(op, "n_q", n_q)?,
        i32_of(op, "n_head", p.n_head)?,
        i32_of(op, "n_head_kv", p.n_head_kv)?,
        i32_of(op, "kv_len", kv_len)?,
        i32_of(op, "q_pos0", p.q_pos0)?,
        i32_of(op, "window", p.window.unwrap_or(0))?,
    ];
    let split_len_i = i32_of(op, "split_len", split_len)?;

    // Partial outputs, then (max, sum), per split and row; a single split writes `out` directly
    // and the kernel only receives (unused) pointers into the workspace.
    let off = if splits > 1 { splits * n_q * p.n_head * d } else { 1 };
    let need = if splits > 1 { splits * n_q * p.n_head * (d + 2) } else { 2 };
    let mut guard = ws.partials.lock().unwrap_or_else(|e| e.into_inner());
    let part = match guard.take() {
        Some(b) if b.len() >= need => guard.insert(b),
        old if !may_grow => {
            *guard = old;
            return Ok(None);
        }
        old => {
            drop(old);
            guard.insert(dev.stream().alloc_zeros::<f32>(need).map_err(launch_err(Op::Alloc))?)
        }
    };
    {
        let (part_o, part_ml) = part.split_at_mut(off);
        let mut b = Launch::new(dev, &f);
        b.arg(q);
        match (k.data, v.data) {
            (KvData::F16(kk) | KvData::Bf16(kk), KvData::F16(vv) | KvData::Bf16(vv)) => {
                b.arg(kk).arg(vv).arg(kk).arg(vv);
            }
            (KvData::Q8_0 { qs: kq, d: kd }, KvData::Q8_0 { qs: vq, d: vd }) => {
                b.arg(kq).arg(vq).arg(kd).arg(vd);
            }
            _ => return Err(shape_err("keys and values of different types".into())),
        }
        b.arg(&*out).arg(&part_o).arg(&part_ml);
        for x in &ints {
            b.arg(x);
        }
        b.arg(&qscale).arg(&softcap_mul).arg(&split_len_i);
        let no_pos = 0u64;
        match pos {
            Some((pos, _)) => b.arg(pos),
            None => b.arg(&no_pos),
        };
        // SAFETY: matches FLASH_ARGS; check() verified the q/out lengths and that rows
        // 0..kv_len of both caches exist (with a device position, the caller checked that it
        // is the host's, and the grid covers the capacity); the partials hold
        // splits * n_q * n_head rows. Every flash kernel waits for its predecessor (PDL).
        unsafe { b.launch(cfg, dev.pdl()) }.map_err(launch_err(op))?;
    }
    if splits > 1 {
        let combine = dev.function("flash_combine").map_err(op_err(op))?;
        let (part_o, part_ml) = part.split_at(off);
        let n_rows = i32_of(op, "rows", n_q * p.n_head)?;
        let (d_i, splits_i) = (d as i32, splits as i32);
        let (xq, xd) = int8_out.unwrap_or((0, 0));
        let mut b = Launch::new(dev, &combine);
        b.arg(&part_o).arg(&part_ml).arg(out).arg(&n_rows).arg(&d_i).arg(&splits_i).arg(&xq).arg(&xd);
        let cfg = LaunchConfig { grid_dim: (n_rows as u32, 1, 1), block_dim: (d as u32, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: matches flash_combine (which waits for its predecessor); the partials were
        // written by the launch above; xq/xd, when set, hold n_q * n_head * d bytes and a pair
        // per 32 of them (the caller's `mmvq::scratch_len` scratch), d a multiple of 32.
        unsafe { b.launch(cfg, dev.pdl()) }.map_err(launch_err(op))?;
    }
    Ok(Some(splits > 1 && int8_out.is_some()))
}

fn shape_err(detail: String) -> BackendError {
    BackendError::Shape { op: Op::Attention, detail }
}

/// The op's shape contract for the flash kernels.
pub fn check(n_q: usize, k: &KvView, v: &KvView, kv_len: usize, p: &AttentionParams) -> Result<(), BackendError> {
    let d = p.head_dim_k;
    let ok = supports(p)
        && p.n_head > 0
        && p.n_head_kv > 0
        && p.n_head % p.n_head_kv == 0
        && k.cols == p.n_head_kv * d
        && v.cols == p.n_head_kv * d
        && kv_len <= k.capacity
        && kv_len <= v.capacity
        && p.q_pos0 + n_q <= kv_len
        && p.window != Some(0)
        && std::mem::discriminant(&k.data) == std::mem::discriminant(&v.data);
    if !ok {
        return Err(shape_err(format!(
            "flash attention: {n_q} query rows, {} k/v caches of {}/{} cols and {}/{} rows, kv_len {kv_len}, {p:?} (head dims {HEAD_DIMS:?}, equal for keys and values)",
            k.tag(),
            k.cols,
            v.cols,
            k.capacity,
            v.capacity
        )));
    }
    Ok(())
}
