//! Gated activations: `out = act(gate) * up` (SwiGLU, GeGLU with tanh GeLU).

use std::sync::OnceLock;

use half::f16;
use wasm_chord_core::backend::{Activation, BackendError, Op};

use super::expf::ggml_expf;
use crate::tensor::CpuTensor;
use crate::threads::Threads;

/// With `ggml_rounding`, SiLU uses ggml's vector `expf` and GeLU is looked up as ggml's CPU backend does: the input rounded to
/// f16, the result read from a table of f16 values (exact only for |x| >= 10).
/// The elements are split over `threads` in spans (each element's arithmetic is the same
/// whichever thread and span it falls in).
pub fn act_mul(threads: &Threads, act: Activation, gate: &CpuTensor, up: &CpuTensor, out: &mut CpuTensor, ggml_rounding: bool) -> Result<(), BackendError> {
    if gate.rows != up.rows || gate.cols != up.cols || out.rows != gate.rows || out.cols != gate.cols {
        return Err(BackendError::Shape {
            op: Op::ActMul,
            detail: format!("gate [{}, {}], up [{}, {}], out [{}, {}]", gate.rows, gate.cols, up.rows, up.cols, out.rows, out.cols),
        });
    }
    let span = (out.data.len() / (4 * threads.count())).max(1024);
    threads.for_each_chunk(&mut out.data, span, |i, out| {
        let range = i * span..i * span + out.len();
        act_mul_span(act, &gate.data[range.clone()], &up.data[range], out, ggml_rounding);
    });
    Ok(())
}

/// One span, through a copy compiled with FMA where the CPU has it (ggml's `expf` is a chain
/// of fused multiply-adds, a libm call each without it; the results are the same).
pub(crate) fn act_mul_span(act: Activation, gate: &[f32], up: &[f32], out: &mut [f32], ggml_rounding: bool) {
    #[cfg(target_arch = "x86_64")]
    if act == Activation::GeluTanh && ggml_rounding && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c") {
        // SAFETY: the features were just checked.
        unsafe { gelu_ggml_mul_f16c(gate, up, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("fma") {
        // SAFETY: the feature was just checked.
        unsafe { act_mul_span_fma(act, gate, up, out, ggml_rounding) };
        return;
    }
    act_mul_plain(act, gate, up, out, ggml_rounding)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn act_mul_span_fma(act: Activation, gate: &[f32], up: &[f32], out: &mut [f32], ggml_rounding: bool) {
    act_mul_plain(act, gate, up, out, ggml_rounding)
}

/// [`act_mul_plain`]'s GeLU with ggml's rounding, eight at a time: the same f16 rounding
/// (`vcvtps2ph`, as `half` converts with F16C), table values and products.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn gelu_ggml_mul_f16c(gate: &[f32], up: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = out.len().min(gate.len()).min(up.len());
    let table = gelu_table();
    let mut i = 0;
    while i + 8 <= n {
        let g = _mm256_loadu_ps(gate.as_ptr().add(i));
        let u = _mm256_loadu_ps(up.as_ptr().add(i));
        let mut bits = [0u16; 8];
        _mm_storeu_si128(bits.as_mut_ptr() as *mut __m128i, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(g));
        let looked_up: [f32; 8] = std::array::from_fn(|j| table[bits[j] as usize]);
        // x itself from 10 up, a plain 0 from -10 down (NaN compares false both ways).
        let v = _mm256_blendv_ps(_mm256_loadu_ps(looked_up.as_ptr()), g, _mm256_cmp_ps::<_CMP_GE_OQ>(g, _mm256_set1_ps(10.0)));
        let zero = _mm256_cmp_ps::<_CMP_LE_OQ>(g, _mm256_set1_ps(-10.0));
        _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_andnot_ps(zero, _mm256_mul_ps(v, u)));
        i += 8;
    }
    act_mul_plain(Activation::GeluTanh, &gate[i..n], &up[i..n], &mut out[i..n], true)
}

#[inline(always)]
fn act_mul_plain(act: Activation, gate: &[f32], up: &[f32], out: &mut [f32], ggml_rounding: bool) {
    let it = out.iter_mut().zip(gate.iter().zip(up));
    match act {
        Activation::Silu if ggml_rounding => it.for_each(|(o, (g, u))| *o = g / (1.0 + ggml_expf(0.0 - g)) * u),
        Activation::Silu => it.for_each(|(o, (g, u))| *o = g / (1.0 + (-g).exp()) * u),
        // ggml writes a plain 0 below -10 (not 0 * up, which may be -0).
        Activation::GeluTanh if ggml_rounding => it.for_each(|(o, (g, u))| *o = if *g <= -10.0 { 0.0 } else { gelu_ggml(*g) * u }),
        Activation::GeluTanh => it.for_each(|(o, (g, u))| *o = gelu(*g) * u),
    }
}

fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh())
}

