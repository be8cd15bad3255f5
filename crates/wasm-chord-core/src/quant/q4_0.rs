//! Q4_0: 32 weights `d * (q - 8)` per block, q in 0..16; dequantization and llama.cpp's
//! reference quantizer (`quantize_row_q4_0_ref`).

use half::f16;

use super::BlockQ4_0;

/// Weights per block.
const QK: usize = 32;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * 32`), in the same operation order
/// as ggml's `dequantize_row_q4_0` so the floats are identical.
pub fn dequantize(blocks: &[BlockQ4_0], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK, "q4_0: output length must be 32 per block");
    for (block, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = block.d.to_f32();
        for (j, &q) in block.qs.iter().enumerate() {
            // Low nibbles hold weights 0..16, high nibbles weights 16..32.
            let x0 = i32::from(q & 0x0f) - 8;
            let x1 = i32::from(q >> 4) - 8;
            y[j] = x0 as f32 * d;
            y[j + QK / 2] = x1 as f32 * d;
        }
    }
}

/// Quantizes `src` (`src.len() == blocks.len() * 32`) into `blocks` with llama.cpp's
/// reference algorithm: the weight of largest magnitude maps to q = 0 exactly.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ4_0]) {
    assert_eq!(src.len(), blocks.len() * QK, "q4_0: input length must be 32 per block");
    for (x, block) in src.chunks_exact(QK).zip(blocks.iter_mut()) {
        // The signed value of largest magnitude; the first one wins ties.
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }

        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block.d = f16::from_f32(d);

        for j in 0..QK / 2 {
            let xi0 = quant_level(x[j] * id);
            let xi1 = quant_level(x[j + QK / 2] * id);
            block.qs[j] = xi0 | (xi1 << 4);
        }
    }
}

/// `MIN(15, (int8_t)(x + 8.5f))`: truncation after adding 8.5 rounds to nearest. The lower
/// clamp never acts for finite scales (x >= -8); it keeps the byte sane when `1/d` overflows
/// (subnormal inputs), where C's conversion is undefined and the f16 scale is 0 anyway.
fn quant_level(x: f32) -> u8 {
    ((x + 8.5) as i32).clamp(0, 15) as u8
}
