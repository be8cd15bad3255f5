// Dequantize-and-multiply kernels for decoding (one token) and small batches (up to 8 tokens),
// and the embedding gather, for every weight type.
//
// One warp per weight row, all warps of a block walking the columns in lockstep, a step of at
// most 1024 columns (and 2 KiB of weights per row) at a time:
// - each warp copies its row's bytes of the step to shared memory with coalesced 16-byte loads
//   (from the 16-byte boundary at or below the step's first block; device rows are padded to 16
//   bytes, so these loads never leave the row), and issues the next step's loads before it
//   computes on this one, so two steps of weights are in flight;
// - the block copies the step's activations to shared memory once for all its warps, each
//   32-value item padded to 36 floats so that lanes reading consecutive items hit distinct banks;
// - each lane then dequantizes one 32-weight item from shared memory and dots it with every token.
#include "dequant.cuh"

constexpr int MV_STEP_COLS = 1024;
constexpr int MV_STEP_BYTES = 2048;
constexpr int X_ITEM = 36;  // floats per 32-value item in shared memory

template <class T>
struct Step {
    static constexpr int BLOCKS_BY_COLS = MV_STEP_COLS / T::QK;
    static constexpr int BLOCKS_BY_BYTES = MV_STEP_BYTES / T::BYTES;
    static constexpr int BLOCKS = BLOCKS_BY_COLS < BLOCKS_BY_BYTES ? BLOCKS_BY_COLS : BLOCKS_BY_BYTES;
    static constexpr int COLS = BLOCKS * T::QK;
    static constexpr int ITEMS = COLS / 32;
    // Bytes staged per warp: the step plus up to 15 bytes before it, in 16-byte vectors.
    static constexpr int VECS = (BLOCKS * T::BYTES + 15 + 15) / 16;
    static constexpr int VECS_PER_LANE = (VECS + 31) / 32;
};

// Issues the 16-byte loads of one step of a weight row (`wr`) into `v`: from the 16-byte
// boundary at or below the step's first block to the end of its last.
template <class T>
__device__ __forceinline__ void load_step(const u8* __restrict__ wr, int step, int n_blocks, int lane,
                                          uint4 (&v)[Step<T>::VECS_PER_LANE]) {
    using S = Step<T>;
    const int b0 = step * S::BLOCKS;
    const int nb = min(S::BLOCKS, n_blocks - b0);
    const u64 first = (u64)b0 * T::BYTES;
    const u64 aligned = first & ~(u64)15;
    const int n_vec = (int)((first + (u64)nb * T::BYTES - aligned + 15) / 16);
    const uint4* src = reinterpret_cast<const uint4*>(wr + aligned);
#pragma unroll
    for (int i = 0; i < S::VECS_PER_LANE; i++)
        if (lane + 32 * i < n_vec) v[i] = load_stream(src + lane + 32 * i);
}

