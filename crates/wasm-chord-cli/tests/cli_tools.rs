//! End-to-end tests of `wasm-chord gen-model`, `quantize` and `info`: run the binary, read its
//! files back with the GGUF reader, and check tensor types against llama-quantize's rules
//! worked out by hand from llama.cpp's src/llama-quant.cpp.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wasm_chord_core::gguf::GgufFile;
use wasm_chord_core::quant::{self, TensorType as T};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasm-chord"))
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the wasm-chord binary runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh scratch directory per test, removed when the test ends (the files reach 500 MB).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(test: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("wasm-chord-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    Scratch(dir)
}

/// An 8-layer model: dims are multiples of 256 so no type falls back.
const TINY: [&str; 12] =
    ["--dim", "256", "--layers", "8", "--heads", "4", "--kv-heads", "2", "--ffn", "512", "--vocab", "300"];

fn gen_model(path: &Path, dims: &[&str], quant: &str, extra: &[&str]) -> GgufFile {
    run_ok(bin().arg("gen-model").arg("-o").arg(path).args(dims).args(["-q", quant]).args(extra));
    GgufFile::open(path).expect("gen-model output reads back")
}

fn ty(file: &GgufFile, name: &str) -> T {
    file.tensor(name).unwrap_or_else(|| panic!("{name} missing")).ty
}

fn values(file: &GgufFile, name: &str) -> Vec<f32> {
    let info = file.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
    let mut out = vec![0f32; info.n_elements()];
    quant::dequantize(info.ty, file.tensor_data(info), &mut out).expect("dequantize");
    out
}

/// Layers llama.cpp's `use_more_bits` picks for 8 layers: i < 1, i >= 7, (i - 1) % 3 == 2.
const MORE_BITS_OF_8: [usize; 4] = [0, 3, 6, 7];

#[test]
fn gen_model_writes_a_loadable_llama_with_the_q4_k_m_mix() {
    let dir = scratch("q4_k_m");
    let f = gen_model(&dir.join("m.gguf"), &TINY, "q4_k_m", &[]);
    let m = f.metadata();
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(m.get_u32("general.file_type").unwrap(), Some(15));
    assert_eq!(m.get_u32("llama.block_count").unwrap(), Some(8));
    assert_eq!(m.get_u32("llama.embedding_length").unwrap(), Some(256));
    assert_eq!(m.get_u32("llama.feed_forward_length").unwrap(), Some(512));
    assert_eq!(m.get_u32("llama.attention.head_count").unwrap(), Some(4));
    assert_eq!(m.get_u32("llama.attention.head_count_kv").unwrap(), Some(2));
    assert_eq!(m.get_u32("llama.rope.dimension_count").unwrap(), Some(64));
    assert_eq!(m.get_u32("llama.vocab_size").unwrap(), Some(300));
    assert_eq!(m.get_str("tokenizer.ggml.model").unwrap(), Some("llama"));

    assert_eq!(f.tensors().len(), 3 + 8 * 9);
    assert_eq!(f.tensor("token_embd.weight").unwrap().dims, vec![256, 300]);
    assert_eq!(f.tensor("blk.0.attn_k.weight").unwrap().dims, vec![256, 128]);
    assert_eq!(f.tensor("blk.0.ffn_down.weight").unwrap().dims, vec![512, 256]);
    assert_eq!(ty(&f, "output.weight"), T::Q6_K);
    assert_eq!(ty(&f, "token_embd.weight"), T::Q4_K);
    assert_eq!(ty(&f, "output_norm.weight"), T::F32);
    for l in 0..8 {
        let more = if MORE_BITS_OF_8.contains(&l) { T::Q6_K } else { T::Q4_K };
        assert_eq!(ty(&f, &format!("blk.{l}.attn_v.weight")), more, "layer {l}");
        assert_eq!(ty(&f, &format!("blk.{l}.ffn_down.weight")), more, "layer {l}");
        for name in ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"] {
            assert_eq!(ty(&f, &format!("blk.{l}.{name}.weight")), T::Q4_K, "layer {l} {name}");
        }
        assert_eq!(ty(&f, &format!("blk.{l}.attn_norm.weight")), T::F32);
        assert_eq!(ty(&f, &format!("blk.{l}.ffn_norm.weight")), T::F32);
    }
}

