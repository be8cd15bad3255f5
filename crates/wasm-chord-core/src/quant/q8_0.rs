//! Q8_0: dequantization and llama.cpp's reference quantizer.

use super::BlockQ8_0;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ8_0], out: &mut [f32]) {
    let _ = (blocks, out);
    todo!("q8_0 dequantize")
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ8_0]) {
    let _ = (src, blocks);
    todo!("q8_0 quantize")
}
