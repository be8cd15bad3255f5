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
        // A packed table's file pages were released at load: read its packed copy instead.
        let unpacked;
        let row = match &table.packed {
            Some(p) => {
                let mut bytes = vec![0u8; table.row_bytes];
                if !p.file_row(id, &mut bytes) {
                    return Err(BackendError::Other { op: Op::Embed, detail: format!("row {id} of a packed table of {} rows", table.rows) });
                }
                unpacked = bytes;
                &unpacked[..]
            }
            None => table.row(id),
        };
        quant::dequantize(table.ty, row, dst).map_err(|e| BackendError::Other { op: Op::Embed, detail: e.to_string() })?;
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

    /// A packed table gives back each row's file bytes, so the same embeddings.
    #[test]
    fn packed_tables_gather_the_file_rows() {
        let mut r = rng(6);
        for ty in [TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0, TensorType::IQ4_NL] {
            let (rows, cols) = (9, 96);
            let mut bytes = vec![0u8; ty.row_bytes(cols).unwrap() * rows];
            wasm_chord_core::quant::quantize(ty, &randn(&mut r, rows * cols, 1.0), &mut bytes).unwrap();
            let file = CpuWeight::new(ty, rows, cols, SharedBytes::from_vec(bytes)).unwrap();
            let packed = file.clone().packed_for(crate::kernels::Kernels::get());
            let Some(p) = &packed.packed else { continue };
            for id in 0..rows {
                let mut row = vec![0u8; file.row_bytes];
                assert!(p.file_row(id, &mut row));
                assert_eq!(row, file.row(id), "{ty} row {id}");
            }
            assert!(!p.file_row(rows, &mut vec![0u8; file.row_bytes]));
            let ids: Vec<u32> = (0..rows as u32).rev().collect();
            let (mut a, mut b) = (CpuTensor::zeros(rows, cols), CpuTensor::zeros(rows, cols));
            embed(&file, &ids, 0.5, &mut a).unwrap();
            embed(&packed, &ids, 0.5, &mut b).unwrap();
            assert_eq!(a, b, "{ty}");
        }
    }

    fn bytemuck_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
}
