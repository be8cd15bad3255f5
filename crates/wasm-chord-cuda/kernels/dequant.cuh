// Dequantization of one 32-weight item of a block, for every weight type. An item is the
// unit a thread works on: a whole block of the 32-weight types, one of the 8 groups of 32 of
// a 256-weight k-quant block. `b` points at the block start, which is aligned to `ALIGN` bytes
// (the block size's largest power-of-two divisor up to 16): loads use the widest access that
// alignment allows. Each item writes its weights in file order to w[0..32).
//
// Types with SPLIT = true also have decode(b, item, q, s, m): the item's quantized values as
// exact small-integer floats q[0..32) and a scale and offset per half item (16 weights), with
// w[j] = s[j / 16] * q[j] + m[j / 16]. The matvec multiplies q by the activations and applies
// s and m once per half (m times the activations' half sums), which takes the per-weight scale
// arithmetic out of its inner loop; q comes from the packed bits with one byte permute and one
// add per weight (byte_f).
//
// The quantized types also have decode_i8(b, item, q, s, m) for the int8 matvec (mmvq.cu): the
// same item as eight words of four signed bytes (q[i] holds weights 4i .. 4i+3; offsets that
// are whole numbers, such as Q4_0's -8, are subtracted in the bytes), with
// w[j] = s[j / 16] * q[j] + m[j / 16] and m zero unless MINS says otherwise.
#pragma once
#include "common.cuh"

__host__ __device__ constexpr int gcd_c(int a, int b) { return b == 0 ? a : gcd_c(b, a % b); }

// (float)u - bias for 0 <= u < 2^22 and a small integer bias, without an integer-to-float
// conversion (a quarter-rate instruction that bounded the v2 matvec): the bits 0x4B000000 | u
// are the float 2^23 + u, and subtracting 2^23 + bias is exact.
__device__ __forceinline__ float small_u2f(u32 u, int bias) {
    return __int_as_float(0x4B000000u | u) - (float)(8388608 + bias);
}

// Byte i (0..3) of v as a float minus `bias`, exactly: the permute builds the bits
// 0x4B0000vv, the float 2^23 + vv.
__device__ __forceinline__ float byte_f(u32 v, int i, int bias) {
    return __int_as_float(__byte_perm(v, 0x4B000000u, 0x7440u | (u32)i)) - (float)(8388608 + bias);
}

// Biased decoding (decode<true>, the default where the includer defines WC_BIASED_DECODE=1):
// the types whose q fits in 7 bits return q' = 0.5 + q / 256 instead of q, from one byte
// permute and no add (the bits 0x3F00qq00 are the float 0.5 * (1 + q / 128)), with s' = 256 s
// and m' = m - 128 s, so that s' q' + m' = s q + m still. The price is rounding: q' x carries
// 0.5 x, which the half-item sums cancel, so a half item's dot loses a few of f32's 24 bits
// (the fewer bits q has, the more: Q2_K measured 1.4e-5 of the largest output against the f32
// reference, Q4 types ~3e-6; NOTES.md, matvec round 3). Q8_0 and IQ4 (8-bit q) ignore it.
#ifndef WC_BIASED_DECODE
#define WC_BIASED_DECODE 0
#endif
template <bool BIASED>
__device__ __forceinline__ float byte_q(u32 v, int i) {
    if constexpr (BIASED) return __int_as_float(__byte_perm(v, 0x3F000000u, 0x7054u | ((u32)i << 8)));
    else return byte_f(v, i, 0);
}
template <bool BIASED>
__device__ __forceinline__ void finish_decode(float* s, float* m) {
    if constexpr (BIASED) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            m[h] -= 128.0f * s[h];
            s[h] *= 256.0f;
        }
    }
}

// The four low bits of x (< 16) moved to bit 4 of bytes 0..3.
__device__ __forceinline__ u32 bits_to_byte_bit4(u32 x) {
    return (x * 0x02040810u) & 0x10101010u;
}

// The IQ4_NL grid plus 128, packed four values a word, looked up with byte permutes so the
// table stays in registers (a __constant__ table would serialize on divergent indices).
__device__ __forceinline__ float iq4_value(u32 q) {
    // -127, -104, -83, -65 | -49, -35, -22, -10 | 1, 13, 25, 38 | 53, 69, 89, 113, each + 128
    const u32 lo0 = 0x3F2D1801u, lo1 = 0x766A5D4Fu, hi0 = 0xA6998D81u, hi1 = 0xF1D9C5B5u;
    const u32 v = q < 8 ? __byte_perm(lo0, lo1, q) : __byte_perm(hi0, hi1, q - 8);
    return small_u2f(v & 0xffu, 128);
}

// The IQ4 grid values (plus 128) of four 4-bit indices held in the bytes of `idx`, as bytes in
// the order of indices 0, 2, 1, 3 (iq4_byte maps an index's position to its byte): two byte
// permutes look up the low and the high half of the table and a mask built from bit 3 of each
// index picks between them (9 integer operations for 4 weights instead of ~5 per weight).
__host__ __device__ constexpr int iq4_byte(int j) { return j == 1 ? 2 : j == 2 ? 1 : j; }
__device__ __forceinline__ u32 iq4_lookup4(u32 idx) {
    const u32 sel = (idx | (idx >> 12)) & 0x7777u;  // selector nibbles: indices 0, 2, 1, 3 (mod 8)
    const u32 lo = __byte_perm(0x3F2D1801u, 0x766A5D4Fu, sel);
    const u32 hi = __byte_perm(0xA6998D81u, 0xF1D9C5B5u, sel);
    const u32 high = __byte_perm(idx & 0x08080808u, 0u, 0x3120u);  // bit 3 per index, same order
    const u32 mask = (high >> 3) * 0xFFu;
    return (hi & mask) | (lo & ~mask);
}

