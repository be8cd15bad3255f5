//! Q5_K: dequantization and llama.cpp's reference quantizer (`quantize_row_q5_K_ref`).
//!
//! Laid out as Q4_K with a fifth bit per weight: group `g`'s high bits are bit `g` of
//! `qh[0..32]`, so `d * sc * q - dmin * m` with `q` in 0..32.

use half::f16;

use super::kquant_util::{get_scale_min_k4, pack_scales_mins_k4, Qkx2Search};
use super::q4_k::{requantize_groups, search_groups};
use super::{BlockQ5K, QK_K};

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ5K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        for (j, (ql, y)) in b.qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc, m) = get_scale_min_k4(2 * j, &b.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = get_scale_min_k4(2 * j + 1, &b.scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
            let (lo, hi) = y.split_at_mut(32);
            for (((lo, hi), &qb), &h) in lo.iter_mut().zip(hi).zip(ql).zip(&b.qh) {
                *lo = d1 * ((qb & 0xF) + if h & u1 != 0 { 16 } else { 0 }) as f32 - m1;
                *hi = d2 * ((qb >> 4) + if h & u2 != 0 { 16 } else { 0 }) as f32 - m2;
            }
        }
    }
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ5K]) {
    const SEARCH: Qkx2Search = Qkx2Search { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false };
    for (x, y) in src.chunks_exact(QK_K).zip(blocks.iter_mut()) {
        let mut l = [0u8; QK_K];
        let (scales, mins) = search_groups(x, &mut l, SEARCH);
        let (d, dmin) = pack_scales_mins_k4(&scales, &mins, &mut y.scales);
        y.d = f16::from_f32(d);
        y.dmin = f16::from_f32(dmin);
        requantize_groups(x, &mut l, y.d, y.dmin, &y.scales, 31);
        y.qh = [0; QK_K / 8];
        for (j, ql) in y.qs.chunks_exact_mut(32).enumerate() {
            let (m1, m2) = (1u8 << (2 * j), 2u8 << (2 * j));
            let lj = &l[64 * j..];
            for (i, q) in ql.iter_mut().enumerate() {
                let (mut l1, mut l2) = (lj[i], lj[i + 32]);
                if l1 > 15 {
                    l1 -= 16;
                    y.qh[i] |= m1;
                }
                if l2 > 15 {
                    l2 -= 16;
                    y.qh[i] |= m2;
                }
                *q = l1 | (l2 << 4);
            }
        }
    }
}
