//! Q6_K: dequantization and llama.cpp's reference quantizer (`quantize_row_q6_K_ref`).
//!
//! A block holds 16 groups of 16 weights `d * sc * (q - 32)`, with 6-bit `q` (low nibble in
//! `ql`, high bit-pair in `qh`) and i8 group scales `sc`. Each 128-weight half uses 64 bytes of
//! `ql` and 32 of `qh`: weight `l + 32 * k` (k in 0..4) takes nibble `k / 2` of `ql[l + 32 * (k % 2)]`
//! and bit-pair `k` of `qh[l]`.

use half::f16;

use super::kquant_util::{make_qx_quants, nearest_int, GROUP_MAX_EPS};
use super::{BlockQ6K, QK_K};

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ6K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (h, y) in y.chunks_exact_mut(128).enumerate() {
            let ql = &b.ql[64 * h..64 * h + 64];
            let qh = &b.qh[32 * h..32 * h + 32];
            let sc = &b.scales[8 * h..8 * h + 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * sc[is] as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ6K]) {
    for (x, y) in src.chunks_exact(QK_K).zip(blocks.iter_mut()) {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for (ib, (xg, lg)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
            scales[ib] = make_qx_quants(32, xg, lg);
            let abs_scale = scales[ib].abs();
            if abs_scale > max_abs_scale {
                max_abs_scale = abs_scale;
                max_scale = scales[ib];
            }
        }

        if max_abs_scale < GROUP_MAX_EPS {
            *y = bytemuck::Zeroable::zeroed();
            continue;
        }

        let iscale = -128.0 / max_scale;
        y.d = f16::from_f32(1.0 / iscale);
        for (s, &scale) in y.scales.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * scale).min(127) as i8;
        }

        // Requantize against the rounded scales that will actually be stored.
        for (j, (xg, lg)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
            let d = y.d.to_f32() * y.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for (q, &v) in lg.iter_mut().zip(xg) {
                *q = (nearest_int(v / d).clamp(-32, 31) + 32) as i8;
            }
        }

        for h in 0..2 {
            let lh = &l[128 * h..];
            let ql = &mut y.ql[64 * h..64 * h + 64];
            for i in 0..32 {
                let [q1, q2, q3, q4] = [lh[i], lh[i + 32], lh[i + 64], lh[i + 96]].map(|v| v as u8);
                ql[i] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                ql[i + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                y.qh[32 * h + i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}
