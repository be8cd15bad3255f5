//! IQ4_XS: dequantization and llama.cpp's reference quantizer.

use super::BlockIQ4XS;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * block length`).
pub fn dequantize(blocks: &[BlockIQ4XS], out: &mut [f32]) {
    let _ = (blocks, out);
    todo!("iq4_xs dequantize")
}
