//! The int8 matvec for 1..8 tokens (activations quantized once per call to bytes in blocks of
//! 32, integer dot products), with a residual-add epilogue and the fused gate/up projections of
//! a gated feed-forward; see `kernels/mmvq.cu`.

use cudarc::driver::{CudaFunction, LaunchConfig};
use wasm_chord_core::backend::{Activation, BackendError, Op};
use wasm_chord_core::TensorType;

use super::{i32_of, launch_err, op_err};
use crate::backend::{CudaTensor, CudaWeight};
use crate::device::CudaDevice;
use crate::kernels::KernelFile;
use crate::launch::Launch;
use crate::repack::Layout;
use crate::step::address;

pub const SOURCE: KernelFile = KernelFile { name: "mmvq", source: include_str!("../../kernels/mmvq.cu") };

/// Most tokens per weight pass (`mmvq8_<type>`); more tokens take the cuBLAS path or several
/// passes.
pub const BATCH: usize = 8;

/// Whether `ty` has the int8 kernels: every quantized weight type (not the float types, whose
/// matvec reads f16/bf16 directly, nor Q8_K, which only holds activations).
pub fn supports(ty: TensorType) -> bool {
    use TensorType as T;
    matches!(ty, T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0 | T::Q2_K | T::Q3_K | T::Q4_K | T::Q5_K | T::Q6_K | T::IQ4_NL | T::IQ4_XS)
}

/// (Warps per block, rows per block) of `mmvq_<ty>` or, with `batch`, `mmvq8_<ty>` for weights
/// in `layout`: `MmvqCfg` / `Mmvq8Cfg` in kernels/mmvq.cu, which this must mirror. The gate
/// kernels take one row of each weight per block.
pub fn config(ty: TensorType, layout: Layout, batch: bool) -> (usize, usize) {
    use TensorType as T;
    match (batch, layout, ty) {
        (true, _, _) => (4, 1),
        (false, Layout::Q6KSplit, _) => (4, 4),
        (false, _, T::Q4_0 | T::IQ4_XS) => (4, 4),
        (false, _, T::Q4_1 | T::Q8_0 | T::Q6_K) => (4, 1),
        (false, _, T::Q2_K | T::Q5_K | T::IQ4_NL) => (2, 2),
        (false, _, _) => (4, 2),
    }
}

/// f32 elements of the scratch that holds `n_tok` quantized activation rows of `cols` values:
/// `n_tok * cols` bytes, then a (scale, sum) pair of f32 per 32 values.
pub fn scratch_len(n_tok: usize, cols: usize) -> usize {
    n_tok * cols / 4 + n_tok * cols / 16
}

/// Activations quantized by [`quantize`]: where they are (the device address of the scratch,
/// which the caller keeps alive and unwritten while these are in use) and their shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantizedActs {
    base: u64,
    n_tok: usize,
    cols: usize,
}

/// Quantizes `x` (`[n, cols]`, cols a multiple of 32) into `scratch` (at least
/// [`scratch_len`] elements).
pub fn quantize(dev: &CudaDevice, x: &CudaTensor, scratch: &mut CudaTensor) -> Result<QuantizedActs, BackendError> {
    let op = Op::MatMul;
    let (n_tok, cols) = (x.rows, x.cols);
    if cols % 32 != 0 || scratch.len() < scratch_len(n_tok, cols) {
        return Err(BackendError::Shape { op, detail: format!("int8 activations of x [{n_tok}, {cols}] into {} floats", scratch.len()) });
    }
    let n_blocks = n_tok * cols / 32;
    let base = address(&scratch.data, dev.stream());
    if n_blocks > 0 {
        let f = dev.function("quantize_q8").map_err(op_err(op))?;
        let per_block = 8; // warps per 256-thread block, one 32-value block each
        let grid = u32::try_from(n_blocks.div_ceil(per_block)).map_err(|_| BackendError::Shape { op, detail: format!("{n_blocks} blocks") })?;
        let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (32 * per_block as u32, 1, 1), shared_mem_bytes: 0 };
        let (xq, xd) = (base, base + (n_tok * cols) as u64);
        let nb = i32_of(op, "blocks", n_blocks)?;
        let mut b = Launch::new(dev, &f);
        b.arg(&x.data).arg(&xq).arg(&xd).arg(&nb);
        // SAFETY: matches `quantize_q8` (which waits for its predecessor first); the scratch
        // holds n_tok * cols bytes and then n_blocks (f32, f32) pairs (checked above); x holds
        // n_blocks * 32 values.
        unsafe { b.launch(cfg, dev.pdl()) }.map_err(launch_err(op))?;
    }
    Ok(QuantizedActs { base, n_tok, cols })
}

