//! Work splitting: a persistent pool of worker threads built for many small ops per token
//! (native targets), plain loops on wasm32 (no threads there yet).
//!
//! Decoding one token runs a few hundred ops of a few microseconds each, so what an op costs
//! to hand out matters as much as the op. The pool works as ggml's does: the calling thread
//! publishes the job and bumps a generation counter, workers that spin on that counter start
//! at once (workers idle for longer park and are woken), every thread including the caller
//! takes a share, and the caller spins until the last share is done. Nothing is allocated per
//! op and no thread is created after start-up. Shares are claimed from one atomic counter, so
//! a thread that the OS delays (a shared machine) leaves its chunks to the others.

#[cfg(not(target_arch = "wasm32"))]
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs chunked work on the backend's threads.
pub struct Threads {
    #[cfg(not(target_arch = "wasm32"))]
    pool: Option<pool::Pool>,
}

impl Threads {
    /// `n == 0` picks the number of physical cores; `n == 1` runs everything on the caller.
    pub fn new(n: usize) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let n = if n == 0 { default_threads() } else { n };
            // A pool that fails to start (no threads allowed) degrades to the calling thread.
            Self { pool: if n > 1 { pool::Pool::new(n) } else { None } }
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
            return pool.n_threads();
        }
        1
    }

    /// Calls `f(i)` once for each `i` in `0..n_tasks`, spread over the threads (each task
    /// claimed by exactly one thread; order between tasks unspecified).
    pub fn for_each_task(&self, n_tasks: usize, f: impl Fn(usize) + Sync) {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(pool) = &self.pool {
            if n_tasks > 1 {
                let next = AtomicUsize::new(0);
                // Each thread claims tasks until none is left, so the caller alone finishes
                // the job if no worker turns up.
                pool.run(&|_| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n_tasks {
                        break;
                    }
                    f(i);
                });
                return;
            }
        }
        (0..n_tasks).for_each(f);
    }

    /// Calls `f(i, chunk)` for each `chunk_len`-sized chunk `i` of `data`, in parallel.
    pub fn for_each_chunk<T: Send>(&self, data: &mut [T], chunk_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
        let chunk_len = chunk_len.max(1);
        let (len, base) = (data.len(), SendPtr(data.as_mut_ptr()));
        self.for_each_task(len.div_ceil(chunk_len), |i| {
            let start = i * chunk_len;
            let n = chunk_len.min(len - start);
            // SAFETY: each task index is claimed once, so the chunks handed out are disjoint
            // pieces of `data`, which outlives the call.
            let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
            f(i, chunk);
        });
    }
}

