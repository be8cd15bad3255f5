// Dequantize-and-multiply kernels for decoding (one token) and small batches (up to 8 tokens),
// and the embedding gather, for every weight type (the templates are in matvec.cuh).
//
// One or two weight rows per warp, all warps of a block walking the columns in lockstep, a step
// of a few KiB of weights per row at a time:
// - each warp copies its row's bytes of the step to shared memory with coalesced 16-byte loads
//   (from the 16-byte boundary at or below the step's first block; device rows are padded to 16
//   bytes, so these loads never leave the row), and issues the next step's loads before it
//   computes on this one, so two steps of weights are in flight;
// - the block copies the step's activations to shared memory once for all its warps, each
//   32-value item padded to 36 floats so that lanes reading consecutive items hit distinct banks;
// - each lane then dequantizes 32-weight items from shared memory and dots them with every token.
//
#include "matvec.cuh"

// Configurations (warps per block, rows per warp, step columns, step bytes, minimum blocks per
// SM for __launch_bounds__ (0: none), biased decoding), per type, chosen from
// bench/runs/2026-11-26-h100-matvec3/call2 (H100; every type at 16384x4096 and the 7B decode
// shapes; every candidate also checked against the CPU reference by tests/matvec_variants.rs).
// The host wrapper mirrors WARPS and ROWS (ops/matvec.rs: `config`).
// - One token: steps of up to 4096 columns and 2 KiB per row, two rows per warp so each
//   activation read from shared memory serves two rows; 8 warps of two rows (16 rows share one
//   staging of the activations) with 1.5 KiB steps (a whole number of k-quant blocks and of
//   32-item rounds per step) or 1 KiB steps where those measured faster. The biased decoding
//   (one byte permute instead of permute + add per weight) for the 4- and 5-bit types, whose
//   error stays <= 3.6e-6 of the largest output (Q2_K/Q3_K lose too many bits, Q6_K was not
//   faster). F32 keeps round 2's configuration without a minimum block count (with one, ptxas
//   took 134 registers instead of 96 and F32 lost 35% at 4096x4096; this build is unmeasured).
// - 8 tokens: 4 warps (8 activation stages must fit in 48 KiB of shared memory) of two rows,
//   1 KiB steps: 25-30% faster than one row for most types; Q8_0, Q4_K, Q5_K and IQ4_NL were
//   slower that way (more registers) and keep one row with up to 128 registers (4 blocks per
//   SM, which keeps ptxas from spilling the 8 accumulators). Exact decoding.
template <int W, int R, int C, int B, int M, bool BIASED = false>
struct Cfg {
    static constexpr int WARPS = W, ROWS = R, COLS = C, BYTES = B, MIN_BLOCKS = M;
    static constexpr bool BIASED_DECODE = BIASED;
};
template <class T> struct MatvecCfg : Cfg<4, 2, 4096, 2048, 1> {};
template <> struct MatvecCfg<F32> : Cfg<4, 2, 4096, 2048, 0> {};
template <> struct MatvecCfg<F16> : Cfg<8, 2, 2048, 1024, 1> {};
template <> struct MatvecCfg<BF16> : Cfg<8, 2, 2048, 1024, 1> {};
template <> struct MatvecCfg<Q8_0> : Cfg<8, 2, 2048, 1024, 1> {};
template <> struct MatvecCfg<Q4_0> : Cfg<8, 2, 4096, 1536, 1, true> {};
template <> struct MatvecCfg<Q4_1> : Cfg<8, 2, 4096, 1536, 1, true> {};
template <> struct MatvecCfg<Q5_0> : Cfg<4, 2, 4096, 2048, 1, true> {};
template <> struct MatvecCfg<Q5_1> : Cfg<8, 2, 2048, 1024, 1, true> {};
template <> struct MatvecCfg<Q2_K> : Cfg<8, 2, 4096, 1536, 1> {};
template <> struct MatvecCfg<Q3_K> : Cfg<8, 2, 2048, 1024, 1> {};
template <> struct MatvecCfg<Q4_K> : Cfg<4, 2, 4096, 2048, 1, true> {};
template <> struct MatvecCfg<Q5_K> : Cfg<8, 2, 4096, 1536, 1, true> {};
template <> struct MatvecCfg<Q6_K> : Cfg<8, 2, 2048, 1024, 1> {};
template <class T> struct Matmul8Cfg : Cfg<4, 2, 1024, 1024, 1> {};
template <> struct Matmul8Cfg<Q8_0> : Cfg<4, 1, 1024, 2048, 4> {};
template <> struct Matmul8Cfg<Q4_K> : Cfg<4, 1, 1024, 2048, 4> {};
template <> struct Matmul8Cfg<Q5_K> : Cfg<4, 1, 1024, 2048, 4> {};
template <> struct Matmul8Cfg<IQ4_NL> : Cfg<4, 1, 1024, 2048, 4> {};

#define MATVEC_KERNELS(name, T)                                                                                        \
    extern "C" __global__ void __launch_bounds__(MatvecCfg<T>::WARPS * 32, MatvecCfg<T>::MIN_BLOCKS)                   \
        matvec_##name(const u8* w, u64 row_stride, const float* x, const float* bias, float* y, int rows,              \
                      int cols, int n_tok) {                                                                           \
        using C = MatvecCfg<T>;                                                                                        \
        matvec<T, 1, C::WARPS, C::ROWS, C::COLS, C::BYTES, C::BIASED_DECODE>(w, row_stride, x, bias, y, rows, cols, \
                                                                             n_tok);                                   \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(Matmul8Cfg<T>::WARPS * 32, Matmul8Cfg<T>::MIN_BLOCKS)                 \
        matmul8_##name(const u8* w, u64 row_stride, const float* x, const float* bias, float* y, int rows,             \
                       int cols, int n_tok) {                                                                          \
        using C = Matmul8Cfg<T>;                                                                                       \
        matvec<T, 8, C::WARPS, C::ROWS, C::COLS, C::BYTES, false>(w, row_stride, x, bias, y, rows, cols, n_tok);        \
    }                                                                                                                  \
    extern "C" __global__ void embed_##name(const u8* w, u64 row_stride, const u32* ids, int cols,                     \
                                            float scale, float* out) {                                                 \
        embed<T>(w, row_stride, ids, cols, scale, out);                                                                \
    }

FOR_EACH_WEIGHT_TYPE(MATVEC_KERNELS)

#define EMBED_KERNEL(name, T)                                                                                          \
    extern "C" __global__ void embed_##name(const u8* w, u64 row_stride, const u32* ids, int cols, float scale,      \
                                            float* out) {                                                              \
        embed<T>(w, row_stride, ids, cols, scale, out);                                                                \
    }
FOR_EACH_REPACKED_TYPE(EMBED_KERNEL)
