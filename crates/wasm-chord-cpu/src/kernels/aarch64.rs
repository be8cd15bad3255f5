//! aarch64 NEON kernels, walked in register tiles of up to 4 weight rows by 2 tokens: the
//! 32-weight blocks, the k-quant super-blocks and plain floats. Byte dot products use `sdot`
//! where the CPU has the dot-product extension and widening multiplies (`smull` + `sadalp`)
//! where it does not; both give the same integer sums, so the two sets differ only in speed.
//!
//! `sdot` and the f16 conversions are written as inline assembly: their intrinsics
//! (`vdotq_s32`, `vcvt_f32_f16`) are not stable Rust yet.

use std::arch::aarch64::*;
use std::arch::asm;

use wasm_chord_core::quant::KVALUES_IQ4NL;
use wasm_chord_core::TensorType;

use super::scalar::{k_runs, KAcc, KOrder, KParts};
use super::{for_each_tile, MatmulFn};

/// The plain NEON matmul for weights of type `ty` (NEON is part of every aarch64 CPU).
pub fn matmul_fn(ty: TensorType) -> Option<MatmulFn> {
    pick::<false>(ty)
}

/// The matmul for weights of type `ty` with `sdot` byte dot products, if this CPU has them.
pub fn matmul_fn_dotprod(ty: TensorType) -> Option<MatmulFn> {
    std::arch::is_aarch64_feature_detected!("dotprod").then(|| pick::<true>(ty)).flatten()
}

fn pick<const DOT: bool>(ty: TensorType) -> Option<MatmulFn> {
    use TensorType::*;
    Some(match ty {
        Q4_0 => matmul_legacy::<Q4_0W, DOT>,
        Q4_1 => matmul_legacy::<Q4_1W, DOT>,
        Q5_0 => matmul_legacy::<Q5_0W, DOT>,
        Q5_1 => matmul_legacy::<Q5_1W, DOT>,
        Q8_0 => matmul_legacy::<Q8_0W, DOT>,
        IQ4_NL => matmul_legacy::<Iq4NlW, DOT>,
        Q2_K => matmul_k::<Q2KW, DOT>,
        Q3_K => matmul_k::<Q3KW, DOT>,
        Q4_K => matmul_k::<Q4KW, DOT>,
        Q5_K => matmul_k::<Q5KW, DOT>,
        Q6_K => matmul_k::<Q6KW, DOT>,
        IQ4_XS => matmul_k::<Iq4XsW, DOT>,
        F32 => matmul_float::<F32W>,
        F16 => matmul_float::<F16W>,
        BF16 => matmul_float::<Bf16W>,
        Q8_K => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// The f16 at `p` as f32 (`fcvt` is in every aarch64 FPU; only f16 arithmetic is optional).
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    let r: f32;
    asm!("fcvt {r:s}, {h:h}", r = lateout(vreg) r, h = in(vreg) bits, options(pure, nomem, nostack));
    r
}

#[inline(always)]
unsafe fn f32_at(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

/// `acc + Σ x·y` over 16 signed bytes, four at a time into the i32 lanes. The two ways group the
/// products differently between lanes, but the lane sum is the same exact integer.
#[inline(always)]
unsafe fn dot16<const DOT: bool>(acc: int32x4_t, x: int8x16_t, y: int8x16_t) -> int32x4_t {
    if DOT {
        // Only inlined into functions compiled with the `dotprod` feature.
        let mut r = acc;
        asm!("sdot {r:v}.4s, {x:v}.16b, {y:v}.16b", r = inout(vreg) r, x = in(vreg) x, y = in(vreg) y,
            options(pure, nomem, nostack));
        r
    } else {
        // Products of two bytes fit i16 (|q| <= 127 on one side), pairs of them i32.
        let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(x), vget_low_s8(y)));
        vpadalq_s16(acc, vmull_high_s8(x, y))
    }
}

/// 16 bytes of nibbles: (low nibbles = elements 0..16, high nibbles = 16..32).
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (int8x16_t, int8x16_t) {
    let b = vld1q_u8(p);
    (vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(0x0F))), vreinterpretq_s8_u8(vshrq_n_u8::<4>(b)))
}

