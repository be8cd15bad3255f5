//! Q4_1: 32 weights `d * q + m` per block, q in 0..16; dequantization and llama.cpp's
//! reference quantizer (`quantize_row_q4_1_ref`).

use half::f16;

use super::BlockQ4_1;

/// Weights per block.
const QK: usize = 32;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * 32`), in the same operation order
/// as ggml's `dequantize_row_q4_1` (multiply, then add; never fused) so the floats are identical.
pub fn dequantize(blocks: &[BlockQ4_1], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK, "q4_1: output length must be 32 per block");
    for (block, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = block.d.to_f32();
        let m = block.m.to_f32();
        for (j, &q) in block.qs.iter().enumerate() {
            let x0 = q & 0x0f;
            let x1 = q >> 4;
            y[j] = f32::from(x0) * d + m;
            y[j + QK / 2] = f32::from(x1) * d + m;
        }
    }
}

/// Quantizes `src` (`src.len() == blocks.len() * 32`) into `blocks` with llama.cpp's
/// reference algorithm: the block's minimum becomes `m`, its range is split into 15 steps.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ4_1]) {
    assert_eq!(src.len(), blocks.len() * QK, "q4_1: input length must be 32 per block");
    for (x, block) in src.chunks_exact(QK).zip(blocks.iter_mut()) {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }

        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block.d = f16::from_f32(d);
        block.m = f16::from_f32(min);

        for j in 0..QK / 2 {
            let xi0 = quant_level((x[j] - min) * id);
            let xi1 = quant_level((x[j + QK / 2] - min) * id);
            block.qs[j] = xi0 | (xi1 << 4);
        }
    }
}

/// `MIN(15, (int8_t)(x + 0.5f))`: round to nearest by truncation; x >= 0 for finite scales, the
/// lower clamp only keeps the byte sane when `1/d` overflows.
fn quant_level(x: f32) -> u8 {
    ((x + 0.5) as i32).clamp(0, 15) as u8
}
