//! wasm32 simd128 kernels: the 32-weight block types and the k-quants, each block unpacked to
//! signed bytes and dotted with widening multiplies (simd128 has no byte dot product), one
//! weight row by up to two tokens per tile. Float weights other than F32/BF16 stay scalar.

use std::arch::wasm32::*;

use half::f16;
use wasm_chord_core::quant::KVALUES_IQ4NL;
use wasm_chord_core::TensorType;

use super::scalar::{k_runs, KAcc, KOrder, KParts};
use super::{for_each_tile, MatmulFn};

/// The simd128 matmul for weights of type `ty`, where one exists.
pub fn matmul_fn(ty: TensorType) -> Option<MatmulFn> {
    use TensorType::*;
    Some(match ty {
        Q4_0 => matmul_legacy::<Q4_0W>,
        Q4_1 => matmul_legacy::<Q4_1W>,
        Q5_0 => matmul_legacy::<Q5_0W>,
        Q5_1 => matmul_legacy::<Q5_1W>,
        Q8_0 => matmul_legacy::<Q8_0W>,
        IQ4_NL => matmul_legacy::<Iq4NlW>,
        Q4_K => matmul_k::<Q4KW>,
        Q5_K => matmul_k::<Q5KW>,
        Q6_K => matmul_k::<Q6KW>,
        _ => return None,
    })
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    f16::from_le_bytes([*p, *p.add(1)]).to_f32()
}

#[inline(always)]
unsafe fn load(p: *const u8) -> v128 {
    v128_load(p as *const v128)
}

/// Σ x·y over 16 signed bytes, as 4 i32 lanes (products of bytes fit i16 exactly).
#[inline(always)]
fn dot16(x: v128, y: v128) -> v128 {
    let lo = i32x4_extadd_pairwise_i16x8(i16x8_extmul_low_i8x16(x, y));
    let hi = i32x4_extadd_pairwise_i16x8(i16x8_extmul_high_i8x16(x, y));
    i32x4_add(lo, hi)
}

#[inline(always)]
fn hsum_i32(v: v128) -> i32 {
    i32x4_extract_lane::<0>(v) + i32x4_extract_lane::<1>(v) + i32x4_extract_lane::<2>(v) + i32x4_extract_lane::<3>(v)
}

#[inline(always)]
fn hsum_f32(v: v128) -> f32 {
    (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v)) + (f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v))
}

/// 16 bytes of nibbles: (low nibbles = elements 0..16, high nibbles = 16..32).
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (v128, v128) {
    let b = load(p);
    (v128_and(b, u8x16_splat(0x0F)), u8x16_shr(b, 4))
}

/// Bits `16 h .. 16 h + 16` of the 32 at `p` as bytes holding 0x10 where set.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8, h: u32) -> v128 {
    let bits = u32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)]) >> (16 * h);
    let spread = u8x16((bits & 0xFF) as u8, (bits & 0xFF) as u8, (bits & 0xFF) as u8, (bits & 0xFF) as u8,
        (bits & 0xFF) as u8, (bits & 0xFF) as u8, (bits & 0xFF) as u8, (bits & 0xFF) as u8,
        (bits >> 8) as u8, (bits >> 8) as u8, (bits >> 8) as u8, (bits >> 8) as u8,
        (bits >> 8) as u8, (bits >> 8) as u8, (bits >> 8) as u8, (bits >> 8) as u8);
    let mask = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    let set = u8x16_eq(v128_and(spread, mask), mask);
    v128_and(set, u8x16_splat(0x10))
}

fn row_ptrs<const N: usize>(base: *const u8, stride: usize, valid: usize) -> [*const u8; N] {
    std::array::from_fn(|i| base.wrapping_add(i.min(valid.max(1) - 1) * stride))
}

unsafe fn store<const R: usize, const T: usize>(sums: [[f32; T]; R], nr: usize, nt: usize, out: *mut f32, os: usize) {
    for (r, row) in sums.iter().enumerate().take(nr) {
        for (t, &v) in row.iter().enumerate().take(nt) {
            *out.add(r * os + t) = v;
        }
    }
}

