//! How a matmul is split (threads, tasks, packed weight layouts, SIMD activation quantizers)
//! must not change a single bit: every output equals that of one unsplit call of the same
//! kernel set over the file's rows, on activations quantized by the scalar reference.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::backend::SharedBytes;
use wasm_chord_core::quant;
use wasm_chord_core::TensorType;
use wasm_chord_cpu::kernels::{quantize_act, ActType, Kernels};
use wasm_chord_cpu::ops::matmul::matmul;
use wasm_chord_cpu::threads::Threads;
use wasm_chord_cpu::{CpuTensor, CpuWeight};

/// Every weight type with a fused kernel.
const TYPES: [TensorType; 15] = {
    use TensorType::*;
    [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS]
};

fn values(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| (0..4).map(|_| r.gen_range(-1.0f32..1.0)).sum::<f32>() * if r.gen_range(0..50) == 0 { 8.0 } else { 1.0 }).collect()
}

fn weight(ty: TensorType, rows: usize, cols: usize, values: &[f32]) -> CpuWeight {
    let row_bytes = ty.row_bytes(cols).unwrap();
    let mut bytes = vec![0u8; row_bytes * rows];
    quant::quantize(ty, values, &mut bytes).unwrap();
    CpuWeight { ty, rows, cols, row_bytes, bytes: SharedBytes::from_vec(bytes), packed: None }
}

#[test]
fn simd_activation_quantizers_write_the_scalar_bytes() {
    let mut r = ChaCha8Rng::seed_from_u64(1);
    for set in Kernels::available() {
        for act in [ActType::Q8_0, ActType::Q8_1, ActType::Q8K, ActType::F16] {
            let n = 256 * 6;
            let mut x = values(&mut r, n);
            // An all-zero block, a block whose largest magnitude is negative and repeated with
            // both signs, and values on rounding ties.
            x[..256].fill(0.0);
            x[300] = -9.0;
            x[301] = 9.0;
            for (i, v) in x[512..768].iter_mut().enumerate() {
                *v = (i as f32 - 127.0) * 0.5;
            }
            let rb = act.row_bytes(n).unwrap();
            let (mut want, mut got) = (vec![0u8; rb], vec![0u8; rb]);
            assert!(quantize_act(act, &x, &mut want));
            assert!(set.quantize_act(act, &x, &mut got));
            assert_eq!(want, got, "{act:?} ({:?})", set.isa);
        }
    }
}

#[test]
fn matmul_is_bit_identical_for_every_split() {
    let kernels = Kernels::get();
    let thread_sets: Vec<Threads> = [1, 2, 3].into_iter().map(Threads::new).collect();
    for ty in TYPES {
        let mut r = ChaCha8Rng::seed_from_u64(200 + ty.ggml_id() as u64);
        let k = match ty.block_len() {
            1 => 72,
            32 => 32 * 5,
            _ => 256 * 2,
        };
        for n_out in [37, 300] {
            let w = weight(ty, n_out, k, &values(&mut r, n_out * k));
            let packed = w.clone().packed_for(kernels);
            // Every 32-weight block type packs on x86 with AVX2.
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") && ty.block_len() == 32 {
                assert!(packed.packed.is_some(), "{ty} did not pack");
            }
            let act = ActType::for_weight(ty);
            let rb = act.row_bytes(k).unwrap();
            for n_tok in [1, 2, 3, 5, 8, 33] {
                let x = CpuTensor { rows: n_tok, cols: k, data: values(&mut r, n_tok * k) };
                let mut a = vec![0u8; rb * n_tok];
                for (src, dst) in x.data.chunks(k).zip(a.chunks_mut(rb)) {
                    assert!(quantize_act(act, src, dst));
                }
                // One call over the whole product, `[n_out, n_tok]`.
                let mut whole = vec![0.0f32; n_out * n_tok];
                kernels.matmul(ty, k, w.bytes.bytes(), n_out, &a, n_tok, &mut whole).unwrap();
                let want: Vec<f32> = (0..n_tok).flat_map(|t| (0..n_out).map(move |o| (t, o))).map(|(t, o)| whole[o * n_tok + t]).collect();
                for (w, layout) in [(&w, "file"), (&packed, "packed")] {
                    for threads in &thread_sets {
                        let mut out = CpuTensor::zeros(n_tok, n_out);
                        matmul(threads, w, None, &x, &mut out, true).unwrap();
                        let same = out.data.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{ty} ({layout} rows): {n_out} rows, {n_tok} tokens, {} threads", threads.count());
                    }
                }
            }
        }
    }
}

