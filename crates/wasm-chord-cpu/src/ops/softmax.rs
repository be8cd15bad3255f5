//! Softmax and top-k over rows, for sampling.

use wasm_chord_core::backend::{BackendError, Op};

use crate::tensor::CpuTensor;

/// Softmax of every row in place, the sum accumulated in f64.
pub fn softmax(x: &mut CpuTensor) {
    if x.cols == 0 {
        return;
    }
    for row in x.data.chunks_exact_mut(x.cols) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        let mut sum = 0.0f64;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v as f64;
        }
        let inv = (1.0 / sum) as f32;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// The `k` largest values of row `row`, largest first; equal values keep index order. NaNs
/// sort last.
pub fn top_k(x: &CpuTensor, row: usize, k: usize) -> Result<Vec<(u32, f32)>, BackendError> {
    if row >= x.rows {
        return Err(BackendError::Shape { op: Op::TopK, detail: format!("row {row} of {}", x.rows) });
    }
    let mut idx: Vec<(u32, f32)> = x.row(row).iter().enumerate().map(|(i, v)| (i as u32, *v)).collect();
    let k = k.min(idx.len());
    let order = |a: &(u32, f32), b: &(u32, f32)| {
        let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
        key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(&b.0))
    };
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, order);
    }
    idx.truncate(k);
    idx.sort_by(order);
    Ok(idx)
}

/// The column of the largest value of row `row`, ties to the lower index, NaNs last: the
/// first entry of [`top_k`]`(x, row, 1)` without its copy of the row. The maximum is found in
/// eight lanes (vector max instructions), then its first position.
pub fn argmax(x: &CpuTensor, row: usize) -> Result<u32, BackendError> {
    if row >= x.rows || x.cols == 0 {
        return Err(BackendError::Shape { op: Op::TopK, detail: format!("argmax of row {row} of [{}, {}]", x.rows, x.cols) });
    }
    let values = x.row(row);
    // `v > m` is false for NaN, so NaNs never become the maximum.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    let first = |f: &dyn Fn(f32) -> bool| values.iter().position(|&v| f(v)).unwrap_or(0) as u32;
    Ok(if max == f32::NEG_INFINITY {
        // Every value is NaN or -inf, all equal last in `top_k`'s order: the first wins.
        0
    } else if max == 0.0 {
        // `top_k` orders +0 above -0.
        values.iter().position(|v| v.to_bits() == 0).map_or_else(|| first(&|v| v == 0.0), |i| i as u32)
    } else {
        first(&|v| v == max)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    #[test]
    fn softmax_matches_f64() {
        let mut r = rng(14);
        let data = randn(&mut r, 2 * 1000, 20.0);
        let mut x = CpuTensor { rows: 2, cols: 1000, data: data.clone() };
        softmax(&mut x);
        let want: Vec<f64> = data
            .chunks(1000)
            .flat_map(|c| {
                let m = c.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v as f64));
                let s: f64 = c.iter().map(|v| (*v as f64 - m).exp()).sum();
                c.iter().map(move |v| (*v as f64 - m).exp() / s).collect::<Vec<_>>()
            })
            .collect();
        assert!(norm_err(&x.data, &want) < 1e-6);
    }

    #[test]
    fn top_k_orders_by_value_then_index() {
        let x = CpuTensor { rows: 1, cols: 6, data: vec![1.0, 5.0, 3.0, 5.0, f32::NAN, -2.0] };
        assert_eq!(top_k(&x, 0, 3).unwrap(), vec![(1, 5.0), (3, 5.0), (2, 3.0)]);
        assert_eq!(top_k(&x, 0, 10).unwrap().len(), 6);
        assert!(top_k(&x, 1, 1).is_err());
        let mut r = rng(15);
        let data = randn(&mut r, 500, 1.0);
        let x = CpuTensor { rows: 1, cols: 500, data: data.clone() };
        let mut sorted: Vec<(u32, f32)> = data.iter().enumerate().map(|(i, v)| (i as u32, *v)).collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(top_k(&x, 0, 10).unwrap(), sorted[..10].to_vec());
    }

    #[test]
    fn argmax_is_top_k_first() {
        let mut r = rng(16);
        let mut cases = vec![
            vec![1.0, 5.0, 3.0, 5.0, f32::NAN, -2.0],
            vec![f32::NAN, f32::NAN],
            vec![f32::NEG_INFINITY, f32::NAN, f32::NEG_INFINITY],
            vec![-0.0, 0.0],
            vec![2.0],
            vec![f32::NAN, f32::NEG_INFINITY],
            vec![-1.0, -0.0, 3.0, f32::INFINITY, 0.0, f32::INFINITY, -0.0, 0.0, 1.0, f32::NAN],
            vec![-3.0, -0.0, -1.0, 0.0, -0.0, -2.0, -5.0, -7.0, -9.0, -0.5, 0.0],
            vec![-3.0, -0.0, -1.0, -0.0, -2.0, -5.0, -7.0, -9.0, -11.0, -0.5],
        ];
        for n in [7, 8, 9, 17, 64] {
            let mut v = randn(&mut r, n, 1.0);
            let i = n / 2;
            v[i] = 9.0;
            v[n - 1] = 9.0;
            cases.push(v);
        }
        cases.push(randn(&mut r, 1000, 1.0));
        for data in cases {
            let x = CpuTensor { rows: 1, cols: data.len(), data: data.clone() };
            assert_eq!(argmax(&x, 0).unwrap(), top_k(&x, 0, 1).unwrap()[0].0, "{data:?}");
        }
        assert!(argmax(&CpuTensor { rows: 1, cols: 0, data: vec![] }, 0).is_err());
        assert!(argmax(&CpuTensor { rows: 1, cols: 2, data: vec![0.0; 2] }, 1).is_err());
    }
}
