//! Quantized matmul (a matvec per token for decoding, up to 8 tokens per weight pass for
//! batches) and the embedding gather, for every weight type; see `kernels/matvec.cu`.

use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use wasm_chord_core::backend::{BackendError, Op};
use wasm_chord_core::TensorType;

use super::{i32_of, launch_err, op_err};
use crate::backend::{CudaTensor, CudaWeight};
use crate::device::CudaDevice;
use crate::kernels::KernelFile;

pub const SOURCE: KernelFile = KernelFile { name: "matvec", source: include_str!("../../kernels/matvec.cu") };

/// (Warps per block, rows per warp) of `matvec_<ty>` (one token) or, with `batch`, of
/// `matmul8_<ty>`: `MatvecCfg` / `Matmul8Cfg` in kernels/matvec.cu, which this must mirror.
pub fn config(ty: TensorType, batch: bool) -> (usize, usize) {
    use TensorType as T;
    match (batch, ty) {
        (false, T::Q8_0 | T::F16 | T::BF16) => (8, 1),
        (false, _) => (4, 2),
        (true, T::Q8_0 | T::Q4_K | T::Q5_K | T::IQ4_NL) => (4, 1),
        (true, _) => (4, 2),
    }
}
/// Tokens per weight pass of the batched kernel; `matmul8` in the kernel.
pub const BATCH: usize = 8;

/// Whether the kernels handle weights of type `ty`.
pub fn supports(ty: TensorType) -> bool {
    match ty {
        TensorType::F32
        | TensorType::F16
        | TensorType::BF16
        | TensorType::Q4_0
        | TensorType::Q4_1
        | TensorType::Q5_0
        | TensorType::Q5_1
        | TensorType::Q8_0
        | TensorType::Q2_K
        | TensorType::Q3_K
        | TensorType::Q4_K
        | TensorType::Q5_K
        | TensorType::Q6_K
        | TensorType::IQ4_NL
        | TensorType::IQ4_XS => true,
        // Q8_K only ever holds activations.
        TensorType::Q8_K => false,
    }
}

/// Elements per kernel item group: the float types are handled 32 values at a time.
pub fn min_cols(ty: TensorType) -> usize {
    ty.block_len().max(32)
}

/// Checks `w [rows, cols] x [n, cols] -> out [n, rows]` and that the kernels handle `w`'s type.
pub fn check(w: &CudaWeight, x: &CudaTensor, out: &CudaTensor) -> Result<(), BackendError> {
    let op = Op::MatMul;
    if w.cols != x.cols || out.rows != x.rows || out.cols != w.rows {
        return Err(BackendError::Shape {
            op,
            detail: format!("w [{}, {}] x [{}, {}] -> out [{}, {}]", w.rows, w.cols, x.rows, x.cols, out.rows, out.cols),
        });
    }
    if !supports(w.ty) || w.cols % min_cols(w.ty) != 0 {
        return Err(BackendError::UnsupportedType { backend: "cuda", op, ty: w.ty });
    }
    Ok(())
}

/// `out[t, o] = sum_k w[o, k] * x[t, k] (+ bias[o])`: the one-token kernel for one token, the
/// 8-token kernel (one weight pass per 8 tokens) otherwise.
pub fn matmul(
    dev: &CudaDevice,
    w: &CudaWeight,
    bias: Option<&CudaSlice<f32>>,
    x: &CudaTensor,
    out: &mut CudaTensor,
) -> Result<(), BackendError> {
    let batch = x.rows > 1;
    let (kernel, per_pass) = if batch { ("matmul8", BATCH) } else { ("matvec", 1) };
    let f = dev.function(&format!("{kernel}_{}", w.ty.name())).map_err(op_err(Op::MatMul))?;
    launch(dev, &f, config(w.ty, batch), per_pass, 0, w, bias, x, out)
}

/// Launches `f`, a kernel with the signature of `matvec_<type>` whose blocks have `warps.0`
/// warps of `warps.1` rows each, `per_pass` tokens and `shared_mem_bytes` of dynamic shared
/// memory, over `w` and `x` (the bench launches other configurations through this).
#[allow(clippy::too_many_arguments)]
pub fn launch(
    dev: &CudaDevice,
    f: &CudaFunction,
    warps: (usize, usize),
    per_pass: usize,
    shared_mem_bytes: u32,
    w: &CudaWeight,
    bias: Option<&CudaSlice<f32>>,
    x: &CudaTensor,
    out: &mut CudaTensor,
) -> Result<(), BackendError> {
    let op = Op::MatMul;
    check(w, x, out)?;
    if x.rows == 0 || w.rows == 0 {
        return Ok(());
    }
    let (warps, rows_per_warp) = warps;
    let grid_x = u32::try_from(w.rows.div_ceil(warps * rows_per_warp)).map_err(|_| BackendError::Shape { op, detail: format!("{} rows", w.rows) })?;
    let grid_y = u32::try_from(x.rows.div_ceil(per_pass)).map_err(|_| BackendError::Shape { op, detail: format!("{} tokens", x.rows) })?;
    let cfg = LaunchConfig { grid_dim: (grid_x, grid_y, 1), block_dim: (32 * warps as u32, 1, 1), shared_mem_bytes };
    let (rows, cols, n_tok) = (i32_of(op, "rows", w.rows)?, i32_of(op, "cols", w.cols)?, i32_of(op, "tokens", x.rows)?);
    let row_stride = w.row_stride as u64;
    let null = 0u64;
    let mut b = dev.stream().launch_builder(f);
    b.arg(&w.bytes).arg(&row_stride).arg(&x.data);
    match bias {
        Some(bias) => b.arg(bias),
        None => b.arg(&null),
    };
    b.arg(&mut out.data).arg(&rows).arg(&cols).arg(&n_tok);
    // SAFETY: the arguments match the kernel's signature; shapes were checked above, so every
    // index the kernel forms lies inside its buffer (rows padded to `row_stride` bytes).
    unsafe { b.launch(cfg) }.map_err(launch_err(op))?;
    Ok(())
}

/// `out[t] = table[ids[t]] * scale`; `ids` already on the device and checked against the table.
pub fn embed(dev: &CudaDevice, table: &CudaWeight, ids: &CudaSlice<u32>, n_ids: usize, scale: f32, out: &mut CudaTensor) -> Result<(), BackendError> {
    let op = Op::Embed;
    if !supports(table.ty) || table.cols % min_cols(table.ty) != 0 {
        return Err(BackendError::UnsupportedType { backend: "cuda", op, ty: table.ty });
    }
    if n_ids == 0 {
        return Ok(());
    }
    let f = dev.function(&format!("embed_{}", table.ty.name())).map_err(op_err(op))?;
    let cfg = LaunchConfig { grid_dim: (i32_of(op, "ids", n_ids)? as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    let (row_stride, cols) = (table.row_stride as u64, i32_of(op, "cols", table.cols)?);
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&table.bytes).arg(&row_stride).arg(ids).arg(&cols).arg(&scale).arg(&mut out.data);
    // SAFETY: matches `embed_<type>`; every id was checked to be a row of the table.
    unsafe { b.launch(cfg) }.map_err(launch_err(op))?;
    Ok(())
}
