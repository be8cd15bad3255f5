//! Legacy quants (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL IQ4_XS) and F16/BF16 against independent
//! references: gguf-py's dequantizers and quantizers (tests/golden/quant, scripts/goldens/
//! quant_goldens.py) and llama.cpp's own quantizers through libggml (tests/golden/quant_legacy,
//! scripts/goldens/quant_legacy_goldens.py).

use std::path::PathBuf;

use half::{bf16, f16};
use sha2::{Digest, Sha256};
use wasm_chord_core::quant::{self, TensorType};

const LEGACY: [TensorType; 7] = [
    TensorType::Q4_0,
    TensorType::Q4_1,
    TensorType::Q5_0,
    TensorType::Q5_1,
    TensorType::Q8_0,
    TensorType::IQ4_NL,
    TensorType::IQ4_XS,
];

/// gguf-py's `GGMLQuantizationType` name, used for golden file names.
fn golden_name(ty: TensorType) -> String {
    ty.name().to_ascii_uppercase()
}

fn golden_path(dir: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(dir).join(file)
}

fn read_golden(dir: &str, file: &str) -> Vec<u8> {
    let path = golden_path(dir, file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading golden {}: {e}", path.display()))
}

fn read_f32s(dir: &str, file: &str) -> Vec<f32> {
    read_golden(dir, file).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn dequantize(ty: TensorType, bytes: &[u8]) -> Vec<f32> {
    let n = bytes.len() / ty.block_bytes() * ty.block_len();
    let mut out = vec![f32::NAN; n];
    quant::dequantize(ty, bytes, &mut out).expect("whole blocks");
    out
}

fn quantize(ty: TensorType, src: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; ty.row_bytes(src.len()).expect("whole blocks")];
    quant::quantize(ty, src, &mut out).expect("whole blocks");
    out
}

/// Asserts bit equality (NaN included) and names the first differing element.
fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: got {g:e}, want {w:e}");
    }
}

/// Asserts byte equality block by block, reporting how many blocks differ and the first one.
fn assert_blocks_eq(what: &str, ty: TensorType, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let size = ty.block_bytes();
    let differing: Vec<usize> = (0..got.len() / size)
        .filter(|&b| got[b * size..(b + 1) * size] != want[b * size..(b + 1) * size])
        .collect();
    if let Some(&b) = differing.first() {
        panic!(
            "{what}: {} of {} blocks differ; first is block {b}:\n got  {:02x?}\n want {:02x?}",
            differing.len(),
            got.len() / size,
            &got[b * size..(b + 1) * size],
            &want[b * size..(b + 1) * size]
        );
    }
}

/// llama.cpp tests/test-quantize-fns.cpp `generate_data`: `0.1 + amplitude*cosf(i + offset)`,
/// with the float product widened to double for the sum and rounded back on store.
fn generate_data(offset: f32, n: usize) -> Vec<f32> {
    (0..n).map(|i| (0.1 + f64::from(2.0f32 * (i as f32 + offset).cos())) as f32).collect()
}

/// test-quantize-fns's `array_rmse`: `sqrtf(sum of squared differences) / n` (sic: not an RMS).
fn llama_error(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x - y).powi(2)).sum();
    (sum as f32).sqrt() / a.len() as f32
}

/// The plain root-mean-square difference.
fn rms(a: &[f32], b: &[f32]) -> f64 {
    let sum: f64 = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    (sum / a.len() as f64).sqrt()
}

