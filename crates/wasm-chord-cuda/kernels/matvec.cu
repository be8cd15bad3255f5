// Dequantize-and-multiply kernels for decoding (one token) and small batches (up to 8 tokens),
// and the embedding gather, for every weight type.
//
// One warp per weight row. The warp streams its row through shared memory in steps of up to
// 2 KiB with coalesced 16-byte loads (device rows are padded to 16 bytes, and a step is a whole
// number of blocks that is a multiple of 16 bytes), then each lane dequantizes 32-weight items
// from shared memory and dots them with the f32 activations (read through L1, where the other
// warps of the SM find them too).
#include "dequant.cuh"

constexpr int MV_WARPS = 4;
constexpr int MV_STEP_MAX = 2048;

template <class T>
struct Step {
    static constexpr int ALIGN_BLOCKS = 16 / gcd_c(T::BYTES, 16);
    static constexpr int BLOCKS = (MV_STEP_MAX / (T::BYTES * ALIGN_BLOCKS)) * ALIGN_BLOCKS;
    static constexpr int VECS_PER_LANE = (BLOCKS * T::BYTES / 16 + 31) / 32;
};

// y[t, row] = sum_k w[row, k] * x[t, k] (+ bias[row]) for the tokens t0 .. t0 + NT of this block
// row (blockIdx.y). `row_stride` is the padded byte length of a device row.
template <class T, int NT>
__device__ __forceinline__ void matvec(const u8* __restrict__ w, u64 row_stride, const float* __restrict__ x,
                                       const float* __restrict__ bias, float* __restrict__ y, int rows, int cols,
                                       int n_tok) {
    using S = Step<T>;
    __shared__ uint4 stage[MV_WARPS][S::VECS_PER_LANE * 32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row = blockIdx.x * MV_WARPS + warp;
    if (row >= rows) return;  // no block-wide barriers below
    const int t0 = blockIdx.y * NT;
    const u8* wr = w + (u64)row * row_stride;
    const u8* s = reinterpret_cast<const u8*>(stage[warp]);
    const int n_blocks = cols / T::QK;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;

    for (int b0 = 0; b0 < n_blocks; b0 += S::BLOCKS) {
        const int nb = min(S::BLOCKS, n_blocks - b0);
        const int n_vec = (nb * T::BYTES + 15) / 16;
        const uint4* src = reinterpret_cast<const uint4*>(wr + (u64)b0 * T::BYTES);
        // All loads of the step are issued before the first store, so they are in flight together.
        uint4 v[S::VECS_PER_LANE];
#pragma unroll
        for (int i = 0; i < S::VECS_PER_LANE; i++)
            if (lane + 32 * i < n_vec) v[i] = load_stream(src + lane + 32 * i);
#pragma unroll
        for (int i = 0; i < S::VECS_PER_LANE; i++)
            if (lane + 32 * i < n_vec) stage[warp][lane + 32 * i] = v[i];
        __syncwarp();
        for (int it = lane; it < nb * T::ITEMS; it += 32) {
            const int blk = it / T::ITEMS, item = it % T::ITEMS;
            float wv[32];
            T::dequant(s + blk * T::BYTES, item, wv);
            const u64 k0 = (u64)(b0 + blk) * T::QK + 32 * item;
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t0 + t < n_tok) {
                    const float4* xv = reinterpret_cast<const float4*>(x + (u64)(t0 + t) * cols + k0);
                    float sum = 0.0f;
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        const float4 a = __ldg(xv + j);
                        sum += wv[4 * j] * a.x + wv[4 * j + 1] * a.y + wv[4 * j + 2] * a.z + wv[4 * j + 3] * a.w;
                    }
                    acc[t] += sum;
                }
            }
        }
        __syncwarp();
    }
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

#define MATVEC_KERNELS(name, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(MV_WARPS * 32)                                              \
        matvec_##name(const u8* w, u64 row_stride, const float* x, const float* bias, float* y, int rows,   \
                      int cols, int n_tok) {                                                                 \
        matvec<T, 1>(w, row_stride, x, bias, y, rows, cols, n_tok);                                          \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(MV_WARPS * 32)                                              \
        matmul8_##name(const u8* w, u64 row_stride, const float* x, const float* bias, float* y, int rows,  \
                       int cols, int n_tok) {                                                                \
        matvec<T, 8>(w, row_stride, x, bias, y, rows, cols, n_tok);                                          \
    }                                                                                                        \
    extern "C" __global__ void embed_##name(const u8* w, u64 row_stride, const u32* ids, int cols,          \
                                            float scale, float* out) {                                       \
        embed<T>(w, row_stride, ids, cols, scale, out);                                                      \
    }

FOR_EACH_WEIGHT_TYPE(MATVEC_KERNELS)
