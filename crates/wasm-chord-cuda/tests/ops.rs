//! Every CUDA op against the CPU backend (the reference, in plain f32: no ggml rounding) on
//! seeded random inputs, with a normalized-error budget per op and weight type.
//!
//! Needs a GPU: without one each test prints a note and passes, unless
//! `WASM_CHORD_REQUIRE_GPU=1`, when it fails.

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::backend::{Activation, AttentionKind, AttentionParams, Backend, RopeMode, RopeParams, SharedBytes, WeightData};
use wasm_chord_core::{quant, TensorType};
use wasm_chord_cpu::{CpuBackend, CpuOptions};
use wasm_chord_cuda::{ops, CudaBackend, CudaOptions, Layout};

fn gpu() -> Option<&'static CudaBackend> {
    static GPU: OnceLock<Option<CudaBackend>> = OnceLock::new();
    // Standard attention: attention_matches_cpu holds today's kernel to 1e-5; the flash kernels
    // (f16 operands, the default) are tested in tests/flash.rs.
    GPU.get_or_init(|| match CudaBackend::with_options(0, CudaOptions { attention: AttentionKind::Standard, ..CudaOptions::default() }) {
        Ok(b) => {
            eprintln!("CUDA device: {} ({})", b.device().name(), b.device().arch());
            Some(b)
        }
        Err(e) if std::env::var("WASM_CHORD_REQUIRE_GPU").is_ok_and(|v| v == "1") => panic!("WASM_CHORD_REQUIRE_GPU=1 but {e}"),
        Err(e) => {
            eprintln!("skipping CUDA op tests: {e}");
            None
        }
    })
    .as_ref()
}

fn cpu() -> CpuBackend {
    CpuBackend::new(&CpuOptions { n_threads: 2, ggml_rounding: false, ..CpuOptions::default() })
}

/// The CPU backend as llama.cpp computes (activations quantized per weight type).
fn cpu_ggml() -> CpuBackend {
    CpuBackend::new(&CpuOptions { n_threads: 2, ggml_rounding: true, ..CpuOptions::default() })
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn randn(r: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (r.gen::<f32>() * 2.0 - 1.0) * scale).collect()
}

/// max |a - b| / max |b|.
fn norm_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    if a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs() as f64));
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max) / scale
}

fn weight_data(ty: TensorType, rows: usize, cols: usize, values: &[f32]) -> WeightData {
    let mut bytes = vec![0u8; ty.row_bytes(cols).unwrap() * rows];
    quant::quantize(ty, values, &mut bytes).unwrap();
    WeightData { ty, rows, cols, bytes: SharedBytes::from_vec(bytes) }
}

fn down(g: &CudaBackend, t: &wasm_chord_cuda::CudaTensor) -> Vec<f32> {
    let mut v = Vec::new();
    g.download(t, &mut v).unwrap();
    v
}

const WEIGHT_TYPES: [TensorType; 15] = TensorType::WEIGHTS;

/// The f32 kernels (up to 8 tokens per weight pass) must match the f32 reference to rounding;
/// from `gemm::MIN_TOKENS` tokens the weights and activations are rounded to f16 for the tensor
/// cores, whose error on these sums is a few 1e-4 of the largest output.
fn matmul_budget(n_tok: usize) -> f64 {
    if n_tok >= ops::gemm::MIN_TOKENS {
        1e-3
    } else {
        1e-5
    }
}

/// Whether a matmul of `ty` over `n_tok` tokens runs on the int8 kernels (mmvq.cu), whose
/// activations are rounded to 8 bits per block of 32 as llama.cpp's mmvq (and the CPU backend
/// with ggml's rounding) round them.
fn int8_path(ty: TensorType, n_tok: usize) -> bool {
    ops::mmvq::supports(ty) && n_tok < ops::gemm::MIN_TOKENS
}

/// The int8 path's budget: llama.cpp's test-backend-ops bound for mul_mat, a normalized mean
/// squared error (sum (a - b)^2 / sum b^2) of 5e-4 against the f32 reference. Rounding x to
/// 8 bits (error up to amax / 254 per value) gives ~1e-5 on these uniform inputs; a wrong scale,
/// offset or block lands far above the bound. The max-abs metric of the f32 kernels does not fit
/// here: a dot product's error grows with sqrt(cols) relative to its size.
const INT8_NMSE: f64 = 5e-4;

