//! x86-64 kernels: ggml's AVX2 (+FMA, F16C) integer dot products, walked in register tiles of up
//! to 4 weight rows by 3 tokens so each weight block unpacked serves several tokens; where the
//! CPU has AVX-512 VNNI, the 32-weight blocks use its byte dot product (`vpdpbusd`) instead.
//!
//! Three families share one tile loop each: the 32-weight blocks ([`Legacy`]), the 256-weight
//! k-quant super-blocks ([`KQuant`]) and plain floats ([`FloatRow`]).

use std::arch::x86_64::*;
use std::cell::RefCell;

use wasm_chord_core::TensorType;

use super::scalar::{k_runs, KAcc, KOrder, KParts};
use super::{for_each_tile, for_each_tile_in, MatmulFn};

/// The AVX2 matmul for weights of type `ty`, if this CPU has AVX2, FMA and F16C.
pub fn matmul_fn(ty: TensorType) -> Option<MatmulFn> {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")) {
        return None;
    }
    use TensorType::*;
    Some(match ty {
        Q4_0 => matmul_legacy::<Q4_0W>,
        Q4_1 => matmul_legacy::<Q4_1W>,
        Q5_0 => matmul_legacy::<Q5_0W>,
        Q5_1 => matmul_legacy::<Q5_1W>,
        Q8_0 => matmul_legacy::<Q8_0W>,
        IQ4_NL => matmul_legacy::<Iq4NlW>,
        Q2_K => matmul_k::<Q2KW>,
        Q3_K => matmul_k::<Q3KW>,
        Q4_K => matmul_k::<Q4KW>,
        Q5_K => matmul_k::<Q5KW>,
        Q6_K => matmul_k::<Q6KW>,
        IQ4_XS => matmul_k::<Iq4XsW>,
        F32 => matmul_float::<F32W>,
        F16 => matmul_float::<F16W>,
        BF16 => matmul_float::<Bf16W>,
        Q8_K => return None,
    })
}

