//! Q2_K: dequantization and llama.cpp's reference quantizer.

use super::BlockQ2K;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ2K], out: &mut [f32]) {
    let _ = (blocks, out);
    todo!("q2_k dequantize")
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ2K]) {
    let _ = (src, blocks);
    todo!("q2_k quantize")
}
