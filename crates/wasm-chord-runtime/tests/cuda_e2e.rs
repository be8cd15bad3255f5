//! End to end on the CUDA backend (`--features cuda`): whole models on the GPU against the CPU
//! backend and against llama.cpp's goldens.
//!
//! - Synthetic llama (built in memory, runs anywhere there is a GPU): prefill logits and 32
//!   greedy tokens equal the CPU backend's, with the decode step as a CUDA graph, without it,
//!   and in a second session (a new KV cache: a graph per KV cache).
//! - A GGUF file named by `WASM_CHORD_E2E_GGUF` (e.g. a gen-model file made on the GPU
//!   machine): 32 greedy tokens equal the CPU backend's.
//! - The real models of the golden files (tests/golden/logits) when present in the model cache:
//!   greedy 32 tokens equal the CPU backend's, and the logits along llama.cpp's greedy
//!   continuation stay within the bounds fidelity.rs used for an unrounded f32 engine (below);
//!   the int8 matvec's logits stay within the same bounds of llama.cpp's.
//!
//! The CPU reference runs with `ggml_rounding: false` (plain f32), and the CUDA backend with
//! `CudaOptions::f32_matvec` so that it computes likewise; the default int8 matvec (activations
//! rounded to 8 bits as llama.cpp rounds them) is bounded by the CPU's ggml rounding instead
//! (`synthetic_llama_int8_matvec_within_ggml_rounding`).
//! A greedy divergence is accepted only where the CPU's top-2 logits are within `NEAR_TIE`.
//! Without a GPU every test prints a note and passes, unless `WASM_CHORD_REQUIRE_GPU=1`.
#![cfg(feature = "cuda")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use wasm_chord_core::backend::{Backend, SharedBytes};
use wasm_chord_core::gguf::GgufFile;
use wasm_chord_core::hparams::{HParamsError, MetadataSource};
use wasm_chord_core::{quant, TensorType};
use wasm_chord_cpu::CpuBackend;
use wasm_chord_cuda::{CudaBackend, CudaOptions};
use wasm_chord_runtime::{AttentionKind, GgufSource, LoadOptions, Model, ModelSource, Outputs, TensorView};

/// CPU top-2 gap under which float noise may flip a greedy choice between the backends.
const NEAR_TIE: f32 = 1e-3;
/// Largest |CUDA - CPU| logit difference, relative to the largest |CPU logit| of the row.
/// Prompts of 9 tokens or more go through f16 tensor-core GEMMs (ops/gemm.rs: ~3e-4 per matmul
/// in tests/ops.rs), and that error compounds over the layers: measured on an H100
/// (bench/runs/2026-11-26-h100-lead) 2.1e-3 SmolLM2, 1.0e-3 Gemma 3, 2.6e-3 gen-model 1B,
/// 3.1e-3 synthetic, with every greedy token equal. A real bug (a wrong block, a wrong row)
/// lands far above this.
const MAX_REL_DIFF: f32 = 5e-3;
/// Bounds against llama.cpp: those tests/fidelity.rs held before the CPU backend emulated
/// ggml's roundings op by op (it is now bit-identical and asserts 0.05 / 1e-3 / 0.01). The CUDA
/// kernels compute in f32 without that emulation, like the CPU with `ggml_rounding: false`, so
/// they sit at llama.cpp's own batch-vs-sequential noise (KL up to 8e-3, top-10 up to 1.6).
const TIE_GAP: f64 = 0.5;
const MAX_KL: f64 = 2e-2;
const MAX_TOP10_DIFF: f64 = 2.5;

/// The GPU backend with the f32-activation matvec (`CudaOptions::f32_matvec`), which computes
/// as the CPU reference does, or `None` with a note when there is none (a failure under
/// `WASM_CHORD_REQUIRE_GPU=1`). The int8 matvec (the default) is checked by
/// `synthetic_llama_int8_matvec_within_ggml_rounding`.
fn gpu(graphs: bool) -> Option<CudaBackend> {
    gpu_with(graphs, true)
}

