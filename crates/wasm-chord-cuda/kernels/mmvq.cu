// The int8 matvec for decoding (one token) and small batches (up to 8 tokens), for every
// quantized weight type, after llama.cpp's mmvq: the activations are quantized once per matmul
// to signed bytes in blocks of 32 with a scale and the sum of the bytes (`quantize_q8`), and
// each 32-weight item is dotted with them in integers (__dp4a on four bytes at a time), with one
// float multiply-add per half item for the scales and offsets. The weights are read straight
// from global memory into registers (no shared-memory staging, no barrier before the end): a
// thread takes one item per row of its block, so the only latency it waits on is its own loads.
//
// Kernels per type: mmvq_<type> (one token), mmvq8_<type> (up to 8 tokens per weight pass,
// grid.y over token groups) with the plain/accumulating epilogue, and mmvq_gate_<type> /
// mmvq8_gate_<type>: the gate and up projections of a gated feed-forward in one pass over x,
// writing act(gate) * up; mmvq3_<type>: one token through up to three weights (q, k, v).
#include "mmvq.cuh"

// One warp per block of 32 values (all tokens' rows are contiguous, cols % 32 == 0): the scale
// is the block's largest magnitude / 127 and q = round(x / scale), ties to even, as ggml's
// quantize_row_q8_0/q8_1 (the scale is kept in f32 here, not rounded to f16).
extern "C" __global__ void quantize_q8(const float* __restrict__ x, i8* __restrict__ xq, float2* __restrict__ xd,
                                       int n_blocks) {
    PDL_ENTER();
    const int blk = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (blk >= n_blocks) return;
    const float v = x[(u64)blk * 32 + lane];
    const float amax = warp_max(fabsf(v));
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    const int q = __float2int_rn(v * id);
    xq[(u64)blk * 32 + lane] = (i8)q;
    const float sum = warp_sum((float)q);
    if (lane == 0) xd[blk] = make_float2(amax / 127.0f, sum);
}

// (warps per block, rows per block, item-loop unrolling, items per thread) of the one-token
// kernels, per type: the fastest over 7B's four decode shapes of the candidates in
// ops::mmvq::VARIANTS (bench/runs/2026-11-26-h100-mmvq/call1, H100; they differ by at most
// ~10%; Q6_K_R: bench/runs/2026-11-26-h100-repack, where no type gained from IPT > 1). The gate kernels
// take the same warps and unrolling with one row of each weight; the 8-token kernels 4 warps of
// one row. ops/mmvq.rs mirrors WARPS and ROWS (`config`).
template <int W, int R, int U, int I = 1>
struct MmvqShape { static constexpr int WARPS = W, ROWS = R, UNROLL = U, IPT = I; };
template <class T> struct MmvqCfg : MmvqShape<4, 2, 2> {};
template <> struct MmvqCfg<Q4_0> : MmvqShape<4, 4, 2> {};
template <> struct MmvqCfg<IQ4_XS> : MmvqShape<4, 4, 2> {};
template <> struct MmvqCfg<Q4_1> : MmvqShape<4, 1, 1> {};
template <> struct MmvqCfg<Q8_0> : MmvqShape<4, 1, 1> {};
template <> struct MmvqCfg<Q6_K> : MmvqShape<4, 1, 1> {};
template <> struct MmvqCfg<Q6_K_R> : MmvqShape<4, 4, 2> {};
template <> struct MmvqCfg<Q2_K> : MmvqShape<2, 2, 1> {};
template <> struct MmvqCfg<Q5_K> : MmvqShape<2, 2, 1> {};
template <> struct MmvqCfg<IQ4_NL> : MmvqShape<2, 2, 1> {};
template <class T> struct Mmvq8Cfg : MmvqShape<4, 1, 1> {};

#define MMVQ_KERNELS(name, T)                                                                                          \
    extern "C" __global__ void __launch_bounds__(MmvqCfg<T>::WARPS * 32)                                               \
        mmvq_##name(const u8* w, u64 rs, const i8* xq, const float2* xd, const float* bias, float* y, int rows,        \
                    int cols, int n_tok, int flags) {                                                                  \
        using C = MmvqCfg<T>;                                                                                          \
        mmvq<T, 1, C::WARPS, C::ROWS, false, C::UNROLL, C::IPT>(w, nullptr, rs, xq, xd, bias, y, rows, cols, n_tok,    \
                                                                flags);                                                \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(Mmvq8Cfg<T>::WARPS * 32)                                              \
        mmvq8_##name(const u8* w, u64 rs, const i8* xq, const float2* xd, const float* bias, float* y, int rows,       \
                     int cols, int n_tok, int flags) {                                                                 \
        mmvq<T, 8, Mmvq8Cfg<T>::WARPS, Mmvq8Cfg<T>::ROWS, false>(w, nullptr, rs, xq, xd, bias, y, rows, cols, n_tok,   \
                                                                 flags);                                               \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(MmvqCfg<T>::WARPS * 32)                                               \
        mmvq_gate_##name(const u8* gate, const u8* up, u64 rs, const i8* xq, const float2* xd, float* y, int rows,     \
                         int cols, int n_tok, int act) {                                                               \
        using C = MmvqCfg<T>;                                                                                          \
        mmvq<T, 1, C::WARPS, 1, true, C::UNROLL, C::IPT>(gate, up, rs, xq, xd, nullptr, y, rows, cols, n_tok, act);    \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(Mmvq8Cfg<T>::WARPS * 32)                                              \
        mmvq8_gate_##name(const u8* gate, const u8* up, u64 rs, const i8* xq, const float2* xd, float* y, int rows,    \
                          int cols, int n_tok, int act) {                                                              \
        mmvq<T, 8, Mmvq8Cfg<T>::WARPS, 1, true>(gate, up, rs, xq, xd, nullptr, y, rows, cols, n_tok, act);             \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(MmvqCfg<T>::WARPS * 32)                                               \
        mmvq3_##name(const Mmvq3Args a, const i8* xq, const float2* xd, int cols) {                                    \
        mmvq3<T, MmvqCfg<T>::WARPS, MmvqCfg<T>::ROWS, MmvqCfg<T>::UNROLL>(a, xq, xd, cols);                            \
    }

FOR_EACH_QUANT_TYPE(MMVQ_KERNELS)
