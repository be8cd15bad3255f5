// Helpers of the tensor-core matmul for prompts (src/ops/gemm.rs): the weight matrix is
// dequantized into an f16 scratch matrix and the activations converted to f16, then cuBLAS
// multiplies them with f32 accumulation; the bias, if any, is added afterwards.
#include "dequant.cuh"

// Threads per block of the dequantization (the host's DEQUANT_THREADS).
constexpr int DQ_THREADS = 256;

// out[r, :] = dequant(w[row0 + r, :]) as f16 for r < n_rows; one thread per 32-weight item (cols
// is a multiple of 32). A block's items are consecutive, and so is its output: each thread puts
// its 64 bytes in shared memory and the block then writes the whole range with 16-byte stores
// that are contiguous across lanes (a lane writing its own 64 bytes made every store
// instruction touch 32 separate half sectors).
template <class T>
__device__ __forceinline__ void dequant_f16(const u8* __restrict__ w, u64 row_stride, int row0, int n_rows,
                                            int cols, __half* __restrict__ out) {
    __shared__ uint4 stage[DQ_THREADS * 4];
    const int items_per_row = cols / 32;
    const u64 n_items = (u64)n_rows * items_per_row;
    const u64 first = (u64)blockIdx.x * DQ_THREADS;
    const u64 idx = first + threadIdx.x;
    if (idx < n_items) {
        const int r = (int)(idx / items_per_row), it = (int)(idx % items_per_row);
        const int blk = it / T::ITEMS, item = it % T::ITEMS;
        float wv[32];
        dequant_at<T>(w + (u64)(row0 + r) * row_stride, blk, cols / T::QK, item, wv);
#pragma unroll
        for (int v = 0; v < 4; v++) {
            u32 h[4];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const __half2 p = __floats2half2_rn(wv[8 * v + 2 * k], wv[8 * v + 2 * k + 1]);
                h[k] = *reinterpret_cast<const u32*>(&p);
            }
            stage[threadIdx.x * 4 + v] = make_uint4(h[0], h[1], h[2], h[3]);
        }
    }
    __syncthreads();
    // The block's items first .. first + n as 4 * n 16-byte vectors from out + first * 32.
    const int n = (int)min((u64)DQ_THREADS, n_items > first ? n_items - first : 0);
    uint4* o = reinterpret_cast<uint4*>(out + first * 32);
#pragma unroll
    for (int v = 0; v < 4; v++) {
        const int i = v * DQ_THREADS + threadIdx.x;
        if (i < 4 * n) o[i] = stage[i];
    }
}

#define DEQUANT_F16_KERNEL(name, T)                                                                          \
    extern "C" __global__ void dequant_f16_##name(const u8* w, u64 row_stride, int row0, int n_rows, int cols, \
                                                  __half* out) {                                             \
        dequant_f16<T>(w, row_stride, row0, n_rows, cols, out);                                              \
    }

FOR_EACH_WEIGHT_TYPE(DEQUANT_F16_KERNEL)
FOR_EACH_REPACKED_TYPE(DEQUANT_F16_KERNEL)

// out[i] = x[i] as f16 (round to nearest; values past the f16 range become infinities).
extern "C" __global__ void f32_to_f16(const float* __restrict__ x, __half* __restrict__ out, u64 n) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2half_rn(x[i]);
}

// y[t, o] += bias[o] for a [n_tok, rows] output.
extern "C" __global__ void add_bias_rows(float* __restrict__ y, const float* __restrict__ bias, int rows, u64 n) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += bias[i % rows];
}
