//! The AVX2 (and AVX-512 VNNI) kernels over [`super::packed`] weights: the register tile of
//! [`super::x86`]'s 32-weight block kernel, four rows by up to three tokens, with the four rows'
//! scales converted and multiplied as one vector. Per output, the same operations in the same
//! order as the unpacked tile, so the same bits.

use std::arch::x86_64::*;
use std::cell::RefCell;

use wasm_chord_core::TensorType;

use super::for_each_tile;
use super::packed::{act_scales, act_scales_len, PackedFn, GROUP, Q5_0_EXPANDED_BLOCK, Q5_0_GROUP_BLOCK};
use super::x86::{f16_at, hsum, iq4nl_table, row_ptrs, Iq4NlW, Legacy, Q4_0W, Q4_1W, Q5_0W, Q5_1W, Q8_0W};

/// The AVX2 packed matmul for weights of type `ty`, if this CPU has AVX2, FMA and F16C.
pub fn packed_fn(ty: TensorType) -> Option<PackedFn> {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")) {
        return None;
    }
    use TensorType::*;
    Some(match ty {
        Q4_0 => matmul_avx2_nibbles::<Q4_0W>,
        Q4_1 => matmul_avx2_nibbles::<Q4_1W>,
        Q5_0 => matmul_q5_0,
        Q5_1 => matmul_avx2::<Q5_1W>,
        Q8_0 => matmul_avx2::<Q8_0W>,
        IQ4_NL => matmul_avx2_nibbles::<Iq4NlW>,
        _ => return None,
    })
}

/// The AVX-512 VNNI packed matmul, where [`super::x86::matmul_fn_avx512_vnni`] has one.
pub fn packed_fn_vnni(ty: TensorType) -> Option<PackedFn> {
    super::x86::matmul_fn_avx512_vnni(ty)?;
    use TensorType::*;
    Some(match ty {
        Q4_0 => matmul_pairs::<Q4_0W, true>,
        Q4_1 => matmul_pairs::<Q4_1W, true>,
        Q5_0 => matmul::<Q5_0W, true>,
        Q5_1 => matmul::<Q5_1W, true>,
        Q8_0 => matmul::<Q8_0W, true>,
        IQ4_NL => matmul_pairs::<Iq4NlW, true>,
        _ => return None,
    })
}

fn matmul<W: Legacy, const VNNI: bool>(k: usize, w: &[u8], n_rows: usize, a: &[u8], _sc: &[f32], n_tok: usize, out: &mut [f32]) {
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
                    let (g, a, o) = (wp.add(r0 / GROUP * gs), ap.add(t0 * as_), op.add(t0 * n_rows + r0));
                    if nt == $T {
                        $tile::<W, $T>(nb, g, nr, a, as_, nt, o, n_rows)
                    } else {
                        for t in 0..nt {
                            $tile::<W, 1>(nb, g, nr, a.add(t * as_), as_, 1, o.add(t * n_rows), n_rows)
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

/// Stores the `nr x nt` corner of a tile's sums token by token (`out[t · os + r]`): the packed
/// kernels write `[n_tok, n_rows]`, the layout of the matmul's output, so a caller copies whole
/// runs of rows instead of transposing.
#[inline(always)]
unsafe fn store_by_token<const R: usize, const T: usize>(sums: [[f32; T]; R], nr: usize, nt: usize, out: *mut f32, os: usize) {
    for (r, row) in sums.iter().enumerate().take(nr) {
        for (t, &v) in row.iter().enumerate().take(nt) {
            *out.add(t * os + r) = v;
        }
    }
}

/// AVX2: one token (decoding) through the one-token tile, batches through [`gemm`].
fn matmul_avx2<W: Legacy>(k: usize, w: &[u8], n_rows: usize, a: &[u8], sc: &[f32], n_tok: usize, out: &mut [f32]) {
    if n_tok < 2 {
        matmul::<W, false>(k, w, n_rows, a, sc, n_tok, out)
    } else {
        gemm::<W>(k, w, n_rows, a, sc, n_tok, out)
    }
}

/// [`matmul_avx2`] for the nibble types, whose single tokens use the two-rows-per-register tile.
fn matmul_avx2_nibbles<W: Nibbles>(k: usize, w: &[u8], n_rows: usize, a: &[u8], sc: &[f32], n_tok: usize, out: &mut [f32]) {
    if n_tok < 2 {
        matmul_pairs::<W, false>(k, w, n_rows, a, sc, n_tok, out)
    } else {
        gemm::<W>(k, w, n_rows, a, sc, n_tok, out)
    }
}

/// Q5_0 expanded for a batch ([`super::packed::expand_q5_0`]): the stored values `q + 16` as
/// unsigned bytes after the group's four scales, a packed Q8_0 block otherwise.
struct Q5_0X;
impl Legacy for Q5_0X {
    const BYTES: usize = 34;
    const ACT_BYTES: usize = 34;
    const SIGNED: bool = false;
    const TYPE: TensorType = TensorType::Q5_0;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p.add(2) as *const __m256i)
    }
}

/// Whether `W` is [`Q5_0X`]: unsigned bytes with an offset of 16 and no `m`.
const fn offset16<W: Legacy>() -> bool {
    matches!(W::TYPE, TensorType::Q5_0) && !W::SIGNED
}

/// Q5_0: one token through the one-token tile over the packed Q5_0 blocks; a batch expands
/// the groups once ([`Q5_0X`]) and runs [`gemm`] over them.
fn matmul_q5_0(k: usize, w: &[u8], n_rows: usize, a: &[u8], sc: &[f32], n_tok: usize, out: &mut [f32]) {
    if n_tok < 2 {
        return matmul::<Q5_0W, false>(k, w, n_rows, a, sc, n_tok, out);
    }
    let len = w.len() / Q5_0_GROUP_BLOCK * Q5_0_EXPANDED_BLOCK;
    let mut run = |buf: &mut [u8]| {
        expand_q5_0_avx2(w, buf);
        gemm::<Q5_0X>(k, buf, n_rows, a, sc, n_tok, out)
    };
    EXPANDED.with(|c| match c.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            run(&mut buf[..len])
        }
        Err(_) => run(&mut vec![0; len]),
    })
}

