//! Causal multi-head attention over the key/value cache (f16, or Q8_0 expanded row by row),
//! with grouped-query heads, optional sliding window and score soft-capping: the reference the
//! flash kernel is compared with.
//!
//! With `ggml_rounding`, the query and the softmax weights are rounded to f16 before their
//! products with the f16 cache, as llama.cpp's CPU backend does (its mat-muls against f16
//! tensors convert the other operand to f16 first). On x86-64 with AVX2, FMA and F16C that mode
//! runs `attention_x86.rs`, which computes the same bits in register tiles.

use half::f16;
use wasm_chord_core::backend::{AttentionParams, BackendError, Op};

use super::dot::{axpy_f32, dot_f32, fma_axpy, F16Dot};
use super::expf::ggml_expf;
use crate::tensor::{CpuCache, CpuTensor};
use crate::threads::Threads;

// The op's inputs plus the backend's threads and rounding mode; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    threads: &Threads,
    q: &CpuTensor,
    k: &CpuCache,
    v: &CpuCache,
    kv_len: usize,
    p: &AttentionParams,
    out: &mut CpuTensor,
    ggml_rounding: bool,
) -> Result<(), BackendError> {
    let n = q.rows;
    let shape_ok = p.n_head_kv > 0
        && p.n_head % p.n_head_kv == 0
        && q.cols == p.n_head * p.head_dim_k
        && k.cols == p.n_head_kv * p.head_dim_k
        && v.cols == p.n_head_kv * p.head_dim_v
        && out.rows == n
        && out.cols == p.n_head * p.head_dim_v
        && kv_len <= k.capacity
        && kv_len <= v.capacity
        && k.rows().head_width_ok(p.head_dim_k)
        && v.rows().head_width_ok(p.head_dim_v)
        && p.q_pos0 + n <= kv_len;
    if !shape_ok {
        return Err(BackendError::Shape {
            op: Op::Attention,
            detail: format!(
                "q [{n}, {}], k cols {}, v cols {}, out [{}, {}], kv_len {kv_len}, q_pos0 {}, {p:?}",
                q.cols, k.cols, v.cols, out.rows, out.cols, p.q_pos0
            ),
        });
    }
    #[cfg(target_arch = "x86_64")]
    if ggml_rounding && super::attention_x86::usable(n, p) {
        super::attention_x86::attention(threads, q, k.rows(), v.rows(), p, out);
        return Ok(());
    }
    scalar(threads, q, k, v, p, out, ggml_rounding);
    Ok(())
}