/// sum (a - b)^2 / max(sum b^2, floor); infinite if `a` has a non-finite value.
fn nmse(a: &[f32], b: &[f32], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    if a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    num / den.max(floor).max(1e-30)
}

/// The matmul check of one case: NMSE on the int8 path, max-abs otherwise; `Err` with a note
/// when over budget.
fn check_matmul(ty: TensorType, n_tok: usize, got: &[f32], want: &[f32]) -> Result<f64, String> {
    let (err, budget) = if int8_path(ty, n_tok) { (nmse(got, want, 0.0), INT8_NMSE) } else { (norm_err(got, want), matmul_budget(n_tok)) };
    if err > budget {
        return Err(format!("{ty} n_tok {n_tok}: {err:.2e} > {budget:.0e}"));
    }
    Ok(err)
}

/// A device tensor of NaNs, so that an output element the kernel does not write fails the check.
fn poisoned(g: &CudaBackend, rows: usize, cols: usize) -> wasm_chord_cuda::CudaTensor {
    g.upload(&vec![f32::NAN; rows * cols], rows, cols).unwrap()
}

#[test]
fn matmul_matches_cpu_for_every_weight_type() {
    let Some(g) = gpu() else { return };
    let (c, cg) = (cpu(), cpu_ggml());
    // 4352 = 17 * 256: rows span several staging steps and, for most types, need padding to 16
    // bytes on the device. 37 rows: not a multiple of the rows per block. Token counts on both
    // sides of the 8-token kernel's batch and of the tensor-core threshold.
    let (rows, cols) = (37, 4352);
    let mut failures = Vec::new();
    for ty in WEIGHT_TYPES {
        let mut r = rng(100 + ty.ggml_id() as u64);
        let w = weight_data(ty, rows, cols, &randn(&mut r, rows * cols, 1.0));
        let (gw, cw) = (g.load_weight(w.clone()).unwrap(), c.load_weight(w.clone()).unwrap());
        let cgw = cg.load_weight(w.clone()).unwrap();
        // The f32-activation kernels read the file layout (the backend may repack gw).
        let fw = g.load_weight_in(w, Layout::File).unwrap();
        for n_tok in [1, 3, 8, 9, 17, 64] {
            let x = randn(&mut r, n_tok * cols, 1.0);
            let mut go = poisoned(g, n_tok, rows);
            let mut co = c.tensor(n_tok, rows).unwrap();
            let gx = g.upload(&x, n_tok, cols).unwrap();
            g.matmul(&gw, None, &gx, &mut go).unwrap();
            c.matmul(&cw, None, &c.upload(&x, n_tok, cols).unwrap(), &mut co).unwrap();
            let got = down(g, &go);
            if !int8_path(ty, n_tok) {
                match check_matmul(ty, n_tok, &got, &co.data) {
                    Ok(err) => eprintln!("matmul {ty:>6} n_tok {n_tok}: normalized error {err:.2e}"),
                    Err(e) => failures.push(e),
                }
            } else {
                // Beside it, the CPU with ggml's rounding (llama.cpp's activation quantization)
                // against the same f32 reference: the int8 kernels should sit at or below it.
                let mut cgo = cg.tensor(n_tok, rows).unwrap();
                cg.matmul(&cgw, None, &cg.upload(&x, n_tok, cols).unwrap(), &mut cgo).unwrap();
                match check_matmul(ty, n_tok, &got, &co.data) {
                    Ok(err) => eprintln!("matmul {ty:>6} n_tok {n_tok}: int8 NMSE {err:.2e} (CPU with ggml rounding {:.2e})", nmse(&cgo.data, &co.data, 0.0)),
                    Err(e) => failures.push(e),
                }
                // The f32-activation kernels, which `CudaOptions::f32_matvec` keeps, at 1e-5.
                let mut fo = poisoned(g, n_tok, rows);
                ops::matvec::matmul(g.device(), &fw, None, &gx, &mut fo).unwrap();
                let err = norm_err(&down(g, &fo), &co.data);
                if err > 1e-5 {
                    failures.push(format!("{ty} n_tok {n_tok} (f32 matvec): {err:.2e} > 1e-5"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "over budget: {failures:?}");
}

/// Odd shapes through the one-token kernel: one row, a row of a single k-quant block, and more
/// rows than a block has warps with a column count that is not a multiple of the step.
#[test]
fn matvec_handles_small_and_odd_shapes() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut failures = Vec::new();
    for ty in WEIGHT_TYPES {
        for (rows, cols) in [(1, 256), (9, 256), (70, 11008)] {
            let mut r = rng(300 + ty.ggml_id() as u64 + rows as u64);
            let w = weight_data(ty, rows, cols, &randn(&mut r, rows * cols, 1.0));
            let x = randn(&mut r, cols, 1.0);
            let (gw, gx) = (g.load_weight(w.clone()).unwrap(), g.upload(&x, 1, cols).unwrap());
            let mut co = c.tensor(1, rows).unwrap();
            let w_file = w.clone();
            c.matmul(&c.load_weight(w).unwrap(), None, &c.upload(&x, 1, cols).unwrap(), &mut co).unwrap();
            // With one or a few outputs, the largest can be a near-cancelling sum: normalize by
            // at least the typical size of a dot product of uniform(-1, 1) values instead.
            let typical = 0.25 * (cols as f64).sqrt();
            let mut go = poisoned(g, 1, rows);
            g.matmul(&gw, None, &gx, &mut go).unwrap();
            if int8_path(ty, 1) {
                let err = nmse(&down(g, &go), &co.data, rows as f64 * typical * typical);
                if err > INT8_NMSE {
                    failures.push(format!("{ty} [{rows}, {cols}] (int8): NMSE {err:.2e} > {INT8_NMSE:.0e}"));
                }
                // The f32-activation kernel (`CudaOptions::f32_matvec`) at 1e-5 below.
                go = poisoned(g, 1, rows);
                let fw = g.load_weight_in(w_file.clone(), Layout::File).unwrap();
                ops::matvec::matmul(g.device(), &fw, None, &gx, &mut go).unwrap();
            }
            let got = down(g, &go);
            let scale = co.data.iter().fold(typical as f32, |m, v| m.max(v.abs())) as f64;
            let err = if got.iter().all(|v| v.is_finite()) {
                got.iter().zip(&co.data).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0.0, f64::max) / scale
            } else {
                f64::INFINITY
            };
            if err > 1e-5 {
                failures.push(format!("{ty} [{rows}, {cols}]: {err:.2e} > 1e-5"));
            }
        }
    }
    assert!(failures.is_empty(), "over budget: {failures:?}");
}

#[test]
fn matmul_adds_bias() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut r = rng(7);
    let (rows, cols) = (10, 256);
    let w = weight_data(TensorType::Q8_0, rows, cols, &randn(&mut r, rows * cols, 1.0));
    let b = weight_data(TensorType::F32, 1, rows, &randn(&mut r, rows, 1.0));
    // 1 and 2 tokens: the matvec kernels' epilogue; 12: after the tensor-core matmul.
    for n_tok in [1, 2, 12] {
        let x = randn(&mut r, n_tok * cols, 1.0);
        let mut go = poisoned(g, n_tok, rows);
        let mut co = c.tensor(n_tok, rows).unwrap();
        g.matmul(&g.load_weight(w.clone()).unwrap(), Some(&g.load_weight(b.clone()).unwrap()), &g.upload(&x, n_tok, cols).unwrap(), &mut go).unwrap();
        c.matmul(&c.load_weight(w.clone()).unwrap(), Some(&c.load_weight(b.clone()).unwrap()), &c.upload(&x, n_tok, cols).unwrap(), &mut co).unwrap();
        check_matmul(TensorType::Q8_0, n_tok, &down(g, &go), &co.data).unwrap();
    }
    let gw = g.load_weight(weight_data(TensorType::Q8_0, rows, cols, &randn(&mut r, rows * cols, 1.0))).unwrap();
    for n_tok in [2, 12] {
        let x = randn(&mut r, n_tok * cols, 1.0);
        let mut wrong = g.tensor(n_tok, rows + 1).unwrap();
        assert!(g.matmul(&gw, None, &g.upload(&x, n_tok, cols).unwrap(), &mut wrong).is_err());
    }
}

/// The fused feed-forward projections (gate and up with the activation in one kernel) and the
/// residual add in the matmul's epilogue, against the CPU's unfused ops, on the int8 path (1..8
/// tokens) and past it (9 tokens: the trait's composition over cuBLAS).
#[test]
fn fused_matmuls_match_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let (rows, cols) = (45, 512);
    let mut failures = Vec::new();
    for ty in WEIGHT_TYPES {
        let mut r = rng(500 + ty.ggml_id() as u64);
        let wg = weight_data(ty, rows, cols, &randn(&mut r, rows * cols, 1.0));
        let wu = weight_data(ty, rows, cols, &randn(&mut r, rows * cols, 1.0));
        let bias = weight_data(TensorType::F32, 1, rows, &randn(&mut r, rows, 1.0));
        let (ggw, guw, gb) = (g.load_weight(wg.clone()).unwrap(), g.load_weight(wu.clone()).unwrap(), g.load_weight(bias.clone()).unwrap());
        let (cgw, cuw, cb) = (c.load_weight(wg).unwrap(), c.load_weight(wu).unwrap(), c.load_weight(bias).unwrap());
        for n_tok in [1, 3, 8, 9] {
            let x = randn(&mut r, n_tok * cols, 1.0);
            let (gx, cx) = (g.upload(&x, n_tok, cols).unwrap(), c.upload(&x, n_tok, cols).unwrap());
            for act in [Activation::Silu, Activation::GeluTanh] {
                let mut go = poisoned(g, n_tok, rows);
                let mut co = c.tensor(n_tok, rows).unwrap();
                g.matmul_act_mul(act, &ggw, &guw, &gx, &mut go).unwrap();
                c.matmul_act_mul(act, &cgw, &cuw, &cx, &mut co).unwrap();
                let err = nmse(&down(g, &go), &co.data, 0.0);
                eprintln!("matmul_act_mul {ty:>6} {act:?} n_tok {n_tok}: NMSE {err:.2e}");
                if err > INT8_NMSE {
                    failures.push(format!("matmul_act_mul {ty} {act:?} n_tok {n_tok}: {err:.2e}"));
                }
            }
            let acc0 = randn(&mut r, n_tok * rows, 10.0);
            let mut ga = g.upload(&acc0, n_tok, rows).unwrap();
            let mut ca = c.upload(&acc0, n_tok, rows).unwrap();
            g.matmul_add(&ggw, Some(&gb), &gx, &mut ga).unwrap();
            c.matmul_add(&cgw, Some(&cb), &cx, &mut ca).unwrap();
            let err = nmse(&down(g, &ga), &ca.data, 0.0);
            eprintln!("matmul_add {ty:>6} n_tok {n_tok}: NMSE {err:.2e}");
            if err > INT8_NMSE {
                failures.push(format!("matmul_add {ty} n_tok {n_tok}: {err:.2e}"));
            }
            // A second matmul over the same x with no op between reuses its int8 activations.
            let mut go = poisoned(g, n_tok, rows);
            let mut co = c.tensor(n_tok, rows).unwrap();
            g.matmul_add(&guw, None, &gx, &mut ga).unwrap();
            g.matmul(&ggw, None, &gx, &mut go).unwrap();
            c.matmul(&cgw, None, &cx, &mut co).unwrap();
            let err = nmse(&down(g, &go), &co.data, 0.0);
            if err > INT8_NMSE {
                failures.push(format!("matmul {ty} n_tok {n_tok} after matmul_add: {err:.2e}"));
            }
        }
    }
    assert!(failures.is_empty(), "over budget {INT8_NMSE:.0e}: {failures:?}");
}

#[test]
fn embed_matches_cpu_for_every_weight_type() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let (rows, cols) = (50, 512);
    for ty in WEIGHT_TYPES {
        let mut r = rng(200 + ty.ggml_id() as u64);
        let w = weight_data(ty, rows, cols, &randn(&mut r, rows * cols, 1.0));
        let ids = [3u32, 49, 0, 3, 17];
        let mut go = g.tensor(ids.len(), cols).unwrap();
        let mut co = c.tensor(ids.len(), cols).unwrap();
        g.embed(&g.load_weight(w.clone()).unwrap(), &ids, 0.5, &mut go).unwrap();
        c.embed(&c.load_weight(w).unwrap(), &ids, 0.5, &mut co).unwrap();
        // Dequantization is exact arithmetic on both sides up to the order of two products.
        let err = norm_err(&down(g, &go), &co.data);
        assert!(err < 1e-6, "{ty}: normalized error {err:.2e}");
    }
    let w = g.load_weight(weight_data(TensorType::Q4_0, rows, cols, &vec![0.5; rows * cols])).unwrap();
    assert!(g.embed(&w, &[50], 1.0, &mut g.tensor(1, cols).unwrap()).is_err());
}