thread_local! {
    /// Activation scales converted here when the caller passed none.
    static ACT_SCALES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A task's packed Q5_0 groups expanded for a batch.
    static EXPANDED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Tokens per [`gemm_tile`].
const GEMM_T: usize = 2;

/// The batched AVX2 walk: the activations' scales come converted to f32 ([`act_scales`], once
/// per product rather than once per tile), the `m · s_y` sums of Q4_1/Q5_1 run in their own
/// pass ([`add_mins`]) so the tile keeps only its accumulators in registers, and each group of
/// four rows meets [`GEMM_T`] tokens. Per output the operations of [`tile_body`]: `acc +=
/// f32(Σ x·y) · (d_x · d_y)` in eight lanes per block, then `hsum(acc) + Σ m · s_y`, so the
/// same bits.
fn gemm<W: Legacy>(k: usize, w: &[u8], n_rows: usize, a: &[u8], sc: &[f32], n_tok: usize, out: &mut [f32]) {
    if n_rows == 0 || n_tok == 0 {
        return;
    }
    let nb = k / 32;
    let (gs, as_) = (GROUP * nb * W::BYTES, nb * W::ACT_BYTES);
    let ss = act_scales_len(W::TYPE, k);
    let mut run = |sc: &[f32]| {
        let (wp, ap, op, sp) = (w.as_ptr(), a.as_ptr(), out.as_mut_ptr(), sc.as_ptr());
        // Tokens in chunks whose activations stay in L2 while every group passes over them.
        let chunk = ((128 << 10) / as_.max(1)).max(GEMM_T) / GEMM_T * GEMM_T;
        for t0 in (0..n_tok).step_by(chunk) {
            let t1 = n_tok.min(t0 + chunk);
            for r0 in (0..n_rows).step_by(GROUP) {
                let nr = GROUP.min(n_rows - r0);
                // SAFETY: the tiles stay inside the lengths `Kernels::matmul_packed` checked
                // (whole groups, the last one padded) and the `ss * n_tok` scales; this entry
                // exists only where the CPU has AVX2, FMA and F16C.
                unsafe {
                    let g = wp.add(r0 / GROUP * gs);
                    let mut t = t0;
                    while t < t1 {
                        let (a, o, d) = (ap.add(t * as_), op.add(t * n_rows + r0), sp.add(t * ss));
                        if t1 - t >= GEMM_T {
                            gemm_tile::<W, GEMM_T>(nb, g, nr, a, as_, d, ss, GEMM_T, o, n_rows);
                            t += GEMM_T;
                        } else {
                            gemm_tile::<W, 1>(nb, g, nr, a, as_, d, ss, 1, o, n_rows);
                            t += 1;
                        }
                    }
                    // The mins of two groups at once (eight rows fill a register).
                    let pair0 = r0 - r0 % (2 * GROUP);
                    if !W::SIGNED && !offset16::<W>() && (r0 != pair0 || r0 + GROUP >= n_rows) {
                        let (g, nr) = (wp.add(pair0 / GROUP * gs), (2 * GROUP).min(n_rows - pair0));
                        add_mins::<W>(nb, g, gs, nr, sp.add(t0 * ss + nb), ss, t1 - t0, op.add(t0 * n_rows + pair0), n_rows)
                    }
                }
            }
        }
    };
    if sc.len() == ss * n_tok {
        return run(sc);
    }
    let fill = |buf: &mut [f32]| {
        for (row, dst) in a.chunks_exact(as_).zip(buf.chunks_exact_mut(ss)) {
            act_scales(W::TYPE, row, dst);
        }
    };
    ACT_SCALES.with(|c| match c.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < ss * n_tok {
                buf.resize(ss * n_tok, 0.0);
            }
            fill(&mut buf[..ss * n_tok]);
            run(&buf[..ss * n_tok]);
        }
        Err(_) => {
            let mut buf = vec![0.0; ss * n_tok];
            fill(&mut buf);
            run(&buf);
        }
    });
}

