//! F32, F16 and BF16: plain floats, converted element by element.

use half::{bf16, f16};

pub fn f16_to_f32(src: &[f16], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(src) {
        *o = x.to_f32();
    }
}

pub fn bf16_to_f32(src: &[bf16], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(src) {
        *o = x.to_f32();
    }
}

/// Rounds to nearest even, as ggml's `GGML_FP32_TO_FP16` does.
pub fn f32_to_f16(src: &[f32], out: &mut [f16]) {
    for (o, x) in out.iter_mut().zip(src) {
        *o = f16::from_f32(*x);
    }
}

/// Rounds to nearest even with NaNs kept quiet, as ggml's `ggml_compute_fp32_to_bf16` does.
pub fn f32_to_bf16(src: &[f32], out: &mut [bf16]) {
    for (o, x) in out.iter_mut().zip(src) {
        let bits = x.to_bits();
        *o = if (bits & 0x7fff_ffff) > 0x7f80_0000 {
            bf16::from_bits(((bits >> 16) | 64) as u16)
        } else {
            bf16::from_bits(((bits + (0x7fff + ((bits >> 16) & 1))) >> 16) as u16)
        };
    }
}
