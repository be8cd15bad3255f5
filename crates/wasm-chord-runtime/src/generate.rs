//! Text generation: feeds a prompt through a model, samples one token at a time, streams the
//! decoded text, and stops on a token budget, an end-of-generation token, a stop string, a full
//! context or a cancel request. The CLI, the server and the browser bindings all drive this loop.
//!
//! The loop is written against two small traits, [`Decoder`] (a model with its KV cache) and
//! [`Vocab`] (end-of-generation ids and streaming detokenization), so its stopping rules can be
//! tested with scripted fakes; the engine module implements them for real models.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::sampling::{Candidates, Sampler, SamplingError, SamplingParams};

/// Errors of generation, naming the stage that failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("sampling: {0}")]
    Sampling(#[from] SamplingError),
    #[error("the prompt is empty; generation needs at least one token")]
    EmptyPrompt,
    #[error("prompt of {prompt} tokens does not fit the context of {n_ctx} tokens")]
    PromptTooLong { prompt: usize, n_ctx: usize },
    #[error("token id {id} is outside the vocabulary of {n_vocab} tokens")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("model forward pass failed: {0}")]
    Model(String),
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
    #[error("loading {path}: {message}")]
    Load { path: String, message: String },
}

/// A model bound to its KV cache, as the generation loop sees it.
pub trait Decoder {
    fn n_vocab(&self) -> usize;
    /// The most tokens the cache holds.
    fn n_ctx(&self) -> usize;
    /// Runs `tokens` after the cached ones and returns the logits of the last one (`n_vocab`).
    fn decode(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError>;
    /// Like `decode`, but returns only the most likely next token, where the decoder can find
    /// it without handing over the logits (a GPU). `None`: not supported, nothing was run.
    fn decode_greedy(&mut self, tokens: &[u32]) -> Result<Option<u32>, GenerateError> {
        let _ = tokens;
        Ok(None)
    }
    /// Forgets every cached token from position `n` on.
    fn truncate(&mut self, n: usize);
}

/// What the loop needs from a tokenizer: which ids end generation and how ids become text.
pub trait Vocab {
    /// Per-generation detokenizer state (incomplete UTF-8, leading-space handling).
    type Stream;
    fn is_eog(&self, id: u32) -> bool;
    fn eog_ids(&self) -> Vec<u32>;
    fn stream(&self) -> Self::Stream;
    /// The text that `id` completes; may be empty while a multi-byte character is pending.
    fn push(&self, stream: &mut Self::Stream, id: u32) -> String;
    /// Whatever the stream still holds at the end.
    fn finish(&self, stream: &mut Self::Stream) -> String;
}

/// Asks a running generation to stop after its current step; clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Clears the flag so the handle can serve the next generation.
    pub fn reset(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    /// The shared flag, for callers (signal handlers, JS bindings) that want the raw atomic.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

impl From<Arc<AtomicBool>> for CancelHandle {
    fn from(flag: Arc<AtomicBool>) -> Self {
        Self(flag)
    }
}

/// One generation: the whole token sequence the context should hold, and how to continue it.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// The full prompt. A session that already holds a prefix of it re-evaluates only the rest.
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops when the text contains one of these; the stop string is not emitted.
    pub stop: Vec<String>,
    /// Mask end-of-generation tokens (llama.cpp's `--ignore-eos`: a -inf logit bias on each).
    pub ignore_eos: bool,
    /// How many of each step's highest raw logits to report with the step.
    pub top_logits: usize,
    /// Prompt tokens evaluated per forward pass.
    pub n_batch: usize,
    pub cancel: Option<CancelHandle>,
    /// Whether each [`Step`] carries the logits. Without them (and without `top_logits`), a
    /// greedy generation with no penalties or biases takes the argmax where the logits are.
    pub logits: bool,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            prompt: Vec::new(),
            max_tokens: 128,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            ignore_eos: false,
            top_logits: 0,
            n_batch: 512,
            cancel: None,
            logits: true,
        }
    }
}

