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

fn gelu_ggml(x: f32) -> f32 {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    // ggml fills its table with GCC's contraction of `1 + a x x` into one multiply-add.
    let gelu_fused = |x: f32| {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (0.044715 * x).mul_add(x, 1.0)).tanh())
    };
    let table = TABLE.get_or_init(|| (0..=u16::MAX).map(|b| f16::from_f32(gelu_fused(f16::from_bits(b).to_f32())).to_f32()).collect());
    table[f16::from_f32(x).to_bits() as usize]
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
}