#[test]
fn gen_model_vocab_is_sentencepiece_shaped() {
    let dir = scratch("vocab");
    let f = gen_model(&dir.join("m.gguf"), &TINY, "f16", &[]);
    let m = f.metadata();
    let tokens = m.get_str_array("tokenizer.ggml.tokens").unwrap().unwrap();
    let types = m.get_i32_array("tokenizer.ggml.token_type").unwrap().unwrap();
    let scores = m.get_f32_array("tokenizer.ggml.scores").unwrap().unwrap();
    assert_eq!((tokens.len(), types.len(), scores.len()), (300, 300, 300));
    assert_eq!(&tokens[..3], ["<unk>", "<s>", "</s>"]);
    assert_eq!(tokens[3], "<0x00>");
    assert_eq!(tokens[3 + 0x0A], "<0x0A>");
    assert_eq!(tokens[258], "<0xFF>");
    assert_eq!(&types[..4], [2, 3, 3, 6]);
    assert_eq!(types[299], 1);
    assert_eq!(tokens[259], "\u{2581}");
    assert_eq!(tokens.iter().collect::<HashSet<_>>().len(), tokens.len(), "tokens are unique");
    assert_eq!(m.get_u32("tokenizer.ggml.bos_token_id").unwrap(), Some(1));
    assert_eq!(m.get_u32("tokenizer.ggml.eos_token_id").unwrap(), Some(2));
    assert_eq!(ty(&f, "blk.0.attn_q.weight"), T::F16);
    assert_eq!(ty(&f, "output.weight"), T::F16);
    assert_eq!(ty(&f, "blk.0.attn_norm.weight"), T::F32);
}

#[test]
fn gen_model_weights_are_seeded_and_independent_of_threads() {
    let dir = scratch("seed");
    let (a, b, c) = (dir.join("a.gguf"), dir.join("b.gguf"), dir.join("c.gguf"));
    let fa = gen_model(&a, &TINY, "f32", &["--seed", "7", "--threads", "1"]);
    gen_model(&b, &TINY, "f32", &["--seed", "7", "--threads", "3"]);
    gen_model(&c, &TINY, "f32", &["--seed", "8", "--threads", "1"]);
    let (ba, bb, bc) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), std::fs::read(&c).unwrap());
    assert_eq!(ba, bb, "same seed, different thread counts");
    assert_ne!(ba, bc, "different seeds");

    let w = values(&fa, "blk.3.ffn_up.weight");
    let mean = w.iter().map(|&x| x as f64).sum::<f64>() / w.len() as f64;
    let std = (w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
    assert!(mean.abs() < 1e-3, "mean {mean}");
    assert!((std - 0.02).abs() < 1e-3, "std {std}");
    assert!(values(&fa, "blk.3.ffn_norm.weight").iter().all(|&x| x == 1.0));
    // Two tensors of one shape get different values.
    assert_ne!(values(&fa, "blk.0.attn_q.weight"), values(&fa, "blk.1.attn_q.weight"));
}

