//! `wasm-chord run`: one prompt, streamed to stdout, or reported as one JSON object with `--json`.
//!
//! Also home of the model and sampling flags that `chat` shares, so they are defined once.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use wasm_chord_runtime::generate::{GenerateOutput, GenerateRequest, Step, Timings};
use wasm_chord_runtime::sampling::SamplingParams;
use wasm_chord_runtime::session::{ChatMessage, Engine, EngineOptions};
use wasm_chord_runtime::{AttentionKind, BackendKind, KvType};

/// The model every command falls back to when `-m` is not given.
pub const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The model cache: `$WASM_CHORD_MODELS`, else `~/.cache/wasm-chord/models`.
pub fn model_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WASM_CHORD_MODELS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache").join("wasm-chord").join("models")
}

/// Which model to load and how big a context to give it.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// GGUF model file [default: SmolLM2-135M-Instruct from the model cache]
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// CPU threads (0 = one per physical core)
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Context size in tokens (0 = the model's training context)
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    /// Attention kernel: standard (llama.cpp's exact order) or flash (tiled) [default: standard
    /// on the CPU, flash on CUDA]
    #[arg(long = "attn")]
    pub attention: Option<AttentionKind>,
    /// KV cache type: f16 or q8_0 (half the memory)
    #[arg(long = "kv-type", default_value = "f16")]
    pub kv_type: KvType,
    /// Backend: cpu, or cuda (the first GPU; needs a build with `--features cuda`)
    #[arg(long, default_value = "cpu")]
    pub backend: BackendKind,
}

impl ModelArgs {
    /// The `-m` path, or the cached default model with instructions when it is missing.
    pub fn model_path(&self) -> Result<PathBuf> {
        if let Some(path) = &self.model {
            return Ok(path.clone());
        }
        let dir = model_cache_dir();
        let path = dir.join(DEFAULT_MODEL);
        if !path.is_file() {
            bail!(
                "no -m given and the default model {} is not in the model cache {}.\n\
                 Fetch it with `scripts/fetch-models.sh` (set WASM_CHORD_MODELS to use another folder), \
                 or pass a GGUF file with -m.",
                DEFAULT_MODEL,
                dir.display()
            );
        }
        Ok(path)
    }

    pub fn load(&self) -> Result<Arc<Engine>> {
        let path = self.model_path()?;
        let opts = EngineOptions { n_threads: self.threads, attention: self.attention, kv_type: self.kv_type, backend: self.backend };
        let engine = Engine::load(&path, &opts).with_context(|| format!("loading {}", path.display()))?;
        Ok(Arc::new(engine))
    }

    /// `-c`, with 0 meaning the model's training context and larger values capped to it.
    pub fn n_ctx(&self, engine: &Engine) -> usize {
        let train = engine.n_ctx_train();
        if self.ctx_size == 0 {
            train
        } else {
            self.ctx_size.min(train)
        }
    }
}

/// Sampling and stopping flags, with llama.cpp's names and defaults.
#[derive(clap::Args, Debug)]
pub struct SamplingArgs {
    /// Temperature (<= 0 = greedy)
    #[arg(long = "temp", default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Top-k sampling (0 = disabled)
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p sampling (1.0 = disabled)
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p sampling (0.0 = disabled)
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalize repeated tokens (1.0 = disabled)
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Last n tokens the penalties consider (0 = disabled, -1 = context size)
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    pub repeat_last_n: i64,
    /// Presence penalty (0.0 = disabled)
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Frequency penalty (0.0 = disabled)
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Modify a token's logit, as llama.cpp: TOKEN_ID(+|-)BIAS, e.g. 15043+1 or 2-inf (repeatable)
    #[arg(long = "logit-bias", value_parser = parse_logit_bias)]
    pub logit_bias: Vec<(u32, f32)>,
    /// RNG seed [default: random]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when the output contains this string; it is not printed (repeatable)
    #[arg(long)]
    pub stop: Vec<String>,
    /// Never stop on an end-of-generation token (masks them, as llama.cpp's --ignore-eos)
    #[arg(long)]
    pub ignore_eos: bool,
}

fn parse_logit_bias(s: &str) -> Result<(u32, f32), String> {
    let split = s.find(['+', '-']).ok_or_else(|| format!("{s:?}: expected TOKEN_ID(+|-)BIAS, e.g. 15043+1"))?;
    let id = s[..split].parse::<u32>().map_err(|e| format!("{s:?}: bad token id: {e}"))?;
    let bias = s[split..].trim_start_matches('+');
    let bias = bias.parse::<f32>().map_err(|e| format!("{s:?}: bad bias: {e}"))?;
    Ok((id, bias))
}

impl SamplingArgs {
    /// The runtime's parameters; a missing seed is drawn from the clock and returned too.
    pub fn params(&self, n_ctx: usize) -> SamplingParams {
        let repeat_last_n = if self.repeat_last_n < 0 { n_ctx } else { self.repeat_last_n as usize };
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logit_bias: self.logit_bias.clone(),
            seed: self.seed.unwrap_or_else(clock_seed),
        }
    }
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// `-n`: a count, or -1 for "until end of generation or a full context".
pub fn max_tokens(n_predict: i64, n_ctx: usize) -> usize {
    if n_predict < 0 {
        n_ctx
    } else {
        n_predict as usize
    }
}

