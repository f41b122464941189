#include "engine/backend/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

namespace vg::engine::cpu {
namespace {

constexpr int kLanes = 8;  // independent accumulators per dot product

// Four float lanes as one value. GCC's generic vectors lower to whatever the baseline target
// has (SSE2 on x86-64, NEON on Arm) without -march flags; plain scalar loops over eight lanes
// vectorised poorly (shuffles and spills instead of packed multiply-adds).
typedef float V4 __attribute__((vector_size(4 * sizeof(float))));

inline V4 Load(const float* p) {
  V4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Eight accumulator lanes: lo holds lanes 0-3, hi lanes 4-7. Lane j sums the products at indices
// i with i % 8 == j in index order; the n % 8 tail is added as one more zero-padded step; the
// lanes combine by a fixed tree. Every dot product in this file follows exactly this recipe.
struct Acc8 {
  V4 lo = {};
  V4 hi = {};
  inline void Add(const float* a, const float* b) {
    lo += Load(a) * Load(b);
    hi += Load(a + 4) * Load(b + 4);
  }
  inline float Reduce() const {
    return ((lo[0] + hi[0]) + (lo[1] + hi[1])) + ((lo[2] + hi[2]) + (lo[3] + hi[3]));
  }
};

// Copies the last n % 8 elements of a row into a zero-padded block of 8.
inline void TailBlock(const float* p, int64_t main, int64_t n, float* block) {
  for (int j = 0; j < kLanes; ++j) block[j] = main + j < n ? p[main + j] : 0.0f;
}

inline float BitsToFloat(uint32_t bits) {
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

}  // namespace

float HalfToFloat(uint16_t h) {
  // Giesen's half_to_float: shift exponent/mantissa into place, rebias, fix up Inf/NaN and
  // zero/subnormal with selects (no branches, so loops over it vectorise).
  const uint32_t shifted_exp = 0x7c00u << 13;
  uint32_t bits = (static_cast<uint32_t>(h) & 0x7fffu) << 13;
  const uint32_t exp = bits & shifted_exp;
  bits += (127 - 15) << 23;
  const uint32_t inf_nan = bits + ((128 - 16) << 23);
  const float sub = BitsToFloat(bits + (1u << 23)) - BitsToFloat(113u << 23);
  uint32_t sub_bits;
  std::memcpy(&sub_bits, &sub, sizeof(sub_bits));
  bits = exp == shifted_exp ? inf_nan : (exp == 0 ? sub_bits : bits);
  return BitsToFloat(bits | ((static_cast<uint32_t>(h) & 0x8000u) << 16));
}

void WidenToFloat(DType dtype, const std::byte* data, int64_t offset, int64_t n, float* dst) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, data + offset * 4, static_cast<size_t>(n) * 4);
      return;
    case DType::kBF16: {
      const std::byte* src = data + offset * 2;
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        dst[i] = BitsToFloat(static_cast<uint32_t>(bits) << 16);
      }
      return;
    }
    case DType::kF16: {
      const std::byte* src = data + offset * 2;
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        dst[i] = HalfToFloat(bits);
      }
      return;
    }
  }
}

float Dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  Acc8 acc;
  const int64_t main = n - n % kLanes;
  for (int64_t i = 0; i < main; i += kLanes) acc.Add(a + i, b + i);
  if (main < n) {
    float ta[kLanes], tb[kLanes];
    TailBlock(a, main, n, ta);
    TailBlock(b, main, n, tb);
    acc.Add(ta, tb);
  }
  return acc.Reduce();
}

void MatMul(ThreadPool& pool, const float* x, int64_t rows, const WeightMatrix& w,
            const float* bias, float* out, const MatMulKernel* kernel) {
  if (w.rows <= 0) return;
  const MatMulTarget target{&w, bias, out};
  MatMuls(pool, x, rows, std::span<const MatMulTarget>(&target, 1), kernel);
}

