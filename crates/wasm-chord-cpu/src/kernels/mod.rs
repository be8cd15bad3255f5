//! Fused quantized matmul kernels: weights stay in their file type and are dotted block by block
//! with activations quantized once per row to the weight type's "vec_dot_type", as ggml does.
//!
//! Every weight type has a scalar kernel (the reference, same integer math as ggml's generic
//! `ggml_vec_dot_*`) and SIMD kernels beside it (x86-64 AVX2 and AVX-512 VNNI, aarch64 NEON with
//! or without the dot-product extension, wasm32 simd128). The set is
//! chosen once at start-up from the CPU's features ([`Kernels::detect`]); tests compare every
//! SIMD kernel with the scalar one.
//!
//! The unit of work is [`Kernels::matmul`]: a run of weight rows against a run of quantized
//! activation rows, written `[rows, tokens]`. Kernels walk it in register tiles (several
//! weight rows by several tokens) so each weight block loaded serves several tokens: a matrix-
//! vector product for decoding is the one-token case of the same loop.

pub mod act;
#[cfg(target_arch = "x86_64")]
pub mod act_x86;
#[cfg(target_arch = "aarch64")]
pub mod aarch64;
pub mod packed;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod x86;
#[cfg(target_arch = "x86_64")]
pub mod x86_packed;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub mod wasm_simd128;

use std::sync::OnceLock;

use wasm_chord_core::TensorType;

pub use act::{quantize_act, quantize_act_rows, ActType, BlockQ8_1};
pub use packed::{PackedFn, PackedWeight};

/// Errors from the kernel entry points: lengths that do not describe the shapes asked for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("kernel: {ty} rows of {k} elements are not whole blocks")]
    PartialBlock { ty: TensorType, k: usize },
    #[error("kernel: {what} holds {got} bytes, expected {expected} ({ty}, k = {k})")]
    BadLength { what: &'static str, ty: TensorType, k: usize, expected: usize, got: usize },
    #[error("kernel: output holds {got} values, expected {expected}")]
    BadOutput { expected: usize, got: usize },
    #[error("kernel: {0} weights have no fused kernel (dequantize them instead)")]
    Unsupported(TensorType),
}

/// `out[r * n_tok + t] = Σ_i w[r, i] · a[t, i]`. Lengths were checked by [`Kernels::matmul`]:
/// `w` holds `n_rows` rows of `k` weights, `a` holds `n_tok` activation rows of the weight
/// type's [`ActType`], `out` holds `n_rows * n_tok` values.
pub type MatmulFn = fn(k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]);

/// Which instruction set a kernel set uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    /// AVX2 with AVX-512 VNNI byte dot products for the 32-weight block types.
    Avx512Vnni,
    Simd128,
    /// aarch64 NEON (byte dot products by widening multiplies).
    Neon,
    /// NEON with the dot-product extension's `sdot`.
    NeonDotprod,
}

/// One matmul kernel per weight type (indexed by [`type_index`]), for one instruction set.
pub struct Kernels {
    pub isa: Isa,
    table: [Option<MatmulFn>; N_TYPES],
    /// Kernels over [`PackedWeight`]s, for the types this set packs.
    packed: [Option<PackedFn>; N_TYPES],
}

const N_TYPES: usize = TensorType::ALL.len();

/// The position of `ty` in the kernel tables.
fn type_index(ty: TensorType) -> usize {
    TensorType::ALL.iter().position(|&t| t == ty).unwrap_or(0)
}

impl Kernels {
    /// The scalar reference kernels (every weight type except F32 and Q8_K).
    pub fn scalar() -> Self {
        let mut table = [None; N_TYPES];
        for ty in TensorType::ALL {
            table[type_index(ty)] = scalar::matmul_fn(ty);
        }
        Self { isa: Isa::Scalar, table, packed: [None; N_TYPES] }
    }

