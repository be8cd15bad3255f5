//! K-quant tests: dequantization bit-exact against gguf-py, quantization byte-exact against
//! llama.cpp's `quantize_row_*_ref`, llama.cpp's error budgets, edge cases and real tensors.
//!
//! Golden files come from `scripts/goldens/quant_k_goldens.py`.

use std::path::{Path, PathBuf};

use bytemuck::{Pod, Zeroable};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::gguf::GgufFile;
use wasm_chord_core::quant::{self, q2_k, q3_k, q4_k, q5_k, q6_k, q8_k, QK_K};
use wasm_chord_core::TensorType;

const K_TYPES: [TensorType; 6] =
    [TensorType::Q2_K, TensorType::Q3_K, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K, TensorType::Q8_K];

/// Reads `tests/golden/<dir>/<name>`.
fn read_golden_in(dir: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(dir).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads this suite's own goldens (scripts/goldens/quant_k_goldens.py).
fn read_golden(name: &str) -> Vec<u8> {
    read_golden_in("quant_k", name)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Quantizes with the typed entry point of each module (the byte-level dispatch wants a buffer
/// aligned for the block type) and returns the blocks' bytes.
fn quantize_bytes(ty: TensorType, src: &[f32]) -> Vec<u8> {
    fn run<B: Pod>(src: &[f32], f: fn(&[f32], &mut [B])) -> Vec<u8> {
        let mut blocks = vec![B::zeroed(); src.len() / QK_K];
        f(src, &mut blocks);
        bytemuck::cast_slice(&blocks).to_vec()
    }
    match ty {
        TensorType::Q2_K => run(src, q2_k::quantize),
        TensorType::Q3_K => run(src, q3_k::quantize),
        TensorType::Q4_K => run(src, q4_k::quantize),
        TensorType::Q5_K => run(src, q5_k::quantize),
        TensorType::Q6_K => run(src, q6_k::quantize),
        TensorType::Q8_K => run(src, q8_k::quantize),
        _ => unreachable!("not a k-quant: {ty}"),
    }
}

fn dequantize_bytes(ty: TensorType, bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![0.0f32; bytes.len() / ty.block_bytes() * QK_K];
    quant::dequantize(ty, bytes, &mut out).unwrap();
    out
}

fn roundtrip(ty: TensorType, src: &[f32]) -> Vec<f32> {
    dequantize_bytes(ty, &quantize_bytes(ty, src))
}

#[test]
fn dequantize_matches_gguf_py_bit_for_bit() {
    for ty in K_TYPES {
        let blocks = read_golden(&format!("dequant_{}.blocks", ty.name()));
        let want = f32s(&read_golden(&format!("dequant_{}.f32", ty.name())));
        let got = dequantize_bytes(ty, &blocks);
        assert_eq!(got.len(), want.len(), "{ty}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{ty} element {i}: got {g}, gguf-py {w}");
        }
    }
}

#[test]
fn quantize_matches_llama_cpp_byte_for_byte() {
    let input = f32s(&read_golden("quant_input.f32"));
    for ty in K_TYPES {
        let want = read_golden(&format!("quant_{}.blocks", ty.name()));
        let got = quantize_bytes(ty, &input);
        assert_eq!(got.len(), want.len(), "{ty}");
        let bb = ty.block_bytes();
        for (row, (g, w)) in got.chunks_exact(bb).zip(want.chunks_exact(bb)).enumerate() {
            let first = g.iter().zip(w).position(|(a, b)| a != b);
            assert!(first.is_none(), "{ty} input row {row}: first differing byte {first:?}\n ours {g:?}\n ggml {w:?}");
        }
    }
}

/// The shared quant goldens (scripts/goldens/quant_goldens.py), named by gguf's type names.
#[test]
fn shared_goldens_dequantize_and_quantize_exactly() {
    for ty in [TensorType::Q2_K, TensorType::Q3_K, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K] {
        let name = ty.name().to_uppercase();
        let blocks = read_golden_in("quant", &format!("{name}.blocks"));
        let want = f32s(&read_golden_in("quant", &format!("{name}.f32")));
        let got = dequantize_bytes(ty, &blocks);
        assert_eq!(got.len(), want.len(), "{ty}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{ty} element {i}: got {g}, gguf-py {w}");
        }

        let src = f32s(&read_golden_in("quant", &format!("{name}.quant_src.f32")));
        let want = read_golden_in("quant", &format!("{name}.quant_ref_ggml"));
        let got = quantize_bytes(ty, &src);
        let bb = ty.block_bytes();
        assert_eq!(got.len(), want.len(), "{ty}");
        for (row, (g, w)) in got.chunks_exact(bb).zip(want.chunks_exact(bb)).enumerate() {
            assert_eq!(g, w, "{ty} block {row} differs from ggml_quantize_chunk");
        }
    }
}

/// test-quantize-fns.cpp's synthetic data: `0.1 + amplitude * cos(i + offset)`.
fn generate_data(offset: f32, n: usize) -> Vec<f32> {
    (0..n).map(|i| (0.1 + (2.0 * (i as f32 + offset).cos()) as f64) as f32).collect()
}

/// test-quantize-fns.cpp's `array_rmse` (sic: sqrt of the sum, divided by n).
fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    (sum.sqrt() as f32) / a.len() as f32
}