/// The AVX-512 VNNI matmul for weights of type `ty` where it differs from the AVX2 one (the
/// 32-weight block types), if this CPU has AVX-512 F/BW/VL/VNNI besides AVX2, FMA and F16C.
pub fn matmul_fn_avx512_vnni(ty: TensorType) -> Option<MatmulFn> {
    let ok = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni");
    if !ok || matmul_fn(ty).is_none() {
        return None;
    }
    use TensorType::*;
    Some(match ty {
        Q4_0 => matmul_legacy_vnni::<Q4_0W>,
        Q4_1 => matmul_legacy_vnni::<Q4_1W>,
        Q5_0 => matmul_legacy_vnni::<Q5_0W>,
        Q5_1 => matmul_legacy_vnni::<Q5_1W>,
        Q8_0 => matmul_legacy_vnni::<Q8_0W>,
        IQ4_NL => matmul_legacy_vnni::<Iq4NlW>,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

#[inline(always)]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline(always)]
unsafe fn f32_at(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 bytes of nibbles to 32 bytes: low nibbles (elements 0..16) then high (16..32).
#[inline(always)]
unsafe fn nibbles_32(p: *const u8) -> __m256i {
    // Both halves from one broadcast load; the upper half shifted down a nibble.
    let t = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
    _mm256_and_si256(_mm256_srlv_epi32(t, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), _mm256_set1_epi8(0x0F))
}

/// The 32 bits at `p` spread to 32 bytes: 0xFF where the bit is set (ggml's `bytes_from_bits_32`).
#[inline(always)]
unsafe fn bytes_from_bits_32(p: *const u8) -> __m256i {
    let x = (p as *const u32).read_unaligned();
    let shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// Pointers to `n` rows of `stride` bytes from `base`, rows past `valid` repeating the last valid
/// one (an edge tile computes them and throws them away).
#[inline(always)]
pub(super) fn row_ptrs<const N: usize>(base: *const u8, stride: usize, valid: usize) -> [*const u8; N] {
    std::array::from_fn(|i| base.wrapping_add(i.min(valid.max(1) - 1) * stride))
}

/// Runs `tile::<R, T>` over the whole product; a token tail narrower than `T` (the whole of a
/// one-token product, as in decoding) runs one token at a time so no work is wasted.
macro_rules! drive {
    ($tile:ident, $W:ty, $R:literal x $T:literal, $k:expr, $w:expr, $n_rows:expr, $a:expr, $n_tok:expr, $out:expr, $wb:expr, $ab:expr) => {{
        let (k, w, a, out): (usize, &[u8], &[u8], &mut [f32]) = ($k, $w, $a, $out);
        let (n_rows, n_tok) = ($n_rows, $n_tok);
        if n_rows == 0 || n_tok == 0 {
            return;
        }
        let nb = k / <$W>::LEN;
        let (ws, as_) = (nb * $wb, nb * $ab);
        let (wp, ap, op) = (w.as_ptr(), a.as_ptr(), out.as_mut_ptr());
        for_each_tile::<$R, $T>(n_rows, n_tok, as_, |r0, nr, t0, nt| {
            // SAFETY: the tile stays inside the lengths `Kernels::matmul` checked, and this
            // table entry exists only where the CPU has the tile's features.
            unsafe {
                let (w, a, o) = (wp.add(r0 * ws), ap.add(t0 * as_), op.add(r0 * n_tok + t0));
                if nt == $T {
                    $tile::<$W, $R, $T>(nb, w, ws, nr, a, as_, nt, o, n_tok)
                } else {
                    for t in 0..nt {
                        $tile::<$W, $R, 1>(nb, w, ws, nr, a.add(t * as_), as_, 1, o.add(t), n_tok)
                    }
                }
            }
        });
    }};
}

/// Stores the `nr x nt` corner of a tile's sums.
#[inline(always)]
pub(super) unsafe fn store<const R: usize, const T: usize>(sums: [[f32; T]; R], nr: usize, nt: usize, out: *mut f32, os: usize) {
    for (r, row) in sums.iter().enumerate().take(nr) {
        for (t, &v) in row.iter().enumerate().take(nt) {
            *out.add(r * os + t) = v;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 32-weight blocks against Q8_0 / Q8_1 activations

/// A 32-weight block type: how to unpack its quants into one register.
pub(super) trait Legacy {
    const LEN: usize = 32;
    const BYTES: usize;
    /// Bytes per activation block: 34 (Q8_0) or 36 (Q8_1, whose `s` sits after `d`).
    const ACT_BYTES: usize;
    /// Quants are signed i8 (dotted with the sign trick); else unsigned with an offset `m`.
    const SIGNED: bool;
    /// The type whose activations these weights take (see `packed::act_scales`).
    const TYPE: TensorType;
    unsafe fn quants(p: *const u8) -> __m256i;
    unsafe fn d(p: *const u8) -> f32 {
        f16_at(p)
    }
    unsafe fn m(_p: *const u8) -> f32 {
        0.0
    }
}

pub(super) struct Q4_0W;
impl Legacy for Q4_0W {
    const BYTES: usize = 18;
    const ACT_BYTES: usize = 34;
    const SIGNED: bool = true;
    const TYPE: TensorType = TensorType::Q4_0;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        _mm256_sub_epi8(nibbles_32(p.add(2)), _mm256_set1_epi8(8))
    }
}

pub(super) struct Q4_1W;
impl Legacy for Q4_1W {
    const BYTES: usize = 20;
    const ACT_BYTES: usize = 36;
    const SIGNED: bool = false;
    const TYPE: TensorType = TensorType::Q4_1;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        nibbles_32(p.add(4))
    }
    #[inline(always)]
    unsafe fn m(p: *const u8) -> f32 {
        f16_at(p.add(2))
    }
}

pub(super) struct Q5_0W;
impl Legacy for Q5_0W {
    const BYTES: usize = 22;
    const ACT_BYTES: usize = 34;
    const SIGNED: bool = true;
    const TYPE: TensorType = TensorType::Q5_0;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        // A clear fifth bit ORs in 0xF0, which is the nibble minus 16 in two's complement.
        let hi = _mm256_andnot_si256(bytes_from_bits_32(p.add(2)), _mm256_set1_epi8(0xF0u8 as i8));
        _mm256_or_si256(nibbles_32(p.add(6)), hi)
    }
}

pub(super) struct Q5_1W;
impl Legacy for Q5_1W {
    const BYTES: usize = 24;
    const ACT_BYTES: usize = 36;
    const SIGNED: bool = false;
    const TYPE: TensorType = TensorType::Q5_1;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        let hi = _mm256_and_si256(bytes_from_bits_32(p.add(4)), _mm256_set1_epi8(0x10));
        _mm256_or_si256(nibbles_32(p.add(8)), hi)
    }
    #[inline(always)]
    unsafe fn m(p: *const u8) -> f32 {
        f16_at(p.add(2))
    }
}

pub(super) struct Q8_0W;
impl Legacy for Q8_0W {
    const BYTES: usize = 34;
    const ACT_BYTES: usize = 34;
    const SIGNED: bool = true;
    const TYPE: TensorType = TensorType::Q8_0;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p.add(2) as *const __m256i)
    }
}

#[inline(always)]
pub(super) unsafe fn iq4nl_table() -> __m256i {
    let t = _mm_loadu_si128(wasm_chord_core::quant::KVALUES_IQ4NL.as_ptr() as *const __m128i);
    _mm256_set_m128i(t, t)
}

pub(super) struct Iq4NlW;
impl Legacy for Iq4NlW {
    const BYTES: usize = 18;
    const ACT_BYTES: usize = 34;
    const SIGNED: bool = true;
    const TYPE: TensorType = TensorType::IQ4_NL;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        _mm256_shuffle_epi8(iq4nl_table(), nibbles_32(p.add(2)))
    }
}

fn matmul_legacy<W: Legacy>(k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]) {
    drive!(tile_legacy, W, 4 x 2, k, w, n_rows, a, n_tok, out, W::BYTES, W::ACT_BYTES)
}

fn matmul_legacy_vnni<W: Legacy>(k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]) {
    drive!(tile_legacy_vnni, W, 4 x 3, k, w, n_rows, a, n_tok, out, W::BYTES, W::ACT_BYTES)
}

#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_legacy<W: Legacy, const R: usize, const T: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    nr: usize,
    a: *const u8,
    as_: usize,
    nt: usize,
    out: *mut f32,
    os: usize,
) {
    tile_legacy_body::<W, R, T, false>(nb, w, ws, nr, a, as_, nt, out, os)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_legacy_vnni<W: Legacy, const R: usize, const T: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    nr: usize,
    a: *const u8,
    as_: usize,
    nt: usize,
    out: *mut f32,
    os: usize,
) {
    tile_legacy_body::<W, R, T, true>(nb, w, ws, nr, a, as_, nt, out, os)
}