/// One group of four rows by `T` tokens of [`gemm`]; token `t`'s `nb` block scales `d_y` are
/// at `d + t · ss`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_tile<W: Legacy, const T: usize>(
    nb: usize,
    g: *const u8,
    nr: usize,
    a: *const u8,
    as_: usize,
    d: *const f32,
    ss: usize,
    nt: usize,
    out: *mut f32,
    os: usize,
) {
    let offset = offset16::<W>();
    let sb = if W::SIGNED || offset { 2 } else { 4 };
    let qb = W::BYTES - sb;
    let ar: [*const u8; T] = row_ptrs(a, as_, nt);
    let dr: [*const u8; T] = row_ptrs(d as *const u8, 4 * ss, nt);
    let mut acc = [[_mm256_setzero_ps(); T]; GROUP];
    let ones = _mm256_set1_epi16(1);
    for b in 0..nb {
        let p = g.add(b * GROUP * W::BYTES);
        let d4 = _mm_cvtph_ps(_mm_loadl_epi64(p as *const __m128i));
        let mut scale = [[0.0f32; GROUP]; T];
        for t in 0..T {
            let dy = *(dr[t] as *const f32).add(b);
            _mm_storeu_ps(scale[t].as_mut_ptr(), _mm_mul_ps(d4, _mm_set1_ps(dy)));
        }
        let q = p.add(GROUP * sb);
        for (r, acc) in acc.iter_mut().enumerate() {
            // `quants` reads past a block's scales; the packed quants start right here.
            let x = W::quants(q.add(r * qb).sub(sb));
            let ux = if W::SIGNED { _mm256_sign_epi8(x, x) } else { x };
            for t in 0..T {
                let y = _mm256_loadu_si256(ar[t].add((b + 1) * W::ACT_BYTES - 32) as *const __m256i);
                let yt = if W::SIGNED { _mm256_sign_epi8(y, x) } else { y };
                let p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(ux, yt), ones);
                let mut v = _mm256_cvtepi32_ps(p32);
                if offset {
                    // The four products of each lane less `16 · Σ y` (whole numbers below
                    // 2^24, so the f32 difference is the exact signed sum).
                    v = _mm256_sub_ps(v, _mm256_loadu_ps((dr[t] as *const f32).add(nb + 8 * b)));
                }
                acc[t] = _mm256_fmadd_ps(v, broadcast_from_memory(&scale[t][r]), acc[t]);
            }
        }
    }
    if T == 2 && nr == GROUP && nt == 2 {
        // Lanes 0-3 token 0's four rows, 4-7 token 1's.
        let sums = hsum_8(std::array::from_fn(|i| acc[i / 2][i % 2]));
        _mm_storeu_ps(out, _mm256_castps256_ps128(sums));
        _mm_storeu_ps(out.add(os), _mm256_extractf128_ps(sums, 1));
        return;
    }
    let sums: [[f32; T]; GROUP] = std::array::from_fn(|r| std::array::from_fn(|t| hsum(acc[r][t])));
    store_by_token(sums, nr, nt, out, os);
}

