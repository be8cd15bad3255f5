// Shared by every kernel file: quant block layouts mirroring crates/wasm-chord-core/src/quant/blocks.rs
// (and ggml's ggml-common.h), helpers for loads and warp reductions.
// tests/block_layout.rs parses the static_asserts below and compares them with the Rust structs.
// With WASM_CHORD_HOST defined, only the layouts and load helpers are compiled, for the host
// build of the dequantizers in tests/host/dequant_host.cpp (which emulates the intrinsics).
#pragma once
#ifndef WASM_CHORD_HOST
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#endif

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define QK_K 256
#ifndef INFINITY
// NVRTC has no math.h.
#define INFINITY __int_as_float(0x7f800000)
#endif

struct block_q4_0 { __half d; u8 qs[16]; };
struct block_q4_1 { __half d; __half m; u8 qs[16]; };
struct block_q5_0 { __half d; u8 qh[4]; u8 qs[16]; };
struct block_q5_1 { __half d; __half m; u8 qh[4]; u8 qs[16]; };
struct block_q8_0 { __half d; i8 qs[32]; };
struct block_q2_K { u8 scales[QK_K / 16]; u8 qs[QK_K / 4]; __half d; __half dmin; };
struct block_q3_K { u8 hmask[QK_K / 8]; u8 qs[QK_K / 4]; u8 scales[12]; __half d; };
struct block_q4_K { __half d; __half dmin; u8 scales[12]; u8 qs[QK_K / 2]; };
struct block_q5_K { __half d; __half dmin; u8 scales[12]; u8 qh[QK_K / 8]; u8 qs[QK_K / 2]; };
struct block_q6_K { u8 ql[QK_K / 2]; u8 qh[QK_K / 4]; i8 scales[QK_K / 16]; __half d; };
struct block_q8_K { float d; i8 qs[QK_K]; short bsums[QK_K / 16]; };
struct block_iq4_nl { __half d; u8 qs[16]; };
struct block_iq4_xs { __half d; u16 scales_h; u8 scales_l[QK_K / 64]; u8 qs[QK_K / 2]; };

static_assert(sizeof(block_q4_0) == 18, "block_q4_0");
static_assert(sizeof(block_q4_1) == 20, "block_q4_1");
static_assert(sizeof(block_q5_0) == 22, "block_q5_0");
static_assert(sizeof(block_q5_1) == 24, "block_q5_1");
static_assert(sizeof(block_q8_0) == 34, "block_q8_0");
static_assert(sizeof(block_q2_K) == 84, "block_q2_K");
static_assert(sizeof(block_q3_K) == 110, "block_q3_K");
static_assert(sizeof(block_q4_K) == 144, "block_q4_K");
static_assert(sizeof(block_q5_K) == 176, "block_q5_K");
static_assert(sizeof(block_q6_K) == 210, "block_q6_K");
static_assert(sizeof(block_q8_K) == 292, "block_q8_K");
static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl");
static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs");

#ifndef WASM_CHORD_HOST
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a block of up to 32 warps; `scratch` holds 32 floats. Every thread gets the total.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = (blockDim.x + 31) / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < n_warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = (blockDim.x + 31) / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < n_warps ? scratch[lane] : -INFINITY;
    return warp_max(v);
}

// The gated feed-forward's activations (elementwise.cu's act_mul, mmvq.cu's gate kernels).
__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

__device__ __forceinline__ float gelu_tanh(float g) {
    const float sqrt_2_over_pi = 0.7978846f;
    return 0.5f * g * (1.0f + tanhf(sqrt_2_over_pi * g * (1.0f + 0.044715f * g * g)));
}

// Programmatic Dependent Launch (sm_90+, src/launch.rs): a kernel launched as a programmatic
// dependent may start while the kernel before it drains. PDL_WAIT() blocks until that kernel
// has finished and its writes are visible: every block of an opted-in kernel must execute it
// before reading anything an earlier kernel wrote (or writing anything one reads), and may only
// read data no kernel writes (weights) before it. PDL_TRIGGER() lets the next kernel be
// scheduled. Both are no-ops on older GPUs, without the launch
// attribute, and with -DWASM_CHORD_NO_PDL (WASM_CHORD_CUDA_PDL=0).
// PDL_ENTER() is what an opted-in kernel starts with: the wait, then the trigger (the next
// kernel is scheduled once every block of this one has passed its wait), or with
// -DWASM_CHORD_PDL_EARLY_TRIGGER (WASM_CHORD_CUDA_PDL=early) the trigger first. Either order is
// safe: a dependent still waits for this kernel's completion, which follows this kernel's own
// wait. Early was slower on the H100 (bench/runs/2026-11-26-h100-pdl: 7B tg -6%): a chain of
// waiting grids holds SM slots.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(WASM_CHORD_NO_PDL)
#define PDL_ON 1
#define PDL_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#define PDL_TRIGGER() asm volatile("griddepcontrol.launch_dependents;" ::: "memory")
#else
#define PDL_ON 0
#define PDL_WAIT() ((void)0)
#define PDL_TRIGGER() ((void)0)
#endif
#ifdef WASM_CHORD_PDL_EARLY_TRIGGER
#define PDL_ENTER()    \
    do {               \
        PDL_TRIGGER(); \
        PDL_WAIT();    \
    } while (0)
#else
#define PDL_ENTER()    \
    do {               \
        PDL_WAIT();    \
        PDL_TRIGGER(); \
    } while (0)
#endif

// Starts the fetch of `bytes` at `p` into L2 (whole 16-byte units inside the range), for data
// no earlier kernel writes (weights): issued before PDL_WAIT(), the next matrix streams in while
// the previous kernel's tail runs. One thread per range.
__device__ __forceinline__ void prefetch_l2(const void* p, u64 bytes) {
#if PDL_ON && !defined(WASM_CHORD_NO_PREFETCH)
    const u64 a = ((u64)p + 15) & ~15ull, e = ((u64)p + bytes) & ~15ull;
    if (e > a) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a), "r"((u32)(e - a)) : "memory");
#endif
}

// Streaming 16-byte load: weights are read once per matvec, so keep them out of L1.
__device__ __forceinline__ uint4 load_stream(const uint4* p) {
    return __ldcs(p);
}
#endif

// Four bytes at `p`, which is known to be aligned to `A` bytes (a compile-time constant), in as
// few shared- or global-memory loads as that alignment allows.
template <int A>
__device__ __forceinline__ u32 load_u32(const u8* p) {
    if constexpr (A % 4 == 0) {
        return *reinterpret_cast<const u32*>(p);
    } else if constexpr (A % 2 == 0) {
        const u16* q = reinterpret_cast<const u16*>(p);
        return (u32)q[0] | ((u32)q[1] << 16);
    } else {
        return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
    }
}

__device__ __forceinline__ float load_half(const u8* p) {
    return __half2float(*reinterpret_cast<const __half*>(p));
}
