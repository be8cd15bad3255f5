//! Helpers shared by the k-quant quantizers: ggml's rounding, scale searches and scale packing.
//!
//! These reproduce `ggml-quants.c` operation for operation (same iteration counts, same order
//! of floating-point operations, same integer truncations), because a quantizer that rounds one
//! weight differently writes different bytes than llama.cpp's `quantize_row_*_ref`.

/// Below this magnitude a group counts as all zero (ggml's `GROUP_MAX_EPS`).
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// Rounds to the nearest integer, ties to even, exactly as ggml's `nearest_int`: adding
/// 1.5 * 2^23 leaves the rounded value in the low mantissa bits. Meaningful for
/// |f| <= 4194303; outside that (or for NaN) it returns the same garbage as ggml does.
#[inline(always)]
pub(super) fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of group `j` (0..8) from the 12 packed
/// bytes of a Q4_K/Q5_K block.
#[inline(always)]
pub(super) fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Packs eight 6-bit scales and mins into the 12-byte Q4_K/Q5_K layout (the inverse of
/// [`get_scale_min_k4`]), from the float group scales and mins exactly as the reference
/// quantizers do, and returns the super-block scales `(d, dmin)` before f16 rounding.
pub(super) fn pack_scales_mins_k4(scales: &[f32; 8], mins: &[f32; 8], packed: &mut [u8; 12]) -> (f32, f32) {
    // Scales are positive since the min is subtracted; the maxima start at 0 as in ggml.
    let max_scale = scales.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    for j in 0..8 {
        // ggml stores nearest_int's result in a uint8_t before clamping: keep that truncation.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    (max_scale / 63.0, max_min / 63.0)
}

/// Scale search of ggml's `make_qkx2_quants` for `x = scale * l - min`, `l` in `0..=nmax`:
/// tries `nstep + 1` inverse scales `(rmin + rdelta * is + nmax) / (max - min)` in order and
/// keeps each one that lowers the weighted error (absolute if `use_mad`, else squared). A kept
/// candidate's fitted min is used by every later candidate, so the search is serial per group.
#[derive(Clone, Copy)]
pub(super) struct Qkx2Search {
    pub nmax: i32,
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: usize,
    pub use_mad: bool,
}

impl Qkx2Search {
    /// Searches 8 consecutive groups of `x.len() / 8` weights (at most 32 each): fills `l`
    /// and returns each group's `(scale, the_min)`, the group dequantizing as
    /// `scale * l - the_min`.
    pub fn run8(&self, x: &[f32], weights: &[f32], l: &mut [u8]) -> ([f32; 8], [f32; 8]) {
        let n = x.len() / 8;
        debug_assert!(n <= 32 && x.len() == 8 * n && weights.len() == 8 * n && l.len() == 8 * n);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.run8_avx2(x, weights, l) };
        }
        self.run8_scalar(x, weights, l)
    }

    fn run8_scalar(&self, x: &[f32], weights: &[f32], l: &mut [u8]) -> ([f32; 8], [f32; 8]) {
        let n = x.len() / 8;
        let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
        for g in 0..8 {
            let r = g * n..g * n + n;
            (scales[g], mins[g]) = self.run(&x[r.clone()], &weights[r.clone()], &mut l[r]);
        }
        (scales, mins)
    }

    /// One group, as ggml's `make_qkx2_quants` (the reference for [`Self::run8_avx2`]).
    fn run(&self, x: &[f32], weights: &[f32], l: &mut [u8]) -> (f32, f32) {
        let n = x.len();
        let nmax = self.nmax;
        let mut min = x[0];
        let mut max = x[0];
        let mut sum_w = weights[0];
        let mut sum_x = sum_w * x[0];
        for i in 1..n {
            if x[i] < min {
                min = x[i];
            }
            if x[i] > max {
                max = x[i];
            }
            let w = weights[i];
            sum_w += w;
            sum_x += w * x[i];
        }
        if min > 0.0 {
            min = 0.0;
        }
        if max == min {
            l.fill(0);
            return (0.0, -min);
        }
        let mut iscale = nmax as f32 / (max - min);
        let mut scale = 1.0 / iscale;
        let mut best_error = 0.0f32;
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            l[i] = q as u8;
            let diff = scale * q as f32 + min - x[i];
            let diff = if self.use_mad { diff.abs() } else { diff * diff };
            best_error += weights[i] * diff;
        }
        if self.nstep < 1 {
            return (scale, -min);
        }
        let mut laux = [0u8; 32];
        for is in 0..=self.nstep {
            iscale = (self.rmin + self.rdelta * is as f32 + nmax as f32) / (max - min);
            let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
            for i in 0..n {
                let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
                laux[i] = q as u8;
                let (q, w) = (q as f32, weights[i]);
                sum_l += w * q;
                sum_l2 += w * q * q;
                sum_xl += w * q * x[i];
            }
            let d = sum_w * sum_l2 - sum_l * sum_l;
            if d > 0.0 {
                let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
                let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
                if this_min > 0.0 {
                    this_min = 0.0;
                    this_scale = sum_xl / sum_l2;
                }
                let mut cur_error = 0.0f32;
                for i in 0..n {
                    let diff = this_scale * laux[i] as f32 + this_min - x[i];
                    let diff = if self.use_mad { diff.abs() } else { diff * diff };
                    cur_error += weights[i] * diff;
                }
                if cur_error < best_error {
                    l.copy_from_slice(&laux[..n]);
                    best_error = cur_error;
                    scale = this_scale;
                    min = this_min;
                }
            }
        }
        (scale, -min)
    }

    /// [`Self::run`] on 8 groups at once, group `g` in lane `g` of AVX registers. Every lane
    /// performs its group's operations in ggml's order (branches become blends), so the results
    /// are bit-identical, while the 8 serial chains of additions overlap.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run8_avx2(&self, x: &[f32], weights: &[f32], l: &mut [u8]) -> ([f32; 8], [f32; 8]) {
        use std::arch::x86_64::*;
        let n = x.len() / 8;
        // Element i of every group, transposed into one register.
        let mut xs = [_mm256_setzero_ps(); 32];
        let mut ws = [_mm256_setzero_ps(); 32];
        for i in 0..n {
            let xi: [f32; 8] = std::array::from_fn(|g| x[g * n + i]);
            let wi: [f32; 8] = std::array::from_fn(|g| weights[g * n + i]);
            xs[i] = _mm256_loadu_ps(xi.as_ptr());
            ws[i] = _mm256_loadu_ps(wi.as_ptr());
        }
        let (xs, ws) = (&xs[..n], &ws[..n]);
        let zero = _mm256_setzero_ps();
        let nmax_i = _mm256_set1_epi32(self.nmax);
        // clamp(nearest_int(iscale * (x - min)), 0, nmax), lane-wise.
        let quant = |iscale: __m256, x: __m256, min: __m256| -> __m256i {
            let v = _mm256_add_ps(_mm256_mul_ps(iscale, _mm256_sub_ps(x, min)), _mm256_set1_ps(12_582_912.0));
            let q = _mm256_sub_epi32(
                _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x007f_ffff)),
                _mm256_set1_epi32(0x0040_0000),
            );
            _mm256_max_epi32(_mm256_min_epi32(q, nmax_i), _mm256_setzero_si256())
        };
        let sign = _mm256_set1_ps(-0.0);
        let error_term =
            |diff: __m256| if self.use_mad { _mm256_andnot_ps(sign, diff) } else { _mm256_mul_ps(diff, diff) };

        let (mut min, mut max) = (xs[0], xs[0]);
        let mut sum_w = ws[0];
        let mut sum_x = _mm256_mul_ps(sum_w, xs[0]);
        for i in 1..n {
            // minps/maxps pick the first operand exactly when ggml's `x < min` / `x > max` holds.
            min = _mm256_min_ps(xs[i], min);
            max = _mm256_max_ps(xs[i], max);
            sum_w = _mm256_add_ps(sum_w, ws[i]);
            sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(ws[i], xs[i]));
        }
        min = _mm256_blendv_ps(min, zero, _mm256_cmp_ps::<_CMP_GT_OQ>(min, zero));
        // Groups with max == min quantize to all zeros; their lanes compute garbage until then.
        let flat = _mm256_cmp_ps::<_CMP_EQ_OQ>(max, min);
        let mut iscale = _mm256_div_ps(_mm256_set1_ps(self.nmax as f32), _mm256_sub_ps(max, min));
        let mut scale = _mm256_div_ps(_mm256_set1_ps(1.0), iscale);
        let mut best_error = zero;
        for i in 0..n {
            let q = _mm256_cvtepi32_ps(quant(iscale, xs[i], min));
            let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, q), min), xs[i]);
            best_error = _mm256_add_ps(best_error, _mm256_mul_ps(ws[i], error_term(diff)));
        }
        // The quants are recomputed at the end from the (iscale, min) that produced them.
        let (mut best_iscale, mut best_min) = (iscale, min);
        let mut laux = [zero; 32];
        for is in 0..if self.nstep < 1 { 0 } else { self.nstep + 1 } {
            let c = self.rmin + self.rdelta * is as f32 + self.nmax as f32;
            iscale = _mm256_div_ps(_mm256_set1_ps(c), _mm256_sub_ps(max, min));
            let (mut sum_l, mut sum_l2, mut sum_xl) = (zero, zero, zero);
            for i in 0..n {
                let q = _mm256_cvtepi32_ps(quant(iscale, xs[i], min));
                laux[i] = q;
                let wq = _mm256_mul_ps(ws[i], q);
                sum_l = _mm256_add_ps(sum_l, wq);
                sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wq, q));
                sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wq, xs[i]));
            }
            let d = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
            let this_scale = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), d);
            let this_min = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), d);
            let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(this_min, zero);
            let this_min = _mm256_blendv_ps(this_min, zero, positive);
            let this_scale = _mm256_blendv_ps(this_scale, _mm256_div_ps(sum_xl, sum_l2), positive);
            let mut cur_error = zero;
            for i in 0..n {
                let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(this_scale, laux[i]), this_min), xs[i]);
                cur_error = _mm256_add_ps(cur_error, _mm256_mul_ps(ws[i], error_term(diff)));
            }
            let better = _mm256_andnot_ps(
                flat,
                _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(d, zero), _mm256_cmp_ps::<_CMP_LT_OQ>(cur_error, best_error)),
            );
            best_error = _mm256_blendv_ps(best_error, cur_error, better);
            scale = _mm256_blendv_ps(scale, this_scale, better);
            best_iscale = _mm256_blendv_ps(best_iscale, iscale, better);
            best_min = _mm256_blendv_ps(best_min, min, better);
            min = _mm256_blendv_ps(min, this_min, better);
        }
        for i in 0..n {
            let q = _mm256_andnot_si256(_mm256_castps_si256(flat), quant(best_iscale, xs[i], best_min));
            let mut qi = [0i32; 8];
            _mm256_storeu_si256(qi.as_mut_ptr().cast(), q);
            for g in 0..8 {
                l[g * n + i] = qi[g] as u8;
            }
        }
        let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
        _mm256_storeu_ps(scales.as_mut_ptr(), _mm256_andnot_ps(flat, scale));
        _mm256_storeu_ps(mins.as_mut_ptr(), _mm256_xor_ps(min, sign));
        (scales, mins)
    }
}

