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
// SM for __launch_bounds__), per type, chosen from bench/runs/2026-11-26-h100-kernels2 (H100,
// every type at 16384x4096 and the 7B decode shapes). The host wrapper mirrors WARPS and ROWS
// (ops/matvec.rs: `config`).
// - One token: steps of up to 4096 columns and 2 KiB per row (with 1024 columns, a 4-bit row
//   step was 576 bytes), two rows per warp so each activation read from shared memory serves
//   two rows. Q8_0, F16 and BF16 (1-2 bytes a weight, so a 2 KiB step is only 1024-2048
//   columns) were 5-15% faster with 8 warps of one row and 1024-column steps.
// - 8 tokens: 4 warps (8 activation stages must fit in 48 KiB of shared memory) of two rows,
//   1 KiB steps: 25-30% faster than one row for most types; Q8_0, Q4_K, Q5_K and IQ4_NL were
//   slower that way (more registers) and keep one row with up to 128 registers (4 blocks per
//   SM, which keeps ptxas from spilling the 8 accumulators).
template <int W, int R, int C, int B, int M>
struct Cfg {
    static constexpr int WARPS = W, ROWS = R, COLS = C, BYTES = B, MIN_BLOCKS = M;
};
template <class T> struct MatvecCfg : Cfg<4, 2, 4096, 2048, 1> {};
template <> struct MatvecCfg<Q8_0> : Cfg<8, 1, 1024, 2048, 1> {};
template <> struct MatvecCfg<F16> : Cfg<8, 1, 1024, 2048, 1> {};
template <> struct MatvecCfg<BF16> : Cfg<8, 1, 1024, 2048, 1> {};
template <class T> struct Matmul8Cfg : Cfg<4, 2, 1024, 1024, 1> {};
template <> struct Matmul8Cfg<Q8_0> : Cfg<4, 1, 1024, 2048, 4> {};
template <> struct Matmul8Cfg<Q4_K> : Cfg<4, 1, 1024, 2048, 4> {};
template <> struct Matmul8Cfg<Q5_K> : Cfg<4, 1, 1024, 2048, 4> {};
template <> struct Matmul8Cfg<IQ4_NL> : Cfg<4, 1, 1024, 2048, 4> {};

#define MATVEC_KERNELS(name, T)                                                                                        \
    extern "C" __global__ void __launch_bounds__(MatvecCfg<T>::WARPS * 32)                                             \
        matvec_##name(const u8* w, u64 row_stride, const float* x, const float* bias, float* y, int rows,              \
                      int cols, int n_tok) {                                                                           \
        using C = MatvecCfg<T>;                                                                                        \
        matvec<T, 1, C::WARPS, C::ROWS, C::COLS, C::BYTES>(w, row_stride, x, bias, y, rows, cols, n_tok);               \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(Matmul8Cfg<T>::WARPS * 32, Matmul8Cfg<T>::MIN_BLOCKS)                 \
        matmul8_##name(const u8* w, u64 row_stride, const float* x, const float* bias, float* y, int rows,             \
                       int cols, int n_tok) {                                                                          \
        using C = Matmul8Cfg<T>;                                                                                       \
        matvec<T, 8, C::WARPS, C::ROWS, C::COLS, C::BYTES>(w, row_stride, x, bias, y, rows, cols, n_tok);               \
    }                                                                                                                  \
    extern "C" __global__ void embed_##name(const u8* w, u64 row_stride, const u32* ids, int cols,                     \
                                            float scale, float* out) {                                                 \
        embed<T>(w, row_stride, ids, cols, scale, out);                                                                \
    }

FOR_EACH_WEIGHT_TYPE(MATVEC_KERNELS)