// The IQ4 grid values of four 4-bit indices as signed bytes in index order.
__device__ __forceinline__ u32 iq4_signed4(u32 idx) {
    return __byte_perm(iq4_lookup4(idx), 0u, 0x3120u) ^ 0x80808080u;
}

template <int BYTES_, int QK_, int ITEMS_, bool SPLIT_ = false>
struct BlockType {
    static constexpr bool SPLIT = SPLIT_;
    // Whether blocks are not contiguous on the device (repacked at upload; see Q6_K_R).
    static constexpr bool ROW_SPLIT = false;
    static constexpr int BYTES = BYTES_;
    static constexpr int QK = QK_;
    static constexpr int ITEMS = ITEMS_;
    static constexpr int ALIGN = gcd_c(BYTES_, 16);
    // decode_i8 (the int8 matvec, mmvq.cu): how the offsets m are laid out (0: none, 1: one per
    // item, 2: one per half item) and whether the two halves have their own scale.
    static constexpr int MINS = 0;
    static constexpr bool HALF_SCALES = false;
};

struct Q4_0 : BlockType<18, 32, 1, true> {
    static constexpr int MINS = 0;
    static __device__ __forceinline__ void decode_i8(const u8* b, int, u32* q, float* s, float* m) {
        s[0] = s[1] = load_half(b);
        m[0] = m[1] = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 x = load_u32<2>(b + 2 + 4 * k);
            q[k] = __vsub4(x & 0x0F0F0F0Fu, 0x08080808u);
            q[4 + k] = __vsub4((x >> 4) & 0x0F0F0F0Fu, 0x08080808u);
        }
    }
    template <bool BIASED = WC_BIASED_DECODE != 0>
    static __device__ __forceinline__ void decode(const u8* b, int, float* q, float* s, float* m) {
        const float d = load_half(b);
        s[0] = s[1] = d;
        m[0] = m[1] = -8.0f * d;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 x = load_u32<2>(b + 2 + 4 * k);
            const u32 lo = x & 0x0F0F0F0Fu, hi = (x >> 4) & 0x0F0F0F0Fu;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                q[4 * k + j] = byte_q<BIASED>(lo, j);
                q[16 + 4 * k + j] = byte_q<BIASED>(hi, j);
            }
        }
        finish_decode<BIASED>(s, m);
    }
    static __device__ __forceinline__ void dequant(const u8* b, int, float* w) {
        const float d = load_half(b);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 q = load_u32<2>(b + 2 + 4 * k);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const u32 x = q >> (8 * j);
                w[4 * k + j] = d * small_u2f(x & 15, 8);
                w[16 + 4 * k + j] = d * small_u2f((x >> 4) & 15, 8);
            }
        }
    }
};

struct Q4_1 : BlockType<20, 32, 1, true> {
    static constexpr int MINS = 1;
    static __device__ __forceinline__ void decode_i8(const u8* b, int, u32* q, float* s, float* m) {
        s[0] = s[1] = load_half(b);
        m[0] = m[1] = load_half(b + 2);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 x = load_u32<4>(b + 4 + 4 * k);
            q[k] = x & 0x0F0F0F0Fu;
            q[4 + k] = (x >> 4) & 0x0F0F0F0Fu;
        }
    }
    template <bool BIASED = WC_BIASED_DECODE != 0>
    static __device__ __forceinline__ void decode(const u8* b, int, float* q, float* s, float* m) {
        s[0] = s[1] = load_half(b);
        m[0] = m[1] = load_half(b + 2);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 x = load_u32<4>(b + 4 + 4 * k);
            const u32 lo = x & 0x0F0F0F0Fu, hi = (x >> 4) & 0x0F0F0F0Fu;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                q[4 * k + j] = byte_q<BIASED>(lo, j);
                q[16 + 4 * k + j] = byte_q<BIASED>(hi, j);
            }
        }
        finish_decode<BIASED>(s, m);
    }
    static __device__ __forceinline__ void dequant(const u8* b, int, float* w) {
        const float d = load_half(b), m = load_half(b + 2);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 q = load_u32<4>(b + 4 + 4 * k);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const u32 x = q >> (8 * j);
                w[4 * k + j] = d * small_u2f(x & 15, 0) + m;
                w[16 + 4 * k + j] = d * small_u2f((x >> 4) & 15, 0) + m;
            }
        }
    }
};

struct Q5_0 : BlockType<22, 32, 1, true> {
    static constexpr int MINS = 0;
    static __device__ __forceinline__ void decode_i8(const u8* b, int, u32* q, float* s, float* m) {
        s[0] = s[1] = load_half(b);
        m[0] = m[1] = 0.0f;
        const u32 qh = load_u32<2>(b + 2);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 x = load_u32<2>(b + 6 + 4 * k);
            q[k] = __vsub4((x & 0x0F0F0F0Fu) | bits_to_byte_bit4((qh >> (4 * k)) & 15), 0x10101010u);
            q[4 + k] = __vsub4(((x >> 4) & 0x0F0F0F0Fu) | bits_to_byte_bit4((qh >> (16 + 4 * k)) & 15), 0x10101010u);
        }
    }
    template <bool BIASED = WC_BIASED_DECODE != 0>
    static __device__ __forceinline__ void decode(const u8* b, int, float* q, float* s, float* m) {
        const float d = load_half(b);
        s[0] = s[1] = d;
        m[0] = m[1] = -16.0f * d;
        const u32 qh = load_u32<2>(b + 2);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 x = load_u32<2>(b + 6 + 4 * k);
            const u32 lo = (x & 0x0F0F0F0Fu) | bits_to_byte_bit4((qh >> (4 * k)) & 15);
            const u32 hi = ((x >> 4) & 0x0F0F0F0Fu) | bits_to_byte_bit4((qh >> (16 + 4 * k)) & 15);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                q[4 * k + j] = byte_q<BIASED>(lo, j);
                q[16 + 4 * k + j] = byte_q<BIASED>(hi, j);
            }
        }
        finish_decode<BIASED>(s, m);
    }
    static __device__ __forceinline__ void dequant(const u8* b, int, float* w) {
        const float d = load_half(b);
        const u32 qh = load_u32<2>(b + 2);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 q = load_u32<2>(b + 6 + 4 * k);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int e = 4 * k + j;
                const u32 x = q >> (8 * j);
                w[e] = d * small_u2f((x & 15) | (((qh >> e) & 1) << 4), 16);
                w[16 + e] = d * small_u2f(((x >> 4) & 15) | (((qh >> (e + 16)) & 1) << 4), 16);
            }
        }
    }
};

