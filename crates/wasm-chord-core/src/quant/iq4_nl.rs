//! IQ4_NL: 32 weights `d * KVALUES_IQ4NL[q]` per block, q in 0..16 on a non-linear grid;
//! dequantization and llama.cpp's quantizer (`quantize_iq4_nl` without an importance matrix,
//! what `llama-quantize` writes). The per-block scale search here is shared with IQ4_XS.

use half::f16;

use super::{BlockIQ4NL, KVALUES_IQ4NL};

/// Weights per block (and per IQ4_XS sub-block).
pub(super) const QK: usize = 32;

/// How many scales on each side of the first guess the scale search tries (llama.cpp's `ntry`).
const NTRY: i32 = 7;

/// Below this largest magnitude a block is treated as all zeros (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// Expands `blocks` into `out` (`out.len() == blocks.len() * 32`), as ggml's
/// `dequantize_row_iq4_nl` does.
pub fn dequantize(blocks: &[BlockIQ4NL], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK, "iq4_nl: output length must be 32 per block");
    for (block, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = block.d.to_f32();
        for (j, &q) in block.qs.iter().enumerate() {
            y[j] = d * f32::from(KVALUES_IQ4NL[usize::from(q & 0x0f)]);
            y[j + QK / 2] = d * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
        }
    }
}

/// Quantizes `src` (`src.len() == blocks.len() * 32`) into `blocks` as llama.cpp's
/// `quantize_iq4_nl` does with no importance matrix.
pub fn quantize(src: &[f32], blocks: &mut [BlockIQ4NL]) {
    assert_eq!(src.len(), blocks.len() * QK, "iq4_nl: input length must be 32 per block");
    for (x, block) in src.chunks_exact(QK).zip(blocks.iter_mut()) {
        let d = best_scale(x);
        block.d = f16::from_f32(d);
        // Levels are chosen against the f32 scale, not its f16 rounding, as llama.cpp does.
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block.qs = pack_levels(x, id);
    }
}

/// The scale `d` for 32 weights `x` minimising `sum x² (x - d * grid[l])²` over the scales
/// llama.cpp's `quantize_row_iq4_nl_impl` tries (ntry = 7, weights x²): the least-squares scale
/// for the levels picked with the scale `max / 127`, then with each inverse scale
/// `(itry - 127) / max`, itry in -7..=7, keeping the best (`max`: the signed largest weight).
/// Zero when the block is (nearly) all zeros.
pub(super) fn best_scale(x: &[f32]) -> f32 {
    // The signed value of largest magnitude; the first one wins ties.
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }

    let grid0 = f32::from(KVALUES_IQ4NL[0]);
    // Least-squares fit of the weights to the levels picked with the inverse scale `id`:
    // returns (sum w q x, sum w q²).
    let fit = |id: f32| {
        let mut sumqx = 0.0f32;
        let mut sumq2 = 0.0f32;
        for &v in x {
            let q = f32::from(KVALUES_IQ4NL[best_index(id * v)]);
            let w = v * v;
            sumqx += w * q * v;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };

    let (sumqx, sumq2) = fit(1.0 / (-max / grid0));
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let (sumqx, sumq2) = fit((itry as f32 + grid0) / max);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// The grid levels of 32 weights under inverse scale `id`, packed as ggml does: weight j in the
/// low nibble of byte j, weight j + 16 in its high nibble.
pub(super) fn pack_levels(x: &[f32], id: f32) -> [u8; QK / 2] {
    let mut qs = [0u8; QK / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        let lo = best_index(id * x[j]) as u8;
        let hi = best_index(id * x[j + QK / 2]) as u8;
        *q = lo | (hi << 4);
    }
    qs
}

/// The index of the grid value nearest `x`, the upper one on a tie (ggml's `best_index_int8`).
fn best_index(x: f32) -> usize {
    let grid = &KVALUES_IQ4NL;
    let n = grid.len();
    if x <= f32::from(grid[0]) {
        return 0;
    }
    if x >= f32::from(grid[n - 1]) {
        return n - 1;
    }
    // Bisect to grid[lo] <= x < grid[hi] with hi = lo + 1.
    let (mut lo, mut hi) = (0, n - 1);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < f32::from(grid[mid]) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - f32::from(grid[hi - 1]) < f32::from(grid[hi]) - x {
        hi - 1
    } else {
        hi
    }
}
