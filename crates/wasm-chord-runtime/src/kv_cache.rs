//! The key/value cache: per layer, one f16 key row and one value row per position, sized to
//! the requested context. Rolling back (speculative decoding) just moves the length back: rows
//! past it are overwritten by the next forward pass.

use wasm_chord_core::backend::Backend;

use crate::error::RuntimeError;

/// Cached keys and values of every layer for the tokens seen so far.
pub struct KvCache<B: Backend> {
    pub(crate) layers: Vec<LayerCache<B>>,
    len: usize,
    capacity: usize,
}

/// One layer's keys `[capacity, n_head_kv * head_dim_k]` and values `[capacity, n_head_kv * head_dim_v]`.
pub struct LayerCache<B: Backend> {
    pub k: B::Cache,
    pub v: B::Cache,
}

impl<B: Backend> KvCache<B> {
    /// A cache of `capacity` positions for layers with the given key and value row widths.
    pub(crate) fn new(backend: &B, capacity: usize, widths: &[(usize, usize)]) -> Result<Self, RuntimeError> {
        let layers = widths
            .iter()
            .map(|&(k, v)| Ok(LayerCache { k: backend.cache(capacity, k)?, v: backend.cache(capacity, v)? }))
            .collect::<Result<_, RuntimeError>>()?;
        Ok(Self { layers, len: 0, capacity })
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position from `n` on (no-op when `n >= len`).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub(crate) fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Checks that `n` more tokens fit.
    pub(crate) fn check_room(&self, n: usize) -> Result<(), RuntimeError> {
        if self.len + n > self.capacity {
            return Err(RuntimeError::ContextOverflow { len: self.len, new: n, capacity: self.capacity });
        }
        Ok(())
    }

    /// Records `n` positions written by a forward pass.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