void MatMuls(ThreadPool& pool, const float* x, int64_t rows, std::span<const MatMulTarget> targets,
             const MatMulKernel* kernel) {
  if (rows <= 0 || targets.empty()) return;
  const MatMulKernel& k = kernel != nullptr ? *kernel : SelectedMatMulKernel();
  const int64_t cols = targets[0].w->cols;
  // first_tile[i]: index of target i's first tile in the joint numbering.
  std::vector<int64_t> first_tile;
  std::vector<MatMulProblem> problems;
  int64_t tiles = 0;
  for (const MatMulTarget& t : targets) {
    first_tile.push_back(tiles);
    problems.push_back(
        MatMulProblem{x, rows, t.w->dtype, t.w->data, t.w->rows, t.w->cols, t.bias, t.out});
    tiles += (t.w->rows + kMatMulWeightTile - 1) / kMatMulWeightTile;
  }
  first_tile.push_back(tiles);
  // Input rows go in blocks of about 512 KiB, so that a block stays in the L2 cache while every
  // weight tile passes over it; a decode batch is one block, so weights are read once per call.
  //
  // A block has a multiple of 12 rows (the widest kernel's row group, which the narrower ones'
  // groups of 4 divide) and at least 96: with fewer, the weights of wide matrices (6912 columns)
  // would stream from memory once per dozen rows, and memory, not arithmetic, would bound
  // prefill.
  constexpr int64_t kBlockBytes = 512 * 1024;
  constexpr int64_t kMinBlockRows = 96;
  const int64_t block = std::max<int64_t>(kMinBlockRows, kBlockBytes / (cols * 4) / 12 * 12);
  // The block's rows are packed once for every target and thread (in parallel when there are
  // enough of them to pay for a fork/join).
  static thread_local std::vector<float> packed;
  for (int64_t row_begin = 0; row_begin < rows; row_begin += block) {
    const int64_t row_end = std::min(rows, row_begin + block);
    const int64_t n = row_end - row_begin;
    const int64_t groups = (n + k.max_rows - 1) / k.max_rows;
    if (packed.size() < static_cast<size_t>(n * cols)) packed.resize(n * cols);
    const float* block_x = x + row_begin * cols;
    float* block_packed = packed.data();  // the caller's buffer (a lambda naming `packed` would
                                          // get each worker's own thread_local)
    if (groups > 1 && n * cols >= 64 * 1024) {
      pool.ParallelFor(groups, [&](int64_t begin, int64_t end) {
        k.pack_rows(block_x, n, cols, begin, end, block_packed);
      });
    } else {
      k.pack_rows(block_x, n, cols, 0, groups, block_packed);
    }
    for (MatMulProblem& p : problems) p.x = block_packed;
    pool.ParallelFor(tiles, [&](int64_t begin, int64_t end) {
      for (size_t i = 0; i < problems.size(); ++i) {
        const int64_t lo = std::max(begin, first_tile[i]);
        const int64_t hi = std::min(end, first_tile[i + 1]);
        if (lo < hi)
          k.tiles(problems[i], lo - first_tile[i], hi - first_tile[i], row_begin, row_end);
      }
    });
  }
}

void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps,
             float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* dst = out + r * dim;
    double sum_sq = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum_sq += static_cast<double>(xr[i]) * xr[i];
    const float mean = static_cast<float>(sum_sq / static_cast<double>(dim));
    const float inv_rms = 1.0f / std::sqrt(mean + eps);
    for (int64_t i = 0; i < dim; ++i) dst[i] = (xr[i] * inv_rms) * (1.0f + weight[i]);
  }
}

void RopeInverseFrequencies(int64_t head_dim, double theta, float* inv_freq) {
  // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)) with a float32 tensor exponent.
  const float base = static_cast<float>(theta);
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(base, exponent);
  }
}

void RopeCosSin(int64_t position, const float* inv_freq, int64_t half_dim, float* cos_out,
                float* sin_out) {
  const float pos = static_cast<float>(position);
  for (int64_t i = 0; i < half_dim; ++i) {
    const float angle = inv_freq[i] * pos;
    cos_out[i] = std::cos(angle);
    sin_out[i] = std::sin(angle);
  }
}

void ApplyRope(float* x, int64_t num_heads, int64_t half_dim, const float* cos, const float* sin) {
  for (int64_t h = 0; h < num_heads; ++h) {
    float* a = x + h * 2 * half_dim;
    float* b = a + half_dim;
    for (int64_t i = 0; i < half_dim; ++i) {
      const float first = a[i];
      const float second = b[i];
      a[i] = first * cos[i] + (-second) * sin[i];
      b[i] = second * cos[i] + first * sin[i];
    }
  }
}

namespace {

// Tanh's body, always inlined so that the GeGlu and SoftCap loops vectorise.
__attribute__((always_inline)) inline float TanhInline(float x) {
  // A [13/6] rational minimax fit on [-7.9988, 7.9988] (the coefficients Eigen uses), tanh(x) = x
  // below 4e-4. Branch-free (selects only), so loops over it vectorise; libm's tanhf does not.
  constexpr float kClamp = 7.99881172180175781f;
  const float c = std::min(std::max(x, -kClamp), kClamp);  // NaN stays NaN (max(NaN, y) = NaN)
  const float x2 = c * c;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * c;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  const float r = p / q;
  // A select, not a branch, with -fno-trapping-math (CMakeLists.txt), so callers' loops vectorise.
  return std::fabs(x) < 0.0004f ? x : r;
}

}  // namespace

float Tanh(float x) { return TanhInline(x); }

namespace {

__attribute__((always_inline)) inline float GeluTanhInline(float x) {
  // Constants and operation order of PyTorch's GeluKernel (approximate="tanh").
  constexpr float kBeta =
      static_cast<float>(std::numbers::sqrt2 * (2.0 * std::numbers::inv_sqrtpi) * 0.5);
  constexpr float kKappa = 0.044715f;
  const float inner = kBeta * (x + kKappa * (x * x * x));
  return 0.5f * x * (1.0f + TanhInline(inner));
}

}  // namespace

float GeluTanh(float x) { return GeluTanhInline(x); }

void GeGlu(const float* gate, const float* up, int64_t n, float* out) {
  // Inlined, so that the loop vectorises (a call per element ran at scalar speed).
  for (int64_t i = 0; i < n; ++i) out[i] = GeluTanhInline(gate[i]) * up[i];
}

void SoftCap(float* x, int64_t n, float cap) {
  for (int64_t i = 0; i < n; ++i) x[i] = TanhInline(x[i] / cap) * cap;
}

}  // namespace vg::engine::cpu
