// RMS normalization: each group of `group` values (a whole row, or one head for QK-norm) is
// scaled by 1/sqrt(mean(x^2) + eps) and multiplied by the f32 weight. One block per group.
#include "common.cuh"

extern "C" __global__ void rms_norm(const float* __restrict__ x, const float* __restrict__ weight,
                                    float* __restrict__ out, int group, float eps) {
    __shared__ float scratch[32];
    const u64 base = (u64)blockIdx.x * group;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < group; i += blockDim.x) {
        const float v = x[base + i];
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    const float scale = rsqrtf(ss / (float)group + eps);
    for (int i = threadIdx.x; i < group; i += blockDim.x) out[base + i] = (x[base + i] * scale) * weight[i];
}

// Groups of at most 4 * blockDim.x values, a multiple of 4 (every decode row up to 4096 wide
// with 1024 threads): each thread loads one float4 of x and of the weight up front and keeps
// them in registers, so the block waits for memory once instead of once per strided step of
// `rms_norm` and again for the weight after the reduction.
extern "C" __global__ void rms_norm_vec4(const float* __restrict__ x, const float* __restrict__ weight,
                                         float* __restrict__ out, int group, float eps) {
    __shared__ float scratch[32];
    const u64 base = (u64)blockIdx.x * group;
    const int i = threadIdx.x * 4;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f), w = v;
    if (i < group) {
        v = *reinterpret_cast<const float4*>(x + base + i);
        w = *reinterpret_cast<const float4*>(weight + i);
    }
    const float ss = block_sum(v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w, scratch);
    const float scale = rsqrtf(ss / (float)group + eps);
    if (i < group)
        *reinterpret_cast<float4*>(out + base + i) =
            make_float4(v.x * scale * w.x, v.y * scale * w.y, v.z * scale * w.z, v.w * scale * w.w);
}