#[test]
fn rms_norm_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut r = rng(3);
    // One or two float4 per thread up to 8192-value groups (13B's 5120 takes two; QK-norm
    // heads one), the strided kernel for groups that are not a multiple of 4.
    for (rows, cols, group) in [(3, 4096, 4096), (5, 1024, 64), (1, 576, 576), (1, 5120, 5120), (2, 8192, 8192), (4, 120, 30)] {
        let x = randn(&mut r, rows * cols, 2.0);
        let w = weight_data(TensorType::F32, 1, group, &randn(&mut r, group, 1.0));
        let mut go = poisoned(g, rows, cols);
        let mut co = c.tensor(rows, cols).unwrap();
        g.rms_norm(&g.upload(&x, rows, cols).unwrap(), &g.load_weight(w.clone()).unwrap(), 1e-6, &mut go).unwrap();
        c.rms_norm(&c.upload(&x, rows, cols).unwrap(), &c.load_weight(w).unwrap(), 1e-6, &mut co).unwrap();
        let err = norm_err(&down(g, &go), &co.data);
        assert!(err < 1e-5, "[{rows}, {cols}] groups of {group}: {err:.2e}");
    }
}

/// The norm that also quantizes its output for the int8 matvec writes the same normed values
/// as the plain norm and the same bytes, scales and sums as `mmvq::quantize` of them (bit for
/// bit: both round the same values the same way), everywhere in the scratch.
#[test]
fn rms_norm_q8_matches_norm_then_quantize() {
    let Some(g) = gpu() else { return };
    let dev = g.device();
    let mut r = rng(13);
    for (rows, cols) in [(1, 2048), (1, 4096), (1, 5120), (3, 576), (8, 8192)] {
        let x = g.upload(&randn(&mut r, rows * cols, 2.0), rows, cols).unwrap();
        let w = g.load_weight(weight_data(TensorType::F32, 1, cols, &randn(&mut r, cols, 1.0))).unwrap();
        let w = w.values.as_ref().unwrap();
        let n = ops::mmvq::scratch_len(rows, cols);
        let (mut fused, mut plain) = (poisoned(g, rows, cols), poisoned(g, rows, cols));
        let mut fused_q = g.upload(&vec![7.0; n], 1, n).unwrap();
        let mut plain_q = g.upload(&vec![-3.0; n], 1, n).unwrap();
        let acts = ops::norm::rms_norm_q8(dev, &x, w, 1e-5, &mut fused, &mut fused_q).unwrap();
        assert!(acts.fits(rows, cols));
        ops::norm::rms_norm(dev, &x, w, 1e-5, &mut plain).unwrap();
        ops::mmvq::quantize(dev, &plain, &mut plain_q).unwrap();
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(down(g, &fused)), bits(down(g, &plain)), "[{rows}, {cols}]: normed values");
        assert_eq!(bits(down(g, &fused_q)), bits(down(g, &plain_q)), "[{rows}, {cols}]: int8 activations");
    }
}