struct Q5_1 : BlockType<24, 32, 1, true> {
    static constexpr int MINS = 1;
    static __device__ __forceinline__ void decode_i8(const u8* b, int, u32* q, float* s, float* m) {
        s[0] = s[1] = load_half(b);
        m[0] = m[1] = load_half(b + 2);
        const u32 qh = load_u32<4>(b + 4);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 x = load_u32<8>(b + 8 + 4 * k);
            q[k] = (x & 0x0F0F0F0Fu) | bits_to_byte_bit4((qh >> (4 * k)) & 15);
            q[4 + k] = ((x >> 4) & 0x0F0F0F0Fu) | bits_to_byte_bit4((qh >> (16 + 4 * k)) & 15);
        }
    }
    template <bool BIASED = WC_BIASED_DECODE != 0>
    static __device__ __forceinline__ void decode(const u8* b, int, float* q, float* s, float* m) {
        s[0] = s[1] = load_half(b);
        m[0] = m[1] = load_half(b + 2);
        const u32 qh = load_u32<4>(b + 4);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 x = load_u32<8>(b + 8 + 4 * k);
            const u32 lo = (x & 0x0F0F0F0Fu) | bits_to_byte_bit4((qh >> (4 * k)) & 15);
            const u32 hi = ((x >> 4) & 0x0F0F0F0Fu) | bits_to_byte_bit4((qh >> (16 + 4 * k)) & 15);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                q[4 * k + j] = byte_q<BIASED>(lo, j);
                q[16 + 4 * k + j] = byte_q<BIASED>(hi, j);
            }
        }
        finish_decode<BIASED>(s, m);
    }
    static __device__ __forceinline__ void dequant(const u8* b, int, float* w) {
        const float d = load_half(b), m = load_half(b + 2);
        const u32 qh = load_u32<4>(b + 4);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 q = load_u32<8>(b + 8 + 4 * k);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int e = 4 * k + j;
                const u32 x = q >> (8 * j);
                w[e] = d * small_u2f((x & 15) | (((qh >> e) & 1) << 4), 0) + m;
                w[16 + e] = d * small_u2f(((x >> 4) & 15) | (((qh >> (e + 16)) & 1) << 4), 0) + m;
            }
        }
    }
};

struct Q8_0 : BlockType<34, 32, 1, true> {
    static constexpr int MINS = 0;
    static __device__ __forceinline__ void decode_i8(const u8* b, int, u32* q, float* s, float* m) {
        s[0] = s[1] = load_half(b);
        m[0] = m[1] = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; k++) q[k] = load_u32<2>(b + 2 + 4 * k);
    }
    template <bool BIASED = WC_BIASED_DECODE != 0>
    static __device__ __forceinline__ void decode(const u8* b, int, float* q, float* s, float* m) {
        s[0] = s[1] = load_half(b);
        m[0] = m[1] = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const u32 x = load_u32<2>(b + 2 + 4 * k) ^ 0x80808080u;  // two's complement -> offset 128
#pragma unroll
            for (int j = 0; j < 4; j++) q[4 * k + j] = byte_f(x, j, 128);
        }
    }
    static __device__ __forceinline__ void dequant(const u8* b, int, float* w) {
        const float d = load_half(b);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const u32 q = load_u32<2>(b + 2 + 4 * k);
#pragma unroll
            for (int j = 0; j < 4; j++) w[4 * k + j] = d * small_u2f(((q >> (8 * j)) & 0xffu) ^ 0x80u, 128);
        }
    }
};

struct IQ4_NL : BlockType<18, 32, 1, true> {
    static constexpr int MINS = 0;
    static __device__ __forceinline__ void decode_i8(const u8* b, int, u32* q, float* s, float* m) {
        s[0] = s[1] = load_half(b);
        m[0] = m[1] = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 x = load_u32<2>(b + 2 + 4 * k);
            q[k] = iq4_signed4(x & 0x0F0F0F0Fu);
            q[4 + k] = iq4_signed4((x >> 4) & 0x0F0F0F0Fu);
        }
    }
    template <bool BIASED = WC_BIASED_DECODE != 0>
    static __device__ __forceinline__ void decode(const u8* b, int, float* q, float* s, float* m) {
        s[0] = s[1] = load_half(b);
        m[0] = m[1] = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 x = load_u32<2>(b + 2 + 4 * k);
            const u32 lo = iq4_lookup4(x & 0x0F0F0F0Fu), hi = iq4_lookup4((x >> 4) & 0x0F0F0F0Fu);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                q[4 * k + j] = byte_f(lo, iq4_byte(j), 128);
                q[16 + 4 * k + j] = byte_f(hi, iq4_byte(j), 128);
            }
        }
    }
    static __device__ __forceinline__ void dequant(const u8* b, int, float* w) {
        const float d = load_half(b);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 q = load_u32<2>(b + 2 + 4 * k);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const u32 x = q >> (8 * j);
                w[4 * k + j] = d * iq4_value(x & 15);
                w[16 + 4 * k + j] = d * iq4_value((x >> 4) & 15);
            }
        }
    }
};