fn gpu_with(graphs: bool, f32_matvec: bool) -> Option<CudaBackend> {
    match CudaBackend::with_options(0, CudaOptions { f32_matvec, ..CudaOptions::default() }) {
        Ok(b) => Some(b.with_graphs(graphs)),
        Err(e) if std::env::var("WASM_CHORD_REQUIRE_GPU").is_ok_and(|v| v == "1") => panic!("WASM_CHORD_REQUIRE_GPU=1 but {e}"),
        Err(e) => {
            eprintln!("skipping the CUDA end-to-end test: {e}");
            None
        }
    }
}

fn cpu_load(src: &dyn ModelSource) -> Model<CpuBackend> {
    let opts = LoadOptions { n_threads: 0, ggml_rounding: false, attention: AttentionKind::Standard, ..LoadOptions::default() };
    Model::load_source(src, &opts).expect("load on the CPU")
}

fn argmax_gap(l: &[f32]) -> (u32, f32) {
    let (mut best, mut second) = ((f32::NEG_INFINITY, 0usize), f32::NEG_INFINITY);
    for (i, &v) in l.iter().enumerate() {
        if v > best.0 {
            second = best.0;
            best = (v, i);
        } else if v > second {
            second = v;
        }
    }
    (best.1 as u32, best.0 - second)
}

fn rel_diff(reference: &[f32], ours: &[f32]) -> f32 {
    assert_eq!(reference.len(), ours.len());
    let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    reference.iter().zip(ours).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / scale
}

/// Greedy continuation on the CPU with each step's logits.
fn cpu_greedy(model: &Model<CpuBackend>, prompt: &[u32], n: usize, n_ctx: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut kv = model.new_kv_cache(n_ctx).unwrap();
    let mut logits = model.forward(&mut kv, prompt, Outputs::Last).unwrap();
    let (mut tokens, mut all) = (Vec::new(), Vec::new());
    for k in 0..n {
        let (t, _) = argmax_gap(&logits);
        tokens.push(t);
        let next = if k + 1 < n { model.forward(&mut kv, &[t], Outputs::Last).unwrap() } else { Vec::new() };
        all.push(std::mem::replace(&mut logits, next));
    }
    (tokens, all)
}

/// Greedy continuation on the GPU, each token picked on the device.
fn gpu_greedy(model: &Model<CudaBackend>, prompt: &[u32], n: usize, n_ctx: usize) -> Vec<u32> {
    let mut kv = model.new_kv_cache(n_ctx).unwrap();
    let mut t = model.forward_greedy(&mut kv, prompt).unwrap();
    let mut tokens = vec![t];
    while tokens.len() < n {
        t = model.forward_greedy(&mut kv, &[t]).unwrap();
        tokens.push(t);
    }
    tokens
}

/// Greedy continuations of two sessions alive at once, switching every 4 tokens: each switch
/// hands the recorded decode graph another KV cache, so it must be noticed and recorded again.
fn gpu_greedy_interleaved(model: &Model<CudaBackend>, prompt: &[u32], n: usize, n_ctx: usize) -> [Vec<u32>; 2] {
    let mut kvs = [model.new_kv_cache(n_ctx).unwrap(), model.new_kv_cache(n_ctx).unwrap()];
    let mut out = [Vec::new(), Vec::new()];
    for (kv, tokens) in kvs.iter_mut().zip(out.iter_mut()) {
        tokens.push(model.forward_greedy(kv, prompt).unwrap());
    }
    while out[1].len() < n {
        for (kv, tokens) in kvs.iter_mut().zip(out.iter_mut()) {
            for _ in 0..4 {
                if tokens.len() < n {
                    let t = model.forward_greedy(kv, &[*tokens.last().unwrap()]).unwrap();
                    tokens.push(t);
                }
            }
        }
    }
    out
}

