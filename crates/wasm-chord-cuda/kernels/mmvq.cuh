// The int8 matvec template (see mmvq.cu for the design). A header so that mmvq.cu instantiates
// the shipped configuration and the bandwidth bench can compile others for comparison.
#pragma once
#include "dequant.cuh"

// The types with decode_i8: every quantized weight type and the repacked layouts.
#define FOR_EACH_QUANT_TYPE(M) \
    M(q4_0, Q4_0)              \
    M(q4_1, Q4_1)              \
    M(q5_0, Q5_0)              \
    M(q5_1, Q5_1)              \
    M(q8_0, Q8_0)              \
    M(q2_K, Q2_K)              \
    M(q3_K, Q3_K)              \
    M(q4_K, Q4_K)              \
    M(q5_K, Q5_K)              \
    M(q6_K, Q6_K)              \
    M(iq4_nl, IQ4_NL)          \
    M(iq4_xs, IQ4_XS)          \
    M(q6_K_r, Q6_K_R)

// One 32-weight item (item `it` of block `blk` of a row of nb blocks at `row`) against the quantized activations of NT
// tokens (xv: 32 signed bytes, xd: scale and sum of those bytes), added to acc[0..NT).
template <class T, int NT>
__device__ __forceinline__ void mmvq_item(const u8* row, int blk, int nb, int it, const int4 (&xv)[NT][2], const float2 (&xd)[NT],
                                          float (&acc)[NT]) {
    u32 q[8];
    float s[2], m[2];
    decode_i8_at<T>(row, blk, nb, it, q, s, m);
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const int x[8] = {xv[t][0].x, xv[t][0].y, xv[t][0].z, xv[t][0].w,
                          xv[t][1].x, xv[t][1].y, xv[t][1].z, xv[t][1].w};
        int lo = 0, hi = 0;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            lo = __dp4a((int)q[k], x[k], lo);
            hi = __dp4a((int)q[4 + k], x[4 + k], hi);
        }
        float r = T::HALF_SCALES ? s[0] * (float)lo + s[1] * (float)hi : s[0] * (float)(lo + hi);
        if constexpr (T::MINS == 1) r = fmaf(m[0], xd[t].y, r);
        if constexpr (T::MINS == 2) {
            int xlo = 0, xhi = 0;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                xlo = __dp4a(0x01010101, x[k], xlo);
                xhi = __dp4a(0x01010101, x[4 + k], xhi);
            }
            r += m[0] * (float)xlo + m[1] * (float)xhi;
        }
        acc[t] = fmaf(xd[t].x, r, acc[t]);
    }
}

