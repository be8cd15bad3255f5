//! Flash attention: causal multi-head attention computed tile by tile with an online softmax,
//! so no buffer grows with the square of the sequence (the standard kernel keeps a whole row of
//! scores per query and head; this one keeps [`KV_TILE`] of them).
//!
//! Work is split into tasks of up to [`Q_BLOCK`] query rows times a group of query heads that
//! share one key/value head (grouped-query attention reads each key/value tile once for all
//! the heads of its group, never repeating K/V per head). A task walks the key/value tiles its
//! rows can see (causal, and a sliding window when the layer has one), converts each tile to
//! f32 once, and for every row and head keeps the running maximum `m`, the running sum of
//! `exp(s - m)` and the unnormalized output, rescaling both when the maximum grows. The
//! running maximum keeps every exponent at or below zero, so large scores cannot overflow.
//!
//! The cache may hold f16 rows or Q8_0 rows (blocks of 32 values, so each head's width must be
//! a multiple of 32); either is expanded per tile.

use half::f16;
use half::slice::HalfFloatSliceExt;
use wasm_chord_core::backend::{AttentionParams, BackendError, Op};
use wasm_chord_core::quant::{q8_0, BlockQ8_0};

use super::dot::{axpy_f32, dot_f32};
use crate::tensor::CpuTensor;
use crate::threads::Threads;

/// Keys and values per tile: a tile of 64 rows of 128 f32s is 32 KiB, so a key tile and a
/// value tile stay in L2 while every row and head of a task uses them.
pub const KV_TILE: usize = 64;
/// Query rows per task: enough rows to reuse each converted tile, few enough that a prefill
/// splits into many tasks.
pub const Q_BLOCK: usize = 16;

/// Values per Q8_0 block.
const Q8_0_BLOCK: usize = 32;

/// One layer's key or value rows as the kernel reads them: `capacity` rows of `cols` values.
#[derive(Clone, Copy, Debug)]
pub enum KvRows<'a> {
    F16 { cols: usize, data: &'a [f16] },
    /// `cols / 32` blocks per row.
    Q8_0 { cols: usize, data: &'a [BlockQ8_0] },
}

impl KvRows<'_> {
    pub fn cols(&self) -> usize {
        match *self {
            KvRows::F16 { cols, .. } | KvRows::Q8_0 { cols, .. } => cols,
        }
    }

    /// Whole rows held.
    pub fn capacity(&self) -> usize {
        match *self {
            KvRows::F16 { cols, data } => data.len().checked_div(cols).unwrap_or(0),
            KvRows::Q8_0 { cols, data } => (data.len() * Q8_0_BLOCK).checked_div(cols).unwrap_or(0),
        }
    }

    /// Whether a head of `width` values starting at any multiple of `width` can be read alone.
    pub(crate) fn head_width_ok(&self, width: usize) -> bool {
        match self {
            KvRows::F16 { .. } => true,
            KvRows::Q8_0 { cols, .. } => width % Q8_0_BLOCK == 0 && cols % Q8_0_BLOCK == 0,
        }
    }

    /// Expands columns `col0..col0 + width` of rows `first..first + out.len() / width` into
    /// `out`, row after row. Bounds were checked by the caller against `capacity`.
    pub(crate) fn load(&self, first: usize, col0: usize, width: usize, out: &mut [f32]) {
        for (r, dst) in out.chunks_exact_mut(width).enumerate() {
            let row = first + r;
            match *self {
                KvRows::F16 { cols, data } => data[row * cols + col0..][..width].convert_to_f32_slice(dst),
                KvRows::Q8_0 { cols, data } => {
                    let b0 = (row * cols + col0) / Q8_0_BLOCK;
                    q8_0::dequantize(&data[b0..b0 + width / Q8_0_BLOCK], dst);
                }
            }
        }
    }
}

