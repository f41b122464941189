// The inner loops of MatMul (kernels.h) and of paged attention (paged_attention.h), built once per
// instruction set and chosen at run time.
//
// matmul_kernel_impl.h holds one portable template written with GCC/Clang generic vectors; it is
// compiled three times: for the x86-64 baseline (SSE2, 4 float lanes), for AVX2+FMA (8 lanes) and
// for AVX-512 (16 lanes), each in its own translation unit with its own flags and its own
// namespace, so no code built for a wider ISA can leak into the others through the linker.
// SelectedMatMulKernel() picks the widest one the CPU supports (the VG_CPU_ISA environment
// variable, "baseline", "avx2" or "avx512", narrows the choice, for benchmarks and tests).
//
// The arithmetic recipe of one output element of MatMul (the determinism contract of kernels.h):
// starting from 0, the products x[i] * w[i] are added in increasing order of i, one at a time
// (fused multiply-adds on AVX2 and AVX-512, which therefore agree bit for bit; a multiply and an
// add on the baseline), then the bias if any. The weights are in the tile layout
// (engine/model/matrix_layout.h), so one vector load fetches one column of consecutive outputs
// and the sums of many outputs and many input rows advance together, in registers, without any
// horizontal reduction. Nothing depends on the other rows of the batch or on the thread partition.
//
// The attention loops' recipe: with L lanes, lane j sums over the indices i = j (mod L) in
// increasing order (fused where the ISA has it), the last n % L elements entering as one
// zero-padded step; the L lanes then combine by halving (lane j with lane j + L/2, and so on).
#ifndef VG_ENGINE_BACKEND_CPU_MATMUL_KERNEL_H_
#define VG_ENGINE_BACKEND_CPU_MATMUL_KERNEL_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/model/dtype.h"
#include "engine/model/matrix_layout.h"

namespace vg::engine::cpu {

// One matrix product out = x W^T (+ bias), W [w_rows, cols] in its stored dtype and in the tile
// layout of engine/model/matrix_layout.h.
struct MatMulProblem {
  const float* x = nullptr;  // the input rows of the call, as PackRows packed them
  int64_t rows = 0;
  DType dtype = DType::kF32;
  const std::byte* w = nullptr;  // tiled; elements need not be aligned
  int64_t w_rows = 0;
  int64_t cols = 0;
  const float* bias = nullptr;  // [w_rows] or null
  float* out = nullptr;         // [rows, w_rows]
};

// Weight rows are processed in the layout's tiles: the unit of work split between threads.
inline constexpr int64_t kMatMulWeightTile = kTileRows;

// Input rows are multiplied in groups of at most MatMulKernel::max_rows (sizes balanced: the
// first rows % groups groups of ceil(rows / max_rows) groups get one row more). PackRows copies
// groups [group_begin, group_end) of x [rows, cols] into `packed` ([rows * cols] floats), each
// group of n rows column-major (packed[group start * cols + c * n + r]), so that one column of a
// group is n consecutive floats.
using PackRowsFn = void (*)(const float* x, int64_t rows, int64_t cols, int64_t group_begin,
                            int64_t group_end, float* packed);

// Computes the outputs of weight tiles [tile_begin, tile_end) for input rows [row_begin, row_end)
// of out; p.x holds just those rows, packed.
using MatMulTilesFn = void (*)(const MatMulProblem& p, int64_t tile_begin, int64_t tile_end,
                               int64_t row_begin, int64_t row_end);

// One query head's attention over one layer of the paged KV cache (paged_attention.h): the two
// loops over positions, q.K and the weighted sum of V. K and V are laid out
// [block][block_size][kv_heads][head_dim] in `kv_dtype`; position p lives in block
// block_table[p / block_size] at offset p % block_size.
struct AttentionProblem {
  const float* q = nullptr;  // [head_dim]
  DType kv_dtype = DType::kF32;
  const std::byte* keys = nullptr;
  const std::byte* values = nullptr;
  const int32_t* block_table = nullptr;
  int32_t block_size = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t kv_head = 0;
  int64_t lo = 0;  // positions [lo, hi]
  int64_t hi = 0;
};

// The attention functions take 1..kMaxAttentionRows problems at once: query rows that share
// keys, values, block table and kv head (one sequence, one kv head) and differ in q, lo and hi.
// Positions that several rows see are loaded once for all of them; each row's results are the
// same as alone.
inline constexpr int64_t kMaxAttentionRows = 4;

// scores[r][p - a[r].lo] = a[r].q . K[p] for p in [a[r].lo, a[r].hi]; each one summed by the
// recipe above (lanes over the head dimension, then halving), independently of the others.
using AttentionScoresFn = void (*)(const AttentionProblem* a, int count, float* const* scores);
// out[r][d] = sum of weights[r][p - a[r].lo] * V[p][d] over p = a[r].lo, ..., a[r].hi, in that
// order.
using AttentionValuesFn = void (*)(const AttentionProblem* a, int count,
                                   const float* const* weights, float* const* out);

struct MatMulKernel {
  const char* name;  // "baseline", "avx2", "avx512"
  int lanes;         // float lanes of one accumulator
  int max_rows;      // input rows sharing one pass over a weight tile
  PackRowsFn pack_rows;
  MatMulTilesFn tiles;
  AttentionScoresFn attention_scores;
  AttentionValuesFn attention_values;
};

// The kernels this CPU can run, narrowest first (always at least "baseline").
std::span<const MatMulKernel> AvailableMatMulKernels();

// The widest available kernel, or the one VG_CPU_ISA names (if available). Chosen once.
const MatMulKernel& SelectedMatMulKernel();

}  // namespace vg::engine::cpu

#endif  // VG_ENGINE_BACKEND_CPU_MATMUL_KERNEL_H_