    /// The AVX2+FMA+F16C kernels over the scalar ones, if this CPU has those features.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2() -> Option<Self> {
        let ok = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
        ok.then(|| {
            let mut k = Self::overlay(Isa::Avx2, x86::matmul_fn);
            for ty in TensorType::ALL {
                k.packed[type_index(ty)] = x86_packed::packed_fn(ty);
            }
            k
        })
    }

    /// The AVX2 kernels with AVX-512 VNNI ones over them, if this CPU has both.
    #[cfg(target_arch = "x86_64")]
    pub fn avx512_vnni() -> Option<Self> {
        let mut k = Self::avx2()?;
        k.isa = Isa::Avx512Vnni;
        let mut any = false;
        for ty in TensorType::ALL {
            if let Some(f) = x86::matmul_fn_avx512_vnni(ty) {
                k.table[type_index(ty)] = Some(f);
                any = true;
            }
            if let Some(f) = x86_packed::packed_fn_vnni(ty) {
                k.packed[type_index(ty)] = Some(f);
            }
        }
        any.then_some(k)
    }

    /// The NEON kernels over the scalar ones (every aarch64 CPU has NEON).
    #[cfg(target_arch = "aarch64")]
    pub fn neon() -> Self {
        Self::overlay(Isa::Neon, aarch64::matmul_fn)
    }

    /// The NEON kernels with `sdot` byte dot products, if this CPU has the dot-product extension.
    #[cfg(target_arch = "aarch64")]
    pub fn neon_dotprod() -> Option<Self> {
        std::arch::is_aarch64_feature_detected!("dotprod").then(|| Self::overlay(Isa::NeonDotprod, aarch64::matmul_fn_dotprod))
    }

    /// Every kernel set this CPU runs, scalar first (for tests and benchmarks).
    pub fn available() -> Vec<Self> {
        // Only targets with SIMD sets push more; plain wasm32 keeps the scalar set alone.
        #[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64", target_feature = "simd128")), allow(unused_mut))]
        let mut sets = vec![Self::scalar()];
        #[cfg(target_arch = "x86_64")]
        sets.extend(Self::avx2());
        #[cfg(target_arch = "x86_64")]
        sets.extend(Self::avx512_vnni());
        #[cfg(target_arch = "aarch64")]
        sets.push(Self::neon());
        #[cfg(target_arch = "aarch64")]
        sets.extend(Self::neon_dotprod());
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        sets.push(Self::simd128());
        sets
    }

    /// The simd128 kernels over the scalar ones (compiled in only with `+simd128`).
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    pub fn simd128() -> Self {
        Self::overlay(Isa::Simd128, wasm_simd128::matmul_fn)
    }

    #[allow(dead_code)]
    fn overlay(isa: Isa, pick: fn(TensorType) -> Option<MatmulFn>) -> Self {
        let mut k = Self::scalar();
        k.isa = isa;
        for ty in TensorType::ALL {
            if let Some(f) = pick(ty) {
                k.table[type_index(ty)] = Some(f);
            }
        }
        k
    }

    /// The fastest set this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = Self::avx512_vnni().or_else(Self::avx2) {
            return k;
        }
        #[cfg(target_arch = "aarch64")]
        return Self::neon_dotprod().unwrap_or_else(Self::neon);
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        return Self::simd128();
        #[allow(unreachable_code)]
        Self::scalar()
    }

    /// The set chosen at first use, shared by the whole process.
    pub fn get() -> &'static Kernels {
        static KERNELS: OnceLock<Kernels> = OnceLock::new();
        KERNELS.get_or_init(Self::detect)
    }

    /// Whether weights of type `ty` have a fused kernel.
    pub fn supports(&self, ty: TensorType) -> bool {
        self.table[type_index(ty)].is_some()
    }

    /// `out[r * n_tok + t] = Σ_i w[r, i] · a[t, i]` for `n_rows` weight rows of `k` elements of
    /// type `ty` in `w` and `n_tok` activation rows in `a`, quantized with
    /// [`quantize_act`]`(ActType::for_weight(ty), ..)`.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        ty: TensorType,
        k: usize,
        w: &[u8],
        n_rows: usize,
        a: &[u8],
        n_tok: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let f = self.table[type_index(ty)].ok_or(KernelError::Unsupported(ty))?;
        let act = ActType::for_weight(ty);
        let w_row = ty.row_bytes(k).map_err(|_| KernelError::PartialBlock { ty, k })?;
        let a_row = act.row_bytes(k).ok_or(KernelError::PartialBlock { ty, k })?;
        let check = |what, expected: usize, got| {
            if expected == got {
                Ok(())
            } else {
                Err(KernelError::BadLength { what, ty, k, expected, got })
            }
        };
        check("weights", w_row * n_rows, w.len())?;
        check("activations", a_row * n_tok, a.len())?;
        if out.len() != n_rows * n_tok {
            return Err(KernelError::BadOutput { expected: n_rows * n_tok, got: out.len() });
        }
        if k > 0 {
            f(k, w, n_rows, a, n_tok, out);
        } else {
            out.fill(0.0);
        }
        Ok(())
    }

    /// `rows x cols` weights of type `ty` (the file's bytes) repacked for this set's packed
    /// kernel, if it has one for `ty` and the shape has a whole group of rows; `copied` as
    /// [`PackedWeight::pack`]'s.
    pub fn pack(&self, ty: TensorType, rows: usize, cols: usize, bytes: &[u8], copied: &mut dyn FnMut(std::ops::Range<usize>)) -> Option<PackedWeight> {
        self.packed[type_index(ty)]?;
        if rows < packed::GROUP {
            return None;
        }
        PackedWeight::pack(ty, rows, cols, bytes, copied)
    }

    /// [`Kernels::matmul`] on rows `r0..r0 + n_rows` of a weight this set packed, written
    /// token-major (`out[t * n_rows + r]`); `r0` must be a multiple of [`packed::GROUP`]. `scales` holds the activations' block scales as f32
    /// ([`Kernels::act_scales`], row after row), or is empty (the kernel converts them).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_packed(
        &self,
        w: &PackedWeight,
        r0: usize,
        n_rows: usize,
        a: &[u8],
        scales: &[f32],
        n_tok: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let (ty, k) = (w.ty, w.cols);
        let f = self.packed[type_index(ty)].ok_or(KernelError::Unsupported(ty))?;
        let a_row = ActType::for_weight(ty).row_bytes(k).ok_or(KernelError::PartialBlock { ty, k })?;
        if r0 % packed::GROUP != 0 || r0 + n_rows > w.rows {
            return Err(KernelError::BadLength { what: "packed rows", ty, k, expected: w.rows, got: r0 + n_rows });
        }
        if a.len() != a_row * n_tok {
            return Err(KernelError::BadLength { what: "activations", ty, k, expected: a_row * n_tok, got: a.len() });
        }
        if out.len() != n_rows * n_tok {
            return Err(KernelError::BadOutput { expected: n_rows * n_tok, got: out.len() });
        }
        f(k, w.groups(r0, n_rows), n_rows, a, scales, n_tok, out);
        Ok(())
    }

    /// f32 values per activation row that [`Kernels::act_scales`] writes for the packed weight
    /// `w`: nonzero only where this set's batched kernel for it reads them.
    pub fn act_scales_len(&self, w: &PackedWeight) -> usize {
        let act = ActType::for_weight(w.ty);
        if self.packed[type_index(w.ty)].is_none() || !matches!(act, ActType::Q8_0 | ActType::Q8_1) {
            return 0;
        }
        packed::act_scales_len(w.ty, w.cols)
    }

    /// One quantized activation row's block scales as f32 (`act_scales_len(w)` values), for
    /// [`Kernels::matmul_packed`].
    pub fn act_scales(&self, w: &PackedWeight, a_row: &[u8], out: &mut [f32]) {
        packed::act_scales(w.ty, a_row, out)
    }

    /// [`packed::expand_q5_0`] with this set's instructions where it has them.
    pub fn expand_q5_0(&self, src: &[u8], dst: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if matches!(self.isa, Isa::Avx2 | Isa::Avx512Vnni) && x86_packed::expand_q5_0_avx2(src, dst) {
            return;
        }
        packed::expand_q5_0(src, dst)
    }

    /// Quantizes one activation row as [`quantize_act`] does (the same bytes), with this
    /// set's instructions where it has them. Returns `false` if the lengths do not fit.
    pub fn quantize_act(&self, act: ActType, src: &[f32], dst: &mut [u8]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if matches!(self.isa, Isa::Avx2 | Isa::Avx512Vnni) && act_x86::quantize_act(act, src, dst) {
            return true;
        }
        quantize_act(act, src, dst)
    }

    /// One weight row dotted with one quantized activation row.
    pub fn vec_dot(&self, ty: TensorType, k: usize, w: &[u8], a: &[u8]) -> Result<f32, KernelError> {
        let mut out = [0.0f32];
        self.matmul(ty, k, w, 1, a, 1, &mut out)?;
        Ok(out[0])
    }
}