/// [`hsum`] of eight vectors at once, the same adds of the same lanes in the same order:
/// result lanes `[v0 v2 v4 v6 | v1 v3 v5 v7]` (a few shuffles for all of them).
#[inline(always)]
unsafe fn hsum_8(v: [__m256; 8]) -> __m256 {
    // Each vector's halves added (`lo + hi`), two vectors per register: [a | b].
    let h: [__m256; 4] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31))
    });
    // Then lanes 0 + 2 and 1 + 3 of each half: [a01 c01 | b01 d01] for the pair (ab, cd).
    let q: [__m256; 2] = std::array::from_fn(|i| {
        let (x, y) = (h[2 * i], h[2 * i + 1]);
        _mm256_add_ps(_mm256_shuffle_ps(x, y, 0b01_00_01_00), _mm256_shuffle_ps(x, y, 0b11_10_11_10))
    });
    // Then lane 0 + lane 1 of each pair.
    _mm256_add_ps(_mm256_shuffle_ps(q[0], q[1], 0b10_00_10_00), _mm256_shuffle_ps(q[0], q[1], 0b11_01_11_01))
}

/// `x` in all eight lanes, loaded from memory: `vbroadcastss` from memory is a plain load on
/// current cores, where the compiler, left alone, forwards the stored value and broadcasts it
/// from a register with a shuffle or two (ALU work that competes with the dot products).
#[inline]
#[target_feature(enable = "avx")]
unsafe fn broadcast_from_memory(x: &f32) -> __m256 {
    let v: __m256;
    std::arch::asm!("vbroadcastss {v}, dword ptr [{p}]", v = out(ymm_reg) v, p = in(reg) x as *const f32, options(pure, readonly, nostack, preserves_flags));
    v
}

/// Adds `Σ_b m · s_y` (summed in block order) to `nt` tokens' outputs of up to two groups of
/// rows (`nr <= 8`, the second group `gs` bytes after the first), eight rows per register;
/// token `t`'s `nb` block sums `s_y` are at `s + t · ss`. Four tokens at a time, so four
/// independent running sums hide the adds' latency.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn add_mins<W: Legacy>(nb: usize, g: *const u8, gs: usize, nr: usize, s: *const f32, ss: usize, nt: usize, out: *mut f32, os: usize) {
    const N: usize = 4;
    let g1 = if nr > GROUP { g.add(gs) } else { g };
    for t0 in (0..nt).step_by(N) {
        let n = N.min(nt - t0);
        let st: [*const u8; N] = row_ptrs(s.add(t0 * ss) as *const u8, 4 * ss, n);
        let mut accm = [_mm256_setzero_ps(); N];
        for b in 0..nb {
            let off = b * GROUP * W::BYTES + 2 * GROUP;
            let m0 = _mm_cvtph_ps(_mm_loadl_epi64(g.add(off) as *const __m128i));
            let m1 = _mm_cvtph_ps(_mm_loadl_epi64(g1.add(off) as *const __m128i));
            let m8 = _mm256_set_m128(m1, m0);
            for (acc, st) in accm.iter_mut().zip(st) {
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(m8, _mm256_broadcast_ss(&*(st as *const f32).add(b))));
            }
        }
        for (t, acc) in accm.iter().enumerate().take(n) {
            let mut m = [0.0f32; 2 * GROUP];
            _mm256_storeu_ps(m.as_mut_ptr(), *acc);
            for (r, m) in m.iter().enumerate().take(nr) {
                *out.add((t0 + t) * os + r) += m;
            }
        }
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
    store_by_token(sums, nr, nt, out, os);
}

// ---------------------------------------------------------------------------------------------
// Nibble types, two rows per register

/// The 4-bit block types, whose packed quants of rows `2i` and `2i + 1` form one 32-byte run:
/// one load and mask gives both rows' low nibbles, one shift and mask their high nibbles.
trait Nibbles: Legacy {
    /// Weight values (i8, or u8 for the unsigned types) from nibbles 0..16 in each byte.
    unsafe fn values(n: __m256i) -> __m256i;
}

impl Nibbles for Q4_0W {
    #[inline(always)]
    unsafe fn values(n: __m256i) -> __m256i {
        _mm256_sub_epi8(n, _mm256_set1_epi8(8))
    }
}

