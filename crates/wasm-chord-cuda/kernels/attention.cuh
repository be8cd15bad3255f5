// The attention body shared by attention.cu (positions as arguments) and step.cu (the decode
// step's position read from device memory): one block of ATT_WARPS warps per (head, query row);
// each warp walks every ATT_WARPS-th visible key with an online softmax, merged at the end.
#pragma once
#include "common.cuh"

// Value `i` of a cache: f16, or int8 times its block's scale.
template <bool Q8>
__device__ __forceinline__ float kv_at(const void* __restrict__ data, const __half* __restrict__ scales, u64 i) {
    if constexpr (Q8) {
        return (float)reinterpret_cast<const signed char*>(data)[i] * __half2float(scales[i / 32]);
    } else {
        return __half2float(reinterpret_cast<const __half*>(data)[i]);
    }
}

constexpr int ATT_WARPS = 4;
constexpr int ATT_MAX_PER_LANE = 8;  // head_dim / 32

template <bool Q8>
__device__ __forceinline__ void attention_impl(const float* __restrict__ q, const void* __restrict__ k,
                                               const void* __restrict__ v, const __half* __restrict__ ks,
                                               const __half* __restrict__ vs, float* __restrict__ out, int n_head,
                                               int n_head_kv, int dk, int dv, int kv_len, int q_pos0, int window,
                                               float scale, float softcap) {
    __shared__ float part_m[ATT_WARPS], part_l[ATT_WARPS];
    __shared__ float part_o[ATT_WARPS][32 * ATT_MAX_PER_LANE];
    const int h = blockIdx.x, qi = blockIdx.y;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int hk = h / (n_head / n_head_kv);
    const int pos = q_pos0 + qi;
    const int last = min(pos, kv_len - 1);
    const int first = window > 0 ? max(0, pos + 1 - window) : 0;
    const int nk = dk / 32, nv = dv / 32;

    float qv[ATT_MAX_PER_LANE];
    const float* qr = q + (u64)qi * n_head * dk + (u64)h * dk;
#pragma unroll
    for (int i = 0; i < ATT_MAX_PER_LANE; i++) qv[i] = i < nk ? qr[lane + 32 * i] : 0.0f;

    float m = -INFINITY, l = 0.0f, o[ATT_MAX_PER_LANE];
#pragma unroll
    for (int i = 0; i < ATT_MAX_PER_LANE; i++) o[i] = 0.0f;

    for (int j = first + warp; j <= last; j += ATT_WARPS) {
        const u64 kr = (u64)j * n_head_kv * dk + (u64)hk * dk;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_MAX_PER_LANE; i++)
            if (i < nk) s += qv[i] * kv_at<Q8>(k, ks, kr + lane + 32 * i);
        s = warp_sum(s);
        if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
        s *= scale;
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new), p = expf(s - m_new);
        l = l * corr + p;
        const u64 vr = (u64)j * n_head_kv * dv + (u64)hk * dv;
#pragma unroll
        for (int i = 0; i < ATT_MAX_PER_LANE; i++)
            if (i < nv) o[i] = o[i] * corr + p * kv_at<Q8>(v, vs, vr + lane + 32 * i);
        m = m_new;
    }

    if (lane == 0) {
        part_m[warp] = m;
        part_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < ATT_MAX_PER_LANE; i++)
        if (i < nv) part_o[warp][lane + 32 * i] = o[i];
    __syncthreads();
    if (warp != 0) return;
    float mm = -INFINITY;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) mm = fmaxf(mm, part_m[w]);
    float ll = 0.0f, f[ATT_WARPS];
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) {
        // A warp that saw no key has m = -inf and contributes nothing.
        f[w] = part_m[w] == -INFINITY ? 0.0f : expf(part_m[w] - mm);
        ll += part_l[w] * f[w];
    }
    float* orow = out + (u64)qi * n_head * dv + (u64)h * dv;
    for (int i = 0; i < nv; i++) {
        float acc = 0.0f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; w++) acc += part_o[w][lane + 32 * i] * f[w];
        orow[lane + 32 * i] = acc / ll;
    }
}

