//! AVX2 activation quantizers: byte for byte the rows [`super::act::quantize_act`] writes (ggml's
//! x86 `quantize_row_q8_0`/`q8_1` and `quantize_row_q8_K_ref`), without a libm `rint` call per
//! value. Prompt processing quantizes every activation row once per matmul, which on small
//! models costs a sizeable share of the matmul itself.

use std::arch::x86_64::*;

use half::f16;
use wasm_chord_core::quant::QK_K;

use super::act::ActType;

/// Quantizes `src` into `dst` as [`super::act::quantize_act`] does, for the 8-bit types; `false`
/// for other types or lengths that do not fit (the caller falls back to the scalar version).
pub fn quantize_act(act: ActType, src: &[f32], dst: &mut [u8]) -> bool {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")) || act.row_bytes(src.len()) != Some(dst.len()) {
        return false;
    }
    // SAFETY: the features were checked above and the lengths match whole blocks.
    unsafe {
        match act {
            ActType::Q8_0 => q8_32_row::<false>(src, dst),
            ActType::Q8_1 => q8_32_row::<true>(src, dst),
            ActType::Q8K => q8_k_row(src, dst),
            ActType::F32 | ActType::F16 | ActType::BF16 => return false,
        }
    }
    true
}

#[inline(always)]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    _mm_cvtsi128_si32(s)
}

/// 32 rounded integers (as four vectors of i32) packed to i8 in element order.
#[inline(always)]
unsafe fn pack_32(i: [__m256i; 4]) -> __m256i {
    let a = _mm256_packs_epi32(i[0], i[1]);
    let b = _mm256_packs_epi32(i[2], i[3]);
    let p = _mm256_packs_epi16(a, b);
    // The packs interleave 128-bit lanes; this puts the eight groups of four back in order.
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Q8_0 (`SUM == false`) or Q8_1 rows: per 32 values `d = amax / 127`, `q = round(x * 127 /
/// amax)` ties to even, and for Q8_1 `s = d * Σq`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q8_32_row<const SUM: bool>(src: &[f32], dst: &mut [u8]) {
    let bb = if SUM { 36 } else { 34 };
    let sign = _mm256_set1_ps(-0.0);
    for (x, y) in src.chunks_exact(32).zip(dst.chunks_exact_mut(bb)) {
        let v: [__m256; 4] = std::array::from_fn(|j| _mm256_loadu_ps(x.as_ptr().add(8 * j)));
        let a = v.map(|v| _mm256_andnot_ps(sign, v));
        let amax = hmax(_mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3])));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mul = _mm256_set1_ps(id);
        let i = v.map(|v| _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
        y[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        if SUM {
            let sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3])));
            y[2..4].copy_from_slice(&f16::from_f32(d * sum as f32).to_le_bytes());
        }
        _mm256_storeu_si256(y.as_mut_ptr().add(bb - 32) as *mut __m256i, pack_32(i));
    }
}

/// Q8_K rows (`BlockQ8K`: f32 `d`, 256 i8 quants, 16 i16 group sums): the scale comes from the
/// first value of largest magnitude, with its sign.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q8_k_row(src: &[f32], dst: &mut [u8]) {
    let sign = _mm256_set1_ps(-0.0);
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(4 + QK_K + 32)) {
        let p = x.as_ptr();
        let mut m = _mm256_setzero_ps();
        for j in 0..QK_K / 8 {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * j))));
        }
        let amax = hmax(m);
        y.fill(0);
        if amax == 0.0 {
            continue;
        }
        let max = x[x.iter().position(|v| v.abs() == amax).unwrap_or(0)];
        let iscale = -127.0 / max;
        let mul = _mm256_set1_ps(iscale);
        let cap = _mm256_set1_epi32(127);
        let q = y.as_mut_ptr().add(4);
        for g in 0..QK_K / 32 {
            let i: [__m256i; 4] = std::array::from_fn(|j| {
                let v = _mm256_mul_ps(_mm256_loadu_ps(p.add(32 * g + 8 * j)), mul);
                _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)), cap)
            });
            _mm256_storeu_si256(q.add(32 * g) as *mut __m256i, pack_32(i));
        }
        let qs = std::slice::from_raw_parts(q as *const i8, QK_K);
        for (g, s) in qs.chunks_exact(16).enumerate() {
            let sum: i16 = s.iter().map(|&v| v as i16).sum();
            y[4 + QK_K + 2 * g..][..2].copy_from_slice(&sum.to_le_bytes());
        }
        y[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
