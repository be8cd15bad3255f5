// Flash attention on tensor cores (FlashAttention-2 style), for prefill and, split over the key
// sequence, for decode (flash-decoding).
//
// Rows of a block's query tile are "packed rows" of one KV head: packed row R is query token
// R / g of query head hk * g + R % g (g = n_head / n_head_kv), so the g query heads that share
// a KV head read each key and value tile once (GQA without repeating K/V). In prefill each warp
// owns 16 * RW packed rows (RW = 2: every K/V fragment feeds two mmas); in decode (BM = 16) the
// WS warps share the 16 rows and split each tile's keys, merging at the end. Keys and values
// stream through shared memory in tiles of BN rows, double
// buffered with cp.async; S = Q K^T and O += P V use mma.sync m16n8k16 (f16 or bf16 operands,
// f32 accumulation) fed by ldmatrix, with the online softmax in registers (log2 domain: Q is
// pre-scaled by scale * log2(e) when it is loaded). Tiles no row of the block can see (causal,
// sliding window) are skipped; masks are applied only on tiles that need them.
//
// Split-KV (grid.z > 1): block z handles keys [z * split_len, (z + 1) * split_len) and writes
// its normalized partial output and (max, sum) to part_o / part_ml; flash_combine merges them.
// A split that sees no key writes (max -inf, sum 0) and is ignored by the combine, so the grid
// may be sized for more keys than kv_len (graph capture with a fixed grid).
//
// Decode steps replayed from a CUDA graph pass pos_ptr (else null): the query's first position
// is pos_ptr[0], kv_len = pos_ptr[0] + n_q, and the keys are spread evenly over the grid's
// splits (at least two tiles each) whatever split_len says, so one grid, sized for the cache's
// capacity, serves every position.
//
// KV element types: 0 = f16 rows, 1 = bf16 rows, 2 = q8_0 split into int8 values [rows, cols]
// and f16 scales [rows, cols / 32] (the CUDA cache's layout), copied raw with cp.async into a
// staging buffer and dequantized to f16 tiles in shared memory.
#include "common.cuh"

#define LOG2E 1.4426950408889634f

template <bool BF> struct FlashElem { typedef __half T; };
template <> struct FlashElem<true> { typedef __nv_bfloat16 T; };

__device__ __forceinline__ u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }

// 16 bytes global -> shared; with valid false the 16 bytes are zero-filled and nothing is read.
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, bool valid) {
    const int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}

template <int N>
__device__ __forceinline__ void cp_async_small(u32 dst, const void* src, bool valid) {
    const int n = valid ? N : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(src), "n"(N), "r"(n));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

__device__ __forceinline__ void ldsm_x4_t(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

// c += a * b for one m16n8k16 tile.
template <bool BF>
__device__ __forceinline__ void mma16816(float (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    if constexpr (BF) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    } else {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
}

// Two floats as one register of two 16-bit values, the first in the low half.
template <bool BF>
__device__ __forceinline__ u32 pack2(float lo, float hi) {
    if constexpr (BF) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<u32*>(&v);
    } else {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<u32*>(&v);
    }
}

template <bool BF>
__device__ __forceinline__ float2 unpack2(u32 x) {
    if constexpr (BF) {
        return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&x));
    } else {
        return __half22float2(*reinterpret_cast<__half2*>(&x));
    }
}