/// A raw pointer that tasks share; each task touches only its own disjoint part.
pub(crate) struct SendPtr<T>(pub *mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: users hand each thread disjoint elements (see the call sites).
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod pool {
    use std::cell::UnsafeCell;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::{JoinHandle, Thread};
    use std::time::{Duration, Instant};

    /// How long an idle worker spins before it parks: longer than the gaps between the ops of
    /// one token, shorter than anything a person would notice as a busy core.
    const SPIN: Duration = Duration::from_micros(300);
    /// How long the caller spins on workers still inside a job before it yields its core.
    const WAIT_SPIN: Duration = Duration::from_micros(50);
    /// `Shared::state`: set once the caller has finished its share (no new worker may join).
    const CLOSED: u64 = 1 << 31;
    /// `Shared::state`: the number of workers inside the job.
    const ACTIVE: u64 = CLOSED - 1;

    /// One job: `f(thread index)` on every thread. Lifetime erased; see [`Pool::run`].
    type Job = *const (dyn Fn(usize) + Sync);

    struct Worker {
        thread: Thread,
        /// Set by the worker just before it parks; whoever clears it unparks the worker.
        sleeping: AtomicBool,
    }

    struct Shared {
        /// Bumped once per job (and once to stop); workers compare it with the last one seen.
        generation: AtomicUsize,
        job: UnsafeCell<Option<Job>>,
        /// The current job's generation tag, whether it is closed to newcomers, and how many
        /// workers are inside it (see [`tag`], [`CLOSED`], [`ACTIVE`]).
        state: AtomicU64,
        stop: AtomicBool,
        panicked: AtomicBool,
        workers: Mutex<Vec<Arc<Worker>>>,
    }

    // SAFETY: `job` is written only by the dispatching thread while no worker is inside a job
    // (it holds `Pool::dispatch`, and the last job was closed and emptied) and read by workers
    // only between joining the current job (a CAS on `state` that fails once it is closed or
    // re-tagged) and leaving it.
    unsafe impl Sync for Shared {}
    unsafe impl Send for Shared {}

    pub(super) struct Pool {
        shared: Arc<Shared>,
        handles: Vec<JoinHandle<()>>,
        /// Workers: one copy of the list, read without locking while dispatching.
        workers: Vec<Arc<Worker>>,
        /// One job at a time; a call while a job runs (another thread, or a job that calls
        /// back into the pool) runs its work on the calling thread instead.
        dispatch: Mutex<()>,
    }

    impl Pool {
        /// A pool of `n` threads counting the caller (`n - 1` workers); `None` if no worker
        /// thread could be started.
        pub(super) fn new(n: usize) -> Option<Self> {
            let shared = Arc::new(Shared {
                generation: AtomicUsize::new(0),
                job: UnsafeCell::new(None),
                state: AtomicU64::new(0),
                stop: AtomicBool::new(false),
                panicked: AtomicBool::new(false),
                workers: Mutex::new(Vec::new()),
            });
            let mut handles = Vec::new();
            for index in 1..n {
                let s = shared.clone();
                let spawned = std::thread::Builder::new().name(format!("wasm-chord-cpu-{index}")).spawn(move || worker_loop(&s, index));
                match spawned {
                    Ok(h) => handles.push(h),
                    Err(_) => break,
                }
            }
            if handles.is_empty() {
                return None;
            }
            let workers: Vec<Arc<Worker>> =
                handles.iter().map(|h| Arc::new(Worker { thread: h.thread().clone(), sleeping: AtomicBool::new(false) })).collect();
            *lock(&shared.workers) = workers.clone();
            // Workers look themselves up in `shared.workers` only once they park, so publishing
            // the list after spawning is safe: a worker that finds it empty keeps spinning.
            Some(Self { shared, handles, workers, dispatch: Mutex::new(()) })
        }

        pub(super) fn n_threads(&self) -> usize {
            self.handles.len() + 1
        }

        /// Runs `f(i)` on the calling thread (`i == 0`) and on every worker that joins before the
        /// caller's call returns, then waits for those. `f` must finish the whole job when run by
        /// the caller alone (workers only help): a worker the OS has not scheduled yet is not
        /// waited for, which on a busy machine is the difference between a stall and none.
        pub(super) fn run(&self, f: &(dyn Fn(usize) + Sync)) {
            let Ok(_guard) = self.dispatch.try_lock() else {
                // Busy (a concurrent caller or a nested call): the caller does it all.
                f(0);
                return;
            };
            let s = &*self.shared;
            // SAFETY: the lifetime is erased only until this function returns, and it returns
            // only after the job is closed to newcomers and every worker that joined has left.
            let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(f) };
            unsafe { *s.job.get() = Some(job) };
            let generation = s.generation.load(Ordering::Relaxed).wrapping_add(1);
            s.state.store(tag(generation), Ordering::Relaxed);
            s.generation.store(generation, Ordering::SeqCst);
            for w in &self.workers {
                if w.sleeping.swap(false, Ordering::SeqCst) {
                    w.thread.unpark();
                }
            }
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
            s.state.fetch_or(CLOSED, Ordering::AcqRel);
            let start = Instant::now();
            while s.state.load(Ordering::Acquire) & ACTIVE != 0 {
                if start.elapsed() < WAIT_SPIN {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if let Err(p) = caught {
                std::panic::resume_unwind(p);
            }
            if s.panicked.swap(false, Ordering::Relaxed) {
                panic!("a wasm-chord-cpu worker thread panicked");
            }
        }
    }

    /// The low 32 bits of a generation in the high half of `Shared::state`.
    fn tag(generation: usize) -> u64 {
        (generation as u32 as u64) << 32
    }

    impl Drop for Pool {
        fn drop(&mut self) {
            self.shared.stop.store(true, Ordering::SeqCst);
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
            for w in &self.workers {
                w.sleeping.store(false, Ordering::SeqCst);
                w.thread.unpark();
            }
            for h in self.handles.drain(..) {
                let _ = h.join();
            }
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn worker_loop(s: &Shared, index: usize) {
        let mut seen = 0usize;
        let mut me: Option<Arc<Worker>> = None;
        loop {
            let start = Instant::now();
            let mut spins = 0u32;
            loop {
                if s.generation.load(Ordering::Acquire) != seen {
                    break;
                }
                spins = spins.wrapping_add(1);
                if spins % 256 != 0 || start.elapsed() < SPIN {
                    std::hint::spin_loop();
                    continue;
                }
                if me.is_none() {
                    me = lock(&s.workers).get(index - 1).cloned();
                }
                let Some(w) = &me else { continue };
                // Dekker with `Pool::run`: either this load sees the new generation or the
                // dispatcher's swap sees `sleeping` and unparks us.
                w.sleeping.store(true, Ordering::SeqCst);
                if s.generation.load(Ordering::SeqCst) == seen {
                    std::thread::park();
                }
                w.sleeping.store(false, Ordering::SeqCst);
            }
            seen = s.generation.load(Ordering::Acquire);
            if s.stop.load(Ordering::SeqCst) {
                return;
            }
            // Join the job unless the caller has closed it (or moved on to a newer one).
            let mut st = s.state.load(Ordering::Acquire);
            let joined = loop {
                if st & !(CLOSED | ACTIVE) != tag(seen) || st & CLOSED != 0 {
                    break false;
                }
                match s.state.compare_exchange_weak(st, st + 1, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break true,
                    Err(now) => st = now,
                }
            };
            if !joined {
                continue;
            }
            // SAFETY: see `Shared`: the job stays valid until this worker leaves it below.
            if let Some(job) = unsafe { *s.job.get() } {
                let job = unsafe { &*job };
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(index))).is_err() {
                    s.panicked.store(true, Ordering::Relaxed);
                }
            }
            s.state.fetch_sub(1, Ordering::Release);
        }
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

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for n in [1, 2, 3, 5] {
            let threads = Threads::new(n);
            assert_eq!(threads.count(), n);
            for round in 0..200 {
                let n_tasks = round % 17;
                let hits: Vec<AtomicUsize> = (0..n_tasks).map(|_| AtomicUsize::new(0)).collect();
                threads.for_each_task(n_tasks, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{n} threads, {n_tasks} tasks");
            }
        }
    }

    #[test]
    fn chunks_cover_the_data_and_workers_wake_after_parking() {
        let threads = Threads::new(3);
        let mut data = vec![0usize; 1000];
        for round in 0..3 {
            if round == 2 {
                // Long enough for every worker to park.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            threads.for_each_chunk(&mut data, 7, |i, c| c.iter_mut().for_each(|v| *v += i + 1));
        }
        assert!(data.iter().enumerate().all(|(j, &v)| v == 3 * (j / 7 + 1)));
    }

    #[test]
    fn nested_calls_run_on_the_caller() {
        let threads = Threads::new(2);
        let total = AtomicUsize::new(0);
        threads.for_each_task(4, |_| {
            threads.for_each_task(3, |_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 12);
    }
}