/// One `R x T` tile of 32-weight blocks; inlined into a wrapper that enables the features
/// (`VNNI` picks `vpdpbusd` over `vpmaddubsw` + `vpmaddwd`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_legacy_body<W: Legacy, const R: usize, const T: usize, const VNNI: bool>(
    nb: usize,
    w: *const u8,
    ws: usize,
    nr: usize,
    a: *const u8,
    as_: usize,
    nt: usize,
    out: *mut f32,
    os: usize,
) {
    let wr: [*const u8; R] = row_ptrs(w, ws, nr);
    let ar: [*const u8; T] = row_ptrs(a, as_, nt);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut accm = [[0.0f32; T]; R];
    let ones = _mm256_set1_epi16(1);
    for b in 0..nb {
        let mut y = [_mm256_setzero_si256(); T];
        let mut dy = [_mm256_setzero_ps(); T];
        let mut sy = [0.0f32; T];
        for t in 0..T {
            let p = ar[t].add(b * W::ACT_BYTES);
            y[t] = _mm256_loadu_si256(p.add(W::ACT_BYTES - 32) as *const __m256i);
            dy[t] = _mm256_set1_ps(f16_at(p));
            if !W::SIGNED {
                sy[t] = f16_at(p.add(2));
            }
        }
        for r in 0..R {
            let p = wr[r].add(b * W::BYTES);
            let x = W::quants(p);
            let dx = _mm256_set1_ps(W::d(p));
            let ux = if W::SIGNED { _mm256_sign_epi8(x, x) } else { x };
            for t in 0..T {
                let yt = if W::SIGNED { _mm256_sign_epi8(y[t], x) } else { y[t] };
                let p32 = if VNNI {
                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), ux, yt)
                } else {
                    _mm256_madd_epi16(_mm256_maddubs_epi16(ux, yt), ones)
                };
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_mul_ps(dx, dy[t]), acc[r][t]);
            }
            if !W::SIGNED {
                let m = W::m(p);
                for t in 0..T {
                    accm[r][t] += m * sy[t];
                }
            }
        }
    }
    let sums: [[f32; T]; R] = std::array::from_fn(|r| std::array::from_fn(|t| hsum(acc[r][t]) + accm[r][t]));
    store(sums, nr, nt, out, os);
}

// ---------------------------------------------------------------------------------------------
// 256-weight super-blocks against Q8_K activations

/// How a k-quant's constant part is removed: `Σ_g c_g · bsum_g` from the Q8_K group sums.
#[derive(PartialEq, Eq)]
enum Correction {
    /// None (signed quants).
    None,
    /// `- dmin · d_y · Σ min_g · bsum_g` (Q2_K, Q4_K, Q5_K: unsigned quants with mins).
    Mins,
    /// `- d · d_y · 2^s · Σ scale_g · bsum_g` (Q3_K, Q6_K: quants stored with an offset 2^s).
    Offset(i32),
}

/// A super-block's scales, unpacked once per group of rows and token chunk.
#[derive(Clone, Copy)]
struct KPrep {
    d: f32,
    dmin: f32,
    /// The 16 per-16-weight scales as i8 (per-32 scales appear twice).
    scales: __m128i,
    /// The 16 per-16 correction factors as i16 (mins or scales).
    corr: __m256i,
}

trait KQuant {
    const LEN: usize = 256;
    const BYTES: usize;
    /// Whether llama.cpp's AVX2 build repacks these weights (see `KOrder::Repacked`).
    const REPACKED: bool = false;
    const SIGNED: bool;
    const CORR: Correction;
    unsafe fn prep(p: *const u8) -> KPrep;
    /// Quants `32 j .. 32 j + 32` of the super-block (u8, or i8 if `SIGNED`).
    unsafe fn quants(p: *const u8, j: usize) -> __m256i;
}

/// Per-32 scales (8 of them, u8 < 64 or i8) repeated to 16 per-16 ones.
#[inline(always)]
unsafe fn dup8(s: [u8; 8]) -> __m128i {
    let v = _mm_loadl_epi64(s.as_ptr() as *const __m128i);
    _mm_unpacklo_epi8(v, v)
}

