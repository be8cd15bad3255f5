//! The f32 dot product under the matmul and attention kernels.

/// `sum a[i] * b[i]` over eight running partial sums, so the compiler can keep them in one
/// vector register (a single running sum would serialize on the adds).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

/// `y += a * x`.
#[inline]
pub fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `y = fma(a, x, y)` element-wise: one rounding per step, as a vector FMA accumulates.
pub fn fma_axpy(y: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA.
        return unsafe { fma_axpy_fma(y, a, x) };
    }
    fma_axpy_body(y, a, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn fma_axpy_fma(y: &mut [f32], a: f32, x: &[f32]) {
    fma_axpy_body(y, a, x)
}

#[inline(always)]
fn fma_axpy_body(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = a.mul_add(*x, *y);
    }
}

/// The summation orders of llama.cpp's two f16 dot products on AVX2, which its standard
/// attention uses for q·k and for the weighted sum of values (both operands already f16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F16Dot {
    /// tinyBLAS (llamafile's sgemm, taken for batches of two or more queries): one 8-lane FMA
    /// accumulator over the whole length (a multiple of 8), reduced `(hi + lo)` then pairwise.
    TinyBlas,
    /// `ggml_vec_dot_f16` (one query): four 8-lane FMA accumulators over runs of 32, reduced
    /// `(s0 + s2) + (s1 + s3)`, halves added, two horizontal adds; the tail past the last whole
    /// 32 is added in f64.
    VecDot,
}

impl F16Dot {
    /// How many partial sums the order keeps: element `i` goes to partial `i % lanes()`.
    pub fn lanes(self) -> usize {
        match self {
            Self::TinyBlas => 8,
            Self::VecDot => 32,
        }
    }

    /// Combines the partial sums (the first `lanes()` of `p`) in the order's reduction tree.
    pub fn reduce(self, p: &[f32; 32]) -> f32 {
        match self {
            Self::TinyBlas => ((p[4] + p[0]) + (p[6] + p[2])) + ((p[5] + p[1]) + (p[7] + p[3])),
            Self::VecDot => {
                let s: [f32; 8] = std::array::from_fn(|l| (p[l] + p[16 + l]) + (p[8 + l] + p[24 + l]));
                let t: [f32; 4] = std::array::from_fn(|k| s[k] + s[k + 4]);
                (t[0] + t[1]) + (t[2] + t[3])
            }
        }
    }

