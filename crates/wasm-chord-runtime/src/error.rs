//! Errors of the runtime: loading a model, sizing a cache, running a forward pass.

use wasm_chord_core::backend::BackendError;
use wasm_chord_core::hparams::HParamsError;
use wasm_chord_core::TensorType;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("unknown architecture {arch:?}; supported: {}", .supported.join(", "))]
    UnknownArchitecture { arch: String, supported: Vec<&'static str> },
    #[error(transparent)]
    HParams(#[from] HParamsError),
    #[error("model file: {0}")]
    File(String),
    #[error("tensor {name} is missing")]
    MissingTensor { name: String },
    #[error("tensor {name}: expected shape {expected:?}, found {got:?} (ggml order)")]
    TensorShape { name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("tensor {name}: type {ty} is not supported by the {backend} backend")]
    TensorType { name: String, ty: TensorType, backend: &'static str },
    #[error("token id {token} at index {index} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { token: u32, index: usize, n_vocab: usize },
    #[error("context overflow: {len} cached + {new} new tokens exceed the cache of {capacity}")]
    ContextOverflow { len: usize, new: usize, capacity: usize },
    #[error("a context of {n_ctx} tokens is not possible: {reason}")]
    BadContext { n_ctx: usize, reason: String },
    #[error("output position {index} is outside the {n_tokens} tokens of this batch")]
    BadOutput { index: usize, n_tokens: usize },
    #[error("forward pass over no tokens")]
    EmptyBatch,
    #[error("this cache was made for a different model ({detail})")]
    CacheMismatch { detail: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}
