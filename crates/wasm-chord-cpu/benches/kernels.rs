//! Kernel benchmarks: GB/s of weights streamed by a 4096 x 4096 matrix-vector product per
//! weight type and instruction set, on 1 and 2 threads; GFLOP/s of a 64-token matrix-matrix
//! product for the types of the real models; and the machine's memory read bandwidth (the
//! ceiling for decoding).
//!
//! `cargo bench -p wasm-chord-cpu --bench kernels [-- FILTER]`; criterion's "GiB/s" is
//! weight bytes for `matvec`, "Gelem/s" is GFLOP/s for `gemm`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use wasm_chord_core::{quant, TensorType};
use wasm_chord_cpu::kernels::{quantize_act, ActType, Kernels};

const TYPES: [TensorType; 15] = {
    use TensorType::*;
    [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS, F16, BF16, F32,
    ]
};

/// The types of SmolLM2-135M Q4_1 and Gemma 3 270M Q4_K_M.
const MODEL_TYPES: [TensorType; 5] = [
    TensorType::Q4_1,
    TensorType::Q8_0,
    TensorType::Q5_0,
    TensorType::Q4_K,
    TensorType::Q6_K,
];

fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.gen_range(-1.0f32..1.0)).collect()
}

/// A `rows x k` weight matrix: 16 distinct quantized rows repeated (quantizing 16M values with
/// the k-quant searches would take longer than the benchmark).
fn weight_matrix(ty: TensorType, rows: usize, k: usize) -> Vec<u8> {
    let distinct = 16.min(rows);
    let rb = ty.row_bytes(k).unwrap();
    let mut some = vec![0u8; rb * distinct];
    quant::quantize(ty, &values(1, distinct * k), &mut some).unwrap();
    some.iter().copied().cycle().take(rb * rows).collect()
}

fn act_rows(ty: TensorType, n_tok: usize, k: usize) -> Vec<u8> {
    let act = ActType::for_weight(ty);
    let rb = act.row_bytes(k).unwrap();
    let x = values(2, n_tok * k);
    let mut a = vec![0u8; rb * n_tok];
    for (s, d) in x.chunks(k).zip(a.chunks_mut(rb)) {
        quantize_act(act, s, d);
    }
    a
}

/// `kernels.matmul` over `threads` workers, each taking a band of weight rows.
#[allow(clippy::too_many_arguments)]
fn run(
    pool: &rayon::ThreadPool,
    threads: usize,
    kernels: &Kernels,
    ty: TensorType,
    k: usize,
    w: &[u8],
    a: &[u8],
    n_tok: usize,
    out: &mut [f32],
) {
    let rb = ty.row_bytes(k).unwrap();
    let rows = w.len() / rb;
    let band = rows.div_ceil(threads).next_multiple_of(4);
    pool.install(|| {
        out.par_chunks_mut(band * n_tok)
            .zip(w.par_chunks(band * rb))
            .for_each(|(o, w)| {
                kernels.matmul(ty, k, w, w.len() / rb, a, n_tok, o).unwrap();
            })
    });
}

fn kernel_sets() -> Vec<(String, Kernels)> {
    Kernels::available()
        .into_iter()
        .map(|k| (format!("{:?}", k.isa).to_lowercase(), k))
        .collect()
}

fn pools() -> Vec<(usize, rayon::ThreadPool)> {
    [1, 2]
        .into_iter()
        .map(|n| {
            (
                n,
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .unwrap(),
            )
        })
        .collect()
}

fn matvec(c: &mut Criterion) {
    let (rows, k) = (4096, 4096);
    let sets = kernel_sets();
    let pools = pools();
    let mut g = c.benchmark_group("matvec");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for ty in TYPES {
        let w = weight_matrix(ty, rows, k);
        let a = act_rows(ty, 1, k);
        let mut out = vec![0.0f32; rows];
        g.throughput(Throughput::Bytes(w.len() as u64));
        for (name, kernels) in &sets {
            for (n, pool) in &pools {
                g.bench_function(BenchmarkId::new(ty.name(), format!("{name}/{n}t")), |b| {
                    b.iter(|| run(pool, *n, kernels, ty, k, &w, &a, 1, &mut out))
                });
            }
        }
    }
    g.finish();
}

fn gemm(c: &mut Criterion) {
    let (rows, k, n_tok) = (1024, 2048, 64);
    let sets = kernel_sets();
    let pools = pools();
    let mut g = c.benchmark_group("gemm64");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements((2 * rows * k * n_tok) as u64));
    for ty in MODEL_TYPES {
        let w = weight_matrix(ty, rows, k);
        let a = act_rows(ty, n_tok, k);
        let mut out = vec![0.0f32; rows * n_tok];
        for (name, kernels) in sets.iter().skip(1) {
            for (n, pool) in &pools {
                g.bench_function(BenchmarkId::new(ty.name(), format!("{name}/{n}t")), |b| {
                    b.iter(|| run(pool, *n, kernels, ty, k, &w, &a, n_tok, &mut out))
                });
            }
        }
    }
    g.finish();
}

/// Sums a 1 GiB buffer of u64 on 1 and 2 threads: the read bandwidth decoding is bound by.
fn memory_bandwidth(c: &mut Criterion) {
    let buf: Vec<u64> = (0..(1usize << 27)).map(|i| i as u64).collect();
    let mut g = c.benchmark_group("memory_read_1GiB");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes((buf.len() * 8) as u64));
    for (n, pool) in pools() {
        g.bench_function(format!("{n}t"), |b| {
            b.iter(|| {
                pool.install(|| {
                    buf.par_chunks(buf.len() / n)
                        .map(|c| {
                            // Four running sums so the adds do not serialize.
                            let mut s = [0u64; 4];
                            for q in c.chunks_exact(4) {
                                for i in 0..4 {
                                    s[i] = s[i].wrapping_add(q[i]);
                                }
                            }
                            s.iter().fold(0u64, |a, &b| a.wrapping_add(b))
                        })
                        .reduce(|| 0, u64::wrapping_add)
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, matvec, gemm, memory_bandwidth);
criterion_main!(benches);