/// Checks that `gpu` equals `cpu` up to the first near-tie of the CPU's logits; returns how
/// many tokens agree.
fn assert_same_greedy(what: &str, cpu: &[u32], cpu_logits: &[Vec<f32>], gpu: &[u32]) -> usize {
    for (k, (a, b)) in cpu.iter().zip(gpu).enumerate() {
        if a != b {
            let (_, gap) = argmax_gap(&cpu_logits[k]);
            assert!(gap < NEAR_TIE, "{what}: step {k}: CUDA {b}, CPU {a} (CPU top-2 gap {gap:.2e})\n cpu {cpu:?}\ngpu {gpu:?}");
            eprintln!("{what}: diverged at step {k} on a near-tie (gap {gap:.2e})");
            return k;
        }
    }
    cpu.len()
}

/// CUDA logits along the CPU's greedy tokens (teacher-forced), checked against the CPU's.
fn assert_logits_close(what: &str, cpu: &Model<CpuBackend>, gpu: &Model<CudaBackend>, prompt: &[u32], n_ctx: usize) -> f32 {
    let worst = logit_diff(cpu, gpu, prompt, n_ctx);
    println!("{what}: max |CUDA - CPU| logit / max |logit| = {worst:.2e}");
    assert!(worst < MAX_REL_DIFF, "{what}: relative logit difference {worst:.2e} > {MAX_REL_DIFF:.0e}");
    worst
}

/// The largest relative logit difference of `other` from `cpu` over the prompt and 16 decode
/// steps along the CPU's greedy tokens.
fn logit_diff<B: Backend + 'static>(cpu: &Model<CpuBackend>, gpu: &Model<B>, prompt: &[u32], n_ctx: usize) -> f32 {
    let n_vocab = cpu.n_vocab();
    let (mut kc, mut kg) = (cpu.new_kv_cache(n_ctx).unwrap(), gpu.new_kv_cache(n_ctx).unwrap());
    let a = cpu.forward(&mut kc, prompt, Outputs::All).unwrap();
    let b = gpu.forward(&mut kg, prompt, Outputs::All).unwrap();
    let mut worst = 0.0f32;
    for i in 0..prompt.len() {
        worst = worst.max(rel_diff(&a[i * n_vocab..(i + 1) * n_vocab], &b[i * n_vocab..(i + 1) * n_vocab]));
    }
    let mut token = argmax_gap(&a[(prompt.len() - 1) * n_vocab..]).0;
    for _ in 0..16 {
        let a = cpu.forward(&mut kc, &[token], Outputs::Last).unwrap();
        let b = gpu.forward(&mut kg, &[token], Outputs::Last).unwrap();
        worst = worst.max(rel_diff(&a, &b));
        token = argmax_gap(&a).0;
    }
    worst
}

// ---- synthetic llama, built in memory ----

struct Synthetic {
    u32s: HashMap<String, u32>,
    tensors: HashMap<String, TensorView>,
    /// What `weight_bytes` reports instead of the real size (to test the memory check).
    claimed_bytes: Option<u64>,
}

impl MetadataSource for Synthetic {
    fn get_u32(&self, key: &str) -> Result<Option<u32>, HParamsError> {
        Ok(self.u32s.get(key).copied())
    }
    fn get_f32(&self, key: &str) -> Result<Option<f32>, HParamsError> {
        Ok((key == "llama.attention.layer_norm_rms_epsilon").then_some(1e-5))
    }
    fn get_str(&self, key: &str) -> Result<Option<String>, HParamsError> {
        Ok((key == "general.architecture").then(|| "llama".to_string()))
    }
    fn array_len(&self, _: &str) -> Result<Option<usize>, HParamsError> {
        Ok(None)
    }
}

impl ModelSource for Synthetic {
    fn metadata(&self) -> &dyn MetadataSource {
        self
    }
    fn tensor(&self, name: &str) -> Option<TensorView> {
        self.tensors.get(name).cloned()
    }
    fn weight_bytes(&self) -> Option<u64> {
        self.claimed_bytes.or_else(|| Some(self.tensors.values().map(|t| t.bytes.bytes().len() as u64).sum()))
    }
}

