//! Flash attention against textbook attention computed in float64 on seeded random inputs:
//! every head dim, grouped-query ratios 1/4/8, causal and sliding-window masks, sequence
//! lengths from 1 to 32k (including ones that are not multiples of the tile sizes), f16,
//! bf16-valued and Q8_0 caches, and inputs large enough to overflow a naive softmax.

use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::backend::AttentionParams;
use wasm_chord_core::quant::{q8_0, BlockQ8_0};
use wasm_chord_cpu::ops::attention::attention;
use wasm_chord_cpu::ops::flash_attention::{flash_attention, KvRows, KV_TILE, Q_BLOCK};
use wasm_chord_cpu::threads::Threads;
use wasm_chord_cpu::{CpuCache, CpuTensor};

/// How the random inputs are rounded and the cache stored.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Inputs {
    /// Queries, keys and values are f16 values; the cache is f16.
    F16,
    /// Queries, keys and values are bf16 values (stored exactly in the f16 cache).
    Bf16,
    /// f16 queries; keys and values quantized to Q8_0 in the cache.
    Q8_0,
}

/// One attention call: its inputs, the cache as stored, and the cache as the f64 reference
/// reads it (the stored values, exactly).
struct Case {
    p: AttentionParams,
    n: usize,
    q: CpuTensor,
    k16: Vec<f16>,
    v16: Vec<f16>,
    k8: Vec<BlockQ8_0>,
    v8: Vec<BlockQ8_0>,
    k64: Vec<f64>,
    v64: Vec<f64>,
    inputs: Inputs,
}

impl Case {
    fn new(seed: u64, inputs: Inputs, p: AttentionParams, n: usize, magnitude: f32) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let kv_len = p.q_pos0 + n;
        let round = |x: f32| match inputs {
            Inputs::F16 | Inputs::Q8_0 => f16::from_f32(x).to_f32(),
            Inputs::Bf16 => bf16::from_f32(x).to_f32(),
        };
        let mut uniform = |len: usize, scale: f32| -> Vec<f32> {
            (0..len).map(|_| round((rng.gen::<f32>() * 2.0 - 1.0) * scale)).collect()
        };
        let q = CpuTensor { rows: n, cols: p.n_head * p.head_dim_k, data: uniform(n * p.n_head * p.head_dim_k, magnitude) };
        let k = uniform(kv_len * p.n_head_kv * p.head_dim_k, magnitude);
        let v = uniform(kv_len * p.n_head_kv * p.head_dim_v, 1.0);
        let to_f16 = |x: &[f32]| x.iter().map(|x| f16::from_f32(*x)).collect::<Vec<_>>();
        let to_q8 = |x: &[f32]| {
            let mut blocks = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }; x.len() / 32];
            if inputs == Inputs::Q8_0 {
                q8_0::quantize(x, &mut blocks);
            }
            blocks
        };
        let (k16, v16, k8, v8) = (to_f16(&k), to_f16(&v), to_q8(&k), to_q8(&v));
        let stored = |x16: &[f16], x8: &[BlockQ8_0]| -> Vec<f64> {
            if inputs == Inputs::Q8_0 {
                let mut f = vec![0.0f32; x8.len() * 32];
                q8_0::dequantize(x8, &mut f);
                f.iter().map(|x| *x as f64).collect()
            } else {
                x16.iter().map(|x| x.to_f64()).collect()
            }
        };
        let (k64, v64) = (stored(&k16, &k8), stored(&v16, &v8));
        Self { p, n, q, k16, v16, k8, v8, k64, v64, inputs }
    }

    fn kv_len(&self) -> usize {
        self.p.q_pos0 + self.n
    }

    fn k(&self) -> KvRows<'_> {
        let cols = self.p.n_head_kv * self.p.head_dim_k;
        match self.inputs {
            Inputs::Q8_0 => KvRows::Q8_0 { cols, data: &self.k8 },
            _ => KvRows::F16 { cols, data: &self.k16 },
        }
    }

    fn v(&self) -> KvRows<'_> {
        let cols = self.p.n_head_kv * self.p.head_dim_v;
        match self.inputs {
            Inputs::Q8_0 => KvRows::Q8_0 { cols, data: &self.v8 },
            _ => KvRows::F16 { cols, data: &self.v16 },
        }
    }

    fn flash(&self, threads: &Threads) -> CpuTensor {
        let mut out = CpuTensor::zeros(self.n, self.p.n_head * self.p.head_dim_v);
        flash_attention(threads, &self.q, self.k(), self.v(), self.kv_len(), &self.p, &mut out, false).unwrap();
        out
    }

    /// Textbook attention in f64 for query rows `rows` (all heads), `[rows.len(), n_head * dv]`.
    fn reference(&self, rows: &[usize]) -> Vec<f64> {
        let p = &self.p;
        let (dk, dv) = (p.head_dim_k, p.head_dim_v);
        let (k_cols, v_cols) = (p.n_head_kv * dk, p.n_head_kv * dv);
        let mut out = vec![0.0f64; rows.len() * p.n_head * dv];
        for (r, &i) in rows.iter().enumerate() {
            let pos = p.q_pos0 + i;
            for h in 0..p.n_head {
                let kh = h / (p.n_head / p.n_head_kv);
                let qh = &self.q.data[i * self.q.cols + h * dk..][..dk];
                let visible: Vec<usize> = (0..=pos).filter(|j| p.window.map_or(true, |w| pos - j < w)).collect();
                let scores: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        let kj = &self.k64[j * k_cols + kh * dk..][..dk];
                        let mut s: f64 = qh.iter().zip(kj).map(|(a, b)| *a as f64 * b).sum();
                        if let Some(c) = p.softcap {
                            s = c as f64 * (s / c as f64).tanh();
                        }
                        s * p.scale as f64
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                let o = &mut out[(r * p.n_head + h) * dv..][..dv];
                for (w, &j) in e.iter().zip(&visible) {
                    for (o, x) in o.iter_mut().zip(&self.v64[j * v_cols + kh * dv..][..dv]) {
                        *o += w / sum * x;
                    }
                }
            }
        }
        out
    }

    /// Largest |flash - reference| over the largest |reference|, on query rows `rows`.
    fn rel_err(&self, out: &CpuTensor, rows: &[usize]) -> f64 {
        let want = self.reference(rows);
        let got: Vec<f32> = rows.iter().flat_map(|&i| out.row(i).iter().copied()).collect();
        let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        got.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max) / scale
    }
}

