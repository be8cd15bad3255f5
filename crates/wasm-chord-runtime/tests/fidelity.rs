//! Fidelity against llama.cpp: the goldens in tests/golden/logits hold llama.cpp's logits on
//! the same GGUF files (see scripts/goldens/README.md). For every prompt the test feeds the
//! golden prompt ids (no tokenizer involved) as one batch, then the golden greedy tokens one
//! at a time, and checks:
//! - greedy choice: ours equals llama.cpp's at every step, except where llama.cpp's top two
//!   logits are within `TIE_GAP` (a near-tie that float noise may flip);
//! - the largest |logit difference| over llama.cpp's top 10 of each step;
//! - KL(llama.cpp || ours) of the full next-token distribution where the full vector is stored.
//!
//! Models missing from the cache folder are skipped with a note.
//!
//! The bounds are the models issue's: a greedy divergence only where llama.cpp's top two are
//! within `TIE_GAP`, KL <= `MAX_KL`. These small quantized models round every matmul input to
//! 8 bits, so a last-bit difference anywhere flips some roundings and grows through the layers
//! (llama.cpp itself, fed token by token instead of one batch, differs from its own batch
//! logits by KL up to 8e-3). The bounds hold because ggml-rounding mode reproduces llama.cpp's
//! arithmetic op by op, summation orders included (tests/op_diff.rs checks each op bitwise
//! against a dump of llama.cpp's graph): on the machine that made the goldens (x86-64 AVX2)
//! the logits are bit-identical, KL 0 and top-10 difference 0 for every prompt and step.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use wasm_chord_core::gguf::GgufFile;
use wasm_chord_runtime::{AttentionKind, LoadOptions, Model, Outputs};

/// Top-2 gaps below this may flip greedy choices (the models issue's near-tie).
const TIE_GAP: f64 = 0.05;
/// KL of the next-token distribution (the models issue's aim).
const MAX_KL: f64 = 1e-3;
/// Largest logit difference tolerated over llama.cpp's top 10. Measured: 0 (bit-identical).
/// Before every op followed ggml's order, single flipped roundings showed as 0.4 to 2.3 here.
const MAX_TOP10_DIFF: f64 = 0.01;
/// Teacher-forced prompt argmax agreement with llama.cpp (measured: every position).
const MIN_PROMPT_AGREEMENT: f64 = 1.0;

fn models_dir() -> PathBuf {
    std::env::var_os("WASM_CHORD_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/wasm-chord/models")
    })
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/logits")
}

fn read_f32(path: &PathBuf) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn log_softmax(l: &[f32]) -> Vec<f64> {
    let max = l.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v as f64));
    let lse = max + l.iter().map(|v| (*v as f64 - max).exp()).sum::<f64>().ln();
    l.iter().map(|v| *v as f64 - lse).collect()
}

/// KL(p || q) with p from llama.cpp.
fn kl(reference: &[f32], ours: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(reference), log_softmax(ours));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

