//! Quantized matmul (a matvec per token for decoding, up to 8 tokens per weight pass for
//! batches) and the embedding gather, for every weight type; see `kernels/matvec.cu`.

use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use wasm_chord_core::backend::{BackendError, Op};
use wasm_chord_core::TensorType;

use super::{i32_of, launch_err, op_err};
use crate::backend::{CudaTensor, CudaWeight};
use crate::device::CudaDevice;
use crate::kernels::KernelFile;
use crate::repack::Layout;

pub const SOURCE: KernelFile = KernelFile { name: "matvec", source: include_str!("../../kernels/matvec.cu") };

/// (Warps per block, rows per warp) of `matvec_<ty>` (one token) or, with `batch`, of
/// `matmul8_<ty>`: `MatvecCfg` / `Matmul8Cfg` in kernels/matvec.cu, which this must mirror.
pub fn config(ty: TensorType, batch: bool) -> (usize, usize) {
    use TensorType as T;
    match (batch, ty) {
        (false, T::F16 | T::BF16 | T::Q8_0 | T::Q4_0 | T::Q4_1 | T::Q5_1 | T::Q2_K | T::Q3_K | T::Q5_K | T::Q6_K) => (8, 2),
        (false, _) => (4, 2),
        (true, T::Q8_0 | T::Q4_K | T::Q5_K | T::IQ4_NL) => (4, 1),
        (true, _) => (4, 2),
    }
}
/// A configuration of the `matvec` template (matvec.cuh) that is not shipped: the bandwidth
/// bench times these and tests/matvec_variants.rs checks them against the CPU, so that the
/// per-type choice in matvec.cu is made from measured, tested candidates.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    /// Kernel name prefix: `<name>_<type>`.
    pub name: &'static str,
    /// Tokens per weight pass (1, or 8 for the batched kernel).
    pub tokens: usize,
    pub warps: usize,
    pub rows: usize,
    pub step_cols: usize,
    pub step_bytes: usize,
    /// `__launch_bounds__`' minimum blocks per SM (caps the registers).
    pub min_blocks: usize,
    /// Built with `WC_BIASED_DECODE=1` (dequant.cuh): q' = 0.5 + q / 256 from one byte permute.
    pub biased: bool,
    /// The persistent `matvec_stream` (one token; launched by [`launch_stream`]) instead of
    /// `matvec`.
    pub stream: bool,
}

const fn v(name: &'static str, tokens: usize, warps: usize, rows: usize, step_cols: usize, step_bytes: usize, min_blocks: usize, biased: bool) -> Variant {
    Variant { name, tokens, warps, rows, step_cols, step_bytes, min_blocks, biased, stream: false }
}

const fn st(name: &'static str, warps: usize, rows: usize, step_cols: usize, step_bytes: usize, biased: bool) -> Variant {
    Variant { name, tokens: 1, warps, rows, step_cols, step_bytes, min_blocks: 1, biased, stream: true }
}

/// The candidates (round 3, NOTES.md): the exact decoding with more blocks per SM (`_b6`),
/// 16 rows per block with balanced 1.5 KiB steps (`w8r2`), one step per 4096-column row
/// (`one`); the same with the biased decoding (`bi_`), and the biased 8-token kernel. Measured
/// in bench/runs/2026-11-26-h100-matvec3/call2 except the persistent kernels (`st_`, `bs_`:
/// exact and biased), added after it.
pub const VARIANTS: [Variant; 17] = [
    v("mv_v2", 1, 8, 1, 1024, 2048, 1, false),
    v("mv_r2w8", 1, 8, 2, 2048, 1024, 1, false),
    v("mv_b6", 1, 4, 2, 4096, 2048, 6, false),
    v("mv_w8r2", 1, 8, 2, 4096, 1536, 1, false),
    v("mv_one", 1, 4, 2, 4096, 3456, 1, false),
    v("bi_ship", 1, 4, 2, 4096, 2048, 1, true),
    v("bi_b6", 1, 4, 2, 4096, 2048, 6, true),
    v("bi_r2w8", 1, 8, 2, 2048, 1024, 1, true),
    v("bi_w8r2", 1, 8, 2, 4096, 1536, 1, true),
    v("bi_one", 1, 4, 2, 4096, 3456, 1, true),
    v("bi_v2", 1, 8, 1, 1024, 2048, 1, true),
    v("bi_m8r2", 8, 4, 2, 1024, 1024, 1, true),
    st("st_w8r2", 8, 2, 4096, 1536, false),
    st("st_w4r2", 4, 2, 4096, 2048, false),
    st("st_w8r1", 8, 1, 2048, 2048, false),
    st("bs_w8r2", 8, 2, 4096, 1536, true),
    st("bs_w4r2", 4, 2, 4096, 2048, true),
];

