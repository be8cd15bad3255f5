//! Every candidate configuration of the matvec template (`ops::matvec::VARIANTS`, which the
//! bandwidth bench times) against the CPU reference, so that whichever the per-type choice in
//! matvec.cu takes was tested: the same 1e-5 budget as tests/ops.rs' matmul test, on a shape
//! with several staging steps and partial blocks of rows, and one whose rows are 11008 wide.
//! The biased decoding is only held to the budget for the types that may use it
//! (`ops::matvec::biased_decoding_ok`); for Q2_K and Q3_K its error is printed, not asserted
//! (measured 1.0-1.4e-5 for Q2_K on an H100).
//!
//! Needs a GPU: without one it prints a note and passes, unless `WASM_CHORD_REQUIRE_GPU=1`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::backend::{Backend, SharedBytes, WeightData};
use wasm_chord_core::{quant, TensorType};
use wasm_chord_cpu::{CpuBackend, CpuOptions};
use wasm_chord_cuda::kernels::KernelFile;
use wasm_chord_cuda::{nvrtc, ops, CudaBackend, Layout};

#[test]
fn every_matvec_variant_matches_cpu() {
    let g = match CudaBackend::new(0) {
        Ok(g) => g,
        Err(e) if std::env::var("WASM_CHORD_REQUIRE_GPU").is_ok_and(|v| v == "1") => panic!("WASM_CHORD_REQUIRE_GPU=1 but {e}"),
        Err(e) => {
            eprintln!("skipping matvec variant tests: {e}");
            return;
        }
    };
    let c = CpuBackend::new(&CpuOptions { n_threads: 2, ggml_rounding: false, ..CpuOptions::default() });
    let dev = g.device();
    let mut failures = Vec::new();
    let mut worst: Vec<(String, f64)> = Vec::new();
    for (module_name, biased) in [("matvec_variants", false), ("matvec_variants_b", true)] {
        let file = KernelFile { name: module_name, source: Box::leak(ops::matvec::variant_source(biased).into_boxed_str()) };
        let cubin = nvrtc::compile(&file, dev.arch()).unwrap();
        let module = dev.context().load_module(cudarc::nvrtc::Ptx::from_binary(cubin)).unwrap();
        for ty in TensorType::WEIGHTS {
            for (rows, cols) in [(37, 4352), (70, 11008)] {
                let mut r = ChaCha8Rng::seed_from_u64(500 + ty.ggml_id() as u64 + cols as u64);
                let vals: Vec<f32> = (0..rows * cols).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
                let mut bytes = vec![0u8; ty.row_bytes(cols).unwrap() * rows];
                quant::quantize(ty, &vals, &mut bytes).unwrap();
                let w = WeightData { ty, rows, cols, bytes: SharedBytes::from_vec(bytes) };
                let (gw, cw) = (g.load_weight_in(w.clone(), Layout::File).unwrap(), c.load_weight(w).unwrap());
                for v in ops::matvec::VARIANTS.iter().filter(|v| v.biased == biased) {
                    let n_tok = if v.tokens == 1 { 1 } else { 5 };
                    let x: Vec<f32> = (0..n_tok * cols).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
                    let mut co = c.tensor(n_tok, rows).unwrap();
                    c.matmul(&cw, None, &c.upload(&x, n_tok, cols).unwrap(), &mut co).unwrap();
                    let mut go = g.upload(&vec![f32::NAN; n_tok * rows], n_tok, rows).unwrap();
                    let f = module.load_function(&format!("{}_{}", v.name, ty.name())).unwrap();
                    let gx = g.upload(&x, n_tok, cols).unwrap();
                    if v.stream {
                        ops::matvec::launch_stream(dev, &f, v, &gw, &gx, &mut go).unwrap();
                    } else {
                        ops::matvec::launch(dev, &f, (v.warps, v.rows), v.tokens, 0, &gw, None, &gx, &mut go).unwrap();
                    }
                    let mut got = Vec::new();
                    g.download(&go, &mut got).unwrap();
                    let scale = co.data.iter().fold(1e-30f64, |m, v| m.max(v.abs() as f64));
                    let err = if got.iter().all(|v| v.is_finite()) {
                        got.iter().zip(&co.data).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0.0, f64::max) / scale
                    } else {
                        f64::INFINITY
                    };
                    let key = format!("{}_{ty}", v.name);
                    match worst.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, e)) => *e = e.max(err),
                        None => worst.push((key.clone(), err)),
                    }
                    if err > 1e-5 && (!v.biased || ops::matvec::biased_decoding_ok(ty)) {
                        failures.push(format!("{key} [{rows}, {cols}]: {err:.2e}"));
                    }
                }
            }
        }
    }
    for (k, e) in &worst {
        eprintln!("variant {k}: normalized error {e:.2e}");
    }
    assert!(failures.is_empty(), "over budget 1e-5: {failures:?}");
}