__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Shared memory of one block, in bytes (the host computes the same from flash_smem_bytes' rule).
template <int D, int KV, int BM, int BN>
struct FlashSmem {
    static constexpr int SD = D + 8;  // row stride in elements: 16 bytes of padding, no bank conflicts
    static constexpr int Q = BM * SD * 2;
    static constexpr int KV_TILES = (KV == 2 ? 2 : 4) * BN * SD * 2;  // K, V (x2 stages unless q8_0)
    static constexpr int STAGE_Q8 = BN * D + BN * (D / 32) * 2;       // values + scales of K or V
    static constexpr int RAW = KV == 2 ? 2 * 2 * STAGE_Q8 : 0;
    static constexpr int TOTAL = Q + KV_TILES + RAW;
};

template <int D, int KV, int BM, int BN, bool PSPLIT, int WS, int RW>
__device__ __forceinline__ void flash_attn(const float* __restrict__ q, const void* __restrict__ kc,
                                           const void* __restrict__ vc, const void* __restrict__ kd,
                                           const void* __restrict__ vd, float* __restrict__ out,
                                           float* __restrict__ part_o, float* __restrict__ part_ml, int n_q,
                                           int n_head, int n_head_kv, int kv_len, int q_pos0, int window,
                                           float qscale, float softcap_mul, int split_len,
                                           const int* __restrict__ pos_ptr) {
    // Decode kernels only (the host sends no position to the others): the prefill kernels sit
    // at 255 registers and would spill.
    if constexpr (BM == 16) if (pos_ptr != nullptr) {
        q_pos0 = pos_ptr[0];
        kv_len = q_pos0 + n_q;
        const int per_split = (kv_len + (int)gridDim.z - 1) / (int)gridDim.z;
        split_len = max(2 * BN, (per_split + BN - 1) / BN * BN);
    }
    constexpr bool BF = KV == 1;
    typedef typename FlashElem<BF>::T T;
    typedef FlashSmem<D, KV, BM, BN> L;
    // WS == 1: each warp owns 16 rows of the tile. WS > 1 (decode, BM == 16): the WS warps share
    // the 16 rows and take BN / WS keys of each tile each, merged through shared memory at the end.
    // RW: row tiles of 16 per warp (prefill): each K and V fragment read from shared memory
    // then feeds RW mmas, halving shared-memory traffic per mma at RW = 2.
    constexpr int NW = WS > 1 ? WS : BM / (16 * RW), NT = NW * 32, SD = L::SD, KW = BN / WS;
    static_assert(D % 64 == 0 && KW % 16 == 0 && BM % (16 * RW) == 0 && (WS == 1 || (BM == 16 && RW == 1)), "tile shapes");

    extern __shared__ __align__(128) unsigned char smem[];
    T* sQ = reinterpret_cast<T*>(smem);
    T* sK = sQ + BM * SD;
    T* sV = sK + (KV == 2 ? 1 : 2) * BN * SD;
    unsigned char* raw = smem + L::Q + L::KV_TILES;

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = n_head / n_head_kv;
    const int hk = blockIdx.y;
    const int split = blockIdx.z;
    // Heaviest tiles (latest queries, most keys under the causal mask) start first.
    const int tile = gridDim.x - 1 - blockIdx.x;
    const int rows = n_q * g;
    const int r0 = tile * BM;
    const int row_stride = n_head_kv * D;  // cache row, in elements

    // Key range of this block: what its rows can see, within this split.
    const int last_row = min(r0 + BM, rows) - 1;
    const int p_first = q_pos0 + r0 / g, p_last = q_pos0 + last_row / g;
    const int s0 = split * split_len, s1 = min(s0 + split_len, kv_len);
    const int k_lo = max(s0, window > 0 ? p_first - window + 1 : 0);
    const int k_hi = min(s1, p_last + 1);  // exclusive
    const int kb0 = k_lo / BN * BN;
    const int n_tiles = k_hi > k_lo ? (k_hi - kb0 + BN - 1) / BN : 0;

    // Q tile: f32 -> scaled 16-bit values in shared memory; rows past the end are zero.
    for (int idx = threadIdx.x; idx < BM * D / 4; idx += NT) {
        const int r = idx / (D / 4), c = idx % (D / 4) * 4;
        const int R = r0 + r;
        float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (R < rows) {
            const int t = R / g, h = hk * g + R % g;
            x = *reinterpret_cast<const float4*>(q + ((u64)t * n_head + h) * D + c);
        }
        uint2 v;
        v.x = pack2<BF>(x.x * qscale, x.y * qscale);
        v.y = pack2<BF>(x.z * qscale, x.w * qscale);
        *reinterpret_cast<uint2*>(sQ + r * SD + c) = v;
    }

    // Issues the copies of key/value tile `kb` into stage `st`.
    auto issue = [&](int kb, int st) {
        if constexpr (KV == 2) {
            unsigned char* base = raw + st * 2 * L::STAGE_Q8;
            for (int idx = threadIdx.x; idx < BN * D / 16; idx += NT) {
                const int r = idx / (D / 16), c = idx % (D / 16) * 16;
                const int j = kb + r;
                const bool ok = j < kv_len;
                const u64 off = (u64)(ok ? j : 0) * row_stride + hk * D + c;
                cp_async16(smem_u32(base + r * D + c), (const u8*)kc + off, ok);
                cp_async16(smem_u32(base + L::STAGE_Q8 + r * D + c), (const u8*)vc + off, ok);
            }
            constexpr int SB = D / 32 * 2;  // scale bytes of one row of one head: 4, 8 or 16
            for (int r = threadIdx.x; r < BN; r += NT) {
                const int j = kb + r;
                const bool ok = j < kv_len;
                const u64 off = ((u64)(ok ? j : 0) * row_stride + hk * D) / 32 * 2;
                unsigned char* dk = base + BN * D + r * SB;
                unsigned char* dv = base + L::STAGE_Q8 + BN * D + r * SB;
                if constexpr (SB == 16) {
                    cp_async16(smem_u32(dk), (const u8*)kd + off, ok);
                    cp_async16(smem_u32(dv), (const u8*)vd + off, ok);
                } else {
                    cp_async_small<SB>(smem_u32(dk), (const u8*)kd + off, ok);
                    cp_async_small<SB>(smem_u32(dv), (const u8*)vd + off, ok);
                }
            }
        } else {
            T* dk = sK + st * BN * SD;
            T* dv = sV + st * BN * SD;
            const T* kp = reinterpret_cast<const T*>(kc);
            const T* vp = reinterpret_cast<const T*>(vc);
            for (int idx = threadIdx.x; idx < BN * D / 8; idx += NT) {
                const int r = idx / (D / 8), c = idx % (D / 8) * 8;
                const int j = kb + r;
                const bool ok = j < kv_len;
                const u64 off = (u64)(ok ? j : 0) * row_stride + hk * D + c;
                cp_async16(smem_u32(dk + r * SD + c), kp + off, ok);
                cp_async16(smem_u32(dv + r * SD + c), vp + off, ok);
            }
        }
    };

    // Rows of this thread: for each of the warp's RW row tiles, A = group row and B = A + 8
    // (the mma accumulator layout).
    const int wrow = WS > 1 ? 0 : warp * 16 * RW;  // the warp's first row in the tile
    const int koff = WS > 1 ? warp * KW : 0;       // the warp's first key in a tile
    const int wr0 = r0 + wrow;
    const bool warp_active = wr0 < rows;
    int pos[RW][2];
#pragma unroll
    for (int mt = 0; mt < RW; mt++)
#pragma unroll
        for (int hb = 0; hb < 2; hb++) pos[mt][hb] = q_pos0 + min(wr0 + mt * 16 + hb * 8 + lane / 4, rows - 1) / g;
    const int pw_first = q_pos0 + min(wr0, rows - 1) / g, pw_last = q_pos0 + min(wr0 + 16 * RW - 1, rows - 1) / g;
    const int tq = lane % 4, mi = lane / 8, mr = lane % 8;

    float o[RW][D / 8][4];
    float m[RW][2], l[RW][2];
#pragma unroll
    for (int mt = 0; mt < RW; mt++) {
#pragma unroll
        for (int i = 0; i < D / 8; i++) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
    }

    if (n_tiles > 0) issue(kb0, 0);
    cp_async_commit();

    for (int it = 0; it < n_tiles; it++) {
        const int kb = kb0 + it * BN;
        if (it + 1 < n_tiles) issue(kb + BN, (it + 1) & 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const T* tK;
        const T* tV;
        if constexpr (KV == 2) {
            // Dequantize the staged int8 tile to f16: 16 values per step.
            const unsigned char* base = raw + (it & 1) * 2 * L::STAGE_Q8;
            for (int idx = threadIdx.x; idx < 2 * BN * D / 16; idx += NT) {
                const int which = idx / (BN * D / 16), rem = idx % (BN * D / 16);
                const int r = rem / (D / 16), c = rem % (D / 16) * 16;
                const unsigned char* st = base + which * L::STAGE_Q8;
                const uint4 qv = *reinterpret_cast<const uint4*>(st + r * D + c);
                const float d = __half2float(*reinterpret_cast<const __half*>(st + BN * D + r * (D / 32) * 2 + c / 32 * 2));
                const u32 w[4] = {qv.x, qv.y, qv.z, qv.w};
                u32 hv[8];
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const float f0 = (float)(signed char)(w[i] & 0xff), f1 = (float)(signed char)((w[i] >> 8) & 0xff);
                    const float f2 = (float)(signed char)((w[i] >> 16) & 0xff), f3 = (float)(signed char)(w[i] >> 24);
                    hv[2 * i] = pack2<false>(f0 * d, f1 * d);
                    hv[2 * i + 1] = pack2<false>(f2 * d, f3 * d);
                }
                T* dst = (which == 0 ? sK : sV) + r * SD + c;
                *reinterpret_cast<uint4*>(dst) = make_uint4(hv[0], hv[1], hv[2], hv[3]);
                *reinterpret_cast<uint4*>(dst + 8) = make_uint4(hv[4], hv[5], hv[6], hv[7]);
            }
            __syncthreads();
            tK = sK;
            tV = sV;
        } else {
            tK = sK + (it & 1) * BN * SD;
            tV = sV + (it & 1) * BN * SD;
        }

        const int kbw = kb + koff;
        if (warp_active && kbw <= pw_last && (window <= 0 || kbw + KW - 1 > pw_first - window)) {
            // S = Q K^T for this warp's 16 * RW rows and KW keys: each K fragment feeds RW mmas.
            float s[RW][KW / 8][4];
#pragma unroll
            for (int mt = 0; mt < RW; mt++)
#pragma unroll
                for (int i = 0; i < KW / 8; i++) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.0f;
#pragma unroll
            for (int kc = 0; kc < D / 16; kc++) {
                u32 a[RW][4];
#pragma unroll
                for (int mt = 0; mt < RW; mt++)
                    ldsm_x4(smem_u32(sQ + (wrow + mt * 16 + (mi & 1) * 8 + mr) * SD + kc * 16 + (mi >> 1) * 8), a[mt][0],
                            a[mt][1], a[mt][2], a[mt][3]);
#pragma unroll
                for (int np = 0; np < KW / 16; np++) {
                    u32 b0, b1, b2, b3;
                    ldsm_x4(smem_u32(tK + (koff + (2 * np + (mi >> 1)) * 8 + mr) * SD + kc * 16 + (mi & 1) * 8), b0, b1, b2, b3);
#pragma unroll
                    for (int mt = 0; mt < RW; mt++) {
                        mma16816<BF>(s[mt][2 * np], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b0, b1);
                        mma16816<BF>(s[mt][2 * np + 1], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b2, b3);
                    }
                }
            }
            if (softcap_mul != 0.0f) {
#pragma unroll
                for (int mt = 0; mt < RW; mt++)
#pragma unroll
                    for (int i = 0; i < KW / 8; i++)
#pragma unroll
                        for (int e = 0; e < 4; e++) s[mt][i][e] = tanhf(s[mt][i][e]) * softcap_mul;
            }
            const bool need_mask = kbw + KW - 1 > pw_first || kbw + KW > s1 || (window > 0 && kbw <= pw_last - window);
            if (need_mask) {
#pragma unroll
                for (int mt = 0; mt < RW; mt++)
#pragma unroll
                    for (int i = 0; i < KW / 8; i++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const int j = kbw + i * 8 + tq * 2 + (e & 1);
                            const int p = pos[mt][e >> 1];
                            if (j > p || j >= s1 || (window > 0 && j <= p - window)) s[mt][i][e] = -INFINITY;
                        }
            }
            // Online softmax, two rows per thread and row tile; a quad's 4 threads share a row.
#pragma unroll
            for (int mt = 0; mt < RW; mt++) {
#pragma unroll
                for (int hb = 0; hb < 2; hb++) {
                    float x = -INFINITY;
#pragma unroll
                    for (int i = 0; i < KW / 8; i++) x = fmaxf(x, fmaxf(s[mt][i][2 * hb], s[mt][i][2 * hb + 1]));
                    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
                    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
                    const float mn = fmaxf(m[mt][hb], x);
                    // A row that has seen no key yet keeps max -inf; subtract 0 then, not -inf.
                    const float base = mn == -INFINITY ? 0.0f : mn;
                    const float corr = fast_exp2(m[mt][hb] - base);
                    m[mt][hb] = mn;
                    float sum = 0.0f;
#pragma unroll
                    for (int i = 0; i < KW / 8; i++) {
                        s[mt][i][2 * hb] = fast_exp2(s[mt][i][2 * hb] - base);
                        s[mt][i][2 * hb + 1] = fast_exp2(s[mt][i][2 * hb + 1] - base);
                        sum += s[mt][i][2 * hb] + s[mt][i][2 * hb + 1];
                    }
                    l[mt][hb] = l[mt][hb] * corr + sum;
#pragma unroll
                    for (int i = 0; i < D / 8; i++) {
                        o[mt][i][2 * hb] *= corr;
                        o[mt][i][2 * hb + 1] *= corr;
                    }
                }
            }
            // O += P V: the accumulator layout of S is the A-operand layout of P; each V fragment
            // feeds RW (or 2 RW with P split) mmas.
#pragma unroll
            for (int kc = 0; kc < KW / 16; kc++) {
                u32 pa[RW][4], pe[RW][4];
#pragma unroll
                for (int mt = 0; mt < RW; mt++) {
                    pa[mt][0] = pack2<BF>(s[mt][2 * kc][0], s[mt][2 * kc][1]);
                    pa[mt][1] = pack2<BF>(s[mt][2 * kc][2], s[mt][2 * kc][3]);
                    pa[mt][2] = pack2<BF>(s[mt][2 * kc + 1][0], s[mt][2 * kc + 1][1]);
                    pa[mt][3] = pack2<BF>(s[mt][2 * kc + 1][2], s[mt][2 * kc + 1][3]);
                    if constexpr (PSPLIT) {
                        // P = hi + lo, both 16-bit: the rounding of P no longer limits accuracy.
#pragma unroll
                        for (int r = 0; r < 4; r++) {
                            const float2 h = unpack2<BF>(pa[mt][r]);
                            const float* src = s[mt][2 * kc + (r >> 1)] + 2 * (r & 1);
                            pe[mt][r] = pack2<BF>(src[0] - h.x, src[1] - h.y);
                        }
                    }
                }
#pragma unroll
                for (int dp = 0; dp < D / 16; dp++) {
                    u32 b0, b1, b2, b3;
                    ldsm_x4_t(smem_u32(tV + (koff + kc * 16 + (mi & 1) * 8 + mr) * SD + (2 * dp + (mi >> 1)) * 8), b0, b1, b2, b3);
#pragma unroll
                    for (int mt = 0; mt < RW; mt++) {
                        mma16816<BF>(o[mt][2 * dp], pa[mt][0], pa[mt][1], pa[mt][2], pa[mt][3], b0, b1);
                        mma16816<BF>(o[mt][2 * dp + 1], pa[mt][0], pa[mt][1], pa[mt][2], pa[mt][3], b2, b3);
                        if constexpr (PSPLIT) {
                            mma16816<BF>(o[mt][2 * dp], pe[mt][0], pe[mt][1], pe[mt][2], pe[mt][3], b0, b1);
                            mma16816<BF>(o[mt][2 * dp + 1], pe[mt][0], pe[mt][1], pe[mt][2], pe[mt][3], b2, b3);
                        }
                    }
                }
            }
        }
        __syncthreads();
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mt = 0; mt < RW; mt++)
#pragma unroll
        for (int hb = 0; hb < 2; hb++) {
            l[mt][hb] += __shfl_xor_sync(0xffffffffu, l[mt][hb], 1);
            l[mt][hb] += __shfl_xor_sync(0xffffffffu, l[mt][hb], 2);
        }
    const bool split_out = gridDim.z > 1;
    if constexpr (WS > 1) {
        // Merge the warps' (max, sum, output) of the same 16 rows; the tiles' memory is free now.
        __syncthreads();
        float* so = reinterpret_cast<float*>(smem);  // [WS][16][D], unnormalized
        float* sml = so + WS * 16 * D;                // [WS][16] (max, sum)
        const int ra = warp * 16 + lane / 4;
#pragma unroll
        for (int i = 0; i < D / 8; i++) {
            *reinterpret_cast<float2*>(so + ra * D + i * 8 + tq * 2) = make_float2(o[0][i][0], o[0][i][1]);
            *reinterpret_cast<float2*>(so + (ra + 8) * D + i * 8 + tq * 2) = make_float2(o[0][i][2], o[0][i][3]);
        }
        if (tq == 0) {
            sml[ra * 2] = m[0][0];
            sml[ra * 2 + 1] = l[0][0];
            sml[(ra + 8) * 2] = m[0][1];
            sml[(ra + 8) * 2 + 1] = l[0][1];
        }
        __syncthreads();
        for (int idx = threadIdx.x; idx < 16 * D; idx += NT) {
            const int r = idx / D, c = idx % D, R = r0 + r;
            if (R >= rows) break;  // rows are in order: every later idx is past the end too
            float mx = -INFINITY;
#pragma unroll
            for (int w = 0; w < WS; w++)
                if (sml[(w * 16 + r) * 2 + 1] > 0.0f) mx = fmaxf(mx, sml[(w * 16 + r) * 2]);
            float lsum = 0.0f, acc = 0.0f;
#pragma unroll
            for (int w = 0; w < WS; w++) {
                const float lw = sml[(w * 16 + r) * 2 + 1];
                if (lw > 0.0f) {
                    const float f = fast_exp2(sml[(w * 16 + r) * 2] - mx);
                    lsum += lw * f;
                    acc += so[(w * 16 + r) * D + c] * f;
                }
            }
            const int t = R / g, h = hk * g + R % g;
            const u64 orow = ((split_out ? (u64)split * n_q : 0) + t) * n_head + h;
            (split_out ? part_o : out)[orow * D + c] = lsum > 0.0f ? acc / lsum : 0.0f;
            if (split_out && c == 0) {
                part_ml[orow * 2] = mx;
                part_ml[orow * 2 + 1] = lsum;
            }
        }
        return;
    }
    if (!warp_active) return;
#pragma unroll
    for (int mt = 0; mt < RW; mt++)
#pragma unroll
        for (int hb = 0; hb < 2; hb++) {
            const int R = wr0 + mt * 16 + hb * 8 + lane / 4;
            if (R >= rows) continue;
            const int t = R / g, h = hk * g + R % g;
            const u64 orow = ((split_out ? (u64)split * n_q : 0) + t) * n_head + h;
            float* dst = (split_out ? part_o : out) + orow * D + tq * 2;
            const float inv = l[mt][hb] > 0.0f ? 1.0f / l[mt][hb] : 0.0f;
#pragma unroll
            for (int i = 0; i < D / 8; i++)
                *reinterpret_cast<float2*>(dst + i * 8) = make_float2(o[mt][i][2 * hb] * inv, o[mt][i][2 * hb + 1] * inv);
            if (split_out && tq == 0) {
                part_ml[orow * 2] = m[mt][hb];
                part_ml[orow * 2 + 1] = l[mt][hb];
            }
        }
}

#define FLASH_ARGS                                                                                              \
    const float *__restrict__ q, const void *__restrict__ kc, const void *__restrict__ vc,                       \
        const void *__restrict__ kd, const void *__restrict__ vd, float *__restrict__ out,                      \
        float *__restrict__ part_o, float *__restrict__ part_ml, int n_q, int n_head, int n_head_kv, int kv_len, \
        int q_pos0, int window, float qscale, float softcap_mul, int split_len, const int *__restrict__ pos_ptr
#define FLASH_PASS                                                                                               \
    q, kc, vc, kd, vd, out, part_o, part_ml, n_q, n_head, n_head_kv, kv_len, q_pos0, window, qscale, softcap_mul, \
        split_len, pos_ptr

// flash_<kv>_d<D>_m<BM>[w4][_fast]: the host picks BM 16 (decode: up to 16 packed rows, WS
// warps over the keys) or 128 (prefill: 8 warps of 16 rows, or "w4": 4 warps of 32 rows).
#define FLASH_KERNEL(NAME, D, KV, BM, BN, PSPLIT, WS, RW)                                \
    extern "C" __global__ void __launch_bounds__((WS > 1 ? WS : BM / (16 * RW)) * 32, 1) \
        NAME(FLASH_ARGS) {                                                               \
        PDL_ENTER();                                                                      \
        flash_attn<D, KV, BM, BN, PSPLIT, WS, RW>(FLASH_PASS);                           \
    }

#define FLASH_KV(KVNAME, KV, PS)                                         \
    FLASH_KERNEL(flash_##KVNAME##_d64_m16, 64, KV, 16, 64, PS, 4, 1)      \
    FLASH_KERNEL(flash_##KVNAME##_d64_m128, 64, KV, 128, 64, PS, 1, 1)    \
    FLASH_KERNEL(flash_##KVNAME##_d128_m16, 128, KV, 16, 64, PS, 4, 1)    \
    FLASH_KERNEL(flash_##KVNAME##_d128_m128, 128, KV, 128, 64, PS, 1, 1)  \
    FLASH_KERNEL(flash_##KVNAME##_d256_m16, 256, KV, 16, 32, PS, 2, 1)    \
    FLASH_KERNEL(flash_##KVNAME##_d256_m128, 256, KV, 128, 32, PS, 1, 1)

FLASH_KV(f16, 0, false)
FLASH_KV(bf16, 1, true)
FLASH_KV(q8_0, 2, false)
// Prefill with 4 warps of 32 rows (BN 32 at D = 128 keeps the accumulators in registers; the
// precise bf16 kernel at D = 128 would spill and is not built).
FLASH_KERNEL(flash_f16_d64_m128w4, 64, 0, 128, 64, false, 1, 2)
FLASH_KERNEL(flash_f16_d128_m128w4, 128, 0, 128, 32, false, 1, 2)
FLASH_KERNEL(flash_q8_0_d64_m128w4, 64, 2, 128, 64, false, 1, 2)
FLASH_KERNEL(flash_q8_0_d128_m128w4, 128, 2, 128, 32, false, 1, 2)
FLASH_KERNEL(flash_bf16_d64_m128w4, 64, 1, 128, 64, true, 1, 2)
FLASH_KERNEL(flash_bf16_d64_m128w4_fast, 64, 1, 128, 64, false, 1, 2)
FLASH_KERNEL(flash_bf16_d128_m128w4_fast, 128, 1, 128, 32, false, 1, 2)
// bf16 with P rounded to bf16 once (as FlashAttention and PyTorch do): faster, ~1e-3 error.
FLASH_KERNEL(flash_bf16_d64_m128_fast, 64, 1, 128, 64, false, 1, 1)
FLASH_KERNEL(flash_bf16_d128_m128_fast, 128, 1, 128, 64, false, 1, 1)
FLASH_KERNEL(flash_bf16_d256_m128_fast, 256, 1, 128, 32, false, 1, 1)

// Merges the split partials: one block of D threads per (query token, head) row. With xq (D a
// multiple of 32) the output is also quantized for the int8 matvec exactly as mmvq.cu's
// quantize_q8 does (each warp holds one block of 32 values): the o projection needs no
// quantize launch.
extern "C" __global__ void flash_combine(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                         float* __restrict__ out, int n_rows, int d, int n_splits,
                                         i8* __restrict__ xq, float2* __restrict__ xd) {
    PDL_ENTER();
    const int row = blockIdx.x;
    float mx = -INFINITY;
    for (int s = 0; s < n_splits; s++) {
        const float l = part_ml[((u64)s * n_rows + row) * 2 + 1];
        if (l > 0.0f) mx = fmaxf(mx, part_ml[((u64)s * n_rows + row) * 2]);
    }
    float den = 0.0f, acc = 0.0f;
    for (int s = 0; s < n_splits; s++) {
        const u64 i = (u64)s * n_rows + row;
        const float l = part_ml[i * 2 + 1];
        if (l > 0.0f) {
            const float w = l * fast_exp2(part_ml[i * 2] - mx);
            den += w;
            acc += w * part_o[i * d + threadIdx.x];
        }
    }
    const u64 i = (u64)row * d + threadIdx.x;
    const float o = den > 0.0f ? acc / den : 0.0f;
    out[i] = o;
    if (xq == nullptr) return;
    const float amax = warp_max(fabsf(o));
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    const int qv = __float2int_rn(o * id);
    xq[i] = (i8)qv;
    const float sum = warp_sum((float)qv);
    if (threadIdx.x % 32 == 0) xd[i / 32] = make_float2(amax / 127.0f, sum);
}

// One block of 32 values into q8_0, one value per lane, rounding as ggml's quantize_row_q8_0.
__device__ __forceinline__ void store_q8_0_block(const float* __restrict__ x, signed char* __restrict__ qs,
                                                 __half* __restrict__ scale, int lane) {
    const float v = x[lane];
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    qs[lane] = (signed char)roundf(v * id);
    if (lane == 0) scale[0] = __float2half_rn(d);
}

// Quantizes rows into the q8_0 cache (int8 values and f16 scales kept apart): one warp per block
// of 32 values.
extern "C" __global__ void store_q8_0(const float* __restrict__ x, signed char* __restrict__ qs,
                                      __half* __restrict__ scales, u64 n_blocks) {
    const u64 b = ((u64)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (b >= n_blocks) return;
    store_q8_0_block(x + b * 32, qs + b * 32, scales + b, lane);
}

// store_q8_0 at cache row pos[0] (decode steps replayed from a graph): x holds rows of cols values.
extern "C" __global__ void store_q8_0_at(const float* __restrict__ x, signed char* __restrict__ qs,
                                         __half* __restrict__ scales, const int* __restrict__ pos, int cols,
                                         u64 n_blocks) {
    const u64 b = ((u64)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (b >= n_blocks) return;
    const u64 dst = (u64)pos[0] * (cols / 32) + b;
    store_q8_0_block(x + b * 32, qs + dst * 32, scales + dst, lane);
}