/// Attention of the query rows `q` `[n, n_head * head_dim_k]` over cache rows `0..kv_len`
/// into `out` `[n, n_head * head_dim_v]`: the same inputs and result as
/// [`super::attention::attention`], in memory linear in `n`. `round_q` rounds the queries to
/// f16 first, as llama.cpp's CPU backend does before its products with an f16 cache.
pub fn flash_attention(
    threads: &Threads,
    q: &CpuTensor,
    k: KvRows<'_>,
    v: KvRows<'_>,
    kv_len: usize,
    p: &AttentionParams,
    out: &mut CpuTensor,
    round_q: bool,
) -> Result<(), BackendError> {
    let n = q.rows;
    let (dk, dv) = (p.head_dim_k, p.head_dim_v);
    let shape_ok = p.n_head_kv > 0
        && p.n_head % p.n_head_kv == 0
        && dk > 0
        && dv > 0
        && q.cols == p.n_head * dk
        && q.data.len() == n * q.cols
        && k.cols() == p.n_head_kv * dk
        && v.cols() == p.n_head_kv * dv
        && k.head_width_ok(dk)
        && v.head_width_ok(dv)
        && out.rows == n
        && out.cols == p.n_head * dv
        && out.data.len() == n * out.cols
        && kv_len <= k.capacity()
        && kv_len <= v.capacity()
        && p.q_pos0 + n <= kv_len
        && p.window != Some(0);
    if !shape_ok {
        return Err(BackendError::Shape {
            op: Op::Attention,
            detail: format!(
                "flash: q [{n}, {}], k cols {} (capacity {}), v cols {} (capacity {}), out [{}, {}], kv_len {kv_len}, {p:?}",
                q.cols,
                k.cols(),
                k.capacity(),
                v.cols(),
                v.capacity(),
                out.rows,
                out.cols
            ),
        });
    }
    if n == 0 {
        return Ok(());
    }
    for_each_task(threads, p, n, &mut out.data, |head0, heads, rows, dst| {
        attend_block_fast(q, k, v, p, head0, heads, rows, round_q, dst)
    });
    Ok(())
}

/// Runs `task(head0, heads, rows, dst)` on the threads for every block of up to [`Q_BLOCK`]
/// query rows times a set of `heads` heads of one key/value group ([`heads_per_task`]);
/// `dst` holds the task's `[heads * head_dim_v]` piece of each of its rows of `out`
/// (`[n, n_head * head_dim_v]`), disjoint pieces handed out up front so tasks write in place.
pub(super) fn for_each_task(
    threads: &Threads,
    p: &AttentionParams,
    n: usize,
    out: &mut [f32],
    task: impl Fn(usize, usize, std::ops::Range<usize>, &mut [&mut [f32]]) + Sync,
) {
    let dv = p.head_dim_v;
    let n_blocks = n.div_ceil(Q_BLOCK);
    let heads = heads_per_task(p.n_head / p.n_head_kv, p.n_head, n_blocks, threads.count());
    // Task `head_set * n_blocks + block` owns, in every row of its block, the columns of its heads.
    let mut tasks: Vec<Vec<&mut [f32]>> = (0..p.n_head / heads * n_blocks).map(|_| Vec::with_capacity(Q_BLOCK)).collect();
    for (i, row) in out.chunks_exact_mut(p.n_head * dv).enumerate() {
        for (head_set, part) in row.chunks_exact_mut(heads * dv).enumerate() {
            tasks[head_set * n_blocks + i / Q_BLOCK].push(part);
        }
    }
    threads.for_each_chunk(&mut tasks, 1, |i, dst| {
        let (head_set, block) = (i / n_blocks, i % n_blocks);
        if let Some(dst) = dst.first_mut() {
            task(head_set * heads, heads, block * Q_BLOCK..n.min((block + 1) * Q_BLOCK), dst);
        }
    });
}