// Item `it` of a k-quant block covers weights 32*it .. 32*it+32.

struct Q2_K : BlockType<84, QK_K, 8, true> {
    static constexpr int MINS = 2;
    static constexpr bool HALF_SCALES = true;
    static __device__ __forceinline__ void decode_i8(const u8* b, int it, u32* q, float* s, float* m) {
        const float d = load_half(b + 80), dmin = load_half(b + 82);
        const int shift = 2 * (it % 4);
        const u8* qs = b + 16 + 32 * (it / 4);
#pragma unroll
        for (int g = 0; g < 2; g++) {
            const u32 sc = b[2 * it + g];
            s[g] = d * (float)(sc & 15);
            m[g] = -dmin * (float)(sc >> 4);
#pragma unroll
            for (int k = 0; k < 4; k++) q[4 * g + k] = (load_u32<4>(qs + 16 * g + 4 * k) >> shift) & 0x03030303u;
        }
    }
    template <bool BIASED = WC_BIASED_DECODE != 0>
    static __device__ __forceinline__ void decode(const u8* b, int it, float* q, float* s, float* m) {
        const float d = load_half(b + 80), dmin = load_half(b + 82);
        const int shift = 2 * (it % 4);
        const u8* qs = b + 16 + 32 * (it / 4);
#pragma unroll
        for (int g = 0; g < 2; g++) {
            const u32 sc = b[2 * it + g];
            s[g] = d * (float)(sc & 15);
            m[g] = -dmin * (float)(sc >> 4);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const u32 x = (load_u32<4>(qs + 16 * g + 4 * k) >> shift) & 0x03030303u;
#pragma unroll
                for (int j = 0; j < 4; j++) q[16 * g + 4 * k + j] = byte_q<BIASED>(x, j);
            }
        }
        finish_decode<BIASED>(s, m);
    }
    static __device__ __forceinline__ void dequant(const u8* b, int it, float* w) {
        const float d = load_half(b + 80), dmin = load_half(b + 82);
        const int shift = 2 * (it % 4);
        const u8* qs = b + 16 + 32 * (it / 4);
#pragma unroll
        for (int g = 0; g < 2; g++) {
            const u32 sc = b[2 * it + g];
            const float dl = d * (float)(sc & 15), ml = dmin * (float)(sc >> 4);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const u32 q = load_u32<4>(qs + 16 * g + 4 * k);
#pragma unroll
                for (int j = 0; j < 4; j++) w[16 * g + 4 * k + j] = dl * small_u2f((q >> (8 * j + shift)) & 3, 0) - ml;
            }
        }
    }
};

struct Q3_K : BlockType<110, QK_K, 8, true> {
    static constexpr int MINS = 0;
    static constexpr bool HALF_SCALES = true;
    static __device__ __forceinline__ void decode_i8(const u8* b, int it, u32* q, float* s, float* m) {
        const float d = load_half(b + 108);
        const int shift = 2 * (it % 4);
        const u8* qs = b + 32 + 32 * (it / 4);
#pragma unroll
        for (int g = 0; g < 2; g++) {
            s[g] = d * (float)(scale6(b + 96, 2 * it + g) - 32);
            m[g] = 0.0f;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const u32 low = (load_u32<2>(qs + 16 * g + 4 * k) >> shift) & 0x03030303u;
                const u32 high = (load_u32<2>(b + 16 * g + 4 * k) >> it) & 0x01010101u;
                q[4 * g + k] = __vsub4(low | (high << 2), 0x04040404u);
            }
        }
    }
    static __device__ __forceinline__ int scale6(const u8* sc, int j) {
        const int low = j < 8 ? (sc[j] & 15) : (sc[j - 8] >> 4);
        return low | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4);
    }
    template <bool BIASED = WC_BIASED_DECODE != 0>
    static __device__ __forceinline__ void decode(const u8* b, int it, float* q, float* s, float* m) {
        const float d = load_half(b + 108);
        const int shift = 2 * (it % 4);
        const u8* qs = b + 32 + 32 * (it / 4);
#pragma unroll
        for (int g = 0; g < 2; g++) {
            s[g] = d * (float)(scale6(b + 96, 2 * it + g) - 32);
            m[g] = -4.0f * s[g];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const u32 low = (load_u32<2>(qs + 16 * g + 4 * k) >> shift) & 0x03030303u;
                const u32 high = (load_u32<2>(b + 16 * g + 4 * k) >> it) & 0x01010101u;
                const u32 x = low | (high << 2);
#pragma unroll
                for (int j = 0; j < 4; j++) q[16 * g + 4 * k + j] = byte_q<BIASED>(x, j);
            }
        }
        finish_decode<BIASED>(s, m);
    }
    static __device__ __forceinline__ void dequant(const u8* b, int it, float* w) {
        const float d = load_half(b + 108);
        const int shift = 2 * (it % 4);
        const u8* qs = b + 32 + 32 * (it / 4);
#pragma unroll
        for (int g = 0; g < 2; g++) {
            const float dl = d * (float)(scale6(b + 96, 2 * it + g) - 32);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const u32 q = load_u32<2>(qs + 16 * g + 4 * k);
                const u32 h = load_u32<2>(b + 16 * g + 4 * k);
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    // low - (high ? 0 : 4) == (low | high << 2) - 4
                    const u32 low = (q >> (8 * j + shift)) & 3;
                    const u32 high = (h >> (8 * j + it)) & 1;
                    w[16 * g + 4 * k + j] = dl * small_u2f(low | (high << 2), 4);
                }
            }
        }
    }
};