/// Whether the biased decoding keeps `ty`'s one-token error within the matmul test's 1e-5 of the
/// largest output (measured <= 3.6e-6 for the 4- and 5-bit types; Q2_K 1.4e-5, Q3_K 7.3e-6:
/// too few bits of q against the 0.5 offset). Types without split decoding are unaffected.
pub fn biased_decoding_ok(ty: TensorType) -> bool {
    !matches!(ty, TensorType::Q2_K | TensorType::Q3_K)
}

/// The CUDA source of the variants with (`biased`) or without the biased decoding: one module
/// each, since `WC_BIASED_DECODE` applies to a whole file. Module names: `matvec_variants`,
/// `matvec_variants_b`.
pub fn variant_source(biased: bool) -> String {
    let mut s = format!("#define WC_BIASED_DECODE {}\n#include \"matvec.cuh\"\n", u8::from(biased));
    for x in VARIANTS.iter().filter(|x| x.biased == biased) {
        let (name, threads) = (x.name, 32 * x.warps);
        let body = if x.stream {
            format!("matvec_stream<T, {}, {}, {}, {}>(w, rs, x, b, y, rows, cols);", x.warps, x.rows, x.step_cols, x.step_bytes)
        } else {
            format!("matvec<T, {}, {}, {}, {}, {}>(w, rs, x, b, y, rows, cols, n_tok);", x.tokens, x.warps, x.rows, x.step_cols, x.step_bytes)
        };
        s += &format!(
            "#define V_{name}(n, T) extern \"C\" __global__ void __launch_bounds__({threads}, {mb}) {name}_##n(const u8* w, u64 rs, \
             const float* x, const float* b, float* y, int rows, int cols, int n_tok) {{ {body} }}\nFOR_EACH_WEIGHT_TYPE(V_{name})\n",
            mb = x.min_blocks,
        );
    }
    s
}

/// Launches a `matvec_stream` variant `f` (one token): as many blocks as fit on the GPU at once
/// (the occupancy API), each warp a contiguous share of the row groups, and `cols / 16` floats of
/// dynamic shared memory for the half-item sums.
pub fn launch_stream(dev: &CudaDevice, f: &CudaFunction, v: &Variant, w: &CudaWeight, x: &CudaTensor, out: &mut CudaTensor) -> Result<(), BackendError> {
    let op = Op::MatMul;
    let smem = u32::try_from(w.cols / 16 * 4).map_err(|_| BackendError::Shape { op, detail: format!("{} columns", w.cols) })?;
    let threads = 32 * v.warps as u32;
    let per_sm = f.occupancy_max_active_blocks_per_multiprocessor(threads, smem as usize, None).map_err(launch_err(op))?.max(1) as usize;
    let blocks = per_sm * dev.sm_count();
    // `launch` makes ceil(rows / (warps * rows_per_warp)) blocks: at most `blocks`.
    let rows_per_warp = w.rows.div_ceil(v.warps * blocks).next_multiple_of(v.rows).max(v.rows);
    launch(dev, f, (v.warps, rows_per_warp), 1, smem, w, None, x, out)
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
    // These kernels read only the file layout (a repacked weight goes to mmvq.rs).
    if w.layout != Layout::File {
        return Err(BackendError::UnsupportedType { backend: "cuda", op, ty: w.ty });
    }
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
    let f = dev.function(&format!("embed_{}", table.layout.kernel_type(table.ty))).map_err(op_err(op))?;
    let cfg = LaunchConfig { grid_dim: (i32_of(op, "ids", n_ids)? as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    let (row_stride, cols) = (table.row_stride as u64, i32_of(op, "cols", table.cols)?);
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&table.bytes).arg(&row_stride).arg(ids).arg(&cols).arg(&scale).arg(&mut out.data);
    // SAFETY: matches `embed_<type>`; every id was checked to be a row of the table.
    unsafe { b.launch(cfg) }.map_err(launch_err(op))?;
    Ok(())
}