/// GeLU of every f16 value (indexed by its bits), as ggml tabulates it.
fn gelu_table() -> &'static [f32; 1 << 16] {
    static TABLE: OnceLock<Box<[f32; 1 << 16]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        // ggml fills its table with GCC's contraction of `1 + a x x` into one multiply-add.
        let gelu_fused = |x: f32| {
            const SQRT_2_OVER_PI: f32 = 0.797_884_6;
            0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (0.044715 * x).mul_add(x, 1.0)).tanh())
        };
        Box::new(std::array::from_fn(|b| f16::from_f32(gelu_fused(f16::from_bits(b as u16).to_f32())).to_f32()))
    })
}

fn gelu_ggml(x: f32) -> f32 {
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    gelu_table()[f16::from_f32(x).to_bits() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    #[test]
    fn matches_f64() {
        let mut r = rng(11);
        let n = 4096;
        let gate = CpuTensor { rows: 2, cols: n / 2, data: randn(&mut r, n, 12.0) };
        let up = CpuTensor { rows: 2, cols: n / 2, data: randn(&mut r, n, 2.0) };
        let mut out = CpuTensor::zeros(2, n / 2);
        let g64 = |x: f64| 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
        let s64 = |x: f64| x / (1.0 + (-x).exp());
        for (act, f, round, tol) in [
            (Activation::Silu, &s64 as &dyn Fn(f64) -> f64, false, 1e-6),
            (Activation::Silu, &s64, true, 1e-6),
            (Activation::GeluTanh, &g64, false, 1e-6),
            (Activation::GeluTanh, &g64, true, 2e-3),
        ] {
            act_mul(&Threads::new(2), act, &gate, &up, &mut out, round).unwrap();
            let want: Vec<f64> = gate.data.iter().zip(&up.data).map(|(g, u)| f(*g as f64) * *u as f64).collect();
            let err = norm_err(&out.data, &want);
            assert!(err < tol, "{act:?} round={round}: {err}");
        }
    }

    /// The SIMD spans give the plain loop's bits, on lengths with tails and on the edges of
    /// ggml's GeLU (±10, f16 ties and overflow, NaN, infinities, -0).
    #[test]
    fn spans_match_the_plain_loop_bitwise() {
        let mut r = rng(12);
        let mut gate = randn(&mut r, 1003, 6.0);
        let specials = [10.0, -10.0, 9.999, -9.999, 1.0 + 1.0 / 2048.0, 70000.0, -70000.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0];
        gate[..specials.len()].copy_from_slice(&specials);
        let up = randn(&mut r, 1003, 2.0);
        for act in [Activation::Silu, Activation::GeluTanh] {
            for round in [false, true] {
                let (mut want, mut got) = (vec![0.0; gate.len()], vec![0.0; gate.len()]);
                act_mul_plain(act, &gate, &up, &mut want, round);
                act_mul_span(act, &gate, &up, &mut got, round);
                for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                    assert_eq!(w.to_bits(), g.to_bits(), "{act:?} round={round} at {i}: gate {}", gate[i]);
                }
            }
        }
    }
}