/// q, k and v in one launch per run of same-type weights give exactly the three matmuls'
/// values (the same kernel body over the same activations), with biases, rows that do not
/// fill a block, and a v of another type (Q4_K_M's Q6_K layers).
#[test]
fn matmul_qkv_matches_three_matmuls() {
    let Some(g) = gpu() else { return };
    let mut r = rng(14);
    let cols = 512;
    let cases: [([TensorType; 3], [usize; 3], bool); 4] = [
        ([TensorType::Q4_K, TensorType::Q4_K, TensorType::Q4_K], [256, 64, 64], false),
        ([TensorType::Q4_K, TensorType::Q4_K, TensorType::Q6_K], [256, 64, 64], true),
        ([TensorType::Q4_0, TensorType::Q4_0, TensorType::Q4_0], [130, 33, 35], true),
        ([TensorType::Q8_0, TensorType::Q5_K, TensorType::Q5_K], [97, 32, 31], false),
    ];
    for (types, rows, with_bias) in cases {
        let x = g.upload(&randn(&mut r, cols, 1.0), 1, cols).unwrap();
        let ws: Vec<_> = (0..3).map(|i| g.load_weight(weight_data(types[i], rows[i], cols, &randn(&mut r, rows[i] * cols, 1.0))).unwrap()).collect();
        let bs: Vec<_> = (0..3).map(|i| g.load_weight(weight_data(TensorType::F32, 1, rows[i], &randn(&mut r, rows[i], 1.0))).unwrap()).collect();
        let bias = |i: usize| with_bias.then(|| &bs[i]);
        let mut fused: Vec<_> = (0..3).map(|i| poisoned(g, 1, rows[i])).collect();
        let [q, k, v] = &mut fused[..] else { unreachable!() };
        g.matmul_qkv([&ws[0], &ws[1], &ws[2]], [bias(0), bias(1), bias(2)], &x, [q, k, v]).unwrap();
        for i in 0..3 {
            let mut one = poisoned(g, 1, rows[i]);
            g.matmul(&ws[i], bias(i), &x, &mut one).unwrap();
            let (got, want) = (down(g, &fused[i]), down(g, &one));
            assert!(got.iter().all(|v| v.is_finite()), "{types:?} {rows:?} output {i}: unwritten values");
            assert_eq!(got, want, "{types:?} {rows:?} output {i}");
        }
    }
}

