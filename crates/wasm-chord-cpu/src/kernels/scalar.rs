//! Scalar reference kernels: the integer math of ggml's generic `ggml_vec_dot_*` in
//! `ggml-cpu/quants.c`, one block at a time. Every SIMD kernel is tested against these.

use half::{bf16, f16};
use wasm_chord_core::quant::*;
use wasm_chord_core::TensorType;

use super::act::BlockQ8_1;
use super::MatmulFn;

/// A weight type's dot product with one activation row (both whole rows of bytes).
pub(crate) trait RowDot {
    fn dot(w: &[u8], a: &[u8]) -> f32;
}

/// Every (weight row, activation row) pair through `D::dot`.
fn matmul<D: RowDot>(_k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]) {
    if n_rows == 0 || n_tok == 0 {
        return;
    }
    let (wr, ar) = (w.len() / n_rows, a.len() / n_tok);
    for (wrow, o) in w.chunks_exact(wr).zip(out.chunks_exact_mut(n_tok)) {
        for (arow, o) in a.chunks_exact(ar).zip(o.iter_mut()) {
            *o = D::dot(wrow, arow);
        }
    }
}

/// The scalar matmul for weights of type `ty` (none for Q8_K, which weights never use).
pub fn matmul_fn(ty: TensorType) -> Option<MatmulFn> {
    use TensorType::*;
    Some(match ty {
        F32 => matmul::<F32Dot>,
        F16 => matmul::<F16Dot>,
        BF16 => matmul::<Bf16Dot>,
        Q4_0 => matmul::<Q4_0Dot>,
        Q4_1 => matmul::<Q4_1Dot>,
        Q5_0 => matmul::<Q5_0Dot>,
        Q5_1 => matmul::<Q5_1Dot>,
        Q8_0 => matmul::<Q8_0Dot>,
        IQ4_NL => matmul::<Iq4NlDot>,
        Q2_K => matmul_k::<Q2KDot>,
        Q3_K => matmul_k::<Q3KDot>,
        Q4_K => matmul_k::<Q4KDot>,
        Q5_K => matmul_k::<Q5KDot>,
        Q6_K => matmul_k::<Q6KDot>,
        IQ4_XS => matmul_k::<Iq4XsDot>,
        Q8_K => return None,
    })
}

/// Pairs of (weight block, activation block) read from unaligned bytes.
fn pairs<'a, W: bytemuck::Pod, A: bytemuck::Pod>(w: &'a [u8], a: &'a [u8]) -> impl Iterator<Item = (W, A)> + 'a {
    w.chunks_exact(std::mem::size_of::<W>())
        .zip(a.chunks_exact(std::mem::size_of::<A>()))
        .map(|(w, a)| (bytemuck::pod_read_unaligned(w), bytemuck::pod_read_unaligned(a)))
}

fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

macro_rules! row_dot {
    ($name:ident, |$w:ident, $a:ident| $body:expr) => {
        pub(crate) struct $name;
        impl RowDot for $name {
            fn dot($w: &[u8], $a: &[u8]) -> f32 {
                $body
            }
        }
    };
}

// Float weights: products summed in f64, as ggml's `ggml_vec_dot_f16` sums in `ggml_float`.
row_dot!(F32Dot, |w, a| {
    let f = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64;
    w.chunks_exact(4).zip(a.chunks_exact(4)).map(|(x, y)| f(x) * f(y)).sum::<f64>() as f32
});
row_dot!(F16Dot, |w, a| {
    let f = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f64();
    w.chunks_exact(2).zip(a.chunks_exact(2)).map(|(x, y)| f(x) * f(y)).sum::<f64>() as f32
});
row_dot!(Bf16Dot, |w, a| {
    let f = |b: &[u8]| bf16::from_le_bytes([b[0], b[1]]).to_f64();
    w.chunks_exact(2).zip(a.chunks_exact(2)).map(|(x, y)| f(x) * f(y)).sum::<f64>() as f32
});

