//! Work splitting: a rayon pool of the configured size on native targets, plain loops on
//! wasm32 (no threads there yet).

/// Runs chunked work on the backend's threads.
pub struct Threads {
    #[cfg(not(target_arch = "wasm32"))]
    pool: Option<rayon::ThreadPool>,
}

impl Threads {
    /// `n == 0` picks the number of physical cores; `n == 1` runs everything on the caller.
    pub fn new(n: usize) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let n = if n == 0 { default_threads() } else { n };
            // A pool that fails to start (no threads allowed) degrades to the calling thread.
            let pool = (n > 1).then(|| rayon::ThreadPoolBuilder::new().num_threads(n).build().ok()).flatten();
            Self { pool }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = n;
            Self {}
        }
    }

    /// The number of threads work is split over.
    pub fn count(&self) -> usize {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(pool) = &self.pool {
            return pool.current_num_threads();
        }
        1
    }

    /// Calls `f(i, chunk)` for each `chunk_len`-sized chunk `i` of `data`, in parallel.
    pub fn for_each_chunk<T: Send>(&self, data: &mut [T], chunk_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
        let chunk_len = chunk_len.max(1);
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(pool) = &self.pool {
            use rayon::prelude::*;
            pool.install(|| data.par_chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, c)));
            return;
        }
        data.chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Physical cores where the platform says, else logical ones.
#[cfg(not(target_arch = "wasm32"))]
fn default_threads() -> usize {
    physical_cores().unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// Counts distinct (physical id, core id) pairs in /proc/cpuinfo: hyper-threads share a core
/// and only slow each other down in these memory-bound kernels.
#[cfg(not(target_arch = "wasm32"))]
fn physical_cores() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut cores = std::collections::HashSet::new();
    let mut physical = "";
    for line in info.lines() {
        let mut parts = line.splitn(2, ':');
        let (key, value) = (parts.next()?.trim(), parts.next().unwrap_or("").trim());
        match key {
            "physical id" => physical = value,
            "core id" => {
                cores.insert((physical.to_string(), value.to_string()));
            }
            _ => {}
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}
