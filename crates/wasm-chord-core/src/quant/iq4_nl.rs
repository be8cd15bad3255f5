//! IQ4_NL: dequantization and llama.cpp's reference quantizer.

use super::BlockIQ4NL;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockIQ4NL], out: &mut [f32]) {
    let _ = (blocks, out);
    todo!("iq4_nl dequantize")
}

/// Quantizes `src` into `blocks` with llama.cpp's reference algorithm.
pub fn quantize(src: &[f32], blocks: &mut [BlockIQ4NL]) {
    let _ = (src, blocks);
    todo!("iq4_nl quantize")
}