struct Q4KW;
impl KQuant for Q4KW {
    const BYTES: usize = 144;
    const REPACKED: bool = true;
    const SIGNED: bool = false;
    const CORR: Correction = Correction::Mins;
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> KPrep {
        let packed: [u8; 12] = *(p.add(4) as *const [u8; 12]);
        let (sc, mn) = super::scalar::scales_mins_k4(&packed);
        KPrep { d: f16_at(p), dmin: f16_at(p.add(2)), scales: dup8(sc), corr: _mm256_cvtepu8_epi16(dup8(mn)) }
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> __m256i {
        let bits = _mm256_loadu_si256(p.add(16 + 32 * (j / 2)) as *const __m256i);
        let bits = if j % 2 == 0 { bits } else { _mm256_srli_epi16(bits, 4) };
        _mm256_and_si256(bits, _mm256_set1_epi8(0x0F))
    }
}

struct Q5KW;
impl KQuant for Q5KW {
    const BYTES: usize = 176;
    const SIGNED: bool = false;
    const CORR: Correction = Correction::Mins;
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> KPrep {
        Q4KW::prep(p)
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> __m256i {
        let bits = _mm256_loadu_si256(p.add(48 + 32 * (j / 2)) as *const __m256i);
        let bits = if j % 2 == 0 { bits } else { _mm256_srli_epi16(bits, 4) };
        let low = _mm256_and_si256(bits, _mm256_set1_epi8(0x0F));
        // Bit j of each qh byte is the fifth bit: move it to bit 4 (j is a constant after unrolling).
        let qh = _mm256_loadu_si256(p.add(16) as *const __m256i);
        let bit = _mm256_and_si256(qh, _mm256_set1_epi8((1u8 << j) as i8));
        let high = _mm256_min_epu8(bit, _mm256_set1_epi8(1));
        _mm256_or_si256(low, _mm256_slli_epi16(high, 4))
    }
}

struct Q6KW;
impl KQuant for Q6KW {
    const BYTES: usize = 210;
    const SIGNED: bool = false;
    const CORR: Correction = Correction::Offset(5);
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> KPrep {
        let scales = _mm_loadu_si128(p.add(192) as *const __m128i);
        KPrep { d: f16_at(p.add(208)), dmin: 0.0, scales, corr: _mm256_cvtepi8_epi16(scales) }
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> __m256i {
        let (c, quarter) = (j / 4, j % 4);
        let ql = _mm256_loadu_si256(p.add(64 * c + 32 * (quarter % 2)) as *const __m256i);
        let ql = if quarter < 2 { ql } else { _mm256_srli_epi16(ql, 4) };
        let qh = _mm256_loadu_si256(p.add(128 + 32 * c) as *const __m256i);
        let qh = match quarter {
            0 => _mm256_slli_epi16(qh, 4),
            1 => _mm256_slli_epi16(qh, 2),
            2 => qh,
            _ => _mm256_srli_epi16(qh, 2),
        };
        _mm256_or_si256(_mm256_and_si256(ql, _mm256_set1_epi8(0x0F)), _mm256_and_si256(qh, _mm256_set1_epi8(0x30)))
    }
}

struct Q3KW;
impl KQuant for Q3KW {
    const BYTES: usize = 110;
    const SIGNED: bool = false;
    const CORR: Correction = Correction::Offset(2);
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> KPrep {
        let packed: [u8; 12] = *(p.add(96) as *const [u8; 12]);
        let s = super::scalar::scales_q3_k(&packed);
        let scales = _mm_loadu_si128(s.as_ptr() as *const __m128i);
        KPrep { d: f16_at(p.add(108)), dmin: 0.0, scales, corr: _mm256_cvtepi8_epi16(scales) }
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> __m256i {
        // Stored q = low + 4·hbit in 0..8; the value is q - 4 (the offset correction).
        let low = _mm256_loadu_si256(p.add(32 + 32 * (j / 4)) as *const __m256i);
        let low = _mm256_and_si256(_mm256_srl_epi16(low, _mm_cvtsi32_si128(2 * (j % 4) as i32)), _mm256_set1_epi8(3));
        let hm = _mm256_loadu_si256(p as *const __m256i);
        let bit = _mm256_min_epu8(_mm256_and_si256(hm, _mm256_set1_epi8((1u8 << j) as i8)), _mm256_set1_epi8(1));
        _mm256_or_si256(low, _mm256_slli_epi16(bit, 2))
    }
}

struct Q2KW;
impl KQuant for Q2KW {
    const BYTES: usize = 84;
    const SIGNED: bool = false;
    const CORR: Correction = Correction::Mins;
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> KPrep {
        let sc = _mm_loadu_si128(p as *const __m128i);
        let scales = _mm_and_si128(sc, _mm_set1_epi8(0x0F));
        let mins = _mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0x0F));
        KPrep { d: f16_at(p.add(80)), dmin: f16_at(p.add(82)), scales, corr: _mm256_cvtepu8_epi16(mins) }
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> __m256i {
        let bits = _mm256_loadu_si256(p.add(16 + 32 * (j / 4)) as *const __m256i);
        _mm256_and_si256(_mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * (j % 4) as i32)), _mm256_set1_epi8(3))
    }
}

struct Iq4XsW;
impl KQuant for Iq4XsW {
    const BYTES: usize = 136;
    const SIGNED: bool = true;
    const CORR: Correction = Correction::None;
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> KPrep {
        let h = u16::from_le_bytes([*p.add(2), *p.add(3)]);
        let sc: [u8; 8] = std::array::from_fn(|ib| {
            let l = (*p.add(4 + ib / 2) >> (4 * (ib % 2))) & 0x0F;
            (l | ((((h >> (2 * ib)) & 3) as u8) << 4)).wrapping_sub(32)
        });
        KPrep { d: f16_at(p), dmin: 0.0, scales: dup8(sc), corr: _mm256_setzero_si256() }
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> __m256i {
        _mm256_shuffle_epi8(iq4nl_table(), nibbles_32(p.add(8 + 16 * j)))
    }
}

fn matmul_k<W: KQuant>(k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]) {
    // A run of this many tokens or more meets each group of rows in enough tiles to pay for
    // unpacking the group's quants and scales once ([`fill_preps`]); the tiles then load their
    // weight operands, so 2 rows by 4 tokens (each unpacked vector serving four tokens) beat
    // 4 by 2, which shares each activation load between more rows.
    const UNPACK_FROM: usize = 8;
    macro_rules! go {
        ($tile:ident, $a:expr, $n:expr, $out:expr) => {
            if $n >= UNPACK_FROM {
                drive_k::<W, 2, 4>($tile::<W, 2, 4, true>, $tile::<W, 2, 1, true>, true, k, w, n_rows, $a, $n, $out)
            } else {
                drive_k::<W, 4, 2>($tile::<W, 4, 2, false>, $tile::<W, 4, 1, false>, false, k, w, n_rows, $a, $n, $out)
            }
        };
    }
    // The summation order follows llama.cpp's choice for the whole product (see `KOrder`), so
    // this must see every token of the batch in one call.
    k_runs(W::REPACKED, n_rows, a, n_tok, out, |order, a, n, out| match order {
        KOrder::VecDot => go!(tile_k_vec, a, n, out),
        KOrder::Tiled => go!(tile_k_tiled, a, n, out),
        KOrder::Repacked => go!(tile_k_repacked, a, n, out),
        KOrder::RepackedGemm => go!(tile_k_gemm, a, n, out),
    })
}

/// A k-quant tile: `(nb, w, ws, nr, a, as_, nt, out, os, preps, unpacked)`, `preps` the `4 x nb`
/// [`KPrep`]s of its rows and `unpacked` their quants and scales (see [`fill_preps`]).
type KTile = unsafe fn(usize, *const u8, usize, usize, *const u8, usize, usize, *mut f32, usize, *const KPrep, *const __m256i);

thread_local! {
    /// The current group of rows' super-block scales, unpacked once for all its token tiles.
    static K_PREPS: RefCell<Vec<KPrep>> = const { RefCell::new(Vec::new()) };
    /// The current group of rows' quants and per-32 scale vectors, for a batch.
    static K_UNPACKED: RefCell<Vec<__m256i>> = const { RefCell::new(Vec::new()) };
}

/// [`drive!`] for the k-quants: tiles of `R` rows by `T` tokens (single tokens for a tail),
/// with each group of rows' scales (and with `unpack` its quants) unpacked once per token chunk
/// instead of once per tile.
#[allow(clippy::too_many_arguments)]
fn drive_k<W: KQuant, const R: usize, const T: usize>(tile: KTile, one: KTile, unpack: bool, k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]) {
    if n_rows == 0 || n_tok == 0 {
        return;
    }
    let nb = k / W::LEN;
    let (ws, as_) = (nb * W::BYTES, nb * 292);
    let (wp, ap, op) = (w.as_ptr(), a.as_ptr(), out.as_mut_ptr());
    let walk = |preps: &mut Vec<KPrep>, unpacked: &mut Vec<__m256i>| {
        let mut group = usize::MAX;
        // Groups unpacked once per token chunk: chunks of half the L2 (of a recent core) make
        // that a small share of the tiles' work.
        let chunk_bytes = if unpack { 512 << 10 } else { 128 << 10 };
        for_each_tile_in::<R, T>(chunk_bytes, n_rows, n_tok, as_, |r0, nr, t0, nt| {
            // SAFETY: the tile stays inside the lengths `Kernels::matmul` checked, `preps`
            // holds `R * nb` entries (and `unpacked` `2 * R * nb * 8` where the tiles read
            // them), and this table entry exists only where the CPU has the tile's features.
            unsafe {
                let (w, a, o) = (wp.add(r0 * ws), ap.add(t0 * as_), op.add(r0 * n_tok + t0));
                if group != r0 {
                    group = r0;
                    fill_preps::<W, R>(nb, w, ws, nr, preps, unpack.then_some(&mut *unpacked));
                }
                let (pp, up) = (preps.as_ptr(), unpacked.as_ptr());
                if nt == T {
                    tile(nb, w, ws, nr, a, as_, nt, o, n_tok, pp, up)
                } else {
                    for t in 0..nt {
                        one(nb, w, ws, nr, a.add(t * as_), as_, 1, o.add(t), n_tok, pp, up)
                    }
                }
            }
        })
    };
    K_PREPS.with(|c| {
        K_UNPACKED.with(|u| match (c.try_borrow_mut(), u.try_borrow_mut()) {
            (Ok(mut v), Ok(mut u)) => walk(&mut v, &mut u),
            _ => walk(&mut Vec::new(), &mut Vec::new()),
        })
    });
}