/// ggml's `make_qx_quants` with `rmse_type == 1` and no importance weights (the only form the
/// reference quantizers use): symmetric quants `l` in `-nmax..nmax` stored as `l + nmax`,
/// weighted by `x^2`, trying 18 inverse scales around `-nmax / max`. Returns the scale.
pub(super) fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    // Candidate 0 is ggml's first pass; candidates 1..19 are `is = -9..=-1, 1..=9`. Unlike
    // make_qkx2_quants, a candidate here depends only on `max`, never on an earlier winner, so
    // all are summed side by side (each in ggml's order, in its own lane) and then picked in
    // ggml's order; the padding lane repeats candidate 0 and is never picked.
    const N_CAND: usize = 19;
    const PADDED: usize = 20;
    let mut iscale = [0.0f32; PADDED];
    iscale[0] = -(nmax as f32) / max;
    let mut c = 1;
    for is in -9i32..=9 {
        if is != 0 {
            iscale[c] = -(nmax as f32 + 0.1 * is as f32) / max;
            c += 1;
        }
    }
    iscale[PADDED - 1] = iscale[0];
    let mut sumlx = [0.0f32; PADDED];
    let mut suml2 = [0.0f32; PADDED];
    for &xi in x {
        let w = xi * xi;
        for k in 0..PADDED {
            let q = nearest_int(iscale[k] * xi).clamp(-nmax, nmax - 1) as f32;
            sumlx[k] += w * xi * q;
            suml2[k] += w * q * q;
        }
    }
    let mut scale = if suml2[0] != 0.0 { sumlx[0] / suml2[0] } else { 0.0 };
    let mut best = scale * sumlx[0];
    let mut chosen = 0;
    for k in 1..N_CAND {
        if suml2[k] > 0.0 && sumlx[k] * sumlx[k] > best * suml2[k] {
            scale = sumlx[k] / suml2[k];
            best = scale * sumlx[k];
            chosen = k;
        }
    }
    for (o, &xi) in l_out.iter_mut().zip(x) {
        *o = (nmax + nearest_int(iscale[chosen] * xi).clamp(-nmax, nmax - 1)) as i8;
    }
    scale
}

