//! RMS normalization over groups of a row (the whole row, or one head for QK-norm).

use wasm_chord_core::backend::{BackendError, Op};

use crate::tensor::CpuTensor;

/// `out = x / sqrt(mean(x²) + eps) * weight`, per group of `weight.len()` values. As in ggml,
/// the squares are f32, their sum f64, and the scale applied in f32.
pub fn rms_norm(x: &CpuTensor, weight: &[f32], eps: f32, out: &mut CpuTensor) -> Result<(), BackendError> {
    let g = weight.len();
    if g == 0 || x.cols % g != 0 || out.rows != x.rows || out.cols != x.cols {
        return Err(BackendError::Shape {
            op: Op::RmsNorm,
            detail: format!("x [{}, {}] in groups of {g} -> out [{}, {}]", x.rows, x.cols, out.rows, out.cols),
        });
    }
    for (src, dst) in x.data.chunks_exact(g).zip(out.data.chunks_exact_mut(g)) {
        let sum: f64 = src.iter().map(|v| (v * v) as f64).sum();
        let mean = (sum / g as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((d, s), w) in dst.iter_mut().zip(src).zip(weight) {
            *d = (s * scale) * w;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    #[test]
    fn matches_f64() {
        let mut r = rng(6);
        for (cols, g) in [(640, 640), (1024, 256), (7, 7)] {
            let x = CpuTensor { rows: 3, cols, data: randn(&mut r, 3 * cols, 4.0) };
            let w = randn(&mut r, g, 2.0);
            let mut out = CpuTensor::zeros(3, cols);
            rms_norm(&x, &w, 1e-6, &mut out).unwrap();
            let want: Vec<f64> = x
                .data
                .chunks(g)
                .flat_map(|c| {
                    let ms = c.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / g as f64;
                    let s = 1.0 / (ms + 1e-6).sqrt();
                    c.iter().zip(&w).map(move |(v, w)| *v as f64 * s * *w as f64).collect::<Vec<_>>()
                })
                .collect();
            assert!(norm_err(&out.data, &want) < 1e-6);
        }
        let x = CpuTensor::zeros(1, 10);
        assert!(rms_norm(&x, &[1.0; 3], 1e-6, &mut CpuTensor::zeros(1, 10)).is_err());
    }
}
