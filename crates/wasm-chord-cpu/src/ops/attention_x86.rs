//! The standard attention in llama.cpp's order for batches (see [`super::attention`]) with
//! AVX2, FMA and F16C in register tiles: every (query, key) pair goes through the same
//! operations in the same order as the scalar kernel, so the result is the same bit for bit.
//!
//! A task takes a block of query rows and the heads of one key/value group (all of them, or a
//! share when there would be too few tasks). Row by row, up to four heads of the row (which
//! see the same cache positions) are scored against three or four keys at a time, each pair in
//! its own 8-lane accumulator as tinyBLAS keeps it; the softmax takes eight cache positions a
//! step with ggml's vector `expf`; and the f16-rounded weights meet the values up to four heads
//! by a few 8-value columns at a time, one pass per tinyBLAS lane (the positions `j` with
//! `j % 8 == lane`), whose eight sums are then added in tinyBLAS's tree. Memory per task is
//! linear in the context: one row of scores per head.

use std::arch::x86_64::*;

use half::f16;
use wasm_chord_core::backend::AttentionParams;

use super::flash_attention::{for_each_task, visible, KvRows};
use crate::tensor::CpuTensor;
use crate::threads::Threads;

/// Whether this kernel computes the case: heads of whole 8-value columns (for one query, whose
/// `q · k` takes `ggml_vec_dot_f16`'s order, keys of whole runs of 32), a non-empty window, and
/// a CPU with AVX2, FMA and F16C.
pub fn usable(n: usize, p: &AttentionParams) -> bool {
    p.head_dim_k % if n == 1 { 32 } else { 8 } == 0
        && p.head_dim_v % 8 == 0
        && p.window != Some(0)
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// [`super::attention::attention`] in ggml-rounding mode for the cases [`usable`] accepts;
/// the caller has checked the shapes.
pub fn attention(threads: &Threads, q: &CpuTensor, k: KvRows<'_>, v: KvRows<'_>, p: &AttentionParams, out: &mut CpuTensor) {
    let n = q.rows;
    for_each_task(threads, p, n, &mut out.data, |head0, heads, rows, dst| run_task(q, k, v, p, head0, heads, rows, n == 1, dst));
}

/// One task: query rows `rows` of heads `head0..head0 + heads` (one key/value group) into
/// `dst`, one `[heads * dv]` piece per row. f16 keys are read in place; Q8_0 rows are expanded
/// to f32 once for the task (the same values the scalar kernel expands). For a batch the
/// values are copied lane by lane ([`ByLane`]).
#[allow(clippy::too_many_arguments)]
fn run_task(
    q: &CpuTensor,
    k: KvRows<'_>,
    v: KvRows<'_>,
    p: &AttentionParams,
    head0: usize,
    heads: usize,
    rows: std::ops::Range<usize>,
    vec_dot: bool,
    dst: &mut [&mut [f32]],
) {
    let (dk, dv) = (p.head_dim_k, p.head_dim_v);
    let kv_head = head0 / (p.n_head / p.n_head_kv);
    let span = visible(p, rows.start).start..visible(p, rows.end - 1).end;
    let (base, per_lane) = (span.start / 8 * 8, (span.end - span.start / 8 * 8).div_ceil(8));
    let by_lane = |j: usize| (j % 8) * per_lane + (j - base) / 8;
    // SAFETY (all four calls): `usable` checked the CPU features; the rows were checked against
    // the capacity, and each reader covers the rows of `span` (the buffers hold exactly them).
    if let (KvRows::F16 { cols: kc, data: kd }, KvRows::F16 { cols: vc, data: vd }) = (k, v) {
        let kr = F16Rows { base: kd[kv_head * dk..].as_ptr(), stride: kc };
        let row = |j: usize| &vd[j * vc + kv_head * dv..][..dv];
        if vec_dot {
            let vr = F16Rows { base: row(0).as_ptr(), stride: vc };
            return unsafe { task_rows(q, kr, vr, p, head0, heads, rows, vec_dot, dst) };
        }
        let mut vbuf = vec![f16::ZERO; 8 * per_lane * dv];
        for j in span {
            vbuf[by_lane(j) * dv..][..dv].copy_from_slice(row(j));
        }
        let vr = ByLane { rows: F16Rows { base: vbuf.as_ptr(), stride: dv }, base, per_lane };
        return unsafe { task_rows(q, kr, vr, p, head0, heads, rows, vec_dot, dst) };
    }
    let mut kbuf = vec![0.0f32; span.len() * dk];
    k.load(span.start, kv_head * dk, dk, &mut kbuf);
    let kr = F32Rows { base: kbuf.as_ptr(), stride: dk, row0: span.start };
    if vec_dot {
        let mut vbuf = vec![0.0f32; span.len() * dv];
        v.load(span.start, kv_head * dv, dv, &mut vbuf);
        let vr = F32Rows { base: vbuf.as_ptr(), stride: dv, row0: span.start };
        return unsafe { task_rows(q, kr, vr, p, head0, heads, rows, vec_dot, dst) };
    }
    let mut vbuf = vec![0.0f32; 8 * per_lane * dv];
    for j in span {
        v.load(j, kv_head * dv, dv, &mut vbuf[by_lane(j) * dv..][..dv]);
    }
    let vr = ByLane { rows: F32Rows { base: vbuf.as_ptr(), stride: dv, row0: 0 }, base, per_lane };
    unsafe { task_rows(q, kr, vr, p, head0, heads, rows, vec_dot, dst) }
}

/// One key/value head's cache rows as the tiles read them, eight values at a time.
trait Rows: Copy {
    /// Values `col..col + 8` of cache row `row`.
    unsafe fn load8(self, row: usize, col: usize) -> __m256;
}

/// Rows of the f16 cache, read in place (`base` points at the head's first column of row 0).
#[derive(Clone, Copy)]
struct F16Rows {
    base: *const f16,
    stride: usize,
}

impl Rows for F16Rows {
    #[inline(always)]
    unsafe fn load8(self, row: usize, col: usize) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(self.base.add(row * self.stride + col).cast()))
    }
}