/// ggml's `make_q3_quants` with `do_rmse`: symmetric quants `l` in `-nmax..nmax` stored as
/// `l + nmax`, refined by up to five passes of single-weight moves that lower the `x^2`-weighted
/// error. Returns the scale.
pub(super) fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    debug_assert!(x.len() == 16 && l_out.len() == 16);
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let x = &x[..16];
    let mut l = [0i32; 16];
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..16 {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = q;
        let w = x[i] * x[i];
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..16 {
            let w = x[i] * x[i];
            let mut slx = sumlx - w * x[i] * l[i] as f32;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * l[i] as f32 * l[i] as f32;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l[i] {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for (o, &q) in l_out.iter_mut().zip(&l) {
        *o = (q + nmax) as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The AVX2 search must reproduce the one-group-at-a-time search bit for bit, flat and
    /// all-zero groups included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_search_matches_scalar() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let searches = [
            (16, Qkx2Search { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true }),
            (32, Qkx2Search { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false }),
            (32, Qkx2Search { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false }),
        ];
        for (n, search) in searches {
            for round in 0..300 {
                let mut x: Vec<f32> =
                    (0..8 * n).map(|_| rng.gen_range(-1.0f32..1.0) * 10f32.powi(round % 7 - 3)).collect();
                match round % 5 {
                    0 => x[..n].fill(0.0),
                    1 => x[3 * n..4 * n].fill(-0.25),
                    2 => x[5 * n..6 * n].iter_mut().for_each(|v| *v = v.abs() + 1.0),
                    _ => {}
                }
                let weights: Vec<f32> = x.iter().map(|v| 0.1 + v.abs()).collect();
                let (mut l_ref, mut l_avx) = (vec![0u8; 8 * n], vec![0u8; 8 * n]);
                let (s_ref, m_ref) = search.run8_scalar(&x, &weights, &mut l_ref);
                // SAFETY: AVX2 was detected above.
                let (s_avx, m_avx) = unsafe { search.run8_avx2(&x, &weights, &mut l_avx) };
                assert_eq!(l_ref, l_avx, "nmax {} round {round}", search.nmax);
                assert_eq!(s_ref.map(f32::to_bits), s_avx.map(f32::to_bits), "nmax {} round {round}", search.nmax);
                assert_eq!(m_ref.map(f32::to_bits), m_avx.map(f32::to_bits), "nmax {} round {round}", search.nmax);
            }
        }
    }
}