/// The plain version of [`attention`] (shapes checked), one task per query row and head.
fn scalar(threads: &Threads, q: &CpuTensor, k: &CpuCache, v: &CpuCache, p: &AttentionParams, out: &mut CpuTensor, ggml_rounding: bool) {
    let n = q.rows;
    let (dk, dv) = (p.head_dim_k, p.head_dim_v);
    let group = p.n_head / p.n_head_kv;
    let (k, v) = (k.rows(), v.rows());
    // llama.cpp multiplies a batch of queries with tinyBLAS, a single one with ggml_vec_dot_f16
    // (see `F16Dot`); which one decides the summation order of q·k and of the weighted values.
    // tinyBLAS needs the dot length a multiple of 8 (q·k: the head size) and the rows of its
    // first operand a multiple of 4 (weights·values: the value head size).
    let kq_order = if n >= 2 && dk % 8 == 0 { F16Dot::TinyBlas } else { F16Dot::VecDot };
    let kqv_order = if n >= 2 && dv % 4 == 0 { F16Dot::TinyBlas } else { F16Dot::VecDot };
    threads.for_each_chunk(&mut out.data, dv, |task, dst| {
        let (i, h) = (task / p.n_head, task % p.n_head);
        let kv_h = h / group;
        let pos = p.q_pos0 + i;
        let first = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let mut qh = q.data[i * q.cols + h * dk..][..dk].to_vec();
        if ggml_rounding {
            qh.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
        }
        let mut row = vec![0.0f32; dk.max(dv)];
        let mut scores = Vec::with_capacity(pos + 1 - first);
        for j in first..=pos {
            k.load(j, kv_h * dk, dk, &mut row[..dk]);
            let mut s = if ggml_rounding { kq_order.dot(&row[..dk], &qh) } else { dot_f32(&row[..dk], &qh) };
            if let Some(cap) = p.softcap {
                s = cap * (s / cap).tanh();
            }
            scores.push(s * p.scale);
        }
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, s| m.max(*s));
        let mut sum = 0.0f64;
        if ggml_rounding {
            // ggml's AVX2 softmax: vector expf, f32 sums of aligned groups of 8 cache
            // positions (masked ones add 0) in its reduction order, accumulated in f64.
            scores.iter_mut().for_each(|s| *s = ggml_expf(*s - max));
            let mut j0 = first - first % 8;
            while j0 <= pos {
                let lane = |j: usize| if j >= first && j <= pos { scores[j - first] } else { 0.0 };
                let v: [f32; 8] = std::array::from_fn(|i| lane(j0 + i));
                let (a, b) = ((v[0] + v[4]) + (v[2] + v[6]), (v[1] + v[5]) + (v[3] + v[7]));
                sum += (a + b) as f64;
                j0 += 8;
            }
        } else {
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s as f64;
            }
        }
        let inv = (1.0 / sum) as f32;
        if ggml_rounding {
            // The weights go to f16 and meet the f16 values in llama.cpp's order: one partial
            // sum per lane position of the cache index, reduced at the end.
            let mut partial = vec![0.0f32; kqv_order.lanes() * dv];
            for (j, s) in (first..=pos).zip(&scores) {
                let w = f16::from_f32(s * inv).to_f32();
                v.load(j, kv_h * dv, dv, &mut row[..dv]);
                fma_axpy(&mut partial[(j % kqv_order.lanes()) * dv..][..dv], w, &row[..dv]);
            }
            kqv_order.reduce_rows(&mut partial, dst);
        } else {
            dst.fill(0.0);
            for (j, s) in (first..=pos).zip(&scores) {
                v.load(j, kv_h * dv, dv, &mut row[..dv]);
                axpy_f32(dst, s * inv, &row[..dv]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;
    use crate::tensor::CacheData;

    fn cache(rows: usize, cols: usize, values: &[f32]) -> CpuCache {
        CpuCache { cols, capacity: rows, data: CacheData::F16(values.iter().map(|v| f16::from_f32(*v)).collect()) }
    }

    fn f16s(c: &CpuCache) -> &[f16] {
        match &c.data {
            CacheData::F16(d) => d,
            CacheData::Q8_0(_) => unreachable!("the tests build f16 caches"),
        }
    }

    /// Textbook attention in f64 over the f16-rounded cache.
    fn reference(q: &CpuTensor, k: &CpuCache, v: &CpuCache, p: &AttentionParams) -> Vec<f64> {
        let (dk, dv) = (p.head_dim_k, p.head_dim_v);
        let mut out = vec![0.0f64; q.rows * p.n_head * dv];
        for i in 0..q.rows {
            let pos = p.q_pos0 + i;
            for h in 0..p.n_head {
                let kh = h / (p.n_head / p.n_head_kv);
                let visible: Vec<usize> = (0..=pos).filter(|j| p.window.is_none_or(|w| pos - j < w)).collect();
                let scores: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        let mut s: f64 = (0..dk).map(|d| q.data[i * q.cols + h * dk + d] as f64 * f16s(k)[j * k.cols + kh * dk + d].to_f64()).sum();
                        if let Some(c) = p.softcap {
                            s = c as f64 * (s / c as f64).tanh();
                        }
                        s * p.scale as f64
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (w, &j) in e.iter().zip(&visible) {
                    for d in 0..dv {
                        out[(i * p.n_head + h) * dv + d] += w / sum * f16s(v)[j * v.cols + kh * dv + d].to_f64();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_f64() {
        let mut r = rng(9);
        let cases = [
            (4, 2, 16, 16, None, None, 3, 5),
            (4, 1, 32, 16, Some(3), None, 0, 6),
            (2, 2, 8, 8, None, Some(5.0), 2, 1),
        ];
        for (n_head, n_head_kv, dk, dv, window, softcap, q_pos0, n) in cases {
            let kv_len = q_pos0 + n;
            let k = cache(kv_len, n_head_kv * dk, &randn(&mut r, kv_len * n_head_kv * dk, 1.0));
            let v = cache(kv_len, n_head_kv * dv, &randn(&mut r, kv_len * n_head_kv * dv, 1.0));
            let q = CpuTensor { rows: n, cols: n_head * dk, data: randn(&mut r, n * n_head * dk, 1.0) };
            let p = AttentionParams { n_head, n_head_kv, head_dim_k: dk, head_dim_v: dv, scale: 0.3, softcap, q_pos0, window };
            let want = reference(&q, &k, &v, &p);
            for threads in [Threads::new(1), Threads::new(2)] {
                let mut out = CpuTensor::zeros(n, n_head * dv);
                attention(&threads, &q, &k, &v, kv_len, &p, &mut out, false).unwrap();
                assert!(norm_err(&out.data, &want) < 1e-5, "{p:?}");
                attention(&threads, &q, &k, &v, kv_len, &p, &mut out, true).unwrap();
                assert!(norm_err(&out.data, &want) < 3e-3, "{p:?} (f16 rounding)");
            }
        }
    }

    /// The AVX2 tiles compute the scalar kernel's bits in ggml-rounding mode: grouped heads
    /// (groups of 4, 3, 6, 2 and 1), windows, soft-capping, head sizes 32 to 256, one query
    /// (`ggml_vec_dot_f16`'s order; a head of 48 stays scalar) and many (several blocks, not
    /// starting at 0), scores large enough for `expf` to flush, and both cache types.
    #[test]
    fn tiles_match_scalar_bit_for_bit() {
        use wasm_chord_core::backend::KvType;
        let mut r = rng(17);
        let cases = [
            // n_head, n_head_kv, dk, dv, window, softcap, q_pos0, n, q scale
            (4, 1, 256, 256, None, None, 0, 37, 1.0),
            (4, 1, 256, 256, Some(7), None, 5, 21, 3.0),
            (9, 3, 64, 64, None, None, 3, 40, 1.0),
            (6, 1, 64, 32, Some(20), Some(2.0), 30, 17, 4.0),
            (2, 2, 64, 64, None, None, 0, 2, 30.0),
            (4, 4, 256, 256, None, None, 11, 1, 1.0),
            (3, 1, 64, 64, None, Some(50.0), 100, 33, 1.0),
            (8, 2, 128, 128, Some(64), None, 70, 50, 1.0),
            (9, 3, 64, 64, None, None, 40, 1, 2.0),
            (4, 1, 256, 256, Some(100), Some(30.0), 300, 1, 1.0),
            (2, 1, 32, 40, None, None, 0, 1, 1.0),
            (2, 1, 48, 48, None, None, 9, 1, 1.0),
        ];
        for kv_type in [KvType::F16, KvType::Q8_0] {
            for (n_head, n_head_kv, dk, dv, window, softcap, q_pos0, n, qs) in cases {
                if kv_type == KvType::Q8_0 && (dk % 32 != 0 || dv % 32 != 0) {
                    continue;
                }
                let kv_len = q_pos0 + n;
                let store = |cols: usize, r: &mut _| {
                    let mut c = CpuCache::new(kv_type, kv_len + 3, cols).unwrap();
                    let x = CpuTensor { rows: kv_len, cols, data: randn(r, kv_len * cols, 1.0) };
                    crate::ops::copy::store_kv(&mut c, 0, &x).unwrap();
                    c
                };
                let k = store(n_head_kv * dk, &mut r);
                let v = store(n_head_kv * dv, &mut r);
                let q = CpuTensor { rows: n, cols: n_head * dk, data: randn(&mut r, n * n_head * dk, qs) };
                let p = AttentionParams { n_head, n_head_kv, head_dim_k: dk, head_dim_v: dv, scale: 0.125, softcap, q_pos0, window };
                let mut want = CpuTensor::zeros(n, n_head * dv);
                scalar(&Threads::new(1), &q, &k, &v, &p, &mut want, true);
                assert!(want.data.iter().all(|x| x.is_finite()) && want.data.iter().any(|x| *x != 0.0));
                for threads in [Threads::new(1), Threads::new(2)] {
                    let mut got = CpuTensor::zeros(n, n_head * dv);
                    attention(&threads, &q, &k, &v, kv_len, &p, &mut got, true).unwrap();
                    let same = got.data.iter().zip(&want.data).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{kv_type:?} {p:?} n={n}");
                }
            }
        }
    }

    #[test]
    fn rejects_queries_past_the_cache() {
        let k = cache(2, 4, &[0.0; 8]);
        let q = CpuTensor::zeros(2, 4);
        let p = AttentionParams { n_head: 1, n_head_kv: 1, head_dim_k: 4, head_dim_v: 4, scale: 1.0, softcap: None, q_pos0: 1, window: None };
        assert!(attention(&Threads::new(1), &q, &k, &k, 2, &p, &mut CpuTensor::zeros(2, 4), false).is_err());
    }
}