/// Value rows copied so that the positions of each tinyBLAS lane (`j % 8`) follow each other:
/// a lane's pass over the values then reads consecutive rows, which the hardware prefetches,
/// instead of every eighth (a page apart for a head of 256 f16 values). Position `j` is row
/// `(j % 8) * per_lane + (j - base) / 8` of `rows` (`base` a multiple of 8).
#[derive(Clone, Copy)]
struct ByLane<R> {
    rows: R,
    base: usize,
    per_lane: usize,
}

impl<R: Rows> Rows for ByLane<R> {
    #[inline(always)]
    unsafe fn load8(self, row: usize, col: usize) -> __m256 {
        self.rows.load8((row % 8) * self.per_lane + (row - self.base) / 8, col)
    }
}

/// Rows expanded to f32, starting at cache row `row0`.
#[derive(Clone, Copy)]
struct F32Rows {
    base: *const f32,
    stride: usize,
    row0: usize,
}

impl Rows for F32Rows {
    #[inline(always)]
    unsafe fn load8(self, row: usize, col: usize) -> __m256 {
        _mm256_loadu_ps(self.base.add((row - self.row0) * self.stride + col))
    }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn task_rows<K: Rows, V: Rows>(
    q: &CpuTensor,
    k: K,
    v: V,
    p: &AttentionParams,
    head0: usize,
    heads: usize,
    rows: std::ops::Range<usize>,
    vec_dot: bool,
    dst: &mut [&mut [f32]],
) {
    let (dk, dv) = (p.head_dim_k, p.head_dim_v);
    // Scores are indexed from `base`, the task's first visible position rounded down to a
    // multiple of 8, so ggml's softmax groups (aligned runs of 8 positions) are aligned runs
    // of the buffer.
    let base = visible(p, rows.start).start / 8 * 8;
    let width = (visible(p, rows.end - 1).end - base).next_multiple_of(8);
    let mut qs = vec![0.0f32; heads * dk];
    let mut scores = vec![0.0f32; heads * width];
    for (i, out) in rows.zip(dst.iter_mut()) {
        let see = visible(p, i);
        let src = &q.data[i * q.cols + head0 * dk..][..heads * dk];
        for (d, s) in qs.chunks_exact_mut(8).zip(src.chunks_exact(8)) {
            _mm256_storeu_ps(d.as_mut_ptr(), round_f16(_mm256_loadu_ps(s.as_ptr())));
        }
        // Heads in groups of at most three, as even as they come (4 = 2 + 2, 9 = 3 + 3 + 3).
        let size = heads.div_ceil(heads.div_ceil(3));
        let mut h = 0;
        while h < heads {
            let g = Group { qs: qs[h * dk..].as_ptr(), scores: scores[h * width..].as_mut_ptr(), width, base, out: out[h * dv..].as_mut_ptr() };
            h += match (vec_dot, size.min(heads - h)) {
                (true, _) => head_group::<K, V, 1, true>(g, k, v, &see, p),
                (false, 1) => head_group::<K, V, 1, false>(g, k, v, &see, p),
                (false, 2) => head_group::<K, V, 2, false>(g, k, v, &see, p),
                (false, _) => head_group::<K, V, 3, false>(g, k, v, &see, p),
            };
        }
    }
}

/// `x` rounded to f16 and back (nearest, ties to even, as `half` rounds).
#[inline(always)]
unsafe fn round_f16(x: __m256) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
}