// The 6-bit scale and min of group j of a Q4_K/Q5_K block.
__device__ __forceinline__ void scale_min_k4(int j, const u8* q, float* sc, float* m) {
    if (j < 4) {
        *sc = (float)(q[j] & 63);
        *m = (float)(q[j + 4] & 63);
    } else {
        *sc = (float)((q[j + 4] & 15) | ((q[j - 4] >> 6) << 4));
        *m = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// decode_i8 reads the block's 16-byte header (d, dmin, the twelve bytes of 6-bit scales and
// mins) in one aligned 16-byte load (blocks are 144 bytes, so headers are 16-byte aligned) and
// picks the item's scale and min out of its words with shifts, instead of two f16 loads and two
// or three byte loads per item (Q4_K_B, kept for the bench: bench/runs/2026-11-26-h100-kq).
struct Q4_K : BlockType<144, QK_K, 8, true> {
    static constexpr int MINS = 1;
    static __device__ __forceinline__ void decode_i8(const u8* b, int it, u32* q, float* s, float* m) {
        const uint4 h = *reinterpret_cast<const uint4*>(b);
        // Scales bytes 0..3 in h.y, 4..7 in h.z, 8..11 in h.w; item j < 4: scale = byte j & 63,
        // min = byte j + 4 & 63; j >= 4: low nibbles of byte j + 4 with the top two bits of
        // bytes j - 4 (scale) and j (min).
        const int j = it & 3, sh = 8 * j;
        const u32 a = h.y >> sh, c = h.z >> sh, e = h.w >> sh;
        const u32 sc = it < 4 ? a & 63 : (e & 15) | ((a >> 2) & 48);
        const u32 mn = it < 4 ? c & 63 : ((e >> 4) & 15) | ((c >> 2) & 48);
        const float2 dm = __half22float2(*reinterpret_cast<const __half2*>(&h.x));
        s[0] = s[1] = dm.x * (float)sc;
        m[0] = m[1] = -(dm.y * (float)mn);
        const int shift = 4 * (it % 2);
        const uint4* qs = reinterpret_cast<const uint4*>(b + 16 + 32 * (it / 2));
#pragma unroll
        for (int v = 0; v < 2; v++) {
            const uint4 q4 = qs[v];
            q[4 * v] = (q4.x >> shift) & 0x0F0F0F0Fu;
            q[4 * v + 1] = (q4.y >> shift) & 0x0F0F0F0Fu;
            q[4 * v + 2] = (q4.z >> shift) & 0x0F0F0F0Fu;
            q[4 * v + 3] = (q4.w >> shift) & 0x0F0F0F0Fu;
        }
    }
    template <bool BIASED = WC_BIASED_DECODE != 0>
    static __device__ __forceinline__ void decode(const u8* b, int it, float* q, float* s, float* m) {
        float sc, mn;
        scale_min_k4(it, b + 4, &sc, &mn);
        s[0] = s[1] = load_half(b) * sc;
        m[0] = m[1] = -(load_half(b + 2) * mn);
        const int shift = 4 * (it % 2);
        const uint4* qs = reinterpret_cast<const uint4*>(b + 16 + 32 * (it / 2));
#pragma unroll
        for (int v = 0; v < 2; v++) {
            const uint4 q4 = qs[v];
            const u32 qw[4] = {q4.x, q4.y, q4.z, q4.w};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const u32 x = (qw[k] >> shift) & 0x0F0F0F0Fu;
#pragma unroll
                for (int j = 0; j < 4; j++) q[16 * v + 4 * k + j] = byte_q<BIASED>(x, j);
            }
        }
        finish_decode<BIASED>(s, m);
    }
    static __device__ __forceinline__ void dequant(const u8* b, int it, float* w) {
        float sc, m;
        scale_min_k4(it, b + 4, &sc, &m);
        const float dl = load_half(b) * sc, ml = load_half(b + 2) * m;
        const int shift = 4 * (it % 2);
        const uint4* qs = reinterpret_cast<const uint4*>(b + 16 + 32 * (it / 2));
#pragma unroll
        for (int v = 0; v < 2; v++) {
            const uint4 q4 = qs[v];
            const u32 qw[4] = {q4.x, q4.y, q4.z, q4.w};
#pragma unroll
            for (int k = 0; k < 4; k++)
#pragma unroll
                for (int j = 0; j < 4; j++) w[16 * v + 4 * k + j] = dl * small_u2f((qw[k] >> (8 * j + shift)) & 15, 0) - ml;
        }
    }
};

// Q4_K's previous decode_i8 (two f16 loads and two or three byte loads per item), a candidate
// decoding for the bench (FOR_EACH_CANDIDATE_TYPE).
struct Q4_K_B : Q4_K {
    static __device__ __forceinline__ void decode_i8(const u8* b, int it, u32* q, float* s, float* m) {
        float sc, mn;
        scale_min_k4(it, b + 4, &sc, &mn);
        s[0] = s[1] = load_half(b) * sc;
        m[0] = m[1] = -(load_half(b + 2) * mn);
        const int shift = 4 * (it % 2);
        const uint4* qs = reinterpret_cast<const uint4*>(b + 16 + 32 * (it / 2));
#pragma unroll
        for (int v = 0; v < 2; v++) {
            const uint4 q4 = qs[v];
            q[4 * v] = (q4.x >> shift) & 0x0F0F0F0Fu;
            q[4 * v + 1] = (q4.y >> shift) & 0x0F0F0F0Fu;
            q[4 * v + 2] = (q4.z >> shift) & 0x0F0F0F0Fu;
            q[4 * v + 3] = (q4.w >> shift) & 0x0F0F0F0Fu;
        }
    }
};

struct Q5_K : BlockType<176, QK_K, 8, true> {
    static constexpr int MINS = 1;
    static __device__ __forceinline__ void decode_i8(const u8* b, int it, u32* q, float* s, float* m) {
        float sc, mn;
        scale_min_k4(it, b + 4, &sc, &mn);
        s[0] = s[1] = load_half(b) * sc;
        m[0] = m[1] = -(load_half(b + 2) * mn);
        const int shift = 4 * (it % 2);
        const uint4* qs = reinterpret_cast<const uint4*>(b + 48 + 32 * (it / 2));
        const uint4* qh = reinterpret_cast<const uint4*>(b + 16);
#pragma unroll
        for (int v = 0; v < 2; v++) {
            const uint4 q4 = qs[v], h4 = qh[v];
            const u32 qw[4] = {q4.x, q4.y, q4.z, q4.w};
            const u32 hw[4] = {h4.x, h4.y, h4.z, h4.w};
#pragma unroll
            for (int k = 0; k < 4; k++) q[4 * v + k] = ((qw[k] >> shift) & 0x0F0F0F0Fu) | (((hw[k] >> it) & 0x01010101u) << 4);
        }
    }
    template <bool BIASED = WC_BIASED_DECODE != 0>
    static __device__ __forceinline__ void decode(const u8* b, int it, float* q, float* s, float* m) {
        float sc, mn;
        scale_min_k4(it, b + 4, &sc, &mn);
        s[0] = s[1] = load_half(b) * sc;
        m[0] = m[1] = -(load_half(b + 2) * mn);
        const int shift = 4 * (it % 2);
        const uint4* qs = reinterpret_cast<const uint4*>(b + 48 + 32 * (it / 2));
        const uint4* qh = reinterpret_cast<const uint4*>(b + 16);
#pragma unroll
        for (int v = 0; v < 2; v++) {
            const uint4 q4 = qs[v], h4 = qh[v];
            const u32 qw[4] = {q4.x, q4.y, q4.z, q4.w};
            const u32 hw[4] = {h4.x, h4.y, h4.z, h4.w};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const u32 x = ((qw[k] >> shift) & 0x0F0F0F0Fu) | (((hw[k] >> it) & 0x01010101u) << 4);
#pragma unroll
                for (int j = 0; j < 4; j++) q[16 * v + 4 * k + j] = byte_q<BIASED>(x, j);
            }
        }
        finish_decode<BIASED>(s, m);
    }
    static __device__ __forceinline__ void dequant(const u8* b, int it, float* w) {
        float sc, m;
        scale_min_k4(it, b + 4, &sc, &m);
        const float dl = load_half(b) * sc, ml = load_half(b + 2) * m;
        const int shift = 4 * (it % 2);
        const uint4* qs = reinterpret_cast<const uint4*>(b + 48 + 32 * (it / 2));
        const uint4* qh = reinterpret_cast<const uint4*>(b + 16);
#pragma unroll
        for (int v = 0; v < 2; v++) {
            const uint4 q4 = qs[v], h4 = qh[v];
            const u32 qw[4] = {q4.x, q4.y, q4.z, q4.w};
            const u32 hw[4] = {h4.x, h4.y, h4.z, h4.w};
#pragma unroll
            for (int k = 0; k < 4; k++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const u32 q = ((qw[k] >> (8 * j + shift)) & 15) | (((hw[k] >> (8 * j + it)) & 1) << 4);
                    w[16 * v + 4 * k + j] = dl * small_u2f(q, 0) - ml;
                }
        }
    }
};

