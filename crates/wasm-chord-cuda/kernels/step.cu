// Kernels of the single-token decode step that read the token's position from device memory
// (`pos[0]`) instead of a kernel argument, so one captured CUDA graph serves every position;
// and the greedy argmax, so a step returns 4 bytes instead of a row of logits.
#include "attention.cuh"

// cache[pos * cols + i] = f16(x[i]) for the n = rows * cols values of x.
extern "C" __global__ void store_f16_at(const float* __restrict__ x, __half* __restrict__ cache,
                                        const int* __restrict__ pos, int cols, u64 n) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) cache[(u64)pos[0] * cols + i] = __float2half_rn(x[i]);
}

// Attention of the query rows at positions pos[0]..pos[0] + gridDim.y over cache rows
// 0..pos[0] + gridDim.y: attention.cuh's body with the first position read from memory.
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_at(const float* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                 float* __restrict__ out, const int* __restrict__ pos_ptr, int n_head, int n_head_kv, int dk,
                 int dv, int window, float scale, float softcap) {
    const int pos0 = pos_ptr[0];
    attention_impl<false>(q, k, v, nullptr, nullptr, out, n_head, n_head_kv, dk, dv, pos0 + (int)gridDim.y, pos0,
                          window, scale, softcap);
}

// (value, index) pairs: larger value wins, equal values go to the lower index.
__device__ __forceinline__ void argmax_merge(float& v, int& i, float ov, int oi) {
    if (ov > v || (ov == v && oi < i)) {
        v = ov;
        i = oi;
    }
}

// out[0] = the column of the largest value of x[0..cols]; one block (blockDim.x a multiple of 32).
extern "C" __global__ void argmax_row(const float* __restrict__ x, int cols, u32* __restrict__ out) {
    __shared__ float sv[32];
    __shared__ int si[32];
    float v = -INFINITY;
    int idx = 0x7fffffff;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) argmax_merge(v, idx, x[c], c);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        argmax_merge(v, idx, ov, oi);
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = idx;
    }
    __syncthreads();
    if (warp != 0) return;
    v = lane < n_warps ? sv[lane] : -INFINITY;
    idx = lane < n_warps ? si[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        argmax_merge(v, idx, ov, oi);
    }
    // A row of NaNs or -inf only: the first column.
    if (lane == 0) out[0] = idx == 0x7fffffff ? 0u : (u32)idx;
}
