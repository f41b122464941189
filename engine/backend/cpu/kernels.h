// Numeric kernels of the CPU backend: float32 arithmetic over weights in their stored dtype.
//
// Every kernel here is checked against a scalar double-precision reference in
// tests/engine/backend/kernels_test.cc. Dot products use GCC/Clang generic 4-float vectors (two
// per 8-lane accumulator), which lower to the baseline ISA (SSE2 on x86-64) with no intrinsics
// and no -march flags, so the binary stays portable; elementwise loops are left to the
// auto-vectoriser. MatMul, where the time goes, runs kernels built for AVX2 and AVX-512 too,
// chosen at run time (matmul_kernel.h).
//
// Determinism contract (the backend's batch invariance rests on it): every output element is a
// fixed sequence of float operations that depends only on its own inputs and the tensor sizes,
// never on how many rows are processed together or on how the thread pool partitions the work.
#ifndef VG_ENGINE_BACKEND_CPU_KERNELS_H_
#define VG_ENGINE_BACKEND_CPU_KERNELS_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/backend/cpu/matmul_kernel.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/model/dtype.h"

namespace vg::engine::cpu {

// A [rows, cols] matrix in its stored dtype and in the tile layout of
// engine/model/matrix_layout.h (typically in the checkpoint's memory, which Checkpoint rearranges
// when opened with MatrixLayout::kTiles). Not owned. Elements need not be naturally aligned.
struct WeightMatrix {
  DType dtype = DType::kF32;
  const std::byte* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
};

// Widens elements [offset, offset + n) of a tensor stored as `dtype` to float32 (exact).
void WidenToFloat(DType dtype, const std::byte* data, int64_t offset, int64_t n, float* dst);

// IEEE half -> float, exact, branch-free (vectorisable). Exposed for tests.
float HalfToFloat(uint16_t bits);

// sum_i a[i] * b[i] over 8 interleaved float lanes combined by a fixed tree.
float Dot(const float* a, const float* b, int64_t n);

// out[r * w.rows + o] = sum_i x[r * w.cols + i] * W[o][i] (+ bias[o] when bias is non-null), for
// r in [0, rows). Weights are read in their stored dtype, once per block of input rows (one block
// holds any decode batch); work is split over tiles of output features. The summation order of
// each element depends only on w.cols and the kernel (batch invariant; matmul_kernel.h). `kernel`
// null means SelectedMatMulKernel(). `x` and `out` must not overlap.
void MatMul(ThreadPool& pool, const float* x, int64_t rows, const WeightMatrix& w,
            const float* bias, float* out, const MatMulKernel* kernel = nullptr);

// One of several products of the same input (MatMuls below).
struct MatMulTarget {
  const WeightMatrix* w = nullptr;
  const float* bias = nullptr;  // [w->rows] or null
  float* out = nullptr;         // [rows, w->rows]
};

// MatMul for every target (all with w->cols equal to the input's width) in one parallel loop over
// their tiles together: q/k/v and gate/up of a layer cost one fork/join each instead of three or
// two, and the threads share the small matrices evenly. Each output is the same as MatMul's.
void MatMuls(ThreadPool& pool, const float* x, int64_t rows, std::span<const MatMulTarget> targets,
             const MatMulKernel* kernel = nullptr);

// out = x * rsqrt(mean(x^2) + eps) * (1 + weight), each of `rows` rows of length `dim`, float32
// like VaultGemmaRMSNorm. `out` may alias `x`.
void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out);

// inv_freq[i] = 1 / theta^(2i / head_dim) for i < head_dim / 2, computed in float32 the way
// transformers' default RoPE init does.
void RopeInverseFrequencies(int64_t head_dim, double theta, float* inv_freq);

// cos/sin of angle = float(position) * inv_freq[i], in float32, for i < head_dim / 2.
void RopeCosSin(int64_t position, const float* inv_freq, int64_t half_dim, float* cos_out,
                float* sin_out);

// Rotate-half RoPE in place on `num_heads` consecutive vectors of `2 * half_dim` floats:
// x' = x * cos + rotate_half(x) * sin, rotate_half([a, b]) = [-b, a].
void ApplyRope(float* x, int64_t num_heads, int64_t half_dim, const float* cos, const float* sin);

// tanh(x) within 4.2e-7 absolute (and relative) of the exact value for every float x; vectorisable.
float Tanh(float x);

// gelu_pytorch_tanh: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))).
float GeluTanh(float x);

// out[i] = GeluTanh(gate[i]) * up[i]. `out` may alias `gate` or `up`.
void GeGlu(const float* gate, const float* up, int64_t n, float* out);

// x = tanh(x / cap) * cap, in place.
void SoftCap(float* x, int64_t n, float cap);

}  // namespace vg::engine::cpu

#endif  // VG_ENGINE_BACKEND_CPU_KERNELS_H_