/// Greedy choice as the goldens make it: EOG ids masked, ties to the lowest id.
fn greedy(logits: &[f32], eog: &[usize]) -> usize {
    let mut best = (f32::NEG_INFINITY, usize::MAX);
    for (i, &l) in logits.iter().enumerate() {
        if !eog.contains(&i) && l > best.0 {
            best = (l, i);
        }
    }
    best.1
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn check_model(golden: &str) {
    let gpath = golden_dir().join(format!("{golden}.json"));
    let g: Value = serde_json::from_str(&std::fs::read_to_string(&gpath).expect("golden json")).expect("golden parses");
    let file = models_dir().join(g["model_file"].as_str().expect("model_file"));
    if !file.exists() {
        eprintln!("SKIP {golden}: {} not found (run scripts/fetch-models.sh)", file.display());
        return;
    }
    let rounding = std::env::var("WASM_CHORD_GGML_ROUNDING").map_or(true, |v| v != "0");
    let model = Model::load(Arc::new(GgufFile::open(&file).expect("open gguf")), &LoadOptions {
        n_threads: 0,
        ggml_rounding: rounding,
        // The goldens were made with llama.cpp's flash attention off.
        attention: AttentionKind::Standard,
        ..LoadOptions::default()
    })
        .expect("load model");
    let n_vocab = model.n_vocab();
    assert_eq!(n_vocab as u64, g["n_vocab"].as_u64().unwrap());
    let eog: Vec<usize> = ids(&g["eog_ids"]).into_iter().map(|i| i as usize).collect();
    let n_ctx = g["settings"]["n_ctx"].as_u64().unwrap() as usize;

    let mut worst_kl = 0.0f64;
    let mut worst_top10 = 0.0f64;
    let mut failures = Vec::new();
    for p in g["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let prompt = ids(&p["prompt_tokens"]);
        let generated = ids(&p["generated"]);
        let steps = p["steps"].as_array().unwrap();
        let mut kv = model.new_kv_cache(n_ctx).unwrap();
        let t0 = std::time::Instant::now();
        let all = model.forward(&mut kv, &prompt, Outputs::All).unwrap();
        let prefill_s = t0.elapsed().as_secs_f64();

        // Teacher-forced argmax over the prompt (informational: llama.cpp's ties are unmasked).
        let prompt_argmax = ids(&p["prompt_argmax"]);
        let agree = (0..prompt.len())
            .filter(|&i| greedy(&all[i * n_vocab..(i + 1) * n_vocab], &[]) as u32 == prompt_argmax[i])
            .count();

        let mut logits = all[(prompt.len() - 1) * n_vocab..].to_vec();

        // A last-only prefill runs the last layer past attention on one row, as llama.cpp does;
        // llama.cpp's last-only logits equal its all-rows ones bitwise on these prompts, so ours
        // must too (checked where the rounding is llama.cpp's).
        if rounding {
            let mut kv_last = model.new_kv_cache(n_ctx).unwrap();
            let last = model.forward(&mut kv_last, &prompt, Outputs::Last).unwrap();
            if last != logits {
                failures.push(format!("{golden}/{name}: last-only prefill logits differ from the all-rows ones"));
            }
        }
        let (mut kl_max, mut top10_max, mut mismatches) = (0.0f64, 0.0f64, 0usize);
        let t1 = std::time::Instant::now();
        for (k, step) in steps.iter().enumerate() {
            let want = step["token"].as_u64().unwrap() as usize;
            let gap = step["gap"].as_f64().unwrap();
            let ours = greedy(&logits, &eog);
            if ours != want {
                mismatches += 1;
                if gap >= TIE_GAP {
                    failures.push(format!("{golden}/{name} step {k}: ours {ours}, llama.cpp {want} (gap {gap:.4})"));
                }
            }
            let mut step_diff = 0.0f64;
            for pair in step["top10"].as_array().unwrap() {
                let id = pair[0].as_u64().unwrap() as usize;
                step_diff = step_diff.max((logits[id] as f64 - pair[1].as_f64().unwrap()).abs());
            }
            if std::env::var_os("WASM_CHORD_VERBOSE").is_some() {
                println!("  {name} step {k}: top-10 |diff| {step_diff:.4}, gap {gap:.4}");
            }
            top10_max = top10_max.max(step_diff);
            if let Some(f) = p["full_logits"].get(k.to_string()) {
                let reference = read_f32(&golden_dir().join(f.as_str().unwrap()));
                kl_max = kl_max.max(kl(&reference, &logits));
            }
            if k + 1 < steps.len() {
                logits = model.forward(&mut kv, &[generated[k]], Outputs::Last).unwrap();
            }
        }
        let decode_tps = (steps.len() - 1) as f64 / t1.elapsed().as_secs_f64();
        println!(
            "{golden}/{name}: prompt {} tok (prefill {:.1} tok/s), prompt argmax agree {agree}/{}, greedy mismatches {mismatches}/{} \
             (min gap {:.4}), max top-10 |diff| {top10_max:.4}, max KL {kl_max:.2e}, decode {decode_tps:.1} tok/s",
            prompt.len(),
            prompt.len() as f64 / prefill_s,
            prompt.len(),
            steps.len(),
            p["min_gap"].as_f64().unwrap(),
        );
        if (agree as f64) < MIN_PROMPT_AGREEMENT * prompt.len() as f64 {
            failures.push(format!("{golden}/{name}: prompt argmax agrees at only {agree}/{} positions", prompt.len()));
        }
        worst_kl = worst_kl.max(kl_max);
        worst_top10 = worst_top10.max(top10_max);
    }
    println!("{golden}: worst KL {worst_kl:.2e}, worst top-10 |diff| {worst_top10:.4} (ggml rounding {rounding})");
    assert!(failures.is_empty(), "disagreements with llama.cpp:\n{}", failures.join("\n"));
    assert!(worst_top10 <= MAX_TOP10_DIFF, "{golden}: top-10 logit difference {worst_top10} > {MAX_TOP10_DIFF}");
    assert!(worst_kl <= MAX_KL, "{golden}: KL {worst_kl} > {MAX_KL}");
}

#[test]
fn smollm2_matches_llama_cpp() {
    check_model("smollm2");
}

#[test]
fn gemma3_matches_llama_cpp() {
    check_model("gemma3");
}