    /// `Σ a[i] b[i]` in this order (for `TinyBlas`, `a.len()` must be a multiple of 8; the
    /// callers fall back to `VecDot` otherwise, as llama.cpp does).
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has FMA.
            return unsafe { self.dot_fma(a, b) };
        }
        self.dot_body(a, b)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma")]
    unsafe fn dot_fma(self, a: &[f32], b: &[f32]) -> f32 {
        self.dot_body(a, b)
    }

    #[inline(always)]
    fn dot_body(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Self::TinyBlas => self.dot_lanes::<8>(a, b),
            Self::VecDot => self.dot_lanes::<32>(a, b),
        }
    }

    #[inline(always)]
    fn dot_lanes<const L: usize>(self, a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let whole = n / L * L;
        let mut p = [0.0f32; 32];
        for (x, y) in a[..whole].chunks_exact(L).zip(b[..whole].chunks_exact(L)) {
            for l in 0..L {
                p[l] = x[l].mul_add(y[l], p[l]);
            }
        }
        let mut sum = self.reduce(&p) as f64;
        for (x, y) in a[whole..n].iter().zip(&b[whole..n]) {
            sum += (x * y) as f64;
        }
        sum as f32
    }

    /// [`Self::reduce`] of `lanes()` rows of `n` partial sums each (`partial[c * n + i]` is
    /// partial `c` of output `i`), written to `out`; the tree runs over whole rows so it
    /// vectorizes. Overwrites `partial`.
    pub fn reduce_rows(self, partial: &mut [f32], out: &mut [f32]) {
        let n = out.len();
        let row = |c: usize| c * n..(c + 1) * n;
        // `dst[i] = (dst[i] + p[a][i]) + ...`: pairwise row additions in place.
        let add = |p: &mut [f32], dst: usize, src: usize| {
            let (lo, hi) = p.split_at_mut(src * n);
            lo[row(dst)].iter_mut().zip(&hi[..n]).for_each(|(d, s)| *d += *s);
        };
        match self {
            Self::TinyBlas => {
                // ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7))
                for c in 0..4 {
                    add(partial, c, c + 4);
                }
                add(partial, 0, 2);
                add(partial, 1, 3);
                add(partial, 0, 1);
            }
            Self::VecDot => {
                // s_l = (p_l + p_{16+l}) + (p_{8+l} + p_{24+l}); t_k = s_k + s_{k+4};
                // (t0 + t1) + (t2 + t3)
                for l in 0..16 {
                    add(partial, l, l + 16);
                }
                for l in 0..8 {
                    add(partial, l, l + 8);
                }
                for k in 0..4 {
                    add(partial, k, k + 4);
                }
                add(partial, 0, 1);
                add(partial, 2, 3);
                add(partial, 0, 2);
            }
        }
        out.copy_from_slice(&partial[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    #[test]
    fn dot_matches_f64() {
        let mut r = rng(1);
        for n in [0, 1, 7, 8, 9, 64, 1000] {
            let a = randn(&mut r, n, 1.0);
            let b = randn(&mut r, n, 1.0);
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let got = dot_f32(&a, &b) as f64;
            assert!((got - want).abs() <= 1e-5 * (n as f64).max(1.0), "n={n}: {got} vs {want}");
        }
    }

    #[test]
    fn f16_dot_orders_match_f64() {
        let mut r = rng(3);
        for (order, n) in [(F16Dot::TinyBlas, 64), (F16Dot::TinyBlas, 256), (F16Dot::VecDot, 64), (F16Dot::VecDot, 80), (F16Dot::VecDot, 7)] {
            let a = randn(&mut r, n, 1.0);
            let b = randn(&mut r, n, 1.0);
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let got = order.dot(&a, &b) as f64;
            assert!((got - want).abs() <= 1e-5 * n as f64, "{order:?} n={n}: {got} vs {want}");
        }
        // The partials of `fma_axpy` reduce to the same dot product.
        let (a, b) = (randn(&mut r, 96, 1.0), randn(&mut r, 96, 1.0));
        let mut p = [0.0f32; 32];
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let mut one = [p[i % 32]];
            fma_axpy(&mut one, *x, &[*y]);
            p[i % 32] = one[0];
        }
        assert_eq!(F16Dot::VecDot.reduce(&p), F16Dot::VecDot.dot(&a, &b));
        // The row-wise tree is the same tree.
        for order in [F16Dot::TinyBlas, F16Dot::VecDot] {
            let n = 5;
            let rows = randn(&mut r, order.lanes() * n, 1.0);
            let mut out = vec![0.0f32; n];
            order.reduce_rows(&mut rows.clone(), &mut out);
            for (i, o) in out.iter().enumerate() {
                let lane: [f32; 32] = std::array::from_fn(|c| if c < order.lanes() { rows[c * n + i] } else { 0.0 });
                assert_eq!(*o, order.reduce(&lane), "{order:?} output {i}");
            }
        }
    }

    #[test]
    fn axpy_matches_f64() {
        let mut r = rng(2);
        let x = randn(&mut r, 33, 2.0);
        let mut y = randn(&mut r, 33, 2.0);
        let want: Vec<f64> = y.iter().zip(&x).map(|(y, x)| *y as f64 + 0.5 * *x as f64).collect();
        axpy_f32(&mut y, 0.5, &x);
        assert!(norm_err(&y, &want) < 1e-6);
    }
}
