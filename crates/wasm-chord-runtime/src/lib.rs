//! Model graphs, KV cache, sampling and generation.
