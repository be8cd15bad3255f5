//! The forward-pass API on a real model (skipped when it is not downloaded): batched prefill
//! agrees with token-by-token decoding, output selection, cache rollback, and the errors a
//! caller can cause.

use std::path::PathBuf;
use std::sync::Arc;

use wasm_chord_core::gguf::GgufFile;
use wasm_chord_core::hparams::{HParamsError, MetadataSource};
use wasm_chord_runtime::{LoadOptions, Model, ModelSource, Outputs, RuntimeError, TensorView};

fn smollm2(ggml_rounding: bool) -> Option<Model> {
    let dir = std::env::var_os("WASM_CHORD_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/wasm-chord/models")
    });
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("SKIP: {} not found (run scripts/fetch-models.sh)", path.display());
        return None;
    }
    let file = Arc::new(GgufFile::open(&path).expect("open"));
    Some(Model::load(file, &LoadOptions { n_threads: 2, ggml_rounding, ..LoadOptions::default() }).expect("load"))
}

const PROMPT: [u32; 8] = [6403, 1980, 253, 655, 28, 281, 253, 1165];

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn batched_prefill_matches_token_by_token() {
    // Plain f32 (no emulated 8-bit roundings): only summation order differs between the two.
    let Some(model) = smollm2(false) else { return };
    let n = model.n_vocab();
    let mut kv = model.new_kv_cache(64).unwrap();
    let all = model.forward(&mut kv, &PROMPT, Outputs::All).unwrap();
    assert_eq!(all.len(), PROMPT.len() * n);
    assert_eq!(kv.len(), PROMPT.len());

    let mut kv1 = model.new_kv_cache(64).unwrap();
    for (i, &t) in PROMPT.iter().enumerate() {
        let one = model.forward(&mut kv1, &[t], Outputs::Last).unwrap();
        let d = max_diff(&one, &all[i * n..(i + 1) * n]);
        assert!(d < 2e-2, "position {i}: batched and sequential logits differ by {d}");
    }
    assert_eq!(kv1.len(), PROMPT.len());
}

#[test]
fn output_positions_select_rows() {
    let Some(model) = smollm2(true) else { return };
    let n = model.n_vocab();
    let mut kv = model.new_kv_cache(64).unwrap();
    let all = model.forward(&mut kv, &PROMPT, Outputs::All).unwrap();
    let mut kv = model.new_kv_cache(64).unwrap();
    let picked = model.forward(&mut kv, &PROMPT, Outputs::Positions(vec![5, 2])).unwrap();
    assert_eq!(&picked[..n], &all[5 * n..6 * n]);
    assert_eq!(&picked[n..], &all[2 * n..3 * n]);
    let mut kv = model.new_kv_cache(64).unwrap();
    let last = model.forward(&mut kv, &PROMPT, Outputs::Last).unwrap();
    assert_eq!(&last[..], &all[7 * n..]);
}

#[test]
fn truncate_rolls_back() {
    let Some(model) = smollm2(true) else { return };
    let mut kv = model.new_kv_cache(64).unwrap();
    model.forward(&mut kv, &PROMPT[..5], Outputs::Last).unwrap();
    // A rejected draft: three tokens, then rolled back.
    model.forward(&mut kv, &[100, 200, 300], Outputs::All).unwrap();
    kv.truncate(5);
    assert_eq!(kv.len(), 5);
    let after_rollback = model.forward(&mut kv, &PROMPT[5..], Outputs::All).unwrap();

    let mut fresh = model.new_kv_cache(64).unwrap();
    model.forward(&mut fresh, &PROMPT[..5], Outputs::Last).unwrap();
    let straight = model.forward(&mut fresh, &PROMPT[5..], Outputs::All).unwrap();
    assert_eq!(after_rollback, straight);
    kv.truncate(100);
    assert_eq!(kv.len(), 8);
}

#[test]
fn caller_errors_are_reported() {
    let Some(model) = smollm2(true) else { return };
    let mut kv = model.new_kv_cache(4).unwrap();
    assert_eq!(kv.capacity(), 4);
    let n_vocab = model.n_vocab() as u32;
    assert!(matches!(model.forward(&mut kv, &[1, n_vocab], Outputs::Last), Err(RuntimeError::TokenOutOfRange { index: 1, .. })));
    assert!(matches!(model.forward(&mut kv, &[], Outputs::Last), Err(RuntimeError::EmptyBatch)));
    assert!(matches!(model.forward(&mut kv, &[1, 2], Outputs::Positions(vec![2])), Err(RuntimeError::BadOutput { index: 2, .. })));
    assert!(matches!(model.forward(&mut kv, &[1, 2, 3, 4, 5], Outputs::Last), Err(RuntimeError::ContextOverflow { .. })));
    assert_eq!(kv.len(), 0, "failed calls leave the cache as it was");
    model.forward(&mut kv, &[1, 2, 3], Outputs::Last).unwrap();
    assert!(matches!(model.forward(&mut kv, &[4, 5], Outputs::Last), Err(RuntimeError::ContextOverflow { len: 3, new: 2, capacity: 4 })));
    assert!(matches!(model.new_kv_cache(0), Err(RuntimeError::BadContext { .. })));
    let too_long = model.hparams().n_ctx_train + 1;
    assert!(matches!(model.new_kv_cache(too_long), Err(RuntimeError::BadContext { .. })));
    assert_eq!(model.arch_name(), "llama");
}

/// A source naming an architecture nobody implements.
struct Unknown;

impl MetadataSource for Unknown {
    fn get_u32(&self, key: &str) -> Result<Option<u32>, HParamsError> {
        Ok(match key {
            "mamba.context_length" => Some(128),
            "mamba.embedding_length" | "mamba.feed_forward_length" => Some(64),
            "mamba.block_count" | "mamba.attention.head_count" => Some(1),
            "mamba.vocab_size" => Some(10),
            _ => None,
        })
    }
    fn get_f32(&self, key: &str) -> Result<Option<f32>, HParamsError> {
        Ok((key == "mamba.attention.layer_norm_rms_epsilon").then_some(1e-5))
    }
    fn get_str(&self, key: &str) -> Result<Option<String>, HParamsError> {
        Ok((key == "general.architecture").then(|| "mamba".to_string()))
    }
    fn array_len(&self, _: &str) -> Result<Option<usize>, HParamsError> {
        Ok(None)
    }
}

impl ModelSource for Unknown {
    fn metadata(&self) -> &dyn MetadataSource {
        self
    }
    fn tensor(&self, _: &str) -> Option<TensorView> {
        None
    }
}

#[test]
fn unknown_architecture_lists_supported_ones() {
    let err = Model::load_source(&Unknown, &LoadOptions::default()).err().expect("mamba is not supported");
    let msg = err.to_string();
    assert!(msg.contains("mamba") && msg.contains("llama") && msg.contains("qwen2") && msg.contains("gemma3"), "{msg}");
}
