// RMS normalization: each group of `group` values (a whole row, or one head for QK-norm) is
// scaled by 1/sqrt(mean(x^2) + eps) and multiplied by the f32 weight. One block per group.
#include "common.cuh"

extern "C" __global__ void rms_norm(const float* __restrict__ x, const float* __restrict__ weight,
                                    float* __restrict__ out, int group, float eps) {
    PDL_ENTER();
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

// Groups of at most 8 * blockDim.x values, a multiple of 4 (every decode row up to 8192 wide
// with 1024 threads): each thread loads up to two float4 of x and of the weight up front and
// keeps them in registers, so the block waits for memory once instead of once per strided step
// of `rms_norm` and again for the weight after the reduction. With `xq` (group a multiple of 32,
// blockDim a multiple of 32) the normed row is also quantized as mmvq.cu's `quantize_q8` does
// (same values, same rounding, so the same bytes): 32 values are eight neighbouring threads'
// float4s, which meet through three shuffles; xq gets the row's bytes, xd (scale, sum) per 32.
__device__ __forceinline__ float lanes8_max(float v) {
#pragma unroll
    for (int o = 4; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float lanes8_sum(float v) {
#pragma unroll
    for (int o = 4; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

extern "C" __global__ void rms_norm_vec4(const float* __restrict__ x, const float* __restrict__ weight,
                                         float* __restrict__ out, int group, float eps, i8* __restrict__ xq,
                                         float2* __restrict__ xd) {
    PDL_ENTER();
    __shared__ float scratch[32];
    const u64 base = (u64)blockIdx.x * group;
    float4 v[2], w[2];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < 2; k++) {
        const int i = (threadIdx.x + k * blockDim.x) * 4;
        v[k] = w[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < group) {
            v[k] = *reinterpret_cast<const float4*>(x + base + i);
            w[k] = *reinterpret_cast<const float4*>(weight + i);
        }
        ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
    ss = block_sum(ss, scratch);
    const float scale = rsqrtf(ss / (float)group + eps);
#pragma unroll
    for (int k = 0; k < 2; k++) {
        const int i = (threadIdx.x + k * blockDim.x) * 4;
        const float4 o = make_float4(v[k].x * scale * w[k].x, v[k].y * scale * w[k].y, v[k].z * scale * w[k].z,
                                     v[k].w * scale * w[k].w);
        if (i < group) *reinterpret_cast<float4*>(out + base + i) = o;
        if (xq == nullptr || k * blockDim.x * 4 >= group) continue;  // uniform across the block
        const float amax = lanes8_max(fmaxf(fmaxf(fabsf(o.x), fabsf(o.y)), fmaxf(fabsf(o.z), fabsf(o.w))));
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        const int q0 = __float2int_rn(o.x * id), q1 = __float2int_rn(o.y * id), q2 = __float2int_rn(o.z * id),
                  q3 = __float2int_rn(o.w * id);
        // quantize_q8 sums the 32 bytes as floats in a butterfly; these integers are exact in
        // any order.
        const float sum = lanes8_sum((float)(q0 + q1 + q2 + q3));
        if (i < group) {
            *reinterpret_cast<char4*>(xq + base + i) = make_char4((i8)q0, (i8)q1, (i8)q2, (i8)q3);
            if (threadIdx.x % 8 == 0) xd[(base + i) / 32] = make_float2(amax / 127.0f, sum);
        }
    }
}
