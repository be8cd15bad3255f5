//! RMS normalization over groups of a row (the whole row, or one head for QK-norm).

use wasm_chord_core::backend::{BackendError, Op};

use crate::tensor::CpuTensor;
use crate::threads::Threads;

/// `out = x / sqrt(mean(x²) + eps) * weight`, per group of `weight.len()` values. As in ggml,
/// the squares are f32, their sum f64, and the scale applied in f32. Groups are split over
/// `threads` for a batch.
pub fn rms_norm(threads: &Threads, x: &CpuTensor, weight: &[f32], eps: f32, out: &mut CpuTensor) -> Result<(), BackendError> {
    let g = weight.len();
    if g == 0 || x.cols % g != 0 || out.rows != x.rows || out.cols != x.cols {
        return Err(BackendError::Shape {
            op: Op::RmsNorm,
            detail: format!("x [{}, {}] in groups of {g} -> out [{}, {}]", x.rows, x.cols, out.rows, out.cols),
        });
    }
    // Spans of at least 4096 values: a decoding step's norms (one row, or its heads) are a
    // microsecond of work, less than handing them to the pool.
    let span = g * (x.data.len() / g).div_ceil(4 * threads.count()).max(4096_usize.div_ceil(g));
    threads.for_each_chunk(&mut out.data, span, |i, out| norm_groups(&x.data[i * span..][..out.len()], weight, eps, out));
    Ok(())
}

fn norm_groups(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let g = weight.len();
    for (src, dst) in x.chunks_exact(g).zip(out.chunks_exact_mut(g)) {
        let sum: f64 = src.iter().map(|v| (v * v) as f64).sum();
        let mean = (sum / g as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((d, s), w) in dst.iter_mut().zip(src).zip(weight) {
            *d = (s * scale) * w;
        }
    }
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
            rms_norm(&Threads::new(2), &x, &w, 1e-6, &mut out).unwrap();
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
        assert!(rms_norm(&Threads::new(1), &x, &[1.0; 3], 1e-6, &mut CpuTensor::zeros(1, 10)).is_err());
    }
}
