//! Shared helpers of the GGUF tests: where the real models are.

use std::path::PathBuf;

/// The real model `name` from `$WASM_CHORD_MODELS` or `~/.cache/wasm-chord/models`, or `None`
/// (with a note on stderr) when it has not been fetched (`scripts/fetch-models.sh`); a missing
/// model fails the test when `WASM_CHORD_REQUIRE_MODELS` is set, as CI sets it.
pub fn model_path(name: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("WASM_CHORD_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/wasm-chord/models"),
    };
    let path = dir.join(name);
    if path.is_file() {
        Some(path)
    } else if std::env::var_os("WASM_CHORD_REQUIRE_MODELS").is_some() {
        panic!("{} not found and WASM_CHORD_REQUIRE_MODELS is set (run scripts/fetch-models.sh)", path.display());
    } else {
        eprintln!("skipping: {} not found (run scripts/fetch-models.sh)", path.display());
        None
    }
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