macro_rules! drive {
    ($tile:ident, $W:ty, $k:expr, $w:expr, $n_rows:expr, $a:expr, $n_tok:expr, $out:expr, $len:expr, $wb:expr, $ab:expr) => {{
        let (k, w, a, out): (usize, &[u8], &[u8], &mut [f32]) = ($k, $w, $a, $out);
        let (n_rows, n_tok) = ($n_rows, $n_tok);
        if n_rows == 0 || n_tok == 0 {
            return;
        }
        let nb = k / $len;
        let (ws, as_) = (nb * $wb, nb * $ab);
        let (wp, ap, op) = (w.as_ptr(), a.as_ptr(), out.as_mut_ptr());
        for_each_tile::<2, 2>(n_rows, n_tok, as_, |r0, nr, t0, nt| {
            // SAFETY: the tile stays inside the lengths `Kernels::matmul` checked; simd128 is
            // enabled for the whole build.
            unsafe {
                let (w, a, o) = (wp.add(r0 * ws), ap.add(t0 * as_), op.add(r0 * n_tok + t0));
                if nt == 2 {
                    $tile::<$W, 2, 2>(nb, w, ws, nr, a, as_, nt, o, n_tok)
                } else {
                    $tile::<$W, 2, 1>(nb, w, ws, nr, a, as_, nt, o, n_tok)
                }
            }
        });
    }};
}

// ---------------------------------------------------------------------------------------------
// 32-weight blocks

trait Legacy {
    const BYTES: usize;
    /// 34 for Q8_0 activations, 36 for Q8_1 (whose `s` follows `d`).
    const ACT_BYTES: usize;
    /// The 32 quants as signed bytes (elements 0..16, 16..32).
    unsafe fn quants(p: *const u8) -> (v128, v128);
    /// The offset `m` multiplying the activations' `s` (blocks with a minimum).
    unsafe fn m(_p: *const u8) -> Option<f32> {
        None
    }
}

struct Q4_0W;
impl Legacy for Q4_0W {
    const BYTES: usize = 18;
    const ACT_BYTES: usize = 34;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> (v128, v128) {
        let (l, h) = nibbles(p.add(2));
        (i8x16_sub(l, i8x16_splat(8)), i8x16_sub(h, i8x16_splat(8)))
    }
}

struct Q4_1W;
impl Legacy for Q4_1W {
    const BYTES: usize = 20;
    const ACT_BYTES: usize = 36;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> (v128, v128) {
        nibbles(p.add(4))
    }
    #[inline(always)]
    unsafe fn m(p: *const u8) -> Option<f32> {
        Some(f16_at(p.add(2)))
    }
}

struct Q5_0W;
impl Legacy for Q5_0W {
    const BYTES: usize = 22;
    const ACT_BYTES: usize = 34;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> (v128, v128) {
        let (l, h) = nibbles(p.add(6));
        let l = i8x16_sub(v128_or(l, fifth_bits(p.add(2), 0)), i8x16_splat(16));
        let h = i8x16_sub(v128_or(h, fifth_bits(p.add(2), 1)), i8x16_splat(16));
        (l, h)
    }
}

struct Q5_1W;
impl Legacy for Q5_1W {
    const BYTES: usize = 24;
    const ACT_BYTES: usize = 36;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> (v128, v128) {
        let (l, h) = nibbles(p.add(8));
        (v128_or(l, fifth_bits(p.add(4), 0)), v128_or(h, fifth_bits(p.add(4), 1)))
    }
    #[inline(always)]
    unsafe fn m(p: *const u8) -> Option<f32> {
        Some(f16_at(p.add(2)))
    }
}

struct Q8_0W;
impl Legacy for Q8_0W {
    const BYTES: usize = 34;
    const ACT_BYTES: usize = 34;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> (v128, v128) {
        (load(p.add(2)), load(p.add(18)))
    }
}

struct Iq4NlW;
impl Legacy for Iq4NlW {
    const BYTES: usize = 18;
    const ACT_BYTES: usize = 34;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> (v128, v128) {
        let table = load(KVALUES_IQ4NL.as_ptr() as *const u8);
        let (l, h) = nibbles(p.add(2));
        (i8x16_swizzle(table, l), i8x16_swizzle(table, h))
    }
}