fn params(n_head: usize, n_head_kv: usize, head_dim: usize, window: Option<usize>, q_pos0: usize) -> AttentionParams {
    AttentionParams {
        n_head,
        n_head_kv,
        head_dim_k: head_dim,
        head_dim_v: head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
        softcap: None,
        q_pos0,
        window,
    }
}

const TOL: f64 = 1e-3;

#[test]
fn matches_f64_over_head_dims_gqa_masks_and_cache_types() {
    let threads = Threads::new(2);
    let mut seed = 0;
    for inputs in [Inputs::F16, Inputs::Bf16, Inputs::Q8_0] {
        for head_dim in [64, 128, 256] {
            for ratio in [1, 4, 8] {
                for window in [None, Some(37)] {
                    // A prefill longer than a tile and not a multiple of either tile size,
                    // continuing after cached positions.
                    let (q_pos0, n) = (23, KV_TILE + Q_BLOCK + 5);
                    seed += 1;
                    let case = Case::new(seed, inputs, params(ratio * 2, 2, head_dim, window, q_pos0), n, 2.0);
                    let rows: Vec<usize> = (0..n).collect();
                    let err = case.rel_err(&case.flash(&threads), &rows);
                    assert!(err <= TOL, "{inputs:?} {:?}: relative error {err}", case.p);
                }
            }
        }
    }
}

#[test]
fn matches_f64_over_sequence_lengths() {
    let threads = Threads::new(2);
    for (seed, n) in [1, 2, 15, 16, 17, 63, 64, 65, 129, 1000].into_iter().enumerate() {
        for window in [None, Some(50)] {
            let case = Case::new(100 + seed as u64, Inputs::F16, params(8, 2, 64, window, 0), n, 2.0);
            let rows: Vec<usize> = (0..n).collect();
            let err = case.rel_err(&case.flash(&threads), &rows);
            assert!(err <= TOL, "n {n}, window {window:?}: relative error {err}");
        }
    }
}

#[test]
fn decodes_one_row_after_32k_positions() {
    let threads = Threads::new(2);
    for (ratio, window) in [(4, None), (8, Some(4096))] {
        for inputs in [Inputs::F16, Inputs::Q8_0] {
            let case = Case::new(200 + ratio as u64, inputs, params(ratio, 1, 128, window, 32 * 1024 - 1), 1, 2.0);
            let err = case.rel_err(&case.flash(&threads), &[0]);
            assert!(err <= TOL, "{inputs:?} ratio {ratio}, window {window:?}: relative error {err}");
        }
    }
}

