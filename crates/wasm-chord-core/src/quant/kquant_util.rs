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
/// tries `nstep + 1` inverse scales `(rmin + rdelta * is + nmax) / (max - min)` and keeps the
/// one with the least weighted error (absolute if `use_mad`, else squared).
#[derive(Clone, Copy)]
pub(super) struct Qkx2Search {
    pub nmax: i32,
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: usize,
    pub use_mad: bool,
}

/// Candidates evaluated side by side; each has its own accumulators, summed in ggml's order.
const LANES: usize = 8;

impl Qkx2Search {
    /// Fills `l` (same length as `x`, at most 32) and returns `(scale, the_min)`, where the
    /// group dequantizes as `scale * l - the_min`.
    ///
    /// ggml evaluates the candidate scales one after another, each a serial chain of additions.
    /// Here [`LANES`] candidates run side by side, each summing in exactly ggml's order, so the
    /// results are bit-identical while the chains overlap; winners are then taken in ggml's
    /// order with ggml's strict `<`.
    pub fn run(&self, x: &[f32], weights: &[f32], l: &mut [u8]) -> (f32, f32) {
        let n = x.len();
        debug_assert!(n <= 32 && weights.len() == n && l.len() == n && self.nstep < 64);
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
        let iscale = nmax as f32 / (max - min);
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

        // ggml tries the candidates in order, and a winner's min shifts every later candidate
        // (through `x - min` and `max - min`). So evaluate LANES candidates at a time against
        // the current min, accept winners in order, and start over after the first winner
        // that changed the min: the lanes past it were computed against a stale min.
        let n_cand = self.nstep + 1;
        let mut best: Option<(f32, f32)> = None; // (iscale, min) that produced the best quants
        let mut next = 0;
        while next < n_cand {
            let base_min = min;
            let isc: [f32; LANES] =
                std::array::from_fn(|k| (self.rmin + self.rdelta * (next + k) as f32 + nmax as f32) / (max - base_min));
            let mut laux = [[0.0f32; LANES]; 32];
            let mut sum_l = [0.0f32; LANES];
            let mut sum_l2 = [0.0f32; LANES];
            let mut sum_xl = [0.0f32; LANES];
            for i in 0..n {
                let (xi, w) = (x[i], weights[i]);
                for k in 0..LANES {
                    let q = nearest_int(isc[k] * (xi - base_min)).clamp(0, nmax) as f32;
                    laux[i][k] = q;
                    sum_l[k] += w * q;
                    sum_l2[k] += w * q * q;
                    sum_xl[k] += w * q * xi;
                }
            }
            let mut this_scale = [0.0f32; LANES];
            let mut this_min = [0.0f32; LANES];
            let mut d = [0.0f32; LANES];
            for k in 0..LANES {
                d[k] = sum_w * sum_l2[k] - sum_l[k] * sum_l[k];
                this_scale[k] = (sum_w * sum_xl[k] - sum_x * sum_l[k]) / d[k];
                this_min[k] = (sum_l2[k] * sum_x - sum_l[k] * sum_xl[k]) / d[k];
                if this_min[k] > 0.0 {
                    this_min[k] = 0.0;
                    this_scale[k] = sum_xl[k] / sum_l2[k];
                }
            }
            let mut cur_error = [0.0f32; LANES];
            for i in 0..n {
                let (xi, w) = (x[i], weights[i]);
                for k in 0..LANES {
                    let diff = this_scale[k] * laux[i][k] + this_min[k] - xi;
                    let diff = if self.use_mad { diff.abs() } else { diff * diff };
                    cur_error[k] += w * diff;
                }
            }
            let mut restart = None;
            for k in 0..LANES.min(n_cand - next) {
                if d[k] > 0.0 && cur_error[k] < best_error {
                    best_error = cur_error[k];
                    scale = this_scale[k];
                    min = this_min[k];
                    best = Some((isc[k], base_min));
                    if min.to_bits() != base_min.to_bits() {
                        restart = Some(next + k + 1);
                        break;
                    }
                }
            }
            next = restart.unwrap_or(next + LANES);
        }
        if let Some((iscale, quant_min)) = best {
            for i in 0..n {
                l[i] = nearest_int(iscale * (x[i] - quant_min)).clamp(0, nmax) as u8;
            }
        }
        (scale, -min)
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
    // Candidate 0 is ggml's first pass; candidates 1..19 are `is = -9..=-1, 1..=9`. As in
    // `Qkx2Search::run`, each candidate's sums run in ggml's order in their own lane.
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
