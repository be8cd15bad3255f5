// Host build of kernels/dequant.cuh, with the few CUDA intrinsics it uses emulated, so the
// block decoding of every weight type is checked against core's dequantizers without a GPU
// (tests/dequant_host.rs). Usage: dequant_host TYPE IN OUT: IN holds whole blocks of TYPE,
// OUT receives their weights as little-endian f32.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#define WASM_CHORD_HOST 1
#define __device__
#define __host__
#define __forceinline__ inline

struct __half { uint16_t bits; };
struct __half2 { __half x, y; };
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct uint2 { unsigned x, y; };
struct uint4 { unsigned x, y, z, w; };

static float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static float __int_as_float(unsigned u) { return __uint_as_float(u); }

static float __half2float(__half h) {
    const unsigned sign = (h.bits >> 15) & 1, exp = (h.bits >> 10) & 31, mant = h.bits & 1023;
    unsigned bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign << 31;
        } else {  // subnormal: normalize
            int e = -1;
            unsigned m = mant;
            do { e++; m <<= 1; } while ((m & 1024) == 0);
            bits = (sign << 31) | ((unsigned)(127 - 15 - e) << 23) | ((m & 1023) << 13);
        }
    } else if (exp == 31) {
        bits = (sign << 31) | (255u << 23) | (mant << 13);
    } else {
        bits = (sign << 31) | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    return __uint_as_float(bits);
}

static float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }

// Byte i of the result is byte (s >> 4i) & 7 of the 8 bytes y:x.
static unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const uint64_t v = (uint64_t)x | ((uint64_t)y << 32);
    unsigned r = 0;
    for (int i = 0; i < 4; i++) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}

// Per-byte subtraction modulo 256.
static unsigned __vsub4(unsigned a, unsigned b) {
    unsigned r = 0;
    for (int i = 0; i < 4; i++) r |= ((((a >> (8 * i)) & 0xff) - ((b >> (8 * i)) & 0xff)) & 0xff) << (8 * i);
    return r;
}

#include "dequant.cuh"

// The int8 decoding (signed bytes, scale and offset per half item) must give the same weights
// as dequant; a mismatch exits with 7.
template <class T>
static void check_decode_i8(const u8* b, int it, const float* w) {
    if constexpr (T::SPLIT) {
        unsigned q[8];
        float s[2], m[2];
        T::decode_i8(b, it, q, s, m);
        for (int j = 0; j < 32; j++) {
            const int qi = (int)(signed char)((q[j / 4] >> (8 * (j % 4))) & 0xff);
            const float mj = T::MINS == 0 ? 0.0f : m[j / 16];
            const float sj = T::HALF_SCALES ? s[j / 16] : s[0];
            const float r = sj * (float)qi + mj;
            const float scale = std::fabs(sj) * 128.0f + std::fabs(mj) + 1e-30f;
            if (std::fabs(r - w[j]) > 1e-6f * scale) {
                std::fprintf(stderr, "decode_i8 item %d weight %d: q %d s %g m %g -> %g, dequant %g\n", it, j, qi, sj, mj, r, w[j]);
                std::exit(7);
            }
        }
    }
}

// The split decoding (q, scale and offset per half item) of the types that have it must give
// the same weights as dequant, up to the rounding of s * q + m; a mismatch exits with 6.
template <class T>
static void check_decode(const u8* b, int it, const float* w) {
    if constexpr (T::SPLIT) {
        float q[32], s[2], m[2];
        T::decode(b, it, q, s, m);
        for (int j = 0; j < 32; j++) {
            const float r = s[j / 16] * q[j] + m[j / 16];
            const float scale = std::fabs(s[j / 16]) * 64.0f + std::fabs(m[j / 16]) + 1e-30f;
            // With WC_BIASED_DECODE, q is 0.5 + (an integer) / 256 and s is 256 times larger.
            const float qi = WC_BIASED_DECODE && q[j] < 1.0f ? q[j] * 256.0f - 128.0f : q[j];
            if (qi != (float)(int)qi || std::fabs(r - w[j]) > 1e-6f * scale) {
                std::fprintf(stderr, "decode item %d weight %d: q %g s %g m %g -> %g, dequant %g\n", it, j, q[j], s[j / 16], m[j / 16], r, w[j]);
                std::exit(6);
            }
        }
    }
}

template <class T>
static std::vector<float> dequantize(const std::vector<u8>& in) {
    const size_t n_blocks = in.size() / T::BYTES;
    std::vector<float> out(n_blocks * T::QK);
    for (size_t b = 0; b < n_blocks; b++)
        for (int it = 0; it < T::ITEMS; it++) {
            float w[32];
            T::dequant(in.data() + b * T::BYTES, it, w);
            check_decode<T>(in.data() + b * T::BYTES, it, w);
            check_decode_i8<T>(in.data() + b * T::BYTES, it, w);
            std::memcpy(&out[b * T::QK + 32 * it], w, sizeof w);
        }
    return out;
}

// A repacked layout (ROW_SPLIT): IN is one row of whole blocks; decode_i8 checked as above.
template <class T>
static std::vector<float> dequantize_row(const std::vector<u8>& in) {
    const int nb = (int)(in.size() / T::BYTES);
    std::vector<float> out((size_t)nb * T::QK);
    for (int b = 0; b < nb; b++)
        for (int it = 0; it < T::ITEMS; it++) {
            float w[32];
            dequant_at<T>(in.data(), b, nb, it, w);
            unsigned q[8];
            float s[2], m[2];
            decode_i8_at<T>(in.data(), b, nb, it, q, s, m);
            for (int j = 0; j < 32; j++) {
                const int qi = (int)(signed char)((q[j / 4] >> (8 * (j % 4))) & 0xff);
                const float r = (T::HALF_SCALES ? s[j / 16] : s[0]) * (float)qi + (T::MINS == 0 ? 0.0f : m[j / 16]);
                if (std::fabs(r - w[j]) > 1e-6f * (std::fabs(s[j / 16]) * 128.0f + 1e-30f)) {
                    std::fprintf(stderr, "decode_i8_at block %d item %d weight %d: %g, dequant %g\n", b, it, j, r, w[j]);
                    std::exit(7);
                }
            }
            std::memcpy(&out[(size_t)b * T::QK + 32 * it], w, sizeof w);
        }
    return out;
}

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s TYPE IN OUT\n", argv[0]);
        return 2;
    }
    const std::string ty = argv[1];
    std::vector<u8> in;
    {
        FILE* f = std::fopen(argv[2], "rb");
        if (!f) return 3;
        u8 buf[4096];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) in.insert(in.end(), buf, buf + n);
        std::fclose(f);
    }
    std::vector<float> out;
#define DISPATCH(name, T) \
    if (ty == #name) out = dequantize<T>(in);
    FOR_EACH_WEIGHT_TYPE(DISPATCH)
#define DISPATCH_ROW(name, T) \
    if (ty == #name) out = dequantize_row<T>(in);
    FOR_EACH_REPACKED_TYPE(DISPATCH_ROW)
    FOR_EACH_CANDIDATE_TYPE(DISPATCH)
    if (out.empty()) {
        std::fprintf(stderr, "unknown type or empty input: %s\n", ty.c_str());
        return 4;
    }
    FILE* f = std::fopen(argv[3], "wb");
    if (!f || std::fwrite(out.data(), sizeof(float), out.size(), f) != out.size()) return 5;
    std::fclose(f);
    return 0;
}
