//! Copies: activation rows into the f16 cache, and row gathers.

use half::slice::HalfFloatSliceExt;
use wasm_chord_core::backend::{BackendError, Op};

use crate::tensor::{CpuCache, CpuTensor};

/// Writes `x`'s rows into cache rows `start..`, rounded to f16.
pub fn store_kv(cache: &mut CpuCache, start: usize, x: &CpuTensor) -> Result<(), BackendError> {
    if x.cols != cache.cols || start + x.rows > cache.capacity {
        return Err(BackendError::Shape {
            op: Op::StoreKv,
            detail: format!("{} rows of {} at {start} into a cache of {} rows of {}", x.rows, x.cols, cache.capacity, cache.cols),
        });
    }
    cache.data[start * cache.cols..(start + x.rows) * cache.cols].convert_from_f32_slice(&x.data);
    Ok(())
}

/// `out[i] = x[rows[i]]`.
pub fn copy_rows(x: &CpuTensor, rows: &[usize], out: &mut CpuTensor) -> Result<(), BackendError> {
    if out.rows != rows.len() || out.cols != x.cols || rows.iter().any(|&r| r >= x.rows) {
        return Err(BackendError::Shape {
            op: Op::CopyRows,
            detail: format!("rows {rows:?} of x [{}, {}] into out [{}, {}]", x.rows, x.cols, out.rows, out.cols),
        });
    }
    for (i, &r) in rows.iter().enumerate() {
        out.data[i * x.cols..(i + 1) * x.cols].copy_from_slice(x.row(r));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;
    use half::f16;

    #[test]
    fn store_rounds_to_f16_and_checks_capacity() {
        let mut r = rng(12);
        let x = CpuTensor { rows: 2, cols: 3, data: randn(&mut r, 6, 100.0) };
        let mut c = CpuCache { cols: 3, capacity: 4, data: vec![f16::ZERO; 12] };
        store_kv(&mut c, 1, &x).unwrap();
        for i in 0..6 {
            let got = c.data[3 + i].to_f64();
            assert!((got - x.data[i] as f64).abs() <= (x.data[i] as f64).abs() / 2048.0);
        }
        assert!(c.data[..3].iter().all(|v| *v == f16::ZERO));
        assert!(store_kv(&mut c, 3, &x).is_err());
    }

    #[test]
    fn gathers_rows() {
        let x = CpuTensor { rows: 3, cols: 2, data: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0] };
        let mut out = CpuTensor::zeros(2, 2);
        copy_rows(&x, &[2, 0], &mut out).unwrap();
        assert_eq!(out.data, vec![4.0, 5.0, 0.0, 1.0]);
        assert!(copy_rows(&x, &[3], &mut CpuTensor::zeros(1, 2)).is_err());
    }
}