/// Shuffles that broadcast scale bytes 2j (low 8 lanes) and 2j+1 (high 8 lanes): the scales of
/// quants `32 j .. 32 j + 32` from [`KPrep::scales`].
#[inline(always)]
unsafe fn spread_scales() -> [__m128i; 8] {
    std::array::from_fn(|j| {
        let (lo, hi) = ((2 * j) as i8, (2 * j + 1) as i8);
        _mm_set_epi8(hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo)
    })
}

/// `preps[r * nb + b]` = the scales of super-block `b` of row `r` (rows past `nr` repeat the
/// last valid one, as [`row_ptrs`] does). With `unpacked`, also each super-block's eight runs
/// of 32 quants and their scales as i16 (the operands of the tile's byte products):
/// `unpacked[((r * nb + b) * 8 + j) * 2]` the quants, `+ 1` the scales.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fill_preps<W: KQuant, const R: usize>(nb: usize, w: *const u8, ws: usize, nr: usize, preps: &mut Vec<KPrep>, unpacked: Option<&mut Vec<__m256i>>) {
    preps.clear();
    let wr: [*const u8; R] = row_ptrs(w, ws, nr);
    for row in wr {
        for b in 0..nb {
            preps.push(W::prep(row.add(b * W::BYTES)));
        }
    }
    let Some(unpacked) = unpacked else { return };
    unpacked.clear();
    let spread = spread_scales();
    for (i, row) in wr.iter().enumerate() {
        for b in 0..nb {
            let (p, prep) = (row.add(b * W::BYTES), preps[i * nb + b]);
            macro_rules! run {
                ($j:literal) => {
                    unpacked.push(W::quants(p, $j));
                    unpacked.push(_mm256_cvtepi8_epi16(_mm_shuffle_epi8(prep.scales, spread[$j])));
                };
            }
            run!(0);
            run!(1);
            run!(2);
            run!(3);
            run!(4);
            run!(5);
            run!(6);
            run!(7);
        }
    }
}