#[test]
fn quantization_error_within_llama_cpp_budget() {
    let data = generate_data(0.0, 32 * 128);
    for ty in K_TYPES {
        // test-quantize-fns.cpp's MAX_QUANTIZATION_TOTAL_ERROR{,_2BITS,_3BITS}.
        let budget = match ty {
            TensorType::Q2_K => 0.0075,
            TensorType::Q3_K => 0.0040,
            _ => 0.002,
        };
        let err = array_rmse(&data, &roundtrip(ty, &data));
        println!("{ty}: total quantization error {err:.6} (budget {budget})");
        assert!(err < budget, "{ty}: error {err} over budget {budget}");
    }
}

#[test]
fn more_bits_give_less_error_on_random_data() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let data: Vec<f32> = (0..64 * QK_K).map(|_| rng.gen_range(-1.0f32..1.0) * rng.gen_range(0.01f32..1.0)).collect();
    let errs: Vec<f32> = K_TYPES.iter().map(|&ty| array_rmse(&data, &roundtrip(ty, &data))).collect();
    println!("random data errors (Q2_K..Q8_K): {errs:?}");
    assert!(errs.windows(2).all(|w| w[1] < w[0]), "errors not decreasing with bits: {errs:?}");
}

#[test]
fn edge_cases_give_finite_output() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut normal = |scale: f32| -> Vec<f32> { (0..QK_K).map(|_| rng.gen_range(-1.0f32..1.0) * scale).collect() };
    let mut spike = vec![0.0f32; QK_K];
    spike[100] = 3.0;
    let cases: Vec<(&str, Vec<f32>)> = vec![
        ("zeros", vec![0.0; QK_K]),
        ("negative zeros", vec![-0.0; QK_K]),
        ("constant", vec![0.7; QK_K]),
        ("negative constant", vec![-2.5; QK_K]),
        ("huge", normal(1e5)),
        ("tiny", normal(1e-6)),
        ("subnormal", normal(1e-39)),
        ("below GROUP_MAX_EPS", normal(1e-16)),
        ("spike", spike),
        ("alternating", (0..QK_K).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect()),
    ];
    for ty in K_TYPES {
        for (name, x) in &cases {
            let y = roundtrip(ty, x);
            assert!(y.iter().all(|v| v.is_finite()), "{ty} {name}: non-finite output");
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if amax == 0.0 {
                assert!(y.iter().all(|&v| v == 0.0), "{ty} {name}: zeros came back as {y:?}");
            } else {
                // Nothing should come back larger than twice the input's range.
                let ymax = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert!(ymax <= 2.0 * amax, "{ty} {name}: output max {ymax} vs input max {amax}");
            }
        }
    }
}