/// Up to three heads of one query row: their rounded queries (`dk` apart), score rows (`width`
/// apart, position `j` at `j - base`) and outputs (`dv` apart).
#[derive(Clone, Copy)]
struct Group {
    qs: *const f32,
    scores: *mut f32,
    width: usize,
    base: usize,
    out: *mut f32,
}

/// Attention of `QN` heads of one row over the positions `see`, scored four keys at a time
/// and summed over four 8-value columns of the values at a time; returns `QN`. `VEC_DOT`
/// (one query row) takes `ggml_vec_dot_f16`'s order for both products, else tinyBLAS's.
#[inline(always)]
unsafe fn head_group<K: Rows, V: Rows, const QN: usize, const VEC_DOT: bool>(
    g: Group,
    k: K,
    v: V,
    see: &std::ops::Range<usize>,
    p: &AttentionParams,
) -> usize {
    let (dk, dv) = (p.head_dim_k, p.head_dim_v);
    let finish = |mut s: f32| {
        if let Some(cap) = p.softcap {
            s = cap * (s / cap).tanh();
        }
        s * p.scale
    };
    let score = |h: usize, j: usize| g.scores.add(h * g.width + j - g.base);
    let mut j = see.start;
    while VEC_DOT && j + 3 <= see.end {
        for h in 0..QN {
            let s = qk_vec_dot::<K, 3>(g.qs.add(h * dk), dk, k, j);
            for (t, s) in s.iter().enumerate() {
                *score(h, j + t) = finish(*s);
            }
        }
        j += 3;
    }
    for j in (j..see.end).take_while(|_| VEC_DOT) {
        for h in 0..QN {
            *score(h, j) = finish(qk_vec_dot::<K, 1>(g.qs.add(h * dk), dk, k, j)[0]);
        }
    }
    while !VEC_DOT && j + 4 <= see.end {
        let acc = qk_tile::<K, QN, 4>(g.qs, dk, k, j);
        for (h, acc) in acc.iter().enumerate() {
            let s = hsum4(acc[0], acc[1], acc[2], acc[3]);
            if p.softcap.is_none() {
                _mm_storeu_ps(score(h, j), _mm_mul_ps(s, _mm_set1_ps(p.scale)));
            } else {
                let mut v = [0.0f32; 4];
                _mm_storeu_ps(v.as_mut_ptr(), s);
                for (t, v) in v.iter().enumerate() {
                    *score(h, j + t) = finish(*v);
                }
            }
        }
        j += 4;
    }
    for j in (j..see.end).take_while(|_| !VEC_DOT) {
        let acc = qk_tile::<K, QN, 1>(g.qs, dk, k, j);
        for (h, acc) in acc.iter().enumerate() {
            *score(h, j) = finish(hsum(acc[0]));
        }
    }
    for h in 0..QN {
        softmax_row(score(h, g.base), see.start - g.base, see.end - g.base);
    }
    if VEC_DOT {
        values::<V, QN, 32>(g, v, see, dv);
    } else {
        values::<V, QN, 8>(g, v, see, dv);
    }
    QN
}

