//! Quantized matmul: `out[t, o] = sum_k w[o, k] * x[t, k]`, weights read in their file type.
//!
//! With llama.cpp's rounding (the default) activations are quantized once to the weight type's
//! vec_dot_type and the fused kernels dot them with the packed blocks ([`fused`]). Work is split
//! over runs of weight rows, each dotted with every token of the batch, so a batched prefill
//! reads each weight once. Buffers live in per-thread scratch that is reused from call to call:
//! decoding runs a few hundred small matmuls per token and none of them allocates.
//!
//! Without the rounding, each task dequantizes its weight rows into f32 and dots them with the
//! f32 activations (the plain-float reference).

use std::cell::RefCell;

use wasm_chord_core::backend::{Activation, BackendError, Op};
use wasm_chord_core::quant;

use super::act_round::{q8_1_sum_deltas, round_row, ActRounding};
use super::dot::dot_f32;
use crate::kernels::{ActType, Kernels};
use crate::tensor::{CpuTensor, CpuWeight};
use crate::threads::{SendPtr, Threads};

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
    if round_activations && kernels.supports(w.ty) {
        return fused(threads, kernels, w, x, &mut out.data, bias.as_deref(), Epilogue::Store);
    }
    let out_t = {
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

thread_local! {
    /// The calling thread's quantized activations (shared read-only with the workers).
    static ACTS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Each thread's `[rows, tokens]` results of one task before they are written out.
    static TILE_OUT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The activations' block scales as f32, for the packed kernels (shared like `ACTS`).
    static ACT_SCALES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `cell`'s buffer grown to at least `len` elements, or on a fresh buffer when the
/// cell is already borrowed (a nested call).
fn with_scratch<T: Clone + Default, R>(cell: &'static std::thread::LocalKey<RefCell<Vec<T>>>, len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    cell.with(|c| match c.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, T::default());
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![T::default(); len]),
    })
}

/// Weight rows per task of a matmul with `n_out` rows and `n_tok` tokens: about eight tasks
/// per thread (balance on a busy machine), whole register tiles, and for a batch small enough
/// that a task's results stay in L2.
fn rows_per_task(n_out: usize, n_tok: usize, n_threads: usize) -> usize {
    let cap = if n_tok == 1 { 1024 } else { 64 };
    (n_out / (n_threads * 8)).clamp(4, cap).next_multiple_of(4)
}

/// What the fused path does with each result `v` (the dot product, plus the bias if any).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Epilogue {
    /// `out = v`.
    Store,
    /// `out += v`: a residual add, the same f32 add as `ops::elementwise::add`.
    Add,
}

/// `x` quantized to the [`ActType`] of `w`'s type (rows split over the threads for a batch) in
/// the calling thread's scratch, handed to `f` with, for a batch against packed weights, the
/// activations' block scales as f32 (converted once for every task; empty otherwise).
fn with_acts<R>(threads: &Threads, kernels: &Kernels, w: &CpuWeight, x: &CpuTensor, f: impl FnOnce(&[u8], &[f32]) -> R) -> Result<R, BackendError> {
    let (n_tok, k) = (x.rows, x.cols);
    let act = ActType::for_weight(w.ty);
    let a_row = act
        .row_bytes(k)
        .filter(|_| k > 0)
        .ok_or_else(|| BackendError::Shape { op: Op::MatMul, detail: format!("{k} columns are not whole {act:?} blocks") })?;
    Ok(with_scratch(&ACTS, a_row * n_tok, |acts| {
        // Activation rows per task: one task per thread and a half, so a delayed thread
        // leaves little behind.
        let per = n_tok.div_ceil(2 * threads.count()).max(1);
        threads.for_each_chunk(acts, per * a_row, |i, dst| {
            for (j, dst) in dst.chunks_exact_mut(a_row).enumerate() {
                let t = i * per + j;
                kernels.quantize_act(act, &x.data[t * k..(t + 1) * k], dst);
            }
        });
        let acts: &[u8] = acts;
        let ss = match w.packed.as_deref() {
            Some(p) if n_tok > 1 => kernels.act_scales_len(p),
            _ => 0,
        };
        with_scratch(&ACT_SCALES, ss * n_tok, |scales| {
            if let (Some(p), true) = (w.packed.as_deref(), ss > 0) {
                for (row, dst) in acts.chunks_exact(a_row).zip(scales.chunks_exact_mut(ss)) {
                    kernels.act_scales(p, row, dst);
                }
            }
            f(acts, scales)
        })
    }))
}