#[test]
fn gen_model_types_and_mixes() {
    let dir = scratch("types");
    let cases: [(&str, T, T, u32); 8] = [
        // (--quant, type of blk.1.attn_q, type of output.weight, general.file_type)
        ("q8_0", T::Q8_0, T::Q8_0, 7),
        ("q4_0", T::Q4_0, T::Q6_K, 2),
        ("q5_1", T::Q5_1, T::Q6_K, 9),
        ("iq4_nl", T::IQ4_NL, T::Q6_K, 25),
        ("q3_k_m", T::Q3_K, T::Q6_K, 12),
        ("q5_k_s", T::Q5_K, T::Q6_K, 16),
        ("q6_k", T::Q6_K, T::Q6_K, 18),
        ("bf16", T::BF16, T::BF16, 32),
    ];
    for (quant, attn_q, output, ftype) in cases {
        let f = gen_model(&dir.join(format!("{quant}.gguf")), &TINY, quant, &[]);
        assert_eq!(ty(&f, "blk.1.attn_q.weight"), attn_q, "{quant}");
        assert_eq!(ty(&f, "output.weight"), output, "{quant}");
        assert_eq!(f.metadata().get_u32("general.file_type").unwrap(), Some(ftype), "{quant}");
        assert_eq!(ty(&f, "blk.1.ffn_norm.weight"), T::F32, "{quant}");
        // Quantized weights still look like the f32 ones: small and centered.
        let w = values(&f, "blk.1.attn_q.weight");
        let rms = (w.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        assert!((rms - 0.02).abs() < 0.004, "{quant}: rms {rms}");
    }
    // Q3_K_M: attn_v of the first two layers Q5_K, then Q4_K; ffn_down Q5_K below n/16 = 0 layers.
    let f = GgufFile::open(dir.join("q3_k_m.gguf")).unwrap();
    assert_eq!(ty(&f, "blk.1.attn_v.weight"), T::Q5_K);
    assert_eq!(ty(&f, "blk.2.attn_v.weight"), T::Q4_K);
    assert_eq!(ty(&f, "blk.0.ffn_down.weight"), T::Q4_K);
    assert_eq!(ty(&f, "blk.0.attn_output.weight"), T::Q4_K);

    let pure = gen_model(&dir.join("pure.gguf"), &TINY, "q4_k_m", &["--pure"]);
    assert_eq!(ty(&pure, "output.weight"), T::Q4_K);
    assert_eq!(ty(&pure, "blk.0.attn_v.weight"), T::Q4_K);
}

#[test]
fn gen_model_falls_back_when_rows_are_not_whole_super_blocks() {
    let dir = scratch("fallback");
    // Rows of 96 fit 32-element blocks only; ffn_down rows (256) fit super-blocks.
    let dims = ["--dim", "96", "--layers", "2", "--heads", "2", "--ffn", "256", "--vocab", "270"];
    let f = gen_model(&dir.join("m.gguf"), &dims, "q4_k_m", &[]);
    // With 2 layers use_more_bits picks layer 1 only: Q6_K there, falling back to Q8_0.
    assert_eq!(ty(&f, "blk.1.attn_q.weight"), T::Q5_0);
    assert_eq!(ty(&f, "blk.0.attn_v.weight"), T::Q5_0);
    assert_eq!(ty(&f, "blk.1.attn_v.weight"), T::Q8_0);
    assert_eq!(ty(&f, "token_embd.weight"), T::Q5_0);
    assert_eq!(ty(&f, "output.weight"), T::Q8_0);
    assert_eq!(ty(&f, "blk.0.ffn_down.weight"), T::Q4_K);
    assert_eq!(ty(&f, "blk.1.ffn_down.weight"), T::Q6_K);
}

#[test]
fn quantize_follows_llama_quantize_and_refuses_requantizing() {
    let dir = scratch("quantize");
    let (src, q, qq) = (dir.join("f32.gguf"), dir.join("q4_k_m.gguf"), dir.join("q8_0.gguf"));
    let f32_model = gen_model(&src, &TINY, "f32", &[]);
    run_ok(bin().arg("quantize").arg(&src).arg(&q).arg("q4_k_m"));
    let f = GgufFile::open(&q).unwrap();
    assert_eq!(f.metadata().get_u32("general.file_type").unwrap(), Some(15));
    assert_eq!(f.metadata().get_u32("general.quantization_version").unwrap(), Some(2));
    assert_eq!(f.metadata().get_str_array("tokenizer.ggml.tokens").unwrap().map(<[String]>::len), Some(300));
    assert_eq!(ty(&f, "output.weight"), T::Q6_K);
    assert_eq!(ty(&f, "token_embd.weight"), T::Q4_K);
    for l in 0..8 {
        let more = if MORE_BITS_OF_8.contains(&l) { T::Q6_K } else { T::Q4_K };
        assert_eq!(ty(&f, &format!("blk.{l}.attn_v.weight")), more, "layer {l}");
        assert_eq!(ty(&f, &format!("blk.{l}.ffn_down.weight")), more, "layer {l}");
        assert_eq!(ty(&f, &format!("blk.{l}.ffn_up.weight")), T::Q4_K, "layer {l}");
        assert_eq!(ty(&f, &format!("blk.{l}.ffn_norm.weight")), T::F32, "layer {l}");
    }
    // llama-quantize's order: tensors outside the blocks by name, then block by block.
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(&names[..4], ["output.weight", "output_norm.weight", "token_embd.weight", "blk.0.attn_k.weight"]);
    // The quantized weights are the f32 ones up to Q4_K's error.
    let (a, b) = (values(&f32_model, "blk.2.ffn_gate.weight"), values(&f, "blk.2.ffn_gate.weight"));
    let err = a.iter().zip(&b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len() as f64;
    let rms = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / a.len() as f64;
    assert!(err / rms < 0.02, "relative squared error {}", err / rms);

    let refused = bin().arg("quantize").arg(&q).arg(&qq).arg("q8_0").output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-requantize"));
    assert!(!qq.exists());
    run_ok(bin().arg("quantize").arg("--allow-requantize").arg(&q).arg(&qq).arg("q8_0"));
    let f = GgufFile::open(&qq).unwrap();
    assert_eq!(ty(&f, "blk.2.ffn_gate.weight"), T::Q8_0);
    assert_eq!(ty(&f, "blk.2.ffn_norm.weight"), T::F32);
}

fn model_path(file: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("WASM_CHORD_MODELS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wasm-chord/models")))?;
    let path = dir.join(file);
    if path.exists() {
        return Some(path);
    }
    // CI sets this so that a missing model fails instead of skipping the test.
    if std::env::var_os("WASM_CHORD_REQUIRE_MODELS").is_some_and(|v| v == "1") {
        panic!("{} is missing (scripts/fetch-models.sh fetches it)", path.display());
    }
    eprintln!("skipping: {} is missing (scripts/fetch-models.sh fetches it)", path.display());
    None
}

