//! Q5_K: dequantization and llama.cpp's reference quantizer.

use super::BlockQ5K;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ5K], out: &mut [f32]) {
    let _ = (blocks, out);
    todo!("q5_k dequantize")
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ5K]) {
    let _ = (src, blocks);
    todo!("q5_k quantize")
}
