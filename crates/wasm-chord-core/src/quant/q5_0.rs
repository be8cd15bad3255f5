//! Q5_0: 32 weights `d * (q - 16)` per block, q in 0..32 (low 4 bits in `qs`, the fifth bit of
//! weight j in bit j of `qh`); dequantization and llama.cpp's reference quantizer
//! (`quantize_row_q5_0_ref`).

use half::f16;

use super::BlockQ5_0;

/// Weights per block.
const QK: usize = 32;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * 32`), in the same operation order
/// as ggml's `dequantize_row_q5_0` so the floats are identical.
pub fn dequantize(blocks: &[BlockQ5_0], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK, "q5_0: output length must be 32 per block");
    for (block, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = block.d.to_f32();
        let qh = u32::from_le_bytes(block.qh);
        for (j, &q) in block.qs.iter().enumerate() {
            let xh0 = ((qh >> j) & 1) << 4;
            let xh1 = ((qh >> (j + QK / 2)) & 1) << 4;
            let x0 = ((u32::from(q & 0x0f) | xh0) as i32) - 16;
            let x1 = ((u32::from(q >> 4) | xh1) as i32) - 16;
            y[j] = x0 as f32 * d;
            y[j + QK / 2] = x1 as f32 * d;
        }
    }
}

/// Quantizes `src` (`src.len() == blocks.len() * 32`) into `blocks` with llama.cpp's
/// reference algorithm: the weight of largest magnitude maps to q = 0 exactly.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ5_0]) {
    assert_eq!(src.len(), blocks.len() * QK, "q5_0: input length must be 32 per block");
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

        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block.d = f16::from_f32(d);

        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let xi0 = quant_level(x[j] * id);
            let xi1 = quant_level(x[j + QK / 2] * id);
            block.qs[j] = (xi0 & 0x0f) | ((xi1 & 0x0f) << 4);
            qh |= u32::from(xi0 >> 4) << j;
            qh |= u32::from(xi1 >> 4) << (j + QK / 2);
        }
        block.qh = qh.to_le_bytes();
    }
}

/// `MIN(31, (int8_t)(x + 16.5f))`: truncation after adding 16.5 rounds to nearest; the lower
/// clamp never acts for finite scales (x >= -16).
fn quant_level(x: f32) -> u8 {
    ((x + 16.5) as i32).clamp(0, 31) as u8
}
