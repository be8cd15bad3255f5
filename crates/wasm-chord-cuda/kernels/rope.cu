// Rotary position embeddings with ggml's YaRN extension, in place. One thread per rotated pair.
// The angle is built by repeated multiplication, as ggml's CPU backend (and our CPU reference)
// does, so both backends see bit-identical angles before cos/sin.
#include "common.cuh"

// What every rope kernel needs besides the tensors.
struct RopeArgs {
    int head_dim, n_rot, neox;
    float theta_scale, freq_scale, ext_factor, attn_factor, corr0, corr1;
};

// Rotates pair i of the head at h (position pos); returns the two rotated values and their
// offsets in the head.
__device__ __forceinline__ void rope_pair(float* __restrict__ h, float pos, int i, const RopeArgs& r,
                                          const float* __restrict__ freq_factors, int& a, int& b, float& y0,
                                          float& y1) {
    const int half_rot = r.n_rot / 2;
    float theta = pos;
    for (int k = 0; k < i; k++) theta *= r.theta_scale;
    const float ff = freq_factors ? freq_factors[i] : 1.0f;
    const float theta_extrap = theta / ff;
    float t = r.freq_scale * theta_extrap;
    float mscale = r.attn_factor;
    if (r.ext_factor != 0.0f) {
        const float y = ((float)i - r.corr0) / fmaxf(r.corr1 - r.corr0, 0.001f);
        const float ramp = 1.0f - fminf(fmaxf(y, 0.0f), 1.0f);
        const float mix = ramp * r.ext_factor;
        t = t * (1.0f - mix) + theta_extrap * mix;
        mscale *= 1.0f + 0.1f * logf(1.0f / r.freq_scale);
    }
    const float c = cosf(t) * mscale, s = sinf(t) * mscale;
    a = r.neox ? i : 2 * i;
    b = r.neox ? i + half_rot : 2 * i + 1;
    const float x0 = h[a], x1 = h[b];
    y0 = x0 * c - x1 * s;
    y1 = x0 * s + x1 * c;
    h[a] = y0;
    h[b] = y1;
}

extern "C" __global__ void rope(float* __restrict__ x, const int* __restrict__ positions, int rows, int cols,
                                RopeArgs r, const float* __restrict__ freq_factors) {
    const int half_rot = r.n_rot / 2;
    const int heads = cols / r.head_dim;
    const u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (u64)rows * heads * half_rot) return;
    const int i = (int)(idx % half_rot);
    const int head = (int)((idx / half_rot) % heads);
    const int row = (int)(idx / ((u64)half_rot * heads));
    int a, b;
    float y0, y1;
    rope_pair(x + (u64)row * cols + (u64)head * r.head_dim, (float)positions[row], i, r, freq_factors, a, b, y0, y1);
}

// The attention block's rope and cache write in one launch: rotates q [rows, q_cols] and
// k [rows, k_cols] in place (as `rope`) and writes k and v [rows, v_cols] as f16 into cache rows
// start.. (start = start_ptr[0] when it is set: a decode step replayed from a graph). The flat
// index runs over q's rotated pairs, k's rotated pairs, k's unrotated values (head dims past
// n_rot), then v's values: one thread each.
extern "C" __global__ void rope_store_kv_f16(float* __restrict__ q, float* __restrict__ k, const float* __restrict__ v,
                                             __half* __restrict__ kc, __half* __restrict__ vc,
                                             const int* __restrict__ positions, const int* __restrict__ start_ptr,
                                             int start, int rows, int q_cols, int k_cols, int v_cols, RopeArgs r,
                                             const float* __restrict__ freq_factors) {
    PDL_ENTER();
    const int half_rot = r.n_rot / 2, pass = r.head_dim - r.n_rot;
    const int q_heads = q_cols / r.head_dim, k_heads = k_cols / r.head_dim;
    const u64 nq = (u64)rows * q_heads * half_rot, nk = (u64)rows * k_heads * half_rot;
    const u64 nkp = (u64)rows * k_heads * pass, nv = (u64)rows * v_cols;
    u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    int a, b;
    float y0, y1;
    if (idx < nq) {
        const int i = (int)(idx % half_rot), head = (int)((idx / half_rot) % q_heads);
        const int row = (int)(idx / ((u64)half_rot * q_heads));
        rope_pair(q + (u64)row * q_cols + (u64)head * r.head_dim, (float)positions[row], i, r, freq_factors, a, b, y0, y1);
        return;
    }
    const u64 row0 = start_ptr ? (u64)start_ptr[0] : (u64)start;
    idx -= nq;
    if (idx < nk) {
        const int i = (int)(idx % half_rot), head = (int)((idx / half_rot) % k_heads);
        const int row = (int)(idx / ((u64)half_rot * k_heads));
        const u64 off = (u64)head * r.head_dim;
        rope_pair(k + (u64)row * k_cols + off, (float)positions[row], i, r, freq_factors, a, b, y0, y1);
        __half* dst = kc + (row0 + row) * k_cols + off;
        dst[a] = __float2half_rn(y0);
        dst[b] = __float2half_rn(y1);
        return;
    }
    idx -= nk;
    if (idx < nkp) {
        const int j = r.n_rot + (int)(idx % pass), head = (int)((idx / pass) % k_heads);
        const int row = (int)(idx / ((u64)pass * k_heads));
        const u64 e = (u64)head * r.head_dim + j;
        kc[(row0 + row) * k_cols + e] = __float2half_rn(k[(u64)row * k_cols + e]);
        return;
    }
    idx -= nkp;
    if (idx < nv) {
        const u64 row = idx / v_cols, e = idx % v_cols;
        vc[(row0 + row) * v_cols + e] = __float2half_rn(v[idx]);
    }
}
