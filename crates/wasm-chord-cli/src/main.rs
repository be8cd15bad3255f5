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
    Tokenize(commands::tokenize::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Tokenize(args) => commands::tokenize::run(args),
    }
}
