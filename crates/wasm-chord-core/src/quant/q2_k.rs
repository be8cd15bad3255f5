//! Q2_K: dequantization and llama.cpp's reference quantizer (`quantize_row_q2_K_ref`).
//!
//! A block holds 16 groups of 16 weights `d * sc * q - dmin * m`, with 2-bit `q` and 4-bit
//! group scale `sc` (low nibble of `scales[g]`) and min `m` (high nibble).

use half::f16;

use super::kquant_util::{nearest_int, Qkx2Search};
use super::{BlockQ2K, QK_K};

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ2K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        for (g, yg) in y.chunks_exact_mut(16).enumerate() {
            // Each 32-byte half of `qs` holds 128 weights: 4 bit-pairs of two 16-byte runs.
            let q = &b.qs[32 * (g / 8) + 16 * (g % 2)..][..16];
            let shift = 2 * ((g / 2) % 4);
            let sc = b.scales[g];
            let dl = d * (sc & 0xF) as f32;
            let ml = min * (sc >> 4) as f32;
            for (o, &qb) in yg.iter_mut().zip(q) {
                *o = dl * ((qb >> shift) & 3) as f32 - ml;
            }
        }
    }
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ2K]) {
    const Q4SCALE: f32 = 15.0;
    const SEARCH: Qkx2Search = Qkx2Search { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true };
    for (x, y) in src.chunks_exact(QK_K).zip(blocks.iter_mut()) {
        let mut l = [0u8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        let mut mins = [0.0f32; QK_K / 16];
        let mut weights = [0.0f32; QK_K];
        for (w, &v) in weights.iter_mut().zip(x) {
            *w = v.abs();
        }
        for h in 0..2 {
            let r = 128 * h..128 * h + 128;
            let (s, m) = SEARCH.run8(&x[r.clone()], &weights[r.clone()], &mut l[r]);
            scales[8 * h..8 * h + 8].copy_from_slice(&s);
            mins[8 * h..8 * h + 8].copy_from_slice(&m);
        }
        // As in ggml, these start at 0: scales and mins are never negative.
        let max_scale = scales.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });
        let max_min = mins.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });

        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (s, &scale) in y.scales.iter_mut().zip(&scales) {
                *s = nearest_int(iscale * scale) as u8;
            }
            y.d = f16::from_f32(max_scale / Q4SCALE);
        } else {
            y.scales = [0; QK_K / 16];
            y.d = f16::from_f32(0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (s, &m) in y.scales.iter_mut().zip(&mins) {
                *s |= (nearest_int(iscale * m) << 4) as u8;
            }
            y.dmin = f16::from_f32(max_min / Q4SCALE);
        } else {
            y.dmin = f16::from_f32(0.0);
        }

        // Requantize against the rounded scales that will actually be stored.
        for j in 0..QK_K / 16 {
            let d = y.d.to_f32() * (y.scales[j] & 0xF) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = y.dmin.to_f32() * (y.scales[j] >> 4) as f32;
            for ii in 0..16 {
                l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
            }
        }

        for (h, qs) in y.qs.chunks_exact_mut(32).enumerate() {
            let lh = &l[128 * h..];
            for (i, q) in qs.iter_mut().enumerate() {
                *q = lh[i] | (lh[i + 32] << 2) | (lh[i + 64] << 4) | (lh[i + 96] << 6);
            }
        }
    }
}