/// Walks `n_rows x n_tok` in tiles of at most `R x T` and calls `tile(r0, nr, t0, nt, out)`
/// for each, tokens in cache-sized chunks so a chunk's activations stay in L2 while every
/// weight row passes over them.
#[inline(always)]
#[cfg_attr(not(any(target_arch = "x86_64", target_feature = "simd128")), allow(dead_code))]
pub(crate) fn for_each_tile<const R: usize, const T: usize>(n_rows: usize, n_tok: usize, a_row_bytes: usize, tile: impl FnMut(usize, usize, usize, usize)) {
    for_each_tile_in::<R, T>(128 << 10, n_rows, n_tok, a_row_bytes, tile)
}

/// [`for_each_tile`] with about `chunk_bytes` of activations per token chunk.
#[inline(always)]
#[cfg_attr(not(any(target_arch = "x86_64", target_feature = "simd128")), allow(dead_code))]
pub(crate) fn for_each_tile_in<const R: usize, const T: usize>(
    chunk_bytes: usize,
    n_rows: usize,
    n_tok: usize,
    a_row_bytes: usize,
    mut tile: impl FnMut(usize, usize, usize, usize),
) {
    // A multiple of T tokens.
    let chunk = (chunk_bytes / a_row_bytes.max(1)).max(T) / T * T;
    let mut t0 = 0;
    while t0 < n_tok {
        let t1 = (t0 + chunk).min(n_tok);
        let mut r0 = 0;
        while r0 < n_rows {
            let nr = R.min(n_rows - r0);
            let mut t = t0;
            while t < t1 {
                let nt = T.min(t1 - t);
                tile(r0, nr, t, nt);
                t += nt;
            }
            r0 += nr;
        }
        t0 = t1;
    }
}
