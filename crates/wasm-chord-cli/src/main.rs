//! The wasm-chord command-line tool.

fn main() {}
