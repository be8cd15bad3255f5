//! Q4_K: dequantization and llama.cpp's reference quantizer.

use super::BlockQ4K;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ4K], out: &mut [f32]) {
    let _ = (blocks, out);
    todo!("q4_k dequantize")
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ4K]) {
    let _ = (src, blocks);
    todo!("q4_k quantize")
}
