//! Kernel benchmarks through the backend's matmul op (activation quantization, the thread
//! pool, and the packed layouts included), next to the machine's memory read bandwidth:
//!
//! - `matvec/<type>/<layout>/<n>t`: a 4096 x 4096 weight matrix times one activation row (a
//!   decoding step); criterion's "GiB/s" is weight bytes streamed, to read against
//!   `memory_read_1GiB` (the ceiling for decoding).
//! - `gemm64/<type>/<layout>/<n>t`: 1024 x 2048 weights times 64 tokens (prompt processing);
//!   "Gelem/s" is GFLOP/s.
//!
//! `layout` is `file` (the rows as stored) or `packed` (repacked at load, where the kernel set
//! has a layout for the type). `cargo bench -p wasm-chord-cpu --bench kernels [-- FILTER]`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use wasm_chord_core::backend::SharedBytes;
use wasm_chord_core::{quant, TensorType};
use wasm_chord_cpu::kernels::Kernels;
use wasm_chord_cpu::ops::matmul::matmul;
use wasm_chord_cpu::threads::Threads;
use wasm_chord_cpu::{CpuTensor, CpuWeight};

const TYPES: [TensorType; 15] = {
    use TensorType::*;
    [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS, F16, BF16, F32]
};

/// The types of SmolLM2-135M Q4_1 and Gemma 3 270M Q4_K_M.
const MODEL_TYPES: [TensorType; 5] = [TensorType::Q4_1, TensorType::Q8_0, TensorType::Q5_0, TensorType::Q4_K, TensorType::Q6_K];

fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.gen_range(-1.0f32..1.0)).collect()
}

/// A `rows x k` weight matrix: 16 distinct quantized rows repeated (quantizing 16M values with
/// the k-quant searches would take longer than the benchmark), in each layout the kernels have.
fn weights(ty: TensorType, rows: usize, k: usize) -> Vec<(&'static str, CpuWeight)> {
    let distinct = 16.min(rows);
    let rb = ty.row_bytes(k).unwrap();
    let mut some = vec![0u8; rb * distinct];
    quant::quantize(ty, &values(1, distinct * k), &mut some).unwrap();
    let bytes: Vec<u8> = some.iter().copied().cycle().take(rb * rows).collect();
    let file = CpuWeight::new(ty, rows, k, SharedBytes::from_vec(bytes)).unwrap();
    let packed = file.clone().packed_for(Kernels::get());
    let mut out = vec![("file", file)];
    if packed.packed.is_some() {
        out.push(("packed", packed));
    }
    out
}

fn pools() -> Vec<(usize, Threads)> {
    [1, 2].into_iter().map(|n| (n, Threads::new(n))).collect()
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_millis(700));
    g
}

fn matvec(c: &mut Criterion) {
    let (rows, k) = (4096, 4096);
    let pools = pools();
    let x = CpuTensor { rows: 1, cols: k, data: values(2, k) };
    let mut out = CpuTensor::zeros(1, rows);
    let mut g = group(c, "matvec");
    for ty in TYPES {
        for (layout, w) in weights(ty, rows, k) {
            g.throughput(Throughput::Bytes(w.bytes.bytes().len() as u64));
            for (n, threads) in &pools {
                g.bench_function(BenchmarkId::new(ty.name(), format!("{layout}/{n}t")), |b| {
                    b.iter(|| matmul(threads, &w, None, &x, &mut out, true).unwrap())
                });
            }
        }
    }
    g.finish();
}

fn gemm(c: &mut Criterion) {
    let (rows, k, n_tok) = (1024, 2048, 64);
    let pools = pools();
    let x = CpuTensor { rows: n_tok, cols: k, data: values(3, n_tok * k) };
    let mut out = CpuTensor::zeros(n_tok, rows);
    let mut g = group(c, "gemm64");
    g.throughput(Throughput::Elements((2 * rows * k * n_tok) as u64));
    for ty in MODEL_TYPES {
        for (layout, w) in weights(ty, rows, k) {
            for (n, threads) in &pools {
                g.bench_function(BenchmarkId::new(ty.name(), format!("{layout}/{n}t")), |b| {
                    b.iter(|| matmul(threads, &w, None, &x, &mut out, true).unwrap())
                });
            }
        }
    }
    g.finish();
}

/// Sums a 1 GiB buffer of u64 on 1 and 2 threads: the read bandwidth decoding is bound by.
fn memory_bandwidth(c: &mut Criterion) {
    let buf: Vec<u64> = (0..(1usize << 27)).map(|i| i as u64).collect();
    let mut g = group(c, "memory_read_1GiB");
    g.throughput(Throughput::Bytes((buf.len() * 8) as u64));
    for (n, threads) in pools() {
        let parts = 8 * n;
        let sums: Vec<std::sync::atomic::AtomicU64> = (0..parts).map(|_| Default::default()).collect();
        g.bench_function(format!("{n}t"), |b| {
            b.iter(|| {
                threads.for_each_task(parts, |i| {
                    let c = &buf[i * buf.len() / parts..(i + 1) * buf.len() / parts];
                    // Four running sums so the adds do not serialize.
                    let mut s = [0u64; 4];
                    for q in c.chunks_exact(4) {
                        for j in 0..4 {
                            s[j] = s[j].wrapping_add(q[j]);
                        }
                    }
                    sums[i].store(s.iter().fold(0u64, |a, &b| a.wrapping_add(b)), std::sync::atomic::Ordering::Relaxed);
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, matvec, gemm, memory_bandwidth);
criterion_main!(benches);
