//! Fused matmul kernels: the scalar kernel of every weight type against an f64 dot product of
//! the dequantized operands, and every SIMD kernel this CPU runs against the scalar one.

use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::quant;
use wasm_chord_core::TensorType;
use wasm_chord_cpu::kernels::{quantize_act, quantize_act_rows, ActType, KernelError, Kernels};

/// Every weight type with a fused kernel.
const TYPES: [TensorType; 15] = {
    use TensorType::*;
    [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS,
    ]
};

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Gaussian-ish values with a few outliers, as activations and weights have.
fn values(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v: f32 = (0..4).map(|_| r.gen_range(-1.0f32..1.0)).sum();
            if r.gen_range(0..50) == 0 {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

/// An odd number of blocks per row, so no kernel can assume pairs of blocks.
fn row_len(ty: TensorType) -> usize {
    match ty.block_len() {
        1 => 301,
        32 => 32 * 7,
        _ => 256 * 3,
    }
}

fn weights(ty: TensorType, x: &[f32]) -> Vec<u8> {
    let mut w = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    quant::quantize(ty, x, &mut w).unwrap();
    w
}

fn acts(ty: TensorType, x: &[f32], k: usize) -> Vec<u8> {
    let act = ActType::for_weight(ty);
    let rb = act.row_bytes(k).unwrap();
    let mut a = vec![0u8; rb * (x.len() / k)];
    for (src, dst) in x.chunks(k).zip(a.chunks_mut(rb)) {
        assert!(quantize_act(act, src, dst));
    }
    assert_eq!(quantize_act_rows(act, x, k), Some(a.clone()));
    a
}

/// The activation values a quantized row stands for.
fn dequantize_act(act: ActType, bytes: &[u8]) -> Vec<f32> {
    let f16_at = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    match act {
        ActType::F32 => bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        ActType::F16 => bytes.chunks(2).map(|b| f16_at(b, 0)).collect(),
        ActType::BF16 => bytes
            .chunks(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        ActType::Q8_0 => bytes
            .chunks(34)
            .flat_map(|b| b[2..].iter().map(move |&q| q as i8 as f32 * f16_at(b, 0)))
            .collect(),
        ActType::Q8_1 => bytes
            .chunks(36)
            .flat_map(|b| b[4..].iter().map(move |&q| q as i8 as f32 * f16_at(b, 0)))
            .collect(),
        ActType::Q8K => bytes
            .chunks(292)
            .flat_map(|b| {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                b[4..260].iter().map(move |&q| q as i8 as f32 * d)
            })
            .collect(),
    }
}

/// `(Σ w·a, Σ |w·a|)` in f64.
fn dot64(w: &[f32], a: &[f32]) -> (f64, f64) {
    w.iter().zip(a).fold((0.0, 0.0), |(s, m), (&x, &y)| {
        (s + x as f64 * y as f64, m + (x as f64 * y as f64).abs())
    })
}

fn dequantize(ty: TensorType, w: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    quant::dequantize(ty, w, &mut out).unwrap();
    out
}

/// The scalar kernel computes exactly the dot product of the dequantized operands (up to f32
/// rounding), and that is within the activations' quantization error of the f32 product.
#[test]
fn scalar_matches_f64_dot_of_dequantized_operands() {
    let scalar = Kernels::scalar();
    for ty in TYPES {
        let mut r = rng(ty.ggml_id() as u64);
        let k = row_len(ty);
        let (xw, xa) = (values(&mut r, k), values(&mut r, k));
        let (w, a) = (weights(ty, &xw), acts(ty, &xa, k));
        let got = scalar.vec_dot(ty, k, &w, &a).unwrap() as f64;
        let wd = dequantize(ty, &w, k);
        let ad = dequantize_act(ActType::for_weight(ty), &a);
        let (mut want, mag) = dot64(&wd, &ad);
        if ActType::for_weight(ty) == ActType::Q8_1 {
            // ggml multiplies a block's offset m by the stored s = f16(d·Σq), not by Σ of the
            // dequantized activations: take the same approximation.
            let wb = ty.block_bytes();
            for (b, ab) in ad.chunks(32).enumerate() {
                let m = f16::from_le_bytes([w[b * wb + 2], w[b * wb + 3]]).to_f64();
                let s = f16::from_le_bytes([a[b * 36 + 2], a[b * 36 + 3]]).to_f64();
                want += m * (s - ab.iter().map(|&v| v as f64).sum::<f64>());
            }
        }
        assert!(
            (got - want).abs() <= 2e-6 * mag + 1e-6,
            "{ty}: scalar {got} vs dequantized f64 {want} (|.| {mag})"
        );

        // Each activation moves by at most half its block's step (f16 scales: a little more).
        let act = ActType::for_weight(ty);
        let bl = act.block_len();
        let bound: f64 = wd
            .chunks(bl)
            .zip(xa.chunks(bl))
            .map(|(wb, ab)| {
                let amax = ab.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
                let step = if bl == 1 {
                    amax * 2f64.powi(-8)
                } else {
                    amax / 127.0 * 1.01
                };
                wb.iter().map(|w| w.abs() as f64).sum::<f64>() * step / 2.0
            })
            .sum();
        let (exact, _) = dot64(&wd, &xa);
        assert!(
            (got - exact).abs() <= bound + 1e-5 * mag,
            "{ty}: {got} vs unquantized {exact}, bound {bound}"
        );
    }
}

/// Every SIMD kernel set this CPU runs gives the scalar results to f32 rounding, on row and
/// token counts that leave partial tiles.
#[test]
fn simd_matches_scalar_for_every_type() {
    let scalar = Kernels::scalar();
    let (n_rows, n_tok) = (9, 7);
    for simd in Kernels::available().iter().skip(1) {
        eprintln!("kernels under test: {:?}", simd.isa);
        for ty in TYPES {
            let mut r = rng(100 + ty.ggml_id() as u64);
            let k = row_len(ty);
            let w = weights(ty, &values(&mut r, n_rows * k));
            let xa = values(&mut r, n_tok * k);
            let a = acts(ty, &xa, k);
            let wd = dequantize(ty, &w, n_rows * k);
            let ad = dequantize_act(ActType::for_weight(ty), &a);
            for nt in [1, 2, 3, n_tok] {
                let a = &a[..a.len() / n_tok * nt];
                let mut want = vec![0.0f32; n_rows * nt];
                let mut got = vec![0.0f32; n_rows * nt];
                scalar.matmul(ty, k, &w, n_rows, a, nt, &mut want).unwrap();
                simd.matmul(ty, k, &w, n_rows, a, nt, &mut got).unwrap();
                for row in 0..n_rows {
                    for t in 0..nt {
                        let (_, mag) = dot64(&wd[row * k..][..k], &ad[t * k..][..k]);
                        let (g, s) = (got[row * nt + t] as f64, want[row * nt + t] as f64);
                        assert!(
                            (g - s).abs() <= 2e-6 * mag + 1e-6,
                            "{ty} ({:?}) row {row} token {t} of {nt}: {g} vs scalar {s}",
                            simd.isa
                        );
                    }
                }
            }
        }
    }
}

/// A large product through the tiled walk (several token chunks) agrees with row-by-row dots
/// bit for bit, for the types whose summation order does not depend on the batch size.
#[test]
fn tiled_matmul_matches_vec_dot_on_many_tokens() {
    let kernels = Kernels::detect();
    for ty in [TensorType::Q4_1, TensorType::Q8_0] {
        let mut r = rng(7);
        let (k, n_rows, n_tok) = (512, 6, 300);
        let w = weights(ty, &values(&mut r, n_rows * k));
        let a = acts(ty, &values(&mut r, n_tok * k), k);
        let mut out = vec![0.0f32; n_rows * n_tok];
        kernels
            .matmul(ty, k, &w, n_rows, &a, n_tok, &mut out)
            .unwrap();
        let (wr, ar) = (w.len() / n_rows, a.len() / n_tok);
        for row in 0..n_rows {
            for t in 0..n_tok {
                let one = kernels
                    .vec_dot(ty, k, &w[row * wr..][..wr], &a[t * ar..][..ar])
                    .unwrap();
                assert_eq!(out[row * n_tok + t], one, "{ty} row {row} token {t}");
            }
        }
    }
}

/// K-quants follow llama.cpp's order for the batch size (per-super-block FMA steps: tiled for 8
/// tokens or more, repacked gemm/gemv for Q4_K), where every float step is the same in the
/// scalar and SIMD kernels: they must agree bit for bit, tails of the 4-token groups included.
#[test]
fn k_quant_batch_orders_match_scalar_bitwise() {
    let scalar = Kernels::scalar();
    let simd = Kernels::detect();
    for ty in [TensorType::Q4_K, TensorType::Q6_K, TensorType::Q5_K, TensorType::Q2_K, TensorType::Q3_K, TensorType::IQ4_XS] {
        let mut r = rng(11);
        let (k, n_rows) = (512, 9);
        let w = weights(ty, &values(&mut r, n_rows * k));
        for n_tok in [1, 5, 8, 13, 300] {
            if ty != TensorType::Q4_K && n_tok < 8 {
                continue; // the vec_dot order: lanes, compared to tolerance above
            }
            let a = acts(ty, &values(&mut r, n_tok * k), k);
            let (mut want, mut got) = (vec![0.0f32; n_rows * n_tok], vec![0.0f32; n_rows * n_tok]);
            scalar.matmul(ty, k, &w, n_rows, &a, n_tok, &mut want).unwrap();
            simd.matmul(ty, k, &w, n_rows, &a, n_tok, &mut got).unwrap();
            assert_eq!(got, want, "{ty}, {n_tok} tokens ({:?})", simd.isa);
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let k = Kernels::detect();
    let ty = TensorType::Q4_0;
    let w = vec![0u8; 18 * 2];
    let a = vec![0u8; 34 * 2];
    let mut out = [0.0f32; 1];
    assert!(k.matmul(ty, 64, &w, 1, &a, 1, &mut out).is_ok());
    assert!(matches!(
        k.matmul(ty, 48, &w, 1, &a, 1, &mut out),
        Err(KernelError::PartialBlock { .. })
    ));
    assert!(matches!(
        k.matmul(ty, 64, &w[1..], 1, &a, 1, &mut out),
        Err(KernelError::BadLength { .. })
    ));
    assert!(matches!(
        k.matmul(ty, 64, &w, 1, &a[..34], 1, &mut out),
        Err(KernelError::BadLength { .. })
    ));
    assert!(matches!(
        k.matmul(ty, 64, &w, 1, &a, 1, &mut []),
        Err(KernelError::BadOutput { .. })
    ));
    assert_eq!(
        k.matmul(TensorType::Q8_K, 256, &[], 0, &[], 0, &mut []),
        Err(KernelError::Unsupported(TensorType::Q8_K))
    );
}

/// On aarch64 the NEON sets are the ones under test above (both where the CPU has the
/// dot-product extension), and their k-quant kernels take the scalar kernel's float steps in
/// every order, block by block: they equal it bit for bit at every batch size, one token included.
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_sets_run_and_match_scalar_k_quants_bitwise() {
    use wasm_chord_cpu::kernels::Isa;
    let sets = Kernels::available();
    let isas: Vec<Isa> = sets.iter().map(|k| k.isa).collect();
    let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
    let want = if dotprod { vec![Isa::Scalar, Isa::Neon, Isa::NeonDotprod] } else { vec![Isa::Scalar, Isa::Neon] };
    assert_eq!(isas, want);
    assert_eq!(Kernels::detect().isa, *want.last().unwrap());
    let scalar = Kernels::scalar();
    for simd in &sets[1..] {
        for ty in [TensorType::Q2_K, TensorType::Q3_K, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K, TensorType::IQ4_XS] {
            let mut r = rng(13);
            let (k, n_rows) = (768, 6);
            let w = weights(ty, &values(&mut r, n_rows * k));
            for n_tok in [1, 2, 3, 5, 8, 13] {
                let a = acts(ty, &values(&mut r, n_tok * k), k);
                let (mut want, mut got) = (vec![0.0f32; n_rows * n_tok], vec![0.0f32; n_rows * n_tok]);
                scalar.matmul(ty, k, &w, n_rows, &a, n_tok, &mut want).unwrap();
                simd.matmul(ty, k, &w, n_rows, &a, n_tok, &mut got).unwrap();
                assert_eq!(got, want, "{ty}, {n_tok} tokens ({:?})", simd.isa);
            }
        }
    }
}

/// Packed Q5_0 groups expand to blocks of the dequantized values plus 16 (scalar), and
/// every kernel set's expansion writes the scalar bytes, on random blocks (every bit pattern
/// of qh and the nibbles, any scale).
#[test]
fn q5_0_expansion_matches_dequantized_values_and_scalar() {
    use wasm_chord_cpu::kernels::packed::{expand_q5_0, PackedWeight, GROUP};
    let mut r = rng(77);
    let (rows, k) = (8, 32 * 5);
    let mut file: Vec<u8> = (0..rows * k / 32 * 22).map(|_| r.gen()).collect();
    for block in file.chunks_exact_mut(22) {
        block[..2].copy_from_slice(&f16::from_f32(r.gen_range(-2.0f32..2.0)).to_le_bytes());
    }
    let packed = PackedWeight::pack(TensorType::Q5_0, rows, k, &file, &mut |_| {}).unwrap();
    let groups = packed.groups(0, rows);
    let mut want = vec![0u8; groups.len() / 22 * 34];
    expand_q5_0(groups, &mut want);
    let nb = k / 32;
    let dequant = dequantize(TensorType::Q5_0, &file, rows * k);
    for row in 0..rows {
        for b in 0..nb {
            // Group `row / 4`, block `b`: d[4] then 32 values per row.
            let blk = &want[((row / GROUP) * nb + b) * GROUP * 34..][..GROUP * 34];
            let d = f16::from_le_bytes([blk[2 * (row % GROUP)], blk[2 * (row % GROUP) + 1]]).to_f32();
            for j in 0..32 {
                let q = blk[2 * GROUP + 32 * (row % GROUP) + j];
                assert!(q < 32, "row {row} block {b} value {j}: {q}");
                assert_eq!((q as f32 - 16.0) * d, dequant[row * k + b * 32 + j], "row {row} block {b} value {j}");
            }
        }
    }
    for set in Kernels::available() {
        let mut got = vec![0u8; want.len()];
        set.expand_q5_0(groups, &mut got);
        assert_eq!(got, want, "{:?}", set.isa);
    }
}