macro_rules! tile_k_order {
    ($name:ident, $order:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<W: KQuant, const R: usize, const T: usize, const UNPACKED: bool>(
            nb: usize,
            w: *const u8,
            ws: usize,
            nr: usize,
            a: *const u8,
            as_: usize,
            nt: usize,
            out: *mut f32,
            os: usize,
            preps: *const KPrep,
            unpacked: *const __m256i,
        ) {
            tile_k::<W, R, T, UNPACKED>($order, nb, w, ws, nr, a, as_, nt, out, os, preps, unpacked)
        }
    };
}
tile_k_order!(tile_k_vec, KOrder::VecDot);
tile_k_order!(tile_k_tiled, KOrder::Tiled);
tile_k_order!(tile_k_repacked, KOrder::Repacked);
tile_k_order!(tile_k_gemm, KOrder::RepackedGemm);

/// The lane sums of up to 8 vectors at once (exact): a transposing reduction, a few shuffles
/// for all of them instead of a reduction each.
#[inline(always)]
unsafe fn hsum_i32_tile<const R: usize, const T: usize>(v: &[[__m256i; T]; R]) -> [i32; 8] {
    let z = _mm256_setzero_si256();
    let x: [__m256i; 8] = std::array::from_fn(|i| if i < R * T { v[i / T][i % T] } else { z });
    let (h01, h23) = (_mm256_hadd_epi32(x[0], x[1]), _mm256_hadd_epi32(x[2], x[3]));
    let (h45, h67) = (_mm256_hadd_epi32(x[4], x[5]), _mm256_hadd_epi32(x[6], x[7]));
    let (h0123, h4567) = (_mm256_hadd_epi32(h01, h23), _mm256_hadd_epi32(h45, h67));
    let lo = _mm256_permute2x128_si256(h0123, h4567, 0x20);
    let hi = _mm256_permute2x128_si256(h0123, h4567, 0x31);
    std::mem::transmute(_mm256_add_epi32(lo, hi))
}

/// Eight outputs' mins by sub-block (lane `k` of `v[o]` is sub-block `k`, 32 weights) turned
/// into per-64-weight sums by output: lane `o` of result `sb` is `v[o][2 sb] + v[o][2 sb + 1]`
/// (exact integer sums; one pairwise add and a transpose).
#[inline(always)]
unsafe fn mins_by_pairs(v: &[__m256i; 8]) -> [__m256i; 4] {
    // h[i] = [o(2i) 0, o(2i) 1, o(2i+1) 0, o(2i+1) 1 | the same for 64-weight runs 2 and 3].
    let h: [__m256; 4] = std::array::from_fn(|i| _mm256_castsi256_ps(_mm256_hadd_epi32(v[2 * i], v[2 * i + 1])));
    // [o0..o3 run 0 | o0..o3 run 2], [o0..o3 run 1 | o0..o3 run 3], then o4..o7 likewise.
    let a0 = _mm256_shuffle_ps(h[0], h[1], 0b10_00_10_00);
    let a1 = _mm256_shuffle_ps(h[0], h[1], 0b11_01_11_01);
    let b0 = _mm256_shuffle_ps(h[2], h[3], 0b10_00_10_00);
    let b1 = _mm256_shuffle_ps(h[2], h[3], 0b11_01_11_01);
    [
        _mm256_castps_si256(_mm256_permute2f128_ps(a0, b0, 0x20)),
        _mm256_castps_si256(_mm256_permute2f128_ps(a1, b1, 0x20)),
        _mm256_castps_si256(_mm256_permute2f128_ps(a0, b0, 0x31)),
        _mm256_castps_si256(_mm256_permute2f128_ps(a1, b1, 0x31)),
    ]
}

