//! [`Backend`] for CUDA: activations are f32 device buffers, weights stay in their file type on
//! the device (rows padded to 16 bytes for the matvec's 16-byte loads), the cache is f16 or q8_0
//! ([`CudaOptions`]), and attention is flash attention unless standard is asked for.
//! Single-token decode steps run from an arena and are replayed as a CUDA graph (`step.rs`).

use std::sync::{Mutex, MutexGuard, OnceLock};

use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use wasm_chord_core::backend::{
    Activation, AttentionKind, AttentionParams, Backend, BackendError, DeviceMemory, KvType, Op, RopeParams, WeightData,
};
use wasm_chord_core::{quant, TensorType};

use crate::buffer::DeviceBuf;
use crate::device::CudaDevice;
use crate::error::CudaError;
use crate::ops;
use crate::ops::flash::{FlashOptions, FlashWorkspace, KvData, KvView};
use crate::repack::Layout;
use crate::step::{address, Mode, StepState, StepStats};

/// An f32 activation matrix `[rows, cols]` on the device, row-major.
pub struct CudaTensor {
    pub rows: usize,
    pub cols: usize,
    /// At least one value, so empty tensors are still valid allocations. Inside a decode step
    /// the memory is borrowed from the step arena.
    pub data: DeviceBuf<f32>,
}

impl CudaTensor {
    /// Number of values, `rows * cols`.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A weight in its file type: `rows` rows of `row_stride` bytes (the file's row in `layout`,
/// zero-padded to a multiple of 16).
pub struct CudaWeight {
    pub ty: TensorType,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    /// How each row's blocks are laid out (Q6_K is split for the int8 matvec unless
    /// `CudaOptions::f32_matvec`, whose kernels read only the file layout).
    pub layout: Layout,
    pub bytes: CudaSlice<u8>,
    /// 1-D weights (norm scales, biases) also as f32, which is how the ops read them.
    pub values: Option<CudaSlice<f32>>,
}

/// Key or value rows of one layer.
pub enum CacheData {
    /// f16 bits, `capacity * cols` values.
    F16(CudaSlice<u16>),
    /// q8_0 as two arrays (so rows of values stay 16-byte aligned for the flash kernels'
    /// copies): `capacity * cols` int8 values and `capacity * cols / 32` f16 scales.
    Q8_0 { qs: CudaSlice<i8>, d: CudaSlice<u16> },
}

/// Key or value storage of one layer: `capacity` rows of `cols` values.
pub struct CudaCache {
    pub cols: usize,
    pub capacity: usize,
    pub data: CacheData,
}

impl CudaCache {
    pub fn kv_type(&self) -> KvType {
        match self.data {
            CacheData::F16(_) => KvType::F16,
            CacheData::Q8_0 { .. } => KvType::Q8_0,
        }
    }

    /// The rows as the flash kernels read them.
    pub fn view(&self) -> KvView<'_> {
        let data = match &self.data {
            CacheData::F16(d) => KvData::F16(d),
            CacheData::Q8_0 { qs, d } => KvData::Q8_0 { qs, d },
        };
        KvView { data, cols: self.cols, capacity: self.capacity }
    }
}

/// CUDA backend settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct CudaOptions {
    /// Flash (tensor cores, split keys for decode) or standard (one block per query row).
    pub attention: AttentionKind,
    /// How cache rows are stored.
    pub kv_type: KvType,
    /// Quantized weights at 1..8 tokens: the f32-activation matvec (`matvec.cu`, within 1e-5 of
    /// the f32 reference) instead of the int8 one (`mmvq.cu`: activations rounded to 8 bits per
    /// block of 32, as llama.cpp and the CPU backend with ggml's rounding do; faster).
    pub f32_matvec: bool,
}

/// The CUDA backend on one device.
pub struct CudaBackend {
    dev: CudaDevice,
    opts: CudaOptions,
    flash: FlashWorkspace,
    /// cuBLAS for prompts, created on the first matmul of many tokens; `None` if that failed.
    gemm: OnceLock<Option<ops::gemm::Gemm>>,
    step: Mutex<StepState>,
    /// Where `argmax` leaves its answer.
    argmax_out: Mutex<CudaSlice<u32>>,
    /// The int8 matvec's activation scratch outside decode steps (`int8_scratch`).
    int8_scratch: Mutex<Option<CudaSlice<f32>>>,
    /// The int8 activations the last int8 matmul used, keyed by (tensor address, step epoch).
    int8_last: Mutex<Option<((u64, u64), ops::mmvq::QuantizedActs)>>,
    /// Rope frequency factors already on the device, by value (a model has one or two sets).
    freq_factors: Mutex<Vec<(Vec<f32>, CudaSlice<f32>)>>,
}

