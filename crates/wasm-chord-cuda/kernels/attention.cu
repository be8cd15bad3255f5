// Causal attention of query rows over the f16 key/value cache, without a score matrix: one
// block of ATT_WARPS warps per (head, query row); each warp walks every ATT_WARPS-th visible key
// with an online softmax (running max, sum and weighted values in registers), and the warps'
// partial results are merged at the end. Head dimensions are multiples of 32, at most 256.
// The cache is f16 (attention) or q8_0 kept as int8 values plus one f16 scale per 32 values
// (attention_q8_0; the layout of the CUDA backend's q8_0 cache).
#include "attention.cuh"

#define ATTENTION_ARGS                                                                                          \
    const float *__restrict__ q, const void *__restrict__ k, const void *__restrict__ v,                         \
        const __half *__restrict__ ks, const __half *__restrict__ vs, float *__restrict__ out, int n_head,      \
        int n_head_kv, int dk, int dv, int kv_len, int q_pos0, int window, float scale, float softcap
#define ATTENTION_PASS q, k, v, ks, vs, out, n_head, n_head_kv, dk, dv, kv_len, q_pos0, window, scale, softcap

// ks/vs (the q8_0 scales) are unused by the f16 kernel.
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention(ATTENTION_ARGS) {
    attention_impl<false>(ATTENTION_PASS);
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_q8_0(ATTENTION_ARGS) {
    attention_impl<true>(ATTENTION_PASS);
}
