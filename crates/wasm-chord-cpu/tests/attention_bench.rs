//! Standard against flash attention on one layer's 4k-token prefill (32 query heads of 128,
//! 8 key/value heads): wall time and the peak heap each call allocates beyond its inputs.
//! Ignored by default; run with
//! `cargo test --release -p wasm-chord-cpu --test attention_bench -- --ignored --nocapture`
//! (env ATTN_BENCH_N sets the token count, ATTN_BENCH_THREADS the threads).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::backend::AttentionParams;
use wasm_chord_cpu::ops::attention::attention;
use wasm_chord_cpu::ops::flash_attention::{flash_attention, KvRows};
use wasm_chord_cpu::threads::Threads;
use wasm_chord_cpu::{CpuCache, CpuTensor};

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f`, returning seconds and the peak heap above what was live before it.
fn measure(f: impl FnOnce()) -> (f64, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t = Instant::now();
    f();
    (t.elapsed().as_secs_f64(), PEAK.load(Ordering::Relaxed) - base)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
#[ignore]
fn standard_vs_flash_4k_prefill() {
    let n = env("ATTN_BENCH_N", 4096);
    let threads = Threads::new(env("ATTN_BENCH_THREADS", 0));
    let (n_head, n_head_kv, d) = (32, 8, 128);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut uniform = |len: usize| (0..len).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect::<Vec<f32>>();
    let q = CpuTensor { rows: n, cols: n_head * d, data: uniform(n * n_head * d) };
    let k: Vec<f16> = uniform(n * n_head_kv * d).iter().map(|x| f16::from_f32(*x)).collect();
    let v: Vec<f16> = uniform(n * n_head_kv * d).iter().map(|x| f16::from_f32(*x)).collect();
    let p = AttentionParams {
        n_head,
        n_head_kv,
        head_dim_k: d,
        head_dim_v: d,
        scale: 1.0 / (d as f32).sqrt(),
        softcap: None,
        q_pos0: 0,
        window: None,
    };
    let kc = CpuCache::from_f16(n_head_kv * d, k.clone());
    let vc = CpuCache::from_f16(n_head_kv * d, v.clone());
    let mut out_std = CpuTensor::zeros(n, n_head * d);
    let mut out_flash = CpuTensor::zeros(n, n_head * d);
    let (t_std, mem_std) = measure(|| attention(&threads, &q, &kc, &vc, n, &p, &mut out_std, false).unwrap());
    let cols = n_head_kv * d;
    let (t_flash, mem_flash) = measure(|| {
        flash_attention(&threads, &q, KvRows::F16 { cols, data: &k }, KvRows::F16 { cols, data: &v }, n, &p, &mut out_flash, false)
            .unwrap()
    });
    let diff = out_std.data.iter().zip(&out_flash.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("prefill {n} tokens, {n_head} heads x {d}, {n_head_kv} kv heads, {} threads", threads.count());
    println!("standard: {t_std:.3} s, peak heap {:.2} MiB", mem_std as f64 / (1 << 20) as f64);
    println!("flash:    {t_flash:.3} s, peak heap {:.2} MiB", mem_flash as f64 / (1 << 20) as f64);
    println!("max |standard - flash| = {diff:e}");
    assert!(diff < 1e-4);
}

/// The ggml-rounding kernels on the two real models' attention shapes (Gemma 3 270M: 4 heads
/// of 256 over 1 key/value head; SmolLM2-135M: 9 heads of 64 over 3) for a 512-token prefill:
/// best of 5 alternating runs of each, so a loaded machine disturbs both alike.
#[test]
#[ignore]
fn ggml_standard_vs_flash_real_shapes() {
    let n = env("ATTN_BENCH_N", 512);
    let threads = Threads::new(env("ATTN_BENCH_THREADS", 0));
    for (name, n_head, n_head_kv, d) in [("gemma3-270m", 4, 1, 256), ("smollm2-135m", 9, 3, 64)] {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut uniform = |len: usize| (0..len).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect::<Vec<f32>>();
        let q = CpuTensor { rows: n, cols: n_head * d, data: uniform(n * n_head * d) };
        let k: Vec<f16> = uniform(n * n_head_kv * d).iter().map(|x| f16::from_f32(*x)).collect();
        let v: Vec<f16> = uniform(n * n_head_kv * d).iter().map(|x| f16::from_f32(*x)).collect();
        let p = AttentionParams { n_head, n_head_kv, head_dim_k: d, head_dim_v: d, scale: 1.0 / (d as f32).sqrt(), softcap: None, q_pos0: 0, window: None };
        let (kc, vc) = (CpuCache::from_f16(n_head_kv * d, k.clone()), CpuCache::from_f16(n_head_kv * d, v.clone()));
        let cols = n_head_kv * d;
        let mut out = CpuTensor::zeros(n, n_head * d);
        let (mut t_std, mut t_flash) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..5 {
            t_std = t_std.min(measure(|| attention(&threads, &q, &kc, &vc, n, &p, &mut out, true).unwrap()).0);
            let (kr, vr) = (KvRows::F16 { cols, data: &k }, KvRows::F16 { cols, data: &v });
            t_flash = t_flash.min(measure(|| flash_attention(&threads, &q, kr, vr, n, &p, &mut out, true).unwrap()).0);
        }
        println!("{name}: {n} tokens, {} threads: standard {:.2} ms, flash {:.2} ms (flash/standard {:.2})", threads.count(), t_std * 1e3, t_flash * 1e3, t_flash / t_std);
    }
}