/// Rows `r0..r0 + nr` of `w` against every token of `acts` into `out`, from the packed copy
/// where there is one (`r0` a multiple of 4, a packed group): the packed kernels write
/// `[n_tok, nr]`, the file-layout ones `[nr, n_tok]` (see [`token_results`]). `scales` are
/// [`with_acts`]'s for `w`, or empty. Lengths were checked when the weight was loaded and by the
/// callers; a failure would be a broken invariant, shown as NaN rather than silently wrong.
#[allow(clippy::too_many_arguments)]
fn weight_rows(kernels: &Kernels, w: &CpuWeight, acts: &[u8], scales: &[f32], n_tok: usize, r0: usize, nr: usize, out: &mut [f32]) {
    let done = match w.packed.as_deref() {
        Some(p) => kernels.matmul_packed(p, r0, nr, acts, scales, n_tok, out),
        None => kernels.matmul(w.ty, w.cols, &w.bytes.bytes()[r0 * w.row_bytes..(r0 + nr) * w.row_bytes], nr, acts, n_tok, out),
    };
    if done.is_err() {
        out.fill(f32::NAN);
    }
}

/// Token `t`'s results of a task's `nr` rows from [`weight_rows`] for `w`: a slice of the
/// packed kernels' token-major results, else gathered from `[nr, n_tok]` into `buf`.
fn token_results<'a>(w: &CpuWeight, res: &'a [f32], t: usize, nr: usize, n_tok: usize, buf: &'a mut [f32]) -> &'a [f32] {
    if w.packed.is_some() {
        return &res[t * nr..(t + 1) * nr];
    }
    for (r, b) in buf.iter_mut().enumerate() {
        *b = res[r * n_tok + t];
    }
    buf
}

