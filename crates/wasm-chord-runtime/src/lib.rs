//! Model graphs, KV cache, sampling and generation.

pub mod generate;
pub mod sampling;
