//! Rotary position embeddings, ggml's `rope_ext` (NORM and NEOX pairings, linear scaling,
//! YaRN, per-frequency factors), computed in f32 the way ggml does so positions far into the
//! context round the same.

use wasm_chord_core::backend::{BackendError, Op, RopeMode, RopeParams};

use crate::tensor::CpuTensor;

/// Rotates every head of `head_dim` values of every row; row `t` sits at `positions[t]`.
pub fn rope(x: &mut CpuTensor, head_dim: usize, positions: &[usize], p: &RopeParams) -> Result<(), BackendError> {
    let n_rot = p.n_rot;
    if head_dim == 0 || x.cols % head_dim != 0 || positions.len() != x.rows || n_rot > head_dim || n_rot % 2 != 0 {
        return Err(BackendError::Shape {
            op: Op::Rope,
            detail: format!("x [{}, {}], head_dim {head_dim}, n_rot {n_rot}, {} positions", x.rows, x.cols, positions.len()),
        });
    }
    if p.freq_factors.as_ref().is_some_and(|f| f.len() < n_rot / 2) {
        return Err(BackendError::Shape { op: Op::Rope, detail: format!("fewer than {} frequency factors", n_rot / 2) });
    }
    let theta_scale = p.freq_base.powf(-2.0 / n_rot as f32);
    let corr = yarn_corr_dims(n_rot, p.n_ctx_orig, p.freq_base, p.beta_fast, p.beta_slow);
    let mut cache = vec![0.0f32; n_rot];
    for (t, row) in x.data.chunks_exact_mut(x.cols).enumerate() {
        fill_cache(positions[t] as f32, theta_scale, corr, p, &mut cache);
        for head in row.chunks_exact_mut(head_dim) {
            rotate(head, &cache, n_rot, p.mode);
        }
    }
    Ok(())
}

/// cos/sin pairs for one position: `cache[i0] = cos θ_i`, `cache[i0 + 1] = sin θ_i`, with
/// θ advanced by repeated multiplication as ggml does.
fn fill_cache(pos: f32, theta_scale: f32, corr: [f32; 2], p: &RopeParams, cache: &mut [f32]) {
    let mut theta = pos;
    for i0 in (0..cache.len()).step_by(2) {
        let ff = p.freq_factors.as_ref().map_or(1.0, |f| f[i0 / 2]);
        let (c, s) = rope_yarn(theta / ff, p.freq_scale, corr, i0, p.ext_factor, p.attn_factor);
        cache[i0] = c;
        cache[i0 + 1] = s;
        theta *= theta_scale;
    }
}

/// Rotates the pairs of one head. llama.cpp's build (GCC, `-march=native`, contraction on)
/// fuses each rotation into one multiply-add: `fma(x0, cos, -(x1 sin))` and
/// `fma(x0, sin, x1 cos)`; the same here, so roped queries and keys agree bit for bit.
fn rotate(head: &mut [f32], cache: &[f32], n_rot: usize, mode: RopeMode) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA.
        return unsafe { rotate_fma(head, cache, n_rot, mode) };
    }
    rotate_body(head, cache, n_rot, mode)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn rotate_fma(head: &mut [f32], cache: &[f32], n_rot: usize, mode: RopeMode) {
    rotate_body(head, cache, n_rot, mode)
}

#[inline(always)]
fn rotate_body(head: &mut [f32], cache: &[f32], n_rot: usize, mode: RopeMode) {
    for i0 in (0..n_rot).step_by(2) {
        let (a, b) = match mode {
            RopeMode::Interleaved => (i0, i0 + 1),
            RopeMode::Neox => (i0 / 2, i0 / 2 + n_rot / 2),
        };
        let (cos, sin) = (cache[i0], cache[i0 + 1]);
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0.mul_add(cos, -(x1 * sin));
        head[b] = x0.mul_add(sin, x1 * cos);
    }
}