struct Q6_K : BlockType<210, QK_K, 8, true> {
    static constexpr int MINS = 0;
    static constexpr bool HALF_SCALES = true;
    static __device__ __forceinline__ void decode_i8(const u8* b, int it, u32* q, float* s, float* m) {
        const float d = load_half(b + 208);
        const int h = it / 4, k = it % 4;
        const u8* ql = b + 64 * h + 32 * (k & 1);
        const u8* qh = b + 128 + 32 * h;
        const int lshift = 4 * (k >> 1), hshift = 2 * k;
        const i8* scales = reinterpret_cast<const i8*>(b + 192 + 8 * h + 2 * k);
#pragma unroll
        for (int g = 0; g < 2; g++) {
            s[g] = d * (float)scales[g];
            m[g] = 0.0f;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const u32 l = (load_u32<2>(ql + 16 * g + 4 * c) >> lshift) & 0x0F0F0F0Fu;
                const u32 hb = (load_u32<2>(qh + 16 * g + 4 * c) >> hshift) & 0x03030303u;
                q[4 * g + c] = __vsub4(l | (hb << 4), 0x20202020u);
            }
        }
    }
    template <bool BIASED = WC_BIASED_DECODE != 0>
    static __device__ __forceinline__ void decode(const u8* b, int it, float* q, float* s, float* m) {
        const float d = load_half(b + 208);
        const int h = it / 4, k = it % 4;
        const u8* ql = b + 64 * h + 32 * (k & 1);
        const u8* qh = b + 128 + 32 * h;
        const int lshift = 4 * (k >> 1), hshift = 2 * k;
        const i8* scales = reinterpret_cast<const i8*>(b + 192 + 8 * h + 2 * k);
#pragma unroll
        for (int g = 0; g < 2; g++) {
            s[g] = d * (float)scales[g];
            m[g] = -32.0f * s[g];
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const u32 l = (load_u32<2>(ql + 16 * g + 4 * c) >> lshift) & 0x0F0F0F0Fu;
                const u32 hb = (load_u32<2>(qh + 16 * g + 4 * c) >> hshift) & 0x03030303u;
                const u32 x = l | (hb << 4);
#pragma unroll
                for (int j = 0; j < 4; j++) q[16 * g + 4 * c + j] = byte_q<BIASED>(x, j);
            }
        }
        finish_decode<BIASED>(s, m);
    }
    static __device__ __forceinline__ void dequant(const u8* b, int it, float* w) {
        const float d = load_half(b + 208);
        const int h = it / 4, k = it % 4;
        const u8* ql = b + 64 * h + 32 * (k & 1);
        const u8* qh = b + 128 + 32 * h;
        const int lshift = 4 * (k >> 1), hshift = 2 * k;
        const i8* scales = reinterpret_cast<const i8*>(b + 192 + 8 * h + 2 * k);
#pragma unroll
        for (int g = 0; g < 2; g++) {
            const float dl = d * (float)scales[g];
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const u32 l = load_u32<2>(ql + 16 * g + 4 * c);
                const u32 hb = load_u32<2>(qh + 16 * g + 4 * c);
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const u32 q = ((l >> (8 * j + lshift)) & 15) | (((hb >> (8 * j + hshift)) & 3) << 4);
                    w[16 * g + 4 * c + j] = dl * small_u2f(q, 32);
                }
            }
        }
    }
};

