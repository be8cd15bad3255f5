//! Element-wise add and scale.

use wasm_chord_core::backend::{BackendError, Op};

use crate::tensor::CpuTensor;

/// `acc += x`.
pub fn add(acc: &mut CpuTensor, x: &CpuTensor) -> Result<(), BackendError> {
    if acc.rows != x.rows || acc.cols != x.cols {
        return Err(BackendError::Shape { op: Op::Add, detail: format!("[{}, {}] += [{}, {}]", acc.rows, acc.cols, x.rows, x.cols) });
    }
    acc.data.iter_mut().zip(&x.data).for_each(|(a, b)| *a += b);
    Ok(())
}

/// `x *= s`.
pub fn scale(x: &mut CpuTensor, s: f32) {
    x.data.iter_mut().for_each(|v| *v *= s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    #[test]
    fn add_and_scale_match_f64() {
        let mut r = rng(13);
        let a0 = randn(&mut r, 12, 3.0);
        let b = CpuTensor { rows: 3, cols: 4, data: randn(&mut r, 12, 3.0) };
        let mut a = CpuTensor { rows: 3, cols: 4, data: a0.clone() };
        add(&mut a, &b).unwrap();
        scale(&mut a, 0.25);
        let want: Vec<f64> = a0.iter().zip(&b.data).map(|(x, y)| (*x as f64 + *y as f64) * 0.25).collect();
        assert!(norm_err(&a.data, &want) < 1e-7);
        assert!(add(&mut a, &CpuTensor::zeros(4, 3)).is_err());
    }
}
