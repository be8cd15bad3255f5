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
