//! `wasm-chord bench`: prompt-processing and generation throughput, measured as llama-bench does.
//!
//! pp: one batch of `-p` random tokens on an empty cache; tg: `-n` single-token passes from an
//! empty cache. Each test runs once to warm up, then `-r` times; the report is the mean and the
//! sample standard deviation of tokens per second.

use std::time::Instant;

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use wasm_chord_runtime::Outputs;

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
    /// Repetitions of each test after the warm-up
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Backend to run on
    #[arg(long, default_value = "cpu")]
    pub backend: String,
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
    threads: usize,
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

pub fn run(args: Args) -> Result<()> {
    if args.backend != "cpu" {
        bail!("backend {:?} is not available; this build has: cpu", args.backend);
    }
    if args.reps == 0 {
        bail!("-r must be at least 1");
    }
    let path = args.model.model_path()?;
    let engine = args.model.load()?;
    let model = engine.model();
    let n_vocab = model.n_vocab() as u32;
    let n_ctx = (args.n_prompt + args.n_gen).max(1);
    if n_ctx > engine.n_ctx_train() {
        bail!("pp {} + tg {} exceeds the model's context of {}", args.n_prompt, args.n_gen, engine.n_ctx_train());
    }
    let mut kv = model.new_kv_cache(n_ctx)?;
    // Random tokens as llama-bench uses, but seeded so runs are comparable.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let tokenizer = engine.tokenizer();
    let bos = if tokenizer.add_bos() { tokenizer.bos() } else { None };

    let mut pp = |n: usize| -> Result<f64> {
        let tokens: Vec<u32> = (0..n)
            .map(|i| match (i, bos) {
                (0, Some(b)) => b,
                _ => rng.gen_range(0..n_vocab),
            })
            .collect();
        kv.truncate(0);
        let t = Instant::now();
        model.forward(&mut kv, &tokens, Outputs::Last)?;
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
        kv.truncate(0);
        let mut token = bos.unwrap_or_else(|| rng.gen_range(0..n_vocab));
        let t = Instant::now();
        for _ in 0..n {
            model.forward(&mut kv, &[token], Outputs::Last)?;
            token = rng.gen_range(0..n_vocab);
        }
        Ok(n as f64 / t.elapsed().as_secs_f64())
    };
    let mut tg_rates = Vec::new();
    if args.n_gen > 0 {
        tg(1)?;
        for _ in 0..args.reps {
            tg_rates.push(tg(args.n_gen)?);
        }
    }

    let (pp_mean, pp_sd) = mean_sd(&pp_rates);
    let (tg_mean, tg_sd) = mean_sd(&tg_rates);
    let report = BenchReport {
        model: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        backend: args.backend.clone(),
        threads: model.backend().n_threads(),
        pp: TestReport { n: args.n_prompt, tok_s: pp_mean, sd: pp_sd },
        tg: TestReport { n: args.n_gen, tok_s: tg_mean, sd: tg_sd },
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("| model | backend | threads | test | t/s |");
        println!("| --- | --- | ---: | ---: | ---: |");
        for (name, t) in [("pp", &report.pp), ("tg", &report.tg)] {
            if t.n > 0 {
                println!(
                    "| {} | {} | {} | {}{} | {:.2} ± {:.2} |",
                    report.model, report.backend, report.threads, name, t.n, t.tok_s, t.sd
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