#[test]
fn q8_k_bsums_are_group_sums() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<f32> = (0..4 * QK_K).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
    let mut blocks = vec![quant::BlockQ8K::zeroed(); 4];
    q8_k::quantize(&x, &mut blocks);
    for b in &blocks {
        for (g, &s) in b.qs.chunks_exact(16).zip(&b.bsums) {
            assert_eq!(g.iter().map(|&q| q as i32).sum::<i32>(), s as i32);
        }
        assert!(b.qs.iter().all(|&q| q != -128), "Q8_K quants stay in -127..=127");
    }
}

/// Wrapping sum over i of splitmix64's finalizer on `(i << 32) | bits(v[i])`, as in
/// scripts/goldens/quant_k_goldens.py.
fn tensor_hash(values: &[f32]) -> u64 {
    values.iter().enumerate().fold(0u64, |h, (i, v)| {
        let mut z = ((i as u64) << 32) | v.to_bits() as u64;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h.wrapping_add(z ^ (z >> 31))
    })
}

fn models_dir() -> PathBuf {
    match std::env::var_os("WASM_CHORD_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/wasm-chord/models"),
    }
}

#[test]
fn gemma_k_tensors_match_gguf_py() {
    let path = models_dir().join("gemma-3-270m-q4_k_m.gguf");
    if !path.exists() {
        println!("skipping: {} not found (scripts/fetch-models.sh fetches it)", path.display());
        return;
    }
    let model = GgufFile::open(&path).unwrap();
    let listing = String::from_utf8(read_golden("gemma_tensors.txt")).unwrap();
    let mut checked = 0;
    for line in listing.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, ty, offset, n_bytes, n_elements, hash] = f[..] else { panic!("bad line {line:?}") };
        let info = model.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
        // Where gguf-py found the tensor must be where our reader finds it.
        assert_eq!(Some(info.ty), TensorType::from_name(ty), "{name}");
        assert_eq!(model.data_offset() + info.offset, offset.parse::<u64>().unwrap(), "{name}");
        assert_eq!(info.n_bytes, n_bytes.parse::<usize>().unwrap(), "{name}");
        let mut out = vec![0.0f32; n_elements.parse().unwrap()];
        quant::dequantize(info.ty, model.tensor_data(info), &mut out).unwrap();
        assert_eq!(tensor_hash(&out), hash.parse::<u64>().unwrap(), "{name} ({ty})");
        checked += 1;
    }
    assert_eq!(checked, 36, "every Q4_K and Q6_K tensor of the Gemma model");
}

/// CPU time this thread has run, from Linux's schedstat (the test machine is shared, so wall time
/// says little); falls back to wall time elsewhere.
fn thread_cpu_seconds() -> f64 {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()));
    match ns {
        Some(ns) => ns as f64 * 1e-9,
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64(),
    }
}

/// Runs `f` until it has taken at least half a CPU-second (schedstat lags by up to a scheduler
/// tick) and returns the CPU seconds per run.
fn cpu_seconds_per_run(mut f: impl FnMut()) -> f64 {
    let start = thread_cpu_seconds();
    let mut runs = 0;
    loop {
        f();
        runs += 1;
        let elapsed = thread_cpu_seconds() - start;
        if elapsed >= 0.5 {
            return elapsed / runs as f64;
        }
    }
}

/// Quantizer throughput, single thread, in weights per CPU-second; run with
/// `cargo test -p wasm-chord-core --release --test quant_k -- --ignored --nocapture`.
#[test]
#[ignore]
fn quantize_speed() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // Gaussian-ish weights, like a model's.
    let x: Vec<f32> = (0..4096 * QK_K).map(|_| (0..4).map(|_| rng.gen_range(-0.05f32..0.05)).sum()).collect();
    for ty in K_TYPES {
        let mut q = Vec::new();
        let secs = cpu_seconds_per_run(|| q = quantize_bytes(ty, &x));
        let mut y = vec![0.0f32; x.len()];
        let dsecs = cpu_seconds_per_run(|| quant::dequantize(ty, &q, &mut y).unwrap());
        println!(
            "{ty}: quantize {:.1} M weights/s, dequantize {:.0} M weights/s",
            x.len() as f64 / secs / 1e6,
            x.len() as f64 / dsecs / 1e6
        );
    }
}