impl Nibbles for Q4_1W {
    #[inline(always)]
    unsafe fn values(n: __m256i) -> __m256i {
        n
    }
}

impl Nibbles for Iq4NlW {
    #[inline(always)]
    unsafe fn values(n: __m256i) -> __m256i {
        _mm256_shuffle_epi8(iq4nl_table(), n)
    }
}

fn matmul_pairs<W: Nibbles, const VNNI: bool>(k: usize, w: &[u8], n_rows: usize, a: &[u8], _sc: &[f32], n_tok: usize, out: &mut [f32]) {
    if n_rows == 0 || n_tok == 0 {
        return;
    }
    let nb = k / 32;
    let (gs, as_) = (GROUP * nb * W::BYTES, nb * W::ACT_BYTES);
    let (wp, ap, op) = (w.as_ptr(), a.as_ptr(), out.as_mut_ptr());
    // Token tiles use the one-row-per-register tile (two rows per register need twice the
    // accumulators, more than AVX2 has registers for); single tokens use the pairs.
    macro_rules! walk {
        ($tile:ident, $pairs:ident, $T:literal) => {
            for_each_tile::<GROUP, $T>(n_rows, n_tok, as_, |r0, nr, t0, nt| {
                // SAFETY: as in `matmul`.
                unsafe {
                    let (g, a, o) = (wp.add(r0 / GROUP * gs), ap.add(t0 * as_), op.add(t0 * n_rows + r0));
                    if nt == $T {
                        $tile::<W, $T>(nb, g, nr, a, as_, nt, o, n_rows)
                    } else {
                        for t in 0..nt {
                            $pairs::<W, 1>(nb, g, nr, a.add(t * as_), as_, 1, o.add(t * n_rows), n_rows)
                        }
                    }
                }
            })
        };
    }
    if VNNI {
        walk!(tile_vnni, pairs_vnni, 3)
    } else {
        walk!(tile_avx2, pairs_avx2, 2)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn pairs_avx2<W: Nibbles, const T: usize>(nb: usize, g: *const u8, nr: usize, a: *const u8, as_: usize, nt: usize, out: *mut f32, os: usize) {
    pairs_body::<W, T, false>(nb, g, nr, a, as_, nt, out, os)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn pairs_vnni<W: Nibbles, const T: usize>(nb: usize, g: *const u8, nr: usize, a: *const u8, as_: usize, nt: usize, out: *mut f32, os: usize) {
    pairs_body::<W, T, true>(nb, g, nr, a, as_, nt, out, os)
}

/// [`tile_body`] for the nibble types with each register holding half of each of two rows.
///
/// The unpacked kernel dots one row's 32 quants `[q0..16 | q16..32]` with `[y0..16 | y16..32]`
/// into eight i32 lanes, lanes 0-3 from `q0..16` and 4-7 from `q16..32`. Here `lo = [qA0..16 |
/// qB0..16]` meets `[y0..16 | y0..16]` and `hi = [qA16..32 | qB16..32]` meets `[y16..32 |
/// y16..32]`: the same groups of four products, so `lo`'s lanes 0-3 are row A's lanes 0-3,
/// `hi`'s lanes 0-3 its lanes 4-7, and the B halves likewise. Each lane is accumulated with its
/// own row's scale exactly as before; the halves are put back together before the sum.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pairs_body<W: Nibbles, const T: usize, const VNNI: bool>(
    nb: usize,
    g: *const u8,
    nr: usize,
    a: *const u8,
    as_: usize,
    nt: usize,
    out: *mut f32,
    os: usize,
) {
    const PAIRS: usize = GROUP / 2;
    let sb = if W::SIGNED { 2 } else { 4 };
    let ar: [*const u8; T] = row_ptrs(a, as_, nt);
    // [pair][token]: lanes 0-3 row 2p, 4-7 row 2p + 1.
    let mut acc_lo = [[_mm256_setzero_ps(); T]; PAIRS];
    let mut acc_hi = [[_mm256_setzero_ps(); T]; PAIRS];
    let mut accm = [_mm_setzero_ps(); T];
    let ones = _mm256_set1_epi16(1);
    let mask = _mm256_set1_epi8(0x0F);
    let spread: [__m256i; PAIRS] = [_mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3)];
    for b in 0..nb {
        let p = g.add(b * GROUP * W::BYTES);
        let d4 = _mm256_castps128_ps256(_mm_cvtph_ps(_mm_loadl_epi64(p as *const __m128i)));
        if !W::SIGNED {
            let m4 = _mm_cvtph_ps(_mm_loadl_epi64(p.add(2 * GROUP) as *const __m128i));
            for t in 0..T {
                let sy = f16_at(ar[t].add(b * W::ACT_BYTES + 2));
                accm[t] = _mm_add_ps(accm[t], _mm_mul_ps(m4, _mm_set1_ps(sy)));
            }
        }
        let q = p.add(GROUP * sb);
        for pr in 0..PAIRS {
            let v = _mm256_loadu_si256(q.add(32 * pr) as *const __m256i);
            let lo = W::values(_mm256_and_si256(v, mask));
            let hi = W::values(_mm256_and_si256(_mm256_srli_epi16(v, 4), mask));
            let (ulo, uhi) = if W::SIGNED { (_mm256_sign_epi8(lo, lo), _mm256_sign_epi8(hi, hi)) } else { (lo, hi) };
            let dpair = _mm256_permutevar8x32_ps(d4, spread[pr]);
            for t in 0..T {
                let pa = ar[t].add(b * W::ACT_BYTES);
                let ys = pa.add(W::ACT_BYTES - 32);
                let ylo = _mm256_broadcastsi128_si256(_mm_loadu_si128(ys as *const __m128i));
                let yhi = _mm256_broadcastsi128_si256(_mm_loadu_si128(ys.add(16) as *const __m128i));
                let (ylo, yhi) = if W::SIGNED { (_mm256_sign_epi8(ylo, lo), _mm256_sign_epi8(yhi, hi)) } else { (ylo, yhi) };
                let (plo, phi) = if VNNI {
                    (_mm256_dpbusd_epi32(_mm256_setzero_si256(), ulo, ylo), _mm256_dpbusd_epi32(_mm256_setzero_si256(), uhi, yhi))
                } else {
                    (_mm256_madd_epi16(_mm256_maddubs_epi16(ulo, ylo), ones), _mm256_madd_epi16(_mm256_maddubs_epi16(uhi, yhi), ones))
                };
                let scale = _mm256_mul_ps(dpair, _mm256_set1_ps(f16_at(pa)));
                acc_lo[pr][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(plo), scale, acc_lo[pr][t]);
                acc_hi[pr][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(phi), scale, acc_hi[pr][t]);
            }
        }
    }
    let mut m = [[0.0f32; GROUP]; T];
    for t in 0..T {
        _mm_storeu_ps(m[t].as_mut_ptr(), accm[t]);
    }
    let sums: [[f32; T]; GROUP] = std::array::from_fn(|r| {
        std::array::from_fn(|t| {
            let (l, h) = (acc_lo[r / 2][t], acc_hi[r / 2][t]);
            let acc = if r % 2 == 0 { _mm256_permute2f128_ps(l, h, 0x20) } else { _mm256_permute2f128_ps(l, h, 0x31) };
            hsum(acc) + m[t][r]
        })
    });
    store_by_token(sums, nr, nt, out, os);
}

/// [`super::packed::expand_q5_0`] with AVX2: each row's 32 values built as the Q5_0 kernel
/// builds them, plus 16.
pub fn expand_q5_0_avx2(src: &[u8], dst: &mut [u8]) -> bool {
    if !is_x86_feature_detected!("avx2") {
        return false;
    }
    #[target_feature(enable = "avx2")]
    unsafe fn run(src: &[u8], dst: &mut [u8]) {
        for (s, d) in src.chunks_exact(Q5_0_GROUP_BLOCK).zip(dst.chunks_exact_mut(Q5_0_EXPANDED_BLOCK)) {
            d[..2 * GROUP].copy_from_slice(&s[..2 * GROUP]);
            for r in 0..GROUP {
                // `quants` reads a block from its scale on: here the row's qh sits 8 + 20r bytes
                // in, so the block "starts" two bytes before it.
                let x = _mm256_add_epi8(Q5_0W::quants(s.as_ptr().add(2 * GROUP + 20 * r - 2)), _mm256_set1_epi8(16));
                _mm256_storeu_si256(d.as_mut_ptr().add(2 * GROUP + 32 * r) as *mut __m256i, x);
            }
        }
    }
    // SAFETY: AVX2 was just checked; every read and write stays inside one chunk (the row's
    // 20 bytes start at least 2 bytes in, its 32 values end at the chunk's end).
    unsafe { run(src, dst) };
    true
}