impl CudaBackend {
    /// Opens GPU `ordinal`; a clear error if there is no driver or no GPU.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        Self::with_options(ordinal, CudaOptions::default())
    }

    /// Opens GPU `ordinal` with the given attention kind and cache type. Decode steps are
    /// captured as CUDA graphs unless `WASM_CHORD_CUDA_GRAPH=0`; `WASM_CHORD_CUDA_F32_MATVEC=1`
    /// sets `f32_matvec` (the previous kernels, for comparisons in one binary).
    pub fn with_options(ordinal: usize, mut opts: CudaOptions) -> Result<Self, CudaError> {
        opts.f32_matvec |= std::env::var("WASM_CHORD_CUDA_F32_MATVEC").is_ok_and(|v| v == "1");
        let dev = CudaDevice::new(ordinal)?;
        let graphs = std::env::var("WASM_CHORD_CUDA_GRAPH").map_or(true, |v| v != "0");
        let step = StepState::new(dev.stream(), graphs).map_err(|e| CudaError::NoDevice { detail: format!("allocating the step buffers: {e}") })?;
        let argmax_out = dev.stream().alloc_zeros::<u32>(1).map_err(crate::error::driver("allocating the argmax buffer"))?;
        Ok(Self {
            dev,
            opts,
            flash: FlashWorkspace::default(),
            gemm: OnceLock::new(),
            step: Mutex::new(step),
            argmax_out: Mutex::new(argmax_out),
            int8_scratch: Mutex::new(None),
            int8_last: Mutex::new(None),
            freq_factors: Mutex::new(Vec::new()),
        })
    }

    /// Turns CUDA graphs of the decode step on or off (steps still run from the arena).
    pub fn with_graphs(self, on: bool) -> Self {
        self.step().set_graphs(on);
        self
    }

    /// Whether decode steps are (still) captured as graphs.
    pub fn graphs(&self) -> bool {
        self.step().graphs()
    }

    /// What the decode steps have done so far.
    pub fn step_stats(&self) -> StepStats {
        self.step().stats
    }

    fn step(&self) -> MutexGuard<'_, StepState> {
        self.step.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a matmul of `w` over `x` runs on the int8 kernels (mmvq.cu): fewer tokens than
    /// the cuBLAS path takes, a quantized type, and not `CudaOptions::f32_matvec`.
    /// A repacked weight (which matvec.cu cannot read) takes them at any token count when
    /// cuBLAS is missing.
    fn int8_matvec(&self, w: &CudaWeight, x: &CudaTensor) -> bool {
        let tokens = (1..ops::gemm::MIN_TOKENS).contains(&x.rows) || (x.rows > 0 && w.layout != Layout::File && self.gemm().is_none());
        !self.opts.f32_matvec
            && tokens
            && ops::mmvq::supports(w.ty)
            && w.cols == x.cols
            && w.cols % w.ty.block_len().max(32) == 0
    }

    /// The scratch of a matmul's int8 activations (`n` f32): an arena slot inside a decode
    /// step, else one buffer reused by every call (the stream orders its uses) and grown when a
    /// call needs more.
    fn int8_scratch(&self, n: usize) -> Result<CudaTensor, BackendError> {
        if self.step().mode() != Mode::Off {
            return self.tensor(1, n);
        }
        let mut held = self.int8_scratch.lock().unwrap_or_else(|p| p.into_inner());
        if held.as_ref().is_none_or(|b| b.len() < n) {
            *held = None;
            *held = Some(self.zeros::<f32>(n)?);
        }
        let buf = held.as_ref().ok_or_else(|| BackendError::Other { op: Op::Alloc, detail: "int8 scratch".into() })?;
        // SAFETY: the buffer holds at least `n` f32 and is only replaced by a later call, whose
        // kernels the stream runs after this one's.
        let data = unsafe { DeviceBuf::borrowed(self.dev.stream(), address(buf, self.dev.stream()), n) };
        Ok(CudaTensor { rows: 1, cols: n, data })
    }

    /// The start of an int8 matmul over `x`: its scratch (taken by every call, launching or
    /// not, so that a step's arena slots are the same in every replay) and, when the previous
    /// int8 matmul quantized this same tensor with no op in between (q, k and v of one normed
    /// x), those activations. The sequence of ops alone decides, the same in every replay.
    fn int8_begin(&self, x: &CudaTensor) -> Result<(CudaTensor, Option<ops::mmvq::QuantizedActs>), BackendError> {
        let key = (self.addr(&x.data), self.step().epoch());
        let last = *self.int8_last.lock().unwrap_or_else(|p| p.into_inner());
        let cached = last.filter(|(k, q)| *k == key && q.fits(x.rows, x.cols)).map(|(_, q)| q);
        Ok((self.int8_scratch(ops::mmvq::scratch_len(x.rows, x.cols))?, cached))
    }

    /// The int8 activations of `x` (quantized now unless `int8_begin` found them), remembered
    /// for the next int8 matmul.
    fn int8_acts(&self, x: &CudaTensor, (mut scratch, cached): (CudaTensor, Option<ops::mmvq::QuantizedActs>)) -> Result<ops::mmvq::QuantizedActs, BackendError> {
        let acts = match cached {
            Some(q) => q,
            None => ops::mmvq::quantize(&self.dev, x, &mut scratch)?,
        };
        let key = (self.addr(&x.data), self.step().epoch());
        *self.int8_last.lock().unwrap_or_else(|p| p.into_inner()) = Some((key, acts));
        Ok(acts)
    }

    /// Notes an op in the current decode step; `false` when it must not launch (a replay).
    fn step_note(&self, op: Op, values: &[u64]) -> bool {
        let mut st = self.step();
        st.note(op, values);
        st.mode().launches()
    }

    fn addr<T>(&self, s: &CudaSlice<T>) -> u64 {
        address(s, self.dev.stream())
    }

    fn cache_addr(&self, c: &CudaCache) -> u64 {
        match &c.data {
            CacheData::F16(d) => self.addr(d),
            CacheData::Q8_0 { qs, .. } => self.addr(qs),
        }
    }

    /// Index into `freq_factors` of these factors, uploaded the first time they are seen.
    fn freq_factors_index(&self, f: &[f32], cache: &mut Vec<(Vec<f32>, CudaSlice<f32>)>) -> Result<usize, BackendError> {
        if let Some(i) = cache.iter().position(|(host, _)| host == f) {
            return Ok(i);
        }
        if matches!(self.step().mode(), Mode::Capture | Mode::Replay) {
            return Err(self.step().refuse(Op::Rope, "uploading frequency factors"));
        }
        cache.push((f.to_vec(), self.upload_vec(Op::Rope, f)?));
        Ok(cache.len() - 1)
    }

    pub fn options(&self) -> CudaOptions {
        self.opts
    }

    /// Uploads `w` with its rows in `layout` (`Backend::load_weight` picks the layout: the
    /// bench compares the two of a type).
    pub fn load_weight_in(&self, w: WeightData, layout: Layout) -> Result<CudaWeight, BackendError> {
        let op = Op::LoadWeight;
        if !self.supports_weight(w.ty) {
            return Err(BackendError::UnsupportedType { backend: "cuda", op, ty: w.ty });
        }
        w.validate()?;
        let row_bytes = w.ty.row_bytes(w.cols).map_err(|e| BackendError::Other { op, detail: e.to_string() })?;
        let row_stride = row_bytes.next_multiple_of(16);
        let src = w.bytes.bytes();
        if layout != Layout::File && layout != Layout::preferred(w.ty) {
            return Err(BackendError::Other { op, detail: format!("{w_ty} weights in layout {layout:?}", w_ty = w.ty) });
        }
        let bytes = if row_stride == row_bytes && layout == Layout::File && !src.is_empty() {
            self.upload_vec(op, src)?
        } else {
            let mut padded = vec![0u8; checked_len(op, w.rows, row_stride)?.max(1)];
            for (dst, row) in padded.chunks_exact_mut(row_stride).zip(src.chunks_exact(row_bytes.max(1))) {
                layout.pack_row(row, &mut dst[..row_bytes]);
            }
            self.upload_vec(op, &padded)?
        };
        let values = if w.rows == 1 {
            let mut v = vec![0.0f32; w.cols];
            quant::dequantize(w.ty, src, &mut v).map_err(|e| BackendError::Other { op, detail: e.to_string() })?;
            Some(if v.is_empty() { self.zeros(1)? } else { self.upload_vec(op, &v)? })
        } else {
            None
        };
        Ok(CudaWeight { ty: w.ty, rows: w.rows, cols: w.cols, row_stride, layout, bytes, values })
    }

    /// The tensor-core matmul, if cuBLAS could be loaded (once; a warning otherwise).
    fn gemm(&self) -> Option<&ops::gemm::Gemm> {
        self.gemm
            .get_or_init(|| match ops::gemm::Gemm::new(&self.dev) {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::warn!("{e}");
                    None
                }
            })
            .as_ref()
    }

    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }

    fn upload_vec<T: DeviceRepr>(&self, op: Op, host: &[T]) -> Result<CudaSlice<T>, BackendError> {
        self.dev.stream().clone_htod(host).map_err(ops::launch_err(op))
    }

    fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>, BackendError> {
        self.dev.stream().alloc_zeros::<T>(n.max(1)).map_err(ops::launch_err(Op::Alloc))
    }
}

