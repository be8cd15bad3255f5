//! Weights repacked at load for the SIMD kernels: the 32-weight block types with four rows
//! interleaved block by block, their f16 scales gathered in front.
//!
//! In a file, each block carries its own scale `d` (and offset `m` for Q4_1/Q5_1), so a kernel
//! converts one or two f16 scalars per block and weight row, about as much work as the integer
//! dot product itself when decoding. Packed, the four rows' block `b` is one run of bytes
//!
//! ```text
//! d[4] (f16) | m[4] (f16, Q4_1/Q5_1 only) | quants of row 0 | ... | quants of row 3
//! ```
//!
//! so one conversion yields four scales and one multiply four `d · d_y` products. Each output is
//! computed with exactly the operations of the unpacked kernel (tests assert equal bits); the
//! packed copy is the same size as the rows it holds (plus zero rows padding the last group).
//!
//! Q5_0 decodes from its own packed layout (`d[4] | qh and quants of row 0 | ... | row 3`, 20
//! bytes a row): decoding is bound by memory, which reads 22 bytes a block this way against 34
//! as Q8_0. A batch of tokens instead expands each task's groups once to bytes ([`expand_q5_0`]):
//! rebuilding five-bit values costs about as much as the rest of the dot product, once per token
//! tile if done in the kernel. The bytes are the stored values `q + 16` (0..31), unsigned, so
//! the kernel multiplies them with the activations directly (no sign trick) and subtracts
//! `16 · Σ y` per four products, which [`act_scales`] computes once per activation row: the
//! integer sums are the same, so the results are too.

use wasm_chord_core::TensorType;

/// Rows interleaved in one group.
pub const GROUP: usize = 4;

/// `out[t * n_rows + r] = Σ_i w[r, i] · a[t, i]` (token-major, unlike [`super::MatmulFn`]):
/// `w` holds the groups of the rows asked for (from a group boundary), `n_rows` of them valid;
/// `scales` the activations' [`act_scales`] (or nothing: the kernel converts them itself).
pub type PackedFn = fn(k: usize, w: &[u8], n_rows: usize, a: &[u8], scales: &[f32], n_tok: usize, out: &mut [f32]);

/// f32 values per token of [`act_scales`] for weights of type `ty` in rows of `k`.
pub fn act_scales_len(ty: TensorType, k: usize) -> usize {
    use TensorType::*;
    k / 32
        * match ty {
            Q4_1 | Q5_1 => 2,
            Q5_0 => 9,
            _ => 1,
        }
}

/// One row of quantized activations (Q8_0, or Q8_1 for `ty` Q4_1/Q5_1) prepared once per
/// product for the batched kernels over weights of type `ty`: `d` of every block as f32; for
/// Q8_1 then `s` of every block; for Q5_0 then, per block, eight sums `16 · (y_4j + .. +
/// y_4j+3)` (the offset of the unsigned values of [`expand_q5_0`] times the activations, in
/// the lanes where the kernel sums those four products).
pub fn act_scales(ty: TensorType, row: &[u8], out: &mut [f32]) {
    let block_bytes = if matches!(ty, TensorType::Q4_1 | TensorType::Q5_1) { 36 } else { 34 };
    let nb = row.len() / block_bytes;
    let f16_at = |i: usize| half::f16::from_le_bytes([row[i], row[i + 1]]).to_f32();
    let (d, rest) = out.split_at_mut(nb.min(out.len()));
    for (b, d) in d.iter_mut().enumerate() {
        *d = f16_at(b * block_bytes);
    }
    if block_bytes == 36 {
        for (b, s) in rest.iter_mut().enumerate().take(nb) {
            *s = f16_at(b * block_bytes + 2);
        }
    } else if ty == TensorType::Q5_0 {
        for (block, sums) in row.chunks_exact(block_bytes).zip(rest.chunks_exact_mut(8)) {
            for (four, s) in block[2..].chunks_exact(4).zip(sums) {
                *s = (16 * four.iter().map(|&y| y as i8 as i32).sum::<i32>()) as f32;
            }
        }
    }
}

/// A weight matrix in the packed layout.
#[derive(Debug)]
pub struct PackedWeight {
    pub ty: TensorType,
    pub rows: usize,
    pub cols: usize,
    bytes: Vec<u8>,
}

/// Bytes of one packed Q5_0 block of four rows, and of the block [`expand_q5_0`] makes of it.
pub const Q5_0_GROUP_BLOCK: usize = GROUP * 22;
pub const Q5_0_EXPANDED_BLOCK: usize = GROUP * 34;