/// Bits `16 h .. 16 h + 16` of the 32 at `p` as bytes holding 0x10 where set.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8, h: u32) -> int8x16_t {
    let bits = (p as *const u32).read_unaligned() >> (16 * h);
    let spread = vcombine_u8(vdup_n_u8(bits as u8), vdup_n_u8((bits >> 8) as u8));
    let mask = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    vreinterpretq_s8_u8(vandq_u8(vtstq_u8(spread, mask), vdupq_n_u8(0x10)))
}

/// Pointers to `n` rows of `stride` bytes from `base`, rows past `valid` repeating the last valid
/// one (an edge tile computes them and throws them away).
#[inline(always)]
fn row_ptrs<const N: usize>(base: *const u8, stride: usize, valid: usize) -> [*const u8; N] {
    std::array::from_fn(|i| base.wrapping_add(i.min(valid.max(1) - 1) * stride))
}

/// Stores the `nr x nt` corner of a tile's sums.
#[inline(always)]
unsafe fn store<const R: usize, const T: usize>(sums: [[f32; T]; R], nr: usize, nt: usize, out: *mut f32, os: usize) {
    for (r, row) in sums.iter().enumerate().take(nr) {
        for (t, &v) in row.iter().enumerate().take(nt) {
            *out.add(r * os + t) = v;
        }
    }
}

