//! `wasm-chord tokenize`: text to token ids with a GGUF file's tokenizer, as llama.cpp would.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use wasm_chord_core::gguf::GgufFile;
use wasm_chord_core::tokenizer::Tokenizer;

/// Tokenize text with a model's tokenizer.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    #[arg(short, long)]
    model: PathBuf,
    /// Add no BOS/EOS (by default they are added as the file's metadata says).
    #[arg(long)]
    no_special: bool,
    /// Turn special-token text in the input (`<|im_start|>`) into those tokens.
    #[arg(long)]
    parse_special: bool,
    /// Also print each token's text.
    #[arg(long)]
    show_pieces: bool,
    /// Print JSON: {"tokens":[ids]} (and "pieces" with --show-pieces).
    #[arg(long)]
    json: bool,
    /// The text; read from standard input when absent.
    text: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let file = GgufFile::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    let tokenizer = Tokenizer::from_gguf(&file).with_context(|| format!("loading the tokenizer of {}", args.model.display()))?;
    let text = match args.text {
        Some(t) => t,
        None => {
            let mut t = String::new();
            std::io::stdin().read_to_string(&mut t).context("reading the text from standard input")?;
            t
        }
    };
    let ids = tokenizer.encode(&text, !args.no_special, args.parse_special);
    let pieces: Vec<String> =
        ids.iter().map(|&id| String::from_utf8_lossy(tokenizer.token_to_piece(id)).into_owned()).collect();
    if args.json {
        // Written by hand to keep the key order of the documented output: {"tokens":[...]}.
        let mut doc = format!("{{\"tokens\":{}", serde_json::to_string(&ids)?);
        if args.show_pieces {
            doc += &format!(",\"pieces\":{}", serde_json::to_string(&pieces)?);
        }
        println!("{doc}}}");
    } else if args.show_pieces {
        for (id, piece) in ids.iter().zip(&pieces) {
            println!("{id:6} -> {piece:?}");
        }
    } else {
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("[{}]", ids.join(", "));
    }
    Ok(())
}
