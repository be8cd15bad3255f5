//! The Engine/Session API on the real SmolLM2 model: a session that reuses a cached prefix
//! generates exactly what a fresh session does, cancellation stops it, and the end-of-generation
//! token ends a chat reply. Skipped with a note when the model is not in the cache (unless
//! WASM_CHORD_REQUIRE_MODELS is set).

use std::path::PathBuf;
use std::sync::Arc;

use wasm_chord_runtime::generate::{CancelHandle, GenerateRequest, StopReason};
use wasm_chord_runtime::sampling::SamplingParams;
use wasm_chord_runtime::session::{ChatMessage, Engine, EngineOptions};

fn engine() -> Option<Arc<Engine>> {
    let dir = std::env::var_os("WASM_CHORD_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/wasm-chord/models")
    });
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.is_file() {
        assert!(std::env::var_os("WASM_CHORD_REQUIRE_MODELS").is_none(), "{} is missing", path.display());
        eprintln!("skipping: {} not found (run scripts/fetch-models.sh)", path.display());
        return None;
    }
    Some(Arc::new(Engine::load(&path, &EngineOptions { n_threads: 2, ..EngineOptions::default() }).unwrap()))
}

fn greedy(prompt: Vec<u32>, n: usize) -> GenerateRequest {
    GenerateRequest { prompt, max_tokens: n, sampling: SamplingParams::greedy(), ignore_eos: true, ..Default::default() }
}

#[test]
fn cached_prefix_reuse_matches_a_fresh_session() {
    let Some(engine) = engine() else { return };
    let a = engine.tokenize("The capital of France is", true, false).unwrap();
    let b = engine.tokenize("The capital of Italy is", true, false).unwrap();
    let shared = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    assert!(shared > 0 && shared < b.len(), "the prompts share a strict prefix");

    let fresh_b = engine.new_session(256).unwrap().generate(&greedy(b.clone(), 8), |_| {}).unwrap();

    let mut session = engine.new_session(256).unwrap();
    session.generate(&greedy(a, 8), |_| {}).unwrap();
    let reused_b = session.generate(&greedy(b.clone(), 8), |_| {}).unwrap();
    assert_eq!(reused_b.timings.prompt_tokens, b.len() - shared, "only the new tail is evaluated");
    assert_eq!(reused_b.tokens, fresh_b.tokens);
    assert_eq!(reused_b.text, fresh_b.text);
    assert_eq!(session.cached_tokens().len(), b.len() + 7);
}

#[test]
fn cancel_handle_stops_generation() {
    let Some(engine) = engine() else { return };
    let cancel = CancelHandle::new();
    let prompt = engine.tokenize("Once upon a time", true, false).unwrap();
    let request = GenerateRequest { cancel: Some(cancel.clone()), ..greedy(prompt, 50) };
    let mut session = engine.new_session(256).unwrap();
    let out = session
        .generate(&request, |step| {
            if step.index == 2 {
                cancel.cancel();
            }
        })
        .unwrap();
    assert_eq!(out.stop_reason, StopReason::Cancelled);
    assert_eq!(out.tokens.len(), 3);
}

#[test]
fn chat_reply_ends_at_end_of_turn() {
    let Some(engine) = engine() else { return };
    let messages = [ChatMessage { role: "user".into(), content: "Say hello.".into() }];
    let text = engine.render_chat(&messages, true).unwrap();
    let prompt = engine.tokenize(&text, true, true).unwrap();
    let request = GenerateRequest { prompt, max_tokens: 200, sampling: SamplingParams::greedy(), ..Default::default() };
    let out = engine.new_session(1024).unwrap().generate(&request, |_| {}).unwrap();
    assert_eq!(out.stop_reason, StopReason::EndOfGeneration, "{:?}", out.text);
    let last = *out.tokens.last().unwrap();
    assert!(engine.tokenizer().is_eog(last));
    assert!(!out.text.contains("<|im_end|>"), "the end-of-turn token is not emitted: {:?}", out.text);
    assert!(!out.text.trim().is_empty());
}