impl QuantizedActs {
    /// Activations of `n_tok` rows of `cols` values another kernel quantized into the scratch
    /// at `base` (rms_norm_q8), laid out as [`quantize`] does.
    pub(crate) fn at(base: u64, n_tok: usize, cols: usize) -> Self {
        Self { base, n_tok, cols }
    }

    /// Whether these are the activations of a tensor of `n_tok` x `cols` values.
    pub fn fits(&self, n_tok: usize, cols: usize) -> bool {
        (self.n_tok, self.cols) == (n_tok, cols)
    }

    fn pointers(&self) -> (u64, u64) {
        (self.base, self.base + (self.n_tok * self.cols) as u64)
    }
}

fn check(op: Op, w: &CudaWeight, x: &QuantizedActs, out: &CudaTensor) -> Result<(), BackendError> {
    if w.cols != x.cols || out.rows != x.n_tok || out.cols != w.rows {
        return Err(BackendError::Shape {
            op,
            detail: format!("w [{}, {}] x [{}, {}] -> out [{}, {}]", w.rows, w.cols, x.n_tok, x.cols, out.rows, out.cols),
        });
    }
    if !supports(w.ty) || w.cols % w.ty.block_len().max(32) != 0 {
        return Err(BackendError::UnsupportedType { backend: "cuda", op, ty: w.ty });
    }
    Ok(())
}

/// `out = x · wᵀ (+ bias)`, or with `accumulate` `out += x · wᵀ (+ bias)`, over activations
/// quantized by [`quantize`].
pub fn matmul(dev: &CudaDevice, w: &CudaWeight, bias: Option<u64>, x: &QuantizedActs, out: &mut CudaTensor, accumulate: bool) -> Result<(), BackendError> {
    let batch = x.n_tok > 1;
    let name = format!("{}_{}", if batch { "mmvq8" } else { "mmvq" }, w.layout.kernel_type(w.ty));
    let f = dev.function(&name).map_err(op_err(Op::MatMul))?;
    launch(dev, &f, config(w.ty, w.layout, batch), if batch { BATCH } else { 1 }, w, bias, x, out, accumulate)
}

/// Launches `f`, a kernel with the signature of `mmvq_<type>` whose blocks have `geometry.0`
/// warps and `geometry.1` rows, `per_pass` tokens (the bench launches other configurations
/// through this). `bias`: a device address of `w.rows` f32.
#[allow(clippy::too_many_arguments)]
pub fn launch(
    dev: &CudaDevice,
    f: &CudaFunction,
    geometry: (usize, usize),
    per_pass: usize,
    w: &CudaWeight,
    bias: Option<u64>,
    x: &QuantizedActs,
    out: &mut CudaTensor,
    accumulate: bool,
) -> Result<(), BackendError> {
    let op = Op::MatMul;
    check(op, w, x, out)?;
    if x.n_tok == 0 || w.rows == 0 {
        return Ok(());
    }
    let (warps, rows_per_block) = geometry;
    let cfg = grid(op, w.rows.div_ceil(rows_per_block), x.n_tok.div_ceil(per_pass), warps)?;
    let (rows, cols, n_tok) = (i32_of(op, "rows", w.rows)?, i32_of(op, "cols", w.cols)?, i32_of(op, "tokens", x.n_tok)?);
    let (xq, xd) = x.pointers();
    let (row_stride, bias, flags) = (w.row_stride as u64, bias.unwrap_or(0), i32::from(accumulate));
    let mut b = Launch::new(dev, f);
    b.arg(&w.bytes).arg(&row_stride).arg(&xq).arg(&xd).arg(&bias).arg(&out.data);
    b.arg(&rows).arg(&cols).arg(&n_tok).arg(&flags);
    // SAFETY: the arguments match the kernel's signature; shapes were checked above, so every
    // index the kernel forms lies inside its buffer (rows padded to `row_stride` bytes). Every
    // kernel of the mmvq.cuh template waits for its predecessor (PDL).
    unsafe { b.launch(cfg, dev.pdl()) }.map_err(launch_err(op))?;
    Ok(())
}

