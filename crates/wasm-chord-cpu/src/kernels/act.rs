//! Activation quantizers: an f32 activation row becomes the "vec_dot_type" of the weights it
//! meets, exactly as ggml's x86 `quantize_row_q8_0` / `quantize_row_q8_1` / `quantize_row_q8_K`
//! write it, so the integer dot products see the same numbers llama.cpp's do.

use bytemuck::{Pod, Zeroable};
use half::{bf16, f16};
use wasm_chord_core::quant::{BlockQ8K, BlockQ8_0, QK_K};
use wasm_chord_core::TensorType;

/// 32 activations `d * q` with the block sum `s = d * Σq` that the Q4_1/Q5_1 dot products
/// use for the weights' offset term (ggml's `block_q8_1`; only activations use it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

/// The form activations take before they are dotted with weights of some type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q8_1,
    Q8K,
}

impl ActType {
    /// ggml's `vec_dot_type` for weights of type `ty`.
    pub fn for_weight(ty: TensorType) -> Self {
        use TensorType::*;
        match ty {
            F32 => Self::F32,
            F16 => Self::F16,
            BF16 => Self::BF16,
            Q4_0 | Q5_0 | Q8_0 | IQ4_NL => Self::Q8_0,
            Q4_1 | Q5_1 => Self::Q8_1,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K | IQ4_XS => Self::Q8K,
        }
    }

    /// Elements per block.
    pub fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q8K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q8_0 => std::mem::size_of::<BlockQ8_0>(),
            Self::Q8_1 => std::mem::size_of::<BlockQ8_1>(),
            Self::Q8K => std::mem::size_of::<BlockQ8K>(),
        }
    }

    /// Bytes of a quantized row of `n` activations; `None` unless `n` is whole blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        (n % self.block_len() == 0).then(|| n / self.block_len() * self.block_bytes())
    }
}

/// Quantizes the activation row `src` into `dst` (`act.row_bytes(src.len())` bytes).
/// Returns `false` (and writes nothing) if the lengths do not fit.
pub fn quantize_act(act: ActType, src: &[f32], dst: &mut [u8]) -> bool {
    if act.row_bytes(src.len()) != Some(dst.len()) {
        return false;
    }
    let bb = act.block_bytes();
    let blocks = src.chunks_exact(act.block_len()).zip(dst.chunks_exact_mut(bb));
    match act {
        ActType::F32 => blocks.for_each(|(x, y)| y.copy_from_slice(&x[0].to_le_bytes())),
        ActType::F16 => blocks.for_each(|(x, y)| y.copy_from_slice(&f16::from_f32(x[0]).to_le_bytes())),
        ActType::BF16 => blocks.for_each(|(x, y)| y.copy_from_slice(&bf16::from_f32(x[0]).to_le_bytes())),
        ActType::Q8_0 => blocks.for_each(|(x, y)| {
            let (d, qs, _) = q8_32(x);
            y.copy_from_slice(bytemuck::bytes_of(&BlockQ8_0 { d, qs }));
        }),
        ActType::Q8_1 => blocks.for_each(|(x, y)| {
            let (d, qs, s) = q8_32(x);
            y.copy_from_slice(bytemuck::bytes_of(&BlockQ8_1 { d, s, qs }));
        }),
        ActType::Q8K => blocks.for_each(|(x, y)| y.copy_from_slice(bytemuck::bytes_of(&q8_k(x)))),
    }
    true
}

/// Quantizes each `k`-long row of `x` (tokens, row-major) into one buffer of
/// `act.row_bytes(k)`-byte rows, as [`super::Kernels::matmul`] takes them; `None` if `k` is not
/// whole blocks or `x` not whole rows.
pub fn quantize_act_rows(act: ActType, x: &[f32], k: usize) -> Option<Vec<u8>> {
    let rb = act.row_bytes(k)?;
    if k == 0 || x.len() % k != 0 {
        return None;
    }
    let mut out = vec![0u8; rb * (x.len() / k)];
    for (src, dst) in x.chunks_exact(k).zip(out.chunks_exact_mut(rb)) {
        quantize_act(act, src, dst);
    }
    Some(out)
}

