//! Q8_K: dequantization and llama.cpp's reference quantizer (`quantize_row_q8_K_ref`).
//!
//! A block holds 256 weights `d * q` with i8 `q` and an f32 `d`, plus the sums of each group of
//! 16 quants (`bsums`) that the k-quant dot products use; llama.cpp quantizes activations to it.

use super::kquant_util::nearest_int;
use super::{BlockQ8K, QK_K};

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ8K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = b.d * q as f32;
        }
    }
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ8K]) {
    for (x, y) in src.chunks_exact(QK_K).zip(blocks.iter_mut()) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in x {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            // ggml leaves bsums untouched here; zero is what they sum to.
            *y = bytemuck::Zeroable::zeroed();
            continue;
        }
        // -127 rather than -128 keeps every q in -127..=127, as ggml's IQ2 dot products need.
        let iscale = -127.0 / max;
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, g) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
            *s = g.iter().map(|&q| q as i32).sum::<i32>() as i16;
        }
        y.d = 1.0 / iscale;
    }
}
