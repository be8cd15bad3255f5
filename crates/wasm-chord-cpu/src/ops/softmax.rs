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
/// first entry of [`top_k`]`(x, row, 1)` in one pass, without its copy of the row.
pub fn argmax(x: &CpuTensor, row: usize) -> Result<u32, BackendError> {
    if row >= x.rows || x.cols == 0 {
        return Err(BackendError::Shape { op: Op::TopK, detail: format!("argmax of row {row} of [{}, {}]", x.rows, x.cols) });
    }
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    let values = x.row(row);
    let mut best = 0;
    for (i, &v) in values.iter().enumerate().skip(1) {
        if key(v).total_cmp(&key(values[best])).is_gt() {
            best = i;
        }
    }
    Ok(best as u32)
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
        ];
        cases.push(randn(&mut r, 1000, 1.0));
        for data in cases {
            let x = CpuTensor { rows: 1, cols: data.len(), data: data.clone() };
            assert_eq!(argmax(&x, 0).unwrap(), top_k(&x, 0, 1).unwrap()[0].0, "{data:?}");
        }
        assert!(argmax(&CpuTensor { rows: 1, cols: 0, data: vec![] }, 0).is_err());
        assert!(argmax(&CpuTensor { rows: 1, cols: 2, data: vec![0.0; 2] }, 1).is_err());
    }
}