#[test]
fn rope_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut r = rng(4);
    for (mode, n_rot, ext_factor, ff) in [(RopeMode::Interleaved, 64, 0.0, false), (RopeMode::Neox, 64, 0.0, true), (RopeMode::Neox, 32, 1.0, false)] {
        let p = RopeParams {
            mode,
            n_rot,
            freq_base: 10000.0,
            freq_scale: 0.25,
            ext_factor,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            n_ctx_orig: 4096,
            freq_factors: ff.then(|| (0..n_rot / 2).map(|i| 1.0 + i as f32 / 16.0).collect()),
        };
        let (rows, head_dim, heads) = (4, 64, 3);
        let cols = head_dim * heads;
        let x = randn(&mut r, rows * cols, 1.0);
        let positions = [0, 1, 77, 5000];
        let mut gx = g.upload(&x, rows, cols).unwrap();
        let mut cx = c.upload(&x, rows, cols).unwrap();
        g.rope(&mut gx, head_dim, &positions, &p).unwrap();
        c.rope(&mut cx, head_dim, &positions, &p).unwrap();
        let err = norm_err(&down(g, &gx), &cx.data);
        assert!(err < 1e-5, "{mode:?} n_rot {n_rot} ext {ext_factor}: {err:.2e}");
    }
}