/// One `R x T` tile of super-blocks, summed in `order`; inlined into wrappers that enable the
/// features. The integer products are the same in every order; only the float steps differ.
/// With `UNPACKED`, the quants and their scales come from [`fill_preps`]'s `unpacked`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_k<W: KQuant, const R: usize, const T: usize, const UNPACKED: bool>(
    order: KOrder,
    nb: usize,
    w: *const u8,
    ws: usize,
    nr: usize,
    a: *const u8,
    as_: usize,
    nt: usize,
    out: *mut f32,
    os: usize,
    preps: *const KPrep,
    unpacked: *const __m256i,
) {
    let spread = spread_scales();
    let wr: [*const u8; R] = row_ptrs(w, ws, nr);
    let ar: [*const u8; T] = row_ptrs(a, as_, nt);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut sacc = [[KAcc::default(); T]; R];
    // The repacked gemm's and the tiled order's running sums, one output per lane (R x T <= 8).
    let (mut vacc, mut vmins) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for b in 0..nb {
        let wb: [*const u8; R] = std::array::from_fn(|r| wr[r].add(b * W::BYTES));
        let ab: [*const u8; T] = std::array::from_fn(|t| ar[t].add(b * 292));
        for r in (0..R).filter(|_| !UNPACKED) {
            // Rows are a few super-blocks long (a decoding step's matrices are a few hundred
            // KiB), too short for the hardware prefetcher to run ahead of: fetch two
            // super-blocks ahead, into the next row or tile past a row's end (about a quarter
            // off Gemma 3's Q4_K/Q6_K decode time). Prefetches never fault.
            for line in 0..W::BYTES.div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T0>(wb[r].wrapping_add(2 * W::BYTES + 64 * line) as *const i8);
            }
        }
        let prep: [KPrep; R] = std::array::from_fn(|r| *preps.add(r * nb + b));
        let mut isum = [[_mm256_setzero_si256(); T]; R];
        // Per 64 weights, for the repacked gemm's order: lane `r * T + t` of `isv[sb]`.
        let mut isv = [_mm256_setzero_si256(); 4];
        macro_rules! snapshot {
            ($sb:literal) => {
                if order == KOrder::RepackedGemm {
                    isv[$sb] = std::mem::transmute(hsum_i32_tile(&isum));
                    isum = [[_mm256_setzero_si256(); T]; R];
                }
            };
        }
        // Unrolled by hand so each step's `j` is a constant inside `W::quants`.
        macro_rules! step {
            ($j:literal) => {
                for r in 0..R {
                    let (q, sc) = if UNPACKED {
                        let u = unpacked.add(((r * nb + b) * 8 + $j) * 2);
                        (*u, *u.add(1))
                    } else {
                        (W::quants(wb[r], $j), _mm256_cvtepi8_epi16(_mm_shuffle_epi8(prep[r].scales, spread[$j])))
                    };
                    let uq = if W::SIGNED { _mm256_sign_epi8(q, q) } else { q };
                    for t in 0..T {
                        let y = _mm256_loadu_si256(ab[t].add(4 + 32 * $j) as *const __m256i);
                        let y = if W::SIGNED { _mm256_sign_epi8(y, q) } else { y };
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(uq, y), sc);
                        isum[r][t] = _mm256_add_epi32(isum[r][t], p);
                    }
                }
            };
        }
        step!(0);
        step!(1);
        snapshot!(0);
        step!(2);
        step!(3);
        snapshot!(1);
        step!(4);
        step!(5);
        snapshot!(2);
        step!(6);
        step!(7);
        snapshot!(3);
        if order == KOrder::RepackedGemm {
            // The whole tile's float steps at once, one output per lane (`r * T + t`): per
            // 64 weights `acc = fma(isum, d·dy, acc)` and `mins = fma(imin, dmin·dy, mins)`.
            let (mut d8, mut dmin8, mut dy8) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
            let mut mv = [_mm256_setzero_si256(); 8];
            for t in 0..T {
                let dy = f32_at(ab[t]);
                let bsums = _mm256_loadu_si256(ab[t].add(260) as *const __m256i);
                for r in 0..R {
                    (d8[r * T + t], dmin8[r * T + t], dy8[r * T + t]) = (prep[r].d, prep[r].dmin, dy);
                    if W::CORR == Correction::Mins {
                        mv[r * T + t] = _mm256_madd_epi16(bsums, prep[r].corr);
                    }
                }
            }
            let dy8 = _mm256_loadu_ps(dy8.as_ptr());
            let ddy = _mm256_mul_ps(_mm256_loadu_ps(d8.as_ptr()), dy8);
            let dmdy = _mm256_mul_ps(_mm256_loadu_ps(dmin8.as_ptr()), dy8);
            let im = mins_by_pairs(&mv);
            for sb in 0..4 {
                vacc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isv[sb]), ddy, vacc);
                if W::CORR == Correction::Mins {
                    vmins = _mm256_fmadd_ps(_mm256_cvtepi32_ps(im[sb]), dmdy, vmins);
                }
            }
            continue;
        }
        if order == KOrder::Tiled {
            // Likewise one output per lane: `res = d·isum`, `res = fma(-dmin, imin, res)`,
            // `acc = fma(res, dy, acc)` per super-block, the lane sums reduced for all outputs
            // at once.
            let (mut d8, mut dmin8, mut dy8) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
            let mut mins = [[_mm256_setzero_si256(); T]; R];
            for t in 0..T {
                let dy = f32_at(ab[t]);
                let bsums = _mm256_loadu_si256(ab[t].add(260) as *const __m256i);
                for r in 0..R {
                    (d8[r * T + t], dmin8[r * T + t], dy8[r * T + t]) = (prep[r].d, prep[r].dmin, dy);
                    match W::CORR {
                        Correction::None => {}
                        Correction::Offset(sh) => {
                            let c = _mm256_madd_epi16(bsums, prep[r].corr);
                            isum[r][t] = _mm256_sub_epi32(isum[r][t], _mm256_sllv_epi32(c, _mm256_set1_epi32(sh)));
                        }
                        Correction::Mins => mins[r][t] = _mm256_madd_epi16(bsums, prep[r].corr),
                    }
                }
            }
            let is8: __m256i = std::mem::transmute(hsum_i32_tile(&isum));
            let mut res = _mm256_mul_ps(_mm256_loadu_ps(d8.as_ptr()), _mm256_cvtepi32_ps(is8));
            if W::CORR == Correction::Mins {
                let im8: __m256i = std::mem::transmute(hsum_i32_tile(&mins));
                res = _mm256_fnmadd_ps(_mm256_loadu_ps(dmin8.as_ptr()), _mm256_cvtepi32_ps(im8), res);
            }
            vacc = _mm256_fmadd_ps(res, _mm256_loadu_ps(dy8.as_ptr()), vacc);
            continue;
        }
        // The repacked order's corrected sums and mins of every output, lane-wise.
        let mut sv = [[_mm256_setzero_si256(); T]; R];
        let mut mv = [[_mm256_setzero_si256(); T]; R];
        for t in 0..T {
            let dy = f32_at(ab[t]);
            let bsums = _mm256_loadu_si256(ab[t].add(260) as *const __m256i);
            for r in 0..R {
                let mut s = isum[r][t];
                let mut mins = _mm256_setzero_si256();
                match W::CORR {
                    Correction::None => {}
                    Correction::Offset(sh) => {
                        let c = _mm256_madd_epi16(bsums, prep[r].corr);
                        s = _mm256_sub_epi32(s, _mm256_sllv_epi32(c, _mm256_set1_epi32(sh)));
                    }
                    Correction::Mins => mins = _mm256_madd_epi16(bsums, prep[r].corr),
                }
                if order == KOrder::VecDot {
                    if W::CORR == Correction::Mins {
                        let c = _mm256_cvtepi32_ps(mins);
                        acc[r][t] = _mm256_fnmadd_ps(_mm256_set1_ps(prep[r].dmin * dy), c, acc[r][t]);
                    }
                    acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(prep[r].d * dy), _mm256_cvtepi32_ps(s), acc[r][t]);
                } else {
                    (sv[r][t], mv[r][t]) = (s, mins);
                }
            }
        }
        if order == KOrder::Repacked {
            // One transposing reduction for all the tile's sums (exact integers, so the same
            // values as one reduction each), then each output's float steps in its order.
            let is = hsum_i32_tile(&sv);
            let im = if W::CORR == Correction::Mins { hsum_i32_tile(&mv) } else { [0; 8] };
            for t in 0..T {
                let dy = f32_at(ab[t]);
                for r in 0..R {
                    let p = KParts { d: prep[r].d, dmin: prep[r].dmin, dy, isum: is[r * T + t], imin: im[r * T + t] };
                    sacc[r][t].add(order, p, W::CORR == Correction::Mins);
                }
            }
        }
    }
    let mut gemm = [0.0f32; 8];
    _mm256_storeu_ps(gemm.as_mut_ptr(), _mm256_sub_ps(vacc, vmins));
    let sums: [[f32; T]; R] = std::array::from_fn(|r| {
        std::array::from_fn(|t| match order {
            KOrder::VecDot => hsum(acc[r][t]),
            KOrder::RepackedGemm | KOrder::Tiled => gemm[r * T + t],
            _ => sacc[r][t].total(),
        })
    });
    store(sums, nr, nt, out, os);
}