/// The 32 weights of a 4-bit block: low nibbles first, then high nibbles.
fn nibbles(qs: &[u8; 16]) -> [u8; 32] {
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = qs[j] & 0x0F;
        q[j + 16] = qs[j] >> 4;
    }
    q
}

/// A 5-bit block's 32 quants (0..32): nibbles plus bit `j` of `qh` as bit 4.
fn five_bits(qs: &[u8; 16], qh: [u8; 4]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = nibbles(qs);
    for (j, q) in q.iter_mut().enumerate() {
        *q |= (((qh >> j) & 1) << 4) as u8;
    }
    q
}

fn signed(q: [u8; 32], offset: i8) -> [i8; 32] {
    q.map(|v| v as i8 - offset)
}

row_dot!(Q4_0Dot, |w, a| pairs::<BlockQ4_0, BlockQ8_0>(w, a)
    .map(|(x, y)| dot_i8(&signed(nibbles(&x.qs), 8), &y.qs) as f32 * x.d.to_f32() * y.d.to_f32())
    .sum());
row_dot!(Q4_1Dot, |w, a| pairs::<BlockQ4_1, BlockQ8_1>(w, a)
    .map(|(x, y)| {
        let sumi = dot_i8(&signed(nibbles(&x.qs), 0), &y.qs);
        (x.d.to_f32() * y.d.to_f32()) * sumi as f32 + x.m.to_f32() * y.s.to_f32()
    })
    .sum());
row_dot!(Q5_0Dot, |w, a| pairs::<BlockQ5_0, BlockQ8_0>(w, a)
    .map(|(x, y)| (x.d.to_f32() * y.d.to_f32()) * dot_i8(&signed(five_bits(&x.qs, x.qh), 16), &y.qs) as f32)
    .sum());
row_dot!(Q5_1Dot, |w, a| pairs::<BlockQ5_1, BlockQ8_1>(w, a)
    .map(|(x, y)| {
        let sumi = dot_i8(&signed(five_bits(&x.qs, x.qh), 0), &y.qs);
        (x.d.to_f32() * y.d.to_f32()) * sumi as f32 + x.m.to_f32() * y.s.to_f32()
    })
    .sum());
row_dot!(Q8_0Dot, |w, a| pairs::<BlockQ8_0, BlockQ8_0>(w, a)
    .map(|(x, y)| dot_i8(&x.qs, &y.qs) as f32 * (x.d.to_f32() * y.d.to_f32()))
    .sum());
row_dot!(Iq4NlDot, |w, a| pairs::<BlockIQ4NL, BlockQ8_0>(w, a)
    .map(|(x, y)| {
        let q = nibbles(&x.qs).map(|v| KVALUES_IQ4NL[v as usize]);
        (y.d.to_f32() * x.d.to_f32()) * dot_i8(&q, &y.qs) as f32
    })
    .sum());

/// Q4_K/Q5_K's eight 6-bit scales and mins unpacked from their 12 bytes (ggml's `utmp` dance):
/// scale `j < 4` is the low 6 bits of byte `j`, min `j < 4` of byte `j + 4`; scale and min
/// `j + 4` take their low 4 bits from byte `j + 8` (low and high nibble) and their top 2 bits
/// from the top of bytes `j` and `j + 4`. Done four bytes at a time: the k-quant kernels call
/// this once per super-block and row, which bytewise costs as much as a fifth of a Q4_K dot.
#[inline(always)]
pub(crate) fn scales_mins_k4(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes([packed[4 * i], packed[4 * i + 1], packed[4 * i + 2], packed[4 * i + 3]]);
    let (a, b, c) = (word(0), word(1), word(2));
    let sc_hi = (c & LOW4) | (((a >> 6) & LOW2) << 4);
    let mn_hi = ((c >> 4) & LOW4) | (((b >> 6) & LOW2) << 4);
    let join = |lo: u32, hi: u32| {
        let (l, h) = (lo.to_le_bytes(), hi.to_le_bytes());
        [l[0], l[1], l[2], l[3], h[0], h[1], h[2], h[3]]
    };
    (join(a & LOW6, sc_hi), join(b & LOW6, mn_hi))
}

