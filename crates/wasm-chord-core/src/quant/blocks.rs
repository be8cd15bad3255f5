//! `#[repr(C)]` block layouts, byte for byte those of ggml's `ggml-common.h`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::QK_K;

macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(std::mem::size_of::<$t>() == $n);
    };
}

/// 32 weights `d * (q - 8)`, q in 0..16; low nibbles hold weights 0..16, high nibbles 16..32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}
assert_size!(BlockQ4_0, 18);

/// 32 weights `d * q + m`, q in 0..16.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; 16],
}
assert_size!(BlockQ4_1, 20);

/// 32 weights `d * (q - 16)`, q in 0..32: 4 low bits in `qs`, the fifth in `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
assert_size!(BlockQ5_0, 22);

/// 32 weights `d * q + m`, q in 0..32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
assert_size!(BlockQ5_1, 24);

/// 32 weights `d * q`, q an i8.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}
assert_size!(BlockQ8_0, 34);

/// 256 weights in 16 groups of 16: 2-bit quants, 4-bit scales and mins per group.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}
assert_size!(BlockQ2K, 84);

/// 256 weights in 16 groups of 16: 3-bit quants (high bit in `hmask`), 6-bit scales.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: f16,
}
assert_size!(BlockQ3K, 110);

/// 256 weights in 8 groups of 32: 4-bit quants, 6-bit scales and mins packed in `scales`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}
assert_size!(BlockQ4K, 144);

/// 256 weights in 8 groups of 32: 5-bit quants (high bit in `qh`), 6-bit scales and mins.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
assert_size!(BlockQ5K, 176);

/// 256 weights in 16 groups of 16: 6-bit quants (low 4 bits in `ql`, high 2 in `qh`), i8 scales.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}
assert_size!(BlockQ6K, 210);

/// 256 weights `d * q` with i8 q and the sums of each group of 16 (used for activations).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}
assert_size!(BlockQ8K, 292);

/// 32 weights `d * KVALUES_IQ4NL[q]`, q in 0..16 (a non-linear 4-bit grid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIQ4NL {
    pub d: f16,
    pub qs: [u8; 16],
}
assert_size!(BlockIQ4NL, 18);

/// 256 weights in 8 groups of 32 on the IQ4_NL grid, with 6-bit group scales.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIQ4XS {
    pub d: f16,
    pub scales_h: u16,
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}
assert_size!(BlockIQ4XS, 136);

/// The non-linear grid shared by IQ4_NL and IQ4_XS.
pub const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