// ---------------------------------------------------------------------------------------------
// Float weights against activations of the same float type

trait FloatRow {
    const LEN: usize = 1;
    const BYTES: usize;
    /// Elements `i .. i + 8` as f32.
    unsafe fn load8(p: *const u8, i: usize) -> __m256;
    unsafe fn load1(p: *const u8, i: usize) -> f32;
}

struct F32W;
impl FloatRow for F32W {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn load8(p: *const u8, i: usize) -> __m256 {
        _mm256_loadu_ps(p.add(4 * i) as *const f32)
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8, i: usize) -> f32 {
        f32_at(p.add(4 * i))
    }
}

struct F16W;
impl FloatRow for F16W {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8, i: usize) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i) as *const __m128i))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8, i: usize) -> f32 {
        f16_at(p.add(2 * i))
    }
}

struct Bf16W;
impl FloatRow for Bf16W {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8, i: usize) -> __m256 {
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.add(2 * i) as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32(h, 16))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8, i: usize) -> f32 {
        f32::from_bits((u16::from_le_bytes([*p.add(2 * i), *p.add(2 * i + 1)]) as u32) << 16)
    }
}

fn matmul_float<W: FloatRow>(k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]) {
    drive!(tile_float, W, 4 x 2, k, w, n_rows, a, n_tok, out, W::BYTES, W::BYTES)
}

#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_float<W: FloatRow, const R: usize, const T: usize>(
    n: usize,
    w: *const u8,
    ws: usize,
    nr: usize,
    a: *const u8,
    as_: usize,
    nt: usize,
    out: *mut f32,
    os: usize,
) {
    let wr: [*const u8; R] = row_ptrs(w, ws, nr);
    let ar: [*const u8; T] = row_ptrs(a, as_, nt);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let n8 = n / 8 * 8;
    for i in (0..n8).step_by(8) {
        let y: [__m256; T] = std::array::from_fn(|t| W::load8(ar[t], i));
        for r in 0..R {
            let x = W::load8(wr[r], i);
            for t in 0..T {
                acc[r][t] = _mm256_fmadd_ps(x, y[t], acc[r][t]);
            }
        }
    }
    let sums: [[f32; T]; R] = std::array::from_fn(|r| {
        std::array::from_fn(|t| hsum(acc[r][t]) + (n8..n).map(|i| W::load1(wr[r], i) * W::load1(ar[t], i)).sum::<f32>())
    });
    store(sums, nr, nt, out, os);
}