/// Q3_K's sixteen 6-bit scales, minus their offset of 32.
pub(crate) fn scales_q3_k(packed: &[u8; 12]) -> [i8; 16] {
    let mut s = [0i8; 16];
    for j in 0..16 {
        let low = if j < 8 { packed[j] & 0x0F } else { packed[j - 8] >> 4 };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        s[j] = (low | (high << 4)) as i8 - 32;
    }
    s
}

/// One k-quant super-block dotted with its Q8_K activations, in integers (`isum`: the scaled
/// quant products with any stored offset removed; `imin`: the mins times the group sums), and
/// the scales that turn them into floats.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KParts {
    pub d: f32,
    pub dmin: f32,
    pub dy: f32,
    pub isum: i32,
    pub imin: i32,
}

/// The order in which llama.cpp's AVX2 build scales and sums a k-quant row's super-blocks. All
/// three agree to f32 rounding; which one runs decides the last bits, and those bits decide
/// later 8-bit roundings, so ggml-rounding mode follows llama.cpp's choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KOrder {
    /// `ggml_vec_dot_*_q8_K` (one token or a few): 8-lane float accumulators, summed at the end.
    VecDot,
    /// The tiled k-quant matmul (`ggml-cpu/tiled`, batches of 8 tokens or more):
    /// `res = d·isum − dmin·imin` (one FMA), then `acc = fma(res, dy, acc)` per super-block.
    Tiled,
    /// The repacked 8-row gemv (`CPU_REPACK`; Q4_K on AVX2), for the tokens past the last
    /// whole group of 4: `acc = fma(isum, d·dy, acc)` and `mins = fma(imin, dmin·dy, mins)`
    /// per super-block, then `acc − mins`.
    Repacked,
    /// The repacked gemm, for the tokens in whole groups of 4: the same steps per 64 weights
    /// (two sub-blocks) instead of per super-block.
    RepackedGemm,
}

impl KOrder {
    /// The runs of tokens of a product of `n_tok` tokens and the order llama.cpp sums each in,
    /// for a weight type it repacks (or not): `(order, first token, tokens)`.
    pub fn runs(repacked: bool, n_tok: usize) -> impl Iterator<Item = (KOrder, usize, usize)> {
        let n4 = n_tok / 4 * 4;
        let runs = if repacked {
            [(Self::RepackedGemm, 0, n4), (Self::Repacked, n4, n_tok - n4)]
        } else if n_tok >= 8 {
            [(Self::Tiled, 0, n_tok), (Self::Tiled, n_tok, 0)]
        } else {
            [(Self::VecDot, 0, n_tok), (Self::VecDot, n_tok, 0)]
        };
        runs.into_iter().filter(|r| r.2 > 0)
    }
}

/// Runs `run(order, activations, tokens, out)` over the token runs of [`KOrder::runs`]; a run
/// that is not the whole product writes into a scratch block that is then spread into `out`
/// (`[n_rows, n_tok]`, token fastest).
#[cfg_attr(not(any(target_arch = "x86_64", target_feature = "simd128")), allow(dead_code))]
pub(crate) fn k_runs(repacked: bool, n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32], mut run: impl FnMut(KOrder, &[u8], usize, &mut [f32])) {
    if n_tok == 0 {
        return;
    }
    let ar = a.len() / n_tok;
    for (order, t0, nt) in KOrder::runs(repacked, n_tok) {
        if nt == n_tok {
            run(order, a, n_tok, out);
        } else {
            let mut part = vec![0.0f32; n_rows * nt];
            run(order, &a[t0 * ar..(t0 + nt) * ar], nt, &mut part);
            for (o, p) in out.chunks_exact_mut(n_tok).zip(part.chunks_exact(nt)) {
                o[t0..t0 + nt].copy_from_slice(p);
            }
        }
    }
}

