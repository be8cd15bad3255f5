//! Quantized matmul: `out[t, o] = sum_k w[o, k] * x[t, k]`, weights read in their file type.
//!
//! Work is split over weight rows: each task dequantizes a weight row once into a scratch
//! row and dots it with every token of the batch, so a batched prefill reads each weight once.
//! (Integer dot products on the packed blocks come with the SIMD kernels.)

use wasm_chord_core::backend::{BackendError, Op};
use wasm_chord_core::quant;

use super::act_round::{q8_1_sum_deltas, round_row, ActRounding};
use super::dot::dot_f32;
use crate::kernels::{quantize_act_rows, ActType, Kernels};
use crate::tensor::{CpuTensor, CpuWeight};
use crate::threads::Threads;

/// Weight rows per task: small enough to balance threads, large enough to amortize scheduling.
const ROWS_PER_TASK: usize = 16;

/// `out = x · wᵀ (+ bias)`. With `round_activations`, `x` is first rounded the way llama.cpp
/// quantizes activations for this weight type.
pub fn matmul(
    threads: &Threads,
    w: &CpuWeight,
    bias: Option<&CpuWeight>,
    x: &CpuTensor,
    out: &mut CpuTensor,
    round_activations: bool,
) -> Result<(), BackendError> {
    let (n_tok, k, n_out) = (x.rows, x.cols, w.rows);
    if w.cols != k || out.rows != n_tok || out.cols != n_out {
        return Err(BackendError::Shape {
            op: Op::MatMul,
            detail: format!("w [{n_out}, {}] x [{n_tok}, {k}] -> out [{}, {}]", w.cols, out.rows, out.cols),
        });
    }
    let bias = match bias {
        Some(b) if b.rows * b.cols != n_out => {
            return Err(BackendError::Shape { op: Op::MatMul, detail: format!("bias of {} for {n_out} outputs", b.rows * b.cols) })
        }
        Some(b) => Some(dequantize_all(b)?),
        None => None,
    };

    let kernels = Kernels::get();
    let out_t = if round_activations && kernels.supports(w.ty) {
        // Fused path: activations quantized once to the weight type's vec_dot_type, integer dot
        // products on the packed blocks (the same numbers llama.cpp's kernels see).
        let act = ActType::for_weight(w.ty);
        let acts = quantize_act_rows(act, &x.data, k)
            .ok_or_else(|| BackendError::Shape { op: Op::MatMul, detail: format!("{k} columns are not whole {:?} blocks", act) })?;
        let all = w.bytes.bytes();
        let mut out_t = vec![0.0f32; n_out * n_tok];
        threads.for_each_chunk(&mut out_t, ROWS_PER_TASK * n_tok, |task, span| {
            let (r0, nr) = (task * ROWS_PER_TASK, span.len() / n_tok);
            let rows = &all[r0 * w.row_bytes..(r0 + nr) * w.row_bytes];
            // Lengths were checked when the weight was loaded; NaN would make a broken
            // invariant visible rather than silently wrong.
            if kernels.matmul(w.ty, k, rows, nr, &acts, n_tok, span).is_err() {
                span.fill(f32::NAN);
            }
        });
        out_t
    } else {
        let rounding = if round_activations { ActRounding::for_weight(w.ty) } else { ActRounding::None };
        let xr: std::borrow::Cow<'_, [f32]> = if rounding == ActRounding::None {
            std::borrow::Cow::Borrowed(&x.data)
        } else {
            let mut xr = vec![0.0; x.data.len()];
            for (src, dst) in x.data.chunks_exact(k).zip(xr.chunks_exact_mut(k)) {
                round_row(rounding, src, dst);
            }
            std::borrow::Cow::Owned(xr)
        };

        // Q4_1/Q5_1 against Q8_1 activations: per-block sum corrections (see `q8_1_sum_deltas`).
        let deltas = (rounding == ActRounding::Q8_1).then(|| {
            let mut d = vec![0.0f32; n_tok * (k / 32)];
            for (src, dst) in x.data.chunks_exact(k).zip(d.chunks_exact_mut(k / 32)) {
                q8_1_sum_deltas(src, dst);
            }
            d
        });
        let block_bytes = w.ty.block_bytes();

        // Results land transposed ([n_out, n_tok]) so each task writes one contiguous span.
        let mut out_t = vec![0.0f32; n_out * n_tok];
        threads.for_each_chunk(&mut out_t, ROWS_PER_TASK * n_tok, |task, span| {
            // Dequantize this task's rows once, then sweep the tokens: each activation row is read
            // once per task and stays in L1 while it meets every weight row.
            let n_rows = span.len() / n_tok;
            let mut rows = vec![0.0f32; n_rows * k];
            for (i, row) in rows.chunks_exact_mut(k).enumerate() {
                // Lengths were checked when the weight was loaded, so this cannot fail; NaN would
                // make a broken invariant visible rather than silently wrong.
                if quant::dequantize(w.ty, w.row(task * ROWS_PER_TASK + i), row).is_err() {
                    row.fill(f32::NAN);
                }
            }
            for t in 0..n_tok {
                let xt = &xr[t * k..(t + 1) * k];
                for (i, row) in rows.chunks_exact(k).enumerate() {
                    span[i * n_tok + t] = dot_f32(row, xt);
                }
            }
            if let Some(deltas) = &deltas {
                for i in 0..n_rows {
                    // The block minimum `m` is the f16 after `d` in both Q4_1 and Q5_1 blocks.
                    let row_bytes = w.row(task * ROWS_PER_TASK + i);
                    let mins: Vec<f32> = row_bytes.chunks_exact(block_bytes).map(|b| half::f16::from_le_bytes([b[2], b[3]]).to_f32()).collect();
                    for t in 0..n_tok {
                        span[i * n_tok + t] += dot_f32(&mins, &deltas[t * (k / 32)..(t + 1) * (k / 32)]);
                    }
                }
            }
        });
        out_t
    };
    for t in 0..n_tok {
        let dst = &mut out.data[t * n_out..(t + 1) * n_out];
        for (o, d) in dst.iter_mut().enumerate() {
            *d = out_t[o * n_tok + t];
        }
        if let Some(b) = &bias {
            dst.iter_mut().zip(b).for_each(|(d, b)| *d += b);
        }
    }
    Ok(())
}