const EMBD: usize = 256;
const HEADS: usize = 4;
const HEADS_KV: usize = 2;
const HEAD_DIM: usize = 64;
const FF: usize = 512;
const VOCAB: usize = 1000;
const LAYERS: usize = 3;

impl Synthetic {
    fn llama(seed: u64) -> Self {
        let mut s = Synthetic { u32s: HashMap::new(), tensors: HashMap::new(), claimed_bytes: None };
        for (k, v) in [
            ("context_length", 512),
            ("embedding_length", EMBD),
            ("block_count", LAYERS),
            ("feed_forward_length", FF),
            ("attention.head_count", HEADS),
            ("attention.head_count_kv", HEADS_KV),
            ("rope.dimension_count", HEAD_DIM),
            ("vocab_size", VOCAB),
        ] {
            s.u32s.insert(format!("llama.{k}"), v as u32);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (q, kv) = (HEADS * HEAD_DIM, HEADS_KV * HEAD_DIM);
        s.random(&mut rng, "token_embd.weight", TensorType::Q8_0, &[EMBD, VOCAB], 1.0);
        s.random(&mut rng, "output.weight", TensorType::Q6_K, &[EMBD, VOCAB], 0.2);
        s.ones("output_norm.weight", EMBD);
        // A mix of weight types, as Q4_K_M files have.
        let types = [TensorType::Q4_K, TensorType::Q4_K, TensorType::Q6_K, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q4_0, TensorType::Q8_0];
        for l in 0..LAYERS {
            let b = |p: &str| format!("blk.{l}.{p}");
            for ((p, dims), ty) in [
                ("attn_q.weight", [EMBD, q]),
                ("attn_k.weight", [EMBD, kv]),
                ("attn_v.weight", [EMBD, kv]),
                ("attn_output.weight", [q, EMBD]),
                ("ffn_gate.weight", [EMBD, FF]),
                ("ffn_up.weight", [EMBD, FF]),
                ("ffn_down.weight", [FF, EMBD]),
            ]
            .into_iter()
            .zip(types)
            {
                s.random(&mut rng, &b(p), ty, &dims, 0.15);
            }
            s.ones(&b("attn_norm.weight"), EMBD);
            s.ones(&b("ffn_norm.weight"), EMBD);
        }
        s
    }

    fn random(&mut self, rng: &mut ChaCha8Rng, name: &str, ty: TensorType, dims: &[usize], scale: f32) {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| (rng.gen::<f32>() * 2.0 - 1.0) * scale).collect();
        let mut bytes = vec![0u8; ty.row_bytes(dims[0]).unwrap() * (n / dims[0])];
        quant::quantize(ty, &values, &mut bytes).unwrap();
        self.tensors.insert(name.to_string(), TensorView { ty, dims: dims.to_vec(), bytes: SharedBytes::from_vec(bytes) });
    }

    fn ones(&mut self, name: &str, n: usize) {
        let bytes = std::iter::repeat(1.0f32.to_le_bytes()).take(n).flatten().collect();
        self.tensors.insert(name.to_string(), TensorView { ty: TensorType::F32, dims: vec![n], bytes: SharedBytes::from_vec(bytes) });
    }
}

