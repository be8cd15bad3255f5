//! Tensor formats: the block layouts of every type the engine reads, defined once, with
//! dequantization for all of them and llama.cpp's reference quantizers for most.
//!
//! A tensor row of `n` elements of type `t` occupies `t.row_bytes(n)` bytes: `n / t.block_len()`
//! blocks of `t.block_bytes()` bytes each. Block structs are `#[repr(C)]` mirrors of ggml's
//! `ggml-common.h`; size asserts keep them honest, and the CUDA/WGSL kernels mirror them.

mod blocks;
mod kquant_util;
pub use blocks::*;

pub mod float;
pub mod iq4_nl;
pub mod iq4_xs;
pub mod mix;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_k;

use bytemuck::Pod;
use half::{bf16, f16};

use crate::error::QuantError;

/// Elements per super-block of the k-quants.
pub const QK_K: usize = 256;

/// The tensor types wasm-chord reads. Any other ggml type id is an
/// "unsupported tensor type" error at load time.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TensorType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ4_NL,
    IQ4_XS,
}

impl TensorType {
    /// Every supported type, in ggml id order.
    pub const ALL: [TensorType; 16] = [
        TensorType::F32,
        TensorType::F16,
        TensorType::Q4_0,
        TensorType::Q4_1,
        TensorType::Q5_0,
        TensorType::Q5_1,
        TensorType::Q8_0,
        TensorType::Q2_K,
        TensorType::Q3_K,
        TensorType::Q4_K,
        TensorType::Q5_K,
        TensorType::Q6_K,
        TensorType::Q8_K,
        TensorType::IQ4_NL,
        TensorType::IQ4_XS,
        TensorType::BF16,
    ];

    /// Every type a model's weights may have: all of [`Self::ALL`] but Q8_K, which only ever
    /// holds quantized activations.
    pub const WEIGHTS: [TensorType; 15] = [
        TensorType::F32,
        TensorType::F16,
        TensorType::BF16,
        TensorType::Q4_0,
        TensorType::Q4_1,
        TensorType::Q5_0,
        TensorType::Q5_1,
        TensorType::Q8_0,
        TensorType::Q2_K,
        TensorType::Q3_K,
        TensorType::Q4_K,
        TensorType::Q5_K,
        TensorType::Q6_K,
        TensorType::IQ4_NL,
        TensorType::IQ4_XS,
    ];

    /// The type for a ggml type id as stored in GGUF tensor infos, if supported.
    pub fn from_ggml_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2_K,
            11 => Self::Q3_K,
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            15 => Self::Q8_K,
            20 => Self::IQ4_NL,
            23 => Self::IQ4_XS,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// The ggml type id written to GGUF files.
    pub fn ggml_id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2_K => 10,
            Self::Q3_K => 11,
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::Q8_K => 15,
            Self::IQ4_NL => 20,
            Self::IQ4_XS => 23,
            Self::BF16 => 30,
        }
    }

    /// ggml's name for the type ("q4_K", "f16", ...), as llama.cpp prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q5_0 => "q5_0",
            Self::Q5_1 => "q5_1",
            Self::Q8_0 => "q8_0",
            Self::Q2_K => "q2_K",
            Self::Q3_K => "q3_K",
            Self::Q4_K => "q4_K",
            Self::Q5_K => "q5_K",
            Self::Q6_K => "q6_K",
            Self::Q8_K => "q8_K",
            Self::IQ4_NL => "iq4_nl",
            Self::IQ4_XS => "iq4_xs",
        }
    }

    /// Parses a type name case-insensitively ("Q4_K", "q4_k", "f16").
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Elements per block.
    pub fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::IQ4_NL => 32,
            Self::Q2_K | Self::Q3_K | Self::Q4_K | Self::Q5_K | Self::Q6_K | Self::Q8_K | Self::IQ4_XS => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        use std::mem::size_of;
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => size_of::<BlockQ4_0>(),
            Self::Q4_1 => size_of::<BlockQ4_1>(),
            Self::Q5_0 => size_of::<BlockQ5_0>(),
            Self::Q5_1 => size_of::<BlockQ5_1>(),
            Self::Q8_0 => size_of::<BlockQ8_0>(),
            Self::Q2_K => size_of::<BlockQ2K>(),
            Self::Q3_K => size_of::<BlockQ3K>(),
            Self::Q4_K => size_of::<BlockQ4K>(),
            Self::Q5_K => size_of::<BlockQ5K>(),
            Self::Q6_K => size_of::<BlockQ6K>(),
            Self::Q8_K => size_of::<BlockQ8K>(),
            Self::IQ4_NL => size_of::<BlockIQ4NL>(),
            Self::IQ4_XS => size_of::<BlockIQ4XS>(),
        }
    }

    /// Whether the type is a plain float (no blocks, no scales).
    pub fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::BF16)
    }

    /// Bytes taken by a row of `n` elements; an error unless `n` is a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Result<usize, QuantError> {
        if n % self.block_len() != 0 {
            return Err(QuantError::PartialBlock { ty: self, n });
        }
        (n / self.block_len())
            .checked_mul(self.block_bytes())
            .ok_or(QuantError::SizeOverflow { ty: self, n })
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Views `bytes` as blocks, copying only when the bytes are not aligned for `B`
/// (a byte buffer handed in from the browser need not be).
fn blocks_of<B: Pod>(bytes: &[u8]) -> std::borrow::Cow<'_, [B]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(blocks) => std::borrow::Cow::Borrowed(blocks),
        Err(_) => std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}