/// The fused `matmul_act_mul` and `matmul_add` give the bits of their unfused compositions
/// (two matmuls and `act_mul`; a matmul, its bias and `add`), in either layout, for every split.
#[test]
fn fused_ops_equal_their_compositions() {
    use wasm_chord_core::backend::Activation;
    use wasm_chord_cpu::ops::{act_mul::act_mul, elementwise::add, matmul::matmul_act_mul, matmul::matmul_add};
    let kernels = Kernels::get();
    let thread_sets: Vec<Threads> = [1, 2, 3].into_iter().map(Threads::new).collect();
    let bits = |t: &CpuTensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    use TensorType::*;
    // Pairs of gate/up types; the last pair differs, which takes the unfused path.
    for (gt, ut) in [(Q4_1, Q4_1), (Q5_0, Q5_0), (Q8_0, Q8_0), (Q4_K, Q4_K), (Q6_K, Q6_K), (F16, F16), (Q4_K, Q6_K)] {
        let mut r = ChaCha8Rng::seed_from_u64(300 + gt.ggml_id() as u64);
        let k = if gt.block_len() == 256 || ut.block_len() == 256 { 512 } else { 160 };
        for n_out in [37, 300] {
            let gate = weight(gt, n_out, k, &values(&mut r, n_out * k));
            let up = weight(ut, n_out, k, &values(&mut r, n_out * k));
            let bias = weight(F32, 1, n_out, &values(&mut r, n_out));
            let (gate_p, up_p) = (gate.clone().packed_for(kernels), up.clone().packed_for(kernels));
            for n_tok in [1, 2, 5, 33] {
                let x = CpuTensor { rows: n_tok, cols: k, data: values(&mut r, n_tok * k) };
                let acc0 = CpuTensor { rows: n_tok, cols: n_out, data: values(&mut r, n_tok * n_out) };
                for threads in &thread_sets {
                    for (g, u) in [(&gate, &up), (&gate_p, &up_p)] {
                        for act in [Activation::Silu, Activation::GeluTanh] {
                            let (mut gv, mut uv, mut want) = (CpuTensor::zeros(n_tok, n_out), CpuTensor::zeros(n_tok, n_out), CpuTensor::zeros(n_tok, n_out));
                            matmul(threads, g, None, &x, &mut gv, true).unwrap();
                            matmul(threads, u, None, &x, &mut uv, true).unwrap();
                            act_mul(threads, act, &gv, &uv, &mut want, true).unwrap();
                            let mut got = CpuTensor::zeros(n_tok, n_out);
                            matmul_act_mul(threads, act, g, u, &x, &mut got, true).unwrap();
                            assert_eq!(bits(&got), bits(&want), "{gt}/{ut} {act:?}: {n_out} rows, {n_tok} tokens, {} threads", threads.count());
                        }
                        for b in [None, Some(&bias)] {
                            let mut y = CpuTensor::zeros(n_tok, n_out);
                            matmul(threads, g, b, &x, &mut y, true).unwrap();
                            let mut want = acc0.clone();
                            add(&mut want, &y).unwrap();
                            let mut got = acc0.clone();
                            matmul_add(threads, g, b, &x, &mut got, true).unwrap();
                            assert_eq!(bits(&got), bits(&want), "{gt} add (bias {}): {n_out} rows, {n_tok} tokens, {} threads", b.is_some(), threads.count());
                        }
                    }
                }
            }
        }
    }
}