/// Query heads per task: the whole group (so each tile is converted once per group) when
/// that still leaves two tasks per thread, else the largest divisor of the group that does
/// (decoding one token has a single query block, so heads are the only parallelism).
pub(super) fn heads_per_task(group: usize, n_head: usize, n_blocks: usize, n_threads: usize) -> usize {
    (1..=group).rev().filter(|h| group % h == 0).find(|h| n_head / h * n_blocks >= 2 * n_threads).unwrap_or(1)
}

/// The cache rows query row `i` sees: causal, within the window.
pub(super) fn visible(p: &AttentionParams, i: usize) -> std::ops::Range<usize> {
    let pos = p.q_pos0 + i;
    p.window.map_or(0, |w| (pos + 1).saturating_sub(w))..pos + 1
}

/// [`attend_block`] compiled for AVX2 where the CPU has it: the dot products' eight running
/// sums fill one register instead of two; every operation and its order stay the same.
#[allow(clippy::too_many_arguments)]
fn attend_block_fast(
    q: &CpuTensor,
    k: KvRows<'_>,
    v: KvRows<'_>,
    p: &AttentionParams,
    head0: usize,
    heads: usize,
    rows: std::ops::Range<usize>,
    round_q: bool,
    dst: &mut [&mut [f32]],
) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx2(
            q: &CpuTensor,
            k: KvRows<'_>,
            v: KvRows<'_>,
            p: &AttentionParams,
            head0: usize,
            heads: usize,
            rows: std::ops::Range<usize>,
            round_q: bool,
            dst: &mut [&mut [f32]],
        ) {
            attend_block(q, k, v, p, head0, heads, rows, round_q, dst)
        }
        // SAFETY: the feature was just checked.
        unsafe { avx2(q, k, v, p, head0, heads, rows, round_q, dst) };
        return;
    }
    attend_block(q, k, v, p, head0, heads, rows, round_q, dst)
}

