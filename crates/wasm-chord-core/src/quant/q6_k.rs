//! Q6_K: dequantization and llama.cpp's reference quantizer.

use super::BlockQ6K;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ6K], out: &mut [f32]) {
    let _ = (blocks, out);
    todo!("q6_k dequantize")
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ6K]) {
    let _ = (src, blocks);
    todo!("q6_k quantize")
}