/// Runs `tile::<R, T>` over the whole product; a token tail narrower than `T` (the whole of a
/// one-token product, as in decoding) runs one token at a time so no work is wasted.
macro_rules! drive {
    ($tile:ident, $W:ty, $R:literal x $T:literal, $len:expr, $k:expr, $w:expr, $n_rows:expr, $a:expr, $n_tok:expr, $out:expr, $wb:expr, $ab:expr) => {{
        let (k, w, a, out): (usize, &[u8], &[u8], &mut [f32]) = ($k, $w, $a, $out);
        let (n_rows, n_tok) = ($n_rows, $n_tok);
        if n_rows == 0 || n_tok == 0 {
            return;
        }
        let nb = k / $len;
        let (ws, as_) = (nb * $wb, nb * $ab);
        let (wp, ap, op) = (w.as_ptr(), a.as_ptr(), out.as_mut_ptr());
        for_each_tile::<$R, $T>(n_rows, n_tok, as_, |r0, nr, t0, nt| {
            // SAFETY: the tile stays inside the lengths `Kernels::matmul` checked, and a
            // `dotprod` tile is in the table only where the CPU has that feature.
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

/// A tile function for one instruction set: the body with `DOT` fixed, compiled with the
/// features that `DOT` needs.
macro_rules! tile_fn {
    ($(#[$attr:meta])* $name:ident, $Trait:ident, $body:ident($dot:literal $(, $order:expr)?)) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<W: $Trait, const R: usize, const T: usize>(
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
            $body::<W, R, T, $dot>($($order,)? nb, w, ws, nr, a, as_, nt, out, os)
        }
    };
}

// ---------------------------------------------------------------------------------------------
// 32-weight blocks against Q8_0 / Q8_1 activations

/// A 32-weight block type: how to unpack its quants into two registers of signed bytes.
trait Legacy {
    const BYTES: usize;
    /// Bytes per activation block: 34 (Q8_0) or 36 (Q8_1, whose `s` sits after `d`).
    const ACT_BYTES: usize;
    /// Whether the block has an offset `m` that multiplies the activations' `s`.
    const HAS_M: bool = false;
    /// Elements 0..16 and 16..32.
    unsafe fn quants(p: *const u8) -> (int8x16_t, int8x16_t);
    unsafe fn m(_p: *const u8) -> f32 {
        0.0
    }
}

struct Q4_0W;
impl Legacy for Q4_0W {
    const BYTES: usize = 18;
    const ACT_BYTES: usize = 34;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> (int8x16_t, int8x16_t) {
        let (l, h) = nibbles(p.add(2));
        (vsubq_s8(l, vdupq_n_s8(8)), vsubq_s8(h, vdupq_n_s8(8)))
    }
}

struct Q4_1W;
impl Legacy for Q4_1W {
    const BYTES: usize = 20;
    const ACT_BYTES: usize = 36;
    const HAS_M: bool = true;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> (int8x16_t, int8x16_t) {
        nibbles(p.add(4))
    }
    #[inline(always)]
    unsafe fn m(p: *const u8) -> f32 {
        f16_at(p.add(2))
    }
}

struct Q5_0W;
impl Legacy for Q5_0W {
    const BYTES: usize = 22;
    const ACT_BYTES: usize = 34;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> (int8x16_t, int8x16_t) {
        let (l, h) = nibbles(p.add(6));
        let l = vsubq_s8(vorrq_s8(l, fifth_bits(p.add(2), 0)), vdupq_n_s8(16));
        let h = vsubq_s8(vorrq_s8(h, fifth_bits(p.add(2), 1)), vdupq_n_s8(16));
        (l, h)
    }
}

struct Q5_1W;
impl Legacy for Q5_1W {
    const BYTES: usize = 24;
    const ACT_BYTES: usize = 36;
    const HAS_M: bool = true;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> (int8x16_t, int8x16_t) {
        let (l, h) = nibbles(p.add(8));
        (vorrq_s8(l, fifth_bits(p.add(4), 0)), vorrq_s8(h, fifth_bits(p.add(4), 1)))
    }
    #[inline(always)]
    unsafe fn m(p: *const u8) -> f32 {
        f16_at(p.add(2))
    }
}

struct Q8_0W;
impl Legacy for Q8_0W {
    const BYTES: usize = 34;
    const ACT_BYTES: usize = 34;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> (int8x16_t, int8x16_t) {
        (vld1q_s8(p.add(2) as *const i8), vld1q_s8(p.add(18) as *const i8))
    }
}

struct Iq4NlW;
impl Legacy for Iq4NlW {
    const BYTES: usize = 18;
    const ACT_BYTES: usize = 34;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> (int8x16_t, int8x16_t) {
        let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
        let (l, h) = nibbles(p.add(2));
        (vqtbl1q_s8(table, vreinterpretq_u8_s8(l)), vqtbl1q_s8(table, vreinterpretq_u8_s8(h)))
    }
}

fn matmul_legacy<W: Legacy, const DOT: bool>(k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]) {
    if DOT {
        drive!(tile_legacy_dot, W, 4 x 2, 32, k, w, n_rows, a, n_tok, out, W::BYTES, W::ACT_BYTES)
    } else {
        drive!(tile_legacy_neon, W, 4 x 2, 32, k, w, n_rows, a, n_tok, out, W::BYTES, W::ACT_BYTES)
    }
}

tile_fn!(#[target_feature(enable = "dotprod")] tile_legacy_dot, Legacy, tile_legacy(true));
tile_fn!(tile_legacy_neon, Legacy, tile_legacy(false));

/// One `R x T` tile of 32-weight blocks: per block, the integer dot in four lanes, scaled by
/// `dx·dy` into four float lanes that are summed at the end (as ggml's NEON `vec_dot`s do).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_legacy<W: Legacy, const R: usize, const T: usize, const DOT: bool>(
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
    let mut acc = [[vdupq_n_f32(0.0); T]; R];
    let mut accm = [[0.0f32; T]; R];
    for b in 0..nb {
        let ab: [*const u8; T] = std::array::from_fn(|t| ar[t].add(b * W::ACT_BYTES));
        let y: [(int8x16_t, int8x16_t); T] = std::array::from_fn(|t| {
            let q = ab[t].add(W::ACT_BYTES - 32) as *const i8;
            (vld1q_s8(q), vld1q_s8(q.add(16)))
        });
        let dy: [f32; T] = std::array::from_fn(|t| f16_at(ab[t]));
        for r in 0..R {
            let p = wr[r].add(b * W::BYTES);
            let (xl, xh) = W::quants(p);
            let dx = f16_at(p);
            for t in 0..T {
                let s = dot16::<DOT>(dot16::<DOT>(vdupq_n_s32(0), xl, y[t].0), xh, y[t].1);
                acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(s), dx * dy[t]);
            }
            if W::HAS_M {
                let m = W::m(p);
                for t in 0..T {
                    accm[r][t] += m * f16_at(ab[t].add(2));
                }
            }
        }
    }
    let sums: [[f32; T]; R] = std::array::from_fn(|r| std::array::from_fn(|t| vaddvq_f32(acc[r][t]) + accm[r][t]));
    store(sums, nr, nt, out, os);
}

// ---------------------------------------------------------------------------------------------
// 256-weight super-blocks against Q8_K activations

/// A super-block's scales, read once per tile row.
struct KPrep {
    d: f32,
    dmin: f32,
    /// Per-16-weight scales.
    scales: [i32; 16],
    /// Per-16-weight factors of the Q8_K group sums: mins (taken with `dmin`), or for quants
    /// stored with an offset, scale times offset (taken off the integer sum).
    corr: [int16x8_t; 2],
}

trait KQuant {
    const BYTES: usize;
    /// Whether llama.cpp's AVX2 build repacks these weights (see `KOrder::Repacked`).
    const REPACKED: bool = false;
    /// `corr` is an offset of the stored quants (Q3_K, Q6_K), not mins (Q2_K, Q4_K, Q5_K);
    /// IQ4_XS has neither (its `corr` is zero).
    const OFFSET: bool;
    unsafe fn prep(p: *const u8) -> KPrep;
    /// Quants `32 j .. 32 j + 32` as signed bytes (in two halves of 16).
    unsafe fn quants(p: *const u8, j: usize) -> (int8x16_t, int8x16_t);
}

/// Per-32 values repeated to 16 per-16 ones, as i16.
#[inline(always)]
unsafe fn dup8_i16(v: [i16; 8]) -> [int16x8_t; 2] {
    let v = vld1q_s16(v.as_ptr());
    [vzip1q_s16(v, v), vzip2q_s16(v, v)]
}

/// The low or high nibbles of the 32 bytes at `p`.
#[inline(always)]
unsafe fn nibbles_32(p: *const u8, high: bool) -> (uint8x16_t, uint8x16_t) {
    let (a, b) = (vld1q_u8(p), vld1q_u8(p.add(16)));
    if high {
        (vshrq_n_u8::<4>(a), vshrq_n_u8::<4>(b))
    } else {
        (vandq_u8(a, vdupq_n_u8(0x0F)), vandq_u8(b, vdupq_n_u8(0x0F)))
    }
}

/// The 32 bytes at `p` shifted right by `shift` bits, masked to their two low bits.
#[inline(always)]
unsafe fn crumbs_32(p: *const u8, shift: usize) -> (uint8x16_t, uint8x16_t) {
    let s = vdupq_n_s8(-(shift as i8));
    let m = vdupq_n_u8(3);
    (vandq_u8(vshlq_u8(vld1q_u8(p), s), m), vandq_u8(vshlq_u8(vld1q_u8(p.add(16)), s), m))
}

/// 0x10 (or `value`) in each byte of the 32 at `p` whose bit `j` is set.
#[inline(always)]
unsafe fn bit_32(p: *const u8, j: usize, value: u8) -> (uint8x16_t, uint8x16_t) {
    let bit = vdupq_n_u8(1 << j);
    let v = vdupq_n_u8(value);
    (vandq_u8(vtstq_u8(vld1q_u8(p), bit), v), vandq_u8(vtstq_u8(vld1q_u8(p.add(16)), bit), v))
}

#[inline(always)]
unsafe fn signed(q: (uint8x16_t, uint8x16_t)) -> (int8x16_t, int8x16_t) {
    (vreinterpretq_s8_u8(q.0), vreinterpretq_s8_u8(q.1))
}

#[inline(always)]
unsafe fn or(a: (uint8x16_t, uint8x16_t), b: (uint8x16_t, uint8x16_t)) -> (uint8x16_t, uint8x16_t) {
    (vorrq_u8(a.0, b.0), vorrq_u8(a.1, b.1))
}

struct Q4KW;
impl KQuant for Q4KW {
    const BYTES: usize = 144;
    const REPACKED: bool = true;
    const OFFSET: bool = false;
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> KPrep {
        let (sc, mn) = super::scalar::scales_mins_k4(&*(p.add(4) as *const [u8; 12]));
        KPrep {
            d: f16_at(p),
            dmin: f16_at(p.add(2)),
            scales: std::array::from_fn(|g| sc[g / 2] as i32),
            corr: dup8_i16(mn.map(|m| m as i16)),
        }
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> (int8x16_t, int8x16_t) {
        signed(nibbles_32(p.add(16 + 32 * (j / 2)), j % 2 == 1))
    }
}

struct Q5KW;
impl KQuant for Q5KW {
    const BYTES: usize = 176;
    const OFFSET: bool = false;
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> KPrep {
        Q4KW::prep(p)
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> (int8x16_t, int8x16_t) {
        signed(or(nibbles_32(p.add(48 + 32 * (j / 2)), j % 2 == 1), bit_32(p.add(16), j, 0x10)))
    }
}

struct Q6KW;
impl KQuant for Q6KW {
    const BYTES: usize = 210;
    const OFFSET: bool = true;
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> KPrep {
        let sc = vld1q_s8(p.add(192) as *const i8);
        let scales: [i8; 16] = *(p.add(192) as *const [i8; 16]);
        // The stored quants are the values plus 32.
        let corr = [vshlq_n_s16::<5>(vmovl_s8(vget_low_s8(sc))), vshlq_n_s16::<5>(vmovl_high_s8(sc))];
        KPrep { d: f16_at(p.add(208)), dmin: 0.0, scales: scales.map(|s| s as i32), corr }
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> (int8x16_t, int8x16_t) {
        let (c, quarter) = (j / 4, j % 4);
        let low = nibbles_32(p.add(64 * c + 32 * (quarter % 2)), quarter >= 2);
        let (h0, h1) = crumbs_32(p.add(128 + 32 * c), 2 * quarter);
        signed(or(low, (vshlq_n_u8::<4>(h0), vshlq_n_u8::<4>(h1))))
    }
}

struct Q3KW;
impl KQuant for Q3KW {
    const BYTES: usize = 110;
    const OFFSET: bool = true;
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> KPrep {
        let s = super::scalar::scales_q3_k(&*(p.add(96) as *const [u8; 12]));
        let sc = vld1q_s8(s.as_ptr());
        // Stored q = low + 4·hbit in 0..8 stands for q - 4.
        let corr = [vshlq_n_s16::<2>(vmovl_s8(vget_low_s8(sc))), vshlq_n_s16::<2>(vmovl_high_s8(sc))];
        KPrep { d: f16_at(p.add(108)), dmin: 0.0, scales: s.map(|s| s as i32), corr }
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> (int8x16_t, int8x16_t) {
        signed(or(crumbs_32(p.add(32 + 32 * (j / 4)), 2 * (j % 4)), bit_32(p, j, 4)))
    }
}

struct Q2KW;
impl KQuant for Q2KW {
    const BYTES: usize = 84;
    const OFFSET: bool = false;
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> KPrep {
        let sc: [u8; 16] = *(p as *const [u8; 16]);
        let mins = vshrq_n_u8::<4>(vld1q_u8(p));
        let corr = [vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins))), vreinterpretq_s16_u16(vmovl_high_u8(mins))];
        KPrep { d: f16_at(p.add(80)), dmin: f16_at(p.add(82)), scales: sc.map(|s| (s & 0x0F) as i32), corr }
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> (int8x16_t, int8x16_t) {
        signed(crumbs_32(p.add(16 + 32 * (j / 4)), 2 * (j % 4)))
    }
}

struct Iq4XsW;
impl KQuant for Iq4XsW {
    const BYTES: usize = 136;
    const OFFSET: bool = false;
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> KPrep {
        let h = u16::from_le_bytes([*p.add(2), *p.add(3)]);
        let sc: [i32; 8] = std::array::from_fn(|ib| {
            let l = (*p.add(4 + ib / 2) >> (4 * (ib % 2))) & 0x0F;
            (l | ((((h >> (2 * ib)) & 3) as u8) << 4)) as i32 - 32
        });
        KPrep { d: f16_at(p), dmin: 0.0, scales: std::array::from_fn(|g| sc[g / 2]), corr: [vdupq_n_s16(0); 2] }
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> (int8x16_t, int8x16_t) {
        let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
        let (l, h) = nibbles(p.add(8 + 16 * j));
        (vqtbl1q_s8(table, vreinterpretq_u8_s8(l)), vqtbl1q_s8(table, vreinterpretq_u8_s8(h)))
    }
}

fn matmul_k<W: KQuant, const DOT: bool>(k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]) {
    // The summation order follows llama.cpp's choice for the whole product (see `KOrder`), so
    // this must see every token of the batch in one call.
    k_runs(W::REPACKED, n_rows, a, n_tok, out, |order, a, n, out| match (order, DOT) {
        (KOrder::VecDot, true) => drive!(tile_k_vec_dot, W, 4 x 2, 256, k, w, n_rows, a, n, out, W::BYTES, 292),
        (KOrder::Tiled, true) => drive!(tile_k_tiled_dot, W, 4 x 2, 256, k, w, n_rows, a, n, out, W::BYTES, 292),
        (KOrder::Repacked, true) => drive!(tile_k_repacked_dot, W, 4 x 2, 256, k, w, n_rows, a, n, out, W::BYTES, 292),
        (KOrder::RepackedGemm, true) => drive!(tile_k_gemm_dot, W, 4 x 2, 256, k, w, n_rows, a, n, out, W::BYTES, 292),
        (KOrder::VecDot, false) => drive!(tile_k_vec, W, 4 x 2, 256, k, w, n_rows, a, n, out, W::BYTES, 292),
        (KOrder::Tiled, false) => drive!(tile_k_tiled, W, 4 x 2, 256, k, w, n_rows, a, n, out, W::BYTES, 292),
        (KOrder::Repacked, false) => drive!(tile_k_repacked, W, 4 x 2, 256, k, w, n_rows, a, n, out, W::BYTES, 292),
        (KOrder::RepackedGemm, false) => drive!(tile_k_gemm, W, 4 x 2, 256, k, w, n_rows, a, n, out, W::BYTES, 292),
    })
}

tile_fn!(#[target_feature(enable = "dotprod")] tile_k_vec_dot, KQuant, tile_k(true, KOrder::VecDot));
tile_fn!(#[target_feature(enable = "dotprod")] tile_k_tiled_dot, KQuant, tile_k(true, KOrder::Tiled));
tile_fn!(#[target_feature(enable = "dotprod")] tile_k_repacked_dot, KQuant, tile_k(true, KOrder::Repacked));
tile_fn!(#[target_feature(enable = "dotprod")] tile_k_gemm_dot, KQuant, tile_k(true, KOrder::RepackedGemm));
tile_fn!(tile_k_vec, KQuant, tile_k(false, KOrder::VecDot));
tile_fn!(tile_k_tiled, KQuant, tile_k(false, KOrder::Tiled));
tile_fn!(tile_k_repacked, KQuant, tile_k(false, KOrder::Repacked));
tile_fn!(tile_k_gemm, KQuant, tile_k(false, KOrder::RepackedGemm));

/// One `R x T` tile of super-blocks. The integer parts of each super-block (per 64 weights for
/// the repacked gemm) are exact, and the float steps are [`KAcc`]'s, the scalar kernel's own:
/// the results equal the scalar kernel's bit for bit in every [`KOrder`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_k<W: KQuant, const R: usize, const T: usize, const DOT: bool>(
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
) {
    let wr: [*const u8; R] = row_ptrs(w, ws, nr);
    let ar: [*const u8; T] = row_ptrs(a, as_, nt);
    let mut acc = [[KAcc::default(); T]; R];
    for b in 0..nb {
        let ab: [*const u8; T] = std::array::from_fn(|t| ar[t].add(b * 292));
        let dy: [f32; T] = std::array::from_fn(|t| f32_at(ab[t]));
        let bsums: [[int16x8_t; 2]; T] = std::array::from_fn(|t| {
            let s = ab[t].add(260) as *const i16;
            [vld1q_s16(s), vld1q_s16(s.add(8))]
        });
        for r in 0..R {
            let p = wr[r].add(b * W::BYTES);
            let prep = W::prep(p);
            // Integer sums per 64 weights.
            let mut isb = [[0i32; 4]; T];
            for sb in 0..4 {
                let mut isum = [vdupq_n_s32(0); T];
                for j in 2 * sb..2 * sb + 2 {
                    let (q0, q1) = W::quants(p, j);
                    for t in 0..T {
                        let y = ab[t].add(4 + 32 * j) as *const i8;
                        let p0 = dot16::<DOT>(vdupq_n_s32(0), q0, vld1q_s8(y));
                        let p1 = dot16::<DOT>(vdupq_n_s32(0), q1, vld1q_s8(y.add(16)));
                        isum[t] = vmlaq_n_s32(isum[t], p0, prep.scales[2 * j]);
                        isum[t] = vmlaq_n_s32(isum[t], p1, prep.scales[2 * j + 1]);
                    }
                }
                for t in 0..T {
                    isb[t][sb] = vaddvq_s32(isum[t]);
                }
            }
            for t in 0..T {
                // Σ corr_g · bsum_g, per 64 weights (four groups of 16 each).
                let [b0, b1] = bsums[t];
                let [c0, c1] = prep.corr;
                let corr = [
                    vaddvq_s32(vmull_s16(vget_low_s16(b0), vget_low_s16(c0))),
                    vaddvq_s32(vmull_high_s16(b0, c0)),
                    vaddvq_s32(vmull_s16(vget_low_s16(b1), vget_low_s16(c1))),
                    vaddvq_s32(vmull_high_s16(b1, c1)),
                ];
                let parts = |s: i32, c: i32| {
                    let (isum, imin) = if W::OFFSET { (s - c, 0) } else { (s, c) };
                    KParts { d: prep.d, dmin: prep.dmin, dy: dy[t], isum, imin }
                };
                if order == KOrder::RepackedGemm {
                    for sb in 0..4 {
                        acc[r][t].add(order, parts(isb[t][sb], corr[sb]), !W::OFFSET);
                    }
                } else {
                    acc[r][t].add(order, parts(isb[t].iter().sum(), corr.iter().sum()), !W::OFFSET);
                }
            }
        }
    }
    store(acc.map(|row| row.map(KAcc::total)), nr, nt, out, os);
}

// ---------------------------------------------------------------------------------------------
// Float weights against activations of the same float type

trait FloatRow {
    const BYTES: usize;
    /// Elements `i .. i + 4` as f32.
    unsafe fn load4(p: *const u8, i: usize) -> float32x4_t;
    unsafe fn load1(p: *const u8, i: usize) -> f32;
}

struct F32W;
impl FloatRow for F32W {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn load4(p: *const u8, i: usize) -> float32x4_t {
        vld1q_f32(p.add(4 * i) as *const f32)
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
    unsafe fn load4(p: *const u8, i: usize) -> float32x4_t {
        let h = vld1_u16(p.add(2 * i) as *const u16);
        let r: float32x4_t;
        asm!("fcvtl {r:v}.4s, {h:v}.4h", r = lateout(vreg) r, h = in(vreg) h, options(pure, nomem, nostack));
        r
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
    unsafe fn load4(p: *const u8, i: usize) -> float32x4_t {
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p.add(2 * i) as *const u16)))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8, i: usize) -> f32 {
        f32::from_bits((u16::from_le_bytes([*p.add(2 * i), *p.add(2 * i + 1)]) as u32) << 16)
    }
}

fn matmul_float<W: FloatRow>(k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]) {
    drive!(tile_float, W, 4 x 2, 1, k, w, n_rows, a, n_tok, out, W::BYTES, W::BYTES)
}

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
    let mut acc = [[vdupq_n_f32(0.0); T]; R];
    let n4 = n / 4 * 4;
    for i in (0..n4).step_by(4) {
        let y: [float32x4_t; T] = std::array::from_fn(|t| W::load4(ar[t], i));
        for r in 0..R {
            let x = W::load4(wr[r], i);
            for t in 0..T {
                acc[r][t] = vfmaq_f32(acc[r][t], x, y[t]);
            }
        }
    }
    let sums: [[f32; T]; R] = std::array::from_fn(|r| {
        std::array::from_fn(|t| vaddvq_f32(acc[r][t]) + (n4..n).map(|i| W::load1(wr[r], i) * W::load1(ar[t], i)).sum::<f32>())
    });
    store(sums, nr, nt, out, os);
}