/// Every int8 candidate (`ops::mmvq::VARIANTS`, on every int8 type's device layout and on the
/// candidate decodings of a file layout, `ops::mmvq::CANDIDATE_DECODES`) gives the shipped
/// kernel's values (the backend's matmul, which tests/ops.rs holds to the CPU) within 1e-5 of
/// the largest output: the bench's candidate columns are what could ship.
#[test]
fn every_int8_variant_matches_the_shipped_kernel() {
    let g = match CudaBackend::new(0) {
        Ok(g) => g,
        Err(e) if std::env::var("WASM_CHORD_REQUIRE_GPU").is_ok_and(|v| v == "1") => panic!("WASM_CHORD_REQUIRE_GPU=1 but {e}"),
        Err(e) => {
            eprintln!("skipping int8 variant tests: {e}");
            return;
        }
    };
    let dev = g.device();
    let file = KernelFile { name: "mmvq_variants", source: Box::leak(ops::mmvq::variant_source().into_boxed_str()) };
    let module = dev.context().load_module(cudarc::nvrtc::Ptx::from_binary(nvrtc::compile(&file, dev.arch()).unwrap())).unwrap();
    let mut failures = Vec::new();
    for ty in TensorType::WEIGHTS.into_iter().filter(|t| ops::mmvq::supports(*t)) {
        for (rows, cols) in [(37, 4352), (70, 11008)] {
            let mut r = ChaCha8Rng::seed_from_u64(900 + ty.ggml_id() as u64 + cols as u64);
            let vals: Vec<f32> = (0..rows * cols).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
            let mut bytes = vec![0u8; ty.row_bytes(cols).unwrap() * rows];
            quant::quantize(ty, &vals, &mut bytes).unwrap();
            let w = WeightData { ty, rows, cols, bytes: SharedBytes::from_vec(bytes) };
            let shipped = g.load_weight(w.clone()).unwrap();
            let file_layout = g.load_weight_in(w, Layout::File).unwrap();
            let x: Vec<f32> = (0..cols).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
            let gx = g.upload(&x, 1, cols).unwrap();
            let mut want_t = g.tensor(1, rows).unwrap();
            g.matmul(&shipped, None, &gx, &mut want_t).unwrap();
            let mut want = Vec::new();
            g.download(&want_t, &mut want).unwrap();
            let scale = want.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
            let mut scratch = g.tensor(1, ops::mmvq::scratch_len(1, cols)).unwrap();
            let xq = ops::mmvq::quantize(dev, &gx, &mut scratch).unwrap();
            let kernels = std::iter::once((shipped.layout.kernel_type(ty), &shipped))
                .chain(ops::mmvq::CANDIDATE_DECODES.iter().filter(|(_, t)| *t == ty).map(|(name, _)| (*name, &file_layout)));
            for (kernel_type, w) in kernels {
                for v in ops::mmvq::VARIANTS {
                    let f = module.load_function(&format!("{}_{kernel_type}", v.name)).unwrap();
                    let mut out = g.upload(&vec![f32::NAN; rows], 1, rows).unwrap();
                    ops::mmvq::launch(dev, &f, (v.warps, v.rows), 1, w, None, &xq, &mut out, false).unwrap();
                    let mut got = Vec::new();
                    g.download(&out, &mut got).unwrap();
                    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs() / scale).fold(0.0f32, |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) });
                    if err > 1e-5 {
                        failures.push(format!("{}_{kernel_type} [{rows}, {cols}]: {err:.2e}", v.name));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "int8 variants off the shipped kernel: {failures:?}");
}