/// The weighted sum of values of `g`'s heads in the order of `L` lanes (8: tinyBLAS, 32:
/// `ggml_vec_dot_f16`), four 8-value columns at a time.
#[inline(always)]
unsafe fn values<V: Rows, const QN: usize, const L: usize>(g: Group, v: V, see: &std::ops::Range<usize>, dv: usize) {
    let columns = dv / 8;
    let mut c = 0;
    while c + 4 <= columns {
        wv_tile::<V, QN, 4, L>(g, v, see, dv, c);
        c += 4;
    }
    match columns - c {
        0 => {}
        1 => wv_tile::<V, QN, 1, L>(g, v, see, dv, c),
        2 => wv_tile::<V, QN, 2, L>(g, v, see, dv, c),
        _ => wv_tile::<V, QN, 3, L>(g, v, see, dv, c),
    }
}

/// `q · k` for one query and keys `j..j + KN` in `ggml_vec_dot_f16`'s order: per pair four FMA
/// accumulators of 8 lanes over runs of 32 (lane `l` of the run in accumulator `l / 8`),
/// reduced `(a0 + a2) + (a1 + a3)`, halves added, then two horizontal adds. The head is a
/// multiple of 32, so there is no tail.
#[inline(always)]
unsafe fn qk_vec_dot<K: Rows, const KN: usize>(q: *const f32, dk: usize, k: K, j: usize) -> [f32; KN] {
    let mut acc = [[_mm256_setzero_ps(); 4]; KN];
    for c in (0..dk).step_by(32) {
        for a in 0..4 {
            let qv = _mm256_loadu_ps(q.add(c + 8 * a));
            for (t, acc) in acc.iter_mut().enumerate() {
                acc[a] = _mm256_fmadd_ps(k.load8(j + t, c + 8 * a), qv, acc[a]);
            }
        }
    }
    let mut out = [0.0f32; KN];
    for (o, a) in out.iter_mut().zip(&acc) {
        let s = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
        let t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let u = _mm_hadd_ps(t, t);
        *o = _mm_cvtss_f32(_mm_hadd_ps(u, u));
    }
    out
}

/// `q · k` for `QN` queries (`dk` apart) and keys `j..j + KN`: per pair one FMA accumulator of
/// 8 lanes over the head (lane `l` takes elements `l, l + 8, ...`), to be reduced in
/// tinyBLAS's tree.
#[inline(always)]
unsafe fn qk_tile<K: Rows, const QN: usize, const KN: usize>(qs: *const f32, dk: usize, k: K, j: usize) -> [[__m256; KN]; QN] {
    let mut acc = [[_mm256_setzero_ps(); KN]; QN];
    for c in (0..dk).step_by(8) {
        let mut kv = [_mm256_setzero_ps(); KN];
        for (t, kv) in kv.iter_mut().enumerate() {
            *kv = k.load8(j + t, c);
        }
        for (h, acc) in acc.iter_mut().enumerate() {
            let qv = _mm256_loadu_ps(qs.add(h * dk + c));
            for (a, kv) in acc.iter_mut().zip(&kv) {
                *a = _mm256_fmadd_ps(*kv, qv, *a);
            }
        }
    }
    acc
}