/// One task: query rows `rows` of heads `head0..head0 + heads` (all in one key/value group),
/// written to `dst`, one `[heads * dv]` piece per row.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend_block(
    q: &CpuTensor,
    k: KvRows<'_>,
    v: KvRows<'_>,
    p: &AttentionParams,
    head0: usize,
    heads: usize,
    rows: std::ops::Range<usize>,
    round_q: bool,
    dst: &mut [&mut [f32]],
) {
    let (dk, dv) = (p.head_dim_k, p.head_dim_v);
    let kv_head = head0 / (p.n_head / p.n_head_kv);
    let n_rows = rows.len();
    // Per (row, head), row-major: the query, the running max, the running sum of
    // exponentials, and the unnormalized output.
    let mut qs = vec![0.0f32; n_rows * heads * dk];
    for (r, i) in rows.clone().enumerate() {
        let src = &q.data[i * q.cols + head0 * dk..][..heads * dk];
        let d = &mut qs[r * heads * dk..][..heads * dk];
        d.copy_from_slice(src);
        if round_q {
            d.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
        }
    }
    let mut max = vec![f32::NEG_INFINITY; n_rows * heads];
    let mut sum = vec![0.0f32; n_rows * heads];
    let mut acc = vec![0.0f32; n_rows * heads * dv];
    let mut k_tile = vec![0.0f32; KV_TILE * dk];
    let mut v_tile = vec![0.0f32; KV_TILE * dv];
    let mut scores = [0.0f32; KV_TILE];

    let span = visible(p, rows.start).start..visible(p, rows.end - 1).end;
    let mut t0 = span.start;
    while t0 < span.end {
        let t1 = span.end.min(t0 + KV_TILE);
        k.load(t0, kv_head * dk, dk, &mut k_tile[..(t1 - t0) * dk]);
        v.load(t0, kv_head * dv, dv, &mut v_tile[..(t1 - t0) * dv]);
        for r in 0..n_rows {
            let see = visible(p, rows.start + r);
            let (j0, j1) = (see.start.max(t0), see.end.min(t1));
            if j0 >= j1 {
                continue;
            }
            let s = &mut scores[..j1 - j0];
            for h in 0..heads {
                let slot = r * heads + h;
                let qh = &qs[slot * dk..][..dk];
                for (s, j) in s.iter_mut().zip(j0..j1) {
                    let mut x = dot_f32(&k_tile[(j - t0) * dk..][..dk], qh);
                    if let Some(cap) = p.softcap {
                        x = cap * (x / cap).tanh();
                    }
                    *s = x * p.scale;
                }
                let tile_max = s.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
                let new_max = max[slot].max(tile_max);
                // exp(-inf) = 0 on the first tile, where the sum and output are still zero.
                let rescale = (max[slot] - new_max).exp();
                max[slot] = new_max;
                let mut tile_sum = 0.0f32;
                for x in s.iter_mut() {
                    *x = (*x - new_max).exp();
                    tile_sum += *x;
                }
                sum[slot] = sum[slot] * rescale + tile_sum;
                let o = &mut acc[slot * dv..][..dv];
                if rescale != 1.0 {
                    o.iter_mut().for_each(|y| *y *= rescale);
                }
                for (w, j) in s.iter().zip(j0..j1) {
                    axpy_f32(o, *w, &v_tile[(j - t0) * dv..][..dv]);
                }
            }
        }
        t0 = t1;
    }
    // Every row sees at least its own position, whose term is exp(0) at the final maximum
    // or larger, so each sum is at least 1.
    for ((o, s), d) in acc.chunks_exact(dv).zip(&sum).zip(dst.iter_mut().flat_map(|row| row.chunks_exact_mut(dv))) {
        let inv = 1.0 / s;
        d.iter_mut().zip(o).for_each(|(d, o)| *d = o * inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    /// The AVX2 copy of a task computes the same bits as the plain one.
    #[test]
    fn fast_block_is_bit_identical() {
        let mut r = rng(21);
        let (n_head, n_head_kv, d, n, pos0) = (4, 2, 64, 5, 70);
        let kv = pos0 + n;
        let q = CpuTensor { rows: n, cols: n_head * d, data: randn(&mut r, n * n_head * d, 2.0) };
        let kd: Vec<f16> = randn(&mut r, kv * n_head_kv * d, 2.0).into_iter().map(f16::from_f32).collect();
        let vd: Vec<f16> = randn(&mut r, kv * n_head_kv * d, 1.0).into_iter().map(f16::from_f32).collect();
        let (k, v) = (KvRows::F16 { cols: n_head_kv * d, data: &kd }, KvRows::F16 { cols: n_head_kv * d, data: &vd });
        let p = AttentionParams { n_head, n_head_kv, head_dim_k: d, head_dim_v: d, scale: 0.125, softcap: Some(30.0), q_pos0: pos0, window: None };
        let run = |fast: bool| {
            let mut out = vec![0.0f32; n * 2 * d];
            let mut dst: Vec<&mut [f32]> = out.chunks_exact_mut(2 * d).collect();
            if fast {
                attend_block_fast(&q, k, v, &p, 2, 2, 0..n, true, &mut dst);
            } else {
                attend_block(&q, k, v, &p, 2, 2, 0..n, true, &mut dst);
            }
            out
        };
        let (a, b) = (run(true), run(false));
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(a.iter().any(|x| *x != 0.0));
    }

    #[test]
    fn heads_per_task_keeps_threads_busy() {
        // A long prefill: whole groups.
        assert_eq!(heads_per_task(4, 32, 100, 2), 4);
        // Decoding one token of 4 heads sharing 1 kv head on 2 threads: one head per task.
        assert_eq!(heads_per_task(4, 4, 1, 2), 1);
        // 32 heads in groups of 4, one block, 8 threads: 2 heads per task gives 16 tasks.
        assert_eq!(heads_per_task(4, 32, 1, 8), 2);
    }
}
