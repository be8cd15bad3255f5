// The matvec/matmul8 template and the embedding gather (see matvec.cu for the design). A header
// so that matvec.cu instantiates the shipped configuration and the bandwidth bench can compile
// other step sizes for comparison.
#pragma once
#include "dequant.cuh"

// Floats per 32-value item in shared memory: the values, the sums of their two halves, padding
// (36: lanes reading consecutive items hit distinct banks).
constexpr int X_ITEM = 36;

// The staging step of type T: at most STEP_COLS columns and STEP_BYTES bytes of a row (counting
// the up to 15 bytes before a block that is not 16-byte aligned).
template <class T, int STEP_COLS, int STEP_BYTES>
struct Step {
    static constexpr int SLACK = T::ALIGN == 16 ? 0 : 15;
    static constexpr int BLOCKS_BY_COLS = STEP_COLS / T::QK;
    static constexpr int BLOCKS_BY_BYTES = (STEP_BYTES - SLACK) / T::BYTES;
    static constexpr int BLOCKS = BLOCKS_BY_COLS < BLOCKS_BY_BYTES ? BLOCKS_BY_COLS : BLOCKS_BY_BYTES;
    static_assert(BLOCKS >= 1, "a step holds at least one block");
    static constexpr int COLS = BLOCKS * T::QK;
    static constexpr int ITEMS = COLS / 32;
    static constexpr int ITEMS_PER_LANE = (ITEMS + 31) / 32;
    // Bytes staged per warp: the step plus the bytes before it, in 16-byte vectors.
    static constexpr int VECS = (BLOCKS * T::BYTES + SLACK + 15) / 16;
    static constexpr int VECS_PER_LANE = (VECS + 31) / 32;
};

// Issues the 16-byte loads of blocks b0 .. b0 + nb of a weight row (`wr`) into `v`: from the
// 16-byte boundary at or below block b0 to the end of the last block.
template <class S, class T>
__device__ __forceinline__ void load_step(const u8* __restrict__ wr, int b0, int nb, int lane,
                                          uint4 (&v)[S::VECS_PER_LANE]) {
    const u64 first = (u64)b0 * T::BYTES;
    const u64 aligned = first & ~(u64)15;
    const int n_vec = (int)((first + (u64)nb * T::BYTES - aligned + 15) / 16);
    const uint4* src = reinterpret_cast<const uint4*>(wr + aligned);
#pragma unroll
    for (int i = 0; i < S::VECS_PER_LANE; i++)
        if (lane + 32 * i < n_vec) v[i] = load_stream(src + lane + 32 * i);
}

// The dot products of one 32-weight item (at `b`, item `it` of its block) with the staged
// activations `xi` of NT tokens (item stride NT_STRIDE floats), added to acc[0..NT).
template <class T, int NT, int NT_STRIDE, bool BIASED>
__device__ __forceinline__ void dot_item(const u8* b, int it, const float* xi, float* acc) {
    if constexpr (T::SPLIT) {
        float q[32], sc[2], mn[2];
        T::template decode<BIASED>(b, it, q, sc, mn);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float* xt = xi + t * NT_STRIDE;
            const float4* xv = reinterpret_cast<const float4*>(xt);
            // Two chains per half, for latency.
            float p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float4 a = xv[j];
                float& r = p[(j / 4) * 2 + (j % 2)];
                r = fmaf(q[4 * j], a.x, r);
                r = fmaf(q[4 * j + 1], a.y, r);
                r = fmaf(q[4 * j + 2], a.z, r);
                r = fmaf(q[4 * j + 3], a.w, r);
            }
            const float2 hs = *reinterpret_cast<const float2*>(xt + 32);
            acc[t] += sc[0] * (p[0] + p[1]) + sc[1] * (p[2] + p[3]) + (mn[0] * hs.x + mn[1] * hs.y);
        }
    } else {
        float wv[32];
        T::dequant(b, it, wv);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float4* xv = reinterpret_cast<const float4*>(xi + t * NT_STRIDE);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float4 a = xv[j];
                sum += wv[4 * j] * a.x + wv[4 * j + 1] * a.y + wv[4 * j + 2] * a.z + wv[4 * j + 3] * a.w;
            }
            acc[t] += sum;
        }
    }
}

