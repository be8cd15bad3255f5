//! End-to-end tests of `wasm-chord run` and `bench` on the real SmolLM2 model: the `--json`
//! contract that outside scripts read, `--ignore-eos`, `--logits-out`, stop strings and seeds.
//! Tests that need the model print a note and pass when it is not in the model cache, unless
//! WASM_CHORD_REQUIRE_MODELS is set (as scripts/test.sh does).

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const N_VOCAB: usize = 49152;

fn model_path() -> Option<PathBuf> {
    let dir = match std::env::var_os("WASM_CHORD_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/wasm-chord/models"),
    };
    let path = dir.join(MODEL);
    if path.is_file() {
        Some(path)
    } else if std::env::var_os("WASM_CHORD_REQUIRE_MODELS").is_some() {
        panic!("{} not found and WASM_CHORD_REQUIRE_MODELS is set (run scripts/fetch-models.sh)", path.display());
    } else {
        eprintln!("skipping: {} not found (run scripts/fetch-models.sh)", path.display());
        None
    }
}

fn wasm_chord(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasm-chord")).args(args).output().expect("the binary runs")
}

fn run_json(args: &[&str]) -> Value {
    let out = wasm_chord(args);
    assert!(out.status.success(), "wasm-chord {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 stdout");
    assert_eq!(stdout.trim_end().lines().count(), 1, "--json prints exactly one line: {stdout}");
    serde_json::from_str(&stdout).expect("stdout is one JSON object")
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array().expect("an array").iter().map(|t| t.as_u64().expect("token ids are integers")).collect()
}