#[test]
fn prefills_4k_tokens() {
    let threads = Threads::new(2);
    let n = 4096;
    let case = Case::new(300, Inputs::F16, params(4, 1, 64, None, 0), n, 2.0);
    let out = case.flash(&threads);
    // Every row is computed; the float64 reference checks a spread of them (the first and
    // last rows, and rows on both sides of tile boundaries).
    let rows: Vec<usize> = (0..n).step_by(61).chain([63, 64, 65, n - 1]).collect();
    let err = case.rel_err(&out, &rows);
    assert!(err <= TOL, "relative error {err}");
}

#[test]
fn softcap_matches_f64() {
    let threads = Threads::new(2);
    let mut p = params(4, 2, 64, Some(20), 5);
    p.softcap = Some(5.0);
    let case = Case::new(400, Inputs::F16, p, 70, 3.0);
    let rows: Vec<usize> = (0..70).collect();
    let err = case.rel_err(&case.flash(&threads), &rows);
    assert!(err <= TOL, "relative error {err}");
}

#[test]
fn large_scores_stay_finite_and_convex() {
    let threads = Threads::new(2);
    // Queries and keys near 1e3: scores reach ~1e5 after scaling, where exp overflows unless
    // the running maximum is subtracted first. (No comparison with float64 here: at this size
    // f32 rounding of the scores alone can swap near-equal maxima.)
    for (seed, window) in [(500, None), (501, Some(30))] {
        let case = Case::new(seed, Inputs::F16, params(8, 2, 128, window, 10), 150, 1000.0);
        let out = case.flash(&threads);
        assert!(out.data.iter().all(|x| x.is_finite()), "{window:?}");
        // Each output is a convex combination of values in [-1, 1].
        assert!(out.data.iter().all(|x| x.abs() <= 1.0 + 1e-3), "{window:?}");
    }
}

#[test]
fn same_result_on_any_number_of_threads() {
    let case = Case::new(600, Inputs::F16, params(8, 2, 64, None, 3), 40, 2.0);
    let one = case.flash(&Threads::new(1));
    for t in [2, 3, 8] {
        assert_eq!(one, case.flash(&Threads::new(t)), "{t} threads");
    }
}

#[test]
fn agrees_with_the_standard_kernel() {
    let threads = Threads::new(2);
    let case = Case::new(700, Inputs::F16, params(8, 2, 64, Some(40), 9), 100, 2.0);
    let kv_len = case.kv_len();
    let cache = |cols: usize, data: &[f16]| CpuCache::from_f16(cols, data.to_vec());
    let (k, v) = (cache(128, &case.k16), cache(128, &case.v16));
    for round_q in [false, true] {
        let mut standard = CpuTensor::zeros(case.n, 8 * 64);
        attention(&threads, &case.q, &k, &v, kv_len, &case.p, &mut standard, round_q).unwrap();
        let mut flash = CpuTensor::zeros(case.n, 8 * 64);
        flash_attention(&threads, &case.q, case.k(), case.v(), kv_len, &case.p, &mut flash, round_q).unwrap();
        let diff = flash.data.iter().zip(&standard.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        // With rounding, the standard kernel also rounds its softmax weights to f16.
        let tol = if round_q { 2e-3 } else { 1e-5 };
        assert!(diff <= tol, "round_q {round_q}: max difference {diff}");
    }
}

#[test]
fn rejects_bad_shapes() {
    let threads = Threads::new(1);
    let k = vec![f16::ZERO; 4 * 64];
    let rows = KvRows::F16 { cols: 64, data: &k };
    let q = CpuTensor::zeros(2, 64);
    let run = |p: &AttentionParams, k: KvRows<'_>, kv_len: usize| {
        flash_attention(&threads, &q, k, k, kv_len, p, &mut CpuTensor::zeros(2, p.n_head * p.head_dim_v), false)
    };
    assert!(run(&params(1, 1, 64, None, 2), rows, 4).is_ok());
    // Queries past the cache length, a cache too short, heads not dividing into groups.
    assert!(run(&params(1, 1, 64, None, 3), rows, 4).is_err());
    assert!(run(&params(1, 1, 64, None, 0), rows, 5).is_err());
    assert!(run(&params(3, 2, 32, None, 0), KvRows::F16 { cols: 64, data: &k }, 2).is_err());
    // Q8_0 heads must be whole blocks.
    let blocks = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }; 8];
    let q8 = KvRows::Q8_0 { cols: 64, data: &blocks };
    assert_eq!(q8.capacity(), 4);
    let q16 = CpuTensor::zeros(2, 4 * 16);
    let p = params(4, 4, 16, None, 0);
    assert!(flash_attention(&threads, &q16, q8, q8, 2, &p, &mut CpuTensor::zeros(2, 64), false).is_err());
}
