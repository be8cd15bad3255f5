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
        Q2_K => matmul::<Q2KDot>,
        Q3_K => matmul::<Q3KDot>,
        Q4_K => matmul::<Q4KDot>,
        Q5_K => matmul::<Q5KDot>,
        Q6_K => matmul::<Q6KDot>,
        IQ4_XS => matmul::<Iq4XsDot>,
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

/// Q4_K/Q5_K's eight 6-bit scales and mins unpacked from their 12 bytes (ggml's `utmp` dance).
pub(crate) fn scales_mins_k4(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = packed[j] & 63;
        mn[j] = packed[j + 4] & 63;
        sc[j + 4] = (packed[j + 8] & 0x0F) | ((packed[j] >> 6) << 4);
        mn[j + 4] = (packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4);
    }
    (sc, mn)
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

row_dot!(Q2KDot, |w, a| pairs::<BlockQ2K, BlockQ8K>(w, a)
    .map(|(x, y)| {
        let summs: i32 = y.bsums.iter().zip(&x.scales).map(|(&b, &s)| b as i32 * (s >> 4) as i32).sum();
        let mut isum = 0i32;
        for g in 0..16 {
            // Group g: 16 quants at bits 2*(g/2 % 4) of qs[32*(g/8) + 16*(g%2) ..].
            let (chunk, shift, half) = (g / 8, 2 * ((g / 2) % 4), g % 2);
            let q2 = &x.qs[32 * chunk + 16 * half..][..16];
            let q8 = &y.qs[16 * g..][..16];
            let s: i32 = q2.iter().zip(q8).map(|(&q, &v)| ((q >> shift) & 3) as i32 * v as i32).sum();
            isum += (x.scales[g] & 0x0F) as i32 * s;
        }
        y.d * x.d.to_f32() * isum as f32 - y.d * x.dmin.to_f32() * summs as f32
    })
    .sum());

row_dot!(Q3KDot, |w, a| pairs::<BlockQ3K, BlockQ8K>(w, a)
    .map(|(x, y)| {
        let scales = scales_q3_k(&x.scales);
        let mut q = [0i8; QK_K];
        for (i, q) in q.iter_mut().enumerate() {
            // Element i: chunk i/128, shift 2*((i/32)%4), byte i%32; high bit (i/32) of hmask.
            let low = (x.qs[32 * (i / 128) + i % 32] >> (2 * ((i / 32) % 4))) & 3;
            let high = x.hmask[i % 32] >> (i / 32) & 1;
            *q = low as i8 - if high == 0 { 4 } else { 0 };
        }
        let isum: i32 = (0..16).map(|g| scales[g] as i32 * dot_i8(&q[16 * g..][..16], &y.qs[16 * g..][..16])).sum();
        x.d.to_f32() * y.d * isum as f32
    })
    .sum());

/// A Q4_K/Q5_K super-block: `d·Σ scale_g·(q·y)_g − dmin·Σ min_g·bsum_g` over 8 groups of 32.
fn k4_dot(q: &[u8; QK_K], packed: &[u8; 12], d: f16, dmin: f16, y: &BlockQ8K) -> f32 {
    let (sc, mn) = scales_mins_k4(packed);
    let mins: i32 = (0..16).map(|j| y.bsums[j] as i32 * mn[j / 2] as i32).sum();
    let isum: i32 = (0..8)
        .map(|g| {
            let s: i32 = q[32 * g..][..32].iter().zip(&y.qs[32 * g..][..32]).map(|(&q, &v)| q as i32 * v as i32).sum();
            sc[g] as i32 * s
        })
        .sum();
    d.to_f32() * y.d * isum as f32 - dmin.to_f32() * y.d * mins as f32
}

row_dot!(Q4KDot, |w, a| pairs::<BlockQ4K, BlockQ8K>(w, a)
    .map(|(x, y)| {
        let mut q = [0u8; QK_K];
        for (i, q) in q.iter_mut().enumerate() {
            *q = (x.qs[32 * (i / 64) + i % 32] >> (4 * ((i / 32) % 2))) & 0x0F;
        }
        k4_dot(&q, &x.scales, x.d, x.dmin, &y)
    })
    .sum());
row_dot!(Q5KDot, |w, a| pairs::<BlockQ5K, BlockQ8K>(w, a)
    .map(|(x, y)| {
        let mut q = [0u8; QK_K];
        for (i, q) in q.iter_mut().enumerate() {
            let low = (x.qs[32 * (i / 64) + i % 32] >> (4 * ((i / 32) % 2))) & 0x0F;
            *q = low | (((x.qh[i % 32] >> (i / 32)) & 1) << 4);
        }
        k4_dot(&q, &x.scales, x.d, x.dmin, &y)
    })
    .sum());

row_dot!(Q6KDot, |w, a| pairs::<BlockQ6K, BlockQ8K>(w, a)
    .map(|(x, y)| {
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
        x.d.to_f32() * y.d * isum as f32
    })
    .sum());

row_dot!(Iq4XsDot, |w, a| pairs::<BlockIQ4XS, BlockQ8K>(w, a)
    .map(|(x, y)| {
        let d4d8 = x.d.to_f32() * y.d;
        let mut sumf = 0.0f32;
        for ib in 0..8 {
            let ls = ((x.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F) | ((((x.scales_h >> (2 * ib)) & 3) as u8) << 4);
            let qs: &[u8; 16] = x.qs[16 * ib..][..16].try_into().unwrap_or(&[0; 16]);
            let q = nibbles(qs).map(|v| KVALUES_IQ4NL[v as usize]);
            sumf += d4d8 * (ls as i32 - 32) as f32 * dot_i8(&q, &y.qs[32 * ib..][..32]) as f32;
        }
        sumf
    })
    .sum());