#[test]
fn synthetic_llama_on_cuda_matches_cpu() {
    // The CPU side first, so the harness is exercised on machines without a GPU too.
    let src = Synthetic::llama(7);
    let cpu = cpu_load(&src);
    let prompt: Vec<u32> = (0..12u32).map(|i| (i * 37 + 5) % VOCAB as u32).collect();
    let n_ctx = 128;
    let (want, logits) = cpu_greedy(&cpu, &prompt, 32, n_ctx);
    let min_gap = logits.iter().map(|l| argmax_gap(l).1).fold(f32::INFINITY, f32::min);
    let distinct = want.iter().collect::<std::collections::HashSet<_>>().len();
    println!("synthetic llama on the CPU: {distinct} distinct tokens of 32, min top-2 gap {min_gap:.3e}");
    assert!(distinct > 4, "a degenerate synthetic model: {want:?}");
    let Some(graph_backend) = gpu(true) else { return };
    let gpu_graph = Model::load_on(graph_backend, &src).expect("load on the GPU");
    let gpu_plain = Model::load_on(gpu(false).expect("a second backend"), &src).expect("load on the GPU");
    assert_logits_close("synthetic llama", &cpu, &gpu_plain, &prompt, n_ctx);
    assert_logits_close("synthetic llama (graph)", &cpu, &gpu_graph, &prompt, n_ctx);
    for (what, model) in [("plain", &gpu_plain), ("graph", &gpu_graph), ("graph, second session", &gpu_graph)] {
        let got = gpu_greedy(model, &prompt, 32, n_ctx);
        let agree = assert_same_greedy(&format!("synthetic llama ({what})"), &want, &logits, &got);
        println!("synthetic llama ({what}): {agree}/32 greedy tokens equal the CPU's");
    }
    let before = gpu_graph.backend().step_stats();
    println!("decode steps with graphs: {before:?}");
    assert!(before.captures >= 1 && before.replays >= 60, "{before:?}");
    for (i, got) in gpu_greedy_interleaved(&gpu_graph, &prompt, 32, n_ctx).iter().enumerate() {
        let agree = assert_same_greedy(&format!("synthetic llama (graph, interleaved session {i})"), &want, &logits, got);
        println!("synthetic llama (graph, interleaved session {i}): {agree}/32 greedy tokens equal the CPU's");
    }
    let stats = gpu_graph.backend().step_stats();
    println!("decode steps with graphs, after interleaving two sessions: {stats:?}");
    assert!(gpu_graph.backend().graphs(), "graph capture was turned off (see the warning above)");
    // Each session's graph is recorded once (a cache at a new address) and then replayed at
    // every switch: 2 x 31 steps, of which at most 2 x 3 are not replays.
    assert!(stats.captures <= before.captures + 2, "{stats:?}");
    assert!(stats.replays >= before.replays + 2 * 31 - 6, "{stats:?}");
    let plain = gpu_plain.backend().step_stats();
    assert_eq!((plain.captures, plain.replays), (0, 0), "{plain:?}");
}

/// The int8 matvec (the default; activations rounded to 8 bits per 32 values as llama.cpp
/// rounds them) moves the logits further from the f32 reference than `MAX_REL_DIFF` (3.3e-2 on
/// this model, H100, bench/runs/2026-11-26-h100-mmvq): it must stay within twice what
/// llama.cpp's own roundings (the CPU backend with `ggml_rounding`) move them, with and without
/// graphs, and its decode steps must replay as graphs.
#[test]
fn synthetic_llama_int8_matvec_within_ggml_rounding() {
    let src = Synthetic::llama(7);
    let cpu = cpu_load(&src);
    let opts = LoadOptions { n_threads: 0, ggml_rounding: true, attention: AttentionKind::Standard, ..LoadOptions::default() };
    let cpu_ggml = Model::load_source(&src, &opts).expect("load on the CPU");
    let prompt: Vec<u32> = (0..12u32).map(|i| (i * 37 + 5) % VOCAB as u32).collect();
    let n_ctx = 128;
    let ggml = logit_diff(&cpu, &cpu_ggml, &prompt, n_ctx);
    println!("synthetic llama, CPU with ggml rounding: max |diff| / max |logit| vs f32 = {ggml:.2e}");
    let Some(graph_backend) = gpu_with(true, false) else { return };
    let bound = MAX_REL_DIFF.max(2.0 * ggml);
    for (what, backend) in [("graph", graph_backend), ("plain", gpu_with(false, false).expect("a second backend"))] {
        let model = Model::load_on(backend, &src).expect("load on the GPU");
        let worst = logit_diff(&cpu, &model, &prompt, n_ctx);
        let stats = model.backend().step_stats();
        println!("synthetic llama, int8 matvec ({what}): max |diff| / max |logit| vs f32 = {worst:.2e} (bound {bound:.2e}); steps {stats:?}");
        assert!(worst <= bound, "int8 matvec ({what}): {worst:.2e} > {bound:.2e}");
        if what == "graph" {
            assert!(model.backend().graphs(), "graph capture was turned off (see the warning above)");
            assert!(stats.captures >= 1 && stats.replays >= 10, "{stats:?}");
        }
    }
}

