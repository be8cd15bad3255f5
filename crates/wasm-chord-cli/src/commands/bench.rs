//! `wasm-chord bench`: prompt-processing and generation throughput, measured as llama-bench does.
//!
//! pp: one batch of `-p` random tokens; tg: `-n` single-token passes, each picking the greedy
//! next token where the logits are (on a GPU, 4 bytes come back). With `-d N` (llama-bench's
//! depth) both run after N random tokens already fill the cache; the depth is evaluated once
//! (untimed) and every repetition restarts from it. Each test runs once to warm up, then `-r`
//! times; the report is the mean and the sample standard deviation of tokens per second.

use std::time::Instant;

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::run::ModelArgs;

/// Measure prompt processing (pp) and token generation (tg) speed.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens processed as one batch (0 skips pp)
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Tokens generated one at a time (0 skips tg)
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Tokens already in the cache before each test (llama-bench's depth)
    #[arg(short = 'd', long = "depth", default_value_t = 0)]
    pub depth: usize,
    /// Repetitions of each test after the warm-up
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct TestReport {
    n: usize,
    tok_s: f64,
    sd: f64,
}

#[derive(Serialize)]
struct BenchReport {
    model: String,
    backend: String,
    /// The GPU's name on a GPU backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    threads: usize,
    depth: usize,
    /// Bytes of weights one decoded token reads: every tensor but the embedding table (one row
    /// of it), which is also the output matrix when the file has no `output.weight`.
    weight_bytes_per_token: u64,
    /// Bytes of keys and values one position adds to the cache, over all layers (a decoded
    /// token at depth d reads d + 1 of them).
    kv_bytes_per_position: u64,
    pp: TestReport,
    tg: TestReport,
}

/// Mean and sample standard deviation (n - 1), as llama-bench reports them.
fn mean_sd(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Bytes of weights a single-token pass reads from the file at `path`.
fn weight_bytes_per_token(path: &std::path::Path) -> Result<u64> {
    let file = wasm_chord_core::gguf::GgufFile::open(path)?;
    let tied = file.tensor("output.weight").is_none();
    Ok(file
        .tensors()
        .iter()
        .filter(|t| tied || t.name != "token_embd.weight")
        .map(|t| file.tensor_data(t).len() as u64)
        .sum())
}

/// Tokens of the depth fill and of one test are evaluated in batches of at most this many.
const DEPTH_BATCH: usize = 512;

pub fn run(args: Args) -> Result<()> {
    if args.reps == 0 {
        bail!("-r must be at least 1");
    }
    let path = args.model.model_path()?;
    // Read before loading: parsing the header again (the vocabulary) next to a loaded model
    // would be counted in its peak memory.
    let weight_bytes_per_token = weight_bytes_per_token(&path)?;
    let engine = args.model.load()?;
    let n_vocab = engine.n_vocab() as u32;
    let n_ctx = (args.depth + args.n_prompt.max(args.n_gen)).max(1);
    if n_ctx > engine.n_ctx_train() {
        bail!("depth {} + max(pp {}, tg {}) exceeds the model's context of {}", args.depth, args.n_prompt, args.n_gen, engine.n_ctx_train());
    }
    let mut session = engine.new_session(n_ctx)?;
    // Random tokens as llama-bench uses, but seeded so runs are comparable.
    let tokenizer = engine.tokenizer();
    let bos = if tokenizer.add_bos() { tokenizer.bos() } else { None };
    let random = |rng: &mut ChaCha8Rng, n: usize, first: bool| -> Vec<u32> {
        (0..n)
            .map(|i| match (i, bos) {
                (0, Some(b)) if first => b,
                _ => rng.gen_range(0..n_vocab),
            })
            .collect()
    };

    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let depth_tokens = random(&mut rng, args.depth, true);
    for chunk in depth_tokens.chunks(DEPTH_BATCH) {
        session.evaluate(chunk)?;
    }
    let depth = args.depth;

    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut pp = |n: usize| -> Result<f64> {
        let tokens = random(&mut rng, n, depth == 0);
        session.truncate(depth);
        let t = Instant::now();
        session.evaluate(&tokens)?;
        Ok(n as f64 / t.elapsed().as_secs_f64())
    };
    let mut pp_rates = Vec::new();
    if args.n_prompt > 0 {
        pp(args.n_prompt)?;
        for _ in 0..args.reps {
            pp_rates.push(pp(args.n_prompt)?);
        }
    }

    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut tg = |n: usize| -> Result<f64> {
        session.truncate(depth);
        let mut token = match bos {
            Some(b) if depth == 0 => b,
            _ => rng.gen_range(0..n_vocab),
        };
        let t = Instant::now();
        for _ in 0..n {
            session.evaluate_greedy(&[token])?;
            token = rng.gen_range(0..n_vocab);
        }
        Ok(n as f64 / t.elapsed().as_secs_f64())
    };
    let mut tg_rates = Vec::new();
    if args.n_gen > 0 {
        // Warm-up long enough for a GPU backend to record its decode step (two tokens).
        tg(args.n_gen.min(4))?;
        for _ in 0..args.reps {
            tg_rates.push(tg(args.n_gen)?);
        }
    }

    let (pp_mean, pp_sd) = mean_sd(&pp_rates);
    let (tg_mean, tg_sd) = mean_sd(&tg_rates);
    let report = BenchReport {
        model: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        backend: engine.backend().name().to_string(),
        device: engine.device_name(),
        threads: engine.n_threads(),
        depth,
        weight_bytes_per_token,
        kv_bytes_per_position: {
            let hp = engine.hparams();
            let kv = args.model.kv_type;
            let row = kv.row_bytes(hp.n_embd_k()).unwrap_or(0) + kv.row_bytes(hp.n_embd_v()).unwrap_or(0);
            (row * hp.n_layer) as u64
        },
        pp: TestReport { n: args.n_prompt, tok_s: pp_mean, sd: pp_sd },
        tg: TestReport { n: args.n_gen, tok_s: tg_mean, sd: tg_sd },
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("| model | backend | threads | test | t/s |");
        println!("| --- | --- | ---: | ---: | ---: |");
        let at = if depth > 0 { format!(" @ d{depth}") } else { String::new() };
        for (name, t) in [("pp", &report.pp), ("tg", &report.tg)] {
            if t.n > 0 {
                println!(
                    "| {} | {} | {} | {}{}{} | {:.2} ± {:.2} |",
                    report.model, report.backend, report.threads, name, t.n, at, t.tok_s, t.sd
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_standard_deviation() {
        let (mean, sd) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(mean, 5.0);
        assert!((sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_sd(&[3.0]), (3.0, 0.0));
    }
}
