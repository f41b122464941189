#include "engine/backend/cpu/matmul_kernel.h"

#include <cstdlib>
#include <cstring>
#include <vector>

namespace vg::engine::cpu {

// Defined once per ISA by matmul_kernel_impl.h.
namespace baseline {
int MaxRows();
void PackRows(const float* x, int64_t rows, int64_t cols, int64_t group_begin, int64_t group_end,
              float* packed);
void MatMulTiles(const MatMulProblem& p, int64_t tile_begin, int64_t tile_end, int64_t row_begin,
                 int64_t row_end);
void AttentionScores(const AttentionProblem* a, int count, float* const* scores);
void AttentionValues(const AttentionProblem* a, int count, const float* const* weights,
                     float* const* out);
}  // namespace baseline
#if defined(VG_MATMUL_X86_KERNELS)
namespace avx2 {
int MaxRows();
void PackRows(const float* x, int64_t rows, int64_t cols, int64_t group_begin, int64_t group_end,
              float* packed);
void MatMulTiles(const MatMulProblem& p, int64_t tile_begin, int64_t tile_end, int64_t row_begin,
                 int64_t row_end);
void AttentionScores(const AttentionProblem* a, int count, float* const* scores);
void AttentionValues(const AttentionProblem* a, int count, const float* const* weights,
                     float* const* out);
}  // namespace avx2
namespace avx512 {
int MaxRows();
void PackRows(const float* x, int64_t rows, int64_t cols, int64_t group_begin, int64_t group_end,
              float* packed);
void MatMulTiles(const MatMulProblem& p, int64_t tile_begin, int64_t tile_end, int64_t row_begin,
                 int64_t row_end);
void AttentionScores(const AttentionProblem* a, int count, float* const* scores);
void AttentionValues(const AttentionProblem* a, int count, const float* const* weights,
                     float* const* out);
}  // namespace avx512
#endif

namespace {

std::vector<MatMulKernel> DetectKernels() {
  std::vector<MatMulKernel> kernels = {{"baseline", 4, baseline::MaxRows(), baseline::PackRows,
                                        baseline::MatMulTiles, baseline::AttentionScores,
                                        baseline::AttentionValues}};
#if defined(VG_MATMUL_X86_KERNELS)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2)
    kernels.push_back({"avx2", 8, avx2::MaxRows(), avx2::PackRows, avx2::MatMulTiles,
                       avx2::AttentionScores, avx2::AttentionValues});
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    kernels.push_back({"avx512", 16, avx512::MaxRows(), avx512::PackRows, avx512::MatMulTiles,
                       avx512::AttentionScores, avx512::AttentionValues});
  }
#endif
  return kernels;
}

}  // namespace

std::span<const MatMulKernel> AvailableMatMulKernels() {
  static const std::vector<MatMulKernel>* const kKernels =
      new std::vector<MatMulKernel>(DetectKernels());
  return *kKernels;
}

const MatMulKernel& SelectedMatMulKernel() {
  static const MatMulKernel* const kSelected = [] {
    std::span<const MatMulKernel> kernels = AvailableMatMulKernels();
    const char* wanted = std::getenv("VG_CPU_ISA");
    if (wanted != nullptr) {
      for (const MatMulKernel& k : kernels) {
        if (std::strcmp(k.name, wanted) == 0) return &k;
      }
    }
    return &kernels.back();
  }();
  return *kSelected;
}

}  // namespace vg::engine::cpu
