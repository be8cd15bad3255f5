//! The AVX2 (and AVX-512 VNNI) kernels over [`super::packed`] weights: the register tile of
//! [`super::x86`]'s 32-weight block kernel, four rows by up to three tokens, with the four rows'
//! scales converted and multiplied as one vector. Per output, the same operations in the same
//! order as the unpacked tile, so the same bits.

use std::arch::x86_64::*;

use wasm_chord_core::TensorType;

use super::for_each_tile;
use super::packed::{PackedFn, GROUP};
use super::x86::{f16_at, hsum, row_ptrs, store, Iq4NlW, Legacy, Q4_0W, Q4_1W, Q5_0W, Q5_1W, Q8_0W};

/// The AVX2 packed matmul for weights of type `ty`, if this CPU has AVX2, FMA and F16C.
pub fn packed_fn(ty: TensorType) -> Option<PackedFn> {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")) {
        return None;
    }
    use TensorType::*;
    Some(match ty {
        Q4_0 => matmul::<Q4_0W, false>,
        Q4_1 => matmul::<Q4_1W, false>,
        Q5_0 => matmul::<Q5_0W, false>,
        Q5_1 => matmul::<Q5_1W, false>,
        Q8_0 => matmul::<Q8_0W, false>,
        IQ4_NL => matmul::<Iq4NlW, false>,
        _ => return None,
    })
}

/// The AVX-512 VNNI packed matmul, where [`super::x86::matmul_fn_avx512_vnni`] has one.
pub fn packed_fn_vnni(ty: TensorType) -> Option<PackedFn> {
    super::x86::matmul_fn_avx512_vnni(ty)?;
    use TensorType::*;
    Some(match ty {
        Q4_0 => matmul::<Q4_0W, true>,
        Q4_1 => matmul::<Q4_1W, true>,
        Q5_0 => matmul::<Q5_0W, true>,
        Q5_1 => matmul::<Q5_1W, true>,
        Q8_0 => matmul::<Q8_0W, true>,
        IQ4_NL => matmul::<Iq4NlW, true>,
        _ => return None,
    })
}

fn matmul<W: Legacy, const VNNI: bool>(k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]) {
    if n_rows == 0 || n_tok == 0 {
        return;
    }
    let nb = k / 32;
    let (gs, as_) = (GROUP * nb * W::BYTES, nb * W::ACT_BYTES);
    let (wp, ap, op) = (w.as_ptr(), a.as_ptr(), out.as_mut_ptr());
    macro_rules! walk {
        ($tile:ident, $T:literal) => {
            for_each_tile::<GROUP, $T>(n_rows, n_tok, as_, |r0, nr, t0, nt| {
                // SAFETY: the tile stays inside the lengths `Kernels::matmul_packed` checked
                // (whole groups, the last one padded), and this entry exists only where the CPU
                // has the tile's features.
                unsafe {
                    let (g, a, o) = (wp.add(r0 / GROUP * gs), ap.add(t0 * as_), op.add(r0 * n_tok + t0));
                    if nt == $T {
                        $tile::<W, $T>(nb, g, nr, a, as_, nt, o, n_tok)
                    } else {
                        for t in 0..nt {
                            $tile::<W, 1>(nb, g, nr, a.add(t * as_), as_, 1, o.add(t), n_tok)
                        }
                    }
                }
            })
        };
    }
    if VNNI {
        walk!(tile_vnni, 3)
    } else {
        walk!(tile_avx2, 2)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<W: Legacy, const T: usize>(nb: usize, g: *const u8, nr: usize, a: *const u8, as_: usize, nt: usize, out: *mut f32, os: usize) {
    tile_body::<W, T, false>(nb, g, nr, a, as_, nt, out, os)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_vnni<W: Legacy, const T: usize>(nb: usize, g: *const u8, nr: usize, a: *const u8, as_: usize, nt: usize, out: *mut f32, os: usize) {
    tile_body::<W, T, true>(nb, g, nr, a, as_, nt, out, os)
}

/// One group of four rows by `T` tokens. Mirrors `x86::tile_legacy_body`: per block and output,
/// `acc += f32(Σ x·y) · (d_x · d_y)` in eight lanes, and for Q4_1/Q5_1 `accm += m · s_y`; the
/// result `hsum(acc) + accm`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_body<W: Legacy, const T: usize, const VNNI: bool>(
    nb: usize,
    g: *const u8,
    nr: usize,
    a: *const u8,
    as_: usize,
    nt: usize,
    out: *mut f32,
    os: usize,
) {
    // Scale bytes per block: d, or d and m.
    let sb = if W::SIGNED { 2 } else { 4 };
    let qb = W::BYTES - sb;
    let ar: [*const u8; T] = row_ptrs(a, as_, nt);
    let mut acc = [[_mm256_setzero_ps(); T]; GROUP];
    let mut accm = [_mm_setzero_ps(); T];
    let ones = _mm256_set1_epi16(1);
    for b in 0..nb {
        let p = g.add(b * GROUP * W::BYTES);
        let d4 = _mm_cvtph_ps(_mm_loadl_epi64(p as *const __m128i));
        let mut y = [_mm256_setzero_si256(); T];
        let mut scale = [[0.0f32; GROUP]; T];
        for t in 0..T {
            let pa = ar[t].add(b * W::ACT_BYTES);
            y[t] = _mm256_loadu_si256(pa.add(W::ACT_BYTES - 32) as *const __m256i);
            _mm_storeu_ps(scale[t].as_mut_ptr(), _mm_mul_ps(d4, _mm_set1_ps(f16_at(pa))));
            if !W::SIGNED {
                let m4 = _mm_cvtph_ps(_mm_loadl_epi64(p.add(2 * GROUP) as *const __m128i));
                accm[t] = _mm_add_ps(accm[t], _mm_mul_ps(m4, _mm_set1_ps(f16_at(pa.add(2)))));
            }
        }
        let q = p.add(GROUP * sb);
        for r in 0..GROUP {
            // `quants` reads past a block's scales; the packed quants start right here.
            let x = W::quants(q.add(r * qb).sub(sb));
            let ux = if W::SIGNED { _mm256_sign_epi8(x, x) } else { x };
            for t in 0..T {
                let yt = if W::SIGNED { _mm256_sign_epi8(y[t], x) } else { y[t] };
                let p32 = if VNNI {
                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), ux, yt)
                } else {
                    _mm256_madd_epi16(_mm256_maddubs_epi16(ux, yt), ones)
                };
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_set1_ps(scale[t][r]), acc[r][t]);
            }
        }
    }
    let mut m = [[0.0f32; GROUP]; T];
    for t in 0..T {
        _mm_storeu_ps(m[t].as_mut_ptr(), accm[t]);
    }
    let sums: [[f32; T]; GROUP] = std::array::from_fn(|r| std::array::from_fn(|t| hsum(acc[r][t]) + m[t][r]));
    store(sums, nr, nt, out, os);
}