/// The running sums of one output in a [`KOrder`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KAcc {
    acc: f32,
    mins: f32,
}

impl KAcc {
    /// Adds one super-block; `has_mins` for the types whose `imin` is subtracted as floats.
    #[inline(always)]
    pub(crate) fn add(&mut self, order: KOrder, p: KParts, has_mins: bool) {
        match order {
            KOrder::Tiled => {
                let mut res = p.d * p.isum as f32;
                if has_mins {
                    res = (-p.dmin).mul_add(p.imin as f32, res);
                }
                self.acc = res.mul_add(p.dy, self.acc);
            }
            KOrder::Repacked | KOrder::RepackedGemm => {
                self.acc = (p.isum as f32).mul_add(p.d * p.dy, self.acc);
                if has_mins {
                    self.mins = (p.imin as f32).mul_add(p.dmin * p.dy, self.mins);
                }
            }
            // The SIMD kernels keep this order's lanes; the scalar reference sums in block order.
            KOrder::VecDot => self.acc += p.d * p.dy * p.isum as f32 - p.dmin * p.dy * p.imin as f32,
        }
    }

    #[inline(always)]
    pub(crate) fn total(self) -> f32 {
        self.acc - self.mins
    }
}

/// A k-quant weight type: its block and the integer parts of one block's dot product.
pub(crate) trait KDot {
    type W: bytemuck::Pod;
    /// Whether `imin` is a float-scaled min term (Q2_K, Q4_K, Q5_K).
    const MINS: bool;
    /// Whether llama.cpp's AVX2 build repacks these weights (Q4_K).
    const REPACKED: bool = false;
    fn parts(x: &Self::W, y: &BlockQ8K) -> KParts;
    /// The parts of each 64 weights, for [`KOrder::RepackedGemm`] (only repacked types need it).
    fn parts_64(x: &Self::W, y: &BlockQ8K) -> [KParts; 4] {
        let p = Self::parts(x, y);
        let zero = KParts { isum: 0, imin: 0, ..p };
        [p, zero, zero, zero]
    }
}

fn matmul_k<D: KDot>(_k: usize, w: &[u8], n_rows: usize, a: &[u8], n_tok: usize, out: &mut [f32]) {
    if n_rows == 0 || n_tok == 0 {
        return;
    }
    let (wr, ar) = (w.len() / n_rows, a.len() / n_tok);
    for (order, t0, nt) in KOrder::runs(D::REPACKED, n_tok) {
        for (wrow, o) in w.chunks_exact(wr).zip(out.chunks_exact_mut(n_tok)) {
            for (arow, o) in a.chunks_exact(ar).zip(o.iter_mut()).skip(t0).take(nt) {
                let mut acc = KAcc::default();
                for (x, y) in pairs::<D::W, BlockQ8K>(wrow, arow) {
                    if order == KOrder::RepackedGemm {
                        D::parts_64(&x, &y).into_iter().for_each(|p| acc.add(order, p, D::MINS));
                    } else {
                        acc.add(order, D::parts(&x, &y), D::MINS);
                    }
                }
                *o = acc.total();
            }
        }
    }
}