// Q6_K repacked at upload (src/repack.rs) so that every load is 16-byte aligned: a row of nb
// blocks holds first each block's ql[128] and qh[64] (192 bytes, at 192 b), then each block's
// 16 scales (at 192 nb + 16 b), then each block's f16 d (at 208 nb + 2 b): the same 210 bytes a
// block. A file block is 2-byte aligned at best, so its 32-byte runs took 16 two-byte loads.
// ROW_SPLIT types are read through decode_i8_at / dequant_at (a block is found from its row).
struct Q6_K_R : BlockType<210, QK_K, 8, true> {
    static constexpr bool ROW_SPLIT = true;
    static constexpr bool HALF_SCALES = true;
    struct Parts {
        const u8* ql;
        const u8* qh;
        const i8* sc;
        float d;
        int lshift, hshift;
    };
    static __device__ __forceinline__ Parts parts(const u8* row, int blk, int nb, int it) {
        const int h = it / 4, k = it % 4;
        const u8* qb = row + 192 * (u64)blk;
        return Parts{qb + 64 * h + 32 * (k & 1), qb + 128 + 32 * h,
                     reinterpret_cast<const i8*>(row + 192 * (u64)nb + 16 * blk + 8 * h + 2 * k),
                     load_half(row + 208 * (u64)nb + 2 * blk), 4 * (k >> 1), 2 * k};
    }
    static __device__ __forceinline__ void decode_i8(const u8* row, int blk, int nb, int it, u32* q, float* s,
                                                     float* m) {
        const Parts p = parts(row, blk, nb, it);
        s[0] = p.d * (float)p.sc[0];
        s[1] = p.d * (float)p.sc[1];
        m[0] = m[1] = 0.0f;
#pragma unroll
        for (int g = 0; g < 2; g++) {
            const uint4 l4 = reinterpret_cast<const uint4*>(p.ql)[g], h4 = reinterpret_cast<const uint4*>(p.qh)[g];
            const u32 lw[4] = {l4.x, l4.y, l4.z, l4.w}, hw[4] = {h4.x, h4.y, h4.z, h4.w};
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const u32 l = (lw[c] >> p.lshift) & 0x0F0F0F0Fu;
                const u32 hb = (hw[c] >> p.hshift) & 0x03030303u;
                q[4 * g + c] = __vsub4(l | (hb << 4), 0x20202020u);
            }
        }
    }
    static __device__ __forceinline__ void dequant(const u8* row, int blk, int nb, int it, float* w) {
        const Parts p = parts(row, blk, nb, it);
#pragma unroll
        for (int g = 0; g < 2; g++) {
            const float dl = p.d * (float)p.sc[g];
            const uint4 l4 = reinterpret_cast<const uint4*>(p.ql)[g], h4 = reinterpret_cast<const uint4*>(p.qh)[g];
            const u32 lw[4] = {l4.x, l4.y, l4.z, l4.w}, hw[4] = {h4.x, h4.y, h4.z, h4.w};
#pragma unroll
            for (int c = 0; c < 4; c++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const u32 q = ((lw[c] >> (8 * j + p.lshift)) & 15) | (((hw[c] >> (8 * j + p.hshift)) & 3) << 4);
                    w[16 * g + 4 * c + j] = dl * small_u2f(q, 32);
                }
        }
    }
};

// Item `it` of block `blk` of a row of nb blocks, whatever the type's device layout.
template <class T>
__device__ __forceinline__ void decode_i8_at(const u8* row, int blk, int nb, int it, u32* q, float* s, float* m) {
    if constexpr (T::ROW_SPLIT) T::decode_i8(row, blk, nb, it, q, s, m);
    else T::decode_i8(row + (u64)blk * T::BYTES, it, q, s, m);
}
template <class T>
__device__ __forceinline__ void dequant_at(const u8* row, int blk, int nb, int it, float* w) {
    if constexpr (T::ROW_SPLIT) T::dequant(row, blk, nb, it, w);
    else T::dequant(row + (u64)blk * T::BYTES, it, w);
}