fn matmul_legacy<W: Legacy>(k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]) {
    drive!(tile_legacy, W, k, w, n_rows, a, n_tok, out, 32, W::BYTES, W::ACT_BYTES)
}

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
    let wr: [*const u8; R] = row_ptrs(w, ws, nr);
    let ar: [*const u8; T] = row_ptrs(a, as_, nt);
    let mut acc = [[f32x4_splat(0.0); T]; R];
    let mut accm = [[0.0f32; T]; R];
    for b in 0..nb {
        let ab: [*const u8; T] = std::array::from_fn(|t| ar[t].add(b * W::ACT_BYTES));
        let y: [(v128, v128); T] = std::array::from_fn(|t| {
            let q = ab[t].add(W::ACT_BYTES - 32);
            (load(q), load(q.add(16)))
        });
        for r in 0..R {
            let p = wr[r].add(b * W::BYTES);
            let (xl, xh) = W::quants(p);
            let dx = f16_at(p);
            for t in 0..T {
                let s = i32x4_add(dot16(xl, y[t].0), dot16(xh, y[t].1));
                let d = f32x4_splat(dx * f16_at(ab[t]));
                acc[r][t] = f32x4_add(acc[r][t], f32x4_mul(f32x4_convert_i32x4(s), d));
            }
            if let Some(m) = W::m(p) {
                for t in 0..T {
                    accm[r][t] += m * f16_at(ab[t].add(2));
                }
            }
        }
    }
    let sums: [[f32; T]; R] = std::array::from_fn(|r| std::array::from_fn(|t| hsum_f32(acc[r][t]) + accm[r][t]));
    store(sums, nr, nt, out, os);
}

// ---------------------------------------------------------------------------------------------
// k-quant super-blocks against Q8_K

/// A super-block's integer scales: `d·Σ_g scale_g (q·y)_g − dmin·Σ_g min16_g·bsum_g`.
struct KPrep {
    d: f32,
    dmin: f32,
    /// Per-16-weight scales.
    scales: [i32; 16],
    /// Per-16-weight factors of the Q8_K group sums (mins, or scale times offset).
    mins: [i32; 16],
}

trait KQuant {
    const BYTES: usize;
    /// Whether llama.cpp's AVX2 build repacks these weights (see `KOrder::Repacked`).
    const REPACKED: bool = false;
    /// The correction is an offset of the quants (taken with `d`), not mins (with `dmin`).
    const OFFSET: bool = false;
    unsafe fn prep(p: *const u8) -> KPrep;
    /// Quants `32 j .. 32 j + 32` as signed bytes (in two halves of 16).
    unsafe fn quants(p: *const u8, j: usize) -> (v128, v128);
}

