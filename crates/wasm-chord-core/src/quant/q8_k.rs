//! Q8_K: dequantization and llama.cpp's reference quantizer.

use super::BlockQ8K;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ8K], out: &mut [f32]) {
    let _ = (blocks, out);
    todo!("q8_k dequantize")
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ8K]) {
    let _ = (src, blocks);
    todo!("q8_k quantize")
}