/// The fused rope + cache write against the four ops it replaces: q and k rotated as the CPU
/// rotates them, and cache rows equal bit for bit to what `rope` + `store_kv` write on the GPU
/// (the same rotation and f16 rounding), rows outside `start..` untouched.
#[test]
fn rope_store_kv_matches_the_unfused_ops() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut r = rng(14);
    let cache_bits = |cache: &wasm_chord_cuda::CudaCache| match &cache.data {
        wasm_chord_cuda::CacheData::F16(d) => g.device().stream().clone_dtoh(d).unwrap(),
        wasm_chord_cuda::CacheData::Q8_0 { .. } => panic!("expected an f16 cache"),
    };
    for (mode, n_rot, head_dim, ff) in [(RopeMode::Interleaved, 64, 64, false), (RopeMode::Neox, 128, 128, true), (RopeMode::Neox, 32, 64, false)] {
        let p = RopeParams {
            mode,
            n_rot,
            freq_base: 10000.0,
            freq_scale: 1.0,
            ext_factor: 0.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            n_ctx_orig: 4096,
            freq_factors: ff.then(|| (0..n_rot / 2).map(|i| 1.0 + i as f32 / 16.0).collect()),
        };
        let (n_head, n_kv, dv) = (8, 2, 96);
        let (qc, kc, vc) = (n_head * head_dim, n_kv * head_dim, n_kv * dv);
        for (rows, start) in [(3, 0), (1, 700), (5, 1019)] {
            let positions: Vec<usize> = (start..start + rows).collect();
            let (q, k, v) = (randn(&mut r, rows * qc, 1.0), randn(&mut r, rows * kc, 1.0), randn(&mut r, rows * vc, 1.0));
            let mut fused = (g.cache(1024, kc).unwrap(), g.cache(1024, vc).unwrap());
            let mut unfused = (g.cache(1024, kc).unwrap(), g.cache(1024, vc).unwrap());
            let (mut gq, mut gk, gv) = (g.upload(&q, rows, qc).unwrap(), g.upload(&k, rows, kc).unwrap(), g.upload(&v, rows, vc).unwrap());
            g.rope_store_kv(&mut gq, &mut gk, &gv, head_dim, &positions, &p, &mut fused.0, &mut fused.1, start).unwrap();
            let (mut uq, mut uk) = (g.upload(&q, rows, qc).unwrap(), g.upload(&k, rows, kc).unwrap());
            g.rope(&mut uq, head_dim, &positions, &p).unwrap();
            g.rope(&mut uk, head_dim, &positions, &p).unwrap();
            g.store_kv(&mut unfused.0, start, &uk).unwrap();
            g.store_kv(&mut unfused.1, start, &gv).unwrap();
            let (mut cq, mut ck) = (c.upload(&q, rows, qc).unwrap(), c.upload(&k, rows, kc).unwrap());
            c.rope(&mut cq, head_dim, &positions, &p).unwrap();
            c.rope(&mut ck, head_dim, &positions, &p).unwrap();
            let what = format!("{mode:?} n_rot {n_rot} head_dim {head_dim} rows {rows} at {start}");
            let (eq, ek) = (norm_err(&down(g, &gq), &cq.data), norm_err(&down(g, &gk), &ck.data));
            assert!(eq < 1e-5 && ek < 1e-5, "{what}: q {eq:.2e}, k {ek:.2e}");
            assert_eq!(down(g, &gq), down(g, &uq), "{what}: q");
            let (fk, uk_bits) = (cache_bits(&fused.0), cache_bits(&unfused.0));
            let (fv, uv_bits) = (cache_bits(&fused.1), cache_bits(&unfused.1));
            assert!(fk == uk_bits, "{what}: key cache rows differ");
            assert!(fv == uv_bits, "{what}: value cache rows differ");
            assert!(fk[start * kc..(start + rows) * kc].iter().any(|&b| b != 0), "{what}: keys not written");
        }
    }
    // Rows past the cache are an error, not a write out of bounds.
    let (mut kc, mut vc) = (g.cache(4, 64).unwrap(), g.cache(4, 64).unwrap());
    let p = RopeParams { mode: RopeMode::Neox, n_rot: 64, freq_base: 10000.0, freq_scale: 1.0, ext_factor: 0.0, attn_factor: 1.0, beta_fast: 32.0, beta_slow: 1.0, n_ctx_orig: 4096, freq_factors: None };
    let (mut q, mut k, v) = (g.tensor(2, 64).unwrap(), g.tensor(2, 64).unwrap(), g.tensor(2, 64).unwrap());
    assert!(g.rope_store_kv(&mut q, &mut k, &v, 64, &[3, 4], &p, &mut kc, &mut vc, 3).is_err());
}

