//! The backend trait: the small, closed set of ops every model graph is built from.
//!
//! A backend owns its tensors (activations in `Tensor`, weights in `Weight`, the key/value
//! cache in `Cache`) and the model graph only calls ops on them, so a CUDA or WebGPU backend
//! keeps everything in device memory. Backends never see model names: an op is described by
//! its shapes and parameters alone. Every op is a required method, so adding one is a
//! compile error in every backend until it is implemented there; the optional hooks at the end
//! (argmax, device memory, decode steps) have defaults built from the ops.
//!
//! Conventions: an activation tensor is an f32 matrix `[rows, cols]`, row-major, one row per
//! token. A weight of `rows` output features and `cols` input features stays in its file
//! type (weights are never expanded to f32 at load); a 1-D weight (norm scale, bias) has one
//! row. The cache holds rows of `cols` values, one per position, as f16 or Q8_0 ([`KvType`],
//! chosen when the backend is made).

use std::ops::Range;
use std::sync::Arc;

use crate::gguf::GgufFile;
use crate::quant::TensorType;

/// Errors a backend reports: a shape that does not fit an op, a type it cannot handle,
/// memory it could not get.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: Op, detail: String },
    #[error("{backend} backend does not support {ty} weights ({op})")]
    UnsupportedType { backend: &'static str, op: Op, ty: TensorType },
    #[error("weight of {rows}x{cols} {ty}: expected {expected} bytes, got {got}")]
    WeightBytes { ty: TensorType, rows: usize, cols: usize, expected: usize, got: usize },
    #[error("{op}: {detail}")]
    Other { op: Op, detail: String },
}

/// The op set, named for error messages, `supports_op` checks and per-op test reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Alloc,
    LoadWeight,
    Transfer,
    MatMul,
    Embed,
    RmsNorm,
    Rope,
    StoreKv,
    Attention,
    ActMul,
    Add,
    Scale,
    CopyRows,
    Softmax,
    TopK,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Bytes of a tensor, kept alive by their owner (a memory-mapped file, a buffer) so a CPU
/// backend can compute straight from the file without copying.
#[derive(Clone)]
pub struct SharedBytes {
    owner: Owner,
    range: Range<usize>,
}

#[derive(Clone)]
enum Owner {
    Buffer(Arc<dyn AsRef<[u8]> + Send + Sync>),
    /// A GGUF file, whose pages [`SharedBytes::release_pages`] can drop when it is mapped.
    File(Arc<GgufFile>),
}

impl SharedBytes {
    /// `range` of `owner`'s bytes; `None` if the range lies outside them.
    pub fn new(owner: Arc<dyn AsRef<[u8]> + Send + Sync>, range: Range<usize>) -> Option<Self> {
        let len = (*owner).as_ref().len();
        (range.start <= range.end && range.end <= len).then_some(Self { owner: Owner::Buffer(owner), range })
    }

    /// `range` of a GGUF file's bytes; `None` if the range lies outside the file.
    pub fn from_file(file: Arc<GgufFile>, range: Range<usize>) -> Option<Self> {
        (range.start <= range.end && range.end <= file.bytes().len()).then_some(Self { owner: Owner::File(file), range })
    }

    /// All of a buffer's bytes.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let range = 0..bytes.len();
        Self { owner: Owner::Buffer(Arc::new(bytes)), range }
    }

    pub fn bytes(&self) -> &[u8] {
        // The range was checked against the owner's length at construction and owners are immutable.
        let all = match &self.owner {
            Owner::Buffer(b) => (**b).as_ref(),
            Owner::File(f) => f.bytes(),
        };
        &all[self.range.clone()]
    }

    /// Says bytes `range` of these (clamped to them) will not be read again soon, a backend
    /// having copied them: pages of a memory-mapped file are dropped from this process's memory
    /// ([`GgufFile::release_pages`]); buffers keep theirs. [`SharedBytes::bytes`] reads the same
    /// values afterwards.
    pub fn release_pages(&self, range: Range<usize>) {
        if let Owner::File(f) = &self.owner {
            let len = self.range.len();
            let (start, end) = (range.start.min(len), range.end.min(len));
            f.release_pages(self.range.start + start..self.range.start + end);
        }
    }
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedBytes({:?})", self.range)
    }
}

/// A weight as stored in the file: `rows` rows of `cols` elements of type `ty`.
#[derive(Clone, Debug)]
pub struct WeightData {
    pub ty: TensorType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: SharedBytes,
}

