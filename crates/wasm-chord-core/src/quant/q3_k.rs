//! Q3_K: dequantization and llama.cpp's reference quantizer (`quantize_row_q3_K_ref`).
//!
//! A block holds 16 groups of 16 weights `d * (sc - 32) * (q - 4)`, with 3-bit `q` (low two
//! bits in `qs`, the third in `hmask`) and 6-bit group scales `sc` packed in 12 bytes: low
//! nibbles in bytes 0..8, high bit-pairs in bytes 8..12.

use half::f16;

use super::kquant_util::{make_q3_quants, nearest_int};
use super::{BlockQ3K, QK_K};

/// The 6-bit scale of group `j` (0..16), still offset by 32.
#[inline(always)]
fn scale6(scales: &[u8; 12], j: usize) -> u8 {
    let low = if j < 8 { scales[j] & 0xF } else { scales[j - 8] >> 4 };
    low | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)
}

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ3K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d_all = b.d.to_f32();
        for (g, yg) in y.chunks_exact_mut(16).enumerate() {
            let dl = d_all * (scale6(&b.scales, g) as i32 - 32) as f32;
            let q = &b.qs[32 * (g / 8) + 16 * (g % 2)..][..16];
            let shift = 2 * ((g / 2) % 4);
            // The high-bit mask walks one bit per 32 weights across the whole block, while the
            // mask bytes are reused by both 128-weight halves.
            let m = 1u8 << (4 * (g / 8) + (g / 2) % 4);
            let hm = &b.hmask[16 * (g % 2)..][..16];
            for ((o, &qb), &h) in yg.iter_mut().zip(q).zip(hm) {
                let low = ((qb >> shift) & 3) as i32;
                *o = dl * (low - if h & m != 0 { 0 } else { 4 }) as f32;
            }
        }
    }
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ3K]) {
    for (x, y) in src.chunks_exact(QK_K).zip(blocks.iter_mut()) {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        let mut max_scale = 0.0f32;
        let mut amax = 0.0f32;
        for (j, (xg, lg)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
            scales[j] = make_q3_quants(4, xg, lg);
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }

        y.scales = [0; 12];
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &scale) in scales.iter().enumerate() {
                // ggml keeps this in an int8_t: truncate before clamping, as it does.
                let q = ((nearest_int(iscale * scale) as i8).clamp(-32, 31) + 32) as u8;
                if j < 8 {
                    y.scales[j] = q & 0xF;
                } else {
                    y.scales[j - 8] |= (q & 0xF) << 4;
                }
                y.scales[j % 4 + 8] |= (q >> 4) << (2 * (j / 4));
            }
            y.d = f16::from_f32(1.0 / iscale);
        } else {
            y.d = f16::from_f32(0.0);
        }

        // Requantize against the rounded scales that will actually be stored.
        for j in 0..QK_K / 16 {
            let sc = scale6(&y.scales, j) as i32 - 32;
            let d = y.d.to_f32() * sc as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-4, 3) + 4) as i8;
            }
        }

        // The high bit of weight j goes to bit j / 32 of hmask[j % 32].
        y.hmask = [0; QK_K / 8];
        for (j, q) in l.iter_mut().enumerate() {
            if *q > 3 {
                y.hmask[j % 32] |= 1 << (j / 32);
                *q -= 4;
            }
        }
        for (h, qs) in y.qs.chunks_exact_mut(32).enumerate() {
            let lh = &l[128 * h..];
            for (i, q) in qs.iter_mut().enumerate() {
                let [a, b, c, d] = [lh[i], lh[i + 32], lh[i + 64], lh[i + 96]].map(|v| v as u8);
                *q = a | (b << 2) | (c << 4) | (d << 6);
            }
        }
    }
}