/// A GGUF file named by `WASM_CHORD_E2E_GGUF` (the bench script's gen-model 1B file).
#[test]
fn gguf_file_on_cuda_matches_cpu() {
    let Some(path) = std::env::var_os("WASM_CHORD_E2E_GGUF").map(PathBuf::from) else {
        eprintln!("skipping: WASM_CHORD_E2E_GGUF is not set");
        return;
    };
    let Some(backend) = gpu(true) else { return };
    let src = GgufSource::new(Arc::new(GgufFile::open(&path).expect("open the GGUF file")));
    let cpu = cpu_load(&src);
    let gpu = Model::load_on(backend, &src).expect("load on the GPU");
    let prompt: Vec<u32> = (0..16u32).map(|i| 1 + (i * 7919) % (cpu.n_vocab() as u32 - 1)).collect();
    let what = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    assert_logits_close(&what, &cpu, &gpu, &prompt, 256);
    let (want, logits) = cpu_greedy(&cpu, &prompt, 32, 256);
    let got = gpu_greedy(&gpu, &prompt, 32, 256);
    let agree = assert_same_greedy(&what, &want, &logits, &got);
    println!("{what}: {agree}/32 greedy tokens equal the CPU's; steps {:?}", gpu.backend().step_stats());
}

// ---- real models against the CPU and llama.cpp's goldens ----

fn models_dir() -> PathBuf {
    std::env::var_os("WASM_CHORD_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/wasm-chord/models")
    })
}

