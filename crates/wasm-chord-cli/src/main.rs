//! The wasm-chord command-line tool: a thin dispatcher, one module per subcommand.

mod commands;

use clap::{Parser, Subcommand};

/// Run, inspect and convert LLMs stored as GGUF files.
#[derive(Parser)]
#[command(name = "wasm-chord", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(commands::run::Args),
    Chat(commands::chat::Args),
    Bench(commands::bench::Args),
    Info(commands::info::Args),
    Quantize(commands::quantize::Args),
    GenModel(commands::gen_model::Args),
    Tokenize(commands::tokenize::Args),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => commands::run::run(args),
        Command::Chat(args) => commands::chat::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Info(args) => commands::info::run(args),
        Command::Quantize(args) => commands::quantize::run(args),
        Command::GenModel(args) => commands::gen_model::run(args),
        Command::Tokenize(args) => commands::tokenize::run(args),
    }
}