/// The fused path: `x` quantized to the weight type's [`ActType`], then the kernels over tasks
/// of weight rows, each result (plus `bias`) written into `out` `[n_tok, n_out]` as `epilogue` says.
fn fused(
    threads: &Threads,
    kernels: &Kernels,
    w: &CpuWeight,
    x: &CpuTensor,
    out: &mut [f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
) -> Result<(), BackendError> {
    let (n_tok, n_out) = (x.rows, w.rows);
    with_acts(threads, kernels, w, x, |acts, scales| {
        let per = rows_per_task(n_out, n_tok, threads.count());
        if n_tok == 1 && epilogue == Epilogue::Store && bias.is_none() {
            // One token: `[n_tok, n_out]` is `[n_out, 1]`, so each task writes its own span.
            threads.for_each_chunk(out, per, |task, span| weight_rows(kernels, w, acts, scales, 1, task * per, span.len(), span));
            return;
        }
        let dst = SendPtr(out.as_mut_ptr());
        threads.for_each_task(n_out.div_ceil(per), |task| {
            let r0 = task * per;
            let nr = per.min(n_out - r0);
            let bias = bias.map(|b| &b[r0..r0 + nr]);
            with_scratch(&TILE_OUT, nr * n_tok, |tile| {
                weight_rows(kernels, w, acts, scales, n_tok, r0, nr, tile);
                for t in 0..n_tok {
                    // SAFETY: this task alone owns columns `r0..r0 + nr` of every row of
                    // `out`, which is `n_tok * n_out` long (checked by the caller).
                    let row = unsafe { std::slice::from_raw_parts_mut(dst.get().add(t * n_out + r0), nr) };
                    if w.packed.is_some() {
                        finish(row, tile[t * nr..(t + 1) * nr].iter().copied(), bias, epilogue);
                    } else {
                        finish(row, tile[t..].iter().step_by(n_tok).copied(), bias, epilogue);
                    }
                }
            });
        });
    })
}

/// Writes one token's results `v` of a task's rows into `row` of the output as `epilogue`
/// says, `v + bias` where there is a bias (one loop per case, so the common copy is a copy).
#[inline(always)]
fn finish(row: &mut [f32], v: impl Iterator<Item = f32>, bias: Option<&[f32]>, epilogue: Epilogue) {
    let it = row.iter_mut().zip(v);
    match (epilogue, bias) {
        (Epilogue::Store, None) => it.for_each(|(o, v)| *o = v),
        (Epilogue::Store, Some(b)) => it.zip(b).for_each(|((o, v), b)| *o = v + b),
        (Epilogue::Add, None) => it.for_each(|(o, v)| *o += v),
        (Epilogue::Add, Some(b)) => it.zip(b).for_each(|((o, v), b)| *o += v + b),
    }
}

/// `acc += x · wᵀ (+ bias)`: [`matmul`] into a temporary then `ops::elementwise::add`, with the
/// add done by each task on its own outputs (the same f32 adds, so the same bits).
pub fn matmul_add(
    threads: &Threads,
    w: &CpuWeight,
    bias: Option<&CpuWeight>,
    x: &CpuTensor,
    acc: &mut CpuTensor,
    round_activations: bool,
) -> Result<(), BackendError> {
    let kernels = Kernels::get();
    if !(round_activations && kernels.supports(w.ty)) || w.cols != x.cols || acc.rows != x.rows || acc.cols != w.rows {
        let mut y = CpuTensor::zeros(x.rows, w.rows);
        matmul(threads, w, bias, x, &mut y, round_activations)?;
        return super::elementwise::add(acc, &y);
    }
    let bias = match bias {
        Some(b) if b.rows * b.cols != w.rows => {
            return Err(BackendError::Shape { op: Op::MatMul, detail: format!("bias of {} for {} outputs", b.rows * b.cols, w.rows) })
        }
        Some(b) => Some(dequantize_all(b)?),
        None => None,
    };
    fused(threads, Kernels::get(), w, x, &mut acc.data, bias.as_deref(), Epilogue::Add)
}

/// `out = act(x · gateᵀ) * (x · upᵀ)`: both projections and the activation in one pass over
/// tasks of rows (each task's gate and up rows, then `act_mul` on them), with the values of two
/// [`matmul`]s and `ops::act_mul::act_mul`: each dot product and each activation is the same.
pub fn matmul_act_mul(
    threads: &Threads,
    act: Activation,
    gate: &CpuWeight,
    up: &CpuWeight,
    x: &CpuTensor,
    out: &mut CpuTensor,
    round_activations: bool,
) -> Result<(), BackendError> {
    let kernels = Kernels::get();
    let (n_tok, n_out) = (x.rows, gate.rows);
    let fusable = round_activations
        && kernels.supports(gate.ty)
        && gate.ty == up.ty
        && (gate.rows, gate.cols) == (up.rows, up.cols)
        && gate.cols == x.cols
        && (out.rows, out.cols) == (n_tok, n_out);
    if !fusable {
        let mut g = CpuTensor::zeros(n_tok, gate.rows);
        let mut u = CpuTensor::zeros(n_tok, up.rows);
        matmul(threads, gate, None, x, &mut g, round_activations)?;
        matmul(threads, up, None, x, &mut u, round_activations)?;
        return super::act_mul::act_mul(threads, act, &g, &u, out, round_activations);
    }
    let dst = SendPtr(out.data.as_mut_ptr());
    with_acts(threads, kernels, gate, x, |acts, scales| {
        // `up` has gate's type and shape, so the same scales when it is packed too; otherwise its
        // kernel converts them itself.
        let up_scales = if up.packed.is_some() == gate.packed.is_some() { scales } else { &[] };
        let per = rows_per_task(n_out, n_tok, threads.count());
        threads.for_each_task(n_out.div_ceil(per), |task| {
            let r0 = task * per;
            let nr = per.min(n_out - r0);
            // Gate and up results `[nr, n_tok]`, then one token's `nr` of each.
            with_scratch(&TILE_OUT, 2 * nr * (n_tok + 1), |tile| {
                let (g, rest) = tile.split_at_mut(nr * n_tok);
                let (u, rest) = rest.split_at_mut(nr * n_tok);
                let (gt, ut) = rest.split_at_mut(nr);
                weight_rows(kernels, gate, acts, scales, n_tok, r0, nr, g);
                weight_rows(kernels, up, acts, up_scales, n_tok, r0, nr, u);
                for t in 0..n_tok {
                    let (gs, us) = (token_results(gate, g, t, nr, n_tok, gt), token_results(up, u, t, nr, n_tok, ut));
                    // SAFETY: this task alone owns columns `r0..r0 + nr` of every row of
                    // `out`, which is `n_tok * n_out` long (checked above).
                    let row = unsafe { std::slice::from_raw_parts_mut(dst.get().add(t * n_out + r0), nr) };
                    super::act_mul::act_mul_span(act, gs, us, row, true);
                }
            });
        });
    })
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
        CpuWeight { ty, rows, cols, row_bytes, bytes: SharedBytes::from_vec(bytes), packed: None }
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