/// The goldens; `WASM_CHORD_GOLDEN_DIR` overrides the source tree's path, for a test binary
/// carried to another machine.
fn golden_dir() -> PathBuf {
    std::env::var_os("WASM_CHORD_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/logits"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn kl(reference: &[f32], ours: &[f32]) -> f64 {
    let log_softmax = |l: &[f32]| -> Vec<f64> {
        let max = l.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v as f64));
        let lse = max + l.iter().map(|v| (*v as f64 - max).exp()).sum::<f64>().ln();
        l.iter().map(|v| *v as f64 - lse).collect()
    };
    let (lp, lq) = (log_softmax(reference), log_softmax(ours));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

fn check_real_model(golden: &str) {
    let gpath = golden_dir().join(format!("{golden}.json"));
    let text = std::fs::read_to_string(&gpath)
        .unwrap_or_else(|e| panic!("{}: {e} (set WASM_CHORD_GOLDEN_DIR to the repository's crates/wasm-chord-runtime/tests/golden/logits)", gpath.display()));
    let g: Value = serde_json::from_str(&text).unwrap();
    let file = models_dir().join(g["model_file"].as_str().unwrap());
    if !file.exists() {
        eprintln!("SKIP {golden}: {} not found (run scripts/fetch-models.sh)", file.display());
        return;
    }
    let Some(backend) = gpu(true) else { return };
    let src = GgufSource::new(Arc::new(GgufFile::open(&file).unwrap()));
    let cpu = cpu_load(&src);
    let gpu = Model::load_on(backend, &src).expect("load on the GPU");
    let n_vocab = cpu.n_vocab();
    let eog: Vec<u32> = ids(&g["eog_ids"]);
    let n_ctx = g["settings"]["n_ctx"].as_u64().unwrap() as usize;
    let mut failures = Vec::new();
    let (mut worst_kl, mut worst_top10, mut worst_rel) = (0.0f64, 0.0f64, 0.0f32);
    for p in g["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let what = format!("{golden}/{name}");
        let prompt = ids(&p["prompt_tokens"]);
        let generated = ids(&p["generated"]);
        let steps = p["steps"].as_array().unwrap();

        // Greedy 32 tokens: CUDA (picked on the device, graph replays) against the CPU.
        let (want, logits) = cpu_greedy(&cpu, &prompt, 32, n_ctx);
        let got = gpu_greedy(&gpu, &prompt, 32, n_ctx);
        let agree = assert_same_greedy(&what, &want, &logits, &got);

        // Logits along llama.cpp's continuation, against llama.cpp and the CPU.
        let (mut kc, mut kg) = (cpu.new_kv_cache(n_ctx).unwrap(), gpu.new_kv_cache(n_ctx).unwrap());
        let mut lc = cpu.forward(&mut kc, &prompt, Outputs::Last).unwrap();
        let mut lg = gpu.forward(&mut kg, &prompt, Outputs::Last).unwrap();
        let (mut top10_max, mut kl_max, mut rel_max) = (0.0f64, 0.0f64, 0.0f32);
        for k in 0..steps.len() {
            let (top10, kl_k) = golden_step(&what, k, p, &eog, &lg, &mut failures);
            top10_max = top10_max.max(top10);
            kl_max = kl_max.max(kl_k);
            rel_max = rel_max.max(rel_diff(&lc, &lg));
            if k + 1 < steps.len() {
                lc = cpu.forward(&mut kc, &[generated[k]], Outputs::Last).unwrap();
                lg = gpu.forward(&mut kg, &[generated[k]], Outputs::Last).unwrap();
            }
        }
        assert_eq!(lg.len(), n_vocab);
        println!(
            "{what}: greedy {agree}/32 equal to the CPU's; vs llama.cpp: max top-10 |diff| {top10_max:.4}, max KL {kl_max:.2e}; \
             vs CPU (f32): max |diff| / max |logit| {rel_max:.2e}"
        );
        worst_kl = worst_kl.max(kl_max);
        worst_top10 = worst_top10.max(top10_max);
        worst_rel = worst_rel.max(rel_max);
    }
    println!("{golden}: worst KL {worst_kl:.2e}, worst top-10 |diff| {worst_top10:.4}, worst rel diff vs CPU {worst_rel:.2e}; steps {:?}", gpu.backend().step_stats());
    assert!(failures.is_empty(), "disagreements with llama.cpp:\n{}", failures.join("\n"));
    assert!(worst_top10 <= MAX_TOP10_DIFF, "{golden}: top-10 logit difference {worst_top10} > {MAX_TOP10_DIFF}");
    assert!(worst_kl <= MAX_KL, "{golden}: KL {worst_kl} > {MAX_KL}");
    assert!(worst_rel < MAX_REL_DIFF, "{golden}: CUDA vs CPU relative logit difference {worst_rel:.2e}");
    assert!(gpu.backend().graphs(), "graph capture was turned off (see the warning above)");
    drop(gpu);

    // The int8 matvec (the default) against llama.cpp's goldens with the same bounds: llama.cpp
    // rounds the activations to 8 bits likewise, so its distance to llama.cpp is what counts.
    let int8 = Model::load_on(gpu_with(true, false).expect("a second backend"), &src).expect("load on the GPU");
    let (mut worst_kl, mut worst_top10) = (0.0f64, 0.0f64);
    for p in g["prompts"].as_array().unwrap() {
        let what = format!("{golden}/{} (int8 matvec)", p["name"].as_str().unwrap());
        let (prompt, generated) = (ids(&p["prompt_tokens"]), ids(&p["generated"]));
        let n_steps = p["steps"].as_array().unwrap().len();
        let mut kv = int8.new_kv_cache(n_ctx).unwrap();
        let mut lg = int8.forward(&mut kv, &prompt, Outputs::Last).unwrap();
        for k in 0..n_steps {
            let (top10, kl_k) = golden_step(&what, k, p, &eog, &lg, &mut failures);
            worst_top10 = worst_top10.max(top10);
            worst_kl = worst_kl.max(kl_k);
            if k + 1 < n_steps {
                lg = int8.forward(&mut kv, &[generated[k]], Outputs::Last).unwrap();
            }
        }
    }
    println!("{golden} (int8 matvec): worst KL {worst_kl:.2e}, worst top-10 |diff| {worst_top10:.4}; steps {:?}", int8.backend().step_stats());
    assert!(failures.is_empty(), "disagreements with llama.cpp (int8 matvec):\n{}", failures.join("\n"));
    assert!(worst_top10 <= MAX_TOP10_DIFF, "{golden} (int8 matvec): top-10 logit difference {worst_top10} > {MAX_TOP10_DIFF}");
    assert!(worst_kl <= MAX_KL, "{golden} (int8 matvec): KL {worst_kl} > {MAX_KL}");
    assert!(int8.backend().graphs(), "graph capture was turned off (see the warning above)");
}

/// Step `k` of golden prompt `p` against CUDA logits `lg`: a different top-1 where llama.cpp's
/// top-2 gap is clear goes to `failures`; returns the largest top-10 difference and the KL
/// divergence from llama.cpp's full logits where the golden has them (else 0).
fn golden_step(what: &str, k: usize, p: &Value, eog: &[u32], lg: &[f32], failures: &mut Vec<String>) -> (f64, f64) {
    let step = &p["steps"][k];
    let want = step["token"].as_u64().unwrap() as u32;
    let gap = step["gap"].as_f64().unwrap();
    let ours = lg.iter().enumerate().filter(|(i, _)| !eog.contains(&(*i as u32))).fold((f32::NEG_INFINITY, 0), |b, (i, &v)| if v > b.0 { (v, i) } else { b }).1 as u32;
    if ours != want && gap >= TIE_GAP {
        failures.push(format!("{what} step {k}: CUDA {ours}, llama.cpp {want} (gap {gap:.4})"));
    }
    let mut top10 = 0.0f64;
    for pair in step["top10"].as_array().unwrap() {
        let id = pair[0].as_u64().unwrap() as usize;
        top10 = top10.max((lg[id] as f64 - pair[1].as_f64().unwrap()).abs());
    }
    let kl_k = p["full_logits"].get(k.to_string()).map_or(0.0, |f| kl(&read_f32(&golden_dir().join(f.as_str().unwrap())), lg));
    (top10, kl_k)
}

#[test]
fn smollm2_on_cuda_matches_cpu_and_llama_cpp() {
    check_real_model("smollm2");
}

#[test]
fn gemma3_on_cuda_matches_cpu_and_llama_cpp() {
    check_real_model("gemma3");
}

/// The backend refuses what does not fit, saying how much is needed and how much is free.
#[test]
fn too_large_a_model_is_a_clear_error() {
    let Some(backend) = gpu(true) else { return };
    let total = backend.device_memory().expect("device memory").total;
    let mut src = Synthetic::llama(1);
    src.claimed_bytes = Some(total + 1);
    let err = Model::load_on(backend, &src).err().expect("a model larger than the GPU");
    let msg = err.to_string();
    assert!(msg.contains("need") && msg.contains("free"), "{msg}");
    println!("{msg}");
}

#[test]
fn too_large_a_kv_cache_is_a_clear_error() {
    let Some(backend) = gpu(true) else { return };
    let total = backend.device_memory().expect("device memory").total;
    let src = Synthetic::llama(1);
    let mut src = src;
    // A context long enough that its cache exceeds the whole device.
    let per_pos = (LAYERS * 2 * HEADS_KV * HEAD_DIM * 2) as u64;
    let n_ctx = (total / per_pos + 1) as u32;
    src.u32s.insert("llama.context_length".into(), n_ctx);
    let model = Model::load_on(backend, &src).expect("load");
    let err = model.new_kv_cache(n_ctx as usize).err().expect("a cache larger than the GPU");
    let msg = err.to_string();
    assert!(msg.contains("needs") && msg.contains("available"), "{msg}");
    println!("{msg}");
}