/// [`hsum`] of four accumulators at once, as `[a, b, c, d]`: the same additions, done two or
/// four to a register.
#[inline(always)]
unsafe fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    // [a0 + a4 .. a3 + a7 | b0 + b4 .. b3 + b7] and the same for c, d.
    let ab = _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(a, b), _mm256_permute2f128_ps::<0x31>(a, b));
    let cd = _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(c, d), _mm256_permute2f128_ps::<0x31>(c, d));
    // [(a0 + a4) + (a2 + a6), (a1 + a5) + (a3 + a7), the same of c | of b, of d].
    let x = _mm256_add_ps(_mm256_shuffle_ps::<0b01_00_01_00>(ab, cd), _mm256_shuffle_ps::<0b11_10_11_10>(ab, cd));
    // [a, c, a, c | b, d, b, d].
    let y = _mm256_hadd_ps(x, x);
    _mm_unpacklo_ps(_mm256_castps256_ps128(y), _mm256_extractf128_ps::<1>(y))
}

/// The tinyBLAS tree over 8 lanes: `((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7))`.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let u = _mm_add_ps(t, _mm_movehl_ps(t, t));
    _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)))
}

/// ggml's softmax of one score row in place: `s` holds positions `lo..hi` (offsets from an
/// aligned base); afterwards it holds their weights rounded to f16, and zeros in the rest of
/// the aligned runs of 8 that hold them.
#[inline(always)]
unsafe fn softmax_row(s: *mut f32, lo: usize, hi: usize) {
    let (lo_v, hi_v) = (_mm256_set1_epi32(lo as i32), _mm256_set1_epi32(hi as i32));
    let step = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let outside = |g: usize| {
        let idx = _mm256_add_epi32(_mm256_set1_epi32(g as i32), step);
        _mm256_castsi256_ps(_mm256_or_si256(_mm256_cmpgt_epi32(lo_v, idx), _mm256_cmpgt_epi32(_mm256_add_epi32(idx, _mm256_set1_epi32(1)), hi_v)))
    };
    let g0 = lo / 8 * 8;
    // The maximum is exact in any order (a signed zero maximum subtracts to the same values).
    let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
    for g in (g0..hi).step_by(8) {
        vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(_mm256_loadu_ps(s.add(g)), vmax, outside(g)));
    }
    let m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps::<1>(vmax));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let vmax = _mm256_set1_ps(_mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m))));
    let mut sum = 0.0f64;
    for g in (g0..hi).step_by(8) {
        // Lanes outside `lo..hi` add 0, as ggml's masked positions do.
        let outside = outside(g);
        let e = v_expf(_mm256_sub_ps(_mm256_loadu_ps(s.add(g)), vmax));
        let e = _mm256_andnot_ps(outside, e);
        _mm256_storeu_ps(s.add(g), e);
        sum += hsum(e) as f64;
    }
    let inv = _mm256_set1_ps((1.0 / sum) as f32);
    for g in (g0..hi).step_by(8) {
        let w = _mm256_mul_ps(_mm256_loadu_ps(s.add(g)), inv);
        _mm256_storeu_ps(s.add(g), _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(w)));
    }
}