/// One generated token, handed to the caller as soon as it is sampled.
#[derive(Debug)]
pub struct Step<'a> {
    /// 0 for the first generated token.
    pub index: usize,
    pub token: u32,
    /// Text this token releases; empty while a character or a possible stop string is pending.
    pub text: &'a str,
    /// The model's raw next-token logits this token was sampled from (`n_vocab`); empty when
    /// the request did not ask for them and the token was picked on the device.
    pub logits: &'a [f32],
    /// The `top_logits` highest raw logits, highest first.
    pub top_logits: &'a [(u32, f32)],
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    MaxTokens,
    /// The model produced an end-of-generation token (it is the last of `tokens`).
    EndOfGeneration,
    StopString,
    Cancelled,
    ContextFull,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxTokens => "max_tokens",
            Self::EndOfGeneration => "eog",
            Self::StopString => "stop_string",
            Self::Cancelled => "cancelled",
            Self::ContextFull => "context_full",
        }
    }
}

/// Where the time went, in llama.cpp's terms: prompt = the batched pass over the new prompt
/// tokens; generation = the one-token passes over generated tokens fed back.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// Prompt tokens actually evaluated (a session's cached prefix is not).
    pub prompt_tokens: usize,
    pub prompt_ms: f64,
    /// One-token forward passes after the prompt.
    pub gen_tokens: usize,
    pub gen_ms: f64,
}

fn per_second(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

impl Timings {
    pub fn prompt_tok_s(&self) -> f64 {
        per_second(self.prompt_tokens, self.prompt_ms)
    }

    pub fn gen_tok_s(&self) -> f64 {
        per_second(self.gen_tokens, self.gen_ms)
    }
}

/// What a generation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOutput {
    /// Length of the request's prompt.
    pub prompt_tokens: usize,
    /// Every sampled token, including a final end-of-generation token and the tokens of a stop string.
    pub tokens: Vec<u32>,
    /// The emitted text: no end-of-generation token, no stop string.
    pub text: String,
    pub stop_reason: StopReason,
    pub timings: Timings,
}

/// Holds back text that could be the start of a stop string until it is known not to be.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        Self { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), pending: String::new() }
    }

    /// Adds decoded text; returns the text now safe to emit and whether a stop string completed
    /// (then the returned text is everything before it).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        let earliest = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min();
        if let Some(at) = earliest {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Keep the longest tail of `pending` that some stop string starts with.
        let hold_from = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.pending.len());
        let out = self.pending[..hold_from].to_string();
        self.pending.replace_range(..hold_from, "");
        (out, false)
    }

    /// The held-back text, once generation ends without a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// The `k` highest logits as (id, logit), highest first.
pub fn top_logits(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut c = Candidates::from_logits(logits);
    c.top_k(k);
    c.items.iter().map(|c| (c.id, c.logit)).collect()
}

fn now_ms() -> f64 {
    // wasm32-unknown-unknown has no clock in std; the browser bindings time on the JS side.
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
    }
    #[cfg(target_arch = "wasm32")]
    {
        0.0
    }
}

/// What a forward pass handed back: the logits, or the greedy token picked on the device.
enum Next {
    Logits(Vec<f32>),
    Token(u32),
}

impl Next {
    fn decode<D: Decoder>(decoder: &mut D, tokens: &[u32], on_device: bool) -> Result<Self, GenerateError> {
        if on_device {
            if let Some(token) = decoder.decode_greedy(tokens)? {
                return Ok(Next::Token(token));
            }
        }
        Ok(Next::Logits(decoder.decode(tokens)?))
    }
}