fn sha256_hex(bytes: impl IntoIterator<Item = u8>) -> String {
    let bytes: Vec<u8> = bytes.into_iter().collect();
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn summary() -> serde_json::Value {
    serde_json::from_slice(&read_golden("quant_legacy", "summary.json")).expect("summary.json parses")
}

#[test]
fn dequantize_random_blocks_bit_exact_with_gguf_py() {
    for ty in LEGACY {
        let name = golden_name(ty);
        let blocks = read_golden("quant", &format!("{name}.blocks"));
        let want = read_f32s("quant", &format!("{name}.f32"));
        assert_bits_eq(&format!("{ty} dequantize"), &dequantize(ty, &blocks), &want);
    }
}

#[test]
fn dequantize_unaligned_bytes() {
    // Browser buffers need not be aligned for the block structs; the dispatch copies them.
    for ty in LEGACY {
        let blocks = read_golden("quant", &format!("{}.blocks", golden_name(ty)));
        let mut shifted = vec![0u8; blocks.len() + 1];
        shifted[1..].copy_from_slice(&blocks);
        assert_bits_eq(&format!("{ty} unaligned"), &dequantize(ty, &shifted[1..]), &dequantize(ty, &blocks));
    }
}

#[test]
fn quantize_bit_exact_with_llama_cpp() {
    for source in ["cos", "random", "edge"] {
        let src = read_f32s("quant_legacy", &format!("{source}_src.f32"));
        for ty in LEGACY {
            let want = read_golden("quant_legacy", &format!("{}.{source}.ggml", golden_name(ty)));
            assert_blocks_eq(&format!("{ty} quantize {source}"), ty, &quantize(ty, &src), &want);
        }
    }
}

#[test]
fn quantize_bit_exact_with_oracle_ggml_goldens() {
    // The oracle's rows: test-quantize-fns data, Gaussians at two scales, zeros, outliers.
    for ty in LEGACY {
        let name = golden_name(ty);
        let src = read_f32s("quant", &format!("{name}.quant_src.f32"));
        let want = read_golden("quant", &format!("{name}.quant_ref_ggml"));
        assert_blocks_eq(&format!("{ty} quantize (oracle ggml)"), ty, &quantize(ty, &src), &want);
    }
}

#[test]
fn quantize_bit_exact_with_gguf_py() {
    for ty in [TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0] {
        let name = golden_name(ty);
        let src = read_f32s("quant", &format!("{name}.quant_src.f32"));
        let want = read_golden("quant", &format!("{name}.quant_ref"));
        assert_blocks_eq(&format!("{ty} quantize (gguf-py)"), ty, &quantize(ty, &src), &want);
    }
}

#[test]
fn quantization_error_within_llama_cpp_thresholds() {
    // test-quantize-fns: 32*128 values, total error below MAX_QUANTIZATION_TOTAL_ERROR = 0.002
    // for every type here.
    const MAX_QUANTIZATION_TOTAL_ERROR: f32 = 0.002;
    let data = generate_data(0.0, 32 * 128);
    let stored = read_f32s("quant_legacy", "cos_src.f32");
    if data.iter().zip(&stored).any(|(a, b)| a.to_bits() != b.to_bits()) {
        // cosf may differ by an ulp off glibc; the golden comparisons use the stored data.
        eprintln!("note: this platform's cosf differs from the golden generator's");
    }
    let summary = summary();
    for ty in LEGACY {
        let back = dequantize(ty, &quantize(ty, &data));
        let error = llama_error(&data, &back);
        let reference = summary["types"][golden_name(ty)]["cos"]["llama_metric"].as_f64().expect("metric");
        eprintln!("{ty:7} test-quantize-fns error {error:.7} (llama.cpp {reference:.7}), rms {:.6}", rms(&data, &back));
        assert!(error < MAX_QUANTIZATION_TOTAL_ERROR, "{ty}: error {error} over {MAX_QUANTIZATION_TOTAL_ERROR}");
        assert!(
            (f64::from(error) - reference).abs() <= 1e-6 * reference,
            "{ty}: error {error} differs from llama.cpp's {reference}"
        );
    }
}

/// Edge-case rows of 256 values (one IQ4_XS super-block each): what each must round-trip to.
fn edge_rows() -> Vec<(&'static str, Vec<f32>)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut normal = |scale: f32| -> Vec<f32> { (0..256).map(|_| (rng.gen::<f32>() * 2.0 - 1.0) * scale).collect() };
    vec![
        ("zeros", vec![0.0; 256]),
        ("negative zeros", vec![-0.0; 256]),
        ("constant", vec![0.7; 256]),
        ("negative constant", vec![-1234.5; 256]),
        ("huge", normal(65000.0)),
        ("tiny", normal(1e-30)),
        ("subnormal", normal(1e-39)),
        ("one spike", (0..256).map(|i| if i % 32 == 5 { 1e4 } else { 1e-3 }).collect()),
        ("mixed magnitudes", normal(1.0).into_iter().enumerate().map(|(i, x)| x * 10f32.powi(i as i32 % 9 - 4)).collect()),
    ]
}

#[test]
fn round_trip_edge_cases_stay_finite_and_close() {
    for ty in LEGACY {
        for (case, row) in edge_rows() {
            let back = dequantize(ty, &quantize(ty, &row));
            for (i, (&x, &y)) in row.iter().zip(&back).enumerate() {
                assert!(y.is_finite(), "{ty} {case}: element {i} is {y} (from {x})");
            }
            // Every weight is within half a step of the block's grid, and a step is at most
            // the block's range over 3 (IQ4's grid is coarsest near its ends: 127-104 of 240);
            // f16 rounding of the scales adds a little, and f16 cannot hold scales below 6e-8.
            for (b, (xs, ys)) in row.chunks(32).zip(back.chunks(32)).enumerate() {
                let amax = xs.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let bound = amax / 3.0 + 1e-6;
                for (j, (&x, &y)) in xs.iter().zip(ys).enumerate() {
                    assert!((x - y).abs() <= bound, "{ty} {case}: block {b} element {j}: {x} -> {y}");
                }
            }
        }
    }
}

#[test]
fn round_trip_exact_where_representable() {
    for ty in LEGACY {
        let back = dequantize(ty, &quantize(ty, &[0.0; 256]));
        assert!(back.iter().all(|&y| y == 0.0), "{ty}: zeros");
    }
    // A constant block is its own largest value, which Q4_0/Q5_0 store exactly as q = 0 with
    // d = c / -8 or c / -16, Q4_1/Q5_1 as the minimum with d = 0, and Q8_0 as q = 127 with
    // d = c / 127, exact only when that quotient is an f16.
    let cases: [(TensorType, &[f32]); 5] = [
        (TensorType::Q4_0, &[-8.0, 0.5, 3.0, 100.0]),
        (TensorType::Q5_0, &[-8.0, 0.5, 3.0, 100.0]),
        (TensorType::Q4_1, &[-8.0, 0.5, 3.0, 100.0]),
        (TensorType::Q5_1, &[-8.0, 0.5, 3.0, 100.0]),
        (TensorType::Q8_0, &[127.0, -63.5, 0.123 * 127.0]),
    ];
    for (ty, constants) in cases {
        for &c in constants {
            let back = dequantize(ty, &quantize(ty, &[c; 256]));
            let want = if ty == TensorType::Q8_0 { f16::from_f32(c / 127.0).to_f32() * 127.0 } else { c };
            assert!(back.iter().all(|&y| y == want), "{ty}: constant {c} came back as {:?}", &back[..4]);
        }
    }
}

#[test]
fn quantizer_output_has_expected_block_fields() {
    // The symmetric types put the largest magnitude at the end of the grid: Q4_0 stores
    // d = max / -8, so the block maximum 2.0 gives d = -0.25 and q = 0 for that weight.
    let mut row = [0.0f32; 32];
    row[3] = 2.0;
    row[20] = -1.0;
    let bytes = quantize(TensorType::Q4_0, &row);
    assert_eq!(f16::from_le_bytes([bytes[0], bytes[1]]).to_f32(), -0.25);
    assert_eq!(bytes[2 + 3] & 0x0f, 0, "weight 3 in the low nibble of byte 3");
    assert_eq!(bytes[2 + 4] >> 4, 12, "weight 20 = -1.0 = -0.25 * (12 - 8) in the high nibble of byte 4");
}

#[test]
fn f16_and_bf16_against_numpy_and_gguf_py() {
    let hashes = &summary()["float_hashes"];

    let f16_bits = (0..=u16::MAX).filter(|&h| !f16::from_bits(h).is_nan());
    let src: Vec<f16> = f16_bits.map(f16::from_bits).collect();
    let mut out = vec![0.0f32; src.len()];
    quant::float::f16_to_f32(&src, &mut out);
    assert_eq!(sha256_hex(out.iter().flat_map(|x| x.to_le_bytes())), hashes["f16_to_f32"], "f16 -> f32");

    let src: Vec<bf16> = (0..=u16::MAX).filter(|&h| h & 0x7fff <= 0x7f80).map(bf16::from_bits).collect();
    let mut out = vec![0.0f32; src.len()];
    quant::float::bf16_to_f32(&src, &mut out);
    assert_eq!(sha256_hex(out.iter().flat_map(|x| x.to_le_bytes())), hashes["bf16_to_f32"], "bf16 -> f32");

    // The same scattered f32 bit patterns as the golden script.
    let all: Vec<f32> = (0u64..1 << 20).map(|i| f32::from_bits((i * 2_654_435_761 % (1 << 32)) as u32)).collect();
    let finite: Vec<f32> = all.iter().copied().filter(|x| !x.is_nan()).collect();
    assert_eq!(finite.len() as u64, hashes["f32_to_f16_inputs"].as_u64().expect("count"));
    let mut halves = vec![f16::ZERO; finite.len()];
    quant::float::f32_to_f16(&finite, &mut halves);
    assert_eq!(sha256_hex(halves.iter().flat_map(|h| h.to_le_bytes())), hashes["f32_to_f16"], "f32 -> f16");
    let mut brains = vec![bf16::ZERO; all.len()];
    quant::float::f32_to_bf16(&all, &mut brains);
    assert_eq!(sha256_hex(brains.iter().flat_map(|h| h.to_le_bytes())), hashes["f32_to_bf16"], "f32 -> bf16");

    // NaN stays NaN both ways (payload bits differ between references, so only NaN-ness counts).
    let mut h = [f16::ZERO];
    quant::float::f32_to_f16(&[f32::NAN], &mut h);
    assert!(h[0].is_nan());
    let mut b = [bf16::ZERO];
    quant::float::f32_to_bf16(&[f32::from_bits(0x7f80_0001)], &mut b);
    assert!(b[0].is_nan(), "a signalling NaN whose payload is in the low bits must not become inf");
}

#[test]
fn f16_and_bf16_goldens_through_dispatch() {
    for ty in [TensorType::F16, TensorType::BF16] {
        let name = golden_name(ty);
        let blocks = read_golden("quant", &format!("{name}.blocks"));
        assert_bits_eq(&format!("{ty} dequantize"), &dequantize(ty, &blocks), &read_f32s("quant", &format!("{name}.f32")));
        let src = read_f32s("quant", &format!("{name}.quant_src.f32"));
        let got = quantize(ty, &src);
        assert_eq!(got, read_golden("quant", &format!("{name}.quant_ref")), "{ty} quantize (gguf-py)");
        assert_eq!(got, read_golden("quant", &format!("{name}.quant_ref_ggml")), "{ty} quantize (ggml)");
    }
}
