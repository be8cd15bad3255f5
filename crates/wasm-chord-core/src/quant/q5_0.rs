//! Q5_0: dequantization and llama.cpp's reference quantizer.

use super::BlockQ5_0;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockQ5_0], out: &mut [f32]) {
    let _ = (blocks, out);
    todo!("q5_0 dequantize")
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockQ5_0]) {
    let _ = (src, blocks);
    todo!("q5_0 quantize")
}
