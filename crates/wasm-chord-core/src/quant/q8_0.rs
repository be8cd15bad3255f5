//! Q8_0: 32 weights `d * q` per block, q an i8; dequantization and llama.cpp's reference
//! quantizer (`quantize_row_q8_0_ref`).

use half::f16;

use super::BlockQ8_0;

/// Weights per block.
const QK: usize = 32;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * 32`), as ggml's
/// `dequantize_row_q8_0` does.
pub fn dequantize(blocks: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK, "q8_0: output length must be 32 per block");
    for (block, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = block.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&block.qs) {
            *y = f32::from(q) * d;
        }
    }
}

/// Quantizes `src` (`src.len() == blocks.len() * 32`) into `blocks` with llama.cpp's
/// reference algorithm: symmetric, the largest magnitude maps to ±127.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ8_0]) {
    assert_eq!(src.len(), blocks.len() * QK, "q8_0: input length must be 32 per block");
    for (x, block) in src.chunks_exact(QK).zip(blocks.iter_mut()) {
        let amax = x.iter().fold(0.0f32, |amax, v| amax.max(v.abs()));

        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block.d = f16::from_f32(d);

        for (q, &v) in block.qs.iter_mut().zip(x) {
            // `roundf` rounds halves away from zero, as `f32::round` does; the cast saturates
            // where C's would be undefined (only when `1/d` overflows).
            *q = (v * id).round() as i8;
        }
    }
}
