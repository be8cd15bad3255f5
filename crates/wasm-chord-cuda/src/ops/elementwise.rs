//! Gated activations, add, scale, row gather, the cache store (f16 or q8_0) and the row softmax; see
//! `kernels/elementwise.cu`.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use wasm_chord_core::backend::{Activation, BackendError, Op};

use super::{i32_of, launch_err, linear, op_err};
use crate::backend::{CacheData, CudaCache, CudaTensor};
use crate::device::CudaDevice;
use crate::kernels::KernelFile;

pub const SOURCE: KernelFile = KernelFile { name: "elementwise", source: include_str!("../../kernels/elementwise.cu") };

fn same_shape(op: Op, a: &CudaTensor, b: &CudaTensor) -> Result<(), BackendError> {
    if a.rows != b.rows || a.cols != b.cols {
        return Err(BackendError::Shape { op, detail: format!("[{}, {}] vs [{}, {}]", a.rows, a.cols, b.rows, b.cols) });
    }
    Ok(())
}

pub fn act_mul(dev: &CudaDevice, act: Activation, gate: &CudaTensor, up: &CudaTensor, out: &mut CudaTensor) -> Result<(), BackendError> {
    let op = Op::ActMul;
    same_shape(op, gate, up)?;
    same_shape(op, gate, out)?;
    let n = gate.len() as u64;
    let which: i32 = match act {
        Activation::Silu => 0,
        Activation::GeluTanh => 1,
    };
    let f = dev.function("act_mul").map_err(op_err(op))?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&gate.data).arg(&up.data).arg(&mut out.data).arg(&n).arg(&which);
    // SAFETY: matches `act_mul`; all three buffers hold `n` values.
    unsafe { b.launch(linear(gate.len())?) }.map_err(launch_err(op))?;
    Ok(())
}

pub fn add(dev: &CudaDevice, acc: &mut CudaTensor, x: &CudaTensor) -> Result<(), BackendError> {
    let op = Op::Add;
    same_shape(op, acc, x)?;
    let cfg = linear(acc.len())?;
    let n = acc.len() as u64;
    let f = dev.function("add").map_err(op_err(op))?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&mut acc.data).arg(&x.data).arg(&n);
    // SAFETY: matches `add`; both buffers hold `n` values.
    unsafe { b.launch(cfg) }.map_err(launch_err(op))?;
    Ok(())
}

pub fn scale(dev: &CudaDevice, x: &mut CudaTensor, s: f32) -> Result<(), BackendError> {
    let op = Op::Scale;
    let cfg = linear(x.len())?;
    let n = x.len() as u64;
    let f = dev.function("scale").map_err(op_err(op))?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&mut x.data).arg(&s).arg(&n);
    // SAFETY: matches `scale`.
    unsafe { b.launch(cfg) }.map_err(launch_err(op))?;
    Ok(())
}

/// `out[i] = x[rows[i]]`; `rows` on the device, already checked against `x`.
pub fn copy_rows(dev: &CudaDevice, x: &CudaTensor, rows: &CudaSlice<i32>, out: &mut CudaTensor) -> Result<(), BackendError> {
    let op = Op::CopyRows;
    if out.rows != rows.len() || out.cols != x.cols {
        return Err(BackendError::Shape { op, detail: format!("{} rows of x [{}, {}] into out [{}, {}]", rows.len(), x.rows, x.cols, out.rows, out.cols) });
    }
    if out.rows == 0 {
        return Ok(());
    }
    let f = dev.function("copy_rows").map_err(op_err(op))?;
    let cols = i32_of(op, "cols", x.cols)?;
    let cfg = LaunchConfig { grid_dim: (i32_of(op, "rows", out.rows)? as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&x.data).arg(rows).arg(&mut out.data).arg(&cols);
    // SAFETY: matches `copy_rows`; every row index was checked against `x`.
    unsafe { b.launch(cfg) }.map_err(launch_err(op))?;
    Ok(())
}

/// Writes the rows of `x` into cache rows `start..start + x.rows`, rounded to f16.
pub fn store_kv(dev: &CudaDevice, cache: &mut CudaCache, start: usize, x: &CudaTensor) -> Result<(), BackendError> {
    let op = Op::StoreKv;
    if x.cols != cache.cols || start + x.rows > cache.capacity {
        return Err(BackendError::Shape {
            op,
            detail: format!("{} rows of {} at {start} into a cache of {} rows of {}", x.rows, x.cols, cache.capacity, cache.cols),
        });
    }
    let n = x.rows * x.cols;
    if n == 0 {
        return Ok(());
    }
    let first = start * cache.cols;
    match &mut cache.data {
        CacheData::F16(data) => {
            let f = dev.function("store_f16").map_err(op_err(op))?;
            let mut dst = data.slice_mut(first..first + n);
            let n64 = n as u64;
            let mut b = dev.stream().launch_builder(&f);
            b.arg(&x.data).arg(&mut dst).arg(&n64);
            // SAFETY: matches `store_f16`; `dst` holds exactly `n` values.
            unsafe { b.launch(linear(n)?) }.map_err(launch_err(op))?;
        }
        CacheData::Q8_0 { qs, d } => {
            // Rows are whole blocks of 32 (checked when the cache was made), one warp per block.
            let f = dev.function("store_q8_0").map_err(op_err(op))?;
            let mut qs = qs.slice_mut(first..first + n);
            let mut d = d.slice_mut(first / 32..(first + n) / 32);
            let blocks = (n / 32) as u64;
            let mut b = dev.stream().launch_builder(&f);
            b.arg(&x.data).arg(&mut qs).arg(&mut d).arg(&blocks);
            // SAFETY: matches `store_q8_0` (flash.cu); `qs` holds n values and `d` n / 32 scales.
            unsafe { b.launch(linear(n)?) }.map_err(launch_err(op))?;
        }
    }
    Ok(())
}

pub fn softmax(dev: &CudaDevice, x: &mut CudaTensor) -> Result<(), BackendError> {
    let op = Op::Softmax;
    if x.rows == 0 || x.cols == 0 {
        return Ok(());
    }
    let f = dev.function("softmax").map_err(op_err(op))?;
    let cols = i32_of(op, "cols", x.cols)?;
    let cfg = LaunchConfig { grid_dim: (i32_of(op, "rows", x.rows)? as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&mut x.data).arg(&cols);
    // SAFETY: matches `softmax`; one block per row.
    unsafe { b.launch(cfg) }.map_err(launch_err(op))?;
    Ok(())
}