impl WeightData {
    /// Checks that the bytes hold exactly `rows` rows of `cols` elements of `ty`.
    pub fn validate(&self) -> Result<(), BackendError> {
        let bad = |expected| BackendError::WeightBytes {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            expected,
            got: self.bytes.bytes().len(),
        };
        let expected = self
            .ty
            .row_bytes(self.cols)
            .ok()
            .and_then(|row| row.checked_mul(self.rows))
            .ok_or_else(|| bad(usize::MAX))?;
        if expected != self.bytes.bytes().len() {
            return Err(bad(expected));
        }
        Ok(())
    }
}

/// How adjacent dimensions are paired by rotary embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// Pairs (0,1), (2,3), ...: ggml's NORM mode, used by llama.
    Interleaved,
    /// Pairs (i, i + n_rot/2): ggml's NEOX mode, used by qwen2 and gemma3.
    Neox,
}

/// Rotary embedding parameters, with ggml's YaRN extension (`ext_factor == 0` disables it).
#[derive(Clone, Debug, PartialEq)]
pub struct RopeParams {
    pub mode: RopeMode,
    /// Rotated dimensions at the start of each head; the rest pass through.
    pub n_rot: usize,
    pub freq_base: f32,
    /// 1 / (linear scaling factor).
    pub freq_scale: f32,
    pub ext_factor: f32,
    pub attn_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// Context length the model was trained with (YaRN correction dims).
    pub n_ctx_orig: usize,
    /// Per-frequency divisors (llama 3's rope_freqs), `n_rot / 2` of them.
    pub freq_factors: Option<Vec<f32>>,
}

/// The activation of a gated feed-forward layer: `out = act(gate) * up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// x * sigmoid(x) (SwiGLU).
    Silu,
    /// GeLU, tanh approximation (GeGLU).
    GeluTanh,
}

/// How attention is computed: both give the same result up to float rounding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionKind {
    /// Tiles of keys and values with an online softmax: memory linear in the context.
    #[default]
    Flash,
    /// One full row of scores per query and head, then a softmax (the reference).
    Standard,
}

impl AttentionKind {
    pub const ALL: [AttentionKind; 2] = [AttentionKind::Flash, AttentionKind::Standard];

    pub fn name(self) -> &'static str {
        match self {
            AttentionKind::Flash => "flash",
            AttentionKind::Standard => "standard",
        }
    }
}

impl std::str::FromStr for AttentionKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| format!("unknown attention {s:?} (flash or standard)"))
    }
}

/// How the key/value cache stores its values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    #[default]
    F16,
    /// Blocks of 32 values as 8-bit integers with an f16 scale (about half the memory of
    /// f16); row and head widths must be multiples of 32.
    Q8_0,
}

impl KvType {
    pub const ALL: [KvType; 2] = [KvType::F16, KvType::Q8_0];

    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }

    /// Bytes of one row of `cols` values; `None` when `cols` is not whole blocks of the type
    /// or the size overflows.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        match self {
            KvType::F16 => cols.checked_mul(2),
            KvType::Q8_0 => (cols % 32 == 0).then(|| cols / 32 * 34),
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| format!("unknown KV cache type {s:?} (f16 or q8_0)"))
    }
}

/// Shape and masking of one attention call over a cache.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionParams {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    /// Multiplies q·k before the softmax.
    pub scale: f32,
    /// `cap * tanh(s / cap)` on the scores before the softmax.
    pub softcap: Option<f32>,
    /// Cache position of the first query row; query row `i` sits at `q_pos0 + i` and sees
    /// cache rows `0..=q_pos0 + i` (causal).
    pub q_pos0: usize,
    /// Sliding window: a query at position p sees only keys at positions > p - window.
    pub window: Option<usize>,
}

/// One backend: where tensors live and how ops run on them.
pub trait Backend: Send + Sync {
    /// An f32 activation matrix `[rows, cols]`.
    type Tensor: Send;
    /// A weight kept in its file type.
    type Weight: Send + Sync;
    /// Key or value storage of one layer: rows of `cols` values in the backend's [`KvType`].
    type Cache: Send;

    /// Short name for logs and errors ("cpu").
    fn name(&self) -> &'static str;

    /// How this backend's caches store their values.
    fn kv_type(&self) -> KvType;