/// The whole weight as f32 (small 1-D weights: norms, biases).
pub fn dequantize_all(w: &CpuWeight) -> Result<Vec<f32>, BackendError> {
    let mut out = vec![0.0; w.rows * w.cols];
    quant::dequantize(w.ty, w.bytes.bytes(), &mut out)
        .map_err(|e| BackendError::Other { op: Op::MatMul, detail: e.to_string() })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;
    use wasm_chord_core::backend::SharedBytes;
    use wasm_chord_core::TensorType;

    pub fn weight(ty: TensorType, rows: usize, cols: usize, values: &[f32]) -> CpuWeight {
        let row_bytes = ty.row_bytes(cols).unwrap();
        let mut bytes = vec![0u8; row_bytes * rows];
        quant::quantize(ty, values, &mut bytes).unwrap();
        CpuWeight { ty, rows, cols, row_bytes, bytes: SharedBytes::from_vec(bytes) }
    }

    fn reference(w: &CpuWeight, x: &[f32], n_tok: usize, rounding: ActRounding) -> Vec<f64> {
        let wd = dequantize_all(w).unwrap();
        let k = w.cols;
        let mut xr = vec![0.0; x.len()];
        for (s, d) in x.chunks(k).zip(xr.chunks_mut(k)) {
            round_row(rounding, s, d);
        }
        let mut out = vec![0.0f64; n_tok * w.rows];
        for t in 0..n_tok {
            let mut deltas = vec![0.0f32; k / 32];
            q8_1_sum_deltas(&x[t * k..(t + 1) * k], &mut deltas);
            for o in 0..w.rows {
                out[t * w.rows + o] = (0..k).map(|i| wd[o * k + i] as f64 * xr[t * k + i] as f64).sum();
                if rounding == ActRounding::Q8_1 {
                    // ggml's `m * s` per block, with s = f16(d * sum(q)).
                    let row = w.row(o);
                    for (b, delta) in row.chunks_exact(w.ty.block_bytes()).zip(&deltas) {
                        out[t * w.rows + o] += half::f16::from_le_bytes([b[2], b[3]]).to_f64() * *delta as f64;
                    }
                }
            }
        }
        out
    }

    fn check(ty: TensorType, round: bool) {
        let mut r = rng(10 + ty.ggml_id() as u64);
        let (rows, cols, n_tok) = (37, 512, 5);
        let w = weight(ty, rows, cols, &randn(&mut r, rows * cols, 1.0));
        let x = CpuTensor { rows: n_tok, cols, data: randn(&mut r, n_tok * cols, 1.0) };
        for threads in [Threads::new(1), Threads::new(2)] {
            let mut out = CpuTensor::zeros(n_tok, rows);
            matmul(&threads, &w, None, &x, &mut out, round).unwrap();
            let rounding = if round { ActRounding::for_weight(ty) } else { ActRounding::None };
            let err = norm_err(&out.data, &reference(&w, &x.data, n_tok, rounding));
            assert!(err < 1e-5, "{ty} round={round}: normalized error {err}");
        }
    }

    #[test]
    fn float_weights_match_f64() {
        for ty in [TensorType::F32, TensorType::F16] {
            check(ty, false);
            check(ty, true);
        }
    }

    #[test]
    fn quantized_weights_match_f64() {
        for ty in [TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q6_K] {
            check(ty, false);
            check(ty, true);
        }
    }

    #[test]
    fn bias_is_added_and_shapes_checked() {
        let mut r = rng(4);
        let w = weight(TensorType::F32, 3, 4, &randn(&mut r, 12, 1.0));
        let b = weight(TensorType::F32, 1, 3, &[1.0, 2.0, 3.0]);
        let x = CpuTensor { rows: 1, cols: 4, data: randn(&mut r, 4, 1.0) };
        let mut with = CpuTensor::zeros(1, 3);
        let mut without = CpuTensor::zeros(1, 3);
        let th = Threads::new(1);
        matmul(&th, &w, Some(&b), &x, &mut with, false).unwrap();
        matmul(&th, &w, None, &x, &mut without, false).unwrap();
        for i in 0..3 {
            assert!((with.data[i] - without.data[i] - (i + 1) as f32).abs() < 1e-6);
        }
        let mut wrong = CpuTensor::zeros(1, 4);
        assert!(matmul(&th, &w, None, &x, &mut wrong, false).is_err());
    }
}
