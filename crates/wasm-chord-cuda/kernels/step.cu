// Kernels of the single-token decode step that read the token's position from device memory
// (`pos[0]`) instead of a kernel argument, so one captured CUDA graph serves every position;
// and the greedy argmax, so a step returns 4 bytes instead of a row of logits.
#include "common.cuh"

// cache[pos * cols + i] = f16(x[i]) for the n = rows * cols values of x.
extern "C" __global__ void store_f16_at(const float* __restrict__ x, __half* __restrict__ cache,
                                        const int* __restrict__ pos, int cols, u64 n) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) cache[(u64)pos[0] * cols + i] = __float2half_rn(x[i]);
}

// Attention of the query rows at positions pos[0]..pos[0] + gridDim.y over cache rows
// 0..pos[0] + gridDim.y: the decode-step twin of attention.cu's kernel (same algorithm: one
// block of STEP_ATT_WARPS warps per (head, query row), online softmax per warp, merged at the end).
constexpr int STEP_ATT_WARPS = 4;
constexpr int STEP_ATT_MAX_PER_LANE = 8;  // head_dim / 32

extern "C" __global__ void __launch_bounds__(STEP_ATT_WARPS * 32)
    attention_at(const float* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                 float* __restrict__ out, const int* __restrict__ pos_ptr, int n_head, int n_head_kv, int dk,
                 int dv, int window, float scale, float softcap) {
    __shared__ float part_m[STEP_ATT_WARPS], part_l[STEP_ATT_WARPS];
    __shared__ float part_o[STEP_ATT_WARPS][32 * STEP_ATT_MAX_PER_LANE];
    const int h = blockIdx.x, qi = blockIdx.y;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int hk = h / (n_head / n_head_kv);
    const int pos = pos_ptr[0] + qi;
    const int first = window > 0 ? max(0, pos + 1 - window) : 0;
    const int nk = dk / 32, nv = dv / 32;

    float qv[STEP_ATT_MAX_PER_LANE];
    const float* qr = q + (u64)qi * n_head * dk + (u64)h * dk;
#pragma unroll
    for (int i = 0; i < STEP_ATT_MAX_PER_LANE; i++) qv[i] = i < nk ? qr[lane + 32 * i] : 0.0f;

    float m = -INFINITY, l = 0.0f, o[STEP_ATT_MAX_PER_LANE];
#pragma unroll
    for (int i = 0; i < STEP_ATT_MAX_PER_LANE; i++) o[i] = 0.0f;

    for (int j = first + warp; j <= pos; j += STEP_ATT_WARPS) {
        const __half* kr = k + (u64)j * n_head_kv * dk + (u64)hk * dk;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < STEP_ATT_MAX_PER_LANE; i++)
            if (i < nk) s += qv[i] * __half2float(kr[lane + 32 * i]);
        s = warp_sum(s);
        if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
        s *= scale;
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new), p = expf(s - m_new);
        l = l * corr + p;
        const __half* vr = v + (u64)j * n_head_kv * dv + (u64)hk * dv;
#pragma unroll
        for (int i = 0; i < STEP_ATT_MAX_PER_LANE; i++)
            if (i < nv) o[i] = o[i] * corr + p * __half2float(vr[lane + 32 * i]);
        m = m_new;
    }

    if (lane == 0) {
        part_m[warp] = m;
        part_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < STEP_ATT_MAX_PER_LANE; i++)
        if (i < nv) part_o[warp][lane + 32 * i] = o[i];
    __syncthreads();
    if (warp != 0) return;
    float mm = -INFINITY;
#pragma unroll
    for (int w = 0; w < STEP_ATT_WARPS; w++) mm = fmaxf(mm, part_m[w]);
    float ll = 0.0f, f[STEP_ATT_WARPS];
#pragma unroll
    for (int w = 0; w < STEP_ATT_WARPS; w++) {
        // A warp that saw no key has m = -inf and contributes nothing.
        f[w] = part_m[w] == -INFINITY ? 0.0f : expf(part_m[w] - mm);
        ll += part_l[w] * f[w];
    }
    float* orow = out + (u64)qi * n_head * dv + (u64)h * dv;
    for (int i = 0; i < nv; i++) {
        float acc = 0.0f;
#pragma unroll
        for (int w = 0; w < STEP_ATT_WARPS; w++) acc += part_o[w][lane + 32 * i] * f[w];
        orow[lane + 32 * i] = acc / ll;
    }
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