// y[t, row] = sum_k w[row, k] * x[t, k] (+ bias[row]) for the tokens t0 .. t0 + NT of this block
// row (blockIdx.y). Each warp has ROWS rows (their items share each activation read from shared
// memory). `row_stride` is the padded byte length of a device row. A row's blocks are spread
// evenly over its steps, so that no step is a short tail. BIASED: the split types' biased
// decoding (dequant.cuh), by default as the includer's WC_BIASED_DECODE says.
template <class T, int NT, int WARPS, int ROWS, int STEP_COLS, int STEP_BYTES, bool BIASED = WC_BIASED_DECODE != 0>
__device__ __forceinline__ void matvec(const u8* __restrict__ w, u64 row_stride, const float* __restrict__ x,
                                       const float* __restrict__ bias, float* __restrict__ y, int rows, int cols,
                                       int n_tok) {
    using S = Step<T, STEP_COLS, STEP_BYTES>;
    constexpr int XSTRIDE = S::ITEMS * X_ITEM;
    __shared__ uint4 wstage[WARPS][ROWS][S::VECS_PER_LANE * 32];
    __shared__ __align__(16) float xstage[NT * XSTRIDE];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row0 = (blockIdx.x * WARPS + warp) * ROWS;
    const int t0 = blockIdx.y * NT;
    const int n_blocks = cols / T::QK;
    const int n_steps = (n_blocks + S::BLOCKS - 1) / S::BLOCKS;
    const int per_step = (n_blocks + n_steps - 1) / n_steps;
    // Rows past the end (and whole inactive warps) still take part in loading x and the barriers.
    const u8* wr[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) wr[r] = w + (u64)(row0 + r < rows ? row0 + r : 0) * row_stride;
    const bool active = row0 < rows;
    float acc[ROWS][NT];
#pragma unroll
    for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = 0.0f;

    uint4 v[ROWS][S::VECS_PER_LANE];
    if (active)
#pragma unroll
        for (int r = 0; r < ROWS; r++) load_step<S, T>(wr[r], 0, min(per_step, n_blocks), lane, v[r]);

    for (int step = 0; step < n_steps; step++) {
        const int b0 = step * per_step;
        const int nb = min(per_step, n_blocks - b0);
        const int k0 = b0 * T::QK;
        const int step_cols = nb * T::QK;
        __syncthreads();  // the previous step's readers are done with both stages
        // The activations first: their loads (from L2) then overlap the wait for this step's
        // weights, which the stores below need. Each group of 4 lanes stages one half item (16
        // values) and also stores its sum at [32] or [33] of the item, for the offsets of the
        // split types. Every lane runs the same number of rounds, for the shuffles.
        const int n4 = NT * (step_cols / 4);
#pragma unroll 4
        for (int f0 = 0; f0 < n4; f0 += WARPS * 32) {
            const int f = f0 + threadIdx.x;
            // One token: no integer division per float4.
            const int t = NT == 1 ? 0 : f / (step_cols / 4), c4 = NT == 1 ? f : f % (step_cols / 4);
            float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (f < n4 && t0 + t < n_tok) a = __ldg(reinterpret_cast<const float4*>(x + (u64)(t0 + t) * cols + k0) + c4);
            float h = (a.x + a.y) + (a.z + a.w);
            h += __shfl_xor_sync(0xffffffffu, h, 1);
            h += __shfl_xor_sync(0xffffffffu, h, 2);
            if (f < n4) {
                float* item = &xstage[t * XSTRIDE + (c4 / 8) * X_ITEM];
                *reinterpret_cast<float4*>(item + (c4 % 8) * 4) = a;
                if (c4 % 4 == 0) item[32 + (c4 / 4) % 2] = h;
            }
        }
#pragma unroll
        for (int r = 0; r < ROWS; r++)
#pragma unroll
            for (int i = 0; i < S::VECS_PER_LANE; i++)
                if (lane + 32 * i < S::VECS) wstage[warp][r][lane + 32 * i] = v[r][i];
        __syncthreads();
        if (active && step + 1 < n_steps) {
            const int b1 = b0 + per_step;
#pragma unroll
            for (int r = 0; r < ROWS; r++) load_step<S, T>(wr[r], b1, min(per_step, n_blocks - b1), lane, v[r]);
        }
        const int skew = (int)(((u64)b0 * T::BYTES) & 15);
#pragma unroll
        for (int i = 0; i < S::ITEMS_PER_LANE; i++) {
            const int it = lane + 32 * i;
            if (active && it < nb * T::ITEMS) {
#pragma unroll
                for (int r = 0; r < ROWS; r++) {
                    const u8* s = reinterpret_cast<const u8*>(wstage[warp][r]) + skew;
                    dot_item<T, NT, XSTRIDE, BIASED>(s + (it / T::ITEMS) * T::BYTES, it % T::ITEMS, &xstage[it * X_ITEM], acc[r]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float sum = warp_sum(acc[r][t]);
            if (lane == 0 && row0 + r < rows && t0 + t < n_tok)
                y[(u64)(t0 + t) * rows + row0 + r] = sum + (bias ? bias[row0 + r] : 0.0f);
        }
    }
}

// ---- Experimental (round 3, NOTES.md), instantiated only by the bench and
// tests/matvec_variants.rs until measured: a persistent one-token matvec. The grid is sized to
// the GPU (ops::matvec::launch_stream), each warp walks a contiguous range of row groups and
// their steps as one stream, with the next step's weights in flight (registers) while it
// computes the current one from its own shared-memory stage: no block-wide barrier after the
// start, and the load latency is paid once per warp instead of twice per row group. The
// activations are read from global memory (L1-resident: every warp of the SM reads the same
// row); only the half-item sums of the split types are staged, once per block (dynamic shared
// memory: cols / 16 floats).

// dot_item for activations in plain row order (`xv`, 32 values) and half sums `hs` (2 values).
template <class T, bool BIASED>
__device__ __forceinline__ void dot_item_flat(const u8* b, int it, const float* __restrict__ xv, const float* hs, float& acc) {
    const float4* x4 = reinterpret_cast<const float4*>(xv);
    if constexpr (T::SPLIT) {
        float q[32], sc[2], mn[2];
        T::template decode<BIASED>(b, it, q, sc, mn);
        float p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float4 a = __ldg(x4 + j);
            float& r = p[(j / 4) * 2 + (j % 2)];
            r = fmaf(q[4 * j], a.x, r);
            r = fmaf(q[4 * j + 1], a.y, r);
            r = fmaf(q[4 * j + 2], a.z, r);
            r = fmaf(q[4 * j + 3], a.w, r);
        }
        acc += sc[0] * (p[0] + p[1]) + sc[1] * (p[2] + p[3]) + (mn[0] * hs[0] + mn[1] * hs[1]);
    } else {
        float wv[32];
        T::dequant(b, it, wv);
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float4 a = __ldg(x4 + j);
            sum += wv[4 * j] * a.x + wv[4 * j + 1] * a.y + wv[4 * j + 2] * a.z + wv[4 * j + 3] * a.w;
        }
        acc += sum;
    }
}

template <class T, int WARPS, int ROWS, int STEP_COLS, int STEP_BYTES, bool BIASED = WC_BIASED_DECODE != 0>
__device__ __forceinline__ void matvec_stream(const u8* __restrict__ w, u64 row_stride, const float* __restrict__ x,
                                              const float* __restrict__ bias, float* __restrict__ y, int rows, int cols) {
    using S = Step<T, STEP_COLS, STEP_BYTES>;
    __shared__ uint4 wstage[WARPS][ROWS][S::VECS_PER_LANE * 32];
    extern __shared__ float hsum[];  // cols / 16 half-item sums
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if constexpr (T::SPLIT) {
        for (int h = threadIdx.x; h < cols / 16; h += WARPS * 32) {
            const float4* xh = reinterpret_cast<const float4*>(x + 16 * h);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float4 a = __ldg(xh + j);
                sum += (a.x + a.y) + (a.z + a.w);
            }
            hsum[h] = sum;
        }
        __syncthreads();  // the only block-wide barrier
    }
    const int n_blocks = cols / T::QK;
    const int n_steps = (n_blocks + S::BLOCKS - 1) / S::BLOCKS;
    const int per_step = (n_blocks + n_steps - 1) / n_steps;
    // This warp's row groups: a contiguous share of all groups.
    const int n_groups = (rows + ROWS - 1) / ROWS;
    const int n_warps = gridDim.x * WARPS;
    const int per_warp = (n_groups + n_warps - 1) / n_warps;
    const int g0 = (blockIdx.x * WARPS + warp) * per_warp;
    const int g1 = min(g0 + per_warp, n_groups);
    if (g0 >= g1) return;
    const int n_units = (g1 - g0) * n_steps;

    uint4 v[ROWS][S::VECS_PER_LANE];
    auto issue = [&](int u) {
        const int g = g0 + u / n_steps, st = u % n_steps;
        const int b0 = st * per_step;
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            const int row = min(g * ROWS + r, rows - 1);
            load_step<S, T>(w + (u64)row * row_stride, b0, min(per_step, n_blocks - b0), lane, v[r]);
        }
    };
    float acc[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) acc[r] = 0.0f;
    issue(0);
    for (int u = 0; u < n_units; u++) {
        __syncwarp();  // every lane is done reading the stage
#pragma unroll
        for (int r = 0; r < ROWS; r++)
#pragma unroll
            for (int i = 0; i < S::VECS_PER_LANE; i++)
                if (lane + 32 * i < S::VECS) wstage[warp][r][lane + 32 * i] = v[r][i];
        __syncwarp();
        if (u + 1 < n_units) issue(u + 1);
        const int g = g0 + u / n_steps, st = u % n_steps;
        const int b0 = st * per_step, nb = min(per_step, n_blocks - b0);
        const int skew = (int)(((u64)b0 * T::BYTES) & 15);
        const int item0 = b0 * T::ITEMS;
#pragma unroll
        for (int i = 0; i < S::ITEMS_PER_LANE; i++) {
            const int it = lane + 32 * i;
            if (it < nb * T::ITEMS) {
                const float* xv = x + 32 * (u64)(item0 + it);
                const float* hs = T::SPLIT ? hsum + 2 * (item0 + it) : nullptr;
#pragma unroll
                for (int r = 0; r < ROWS; r++) {
                    const u8* s = reinterpret_cast<const u8*>(wstage[warp][r]) + skew;
                    dot_item_flat<T, BIASED>(s + (it / T::ITEMS) * T::BYTES, it % T::ITEMS, xv, hs, acc[r]);
                }
            }
        }
        if (st == n_steps - 1) {
#pragma unroll
            for (int r = 0; r < ROWS; r++) {
                const float sum = warp_sum(acc[r]);
                acc[r] = 0.0f;
                if (lane == 0 && g * ROWS + r < rows) y[g * ROWS + r] = sum + (bias ? bias[g * ROWS + r] : 0.0f);
            }
        }
    }
}

// out[t, :] = dequant(w[ids[t], :]) * scale; one block per token.
template <class T>
__device__ __forceinline__ void embed(const u8* __restrict__ w, u64 row_stride, const u32* __restrict__ ids,
                                      int cols, float scale, float* __restrict__ out) {
    const int t = blockIdx.x;
    const u8* wr = w + (u64)ids[t] * row_stride;
    const int n_items = cols / T::QK * T::ITEMS;
    for (int it = threadIdx.x; it < n_items; it += blockDim.x) {
        const int blk = it / T::ITEMS, item = it % T::ITEMS;
        float wv[32];
        dequant_at<T>(wr, blk, cols / T::QK, item, wv);
        float* o = out + (u64)t * cols + (u64)blk * T::QK + 32 * item;
#pragma unroll
        for (int j = 0; j < 32; j++) o[j] = wv[j] * scale;
    }
}