pub(crate) struct Q2KDot;
impl KDot for Q2KDot {
    type W = BlockQ2K;
    const MINS: bool = true;
    fn parts(x: &BlockQ2K, y: &BlockQ8K) -> KParts {
        let imin: i32 = y.bsums.iter().zip(&x.scales).map(|(&b, &s)| b as i32 * (s >> 4) as i32).sum();
        let mut isum = 0i32;
        for g in 0..16 {
            // Group g: 16 quants at bits 2*(g/2 % 4) of qs[32*(g/8) + 16*(g%2) ..].
            let (chunk, shift, half) = (g / 8, 2 * ((g / 2) % 4), g % 2);
            let q2 = &x.qs[32 * chunk + 16 * half..][..16];
            let q8 = &y.qs[16 * g..][..16];
            let s: i32 = q2.iter().zip(q8).map(|(&q, &v)| ((q >> shift) & 3) as i32 * v as i32).sum();
            isum += (x.scales[g] & 0x0F) as i32 * s;
        }
        KParts { d: x.d.to_f32(), dmin: x.dmin.to_f32(), dy: y.d, isum, imin }
    }
}

pub(crate) struct Q3KDot;
impl KDot for Q3KDot {
    type W = BlockQ3K;
    const MINS: bool = false;
    fn parts(x: &BlockQ3K, y: &BlockQ8K) -> KParts {
        let scales = scales_q3_k(&x.scales);
        let mut q = [0i8; QK_K];
        for (i, q) in q.iter_mut().enumerate() {
            // Element i: chunk i/128, shift 2*((i/32)%4), byte i%32; high bit (i/32) of hmask.
            let low = (x.qs[32 * (i / 128) + i % 32] >> (2 * ((i / 32) % 4))) & 3;
            let high = x.hmask[i % 32] >> (i / 32) & 1;
            *q = low as i8 - if high == 0 { 4 } else { 0 };
        }
        let isum: i32 = (0..16).map(|g| scales[g] as i32 * dot_i8(&q[16 * g..][..16], &y.qs[16 * g..][..16])).sum();
        KParts { d: x.d.to_f32(), dmin: 0.0, dy: y.d, isum, imin: 0 }
    }
}

/// A Q4_K/Q5_K super-block in runs of 64 weights: `Σ scale_g·(q·y)_g` and `Σ min_g·bsum_g`
/// over its two groups of 32.
fn k4_parts_64(q: &[u8; QK_K], packed: &[u8; 12], d: f16, dmin: f16, y: &BlockQ8K) -> [KParts; 4] {
    let (sc, mn) = scales_mins_k4(packed);
    std::array::from_fn(|sb| {
        let imin: i32 = (4 * sb..4 * sb + 4).map(|j| y.bsums[j] as i32 * mn[j / 2] as i32).sum();
        let isum: i32 = (2 * sb..2 * sb + 2)
            .map(|g| {
                let s: i32 = q[32 * g..][..32].iter().zip(&y.qs[32 * g..][..32]).map(|(&q, &v)| q as i32 * v as i32).sum();
                sc[g] as i32 * s
            })
            .sum();
        KParts { d: d.to_f32(), dmin: dmin.to_f32(), dy: y.d, isum, imin }
    })
}

/// The whole super-block's parts from its runs of 64 (integer sums, so exact).
fn k4_parts(q: &[u8; QK_K], packed: &[u8; 12], d: f16, dmin: f16, y: &BlockQ8K) -> KParts {
    let p = k4_parts_64(q, packed, d, dmin, y);
    KParts { isum: p.iter().map(|p| p.isum).sum(), imin: p.iter().map(|p| p.imin).sum(), ..p[0] }
}

pub(crate) struct Q4KDot;
impl KDot for Q4KDot {
    type W = BlockQ4K;
    const MINS: bool = true;
    const REPACKED: bool = true;
    fn parts(x: &BlockQ4K, y: &BlockQ8K) -> KParts {
        k4_parts(&q4_k_quants(x), &x.scales, x.d, x.dmin, y)
    }
    fn parts_64(x: &BlockQ4K, y: &BlockQ8K) -> [KParts; 4] {
        k4_parts_64(&q4_k_quants(x), &x.scales, x.d, x.dmin, y)
    }
}

fn q4_k_quants(x: &BlockQ4K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for (i, q) in q.iter_mut().enumerate() {
        *q = (x.qs[32 * (i / 64) + i % 32] >> (4 * ((i / 32) % 2))) & 0x0F;
    }
    q
}