/// Generate text from one prompt.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The prompt
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// Tokens to generate (-1 = until end of generation or a full context)
    #[arg(short = 'n', long = "n-predict", default_value_t = 128, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Wrap the prompt in the model's chat template as a user message
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Print one JSON object instead of streaming text
    #[arg(long)]
    pub json: bool,
    /// Turn special-token text in the prompt (`<|im_start|>`) into those tokens (always on with --chat)
    #[arg(long)]
    pub parse_special: bool,
    /// Report the K highest raw logits of every generated step (with --json)
    #[arg(long, default_value_t = 0)]
    pub top_logits: usize,
    /// Write every generated step's raw logits (little-endian f32, n_vocab per step) to this file
    #[arg(long)]
    pub logits_out: Option<PathBuf>,
}

/// The `--json` report; field names are a contract with scripts outside the repository.
#[derive(Serialize)]
struct RunReport {
    prompt_tokens: usize,
    tokens: Vec<u32>,
    text: String,
    top_logits: Vec<Vec<(u32, f32)>>,
    stop_reason: &'static str,
    timings: TimingsReport,
}

#[derive(Serialize)]
pub struct TimingsReport {
    pub prompt_ms: f64,
    pub gen_ms: f64,
    pub prompt_tok_s: f64,
    pub gen_tok_s: f64,
}

impl From<&Timings> for TimingsReport {
    fn from(t: &Timings) -> Self {
        Self { prompt_ms: t.prompt_ms, gen_ms: t.gen_ms, prompt_tok_s: t.prompt_tok_s(), gen_tok_s: t.gen_tok_s() }
    }
}

/// One line for stderr, in the manner of llama.cpp's timing summary.
pub fn timings_line(t: &Timings) -> String {
    format!(
        "prompt: {} tokens in {:.1} ms ({:.2} tok/s); generation: {} tokens in {:.1} ms ({:.2} tok/s)",
        t.prompt_tokens,
        t.prompt_ms,
        t.prompt_tok_s(),
        t.gen_tokens,
        t.gen_ms,
        t.gen_tok_s()
    )
}

pub fn run(args: Args) -> Result<()> {
    let engine = args.model.load()?;
    let n_ctx = args.model.n_ctx(&engine);
    let prompt = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage { role: "system".into(), content: system.clone() });
        }
        messages.push(ChatMessage { role: "user".into(), content: args.prompt.clone() });
        let text = engine.render_chat(&messages, true)?;
        engine.tokenize(&text, true, true)?
    } else {
        // As `wasm-chord tokenize` does by default: BOS/EOS as the file says, special text as text.
        engine.tokenize(&args.prompt, true, args.parse_special)?
    };
    let request = GenerateRequest {
        prompt,
        max_tokens: max_tokens(args.n_predict, n_ctx),
        sampling: args.sampling.params(n_ctx),
        stop: args.sampling.stop.clone(),
        ignore_eos: args.sampling.ignore_eos,
        top_logits: args.top_logits,
        // Without --logits-out a greedy run may pick its tokens on the GPU.
        logits: args.logits_out.is_some(),
        ..GenerateRequest::default()
    };

    let mut logits_out = match &args.logits_out {
        Some(path) => Some(BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?)),
        None => None,
    };
    let mut top_logits = Vec::new();
    let mut write_error = None;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let json = args.json;
    let mut session = engine.new_session(n_ctx)?;
    let result: GenerateOutput = session.generate(&request, |step: &Step<'_>| {
        if write_error.is_some() {
            return;
        }
        let written = (|| -> std::io::Result<()> {
            if let Some(w) = logits_out.as_mut() {
                for v in step.logits {
                    w.write_all(&v.to_le_bytes())?;
                }
            }
            if !json {
                out.write_all(step.text.as_bytes())?;
                out.flush()?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            write_error = Some(e);
        }
        top_logits.push(step.top_logits.to_vec());
    })?;
    if let Some(e) = write_error {
        return Err(e).context("writing output");
    }
    if let Some(mut w) = logits_out {
        w.flush().context("writing logits")?;
    }

    if json {
        let report = RunReport {
            prompt_tokens: result.prompt_tokens,
            tokens: result.tokens.clone(),
            text: result.text.clone(),
            top_logits,
            stop_reason: result.stop_reason.as_str(),
            timings: TimingsReport::from(&result.timings),
        };
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(out)?;
        eprintln!("{}", timings_line(&result.timings));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logit_bias_flags_parse_as_llama_cpp() {
        assert_eq!(parse_logit_bias("15043+1").unwrap(), (15043, 1.0));
        assert_eq!(parse_logit_bias("15043-0.5").unwrap(), (15043, -0.5));
        assert_eq!(parse_logit_bias("2-inf").unwrap(), (2, f32::NEG_INFINITY));
        assert!(parse_logit_bias("abc+1").is_err());
        assert!(parse_logit_bias("12").is_err());
    }

    #[test]
    fn negative_counts_mean_the_context() {
        assert_eq!(max_tokens(-1, 4096), 4096);
        assert_eq!(max_tokens(7, 4096), 7);
    }
}
