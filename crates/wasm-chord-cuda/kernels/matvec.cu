// Dequantize-and-multiply kernels for decoding (one token) and small batches (up to 8 tokens),
// and the embedding gather, for every weight type (the templates are in matvec.cuh).
//
// One warp per weight row, all warps of a block walking the columns in lockstep, a step of a
// few KiB of weights per row at a time:
// - each warp copies its row's bytes of the step to shared memory with coalesced 16-byte loads
//   (from the 16-byte boundary at or below the step's first block; device rows are padded to 16
//   bytes, so these loads never leave the row), and issues the next step's loads before it
//   computes on this one, so two steps of weights are in flight;
// - the block copies the step's activations to shared memory once for all its warps, each
//   32-value item padded to 36 floats so that lanes reading consecutive items hit distinct banks;
// - each lane then dequantizes 32-weight items from shared memory and dots them with every token.
//
// The one-token kernel's step is up to 4096 columns and 2 KiB per row: with 1024 columns (v2)
// a 4-bit row step was only 576 bytes, and the kernel waited on memory latency once per step
// (a ~30 us floor at 16384 x 4096 whatever the type; NOTES.md). The 8-token kernel keeps 1024
// columns so its 8 activation stages fit in shared memory.
#include "matvec.cuh"

// Warps per block and rows per warp; the host wrapper's MATVEC_WARPS, MATVEC_ROWS and
// MATMUL8_WARPS. Two rows per warp halve the activation reads from shared memory per weight in
// the one-token kernel. The 8-token kernel has 4 warps of one row so its 8 activation stages
// fit in 48 KiB of shared memory; it may use up to 128
// registers (4 blocks per SM), which keeps ptxas from spilling its 8 accumulators.
constexpr int MATVEC_WARPS = 4;
constexpr int MATVEC_ROWS = 2;
constexpr int MATMUL8_WARPS = 4;

#define MATVEC_KERNELS(name, T)                                                                                        \
    extern "C" __global__ void __launch_bounds__(MATVEC_WARPS * 32)                                                    \
        matvec_##name(const u8* w, u64 row_stride, const float* x, const float* bias, float* y, int rows,              \
                      int cols, int n_tok) {                                                                           \
        matvec<T, 1, MATVEC_WARPS, MATVEC_ROWS, 4096, 2048>(w, row_stride, x, bias, y, rows, cols, n_tok);                          \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(MATMUL8_WARPS * 32, 4)                                                 \
        matmul8_##name(const u8* w, u64 row_stride, const float* x, const float* bias, float* y, int rows,             \
                       int cols, int n_tok) {                                                                          \
        matvec<T, 8, MATMUL8_WARPS, 1, 1024, 2048>(w, row_stride, x, bias, y, rows, cols, n_tok);                         \
    }                                                                                                                  \
    extern "C" __global__ void embed_##name(const u8* w, u64 row_stride, const u32* ids, int cols,                     \
                                            float scale, float* out) {                                                 \
        embed<T>(w, row_stride, ids, cols, scale, out);                                                                \
    }

FOR_EACH_WEIGHT_TYPE(MATVEC_KERNELS)