/// ggml's AVX2 `quantize_row_q8_0`/`q8_1` on one block of 32: `d = amax / 127` (stored f16),
/// `q = round(x * (127 / amax))` with ties to even, and `s = d * Σq` (stored f16). Returns
/// `(d, qs, s)`.
fn q8_32(x: &[f32]) -> (f16, [i8; 32], f16) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; 32];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        // The `as` cast saturates as `packs` does.
        *q = (v * id).round_ties_even() as i8;
        sum += *q as i32;
    }
    (f16::from_f32(d), qs, f16::from_f32(d * sum as f32))
}

/// ggml's `quantize_row_q8_K_ref` on one block of 256: the scale comes from the signed value of
/// largest magnitude, `q = min(127, round(-127 / max * x))` with ties to even (ggml's
/// `nearest_int`), `d = 1 / iscale`, and the sums of each 16 quants.
fn q8_k(x: &[f32]) -> BlockQ8K {
    let mut y = BlockQ8K::zeroed();
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        return y;
    }
    let iscale = -127.0 / max;
    for (q, &v) in y.qs.iter_mut().zip(x) {
        *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
    }
    for (s, g) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
        *s = g.iter().map(|&q| q as i16).sum();
    }
    y.d = 1.0 / iscale;
    y
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn row(seed: u64, n: usize) -> Vec<f32> {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| r.gen_range(-3.0f32..3.0)).collect()
    }

    /// Q8_K must be byte for byte core's port of `quantize_row_q8_K_ref`.
    #[test]
    fn q8_k_matches_core_reference() {
        let x = row(1, 4 * QK_K);
        let mut ours = vec![0u8; ActType::Q8K.row_bytes(x.len()).unwrap()];
        assert!(quantize_act(ActType::Q8K, &x, &mut ours));
        let mut theirs = vec![0u8; ours.len()];
        wasm_chord_core::quant::quantize(TensorType::Q8_K, &x, &mut theirs).unwrap();
        assert_eq!(ours, theirs);
    }

    /// Q8_0 and Q8_1 hold the same quants; `s` is `d * Σq`; the rounding is within half a step.
    #[test]
    fn q8_0_and_q8_1_agree_and_round_to_nearest() {
        let mut x = row(2, 96);
        x[32..64].fill(0.0); // an all-zero block must give d = 0, q = 0
        let mut a = vec![0u8; ActType::Q8_0.row_bytes(96).unwrap()];
        let mut b = vec![0u8; ActType::Q8_1.row_bytes(96).unwrap()];
        assert!(quantize_act(ActType::Q8_0, &x, &mut a));
        assert!(quantize_act(ActType::Q8_1, &x, &mut b));
        for (i, xb) in x.chunks(32).enumerate() {
            let qa: BlockQ8_0 = bytemuck::pod_read_unaligned(&a[i * 34..(i + 1) * 34]);
            let qb: BlockQ8_1 = bytemuck::pod_read_unaligned(&b[i * 36..(i + 1) * 36]);
            assert_eq!(qa.qs, qb.qs);
            assert_eq!(qa.d, qb.d);
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // `s` uses the f32 scale, before its rounding to f16.
            let sum: i32 = qb.qs.iter().map(|&q| q as i32).sum();
            assert_eq!(qb.s, f16::from_f32(amax / 127.0 * sum as f32));
            for (&q, &v) in qa.qs.iter().zip(xb) {
                let exact = if amax == 0.0 { 0.0 } else { v * 127.0 / amax };
                assert!((q as f32 - exact).abs() <= 0.5 + 1e-4, "{v} -> {q}");
            }
        }
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let x = row(3, 40);
        let mut out = vec![0u8; 68];
        assert!(!quantize_act(ActType::Q8_0, &x, &mut out));
        assert!(!quantize_act(ActType::Q8_0, &x[..32], &mut out));
    }
}
