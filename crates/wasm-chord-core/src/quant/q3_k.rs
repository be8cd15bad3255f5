//! Q3_K: dequantization and llama.cpp's reference quantizer.

use super::BlockQ3K;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ3K], out: &mut [f32]) {
    let _ = (blocks, out);
    todo!("q3_k dequantize")
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ3K]) {
    let _ = (src, blocks);
    todo!("q3_k quantize")
}