// y[t, row] for NT tokens (token group blockIdx.y) and the rows of block blockIdx.x: WARPS warps
// split the row's 32-weight items (thread i takes items i, i + 32 WARPS, ...), partial sums meet
// in shared memory. GATED: row `blockIdx.x` of w0 (gate) and of w1 (up), y = act(g) * u (`flags`
// 0: SiLU, 1: GeLU-tanh); otherwise ROWS rows of w0, y = (flags & 1 ? y : 0) + dot + bias.
// xq: per token `cols` bytes; xd: per token cols / 32 (scale, sum of the bytes).
// UNROLL: item iterations the compiler may overlap (the next item's loads issued before this
// one's dot products), for rows longer than one pass of the block. IPT: consecutive items per
// thread and pass, all loaded before the first is used (more bytes in flight per thread; for the
// k-quants an item pair shares its 16-byte header and quant bytes, so the pair's loads merge).
// `bx`: the row block (blockIdx.x, or a block's index inside its weight when one launch
// covers several, `mmvq3`).
template <class T, int NT, int WARPS, int ROWS, bool GATED, int UNROLL = 1, int IPT = 1>
__device__ __forceinline__ void mmvq_rows(const u8* __restrict__ w0, const u8* __restrict__ w1, u64 row_stride,
                                          const i8* __restrict__ xq, const float2* __restrict__ xd,
                                          const float* __restrict__ bias, float* __restrict__ y, int rows, int cols,
                                          int n_tok, int flags, int bx) {
    constexpr int NR = GATED ? 2 : ROWS;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int row0 = bx * (GATED ? 1 : ROWS);
    const int t0 = blockIdx.y * NT;
    const int items = cols / 32, nb = cols / T::QK;
    const u8* wr[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) {
        // Rows past the end read the last row (valid memory) and are not written.
        const int row = min(row0 + (GATED ? 0 : r), rows - 1);
        wr[r] = (GATED && r == 1 ? w1 : w0) + (u64)row * row_stride;
    }
    // PDL: the block's weight rows (contiguous unless GATED) start streaming into L2 before
    // the wait for the kernel that wrote the activations (common.cuh).
    if (tid == 0) {
#pragma unroll
        for (int r = 0; r < (GATED ? 2 : 1); r++) prefetch_l2(wr[r], (u64)(GATED ? 1 : min(ROWS, rows - row0)) * row_stride);
    }
    PDL_ENTER();
    float acc[NR][NT];
#pragma unroll
    for (int r = 0; r < NR; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = 0.0f;

#pragma unroll UNROLL
    for (int i0 = tid * IPT; i0 < items; i0 += WARPS * 32 * IPT) {
        // With IPT dividing the items of a block, a thread's items share one block (and the
        // compiler sees it: one block pointer, item numbers it0 + j).
        constexpr bool IN_BLOCK = T::ITEMS % IPT == 0;
        const int blk0 = i0 / T::ITEMS, it0 = i0 % T::ITEMS;
#pragma unroll
        for (int j = 0; j < IPT; j++) {
            // Rows hold whole blocks, so only types with fewer items per block than IPT can end
            // inside a thread's group.
            const int i = i0 + j;
            if constexpr (!IN_BLOCK) {
                if (i >= items) break;
            }
            int4 xv[NT][2];
            float2 xs[NT];
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const int tt = min(t0 + t, n_tok - 1);
                const int4* p = reinterpret_cast<const int4*>(xq + (u64)tt * cols + 32 * i);
                xv[t][0] = p[0];
                xv[t][1] = p[1];
                xs[t] = xd[(u64)tt * items + i];
            }
            const int blk = IN_BLOCK ? blk0 : i / T::ITEMS, it = IN_BLOCK ? it0 + j : i % T::ITEMS;
#pragma unroll
            for (int r = 0; r < NR; r++) mmvq_item<T, NT>(wr[r], blk, nb, it, xv, xs, acc[r]);
        }
    }

    __shared__ float part[WARPS][NR * NT];
#pragma unroll
    for (int r = 0; r < NR; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float v = warp_sum(acc[r][t]);
            if (lane == 0) part[warp][r * NT + t] = v;
        }
    __syncthreads();
    if (tid >= NT || t0 + tid >= n_tok) return;
    const int t = tid;
    float v[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) {
        v[r] = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; w++) v[r] += part[w][r * NT + t];
    }
    float* yt = y + (u64)(t0 + t) * rows;
    if constexpr (GATED) {
        if (row0 < rows) yt[row0] = (flags == 0 ? silu(v[0]) : gelu_tanh(v[0])) * v[1];
    } else {
#pragma unroll
        for (int r = 0; r < NR; r++) {
            const int row = row0 + r;
            if (row >= rows) break;
            const float o = v[r] + (bias ? bias[row] : 0.0f);
            yt[row] = (flags & 1) ? yt[row] + o : o;
        }
    }
}

template <class T, int NT, int WARPS, int ROWS, bool GATED, int UNROLL = 1, int IPT = 1>
__device__ __forceinline__ void mmvq(const u8* __restrict__ w0, const u8* __restrict__ w1, u64 row_stride,
                                     const i8* __restrict__ xq, const float2* __restrict__ xd,
                                     const float* __restrict__ bias, float* __restrict__ y, int rows, int cols,
                                     int n_tok, int flags) {
    mmvq_rows<T, NT, WARPS, ROWS, GATED, UNROLL, IPT>(w0, w1, row_stride, xq, xd, bias, y, rows, cols, n_tok,
                                                      flags, blockIdx.x);
}

// Up to three weights of one type over the same activations in one launch (q, k and v): the
// grid's row blocks are those of w[0], then w[1], then w[2], each block one weight's plain
// matvec (rows[i] == 0: no such weight).
struct Mmvq3Args {
    const u8* w[3];
    u64 rs[3];
    const float* bias[3];
    float* y[3];
    int rows[3];
};

template <class T, int WARPS, int ROWS, int UNROLL>
__device__ __forceinline__ void mmvq3(const Mmvq3Args& a, const i8* xq, const float2* xd, int cols) {
    // Selected with constant indices: a run-time index into the parameter struct would copy it
    // to local memory.
    const int nb0 = (a.rows[0] + ROWS - 1) / ROWS, nb1 = (a.rows[1] + ROWS - 1) / ROWS;
    const int bx = blockIdx.x;
    const int i = bx < nb0 ? 0 : bx < nb0 + nb1 ? 1 : 2;
#define MMVQ3_PICK(f) (i == 0 ? a.f[0] : i == 1 ? a.f[1] : a.f[2])
    mmvq_rows<T, 1, WARPS, ROWS, false, UNROLL>(MMVQ3_PICK(w), nullptr, MMVQ3_PICK(rs), xq, xd, MMVQ3_PICK(bias),
                                                MMVQ3_PICK(y), MMVQ3_PICK(rows), cols, 1, 0,
                                                bx - (i > 0 ? nb0 : 0) - (i > 1 ? nb1 : 0));
#undef MMVQ3_PICK
}