    /// Whether matmul and embed handle weights of type `ty`.
    fn supports_weight(&self, ty: TensorType) -> bool;

    // Memory.

    /// A zeroed activation tensor.
    fn tensor(&self, rows: usize, cols: usize) -> Result<Self::Tensor, BackendError>;
    /// An activation tensor holding `data` (`rows * cols` values).
    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<Self::Tensor, BackendError>;
    /// Copies a tensor's values out, row-major.
    fn download(&self, t: &Self::Tensor, out: &mut Vec<f32>) -> Result<(), BackendError>;
    /// `(rows, cols)` of a tensor.
    fn shape(&self, t: &Self::Tensor) -> (usize, usize);
    /// Makes a weight usable by the ops (a view on the CPU, an upload on a device).
    fn load_weight(&self, w: WeightData) -> Result<Self::Weight, BackendError>;
    /// `(rows, cols, type)` of a weight.
    fn weight_shape(&self, w: &Self::Weight) -> (usize, usize, TensorType);
    /// Cache storage for `capacity` positions of `cols` values.
    fn cache(&self, capacity: usize, cols: usize) -> Result<Self::Cache, BackendError>;

    // Ops.

    /// `out[t, o] = sum_k w[o, k] * x[t, k] (+ bias[o])`.
    fn matmul(
        &self,
        w: &Self::Weight,
        bias: Option<&Self::Weight>,
        x: &Self::Tensor,
        out: &mut Self::Tensor,
    ) -> Result<(), BackendError>;
    /// `out[t] = table[ids[t]] * scale`.
    fn embed(&self, table: &Self::Weight, ids: &[u32], scale: f32, out: &mut Self::Tensor) -> Result<(), BackendError>;
    /// RMS-normalizes each group of `weight.cols` values of every row (a whole row, or one
    /// head for QK-norm) and multiplies by `weight`.
    fn rms_norm(&self, x: &Self::Tensor, weight: &Self::Weight, eps: f32, out: &mut Self::Tensor) -> Result<(), BackendError>;
    /// Rotates the heads of `head_dim` values in every row; row `t` sits at `positions[t]`.
    fn rope(&self, x: &mut Self::Tensor, head_dim: usize, positions: &[usize], p: &RopeParams) -> Result<(), BackendError>;
    /// Writes the rows of `x` into cache rows `start..start + x.rows`, rounded to the cache's type.
    fn store_kv(&self, cache: &mut Self::Cache, start: usize, x: &Self::Tensor) -> Result<(), BackendError>;
    /// Causal multi-head attention of the query rows `q` `[n, n_head * head_dim_k]` over cache
    /// rows `0..kv_len`; `out` is `[n, n_head * head_dim_v]`.
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Cache,
        v: &Self::Cache,
        kv_len: usize,
        p: &AttentionParams,
        out: &mut Self::Tensor,
    ) -> Result<(), BackendError>;
    /// `out = act(gate) * up`.
    fn act_mul(&self, act: Activation, gate: &Self::Tensor, up: &Self::Tensor, out: &mut Self::Tensor) -> Result<(), BackendError>;
    /// `acc += x`.
    fn add(&self, acc: &mut Self::Tensor, x: &Self::Tensor) -> Result<(), BackendError>;
    /// `x *= s`.
    fn scale(&self, x: &mut Self::Tensor, s: f32) -> Result<(), BackendError>;
    /// `out[i] = x[rows[i]]`.
    fn copy_rows(&self, x: &Self::Tensor, rows: &[usize], out: &mut Self::Tensor) -> Result<(), BackendError>;
    /// Softmax of every row, in place.
    fn softmax(&self, x: &mut Self::Tensor) -> Result<(), BackendError>;
    /// The `k` largest values of row `row` with their column indices, largest first (ties:
    /// lower index first).
    fn top_k(&self, x: &Self::Tensor, row: usize, k: usize) -> Result<Vec<(u32, f32)>, BackendError>;

    // Optional hooks, with defaults in terms of the ops above.

    /// The column of the largest value of row `row` (ties: lower index), for greedy sampling
    /// without copying the row out.
    fn argmax(&self, x: &Self::Tensor, row: usize) -> Result<u32, BackendError> {
        let top = self.top_k(x, row, 1)?;
        top.first().map(|&(id, _)| id).ok_or_else(|| BackendError::Shape { op: Op::TopK, detail: "argmax of an empty row".into() })
    }

    /// `out = act(x · gateᵀ) * (x · upᵀ)`: a gated feed-forward's two projections and its
    /// activation, which a backend may run as one pass over both weights. The default is two
    /// matmuls and `act_mul`, and a backend's own version must give the same values.
    fn matmul_act_mul(
        &self,
        act: Activation,
        gate: &Self::Weight,
        up: &Self::Weight,
        x: &Self::Tensor,
        out: &mut Self::Tensor,
    ) -> Result<(), BackendError> {
        let (n, _) = self.shape(x);
        let (rows, _, _) = self.weight_shape(gate);
        let mut g = self.tensor(n, rows)?;
        let mut u = self.tensor(n, rows)?;
        self.matmul(gate, None, x, &mut g)?;
        self.matmul(up, None, x, &mut u)?;
        self.act_mul(act, &g, &u, out)
    }

    /// `acc += x · wᵀ (+ bias)`: a projection whose result goes straight into the residual
    /// stream, which a backend may fold into the matmul's epilogue. The default is a matmul
    /// into a temporary and `add`.
    fn matmul_add(
        &self,
        w: &Self::Weight,
        bias: Option<&Self::Weight>,
        x: &Self::Tensor,
        acc: &mut Self::Tensor,
    ) -> Result<(), BackendError> {
        let (n, _) = self.shape(x);
        let (rows, _, _) = self.weight_shape(w);
        let mut y = self.tensor(n, rows)?;
        self.matmul(w, bias, x, &mut y)?;
        self.add(acc, &y)
    }

    /// `outs[i] = x · ws[i]ᵀ (+ biases[i])` for three weights over the same input (an attention
    /// block's q, k and v projections), which a backend may run as one launch. The default is
    /// three matmuls, and a backend's own version must give the same values.
    fn matmul_qkv(
        &self,
        ws: [&Self::Weight; 3],
        biases: [Option<&Self::Weight>; 3],
        x: &Self::Tensor,
        outs: [&mut Self::Tensor; 3],
    ) -> Result<(), BackendError> {
        for ((w, bias), out) in ws.into_iter().zip(biases).zip(outs) {
            self.matmul(w, bias, x, out)?;
        }
        Ok(())
    }

    /// An attention block's rotary embedding and cache write: rotates the heads of `q` and `k`
    /// in place (as [`Backend::rope`], rows at `positions`), then writes `k` and `v` into cache
    /// rows `start..` (as [`Backend::store_kv`]), which a backend may do in one pass. The
    /// default is the four ops, and a backend's own version must give the same values.
    #[allow(clippy::too_many_arguments)]
    fn rope_store_kv(
        &self,
        q: &mut Self::Tensor,
        k: &mut Self::Tensor,
        v: &Self::Tensor,
        head_dim: usize,
        positions: &[usize],
        p: &RopeParams,
        k_cache: &mut Self::Cache,
        v_cache: &mut Self::Cache,
        start: usize,
    ) -> Result<(), BackendError> {
        self.rope(q, head_dim, positions, p)?;
        self.rope(k, head_dim, positions, p)?;
        self.store_kv(k_cache, start, k)?;
        self.store_kv(v_cache, start, v)
    }

    /// Memory of the device this backend computes on, when it has its own (a GPU); `None`
    /// means host memory.
    fn device_memory(&self) -> Option<DeviceMemory> {
        None
    }

    /// Announces a single-token decode step: the next ops, up to [`Backend::end_decode_step`],
    /// are one forward pass over `token` at cache position `pos`, and the sequence of ops and
    /// tensor shapes is the same at every position. A backend may record them once and replay
    /// them (a CUDA graph), reading `token` and `pos` from its own memory. Default: nothing.
    fn begin_decode_step(&self, token: u32, pos: usize) -> Result<(), BackendError> {
        let _ = (token, pos);
        Ok(())
    }

    /// Ends the step begun by [`Backend::begin_decode_step`]; `forward_ok` says whether the
    /// model's forward pass returned without error. `Ok(false)` means the step's ops did not
    /// run (a recording failed or no longer matches) and the caller must run the pass again
    /// without the hooks. Default: `Ok(true)`.
    fn end_decode_step(&self, forward_ok: bool) -> Result<bool, BackendError> {
        let _ = forward_ok;
        Ok(true)
    }
}

/// Free and total bytes of a device's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    pub free: u64,
    pub total: u64,
}
