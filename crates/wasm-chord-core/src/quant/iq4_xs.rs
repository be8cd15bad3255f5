//! IQ4_XS: 256 weights per super-block in 8 sub-blocks of 32 on the IQ4_NL grid, each with a
//! 6-bit scale `ls` (low 4 bits in `scales_l`, high 2 in `scales_h`) meaning `d * (ls - 32)`;
//! dequantization and llama.cpp's quantizer (`quantize_iq4_xs` without an importance matrix).

use half::f16;

use super::iq4_nl::{best_scale, pack_levels, QK};
use super::{BlockIQ4XS, KVALUES_IQ4NL, QK_K};

/// Sub-blocks per super-block.
const N_SUB: usize = QK_K / QK;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * 256`), in the same operation order
/// as ggml's `dequantize_row_iq4_xs` (sub-block scale first, then times the grid value).
pub fn dequantize(blocks: &[BlockIQ4XS], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "iq4_xs: output length must be 256 per block");
    for (block, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = block.d.to_f32();
        for (ib, (y, qs)) in y.chunks_exact_mut(QK).zip(block.qs.chunks_exact(QK / 2)).enumerate() {
            let dl = d * (sub_block_scale(block, ib) - 32) as f32;
            for (j, &q) in qs.iter().enumerate() {
                y[j] = dl * f32::from(KVALUES_IQ4NL[usize::from(q & 0x0f)]);
                y[j + QK / 2] = dl * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
            }
        }
    }
}

/// The 6-bit scale of sub-block `ib`, in 0..64.
fn sub_block_scale(block: &BlockIQ4XS, ib: usize) -> i32 {
    let low = (block.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
    let high = (block.scales_h >> (2 * ib)) & 3;
    i32::from(low) | (i32::from(high) << 4)
}

/// Quantizes `src` (`src.len() == blocks.len() * 256`) into `blocks` as llama.cpp's
/// `quantize_iq4_xs` does with no importance matrix: the best IQ4_NL scale of every sub-block,
/// then those scales rounded to multiples of `d = -max_scale / 32`, then the levels again
/// against the rounded scales.
pub fn quantize(src: &[f32], blocks: &mut [BlockIQ4XS]) {
    assert_eq!(src.len(), blocks.len() * QK_K, "iq4_xs: input length must be 256 per block");
    for (x, block) in src.chunks_exact(QK_K).zip(blocks.iter_mut()) {
        let mut scales = [0.0f32; N_SUB];
        // The signed sub-block scale of largest magnitude; the first one wins ties.
        let mut amax_scale = 0.0f32;
        let mut max_scale = 0.0f32;
        for (scale, xb) in scales.iter_mut().zip(x.chunks_exact(QK)) {
            *scale = best_scale(xb);
            if scale.abs() > amax_scale {
                amax_scale = scale.abs();
                max_scale = *scale;
            }
        }

        // An all-zero super-block gets d = -0.0, as in llama.cpp.
        let d = -max_scale / 32.0;
        block.d = f16::from_f32(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block.scales_h = 0;
        block.scales_l = [0; N_SUB / 2];
        for (ib, (&scale, xb)) in scales.iter().zip(x.chunks_exact(QK)).enumerate() {
            // ggml's `nearest_int` rounds halves to even.
            let l = ((id * scale).round_ties_even() as i32).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            block.qs[ib * QK / 2..(ib + 1) * QK / 2].copy_from_slice(&pack_levels(xb, idl));

            let ls = (l + 32) as u8;
            block.scales_l[ib / 2] |= (ls & 0x0f) << (4 * (ib % 2));
            block.scales_h |= u16::from(ls >> 4) << (2 * ib);
        }
    }
}
