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
    fn axpy_matches_f64() {
        let mut r = rng(2);
        let x = randn(&mut r, 33, 2.0);
        let mut y = randn(&mut r, 33, 2.0);
        let want: Vec<f64> = y.iter().zip(&x).map(|(y, x)| *y as f64 + 0.5 * *x as f64).collect();
        axpy_f32(&mut y, 0.5, &x);
        assert!(norm_err(&y, &want) < 1e-6);
    }
}
