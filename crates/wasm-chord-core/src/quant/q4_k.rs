//! Q4_K: dequantization and llama.cpp's reference quantizer (`quantize_row_q4_K_ref`).
//!
//! A block holds 8 groups of 32 weights `d * sc * q - dmin * m`, with 4-bit `q` and 6-bit group
//! scales `sc` and mins `m` packed in 12 bytes (see `get_scale_min_k4`). Each 32-byte run of
//! `qs` holds two groups: the first in the low nibbles, the second in the high nibbles.

use half::f16;

use super::kquant_util::{get_scale_min_k4, nearest_int, pack_scales_mins_k4, Qkx2Search};
use super::{BlockQ4K, QK_K};

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ4K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        for (j, (q, y)) in b.qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc, m) = get_scale_min_k4(2 * j, &b.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = get_scale_min_k4(2 * j + 1, &b.scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            let (lo, hi) = y.split_at_mut(32);
            for ((lo, hi), &qb) in lo.iter_mut().zip(hi).zip(q) {
                *lo = d1 * (qb & 0xF) as f32 - m1;
                *hi = d2 * (qb >> 4) as f32 - m2;
            }
        }
    }
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ4K]) {
    const SEARCH: Qkx2Search = Qkx2Search { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false };
    for (x, y) in src.chunks_exact(QK_K).zip(blocks.iter_mut()) {
        let mut l = [0u8; QK_K];
        let (scales, mins) = search_groups(x, &mut l, SEARCH);
        let (d, dmin) = pack_scales_mins_k4(&scales, &mins, &mut y.scales);
        y.d = f16::from_f32(d);
        y.dmin = f16::from_f32(dmin);
        requantize_groups(x, &mut l, y.d, y.dmin, &y.scales, 15);
        for (j, q) in y.qs.chunks_exact_mut(32).enumerate() {
            let lj = &l[64 * j..];
            for (i, q) in q.iter_mut().enumerate() {
                *q = lj[i] | (lj[i + 32] << 4);
            }
        }
    }
}

/// The per-group scale search shared by Q4_K and Q5_K: each group of 32 is weighted by
/// `rms(group) + |x|` and searched with `search`. Returns the group scales and mins.
pub(super) fn search_groups(x: &[f32], l: &mut [u8; QK_K], search: Qkx2Search) -> ([f32; 8], [f32; 8]) {
    let mut weights = [0.0f32; QK_K];
    for (xg, wg) in x.chunks_exact(32).zip(weights.chunks_exact_mut(32)) {
        let mut sum_x2 = 0.0f32;
        for &v in xg {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in wg.iter_mut().zip(xg) {
            *w = av_x + v.abs();
        }
    }
    search.run8(x, &weights, l)
}

/// Requantizes each group of 32 against the rounded scales that will actually be stored, as the
/// Q4_K and Q5_K reference quantizers do; groups whose scale rounds to zero keep the search's
/// quants.
pub(super) fn requantize_groups(x: &[f32], l: &mut [u8; QK_K], d: f16, dmin: f16, packed: &[u8; 12], nmax: i32) {
    for (j, (xg, lg)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let (sc, m) = get_scale_min_k4(j, packed);
        let d = d.to_f32() * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for (q, &v) in lg.iter_mut().zip(xg) {
            *q = nearest_int((v + dm) / d).clamp(0, nmax) as u8;
        }
    }
}
