//! wasm-chord's core: GGUF files, tensor formats, tokenizers and chat templates.
//!
//! Nothing here knows about backends or model graphs; everything here builds for
//! `wasm32-unknown-unknown`.

pub mod error;
pub mod gguf;
pub mod quant;

pub use error::QuantError;
pub use gguf::{GgufError, GgufFile};
pub use quant::TensorType;