fn yarn_ramp(low: f32, high: f32, i0: usize) -> f32 {
    let y = ((i0 / 2) as f32 - low) / (high - low).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

/// ggml's `rope_yarn`: interpolated angle, blended towards the extrapolated one over the
/// correction range, with YaRN's magnitude correction.
fn rope_yarn(theta_extrap: f32, freq_scale: f32, corr: [f32; 2], i0: usize, ext_factor: f32, mut mscale: f32) -> (f32, f32) {
    let theta_interp = freq_scale * theta_extrap;
    let mut theta = theta_interp;
    if ext_factor != 0.0 {
        let mix = yarn_ramp(corr[0], corr[1], i0) * ext_factor;
        theta = theta_interp * (1.0 - mix) + theta_extrap * mix;
        mscale *= 1.0 + 0.1 * (1.0 / freq_scale).ln();
    }
    (theta.cos() * mscale, theta.sin() * mscale)
}

fn yarn_corr_dims(n_dims: usize, n_ctx_orig: usize, base: f32, beta_fast: f32, beta_slow: f32) -> [f32; 2] {
    let dim = |n_rot: f32| n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln() / (2.0 * base.ln());
    let start = dim(beta_fast).floor();
    let end = dim(beta_slow).ceil();
    [start.max(0.0), end.min(n_dims as f32 - 1.0)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    fn params(mode: RopeMode, n_rot: usize) -> RopeParams {
        RopeParams {
            mode,
            n_rot,
            freq_base: 10000.0,
            freq_scale: 0.5,
            ext_factor: 0.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            n_ctx_orig: 4096,
            freq_factors: Some((0..n_rot / 2).map(|i| 1.0 + i as f32 / 16.0).collect()),
        }
    }

    /// Rotation of pair i at position p by angle p * scale * base^(-2i/n_rot) / ff_i, in f64.
    fn reference(x: &[f32], cols: usize, head_dim: usize, positions: &[usize], p: &RopeParams) -> Vec<f64> {
        let mut out: Vec<f64> = x.iter().map(|v| *v as f64).collect();
        for (t, row) in out.chunks_mut(cols).enumerate() {
            for head in row.chunks_mut(head_dim) {
                for i in 0..p.n_rot / 2 {
                    let ff = p.freq_factors.as_ref().map_or(1.0, |f| f[i] as f64);
                    let theta = positions[t] as f64 * p.freq_scale as f64 * (p.freq_base as f64).powf(-2.0 * i as f64 / p.n_rot as f64) / ff;
                    let (a, b) = match p.mode {
                        RopeMode::Interleaved => (2 * i, 2 * i + 1),
                        RopeMode::Neox => (i, i + p.n_rot / 2),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * theta.cos() - x1 * theta.sin();
                    head[b] = x0 * theta.sin() + x1 * theta.cos();
                }
            }
        }
        out
    }

    #[test]
    fn matches_f64_both_modes() {
        let mut r = rng(7);
        let positions = [0usize, 1, 17, 511, 4000];
        for mode in [RopeMode::Interleaved, RopeMode::Neox] {
            for (head_dim, n_rot) in [(64, 64), (32, 16)] {
                let cols = 3 * head_dim;
                let data = randn(&mut r, positions.len() * cols, 1.0);
                let mut x = CpuTensor { rows: positions.len(), cols, data: data.clone() };
                let p = params(mode, n_rot);
                rope(&mut x, head_dim, &positions, &p).unwrap();
                let err = norm_err(&x.data, &reference(&data, cols, head_dim, &positions, &p));
                // Angles up to ~2000 rad lose ~1e-4 in f32, as in ggml.
                assert!(err < 5e-4, "{mode:?} {head_dim}/{n_rot}: {err}");
            }
        }
    }

    #[test]
    fn position_zero_is_identity_and_yarn_scales_magnitude() {
        let mut r = rng(8);
        let data = randn(&mut r, 64, 1.0);
        let mut x = CpuTensor { rows: 1, cols: 64, data: data.clone() };
        let mut p = params(RopeMode::Neox, 64);
        rope(&mut x, 64, &[0], &p).unwrap();
        assert_eq!(x.data, data);
        p.ext_factor = 1.0;
        rope(&mut x, 64, &[0], &p).unwrap();
        let m = 1.0 + 0.1 * 2f32.ln();
        assert!(x.data.iter().zip(&data).all(|(a, b)| (a - b * m).abs() < 1e-5));
    }
}