#[test]
fn elementwise_ops_match_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut r = rng(5);
    let (rows, cols) = (3, 1000);
    let a = randn(&mut r, rows * cols, 4.0);
    let b = randn(&mut r, rows * cols, 4.0);
    for act in [Activation::Silu, Activation::GeluTanh] {
        let mut go = g.tensor(rows, cols).unwrap();
        let mut co = c.tensor(rows, cols).unwrap();
        g.act_mul(act, &g.upload(&a, rows, cols).unwrap(), &g.upload(&b, rows, cols).unwrap(), &mut go).unwrap();
        c.act_mul(act, &c.upload(&a, rows, cols).unwrap(), &c.upload(&b, rows, cols).unwrap(), &mut co).unwrap();
        let err = norm_err(&down(g, &go), &co.data);
        assert!(err < 1e-5, "{act:?}: {err:.2e}");
    }
    let mut ga = g.upload(&a, rows, cols).unwrap();
    let mut ca = c.upload(&a, rows, cols).unwrap();
    g.add(&mut ga, &g.upload(&b, rows, cols).unwrap()).unwrap();
    c.add(&mut ca, &c.upload(&b, rows, cols).unwrap()).unwrap();
    g.scale(&mut ga, 0.3).unwrap();
    c.scale(&mut ca, 0.3).unwrap();
    assert!(norm_err(&down(g, &ga), &ca.data) < 1e-6);
    let pick = [2, 0, 2];
    let mut go = g.tensor(3, cols).unwrap();
    let mut co = c.tensor(3, cols).unwrap();
    g.copy_rows(&ga, &pick, &mut go).unwrap();
    c.copy_rows(&ca, &pick, &mut co).unwrap();
    assert!(norm_err(&down(g, &go), &co.data) < 1e-6);
    assert!(g.copy_rows(&ga, &[3], &mut g.tensor(1, cols).unwrap()).is_err());
    g.softmax(&mut go).unwrap();
    c.softmax(&mut co).unwrap();
    let err = norm_err(&down(g, &go), &co.data);
    assert!(err < 1e-5, "softmax: {err:.2e}");
    let (gt, ct) = (g.top_k(&go, 1, 5).unwrap(), c.top_k(&co, 1, 5).unwrap());
    assert_eq!(gt.iter().map(|p| p.0).collect::<Vec<_>>(), ct.iter().map(|p| p.0).collect::<Vec<_>>());
}

