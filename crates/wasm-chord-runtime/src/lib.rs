//! Model graphs, KV cache, sampling and generation.

pub mod sampling;