fn check_lengths(ty: TensorType, bytes: usize, n: usize) -> Result<(), QuantError> {
    let expected = ty.row_bytes(n)?;
    if bytes != expected {
        return Err(QuantError::BadLength { ty, expected, got: bytes });
    }
    Ok(())
}

/// Dequantizes the blocks in `src` (a whole number of blocks of type `ty`) into `dst`.
pub fn dequantize(ty: TensorType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_lengths(ty, src.len(), dst.len())?;
    match ty {
        TensorType::F32 => dst.copy_from_slice(&blocks_of::<f32>(src)),
        TensorType::F16 => float::f16_to_f32(&blocks_of::<f16>(src), dst),
        TensorType::BF16 => float::bf16_to_f32(&blocks_of::<bf16>(src), dst),
        TensorType::Q4_0 => q4_0::dequantize(&blocks_of(src), dst),
        TensorType::Q4_1 => q4_1::dequantize(&blocks_of(src), dst),
        TensorType::Q5_0 => q5_0::dequantize(&blocks_of(src), dst),
        TensorType::Q5_1 => q5_1::dequantize(&blocks_of(src), dst),
        TensorType::Q8_0 => q8_0::dequantize(&blocks_of(src), dst),
        TensorType::Q2_K => q2_k::dequantize(&blocks_of(src), dst),
        TensorType::Q3_K => q3_k::dequantize(&blocks_of(src), dst),
        TensorType::Q4_K => q4_k::dequantize(&blocks_of(src), dst),
        TensorType::Q5_K => q5_k::dequantize(&blocks_of(src), dst),
        TensorType::Q6_K => q6_k::dequantize(&blocks_of(src), dst),
        TensorType::Q8_K => q8_k::dequantize(&blocks_of(src), dst),
        TensorType::IQ4_NL => iq4_nl::dequantize(&blocks_of(src), dst),
        TensorType::IQ4_XS => iq4_xs::dequantize(&blocks_of(src), dst),
    }
    Ok(())
}

/// Whether [`quantize`] can write type `ty` (every supported type has a quantizer now; callers
/// keep asking so that a read-only type can be added later).
pub fn has_quantizer(_ty: TensorType) -> bool {
    true
}

/// Quantizes `src` into `dst` (exactly `ty.row_bytes(src.len())` bytes) with llama.cpp's
/// reference algorithm for `ty`, so that llama.cpp reads the result as its own.
pub fn quantize(ty: TensorType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check_lengths(ty, dst.len(), src.len())?;
    fn out<B: Pod>(dst: &mut [u8]) -> &mut [B] {
        // GGUF writers hand us `Vec<u8>` buffers; an unaligned one is a caller bug, not user input.
        bytemuck::cast_slice_mut(dst)
    }
    match ty {
        TensorType::F32 => out::<f32>(dst).copy_from_slice(src),
        TensorType::F16 => float::f32_to_f16(src, out(dst)),
        TensorType::BF16 => float::f32_to_bf16(src, out(dst)),
        TensorType::Q4_0 => q4_0::quantize(src, out(dst)),
        TensorType::Q4_1 => q4_1::quantize(src, out(dst)),
        TensorType::Q5_0 => q5_0::quantize(src, out(dst)),
        TensorType::Q5_1 => q5_1::quantize(src, out(dst)),
        TensorType::Q8_0 => q8_0::quantize(src, out(dst)),
        TensorType::Q2_K => q2_k::quantize(src, out(dst)),
        TensorType::Q3_K => q3_k::quantize(src, out(dst)),
        TensorType::Q4_K => q4_k::quantize(src, out(dst)),
        TensorType::Q5_K => q5_k::quantize(src, out(dst)),
        TensorType::Q6_K => q6_k::quantize(src, out(dst)),
        TensorType::Q8_K => q8_k::quantize(src, out(dst)),
        TensorType::IQ4_NL => iq4_nl::quantize(src, out(dst)),
        TensorType::IQ4_XS => iq4_xs::quantize(src, out(dst)),
    }
    Ok(())
}
