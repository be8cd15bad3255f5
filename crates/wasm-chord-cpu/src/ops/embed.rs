//! Embedding gather: one dequantized table row per token id.

use wasm_chord_core::backend::{BackendError, Op};
use wasm_chord_core::quant;

use crate::tensor::{CpuTensor, CpuWeight};

/// `out[t] = table[ids[t]] * scale`.
pub fn embed(table: &CpuWeight, ids: &[u32], scale: f32, out: &mut CpuTensor) -> Result<(), BackendError> {
    if out.rows != ids.len() || out.cols != table.cols {
        return Err(BackendError::Shape {
            op: Op::Embed,
            detail: format!("{} ids of {} values into out [{}, {}]", ids.len(), table.cols, out.rows, out.cols),
        });
    }
    for (t, &id) in ids.iter().enumerate() {
        let id = id as usize;
        if id >= table.rows {
            return Err(BackendError::Other { op: Op::Embed, detail: format!("token id {id} outside a table of {} rows", table.rows) });
        }
        let dst = &mut out.data[t * table.cols..(t + 1) * table.cols];
        quant::dequantize(table.ty, table.row(id), dst).map_err(|e| BackendError::Other { op: Op::Embed, detail: e.to_string() })?;
        if scale != 1.0 {
            dst.iter_mut().for_each(|v| *v *= scale);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;
    use wasm_chord_core::backend::SharedBytes;
    use wasm_chord_core::TensorType;

    #[test]
    fn gathers_scaled_rows() {
        let mut r = rng(5);
        let values = randn(&mut r, 6 * 8, 1.0);
        let table = CpuWeight {
            ty: TensorType::F32,
            rows: 6,
            cols: 8,
            row_bytes: 32,
            bytes: SharedBytes::from_vec(bytemuck_bytes(&values)),
            packed: None,
        };
        let ids = [5u32, 0, 5, 2];
        let mut out = CpuTensor::zeros(4, 8);
        embed(&table, &ids, 2.5, &mut out).unwrap();
        let want: Vec<f64> = ids.iter().flat_map(|&i| values[i as usize * 8..][..8].iter().map(|v| *v as f64 * 2.5)).collect();
        assert!(norm_err(&out.data, &want) < 1e-7);
        assert!(embed(&table, &[6], 1.0, &mut CpuTensor::zeros(1, 8)).is_err());
    }

    fn bytemuck_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
}
