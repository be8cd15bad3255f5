// Rotary position embeddings with ggml's YaRN extension, in place. One thread per rotated pair.
// The angle is built by repeated multiplication, as ggml's CPU backend (and our CPU reference)
// does, so both backends see bit-identical angles before cos/sin.
#include "common.cuh"

extern "C" __global__ void rope(float* __restrict__ x, const int* __restrict__ positions, int rows, int cols,
                                int head_dim, int n_rot, int neox, float theta_scale, float freq_scale,
                                float ext_factor, float attn_factor, float corr0, float corr1,
                                const float* __restrict__ freq_factors) {
    const int half_rot = n_rot / 2;
    const int heads = cols / head_dim;
    const u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (u64)rows * heads * half_rot) return;
    const int i = (int)(idx % half_rot);
    const int head = (int)((idx / half_rot) % heads);
    const int row = (int)(idx / ((u64)half_rot * heads));

    float theta = (float)positions[row];
    for (int k = 0; k < i; k++) theta *= theta_scale;
    const float ff = freq_factors ? freq_factors[i] : 1.0f;
    const float theta_extrap = theta / ff;
    float t = freq_scale * theta_extrap;
    float mscale = attn_factor;
    if (ext_factor != 0.0f) {
        const float y = ((float)i - corr0) / fmaxf(corr1 - corr0, 0.001f);
        const float ramp = 1.0f - fminf(fmaxf(y, 0.0f), 1.0f);
        const float mix = ramp * ext_factor;
        t = t * (1.0f - mix) + theta_extrap * mix;
        mscale *= 1.0f + 0.1f * logf(1.0f / freq_scale);
    }
    const float c = cosf(t) * mscale, s = sinf(t) * mscale;
    float* h = x + (u64)row * cols + (u64)head * head_dim;
    const int a = neox ? i : 2 * i, b = neox ? i + half_rot : 2 * i + 1;
    const float x0 = h[a], x1 = h[b];
    h[a] = x0 * c - x1 * s;
    h[b] = x0 * s + x1 * c;
}
