//! The CPU kernels, one file per op. Each is a plain scalar (auto-vectorizable) version; SIMD
//! versions will sit beside them and be tested against them. Every kernel is tested on seeded
//! random inputs against a float64 scalar reference in its file.

pub mod act_mul;
pub mod act_round;
pub mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_x86;
pub mod copy;
pub mod dot;
pub mod elementwise;
pub mod embed;
pub mod expf;
pub mod flash_attention;
pub mod matmul;
pub mod rms_norm;
pub mod rope;
pub mod softmax;

#[cfg(test)]
pub(crate) mod testutil {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    pub fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    pub fn randn(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| (rng.gen::<f32>() * 2.0 - 1.0) * scale).collect()
    }

    /// Largest |a - b| / (max |b| over all elements), the normalized error llama.cpp's
    /// test-backend-ops uses in spirit.
    pub fn norm_err(a: &[f32], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max) / scale
    }
}