#[test]
fn attention_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut r = rng(6);
    // (n_head, n_head_kv, dk, dv, window, softcap, q_pos0, n)
    let cases = [
        (4, 4, 64, 64, None, None, 0, 7),
        (8, 2, 128, 128, None, None, 30, 1),
        (4, 1, 256, 256, Some(5), Some(30.0), 10, 4),
        (2, 2, 32, 64, Some(100), None, 300, 3),
    ];
    for (n_head, n_head_kv, dk, dv, window, softcap, q_pos0, n) in cases {
        let kv_len = q_pos0 + n;
        let p = AttentionParams { n_head, n_head_kv, head_dim_k: dk, head_dim_v: dv, scale: 0.125, softcap, q_pos0, window };
        let k = randn(&mut r, kv_len * n_head_kv * dk, 1.0);
        let v = randn(&mut r, kv_len * n_head_kv * dv, 1.0);
        let q = randn(&mut r, n * n_head * dk, 1.0);
        let (mut gk, mut gv) = (g.cache(kv_len + 5, n_head_kv * dk).unwrap(), g.cache(kv_len + 5, n_head_kv * dv).unwrap());
        let (mut ck, mut cv) = (c.cache(kv_len + 5, n_head_kv * dk).unwrap(), c.cache(kv_len + 5, n_head_kv * dv).unwrap());
        // Stored in two pieces, as a prompt and then decoding would.
        let split = kv_len / 2;
        for (start, end) in [(0, split), (split, kv_len)] {
            let kt = &k[start * n_head_kv * dk..end * n_head_kv * dk];
            let vt = &v[start * n_head_kv * dv..end * n_head_kv * dv];
            g.store_kv(&mut gk, start, &g.upload(kt, end - start, n_head_kv * dk).unwrap()).unwrap();
            g.store_kv(&mut gv, start, &g.upload(vt, end - start, n_head_kv * dv).unwrap()).unwrap();
            c.store_kv(&mut ck, start, &c.upload(kt, end - start, n_head_kv * dk).unwrap()).unwrap();
            c.store_kv(&mut cv, start, &c.upload(vt, end - start, n_head_kv * dv).unwrap()).unwrap();
        }
        let mut go = g.tensor(n, n_head * dv).unwrap();
        let mut co = c.tensor(n, n_head * dv).unwrap();
        g.attention(&g.upload(&q, n, n_head * dk).unwrap(), &gk, &gv, kv_len, &p, &mut go).unwrap();
        c.attention(&c.upload(&q, n, n_head * dk).unwrap(), &ck, &cv, kv_len, &p, &mut co).unwrap();
        let err = norm_err(&down(g, &go), &co.data);
        assert!(err < 1e-5, "{p:?}: {err:.2e}");
    }
}

#[test]
fn missing_gpu_is_an_error_not_a_panic() {
    // On a machine without a GPU this is the path users see; on one with a GPU, an ordinal
    // past the last device takes the same route.
    let err = match CudaBackend::new(1000) {
        Ok(_) => panic!("device 1000 opened"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("no CUDA"), "{err}");
}