fn checked_len(op: Op, rows: usize, cols: usize) -> Result<usize, BackendError> {
    rows.checked_mul(cols).ok_or_else(|| BackendError::Shape { op, detail: format!("[{rows}, {cols}] overflows") })
}

fn values(w: &CudaWeight, op: Op) -> Result<&CudaSlice<f32>, BackendError> {
    w.values.as_ref().ok_or_else(|| BackendError::Shape { op, detail: format!("expected a 1-D weight, got [{}, {}]", w.rows, w.cols) })
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;
    type Weight = CudaWeight;
    type Cache = CudaCache;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn kv_type(&self) -> KvType {
        self.opts.kv_type
    }

    fn supports_weight(&self, ty: TensorType) -> bool {
        ops::matvec::supports(ty)
    }

    fn tensor(&self, rows: usize, cols: usize) -> Result<CudaTensor, BackendError> {
        let n = checked_len(Op::Alloc, rows, cols)?;
        let bytes = n.max(1).checked_mul(4).ok_or_else(|| BackendError::Shape { op: Op::Alloc, detail: format!("[{rows}, {cols}] overflows") })?;
        if let Some(ptr) = self.step().next_buffer(self.dev.stream(), bytes)? {
            // SAFETY: the arena slot holds `n.max(1)` f32 and lives as long as the backend.
            let data = unsafe { DeviceBuf::borrowed(self.dev.stream(), ptr, n.max(1)) };
            return Ok(CudaTensor { rows, cols, data });
        }
        // A new allocation may reuse (and zero) memory of a tensor whose int8 activations are
        // remembered.
        self.step().bump();
        Ok(CudaTensor { rows, cols, data: self.zeros(n)?.into() })
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<CudaTensor, BackendError> {
        if data.len() != checked_len(Op::Transfer, rows, cols)? {
            return Err(BackendError::Shape { op: Op::Transfer, detail: format!("{} values for [{rows}, {cols}]", data.len()) });
        }
        if data.is_empty() {
            return self.tensor(rows, cols);
        }
        if matches!(self.step().mode(), Mode::Capture | Mode::Replay) {
            return Err(self.step().refuse(Op::Transfer, "upload"));
        }
        self.step().bump();
        Ok(CudaTensor { rows, cols, data: self.upload_vec(Op::Transfer, data)?.into() })
    }

    fn download(&self, t: &CudaTensor, out: &mut Vec<f32>) -> Result<(), BackendError> {
        if matches!(self.step().mode(), Mode::Capture | Mode::Replay) {
            return Err(self.step().refuse(Op::Transfer, "download"));
        }
        let mut all = self.dev.stream().clone_dtoh(&*t.data).map_err(ops::launch_err(Op::Transfer))?;
        all.truncate(t.len());
        *out = all;
        Ok(())
    }

    fn shape(&self, t: &CudaTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn load_weight(&self, w: WeightData) -> Result<CudaWeight, BackendError> {
        let layout = if self.opts.f32_matvec { Layout::File } else { Layout::preferred(w.ty) };
        self.load_weight_in(w, layout)
    }

    fn weight_shape(&self, w: &CudaWeight) -> (usize, usize, TensorType) {
        (w.rows, w.cols, w.ty)
    }

    fn cache(&self, capacity: usize, cols: usize) -> Result<CudaCache, BackendError> {
        let ty = self.opts.kv_type;
        // The error names the bytes the cache needs, so a user can pick a smaller context.
        let fail = |why: String| {
            let need = ty.row_bytes(cols).and_then(|r| r.checked_mul(capacity));
            let need = need.map_or("more than the address space".to_string(), |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64));
            BackendError::Other { op: Op::Alloc, detail: format!("{} cache of {capacity} x {cols} on the GPU: {why} (needs {need})", ty.name()) }
        };
        let n = capacity.checked_mul(cols).ok_or_else(|| fail("size overflows".into()))?;
        let stream = self.dev.stream();
        let data = match ty {
            KvType::F16 => CacheData::F16(stream.alloc_zeros::<u16>(n.max(1)).map_err(|e| fail(e.to_string()))?),
            KvType::Q8_0 => {
                if cols % 32 != 0 {
                    return Err(fail("rows must be whole blocks of 32 values".into()));
                }
                let qs = stream.alloc_zeros::<i8>(n.max(1)).map_err(|e| fail(e.to_string()))?;
                let d = stream.alloc_zeros::<u16>((n / 32).max(1)).map_err(|e| fail(e.to_string()))?;
                CacheData::Q8_0 { qs, d }
            }
        };
        Ok(CudaCache { cols, capacity, data })
    }

    fn matmul(&self, w: &CudaWeight, bias: Option<&CudaWeight>, x: &CudaTensor, out: &mut CudaTensor) -> Result<(), BackendError> {
        let bias_addr = bias.and_then(|b| b.values.as_ref()).map_or(0, |v| self.addr(v));
        // Taken before a replay returns, so that every step takes the same arena slots.
        let int8 = if self.int8_matvec(w, x) { Some(self.int8_begin(x)?) } else { None };
        if !self.step_note(Op::MatMul, &[self.addr(&w.bytes), bias_addr, self.addr(&x.data), self.addr(&out.data), x.rows as u64]) {
            return Ok(());
        }
        let bias = match bias {
            Some(b) if b.rows * b.cols != w.rows => {
                return Err(BackendError::Shape { op: Op::MatMul, detail: format!("bias of {} for {} outputs", b.rows * b.cols, w.rows) })
            }
            Some(b) => Some(values(b, Op::MatMul)?),
            None => None,
        };
        ops::matvec::check(w, x, out)?;
        if x.rows >= ops::gemm::MIN_TOKENS {
            if let Some(gemm) = self.gemm() {
                return gemm.matmul(&self.dev, w, bias, x, out);
            }
        }
        if let Some(int8) = int8 {
            let xq = self.int8_acts(x, int8)?;
            return ops::mmvq::matmul(&self.dev, w, bias.map(|b| self.addr(b)), &xq, out, false);
        }
        ops::matvec::matmul(&self.dev, w, bias, x, out)
    }

    fn matmul_act_mul(&self, act: Activation, gate: &CudaWeight, up: &CudaWeight, x: &CudaTensor, out: &mut CudaTensor) -> Result<(), BackendError> {
        let fused = self.int8_matvec(gate, x) && up.ty == gate.ty && up.rows == gate.rows && up.cols == gate.cols;
        if !fused {
            let mut g = self.tensor(x.rows, gate.rows)?;
            let mut u = self.tensor(x.rows, up.rows)?;
            self.matmul(gate, None, x, &mut g)?;
            self.matmul(up, None, x, &mut u)?;
            return self.act_mul(act, &g, &u, out);
        }
        let int8 = self.int8_begin(x)?;
        let note = [self.addr(&gate.bytes), self.addr(&up.bytes), self.addr(&x.data), self.addr(&out.data), x.rows as u64, 2 + act as u64];
        if !self.step_note(Op::MatMul, &note) {
            return Ok(());
        }
        ops::matvec::check(gate, x, out)?;
        let xq = self.int8_acts(x, int8)?;
        ops::mmvq::matmul_gated(&self.dev, act, gate, up, &xq, out)
    }

    fn matmul_add(&self, w: &CudaWeight, bias: Option<&CudaWeight>, x: &CudaTensor, acc: &mut CudaTensor) -> Result<(), BackendError> {
        if !self.int8_matvec(w, x) {
            let mut y = self.tensor(x.rows, w.rows)?;
            self.matmul(w, bias, x, &mut y)?;
            return self.add(acc, &y);
        }
        let int8 = self.int8_begin(x)?;
        let bias_addr = bias.and_then(|b| b.values.as_ref()).map_or(0, |v| self.addr(v));
        if !self.step_note(Op::MatMul, &[self.addr(&w.bytes), bias_addr, self.addr(&x.data), self.addr(&acc.data), x.rows as u64, 1]) {
            return Ok(());
        }
        let bias = match bias {
            Some(b) if b.rows * b.cols != w.rows => {
                return Err(BackendError::Shape { op: Op::MatMul, detail: format!("bias of {} for {} outputs", b.rows * b.cols, w.rows) })
            }
            Some(b) => Some(self.addr(values(b, Op::MatMul)?)),
            None => None,
        };
        ops::matvec::check(w, x, acc)?;
        let xq = self.int8_acts(x, int8)?;
        ops::mmvq::matmul(&self.dev, w, bias, &xq, acc, true)
    }

    /// One int8 launch per run of same-type weights (q, k and v of a Q4_K_M layer whose v is
    /// Q6_K: two) for one token; otherwise three matmuls.
    fn matmul_qkv(&self, ws: [&CudaWeight; 3], biases: [Option<&CudaWeight>; 3], x: &CudaTensor, mut outs: [&mut CudaTensor; 3]) -> Result<(), BackendError> {
        let op = Op::MatMul;
        if x.rows != 1 || !ws.iter().all(|w| self.int8_matvec(w, x)) {
            for ((w, bias), out) in ws.into_iter().zip(biases).zip(outs) {
                self.matmul(w, bias, x, out)?;
            }
            return Ok(());
        }
        let int8 = self.int8_begin(x)?;
        let bias_addrs = biases.map(|b| b.and_then(|b| b.values.as_ref()).map_or(0, |v| self.addr(v)));
        let mut note = [self.addr(&x.data); 10];
        for i in 0..3 {
            note[1 + 3 * i..4 + 3 * i].copy_from_slice(&[self.addr(&ws[i].bytes), bias_addrs[i], self.addr(&outs[i].data)]);
        }
        if !self.step_note(op, &note) {
            return Ok(());
        }
        let mut bias = [None; 3];
        for i in 0..3 {
            ops::matvec::check(ws[i], x, outs[i])?;
            if let Some(b) = biases[i] {
                if b.rows * b.cols != ws[i].rows {
                    return Err(BackendError::Shape { op, detail: format!("bias of {} for {} outputs", b.rows * b.cols, ws[i].rows) });
                }
                bias[i] = Some(self.addr(values(b, op)?));
            }
        }
        let xq = self.int8_acts(x, int8)?;
        let mut i = 0;
        while i < 3 {
            let j = (i + 1..3).find(|&j| (ws[j].ty, ws[j].layout) != (ws[i].ty, ws[i].layout)).unwrap_or(3);
            ops::mmvq::matmul3(&self.dev, &ws[i..j], &bias[i..j], &xq, &mut outs[i..j])?;
            i = j;
        }
        Ok(())
    }

    fn embed(&self, table: &CudaWeight, ids: &[u32], scale: f32, out: &mut CudaTensor) -> Result<(), BackendError> {
        let op = Op::Embed;
        if out.rows != ids.len() || out.cols != table.cols {
            return Err(BackendError::Shape { op, detail: format!("{} ids of {} values into out [{}, {}]", ids.len(), table.cols, out.rows, out.cols) });
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= table.rows) {
            return Err(BackendError::Other { op, detail: format!("token id {id} outside a table of {} rows", table.rows) });
        }
        if ids.is_empty() {
            return Ok(());
        }
        let mut st = self.step();
        st.note(op, &[self.addr(&table.bytes), self.addr(&out.data), ids.len() as u64, scale.to_bits() as u64]);
        if st.mode().device_position() {
            if ids != [st.token_pos().0] {
                return Err(st.refuse(op, &format!("of ids {ids:?} other than the step's token")));
            }
            if !st.mode().launches() {
                return Ok(());
            }
            return ops::matvec::embed(&self.dev, table, st.token_dev(), 1, scale, out);
        }
        drop(st);
        let ids_dev = self.upload_vec(op, ids)?;
        ops::matvec::embed(&self.dev, table, &ids_dev, ids.len(), scale, out)
    }

    /// Inside a decode step, a norm of whole rows (the one before q/k/v, before the
    /// feed-forward, before the output) also leaves its output quantized for the int8 matvec,
    /// so the matmuls after it skip their quantize launch.
    fn rms_norm(&self, x: &CudaTensor, weight: &CudaWeight, eps: f32, out: &mut CudaTensor) -> Result<(), BackendError> {
        let w = values(weight, Op::RmsNorm)?;
        let q8 = self.step().mode() != Mode::Off
            && !self.opts.f32_matvec
            && (1..ops::gemm::MIN_TOKENS).contains(&x.rows)
            && w.len() == x.cols
            && ops::norm::quantizes(x.cols);
        // Taken before a replay returns, as the matmuls' scratch is.
        let scratch = if q8 { Some(self.int8_scratch(ops::mmvq::scratch_len(x.rows, x.cols))?) } else { None };
        if !self.step_note(Op::RmsNorm, &[self.addr(&x.data), self.addr(w), self.addr(&out.data), eps.to_bits() as u64]) {
            return Ok(());
        }
        let Some(mut scratch) = scratch else {
            return ops::norm::rms_norm(&self.dev, x, w, eps, out);
        };
        let acts = ops::norm::rms_norm_q8(&self.dev, x, w, eps, out, &mut scratch)?;
        let key = (self.addr(&out.data), self.step().epoch());
        *self.int8_last.lock().unwrap_or_else(|p| p.into_inner()) = Some((key, acts));
        Ok(())
    }

    fn rope(&self, x: &mut CudaTensor, head_dim: usize, positions: &[usize], p: &RopeParams) -> Result<(), BackendError> {
        let op = Op::Rope;
        if positions.len() != x.rows {
            return Err(BackendError::Shape { op, detail: format!("{} positions for {} rows", positions.len(), x.rows) });
        }
        if x.rows == 0 {
            return Ok(());
        }
        let mut ff_cache = self.freq_factors.lock().unwrap_or_else(|p| p.into_inner());
        let ff = match &p.freq_factors {
            Some(f) if !f.is_empty() => {
                let i = self.freq_factors_index(f, &mut ff_cache)?;
                Some(&ff_cache[i].1)
            }
            _ => None,
        };
        let mut st = self.step();
        st.note(op, &[self.addr(&x.data), head_dim as u64, ff.map_or(0, |f| self.addr(f)), p.freq_base.to_bits() as u64]);
        if st.mode().device_position() {
            if positions != [st.token_pos().1] {
                return Err(st.refuse(op, &format!("at positions {positions:?} other than the step's")));
            }
            if !st.mode().launches() {
                return Ok(());
            }
            return ops::rope::rope(&self.dev, x, head_dim, st.pos_dev(), ff, p);
        }
        drop(st);
        let pos: Vec<i32> = positions.iter().map(|&p| ops::i32_of(op, "position", p)).collect::<Result<_, _>>()?;
        let pos = self.upload_vec(op, &pos)?;
        ops::rope::rope(&self.dev, x, head_dim, &pos, ff, p)
    }

    fn store_kv(&self, cache: &mut CudaCache, start: usize, x: &CudaTensor) -> Result<(), BackendError> {
        let op = Op::StoreKv;
        let mut st = self.step();
        st.note(op, &[self.cache_addr(cache), self.addr(&x.data), x.rows as u64]);
        if st.mode().device_position() {
            // Decode steps write rows at the device-side position (kernels/step.cu, flash.cu).
            if start != st.token_pos().1 || start + x.rows > cache.capacity || x.cols != cache.cols {
                let why = format!("of {} rows at {start} into a cache of {} (step position {})", x.rows, cache.capacity, st.token_pos().1);
                return Err(st.refuse(op, &why));
            }
            if !st.mode().launches() {
                return Ok(());
            }
            return match &mut cache.data {
                CacheData::F16(data) => ops::step::store_f16_at(&self.dev, data, st.pos_dev(), x),
                CacheData::Q8_0 { qs, d } => ops::step::store_q8_0_at(&self.dev, qs, d, st.pos_dev(), x),
            };
        }
        drop(st);
        ops::elementwise::store_kv(&self.dev, cache, start, x)
    }

    /// One launch for f16 caches (`rope_store_kv_f16` in rope.cu); q8_0 caches take the four
    /// ops (their quantization works on whole 32-value blocks).
    fn rope_store_kv(
        &self,
        q: &mut CudaTensor,
        k: &mut CudaTensor,
        v: &CudaTensor,
        head_dim: usize,
        positions: &[usize],
        p: &RopeParams,
        k_cache: &mut CudaCache,
        v_cache: &mut CudaCache,
        start: usize,
    ) -> Result<(), BackendError> {
        let op = Op::Rope;
        let (CacheData::F16(kc), CacheData::F16(vc)) = (&mut k_cache.data, &mut v_cache.data) else {
            self.rope(q, head_dim, positions, p)?;
            self.rope(k, head_dim, positions, p)?;
            self.store_kv(k_cache, start, k)?;
            return self.store_kv(v_cache, start, v);
        };
        let rows = q.rows;
        if positions.len() != rows || k.rows != rows || v.rows != rows || start + rows > k_cache.capacity.min(v_cache.capacity) {
            return Err(BackendError::Shape {
                op,
                detail: format!("{} positions, q/k/v of {}/{}/{} rows at {start} into caches of {} rows", positions.len(), rows, k.rows, v.rows, k_cache.capacity),
            });
        }
        if rows == 0 {
            return Ok(());
        }
        let mut ff_cache = self.freq_factors.lock().unwrap_or_else(|p| p.into_inner());
        let ff = match &p.freq_factors {
            Some(f) if !f.is_empty() => {
                let i = self.freq_factors_index(f, &mut ff_cache)?;
                Some(&ff_cache[i].1)
            }
            _ => None,
        };
        let (kc_addr, vc_addr) = (self.addr(kc), self.addr(vc));
        let mut st = self.step();
        let rope_bits = [p.freq_base.to_bits(), p.freq_scale.to_bits(), p.ext_factor.to_bits(), p.attn_factor.to_bits()].map(u64::from);
        st.note(op, &[self.addr(&q.data), self.addr(&k.data), self.addr(&v.data), kc_addr, vc_addr, head_dim as u64, p.n_rot as u64, ff.map_or(0, |f| self.addr(f))]);
        st.note(op, &rope_bits);
        let (kcols, vcols) = (k_cache.cols, v_cache.cols);
        if st.mode().device_position() {
            let pos = st.token_pos().1;
            if positions != [pos] || start != pos {
                return Err(st.refuse(op, &format!("at positions {positions:?} into row {start} (step position {pos})")));
            }
            if !st.mode().launches() {
                return Ok(());
            }
            let at = ops::rope::CacheRow::Device(st.pos_dev());
            return ops::rope::rope_store_kv_f16(&self.dev, q, k, v, head_dim, st.pos_dev(), ff, p, (kc, kcols), (vc, vcols), at);
        }
        drop(st);
        let pos: Vec<i32> = positions.iter().map(|&p| ops::i32_of(op, "position", p)).collect::<Result<_, _>>()?;
        let pos = self.upload_vec(op, &pos)?;
        ops::rope::rope_store_kv_f16(&self.dev, q, k, v, head_dim, &pos, ff, p, (kc, kcols), (vc, vcols), ops::rope::CacheRow::Host(start))
    }

    /// Flash attention for head sizes 64, 128 and 256 (keys and values alike); other shapes,
    /// and `AttentionKind::Standard`, use the one-block-per-query-row kernel.
    fn attention(&self, q: &CudaTensor, k: &CudaCache, v: &CudaCache, kv_len: usize, p: &AttentionParams, out: &mut CudaTensor) -> Result<(), BackendError> {
        let flash = self.opts.attention == AttentionKind::Flash && ops::flash::supports(p);
        if flash && (q.cols != p.n_head * p.head_dim_k || out.cols != p.n_head * p.head_dim_v || out.rows != q.rows) {
            return Err(BackendError::Shape {
                op: Op::Attention,
                detail: format!("q [{}, {}] and out [{}, {}] for {p:?}", q.rows, q.cols, out.rows, out.cols),
            });
        }
        // Decode steps read the position from device memory: flash-decoding with its splits
        // planned for the cache's capacity (so the graph serves every position), else
        // kernels/step.cu's standard kernel (f16 caches). With split keys the combine kernel
        // also leaves the output quantized for the o projection's int8 matvec; its scratch is
        // taken before a replay returns, as the matmuls' is.
        let q8_scratch = if flash
            && self.step().mode() != Mode::Off
            && !self.opts.f32_matvec
            && (1..ops::gemm::MIN_TOKENS).contains(&out.rows)
            && p.head_dim_v % 32 == 0
            && ops::flash::decodes_at(q.rows, p)
        {
            Some(self.int8_scratch(ops::mmvq::scratch_len(out.rows, out.cols))?)
        } else {
            None
        };
        {
            let op = Op::Attention;
            let mut st = self.step();
            let (nh, window, scale) = (p.n_head as u64, p.window.unwrap_or(0) as u64, p.scale.to_bits() as u64);
            // The flash partials' address is baked into a captured split launch; a prefill that
            // grows the workspace moves it, and the step is then recorded again.
            let partials = if flash && st.mode().device_position() { self.flash.partials_address(&self.dev) } else { 0 };
            st.note(op, &[self.addr(&q.data), self.cache_addr(k), self.cache_addr(v), self.addr(&out.data), nh, window, scale, partials]);
            if st.mode().device_position() {
                let pos = st.token_pos().1;
                if p.q_pos0 != pos || kv_len != pos + q.rows || kv_len > k.capacity || kv_len > v.capacity {
                    return Err(st.refuse(op, &format!("at q_pos0 {} over {kv_len} keys (step position {pos})", p.q_pos0)));
                }
                if flash && ops::flash::decodes_at(q.rows, p) {
                    if !st.mode().launches() {
                        return Ok(());
                    }
                    let (kv, vv) = (k.view(), v.view());
                    let may_grow = st.mode() == Mode::Warmup;
                    let q8 = q8_scratch.as_ref().map(|s| {
                        let base = self.addr(&s.data);
                        (base, base + (out.rows * out.cols) as u64)
                    });
                    match ops::flash::flash_attention_at_q8(&self.dev, &self.flash, &q.data, q.rows, &kv, &vv, kv_len, st.pos_dev(), p, may_grow, q8, &mut out.data)? {
                        // Another cache (capacity) than the warm-up's: its workspace would be
                        // allocated inside the capture. Warm up again.
                        None => return Err(st.rewarm(op, "flash-decoding workspace too small for the capture")),
                        Some(true) => {
                            let acts = ops::mmvq::QuantizedActs::at(q8.map_or(0, |(b, _)| b), out.rows, out.cols);
                            *self.int8_last.lock().unwrap_or_else(|p| p.into_inner()) = Some(((self.addr(&out.data), st.epoch()), acts));
                        }
                        Some(false) => {}
                    }
                    return Ok(());
                }
                let (CacheData::F16(kd), CacheData::F16(vd)) = (&k.data, &v.data) else {
                    return Err(st.refuse(op, "over a q8_0 cache with standard attention (no step kernel)"));
                };
                if !st.mode().launches() {
                    return Ok(());
                }
                return ops::step::attention_at(&self.dev, q, (kd, k.cols), (vd, v.cols), st.pos_dev(), p, out);
            }
        }
        if flash {
            let (kv, vv) = (k.view(), v.view());
            return ops::flash::flash_attention(&self.dev, &self.flash, &q.data, q.rows, &kv, &vv, kv_len, p, FlashOptions::default(), &mut out.data);
        }
        ops::attention::attention(&self.dev, q, k, v, kv_len, p, out)
    }

    fn act_mul(&self, act: Activation, gate: &CudaTensor, up: &CudaTensor, out: &mut CudaTensor) -> Result<(), BackendError> {
        if !self.step_note(Op::ActMul, &[self.addr(&gate.data), self.addr(&up.data), self.addr(&out.data), act as u64]) {
            return Ok(());
        }
        ops::elementwise::act_mul(&self.dev, act, gate, up, out)
    }

    fn add(&self, acc: &mut CudaTensor, x: &CudaTensor) -> Result<(), BackendError> {
        if !self.step_note(Op::Add, &[self.addr(&acc.data), self.addr(&x.data)]) {
            return Ok(());
        }
        ops::elementwise::add(&self.dev, acc, x)
    }

    fn scale(&self, x: &mut CudaTensor, s: f32) -> Result<(), BackendError> {
        if !self.step_note(Op::Scale, &[self.addr(&x.data), s.to_bits() as u64]) {
            return Ok(());
        }
        ops::elementwise::scale(&self.dev, x, s)
    }

    fn copy_rows(&self, x: &CudaTensor, rows: &[usize], out: &mut CudaTensor) -> Result<(), BackendError> {
        let op = Op::CopyRows;
        if out.rows != rows.len() || out.cols != x.cols || rows.iter().any(|&r| r >= x.rows) {
            return Err(BackendError::Shape { op, detail: format!("rows {rows:?} of x [{}, {}] into out [{}, {}]", x.rows, x.cols, out.rows, out.cols) });
        }
        if rows.is_empty() {
            return Ok(());
        }
        let leading = rows.iter().enumerate().all(|(i, &r)| i == r);
        let mut st = self.step();
        st.note(op, &[self.addr(&x.data), self.addr(&out.data), rows.len() as u64, u64::from(leading)]);
        if leading {
            // The first rows (a decode step's only row): one device copy, no index upload.
            if !st.mode().launches() {
                return Ok(());
            }
            let n = rows.len() * x.cols;
            let src = x.data.slice(0..n);
            let mut dst = out.data.slice_mut(0..n);
            return self.dev.stream().memcpy_dtod(&src, &mut dst).map_err(ops::launch_err(op));
        }
        if st.mode().device_position() {
            return Err(st.refuse(op, "of arbitrary rows"));
        }
        drop(st);
        let idx: Vec<i32> = rows.iter().map(|&r| ops::i32_of(op, "row", r)).collect::<Result<_, _>>()?;
        let idx = self.upload_vec(op, &idx)?;
        ops::elementwise::copy_rows(&self.dev, x, &idx, out)
    }

    fn softmax(&self, x: &mut CudaTensor) -> Result<(), BackendError> {
        if !self.step_note(Op::Softmax, &[self.addr(&x.data)]) {
            return Ok(());
        }
        ops::elementwise::softmax(&self.dev, x)
    }

    fn argmax(&self, x: &CudaTensor, row: usize) -> Result<u32, BackendError> {
        let op = Op::TopK;
        if matches!(self.step().mode(), Mode::Capture | Mode::Replay) {
            return Err(self.step().refuse(op, "argmax"));
        }
        let mut out = self.argmax_out.lock().unwrap_or_else(|p| p.into_inner());
        ops::step::argmax(&self.dev, x, row, &mut out)?;
        let mut host = [0u32; 1];
        self.dev.stream().memcpy_dtoh(&*out, &mut host).map_err(ops::launch_err(op))?;
        self.dev.synchronize().map_err(ops::op_err(op))?;
        Ok(host[0])
    }

    fn device_memory(&self) -> Option<DeviceMemory> {
        self.dev.memory().ok()
    }

    fn begin_decode_step(&self, token: u32, pos: usize) -> Result<(), BackendError> {
        self.step().begin(self.dev.stream(), token, pos)
    }

    fn end_decode_step(&self, forward_ok: bool) -> Result<bool, BackendError> {
        self.step().end(self.dev.stream(), forward_ok)
    }

    fn top_k(&self, x: &CudaTensor, row: usize, k: usize) -> Result<Vec<(u32, f32)>, BackendError> {
        let op = Op::TopK;
        if matches!(self.step().mode(), Mode::Capture | Mode::Replay) {
            return Err(self.step().refuse(op, "top_k"));
        }
        if row >= x.rows {
            return Err(BackendError::Shape { op, detail: format!("row {row} of [{}, {}]", x.rows, x.cols) });
        }
        let mut host = vec![0.0f32; x.cols];
        let src = x.data.slice(row * x.cols..(row + 1) * x.cols);
        self.dev.stream().memcpy_dtoh(&src, &mut host).map_err(ops::launch_err(op))?;
        self.dev.synchronize().map_err(ops::op_err(op))?;
        let mut idx: Vec<u32> = (0..x.cols as u32).collect();
        idx.sort_by(|&a, &b| host[b as usize].total_cmp(&host[a as usize]).then(a.cmp(&b)));
        Ok(idx.into_iter().take(k).map(|i| (i, host[i as usize])).collect())
    }
}
