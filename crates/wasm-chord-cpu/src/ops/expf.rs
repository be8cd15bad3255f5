//! ggml's vectorized `expf` (AVX2/FMA `ggml_v_expf`, after ARM's optimized routines), one lane
//! at a time. llama.cpp's CPU SiLU and softmax use it; its results differ from libm's in the
//! last bits, and those bits decide later 8-bit roundings, so matching llama.cpp needs it.

/// `ggml_v_expf` for one lane (maximum error 1.45 ulp + 0.5; flushes above 88.38 and below -103.97).
#[inline]
pub fn ggml_expf(x: f32) -> f32 {
    let c = |bits: u32| f32::from_bits(bits);
    let r = c(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(c(0x3fb8_aa3b), r); // x / ln 2, rounded to an integer in the low mantissa bits
    let n = z - r;
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x));
    let e = z.to_bits().wrapping_shl(23);
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6) * b);
    if n.abs() <= 126.0 {
        return k.mul_add(j, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;
    use rand::Rng;

    #[test]
    fn close_to_f64_exp() {
        let mut r = rng(16);
        for _ in 0..100_000 {
            let x: f32 = r.gen_range(-100.0..88.0);
            let want = (x as f64).exp();
            let got = ggml_expf(x) as f64;
            // 2 ulp, or denormal range.
            assert!((got - want).abs() <= 2.5 * f32::EPSILON as f64 * want + 1e-44, "{x}: {got} vs {want}");
        }
        assert_eq!(ggml_expf(0.0), 1.0);
        assert_eq!(ggml_expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(ggml_expf(-200.0), 0.0);
    }
}
