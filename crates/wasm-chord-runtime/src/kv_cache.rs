//! The key/value cache: per layer, one key row and one value row per position (f16 or Q8_0,
//! as the backend stores them), sized to the requested context. Rolling back (speculative decoding) just moves the length back: rows
//! past it are overwritten by the next forward pass.

use wasm_chord_core::backend::{Backend, BackendError, KvType, Op};

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
    /// A cache of `capacity` positions for layers with the given key and value row widths;
    /// an error saying how much memory it needs when that is more than there is.
    pub(crate) fn new(backend: &B, capacity: usize, widths: &[(usize, usize)]) -> Result<Self, RuntimeError> {
        let ty = backend.kv_type();
        if let Some(&(k, v)) = widths.iter().find(|(k, v)| ty.row_bytes(*k).is_none() || ty.row_bytes(*v).is_none()) {
            return Err(RuntimeError::BadContext {
                n_ctx: capacity,
                reason: format!("a {} cache cannot hold rows of {k} keys and {v} values", ty.name()),
            });
        }
        let bytes = Self::bytes(ty, capacity, widths);
        // A device backend's cache lives in its memory, the CPU's in the host's.
        let available = backend.device_memory().map(|m| m.free).or_else(available_memory);
        let too_large = || RuntimeError::KvCacheTooLarge { n_ctx: capacity, kv_type: ty.name(), bytes, available };
        match (bytes, available) {
            (None, _) => return Err(too_large()),
            (Some(need), Some(have)) if need as u64 > have => return Err(too_large()),
            _ => {}
        }
        let layers = widths
            .iter()
            .map(|&(k, v)| Ok(LayerCache { k: backend.cache(capacity, k)?, v: backend.cache(capacity, v)? }))
            .collect::<Result<_, BackendError>>()
            .map_err(|e| match e {
                BackendError::Other { op: Op::Alloc, .. } => too_large(),
                e => e.into(),
            })?;
        Ok(Self { layers, len: 0, capacity })
    }

    /// Bytes of keys and values for `capacity` positions of layers with these row widths
    /// (`None` when a width is not whole blocks of `ty` or the total overflows).
    pub fn bytes(ty: KvType, capacity: usize, widths: &[(usize, usize)]) -> Option<usize> {
        widths.iter().try_fold(0usize, |acc, &(k, v)| {
            let row = ty.row_bytes(k)?.checked_add(ty.row_bytes(v)?)?;
            acc.checked_add(row.checked_mul(capacity)?)
        })
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

/// Memory the system can still give this process (Linux's MemAvailable), where known.
fn available_memory() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_chord_cpu::{CpuBackend, CpuOptions};

    #[test]
    fn counts_bytes_per_type() {
        let widths = [(64, 64), (128, 32)];
        assert_eq!(KvCache::<CpuBackend>::bytes(KvType::F16, 10, &widths), Some(10 * 2 * (64 + 64 + 128 + 32)));
        assert_eq!(KvCache::<CpuBackend>::bytes(KvType::Q8_0, 10, &widths), Some(10 * 34 * (2 + 2 + 4 + 1)));
        assert_eq!(KvCache::<CpuBackend>::bytes(KvType::Q8_0, 10, &[(48, 64)]), None);
        assert_eq!(KvCache::<CpuBackend>::bytes(KvType::F16, usize::MAX / 2, &widths), None);
    }

    #[test]
    fn too_large_a_cache_says_what_it_needs() {
        for kv_type in KvType::ALL {
            let backend = CpuBackend::new(&CpuOptions { kv_type, ..CpuOptions::default() });
            // 2^40 positions of 1 KiB: more than any machine this runs on.
            let err = KvCache::new(&backend, 1 << 40, &[(256, 256)]).err().expect("too large");
            let msg = err.to_string();
            assert!(matches!(err, RuntimeError::KvCacheTooLarge { .. }), "{msg}");
            assert!(msg.contains(kv_type.name()) && msg.contains("needs") && msg.contains("MiB"), "{msg}");
            let small = KvCache::new(&backend, 16, &[(256, 256)]).expect("small cache");
            assert_eq!(small.capacity(), 16);
        }
        let q8 = CpuBackend::new(&CpuOptions { kv_type: KvType::Q8_0, ..CpuOptions::default() });
        assert!(matches!(KvCache::new(&q8, 16, &[(48, 48)]), Err(RuntimeError::BadContext { .. })));
    }
}
