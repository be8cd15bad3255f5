//! wasm-chord's core: GGUF files, tensor formats, tokenizers and chat templates.
//!
//! Nothing here implements a backend or a model graph (the backend trait is defined here); everything here builds for
//! `wasm32-unknown-unknown`.

pub mod backend;
pub mod error;
pub mod gguf;
pub mod hparams;
pub mod quant;

pub use error::QuantError;
pub use gguf::{GgufError, GgufFile};
pub use quant::TensorType;
pub mod tokenizer;
pub mod template;