#[test]
fn info_lists_smollm2() {
    let Some(path) = model_path("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    let text = String::from_utf8(run_ok(bin().arg("info").arg(&path)).stdout).unwrap();
    assert!(text.contains("general.architecture"));
    assert!(text.contains("\"llama\""));
    assert!(text.contains("tensors (272):"));
    assert!(text.contains("file type:   Q4_1 (3)"));
    assert!(text.contains("[string; 49152]"));
    let line = text.lines().find(|l| l.contains(" token_embd.weight ")).expect("token_embd row");
    assert!(line.contains("q8_0") && line.contains("[576, 49152]") && line.contains("30081024"), "{line}");

    let json: serde_json::Value =
        serde_json::from_slice(&run_ok(bin().args(["info", "--json"]).arg(&path)).stdout).unwrap();
    assert_eq!(json["version"], 3);
    assert_eq!(json["tensors"].as_array().unwrap().len(), 272);
    assert_eq!(json["totals"]["tensors"], 272);
    let tokens = json["metadata"].as_array().unwrap().iter().find(|e| e["key"] == "tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens["len"], 49152);
    assert_eq!(tokens["truncated"], true);
    let bytes: u64 = json["tensors"].as_array().unwrap().iter().map(|t| t["bytes"].as_u64().unwrap()).sum();
    assert_eq!(json["totals"]["bytes"], bytes);
}

#[test]
fn info_lists_gemma3() {
    let Some(path) = model_path("gemma-3-270m-q4_k_m.gguf") else { return };
    let json: serde_json::Value =
        serde_json::from_slice(&run_ok(bin().args(["info", "--json"]).arg(&path)).stdout).unwrap();
    let arch = json["metadata"].as_array().unwrap().iter().find(|e| e["key"] == "general.architecture").unwrap();
    assert_eq!(arch["value"], "gemma3");
    let types: HashSet<&str> =
        json["tensors"].as_array().unwrap().iter().map(|t| t["type"].as_str().unwrap()).collect();
    for t in ["q5_0", "q8_0", "q4_K", "q6_K", "f32"] {
        assert!(types.contains(t), "{t} missing from {types:?}");
    }
    let by_type = json["totals"]["by_type"].as_object().unwrap();
    let total: u64 = by_type.values().map(|v| v["tensors"].as_u64().unwrap()).sum();
    assert_eq!(json["totals"]["tensors"].as_u64(), Some(total));
}

/// llama.cpp's build folder (binaries and shared libraries in `bin/`), as scripts/goldens/llama_env.sh finds it.
fn llama_bin() -> Option<PathBuf> {
    let home_cache = std::env::var_os("WASM_CHORD_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wasm-chord")));
    let candidates = [
        std::env::var_os("LLAMA_BUILD_DIR").map(PathBuf::from),
        home_cache.map(|c| c.join("llama-build")),
        Some(PathBuf::from("/work/cache/llama-build")),
    ];
    let found = candidates.into_iter().flatten().map(|d| d.join("bin")).find(|b| b.join("llama-quantize").exists());
    if found.is_none() {
        eprintln!("skipping: no llama.cpp build with llama-quantize (scripts/build-llama-cpp.sh builds one)");
    }
    found
}