pub(crate) struct Q5KDot;
impl KDot for Q5KDot {
    type W = BlockQ5K;
    const MINS: bool = true;
    fn parts(x: &BlockQ5K, y: &BlockQ8K) -> KParts {
        let mut q = [0u8; QK_K];
        for (i, q) in q.iter_mut().enumerate() {
            let low = (x.qs[32 * (i / 64) + i % 32] >> (4 * ((i / 32) % 2))) & 0x0F;
            *q = low | (((x.qh[i % 32] >> (i / 32)) & 1) << 4);
        }
        k4_parts(&q, &x.scales, x.d, x.dmin, y)
    }
}

pub(crate) struct Q6KDot;
impl KDot for Q6KDot {
    type W = BlockQ6K;
    const MINS: bool = false;
    fn parts(x: &BlockQ6K, y: &BlockQ8K) -> KParts {
        let mut q = [0i8; QK_K];
        for (i, q) in q.iter_mut().enumerate() {
            // Element i: chunk i/128; quarter (i/32)%4 picks the ql half and nibble, qh shift.
            let (c, quarter, l) = (i / 128, (i / 32) % 4, i % 32);
            let ql = x.ql[64 * c + l + 32 * (quarter % 2)];
            let low = if quarter < 2 { ql & 0x0F } else { ql >> 4 };
            let high = (x.qh[32 * c + l] >> (2 * quarter)) & 3;
            *q = (low | (high << 4)) as i8 - 32;
        }
        let isum: i32 = (0..16).map(|g| x.scales[g] as i32 * dot_i8(&q[16 * g..][..16], &y.qs[16 * g..][..16])).sum();
        KParts { d: x.d.to_f32(), dmin: 0.0, dy: y.d, isum, imin: 0 }
    }
}

pub(crate) struct Iq4XsDot;
impl KDot for Iq4XsDot {
    type W = BlockIQ4XS;
    const MINS: bool = false;
    fn parts(x: &BlockIQ4XS, y: &BlockQ8K) -> KParts {
        let mut isum = 0i32;
        for ib in 0..8 {
            let ls = ((x.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F) | ((((x.scales_h >> (2 * ib)) & 3) as u8) << 4);
            let qs: &[u8; 16] = x.qs[16 * ib..][..16].try_into().unwrap_or(&[0; 16]);
            let q = nibbles(qs).map(|v| KVALUES_IQ4NL[v as usize]);
            isum += (ls as i32 - 32) * dot_i8(&q, &y.qs[32 * ib..][..32]);
        }
        KParts { d: x.d.to_f32(), dmin: 0.0, dy: y.d, isum, imin: 0 }
    }
}

#[cfg(test)]
mod tests {
    /// The word-wise unpacking equals the bytewise definition on every byte value in every
    /// position (random 12-byte blocks, and each byte swept through 0..=255).
    #[test]
    fn scales_mins_k4_matches_bytewise() {
        use rand::{Rng, SeedableRng};
        let bytewise = |p: &[u8; 12]| {
            let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
            for j in 0..4 {
                sc[j] = p[j] & 63;
                mn[j] = p[j + 4] & 63;
                sc[j + 4] = (p[j + 8] & 0x0F) | ((p[j] >> 6) << 4);
                mn[j + 4] = (p[j + 8] >> 4) | ((p[j + 4] >> 6) << 4);
            }
            (sc, mn)
        };
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..10_000 {
            let p: [u8; 12] = r.gen();
            assert_eq!(super::scales_mins_k4(&p), bytewise(&p), "{p:?}");
        }
        for i in 0..12 {
            for v in 0..=255u8 {
                let mut p = [0x5au8; 12];
                p[i] = v;
                assert_eq!(super::scales_mins_k4(&p), bytewise(&p), "{p:?}");
            }
        }
    }
}
