//! Rounding of matmul activations as llama.cpp's CPU backend does before its integer dot
//! products: the activation row is quantized to the weight type's "vec_dot_type" (Q8_0, Q8_1,
//! Q8_K, F16, BF16). Emulating it brings our logits within float noise of llama.cpp's;
//! without it each matmul differs by the 8-bit rounding of its input.

use half::{bf16, f16};
use wasm_chord_core::TensorType;

/// The rounding llama.cpp applies to activations multiplied with weights of a given type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActRounding {
    /// Exact f32 (F32 weights).
    None,
    /// 8-bit blocks of 32 with an f16 scale (Q8_0 and Q8_1 round alike).
    Q8_0,
    /// 8-bit blocks of 256 with an f32 scale.
    Q8K,
    F16,
    BF16,
}

impl ActRounding {
    /// ggml's `vec_dot_type` for weights of type `ty`.
    pub fn for_weight(ty: TensorType) -> Self {
        match ty {
            TensorType::F32 => Self::None,
            TensorType::F16 => Self::F16,
            TensorType::BF16 => Self::BF16,
            TensorType::Q4_0
            | TensorType::Q4_1
            | TensorType::Q5_0
            | TensorType::Q5_1
            | TensorType::Q8_0
            | TensorType::IQ4_NL => Self::Q8_0,
            TensorType::Q2_K
            | TensorType::Q3_K
            | TensorType::Q4_K
            | TensorType::Q5_K
            | TensorType::Q6_K
            | TensorType::Q8_K
            | TensorType::IQ4_XS => Self::Q8K,
        }
    }

    /// Block length the rounding works in.
    pub fn block_len(self) -> usize {
        match self {
            Self::None | Self::F16 | Self::BF16 => 1,
            Self::Q8_0 => 32,
            Self::Q8K => 256,
        }
    }
}

/// Writes the values llama.cpp's integer dot product effectively sees for activation row `x`.
/// A tail shorter than a block is left exact (weights of such rows cannot exist).
pub fn round_row(kind: ActRounding, x: &[f32], out: &mut [f32]) {
    out.copy_from_slice(x);
    match kind {
        ActRounding::None => {}
        ActRounding::F16 => out.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32()),
        ActRounding::BF16 => out.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32()),
        ActRounding::Q8_0 => out.chunks_exact_mut(32).for_each(round_q8_0_block),
        ActRounding::Q8K => out.chunks_exact_mut(256).for_each(round_q8_k_block),
    }
}

/// ggml's AVX2 `quantize_row_q8_0`: `d = amax / 127` stored as f16, `q = round(x * 127 / amax)`
/// with ties to even.
fn round_q8_0_block(b: &mut [f32]) {
    let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = f16::from_f32(amax / 127.0).to_f32();
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for v in b.iter_mut() {
        *v = (*v * id).round_ties_even() * d;
    }
}

/// ggml's `quantize_row_q8_K_ref`: the scale comes from the signed value of largest magnitude,
/// `q = min(127, round(-127 / max * x))`, `d = 1 / iscale` in f32.
fn round_q8_k_block(b: &mut [f32]) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in b.iter() {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        b.fill(0.0);
        return;
    }
    let iscale = -127.0 / max;
    let d = 1.0 / iscale;
    for v in b.iter_mut() {
        *v = (iscale * *v).round_ties_even().min(127.0) * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    /// The rounded values stay within half a quantization step of the input, computed in f64.
    #[test]
    fn rounding_error_within_half_step() {
        let mut r = rng(3);
        let x = randn(&mut r, 512, 3.0);
        let mut out = vec![0.0; 512];
        for (kind, block) in [(ActRounding::Q8_0, 32), (ActRounding::Q8K, 256)] {
            round_row(kind, &x, &mut out);
            for (xb, ob) in x.chunks(block).zip(out.chunks(block)) {
                let amax = xb.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
                let step = amax / 127.0;
                for (a, b) in xb.iter().zip(ob) {
                    // Half a step plus the f16 rounding of the scale (127 steps * 2^-11).
                    assert!((*a as f64 - *b as f64).abs() <= step * (0.5 + 127.0 / 2048.0), "{kind:?}: {a} -> {b}");
                }
                // Every rounded value is an integer multiple of the (stored) scale.
                let d = if kind == ActRounding::Q8_0 { f16::from_f64(step).to_f64() } else { ob.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64)) / 127.0 };
                for b in ob {
                    let q = *b as f64 / d;
                    assert!((q - q.round()).abs() < 1e-3, "{kind:?}: {b} is not a multiple of {d}");
                }
            }
        }
        round_row(ActRounding::F16, &x, &mut out);
        assert!(x.iter().zip(&out).all(|(a, b)| (a - b).abs() <= a.abs() / 2048.0));
        round_row(ActRounding::None, &x, &mut out);
        assert_eq!(x, out);
    }

    #[test]
    fn zero_block_stays_zero() {
        let x = vec![0.0f32; 256];
        let mut out = vec![1.0; 256];
        round_row(ActRounding::Q8K, &x, &mut out);
        assert!(out.iter().all(|v| *v == 0.0));
        round_row(ActRounding::Q8_0, &x, &mut out);
        assert!(out.iter().all(|v| *v == 0.0));
    }
}