struct Q4KW;
impl KQuant for Q4KW {
    const BYTES: usize = 144;
    const REPACKED: bool = true;
    unsafe fn prep(p: *const u8) -> KPrep {
        let (sc, mn) = super::scalar::scales_mins_k4(&*(p.add(4) as *const [u8; 12]));
        KPrep {
            d: f16_at(p),
            dmin: f16_at(p.add(2)),
            scales: std::array::from_fn(|g| sc[g / 2] as i32),
            mins: std::array::from_fn(|g| mn[g / 2] as i32),
        }
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> (v128, v128) {
        let q = p.add(16 + 32 * (j / 2));
        let (a, b) = (load(q), load(q.add(16)));
        if j % 2 == 0 {
            (v128_and(a, u8x16_splat(0x0F)), v128_and(b, u8x16_splat(0x0F)))
        } else {
            (u8x16_shr(a, 4), u8x16_shr(b, 4))
        }
    }
}

struct Q5KW;
impl KQuant for Q5KW {
    const BYTES: usize = 176;
    unsafe fn prep(p: *const u8) -> KPrep {
        Q4KW::prep(p)
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> (v128, v128) {
        let q = p.add(48 + 32 * (j / 2));
        let (a, b) = (load(q), load(q.add(16)));
        let (a, b) = if j % 2 == 0 {
            (v128_and(a, u8x16_splat(0x0F)), v128_and(b, u8x16_splat(0x0F)))
        } else {
            (u8x16_shr(a, 4), u8x16_shr(b, 4))
        };
        let bit = u8x16_splat(1 << j);
        let high = |h: v128| v128_and(u8x16_eq(v128_and(h, bit), bit), u8x16_splat(0x10));
        (v128_or(a, high(load(p.add(16)))), v128_or(b, high(load(p.add(32)))))
    }
}

struct Q6KW;
impl KQuant for Q6KW {
    const BYTES: usize = 210;
    const OFFSET: bool = true;
    unsafe fn prep(p: *const u8) -> KPrep {
        let sc: [i8; 16] = *(p.add(192) as *const [i8; 16]);
        KPrep {
            d: f16_at(p.add(208)),
            dmin: 0.0,
            scales: sc.map(|s| s as i32),
            // The stored quants are the values plus 32: Σ scale·32·bsum comes off with `d`.
            mins: sc.map(|s| s as i32 * 32),
        }
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8, j: usize) -> (v128, v128) {
        let (c, quarter) = (j / 4, j % 4);
        let half = |o: usize| {
            let ql = load(p.add(64 * c + 32 * (quarter % 2) + o));
            let ql = if quarter < 2 { v128_and(ql, u8x16_splat(0x0F)) } else { u8x16_shr(ql, 4) };
            let qh = u8x16_shr(load(p.add(128 + 32 * c + o)), 2 * quarter as u32);
            v128_or(ql, u8x16_shl(v128_and(qh, u8x16_splat(3)), 4))
        };
        (half(0), half(16))
    }
}

fn matmul_k<W: KQuant>(k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]) {
    // llama.cpp's summation order for the whole product (see `KOrder`).
    k_runs(W::REPACKED, n_rows, a, n_tok, out, |order, a, n, out| match order {
        KOrder::VecDot => drive!(tile_k_vec, W, k, w, n_rows, a, n, out, 256, W::BYTES, 292),
        KOrder::Tiled => drive!(tile_k_tiled, W, k, w, n_rows, a, n, out, 256, W::BYTES, 292),
        KOrder::Repacked => drive!(tile_k_repacked, W, k, w, n_rows, a, n, out, 256, W::BYTES, 292),
        KOrder::RepackedGemm => drive!(tile_k_gemm, W, k, w, n_rows, a, n, out, 256, W::BYTES, 292),
    })
}

macro_rules! tile_k_order {
    ($name:ident, $order:expr) => {
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<W: KQuant, const R: usize, const T: usize>(
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
            tile_k::<W, R, T>($order, nb, w, ws, nr, a, as_, nt, out, os)
        }
    };
}
tile_k_order!(tile_k_vec, KOrder::VecDot);
tile_k_order!(tile_k_tiled, KOrder::Tiled);
tile_k_order!(tile_k_repacked, KOrder::Repacked);
tile_k_order!(tile_k_gemm, KOrder::RepackedGemm);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_k<W: KQuant, const R: usize, const T: usize>(
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
        let wb: [*const u8; R] = std::array::from_fn(|r| wr[r].add(b * W::BYTES));
        let ab: [*const u8; T] = std::array::from_fn(|t| ar[t].add(b * 292));
        for r in 0..R {
            let prep = W::prep(wb[r]);
            // Integer sums per 64 weights (the repacked gemm scales each; the others add them).
            let mut isb = [[0i32; 4]; T];
            for sb in 0..4 {
                let mut isum = [i32x4_splat(0); T];
                for j in 2 * sb..2 * sb + 2 {
                    let (ql, qh) = W::quants(wb[r], j);
                    let (s0, s1) = (i32x4_splat(prep.scales[2 * j]), i32x4_splat(prep.scales[2 * j + 1]));
                    for t in 0..T {
                        let y = ab[t].add(4 + 32 * j);
                        let p = i32x4_add(i32x4_mul(dot16(ql, load(y)), s0), i32x4_mul(dot16(qh, load(y.add(16))), s1));
                        isum[t] = i32x4_add(isum[t], p);
                    }
                }
                for t in 0..T {
                    isb[t][sb] = hsum_i32(isum[t]);
                }
            }
            for t in 0..T {
                let dy = (ab[t] as *const f32).read_unaligned();
                let bsums = ab[t].add(260) as *const i16;
                let corr = |g0: usize, g1: usize| -> i32 { (g0..g1).map(|g| prep.mins[g] * bsums.add(g).read_unaligned() as i32).sum() };
                let parts = |s: i32, c: i32| {
                    let (isum, imin) = if W::OFFSET { (s - c, 0) } else { (s, c) };
                    KParts { d: prep.d, dmin: prep.dmin, dy, isum, imin }
                };
                if order == KOrder::RepackedGemm {
                    for sb in 0..4 {
                        acc[r][t].add(order, parts(isb[t][sb], corr(4 * sb, 4 * sb + 4)), !W::OFFSET);
                    }
                } else {
                    acc[r][t].add(order, parts(isb[t].iter().sum(), corr(0, 16)), !W::OFFSET);
                }
            }
        }
    }
    store(acc.map(|row| row.map(KAcc::total)), nr, nt, out, os);
}