// y[t, row] = sum_k w[row, k] * x[t, k] (+ bias[row]) for the tokens t0 .. t0 + NT of this block
// row (blockIdx.y). `row_stride` is the padded byte length of a device row.
template <class T, int NT, int WARPS>
__device__ __forceinline__ void matvec(const u8* __restrict__ w, u64 row_stride, const float* __restrict__ x,
                                       const float* __restrict__ bias, float* __restrict__ y, int rows, int cols,
                                       int n_tok) {
    using S = Step<T>;
    __shared__ uint4 wstage[WARPS][S::VECS_PER_LANE * 32];
    __shared__ __align__(16) float xstage[NT][S::ITEMS * X_ITEM];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row = blockIdx.x * WARPS + warp;
    const bool active = row < rows;  // inactive warps still take part in loading x and the barriers
    const int t0 = blockIdx.y * NT;
    const u8* wr = w + (u64)(active ? row : 0) * row_stride;
    const int n_blocks = cols / T::QK;
    const int n_steps = (n_blocks + S::BLOCKS - 1) / S::BLOCKS;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;

    uint4 v[S::VECS_PER_LANE];
    if (active) load_step<T>(wr, 0, n_blocks, lane, v);

    for (int step = 0; step < n_steps; step++) {
        const int b0 = step * S::BLOCKS;
        const int nb = min(S::BLOCKS, n_blocks - b0);
        const int k0 = b0 * T::QK;
        const int step_cols = nb * T::QK;
        __syncthreads();  // the previous step's readers are done with both stages
#pragma unroll
        for (int i = 0; i < S::VECS_PER_LANE; i++)
            if (lane + 32 * i < S::VECS) wstage[warp][lane + 32 * i] = v[i];
        for (int f = threadIdx.x; f < NT * (step_cols / 4); f += WARPS * 32) {
            const int t = f / (step_cols / 4), c4 = f % (step_cols / 4);
            if (t0 + t < n_tok) {
                const float4 a = __ldg(reinterpret_cast<const float4*>(x + (u64)(t0 + t) * cols + k0) + c4);
                *reinterpret_cast<float4*>(&xstage[t][(c4 / 8) * X_ITEM + (c4 % 8) * 4]) = a;
            }
        }
        __syncthreads();
        if (active && step + 1 < n_steps) load_step<T>(wr, step + 1, n_blocks, lane, v);
        if (active && lane < nb * T::ITEMS) {
            const int blk = lane / T::ITEMS, item = lane % T::ITEMS;
            const u8* s = reinterpret_cast<const u8*>(wstage[warp]) + (((u64)b0 * T::BYTES) & 15);
            float wv[32];
            T::dequant(s + blk * T::BYTES, item, wv);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const float4* xv = reinterpret_cast<const float4*>(&xstage[t][lane * X_ITEM]);
                float sum = 0.0f;
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    const float4 a = xv[j];
                    sum += wv[4 * j] * a.x + wv[4 * j + 1] * a.y + wv[4 * j + 2] * a.z + wv[4 * j + 3] * a.w;
                }
                acc[t] += sum;
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float r = warp_sum(acc[t]);
        if (lane == 0 && t0 + t < n_tok) y[(u64)(t0 + t) * rows + row] = r + (bias ? bias[row] : 0.0f);
    }
}

// out[t, :] = dequant(w[ids[t], :]) * scale; one block per token.
template <class T>
__device__ __forceinline__ void embed(const u8* __restrict__ w, u64 row_stride, const u32* __restrict__ ids,
                                      int cols, float scale, float* __restrict__ out) {
    const int t = blockIdx.x;
    const u8* wr = w + (u64)ids[t] * row_stride;
    const int n_items = cols / T::QK * T::ITEMS;
    for (int it = threadIdx.x; it < n_items; it += blockDim.x) {
        const int blk = it / T::ITEMS, item = it % T::ITEMS;
        float wv[32];
        T::dequant(wr + (u64)blk * T::BYTES, item, wv);
        float* o = out + (u64)t * cols + (u64)blk * T::QK + 32 * item;
#pragma unroll
        for (int j = 0; j < 32; j++) o[j] = wv[j] * scale;
    }
}

// Warps (rows) per block; the host wrapper's MATVEC_WARPS / MATMUL8_WARPS. The 8-token kernel
// has fewer so its 8 activation stages fit in 48 KiB of shared memory.
constexpr int MATVEC_WARPS = 8;
constexpr int MATMUL8_WARPS = 4;

#define MATVEC_KERNELS(name, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(MATVEC_WARPS * 32)                                          \
        matvec_##name(const u8* w, u64 row_stride, const float* x, const float* bias, float* y, int rows,   \
                      int cols, int n_tok) {                                                                 \
        matvec<T, 1, MATVEC_WARPS>(w, row_stride, x, bias, y, rows, cols, n_tok);                            \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(MATMUL8_WARPS * 32)                                         \
        matmul8_##name(const u8* w, u64 row_stride, const float* x, const float* bias, float* y, int rows,  \
                       int cols, int n_tok) {                                                                \
        matvec<T, 8, MATMUL8_WARPS>(w, row_stride, x, bias, y, rows, cols, n_tok);                           \
    }                                                                                                        \
    extern "C" __global__ void embed_##name(const u8* w, u64 row_stride, const u32* ids, int cols,          \
                                            float scale, float* out) {                                       \
        embed<T>(w, row_stride, ids, cols, scale, out);                                                      \
    }

FOR_EACH_WEIGHT_TYPE(MATVEC_KERNELS)