/// `Σ_j w[h][j] v[j]` for the `QN` heads of `g` over value columns `8 c0 .. 8 (c0 + DN)`: one
/// pass per lane `l` of the order's `L` (positions `j ≡ l mod L`, in order, FMA accumulators),
/// then the lane sums added in the order's tree ([`super::dot::F16Dot::reduce`]).
#[inline(always)]
unsafe fn wv_tile<V: Rows, const QN: usize, const DN: usize, const L: usize>(g: Group, v: V, see: &std::ops::Range<usize>, dv: usize, c0: usize) {
    let mut lanes = [[[_mm256_setzero_ps(); DN]; QN]; L];
    for (l, lane) in lanes.iter_mut().enumerate() {
        let mut acc = [[_mm256_setzero_ps(); DN]; QN];
        let mut j = see.start + (l + L - see.start % L) % L;
        while j < see.end {
            let mut vv = [_mm256_setzero_ps(); DN];
            for (c, vv) in vv.iter_mut().enumerate() {
                *vv = v.load8(j, 8 * (c0 + c));
            }
            for (h, acc) in acc.iter_mut().enumerate() {
                let w = _mm256_broadcast_ss(&*g.scores.add(h * g.width + j - g.base));
                for (a, vv) in acc.iter_mut().zip(&vv) {
                    *a = _mm256_fmadd_ps(w, *vv, *a);
                }
            }
            j += L;
        }
        *lane = acc;
    }
    for h in 0..QN {
        for c in 0..DN {
            let p = |l: usize| lanes[l][h][c];
            let sum = if L == 8 {
                let a = _mm256_add_ps(_mm256_add_ps(p(0), p(4)), _mm256_add_ps(p(2), p(6)));
                let b = _mm256_add_ps(_mm256_add_ps(p(1), p(5)), _mm256_add_ps(p(3), p(7)));
                _mm256_add_ps(a, b)
            } else {
                let s = |l: usize| _mm256_add_ps(_mm256_add_ps(p(l), p(l + 16)), _mm256_add_ps(p(l + 8), p(l + 24)));
                let t = |k: usize| _mm256_add_ps(s(k), s(k + 4));
                _mm256_add_ps(_mm256_add_ps(t(0), t(1)), _mm256_add_ps(t(2), t(3)))
            };
            _mm256_storeu_ps(g.out.add(h * dv + 8 * (c0 + c)), sum);
        }
    }
}

/// ggml's AVX2 `ggml_v_expf`, the vector algorithm [`super::expf::ggml_expf`] follows lane by
/// lane.
#[inline(always)]
unsafe fn v_expf(x: __m256) -> __m256 {
    let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
    let r = c(0x4b40_0000);
    let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), r);
    let n = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(n, c(0x35bf_be8e), _mm256_fnmadd_ps(n, c(0x3f31_7200), x));
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0))));
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)), u, _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb))),
        u,
        _mm256_mul_ps(c(0x3f7f_fff6), b),
    );
    let normal = _mm256_fmadd_ps(k, j, k);
    if _mm256_movemask_ps(big) == 0 {
        return normal;
    }
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let huge = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    let scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    _mm256_or_ps(
        _mm256_and_ps(huge, _mm256_mul_ps(s1, s1)),
        _mm256_andnot_ps(huge, _mm256_or_ps(_mm256_and_ps(big, scaled), _mm256_andnot_ps(big, normal))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::expf::ggml_expf;
    use crate::ops::testutil::*;
    use rand::Rng;

    /// The vector `expf` equals the scalar emulation lane for lane, over the fast and the
    /// flushing ranges.
    #[test]
    fn v_expf_matches_scalar() {
        if !usable(2, &AttentionParams { n_head: 1, n_head_kv: 1, head_dim_k: 8, head_dim_v: 8, scale: 1.0, softcap: None, q_pos0: 0, window: None }) {
            return;
        }
        let mut r = rng(31);
        for range in [-20.0f32..0.0, -200.0..100.0, -1e4..1e4] {
            for _ in 0..10_000 {
                let x: [f32; 8] = std::array::from_fn(|_| r.gen_range(range.clone()));
                let mut got = [0.0f32; 8];
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn run(x: &[f32; 8], got: &mut [f32; 8]) {
                    _mm256_storeu_ps(got.as_mut_ptr(), v_expf(_mm256_loadu_ps(x.as_ptr())));
                }
                // SAFETY: `usable` checked the features.
                unsafe { run(&x, &mut got) };
                for (x, g) in x.iter().zip(&got) {
                    assert_eq!(g.to_bits(), ggml_expf(*x).to_bits(), "expf({x})");
                }
            }
        }
    }
}