/// Runs one generation. `cached` lists the tokens the decoder's cache holds and is kept in step
/// with it: the longest common prefix with the prompt is reused, the rest is evaluated.
pub fn generate<D: Decoder, V: Vocab>(
    decoder: &mut D,
    vocab: &V,
    cached: &mut Vec<u32>,
    request: &GenerateRequest,
    mut on_step: impl FnMut(&Step<'_>),
) -> Result<GenerateOutput, GenerateError> {
    let n_vocab = decoder.n_vocab();
    let n_ctx = decoder.n_ctx();
    let prompt = &request.prompt;
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if prompt.len() > n_ctx {
        return Err(GenerateError::PromptTooLong { prompt: prompt.len(), n_ctx });
    }
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= n_vocab) {
        return Err(GenerateError::TokenOutOfRange { id, n_vocab });
    }

    let mut params = request.sampling.clone();
    if request.ignore_eos {
        params.logit_bias.extend(vocab.eog_ids().into_iter().map(|id| (id, f32::NEG_INFINITY)));
    }
    // Greedy with nothing that reshapes the logits: the decoder may take the argmax itself.
    let plain_greedy = params.is_greedy()
        && params.logit_bias.is_empty()
        && params.repeat_penalty == 1.0
        && params.frequency_penalty == 0.0
        && params.presence_penalty == 0.0;
    let on_device = plain_greedy && !request.logits && request.top_logits == 0;
    let mut sampler = Sampler::new(params, n_vocab)?;
    // The penalties see the prompt too, as llama.cpp's completion tool feeds it to the sampler.
    for &id in prompt {
        sampler.accept(id);
    }

    // Reuse the cached prefix, but always evaluate at least one token to get logits.
    let mut keep = cached.iter().zip(prompt).take_while(|(a, b)| a == b).count();
    keep = keep.min(prompt.len() - 1);
    decoder.truncate(keep);
    cached.truncate(keep);

    let cancelled = || request.cancel.as_ref().is_some_and(CancelHandle::is_cancelled);
    let mut timings = Timings { prompt_tokens: prompt.len() - keep, ..Timings::default() };
    let mut output = GenerateOutput {
        prompt_tokens: prompt.len(),
        tokens: Vec::new(),
        text: String::new(),
        stop_reason: StopReason::MaxTokens,
        timings,
    };

    let t0 = now_ms();
    let mut next = Next::Logits(Vec::new());
    for chunk in prompt[keep..].chunks(request.n_batch.max(1)) {
        if cancelled() {
            output.stop_reason = StopReason::Cancelled;
            output.timings.prompt_ms = now_ms() - t0;
            return Ok(output);
        }
        next = Next::decode(decoder, chunk, on_device)?;
        cached.extend_from_slice(chunk);
    }
    timings.prompt_ms = now_ms() - t0;

    let mut stream = vocab.stream();
    let mut stops = StopMatcher::new(&request.stop);
    let t1 = now_ms();
    let mut stop_reason = StopReason::MaxTokens;
    for index in 0..request.max_tokens {
        let (token, logits) = match &next {
            Next::Logits(logits) => {
                if logits.len() != n_vocab {
                    return Err(GenerateError::Model(format!("forward returned {} logits, expected {n_vocab}", logits.len())));
                }
                (sampler.sample(logits)?, logits.as_slice())
            }
            Next::Token(token) if (*token as usize) < n_vocab => (*token, &[][..]),
            Next::Token(token) => return Err(GenerateError::TokenOutOfRange { id: *token, n_vocab }),
        };
        sampler.accept(token);
        output.tokens.push(token);
        let top = top_logits(logits, request.top_logits);

        let eog = !request.ignore_eos && vocab.is_eog(token);
        let (mut text, hit_stop) = if eog { (String::new(), false) } else { stops.push(&vocab.push(&mut stream, token)) };
        let mut end = if eog {
            Some(StopReason::EndOfGeneration)
        } else if hit_stop {
            Some(StopReason::StopString)
        } else if index + 1 == request.max_tokens {
            Some(StopReason::MaxTokens)
        } else if cached.len() >= n_ctx {
            Some(StopReason::ContextFull)
        } else {
            None
        };
        if end.is_some() && !hit_stop {
            // The last step carries whatever the detokenizer and the stop matcher still hold,
            // unless that completes a stop string after all.
            let (tail, tail_stop) = stops.push(&vocab.finish(&mut stream));
            text.push_str(&tail);
            if tail_stop {
                end = Some(StopReason::StopString);
            } else {
                text.push_str(&stops.finish());
            }
        }
        output.text.push_str(&text);
        on_step(&Step { index, token, text: &text, logits, top_logits: &top });
        if let Some(reason) = end {
            stop_reason = reason;
            break;
        }
        // Checked after the step so a callback can cancel; text still held back is dropped.
        if cancelled() {
            stop_reason = StopReason::Cancelled;
            break;
        }
        next = Next::decode(decoder, &[token], on_device)?;
        cached.push(token);
        timings.gen_tokens += 1;
    }
    timings.gen_ms = now_ms() - t1;

    output.stop_reason = stop_reason;
    output.timings = timings;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder that wants token `script[pos]` after `pos` cached tokens (logit 10, others 0).
    struct ScriptedDecoder {
        n_vocab: usize,
        n_ctx: usize,
        script: Vec<u32>,
        len: usize,
        evaluated: Vec<Vec<u32>>,
    }

    impl ScriptedDecoder {
        fn new(script: &[u32]) -> Self {
            Self { n_vocab: PIECES.len(), n_ctx: 64, script: script.to_vec(), len: 0, evaluated: Vec::new() }
        }
    }

    impl Decoder for ScriptedDecoder {
        fn n_vocab(&self) -> usize {
            self.n_vocab
        }
        fn n_ctx(&self) -> usize {
            self.n_ctx
        }
        fn decode(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
            self.len += tokens.len();
            assert!(self.len <= self.n_ctx, "decoded past the context");
            self.evaluated.push(tokens.to_vec());
            let mut logits = vec![0.0; self.n_vocab];
            let want = self.script.get(self.len).copied().unwrap_or(1);
            logits[want as usize] = 10.0;
            Ok(logits)
        }
        fn truncate(&mut self, n: usize) {
            self.len = self.len.min(n);
        }
    }

    const PIECES: [&str; 8] = ["<s>", "Hel", "lo", " wor", "ld", "!", "</s>", "é"];
    const EOS: u32 = 6;

    struct PieceVocab;

    impl Vocab for PieceVocab {
        type Stream = ();
        fn is_eog(&self, id: u32) -> bool {
            id == EOS
        }
        fn eog_ids(&self) -> Vec<u32> {
            vec![EOS]
        }
        fn stream(&self) {}
        fn push(&self, _: &mut (), id: u32) -> String {
            PIECES[id as usize].to_string()
        }
        fn finish(&self, _: &mut ()) -> String {
            String::new()
        }
    }

    /// Prompt [<s>] then "Hello world!</s>" then "Hel" forever.
    const SCRIPT: [u32; 7] = [0, 1, 2, 3, 4, 5, EOS];

    fn request(max_tokens: usize) -> GenerateRequest {
        GenerateRequest { prompt: vec![0], max_tokens, sampling: SamplingParams::greedy(), ..Default::default() }
    }

    fn run(req: &GenerateRequest) -> (GenerateOutput, Vec<String>, ScriptedDecoder) {
        let mut dec = ScriptedDecoder::new(&SCRIPT);
        let mut texts = Vec::new();
        let out = generate(&mut dec, &PieceVocab, &mut Vec::new(), req, |s| texts.push(s.text.to_string())).unwrap();
        (out, texts, dec)
    }

    #[test]
    fn stops_at_end_of_generation_without_emitting_it() {
        let (out, texts, _) = run(&request(20));
        assert_eq!(out.tokens, vec![1, 2, 3, 4, 5, EOS]);
        assert_eq!(out.text, "Hello world!");
        assert_eq!(texts.concat(), out.text);
        assert_eq!(out.stop_reason, StopReason::EndOfGeneration);
        assert_eq!(out.prompt_tokens, 1);
    }

    #[test]
    fn ignore_eos_generates_exactly_max_tokens() {
        let req = GenerateRequest { ignore_eos: true, ..request(9) };
        let (out, _, dec) = run(&req);
        assert_eq!(out.tokens.len(), 9);
        assert!(!out.tokens.contains(&EOS));
        assert_eq!(out.stop_reason, StopReason::MaxTokens);
        // The last token is sampled but never fed back: prompt + 8 one-token passes.
        assert_eq!(dec.evaluated.len(), 9);
        assert_eq!(out.timings.gen_tokens, 8);
        assert_eq!(out.timings.prompt_tokens, 1);
    }

    #[test]
    fn max_tokens_bounds_output() {
        let (out, texts, _) = run(&request(3));
        assert_eq!(out.tokens, vec![1, 2, 3]);
        assert_eq!(out.text, "Hello wor");
        assert_eq!(texts.len(), 3);
        assert_eq!(out.stop_reason, StopReason::MaxTokens);
    }

    #[test]
    fn stop_string_split_across_tokens_is_never_emitted() {
        let req = GenerateRequest { stop: vec!["lo wo".into()], ..request(20) };
        let (out, texts, _) = run(&req);
        assert_eq!(out.stop_reason, StopReason::StopString);
        assert_eq!(out.text, "Hel");
        assert_eq!(texts.concat(), "Hel");
        assert_eq!(out.tokens, vec![1, 2, 3], "the tokens that completed the stop string are counted");
        // "l" and then "lo" could start the stop string, so they were held back.
        assert_eq!(texts, vec!["He", "l", ""]);
    }

    #[test]
    fn held_back_prefix_is_released_when_it_does_not_match() {
        let req = GenerateRequest { stop: vec!["lox".into(), "d?".into()], ..request(20) };
        let (out, texts, _) = run(&req);
        assert_eq!(out.text, "Hello world!");
        assert_eq!(texts, vec!["He", "l", "lo wor", "l", "d!", ""]);
        assert_eq!(out.stop_reason, StopReason::EndOfGeneration);
    }

    #[test]
    fn held_back_prefix_is_flushed_at_max_tokens() {
        let req = GenerateRequest { stop: vec!["lox".into()], ..request(2) };
        let (out, texts, _) = run(&req);
        assert_eq!(out.text, "Hello");
        assert_eq!(texts.concat(), "Hello");
    }

    #[test]
    fn cancel_from_the_callback_stops_after_that_step() {
        let cancel = CancelHandle::new();
        let req = GenerateRequest { cancel: Some(cancel.clone()), ignore_eos: true, ..request(20) };
        let mut dec = ScriptedDecoder::new(&SCRIPT);
        let out = generate(&mut dec, &PieceVocab, &mut Vec::new(), &req, |s| {
            if s.index == 1 {
                cancel.cancel();
            }
        })
        .unwrap();
        assert_eq!(out.tokens.len(), 2);
        assert_eq!(out.stop_reason, StopReason::Cancelled);

        let out = generate(&mut dec, &PieceVocab, &mut Vec::new(), &req, |_| {}).unwrap();
        assert!(out.tokens.is_empty(), "a still-set flag cancels before any token");
        assert_eq!(out.stop_reason, StopReason::Cancelled);
        cancel.reset();
        assert!(!cancel.is_cancelled());
    }

    #[test]
    fn session_reuses_the_cached_prefix() {
        let mut dec = ScriptedDecoder::new(&SCRIPT);
        let mut cached = Vec::new();
        let first = generate(&mut dec, &PieceVocab, &mut cached, &request(3), |_| {}).unwrap();
        assert_eq!(cached, vec![0, 1, 2], "the last sampled token is not evaluated");
        // The next turn's prompt extends the conversation: only the new tail is evaluated.
        let mut prompt = vec![0];
        prompt.extend(&first.tokens);
        prompt.push(4);
        let req = GenerateRequest { prompt, ..request(2) };
        dec.evaluated.clear();
        let second = generate(&mut dec, &PieceVocab, &mut cached, &req, |_| {}).unwrap();
        assert_eq!(second.timings.prompt_tokens, 2);
        assert_eq!(dec.evaluated[0], vec![3, 4]);
        assert_eq!(second.tokens, vec![5, EOS]);

        // A prompt fully in the cache still re-evaluates its last token to get logits.
        let req = GenerateRequest { prompt: vec![0, 1], ..request(1) };
        dec.evaluated.clear();
        let third = generate(&mut dec, &PieceVocab, &mut cached, &req, |_| {}).unwrap();
        assert_eq!(dec.evaluated[0], vec![1]);
        assert_eq!(third.tokens, vec![2]);
    }

    #[test]
    fn stops_when_the_context_is_full() {
        let mut dec = ScriptedDecoder::new(&SCRIPT);
        dec.n_ctx = 4;
        let req = GenerateRequest { ignore_eos: true, ..request(20) };
        let out = generate(&mut dec, &PieceVocab, &mut Vec::new(), &req, |_| {}).unwrap();
        assert_eq!(out.stop_reason, StopReason::ContextFull);
        assert_eq!(out.tokens.len(), 4, "3 evaluated generated tokens + the final sampled one");
    }

    #[test]
    fn reports_raw_logits_and_top_logits_per_step() {
        let req = GenerateRequest { top_logits: 2, ..request(2) };
        let mut dec = ScriptedDecoder::new(&SCRIPT);
        let mut steps = Vec::new();
        generate(&mut dec, &PieceVocab, &mut Vec::new(), &req, |s| {
            steps.push((s.logits.to_vec(), s.top_logits.to_vec()))
        })
        .unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].0.len(), PIECES.len());
        assert_eq!(steps[0].1, vec![(1, 10.0), (0, 0.0)]);
        assert_eq!(steps[1].1, vec![(2, 10.0), (0, 0.0)]);
    }

    #[test]
    fn rejects_bad_prompts() {
        let mut dec = ScriptedDecoder::new(&SCRIPT);
        let bad = |req: GenerateRequest, dec: &mut ScriptedDecoder| generate(dec, &PieceVocab, &mut Vec::new(), &req, |_| {}).unwrap_err();
        assert!(matches!(bad(GenerateRequest { prompt: vec![], ..request(1) }, &mut dec), GenerateError::EmptyPrompt));
        assert!(matches!(bad(GenerateRequest { prompt: vec![99], ..request(1) }, &mut dec), GenerateError::TokenOutOfRange { id: 99, .. }));
        assert!(matches!(bad(GenerateRequest { prompt: vec![0; 65], ..request(1) }, &mut dec), GenerateError::PromptTooLong { prompt: 65, n_ctx: 64 }));
    }

    #[test]
    fn stop_matcher_respects_char_boundaries_and_earliest_match() {
        let mut m = StopMatcher::new(&["éx".to_string(), "b".to_string(), String::new()]);
        assert_eq!(m.push("aé"), ("a".to_string(), false));
        assert_eq!(m.push("éé"), ("éé".to_string(), false));
        assert_eq!(m.push("x"), (String::new(), true));
        let mut m = StopMatcher::new(&["cd".to_string(), "b".to_string()]);
        assert_eq!(m.push("abcd"), ("a".to_string(), true), "earliest stop string wins");
        let mut m = StopMatcher::new(&[]);
        assert_eq!(m.push("abc"), ("abc".to_string(), false), "no stop strings hold nothing back");
    }
}