/// `out = act(x · gateᵀ) * (x · upᵀ)` in one pass over x and both weights (same type and shape).
pub fn matmul_gated(dev: &CudaDevice, act: Activation, gate: &CudaWeight, up: &CudaWeight, x: &QuantizedActs, out: &mut CudaTensor) -> Result<(), BackendError> {
    let op = Op::MatMul;
    check(op, gate, x, out)?;
    if up.ty != gate.ty || up.layout != gate.layout || up.rows != gate.rows || up.cols != gate.cols || up.row_stride != gate.row_stride {
        return Err(BackendError::Shape { op, detail: format!("gate {} [{}, {}] and up {} [{}, {}]", gate.ty, gate.rows, gate.cols, up.ty, up.rows, up.cols) });
    }
    if x.n_tok == 0 || gate.rows == 0 {
        return Ok(());
    }
    let batch = x.n_tok > 1;
    let f = dev.function(&format!("{}_{}", if batch { "mmvq8_gate" } else { "mmvq_gate" }, gate.layout.kernel_type(gate.ty))).map_err(op_err(op))?;
    let cfg = grid(op, gate.rows, x.n_tok.div_ceil(if batch { BATCH } else { 1 }), config(gate.ty, gate.layout, batch).0)?;
    let (rows, cols, n_tok) = (i32_of(op, "rows", gate.rows)?, i32_of(op, "cols", gate.cols)?, i32_of(op, "tokens", x.n_tok)?);
    let (xq, xd) = x.pointers();
    let row_stride = gate.row_stride as u64;
    let which: i32 = match act {
        Activation::Silu => 0,
        Activation::GeluTanh => 1,
    };
    let mut b = Launch::new(dev, &f);
    b.arg(&gate.bytes).arg(&up.bytes).arg(&row_stride).arg(&xq).arg(&xd).arg(&out.data);
    b.arg(&rows).arg(&cols).arg(&n_tok).arg(&which);
    // SAFETY: matches `mmvq_gate_<type>` (waits for its predecessor); both weights have the
    // checked shape and row stride.
    unsafe { b.launch(cfg, dev.pdl()) }.map_err(launch_err(op))?;
    Ok(())
}

/// `outs[i] = x · ws[i]ᵀ (+ biases[i])` for up to three weights of one type over one token, in
/// one launch (`mmvq3_<type>`): the q, k and v projections. `biases`: device addresses of
/// `ws[i].rows` f32.
pub fn matmul3(dev: &CudaDevice, ws: &[&CudaWeight], biases: &[Option<u64>], x: &QuantizedActs, outs: &mut [&mut CudaTensor]) -> Result<(), BackendError> {
    let op = Op::MatMul;
    let n = ws.len();
    if !(1..=3).contains(&n) || biases.len() != n || outs.len() != n || x.n_tok != 1 || ws.iter().any(|w| (w.ty, w.layout) != (ws[0].ty, ws[0].layout)) {
        let types: Vec<_> = ws.iter().map(|w| w.ty.name()).collect();
        return Err(BackendError::Shape { op, detail: format!("{n} weights ({types:?}), {} outputs, {} tokens in one int8 launch", outs.len(), x.n_tok) });
    }
    for (w, out) in ws.iter().zip(outs.iter()) {
        check(op, w, x, out)?;
    }
    let (ty, layout) = (ws[0].ty, ws[0].layout);
    let (warps, rows_per_block) = config(ty, layout, false);
    let blocks: usize = ws.iter().map(|w| w.rows.div_ceil(rows_per_block)).sum();
    if blocks == 0 {
        return Ok(());
    }
    // The kernel's `Mmvq3Args`: 3 weight pointers, 3 row strides, 3 bias pointers, 3 output
    // pointers (u64 each), then 3 row counts (i32) and padding to 8 bytes.
    let mut args = Mmvq3Args { words: [0; 12], rows: [0; 4] };
    for (i, (w, out)) in ws.iter().zip(outs.iter()).enumerate() {
        args.words[i] = address(&w.bytes, dev.stream());
        args.words[3 + i] = w.row_stride as u64;
        args.words[6 + i] = biases[i].unwrap_or(0);
        args.words[9 + i] = address(&out.data, dev.stream());
        args.rows[i] = i32_of(op, "rows", w.rows)?;
    }
    let f = dev.function(&format!("mmvq3_{}", layout.kernel_type(ty))).map_err(op_err(op))?;
    let cfg = grid(op, blocks, 1, warps)?;
    let cols = i32_of(op, "cols", x.cols)?;
    let (xq, xd) = x.pointers();
    let mut b = Launch::new(dev, &f);
    b.value(&args).arg(&xq).arg(&xd).arg(&cols);
    // SAFETY: `Mmvq3Args` mirrors the kernel's struct (passed by value); every weight and output
    // was checked against the activations above, the grid covers exactly the weights' row
    // blocks, and the outputs stay borrowed (mutably) until this returns. It waits for its
    // predecessor (PDL).
    unsafe { b.launch(cfg, dev.pdl()) }.map_err(launch_err(op))?;
    Ok(())
}