struct IQ4_XS : BlockType<136, QK_K, 8, true> {
    static constexpr int MINS = 0;
    static __device__ __forceinline__ void decode_i8(const u8* b, int it, u32* q, float* s, float* m) {
        const u32 scales_h = *reinterpret_cast<const u16*>(b + 2);
        const int ls = ((b[4 + it / 2] >> (4 * (it % 2))) & 15) | (((scales_h >> (2 * it)) & 3) << 4);
        s[0] = s[1] = load_half(b) * (float)(ls - 32);
        m[0] = m[1] = 0.0f;
        const uint2* qs = reinterpret_cast<const uint2*>(b + 8 + 16 * it);
#pragma unroll
        for (int v = 0; v < 2; v++) {
            const uint2 q2 = qs[v];
            q[2 * v] = iq4_signed4(q2.x & 0x0F0F0F0Fu);
            q[2 * v + 1] = iq4_signed4(q2.y & 0x0F0F0F0Fu);
            q[4 + 2 * v] = iq4_signed4((q2.x >> 4) & 0x0F0F0F0Fu);
            q[4 + 2 * v + 1] = iq4_signed4((q2.y >> 4) & 0x0F0F0F0Fu);
        }
    }
    template <bool BIASED = WC_BIASED_DECODE != 0>
    static __device__ __forceinline__ void decode(const u8* b, int it, float* q, float* s, float* m) {
        const u32 scales_h = *reinterpret_cast<const u16*>(b + 2);
        const int ls = ((b[4 + it / 2] >> (4 * (it % 2))) & 15) | (((scales_h >> (2 * it)) & 3) << 4);
        s[0] = s[1] = load_half(b) * (float)(ls - 32);
        m[0] = m[1] = 0.0f;
        const uint2* qs = reinterpret_cast<const uint2*>(b + 8 + 16 * it);
#pragma unroll
        for (int v = 0; v < 2; v++) {
            const uint2 q2 = qs[v];
            const u32 qw[2] = {q2.x, q2.y};
#pragma unroll
            for (int k = 0; k < 2; k++) {
                const u32 lo = iq4_lookup4(qw[k] & 0x0F0F0F0Fu), hi = iq4_lookup4((qw[k] >> 4) & 0x0F0F0F0Fu);
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    q[8 * v + 4 * k + j] = byte_f(lo, iq4_byte(j), 128);
                    q[16 + 8 * v + 4 * k + j] = byte_f(hi, iq4_byte(j), 128);
                }
            }
        }
    }
    static __device__ __forceinline__ void dequant(const u8* b, int it, float* w) {
        const u32 scales_h = *reinterpret_cast<const u16*>(b + 2);
        const int ls = ((b[4 + it / 2] >> (4 * (it % 2))) & 15) | (((scales_h >> (2 * it)) & 3) << 4);
        const float dl = load_half(b) * (float)(ls - 32);
        const uint2* qs = reinterpret_cast<const uint2*>(b + 8 + 16 * it);
#pragma unroll
        for (int v = 0; v < 2; v++) {
            const uint2 q2 = qs[v];
            const u32 qw[2] = {q2.x, q2.y};
#pragma unroll
            for (int k = 0; k < 2; k++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const u32 x = qw[k] >> (8 * j);
                    w[8 * v + 4 * k + j] = dl * iq4_value(x & 15);
                    w[16 + 8 * v + 4 * k + j] = dl * iq4_value((x >> 4) & 15);
                }
        }
    }
};

// Plain floats, 32 to an item so they share the quantized types' kernels.
struct F32 : BlockType<128, 32, 1> {
    static __device__ __forceinline__ void dequant(const u8* b, int, float* w) {
        const float4* p = reinterpret_cast<const float4*>(b);
#pragma unroll
        for (int v = 0; v < 8; v++) {
            const float4 f = p[v];
            w[4 * v] = f.x; w[4 * v + 1] = f.y; w[4 * v + 2] = f.z; w[4 * v + 3] = f.w;
        }
    }
};

struct F16 : BlockType<64, 32, 1> {
    static __device__ __forceinline__ void dequant(const u8* b, int, float* w) {
        const uint4* p = reinterpret_cast<const uint4*>(b);
#pragma unroll
        for (int v = 0; v < 4; v++) {
            const uint4 q = p[v];
            const u32 qw[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&qw[k]));
                w[8 * v + 2 * k] = f.x;
                w[8 * v + 2 * k + 1] = f.y;
            }
        }
    }
};

struct BF16 : BlockType<64, 32, 1> {
    static __device__ __forceinline__ void dequant(const u8* b, int, float* w) {
        const uint4* p = reinterpret_cast<const uint4*>(b);
#pragma unroll
        for (int v = 0; v < 4; v++) {
            const uint4 q = p[v];
            const u32 qw[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                w[8 * v + 2 * k] = __uint_as_float(qw[k] << 16);
                w[8 * v + 2 * k + 1] = __uint_as_float(qw[k] & 0xffff0000u);
            }
        }
    }
};

// Instantiates `M(name, Type)` for every weight type; `name` is TensorType::name() in Rust.
#define FOR_EACH_WEIGHT_TYPE(M) \
    M(f32, F32)                 \
    M(f16, F16)                 \
    M(bf16, BF16)               \
    M(q4_0, Q4_0)               \
    M(q4_1, Q4_1)               \
    M(q5_0, Q5_0)               \
    M(q5_1, Q5_1)               \
    M(q8_0, Q8_0)               \
    M(q2_K, Q2_K)               \
    M(q3_K, Q3_K)               \
    M(q4_K, Q4_K)               \
    M(q5_K, Q5_K)               \
    M(q6_K, Q6_K)               \
    M(iq4_nl, IQ4_NL)           \
    M(iq4_xs, IQ4_XS)

// Device layouts made at upload (src/repack.rs), read by the int8 matvec, the prompt path's
// dequantization and the embedding gather (not by matvec.cu: CudaOptions::f32_matvec keeps the
// file layout).
#define FOR_EACH_REPACKED_TYPE(M) M(q6_K_r, Q6_K_R)

// Other decodings of a file layout, for the bandwidth bench's candidate columns only
// (ops::mmvq::CANDIDATE_DECODES) and the host test.
#define FOR_EACH_CANDIDATE_TYPE(M) M(q4_K_b, Q4_K_B)