fn llama_quantize(bin: &Path, input: &Path, output: &Path, ftype: &str, extra: &[&str]) {
    let out = Command::new(bin.join("llama-quantize"))
        .env("LD_LIBRARY_PATH", bin)
        .args(extra)
        .arg(input)
        .arg(output)
        .arg(ftype)
        .arg("2")
        .output()
        .expect("llama-quantize runs");
    assert!(out.status.success(), "llama-quantize {ftype} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Asserts two files hold the same tensors in the same order with the same types and bytes.
fn assert_same_tensors(ours: &Path, theirs: &Path, what: &str) {
    let (a, b) = (GgufFile::open(ours).unwrap(), GgufFile::open(theirs).unwrap());
    let list = |f: &GgufFile| f.tensors().iter().map(|t| (t.name.clone(), t.ty, t.dims.clone())).collect::<Vec<_>>();
    assert_eq!(list(&a), list(&b), "{what}: tensor names, types and shapes differ from llama-quantize's");
    for (x, y) in a.tensors().iter().zip(b.tensors()) {
        assert!(a.tensor_data(x) == b.tensor_data(y), "{what}: {} ({}) bytes differ from llama-quantize's", x.name, x.ty);
    }
    let ftype = |f: &GgufFile| f.metadata().get_u32("general.file_type").unwrap();
    assert_eq!(ftype(&a), ftype(&b), "{what}: general.file_type");
}

/// Runs llama-simple on `model` (greedy, 4 tokens) and asserts it loaded the model and decoded.
fn assert_llama_runs(bin: &Path, model: &Path) {
    let out = Command::new(bin.join("llama-simple"))
        .env("LD_LIBRARY_PATH", bin)
        .arg("-m")
        .arg(model)
        .args(["-n", "4", "Hello world"])
        .output()
        .expect("llama-simple runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "llama-simple failed on {}:\n{log}", model.display());
    assert!(log.contains("decoded 4 tokens"), "llama-simple did not decode on {}:\n{log}", model.display());
}

#[test]
fn llama_cpp_runs_generated_and_quantized_files() {
    let Some(llama) = llama_bin() else { return };
    let dir = scratch("llama-runs");
    // A real-sized vocabulary so that llama.cpp's tokenizer has pieces for the prompt.
    let dims = ["--dim", "256", "--layers", "4", "--heads", "4", "--kv-heads", "2", "--ffn", "512", "--vocab", "32000"];
    for quant in ["q4_k_m", "q8_0", "iq4_nl", "q3_k_s", "f16"] {
        let path = dir.join(format!("{quant}.gguf"));
        gen_model(&path, &dims, quant, &[]);
        assert_llama_runs(&llama, &path);
    }
    let (src, q) = (dir.join("f16.gguf"), dir.join("q5_k_m.gguf"));
    run_ok(bin().arg("quantize").arg(&src).arg(&q).arg("q5_k_m"));
    assert_llama_runs(&llama, &q);
}

#[test]
fn placeholder_vocab_tokenizes_as_in_llama_cpp() {
    let Some(llama) = llama_bin() else { return };
    let dir = scratch("tokenize");
    let path = dir.join("m.gguf");
    let dims = ["--dim", "64", "--layers", "1", "--heads", "2", "--ffn", "64", "--vocab", "32000"];
    let file = gen_model(&path, &dims, "f16", &[]);
    let tokenizer = wasm_chord_core::tokenizer::Tokenizer::from_gguf(&file).expect("our tokenizer loads the vocab");
    for text in ["Hello world", "The quick brown fox, jumps over 12 lazy dogs!", "naïve café — 漢字 🙂", "  two  spaces\nnewline"] {
        let out = Command::new(llama.join("llama-tokenize"))
            .env("LD_LIBRARY_PATH", &llama)
            .arg("-m")
            .arg(&path)
            .args(["--ids", "--log-disable", "-p", text])
            .output()
            .expect("llama-tokenize runs");
        assert!(out.status.success(), "llama-tokenize failed: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().rev().find(|l| l.starts_with('[')).expect("a list of ids");
        let theirs: Vec<u32> =
            line.trim_matches(|c| c == '[' || c == ']').split(", ").map(|x| x.parse().expect("an id")).collect();
        assert_eq!(tokenizer.encode(text, true, false), theirs, "{text:?}");
    }
}

#[test]
fn quantize_matches_llama_quantize_on_generated_models() {
    let Some(llama) = llama_bin() else { return };
    let dir = scratch("vs-llama");
    // 8 layers of 256 (no fallbacks) and 3 layers of 96 (fallbacks to 32-element blocks, F16 never).
    let shapes: [(&str, &[&str]); 2] = [
        ("even", &TINY),
        ("odd", &["--dim", "96", "--layers", "3", "--heads", "2", "--ffn", "256", "--vocab", "300"]),
    ];
    for (shape, dims) in shapes {
        let src = dir.join(format!("{shape}-f32.gguf"));
        gen_model(&src, dims, "f32", &[]);
        for ftype in ["Q4_K_M", "Q4_K_S", "Q3_K_M", "Q3_K_L", "Q5_K_M", "Q2_K", "Q6_K", "Q4_0", "Q5_1", "IQ4_NL", "Q8_0", "F16"] {
            let (ours, theirs) = (dir.join(format!("{shape}-{ftype}-ours.gguf")), dir.join(format!("{shape}-{ftype}-llama.gguf")));
            run_ok(bin().arg("quantize").arg(&src).arg(&ours).arg(ftype));
            llama_quantize(&llama, &src, &theirs, ftype, &[]);
            assert_same_tensors(&ours, &theirs, &format!("{shape} {ftype}"));
        }
        // llama-quantize's options spell the same in both tools. Explicit types skip the
        // fallback, so Q5_K embeddings need rows of whole super-blocks.
        let embd_type = if shape == "even" { "q5_k" } else { "q5_1" };
        let options: [&[&str]; 3] = [
            &["--pure"],
            &["--leave-output-tensor"],
            &["--output-tensor-type", "q8_0", "--token-embedding-type", embd_type],
        ];
        for opts in options {
            let (ours, theirs) = (dir.join(format!("{shape}-opts-ours.gguf")), dir.join(format!("{shape}-opts-llama.gguf")));
            run_ok(bin().arg("quantize").args(opts).arg(&src).arg(&ours).arg("q3_k_m"));
            llama_quantize(&llama, &src, &theirs, "Q3_K_M", opts);
            assert_same_tensors(&ours, &theirs, &format!("{shape} Q3_K_M {opts:?}"));
        }
    }
}

#[test]
fn quantize_matches_llama_quantize_on_the_real_models() {
    let Some(llama) = llama_bin() else { return };
    let dir = scratch("real");
    // SmolLM2 has rows of 576 (fallbacks) and separate output weights; Gemma 3 ties them.
    for file in ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"] {
        let Some(model) = model_path(file) else { continue };
        let (ours, theirs) = (dir.join("ours.gguf"), dir.join("llama.gguf"));
        run_ok(bin().args(["quantize", "--allow-requantize"]).arg(&model).arg(&ours).arg("q4_k_m"));
        llama_quantize(&llama, &model, &theirs, "Q4_K_M", &["--allow-requantize"]);
        assert_same_tensors(&ours, &theirs, &format!("{file} -> Q4_K_M"));
    }
}