/// kernels/mmvq.cuh's `Mmvq3Args`, by value.
#[repr(C)]
#[derive(Clone, Copy)]
struct Mmvq3Args {
    words: [u64; 12],
    rows: [i32; 4],
}

// SAFETY: plain old data of the kernel's struct layout (8-byte aligned, 112 bytes).
unsafe impl cudarc::driver::DeviceRepr for Mmvq3Args {}

fn grid(op: Op, blocks_x: usize, blocks_y: usize, warps: usize) -> Result<LaunchConfig, BackendError> {
    let gx = u32::try_from(blocks_x).map_err(|_| BackendError::Shape { op, detail: format!("{blocks_x} row blocks") })?;
    let gy = u32::try_from(blocks_y).map_err(|_| BackendError::Shape { op, detail: format!("{blocks_y} token groups") })?;
    Ok(LaunchConfig { grid_dim: (gx, gy, 1), block_dim: (32 * warps as u32, 1, 1), shared_mem_bytes: 0 })
}

/// A configuration of the `mmvq` template (mmvq.cuh) that is not shipped, for the bandwidth
/// bench: one token, `warps` warps per block, `rows` rows per block.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    /// Kernel name prefix: `<name>_<type>`.
    pub name: &'static str,
    pub warps: usize,
    pub rows: usize,
    /// `#pragma unroll` of the item loop.
    pub unroll: usize,
    /// Consecutive items per thread and pass, loaded together.
    pub ipt: usize,
    /// `__launch_bounds__`' minimum resident blocks per multiprocessor (0: none), which caps
    /// the registers per thread at 65536 / (32 warps min_blocks) (q4_K's occupancy is
    /// register-limited).
    pub min_blocks: usize,
}

const fn v(name: &'static str, warps: usize, rows: usize, unroll: usize, ipt: usize, min_blocks: usize) -> Variant {
    Variant { name, warps, rows, unroll, ipt, min_blocks }
}

/// Candidates timed beside the shipped per-type configurations (`MmvqCfg`; each type's pick is
/// the fastest of these over 7B's decode shapes, bench/runs/2026-11-26-h100-repack and
/// -h100-kq).
pub const VARIANTS: [Variant; 11] = [
    v("q_w4r1", 4, 1, 1, 1, 0),
    v("q_w2r2", 2, 2, 1, 1, 0),
    v("q_w4r2u2", 4, 2, 2, 1, 0),
    v("q_w4r4u2", 4, 4, 2, 1, 0),
    v("q_w4r2i2", 4, 2, 1, 2, 0),
    v("q_w4r1m16", 4, 1, 1, 1, 16),
    v("q_w2r4u2", 2, 4, 2, 1, 0),
    v("q_w2r4", 2, 4, 1, 1, 0),
    v("q_w1r2u4", 1, 2, 4, 1, 0),
    v("q_w1r4u2", 1, 4, 2, 1, 0),
    v("q_w8r1", 8, 1, 1, 1, 0),
];

/// Other decodings of a type's file layout, compiled only for the bench's candidate columns
/// (kernels/dequant.cuh `FOR_EACH_CANDIDATE_TYPE`): (kernel type name, the weight type whose
/// blocks it reads).
pub const CANDIDATE_DECODES: [(&str, TensorType); 1] = [("q4_K_b", TensorType::Q4_K)];

/// The CUDA source of [`VARIANTS`] (module `mmvq_variants`), for every int8 type and every
/// candidate decoding.
pub fn variant_source() -> String {
    let mut s = String::from("#include \"mmvq.cuh\"\n");
    for v in VARIANTS {
        let (name, warps, rows, unroll, ipt) = (v.name, v.warps, v.rows, v.unroll, v.ipt);
        let bounds = if v.min_blocks > 0 { format!("{}, {}", 32 * warps, v.min_blocks) } else { format!("{}", 32 * warps) };
        s += &format!(
            "#define V_{name}(n, T) extern \"C\" __global__ void __launch_bounds__({bounds}) {name}_##n(const u8* w, u64 rs, \
             const i8* xq, const float2* xd, const float* bias, float* y, int rows, int cols, int n_tok, int flags) {{ \
             mmvq<T, 1, {warps}, {rows}, false, {unroll}, {ipt}>(w, nullptr, rs, xq, xd, bias, y, rows, cols, n_tok, flags); }}\n\
             FOR_EACH_QUANT_TYPE(V_{name})\nFOR_EACH_CANDIDATE_TYPE(V_{name})\n",
        );
    }
    s
}