#[test]
fn run_json_contract_with_ignore_eos_and_logits_out() {
    let Some(model) = model_path() else { return };
    let logits_path = std::env::temp_dir().join(format!("wasm-chord-logits-{}.bin", std::process::id()));
    let v = run_json(&[
        "run", "-m", model.to_str().unwrap(), "-p", "The capital of France is", "-n", "8", "--temp", "0",
        "--ignore-eos", "--top-logits", "3", "--logits-out", logits_path.to_str().unwrap(), "--json",
    ]);
    assert!(v["prompt_tokens"].as_u64().unwrap() > 0);
    let tokens = ids(&v["tokens"]);
    assert_eq!(tokens.len(), 8, "--ignore-eos -n 8 generates exactly 8 tokens");
    assert!(tokens.iter().all(|&t| (t as usize) < N_VOCAB));
    assert!(v["text"].is_string());
    let timings = &v["timings"];
    for key in ["prompt_ms", "gen_ms", "prompt_tok_s", "gen_tok_s"] {
        assert!(timings[key].as_f64().is_some_and(|x| x >= 0.0), "timings.{key} is a number: {timings}");
    }

    let top = v["top_logits"].as_array().unwrap();
    assert_eq!(top.len(), 8, "one top-logits list per generated step");
    let logits_bytes = std::fs::read(&logits_path).unwrap();
    let _ = std::fs::remove_file(&logits_path);
    assert_eq!(logits_bytes.len(), 8 * N_VOCAB * 4, "n_vocab little-endian f32 per step");
    for (step, (entries, &token)) in top.iter().zip(&tokens).enumerate() {
        let entries = entries.as_array().unwrap();
        assert_eq!(entries.len(), 3);
        let pairs: Vec<(u64, f64)> =
            entries.iter().map(|e| (e[0].as_u64().unwrap(), e[1].as_f64().unwrap())).collect();
        assert!(pairs.windows(2).all(|w| w[0].1 >= w[1].1), "highest first: {pairs:?}");
        let raw: Vec<f32> = logits_bytes[step * N_VOCAB * 4..(step + 1) * N_VOCAB * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let (argmax, max) = raw.iter().enumerate().fold((0, f32::MIN), |a, (i, &l)| if l > a.1 { (i, l) } else { a });
        assert_eq!(pairs[0].0 as usize, argmax, "top logits and --logits-out agree");
        assert!((pairs[0].1 - max as f64).abs() < 1e-3);
        // Greedy picks the argmax unless it is an end-of-generation token --ignore-eos masks.
        if argmax as u64 != token {
            assert!(entries.len() > 1 && pairs[1].0 == token, "step {step}: token {token} vs {pairs:?}");
        }
    }
}

#[test]
fn stop_string_ends_output_before_it() {
    let Some(model) = model_path() else { return };
    let m = model.to_str().unwrap();
    let base = ["run", "-m", m, "-p", "Once upon a time", "-n", "24", "--temp", "0", "--ignore-eos", "--json"];
    let full = run_json(&base);
    let text = full["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 20, "enough text to cut: {text:?}");
    // A stop string from the middle of the greedy output, likely spanning a token boundary.
    let stop: String = chars[8..13].iter().collect();
    let cut = text.find(&stop).unwrap();
    let mut args = base.to_vec();
    args.extend(["--stop", &stop]);
    let stopped = run_json(&args);
    assert_eq!(stopped["text"].as_str().unwrap(), &text[..cut]);
    assert_eq!(stopped["stop_reason"].as_str().unwrap(), "stop_string");
    assert!(ids(&stopped["tokens"]).len() < 24);
}

#[test]
fn same_seed_same_sample() {
    let Some(model) = model_path() else { return };
    let m = model.to_str().unwrap();
    let args = |seed| {
        let a = ["run", "-m", m, "-p", "Hello", "-n", "12", "--temp", "1.0", "--ignore-eos", "--seed", seed, "--json"];
        ids(&run_json(&a)["tokens"])
    };
    assert_eq!(args("7"), args("7"));
}

#[test]
fn plain_run_streams_text_and_reports_timings_on_stderr() {
    let Some(model) = model_path() else { return };
    let out = wasm_chord(&["run", "-m", model.to_str().unwrap(), "-p", "Hi", "-n", "4", "--temp", "0", "--ignore-eos"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tok/s"));
}

#[test]
fn missing_default_model_says_how_to_fetch_it() {
    let empty = std::env::temp_dir().join(format!("wasm-chord-no-models-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_wasm-chord"))
        .args(["run", "-p", "hi"])
        .env("WASM_CHORD_MODELS", &empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scripts/fetch-models.sh") && err.contains(MODEL), "{err}");
}

#[test]
fn bench_json_contract() {
    let Some(model) = model_path() else { return };
    let out = wasm_chord(&["bench", "-m", model.to_str().unwrap(), "-p", "16", "-n", "4", "-r", "2", "-t", "1", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["threads"], 1);
    assert!(v["model"].as_str().unwrap().contains("SmolLM2"));
    for (test, n) in [("pp", 16), ("tg", 4)] {
        assert_eq!(v[test]["n"], n);
        assert!(v[test]["tok_s"].as_f64().unwrap() > 0.0);
        assert!(v[test]["sd"].as_f64().unwrap() >= 0.0);
    }
}

/// Greedy `run --ignore-eos` reproduces llama.cpp's greedy continuation (the oracle's goldens)
/// token for token, except that after a step where llama.cpp's top-2 logits are closer than our
/// numerical error the two may part.
#[test]
fn greedy_run_matches_llama_cpp_continuations() {
    let Some(model) = model_path() else { return };
    let golden: Value = serde_json::from_slice(&std::fs::read(golden_path_of("logits/smollm2.json")).unwrap()).unwrap();
    let prompts: Value =
        serde_json::from_slice(&std::fs::read(golden_path_of("prompts.json")).unwrap()).unwrap();
    // The models issue's near-tie: in ggml-rounding mode our logits reproduce llama.cpp's bit
    // for bit on the machine that made the goldens (AVX2), so no divergence is expected at all.
    const TIE: f64 = 0.05;
    for case in golden["prompts"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let text = prompts.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["text"].as_str().unwrap();
        let steps = case["steps"].as_array().unwrap();
        let want = ids(&case["generated"]);
        let v = run_json(&[
            "run", "-m", model.to_str().unwrap(), "-p", text, "-n", &want.len().to_string(), "--temp", "0",
            "--ignore-eos", "--json",
        ]);
        assert_eq!(v["prompt_tokens"].as_u64().unwrap() as usize, case["prompt_tokens"].as_array().unwrap().len(), "{name}");
        let got = ids(&v["tokens"]);
        // Identical until the first difference, which may only happen at a near-tie; after it
        // the continuations legitimately part.
        if let Some(k) = (0..want.len()).find(|&k| got[k] != want[k]) {
            let gap = steps[k]["gap"].as_f64().unwrap();
            assert!(gap < TIE, "{name}: step {k} picks {} where llama.cpp picks {} by a margin of {gap}", got[k], want[k]);
        }
    }
}

fn golden_path_of(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wasm-chord-runtime/tests/golden").join(file)
}

#[test]
fn chat_answers_each_line_and_exits_at_end_of_input() {
    use std::io::Write;
    use std::process::Stdio;
    let Some(model) = model_path() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasm-chord"))
        // A newline stop string keeps each reply on one line.
        .args(["chat", "-m", model.to_str().unwrap(), "--temp", "0", "-n", "6", "--stop", "\n", "--system", "Answer briefly."])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"What is 2+2?\n/reset\nName a color.\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 2, "one reply per message: {stdout:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("conversation cleared"));
}

/// `--attn` picks the attention kernel: standard (the CPU default) and flash agree on greedy tokens
/// for a short prompt, and a name that is neither is a usage error, not a panic.
#[test]
fn attn_flag_selects_the_kernel() {
    let Some(model) = model_path() else { return };
    let model = model.to_str().unwrap();
    let tokens = |attn: &str| {
        let v = run_json(&["run", "-m", model, "-p", "The capital of France is", "-n", "8", "--temp", "0",
            "--ignore-eos", "--attn", attn, "--json"]);
        ids(&v["tokens"])
    };
    assert_eq!(tokens("flash"), tokens("standard"));
    let out = wasm_chord(&["run", "-m", model, "-p", "hi", "-n", "1", "--attn", "fast"]);
    assert_eq!(out.status.code(), Some(2), "clap usage error: {}", String::from_utf8_lossy(&out.stderr));
}
