//! Q4_1: dequantization and llama.cpp's reference quantizer.

use super::BlockQ4_1;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ4_1], out: &mut [f32]) {
    let _ = (blocks, out);
    todo!("q4_1 dequantize")
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ4_1]) {
    let _ = (src, blocks);
    todo!("q4_1 quantize")
}
