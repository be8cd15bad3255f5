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
    #[error(
        "a {kv_type} KV cache of {n_ctx} positions needs {} but {}: use a smaller context (-c) or a smaller cache type (q8_0)",
        .bytes.map_or("more than the address space".to_string(), mib),
        .available.map_or("it could not be allocated".to_string(), |a| format!("only {} is available", mib(a as usize)))
    )]
    KvCacheTooLarge { n_ctx: usize, kv_type: &'static str, bytes: Option<usize>, available: Option<u64> },
    #[error(
        "the model's weights need {} on the {backend} device but only {} of its {} are free: use a smaller model or quantization, or another backend",
        mib(*.needed as usize), mib(*.free as usize), mib(*.total as usize)
    )]
    ModelTooLarge { backend: &'static str, needed: u64, free: u64, total: u64 },
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

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}
