// Element-wise ops on f32 activations: gated activations, add, scale, row gather, the f16 cache
// store, and the row softmax.
#include "common.cuh"

// out = act(gate) * up; act 0 is SiLU, 1 is GeLU (tanh approximation).
extern "C" __global__ void act_mul(const float* __restrict__ gate, const float* __restrict__ up,
                                   float* __restrict__ out, u64 n, int act) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float g = gate[i];
    out[i] = (act == 0 ? silu(g) : gelu_tanh(g)) * up[i];
}

extern "C" __global__ void add(float* __restrict__ acc, const float* __restrict__ x, u64 n) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) acc[i] += x[i];
}

extern "C" __global__ void scale(float* __restrict__ x, float s, u64 n) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}

// out[r] = x[rows[r]]; one block per output row.
extern "C" __global__ void copy_rows(const float* __restrict__ x, const int* __restrict__ rows,
                                     float* __restrict__ out, int cols) {
    const float* src = x + (u64)rows[blockIdx.x] * cols;
    float* dst = out + (u64)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = src[i];
}

// cache[start + i] = f16(x[i]) for n values (rows are contiguous in both).
extern "C" __global__ void store_f16(const float* __restrict__ x, __half* __restrict__ cache, u64 n) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) cache[i] = __float2half_rn(x[i]);
}

// Softmax of each row in place; one block per row.
extern "C" __global__ void softmax(float* __restrict__ x, int cols) {
    __shared__ float scratch[32];
    float* r = x + (u64)blockIdx.x * cols;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, r[i]);
    m = block_max(m, scratch);
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float e = expf(r[i] - m);
        r[i] = e;
        s += e;
    }
    s = block_sum(s, scratch);
    const float inv = 1.0f / s;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) r[i] *= inv;
}