/// The packed Q5_0 blocks in `src` expanded for a batch into `dst` (as many as both hold): each
/// block `d[4] | 32 bytes of row 0 | ... | row 3`, the bytes the stored values `q + 16`
/// (0..31; the weight is `d · (byte - 16)`). The scalar reference of the SIMD versions.
pub fn expand_q5_0(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(Q5_0_GROUP_BLOCK).zip(dst.chunks_exact_mut(Q5_0_EXPANDED_BLOCK)) {
        d[..2 * GROUP].copy_from_slice(&s[..2 * GROUP]);
        for r in 0..GROUP {
            let q = &s[2 * GROUP + 20 * r..][..20];
            let qh = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
            for (j, v) in d[2 * GROUP + 32 * r..][..32].iter_mut().enumerate() {
                let nibble = if j < 16 { q[4 + j] & 0x0F } else { q[4 + j - 16] >> 4 };
                let high = ((qh >> j) & 1) as u8;
                *v = nibble | (high << 4);
            }
        }
    }
}

/// Bytes of f16 scales at the start of a block of `ty`, for the types that pack.
pub fn scale_bytes(ty: TensorType) -> Option<usize> {
    use TensorType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL => Some(2),
        Q4_1 | Q5_1 => Some(4),
        _ => None,
    }
}

impl PackedWeight {
    /// `rows` rows of `cols` weights of type `ty` (the file's bytes) repacked; `None` for a type
    /// that does not pack or lengths that do not describe the shape. `copied` is called with
    /// successive spans of `src` (about a MiB each, in order) once they have been read, only
    /// when the packing succeeds.
    pub fn pack(ty: TensorType, rows: usize, cols: usize, src: &[u8], copied: &mut dyn FnMut(std::ops::Range<usize>)) -> Option<Self> {
        let sb = scale_bytes(ty)?;
        let bb = ty.block_bytes();
        if cols % 32 != 0 || cols == 0 || src.len() != rows.checked_mul(cols / 32 * bb)? {
            return None;
        }
        let (nb, qb) = (cols / 32, bb - sb);
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(rows.div_ceil(GROUP) * GROUP * nb * bb).ok()?;
        bytes.resize(rows.div_ceil(GROUP) * GROUP * nb * bb, 0);
        let src_group = GROUP * nb * bb;
        let groups_per_span = ((1 << 20) / src_group).max(1);
        let mut reported = 0;
        for (g, dst) in bytes.chunks_exact_mut(GROUP * nb * bb).enumerate() {
            if g > 0 && g % groups_per_span == 0 {
                copied(reported..g * src_group);
                reported = g * src_group;
            }
            for (b, dst) in dst.chunks_exact_mut(GROUP * bb).enumerate() {
                let (scales, quants) = dst.split_at_mut(GROUP * sb);
                for r in 0..GROUP.min(rows - g * GROUP) {
                    let block = &src[((g * GROUP + r) * nb + b) * bb..][..bb];
                    scales[2 * r..2 * r + 2].copy_from_slice(&block[..2]);
                    if sb == 4 {
                        scales[2 * GROUP + 2 * r..][..2].copy_from_slice(&block[2..4]);
                    }
                    quants[r * qb..(r + 1) * qb].copy_from_slice(&block[sb..]);
                }
            }
        }
        copied(reported..src.len());
        Some(Self { ty, rows, cols, bytes })
    }

    /// Row `r`'s blocks put back in the file's layout into `out` (`false` if `r` or the
    /// length is out of range): a packed table's rows for `embed`, so the file's pages, released
    /// at packing, are not read back.
    pub fn file_row(&self, r: usize, out: &mut [u8]) -> bool {
        let Some(sb) = scale_bytes(self.ty) else { return false };
        let (nb, bb) = (self.cols / 32, self.ty.block_bytes());
        if r >= self.rows || out.len() != nb * bb {
            return false;
        }
        let (group, i, qb) = (&self.bytes[r / GROUP * self.group_bytes()..][..self.group_bytes()], r % GROUP, bb - sb);
        for (src, dst) in group.chunks_exact(GROUP * bb).zip(out.chunks_exact_mut(bb)) {
            dst[..2].copy_from_slice(&src[2 * i..2 * i + 2]);
            if sb == 4 {
                dst[2..4].copy_from_slice(&src[2 * GROUP + 2 * i..][..2]);
            }
            dst[sb..].copy_from_slice(&src[GROUP * sb + i * qb..][..qb]);
        }
        true
    }

    /// Bytes of one group of [`GROUP`] rows.
    pub fn group_bytes(&self) -> usize {
        GROUP * self.cols / 32 * self.ty.block_bytes()
    }

    /// The groups holding rows `r0..r0 + n` (`r0` a multiple of [`GROUP`], checked by the caller).
    pub fn groups(&self, r0: usize, n: usize) -> &[u8] {
        let gb = self.group_bytes();
        &self.bytes[r0 / GROUP * gb..(r0 + n).div_ceil(GROUP) * gb]
    }
}
