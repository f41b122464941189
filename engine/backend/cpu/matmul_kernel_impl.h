// The MatMul inner loops as one template over the vector width. Included only by
// matmul_baseline.cc, matmul_avx2.cc and matmul_avx512.cc, each of which defines
// VG_MATMUL_NAMESPACE (baseline, avx2, avx512) and VG_MATMUL_BYTES (16, 32, 64) first and is
// compiled with its ISA's flags. Everything here sits in that namespace's anonymous namespace and
// uses no library templates, so nothing built with wide instructions is shared with other units.
// The recipe of one output element is the one matmul_kernel.h states.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "engine/backend/cpu/matmul_kernel.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>  // always-inline intrinsics only: nothing from here is ever emitted
#endif

#if !defined(VG_MATMUL_NAMESPACE) || !defined(VG_MATMUL_BYTES)
#error "define VG_MATMUL_NAMESPACE and VG_MATMUL_BYTES before including matmul_kernel_impl.h"
#endif

namespace vg::engine::cpu::VG_MATMUL_NAMESPACE {
namespace {

constexpr int kLanes = VG_MATMUL_BYTES / 4;

typedef float VF __attribute__((vector_size(VG_MATMUL_BYTES)));
typedef uint32_t VU __attribute__((vector_size(VG_MATMUL_BYTES)));
typedef int32_t VI __attribute__((vector_size(VG_MATMUL_BYTES)));
typedef uint16_t VH __attribute__((vector_size(VG_MATMUL_BYTES / 2)));

inline VF LoadFloats(const float* p) {
  VF v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline VF BitsToFloats(VU bits) {
  VF v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

inline VU FloatsToBits(VF v) {
  VU bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return bits;
}

// kLanes weights starting at element i of a row, widened to float32 exactly.
template <DType D>
inline VF LoadWeights(const std::byte* row, int64_t i) {
  if constexpr (D == DType::kF32) {
    VF v;
    std::memcpy(&v, row + 4 * i, sizeof(v));
    return v;
  }
#if defined(__AVX512F__)
  if constexpr (kLanes == 16) {
    // One widening load each; GCC lowers the generic conversion below to several shuffles.
    const __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * i));
    if constexpr (D == DType::kBF16) {
      return (VF)_mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16);
    } else {
      return (VF)_mm512_cvtph_ps(halves);  // exact for every finite half
    }
  }
#endif
#if defined(__AVX2__)
  if constexpr (kLanes == 8) {
    const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i));
    if constexpr (D == DType::kBF16) {
      return (VF)_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16);
    } else {
      return (VF)_mm256_cvtph_ps(halves);
    }
  }
#endif
  {
    VH halves;
    std::memcpy(&halves, row + 2 * i, sizeof(halves));
    const VU h = __builtin_convertvector(halves, VU);
    if constexpr (D == DType::kBF16) {
      return BitsToFloats(h << 16);
    } else {
      // IEEE half: Giesen's branch-free widening (as HalfToFloat in kernels.cc), lane-wise.
      const VU shifted_exp = VU{} + (0x7c00u << 13);
      VU bits = (h & 0x7fffu) << 13;
      const VU exp = bits & shifted_exp;
      bits += (127u - 15u) << 23;
      const VU inf_nan = bits + ((128u - 16u) << 23);
      const VF sub = BitsToFloats(bits + (1u << 23)) - BitsToFloats(VU{} + (113u << 23));
      const VI is_special = exp == shifted_exp;
      const VI is_small = exp == 0;
      bits = (inf_nan & VU(is_special)) | (bits & ~VU(is_special));
      bits = (FloatsToBits(sub) & VU(is_small)) | (bits & ~VU(is_small));
      return BitsToFloats(bits | ((h & 0x8000u) << 16));
    }
  }
}

typedef float VF8 __attribute__((vector_size(32)));
typedef float VF4 __attribute__((vector_size(16)));

// Adds the upper half of a vector's lanes to its lower half: lane j + lane j + W/2.
template <typename Half, typename Full>
inline Half AddHalves(Full v) {
  Half lo, hi;
  std::memcpy(&lo, &v, sizeof(Half));
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(Half), sizeof(Half));
  return lo + hi;
}

// The lanes combined by halving: lane j with lane j + L/2, then j + L/4, ... (vector adds for the
// wide steps; this runs once per output element, often enough to matter for short rows).
inline float Reduce(VF v) {
  VF4 v4;
  if constexpr (kLanes == 16) {
    v4 = AddHalves<VF4>(AddHalves<VF8>(v));
  } else if constexpr (kLanes == 8) {
    v4 = AddHalves<VF4>(v);
  } else {
    std::memcpy(&v4, &v, sizeof(v4));
  }
  return (v4[0] + v4[2]) + (v4[1] + v4[3]);
}

template <DType D>
constexpr int64_t kElementBytes = D == DType::kF32 ? 4 : 2;

// One step of the product computes kStepOutputs consecutive outputs of a weight tile (two vectors)
// for up to kMaxRows input rows; the accumulators stay in registers for the whole pass over the
// columns: 12 x 2 of AVX-512's 32 registers, 4 x 2 of the 16 that SSE2 and AVX2 have, leaving
// room for the weights of a column pair and a broadcast input.
constexpr int kStepOutputs = 2 * kLanes;
constexpr int kMaxRows = kLanes >= 16 ? 12 : 4;
constexpr int kTile = static_cast<int>(kMatMulWeightTile);
static_assert(kTile % kStepOutputs == 0);

// How far ahead of a tile's first pass its weights are prefetched into L2 (they stream from
// memory in order; the hardware prefetchers stop at 4 KiB boundaries, huge pages or not).
constexpr int64_t kPrefetchBytes = 4096;

// One element at p, widened to float32.
template <DType D>
inline float LoadScalar(const std::byte* p) {
  std::byte padded[kLanes * 4] = {};
  std::memcpy(padded, p, kElementBytes<D>);
  const VF v = LoadWeights<D>(padded, 0);
  return v[0];
}

struct Step {
  const std::byte* tile;  // a full tile (kTile rows) in the tile layout, dtype D
  int64_t cols;
  int64_t first;   // the step's first output within the tile
  const float* x;  // the input rows, packed column-major: x[c * rows + r]
  float* out;      // out[r * ld + j] receives output first + j of row r
  int64_t ld;
  int valid;          // outputs to store (kStepOutputs unless the matrix ends inside the step)
  const float* bias;  // bias of output `first`, or null
  bool prefetch;      // the tile's first pass: prefetch what lies kPrefetchBytes ahead
};

template <int R>
inline void Store(const Step& s, VF (*acc)[2]) {
  for (int r = 0; r < R; ++r) {
    float* dst = s.out + r * s.ld;
    float sums[kStepOutputs];
    std::memcpy(sums, acc[r], sizeof(sums));
    for (int j = 0; j < s.valid; ++j) dst[j] = s.bias != nullptr ? sums[j] + s.bias[j] : sums[j];
  }
}

// acc += the products of columns [0, cols - cols % 2) of a BF16 tile step, in column order. Column
// pairs: one 32-bit word per output holds both columns; the even one widens by a shift, the odd
// one by a mask.
template <int R, bool kPrefetch>
__attribute__((always_inline)) inline void AccumulatePairs(const Step& s, VF (*acc)[2]) {
  const int64_t pairs = s.cols / 2;
  const std::byte* p = s.tile + s.first * 4;
  const float* x = s.x;
  const VU high = VU{} + 0xffff0000u;
  for (int64_t j = 0; j < pairs; ++j, p += kTile * 4, x += 2 * R) {
    if constexpr (kPrefetch) {
      for (int b = 0; b < kStepOutputs * 4; b += 64)
        __builtin_prefetch(p + b + kPrefetchBytes, 0, 2);
    }
    VU u0, u1;
    std::memcpy(&u0, p, sizeof(u0));
    std::memcpy(&u1, p + sizeof(u0), sizeof(u1));
    const VF e0 = BitsToFloats(u0 << 16), e1 = BitsToFloats(u1 << 16);
    const VF o0 = BitsToFloats(u0 & high), o1 = BitsToFloats(u1 & high);
    for (int r = 0; r < R; ++r) {
      const VF v = x[r] - VF{};  // a broadcast (x - 0 is x, so no add is emitted)
      acc[r][0] += v * e0;
      acc[r][1] += v * e1;
    }
    for (int r = 0; r < R; ++r) {
      const VF v = x[R + r] - VF{};
      acc[r][0] += v * o0;
      acc[r][1] += v * o1;
    }
  }
}

// The same for F32 and F16 tiles: one column at a time.
template <DType D, int R, bool kPrefetch>
__attribute__((always_inline)) inline void AccumulateColumns(const Step& s, VF (*acc)[2]) {
  constexpr int64_t eb = kElementBytes<D>;
  const std::byte* p = s.tile + s.first * eb;
  const float* x = s.x;
  for (int64_t c = 0; c < s.cols; ++c, p += kTile * eb, x += R) {
    if constexpr (kPrefetch) {
      for (int b = 0; b < kStepOutputs * eb; b += 64)
        __builtin_prefetch(p + b + kPrefetchBytes, 0, 2);
    }
    const VF w0 = LoadWeights<D>(p, 0), w1 = LoadWeights<D>(p, kLanes);
    for (int r = 0; r < R; ++r) {
      const VF v = x[r] - VF{};
      acc[r][0] += v * w0;
      acc[r][1] += v * w1;
    }
  }
}

// The step for R rows. Each output is summed over the columns in order, one fused multiply-add
// per column (matmul_kernel.h), whatever R is. Not inlined into its caller, and the prefetching
// and plain loops are separate: with branches or the other steps' code around it, GCC no longer
// keeps every accumulator in a register.
template <DType D, int R>
__attribute__((noinline)) void RunStep(const Step& s) {
  VF acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = VF{};
  if constexpr (D == DType::kBF16) {
    if (s.prefetch) {
      AccumulatePairs<R, true>(s, acc);
    } else {
      AccumulatePairs<R, false>(s, acc);
    }
    if (s.cols % 2 != 0) {
      const std::byte* last = s.tile + ((s.cols - 1) * kTile + s.first) * 2;
      const VF w0 = LoadWeights<D>(last, 0), w1 = LoadWeights<D>(last, kLanes);
      for (int r = 0; r < R; ++r) {
        const VF v = s.x[(s.cols - 1) * R + r] - VF{};
        acc[r][0] += v * w0;
        acc[r][1] += v * w1;
      }
    }
  } else if (s.prefetch) {
    AccumulateColumns<D, R, true>(s, acc);
  } else {
    AccumulateColumns<D, R, false>(s, acc);
  }
  Store<R>(s, acc);
}

template <DType D, int R = 1>
inline void RunStepFor(int rows, const Step& s) {
  if constexpr (R <= kMaxRows) {
    if (rows == R) return RunStep<D, R>(s);
    RunStepFor<D, R + 1>(rows, s);
  }
}

// Scratch of one thread: a short tile widened to float32.
struct Scratch {
  float* tile = nullptr;
  int64_t tile_size = 0;
  ~Scratch() { delete[] tile; }
};

// Rows go in groups of at most kMaxRows, sizes balanced: the first rows % groups groups get one
// row more than the others. Group g holds rows [GroupStart(g), GroupStart(g + 1)).
inline int64_t RowGroups(int64_t rows) { return (rows + kMaxRows - 1) / kMaxRows; }

inline int64_t GroupStart(int64_t rows, int64_t groups, int64_t g) {
  return g * (rows / groups) + (g < rows % groups ? g : rows % groups);
}

// Outputs of tiles [tile_begin, tile_end) for input rows [row_begin, row_end), which p.x holds as
// PackRows packed them. Every tile passes over every row group, streaming from memory on the
// first and from L2 after it.
template <DType D>
void TilesOf(const MatMulProblem& p, int64_t tile_begin, int64_t tile_end, int64_t row_begin,
             int64_t row_end) {
  static thread_local Scratch scratch;
  const int64_t cols = p.cols;
  const int64_t rows = row_end - row_begin;
  const int64_t groups = RowGroups(rows);
  const int64_t tile_bytes = kTile * cols * kElementBytes<D>;
  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    const int64_t o0 = tile * kTile;
    const int64_t m = p.w_rows - o0 < kTile ? p.w_rows - o0 : kTile;
    const std::byte* data = p.w + tile * tile_bytes;
    bool widened = false;
    if (m < kTile) {
      // The matrix's last, short tile: widened into a full float32 tile padded with zero weights
      // (widening is exact, so each sum is the same as in a full tile of its dtype).
      if (scratch.tile_size < kTile * cols) {
        delete[] scratch.tile;
        scratch.tile = new float[kTile * cols];
        scratch.tile_size = kTile * cols;
      }
      float* t = scratch.tile;
      for (int64_t i = 0; i < kTile * cols; ++i) t[i] = 0.0f;
      for (int64_t j = 0; j < m; ++j) {
        for (int64_t c = 0; c < cols; ++c) {
          // Element (j, c) of a short tile of m rows (matrix_layout.h).
          const int64_t index =
              D == DType::kBF16 && c < cols - cols % 2 ? (c / 2 * m + j) * 2 + c % 2 : c * m + j;
          t[c * kTile + j] = LoadScalar<D>(data + index * kElementBytes<D>);
        }
      }
      data = reinterpret_cast<const std::byte*>(t);
      widened = true;
    }
    for (int64_t first = 0; first < m; first += kStepOutputs) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t r0 = GroupStart(rows, groups, g);
        const int n = static_cast<int>(GroupStart(rows, groups, g + 1) - r0);
        Step s;
        s.tile = data;
        s.cols = cols;
        s.first = first;
        s.x = p.x + r0 * cols;
        s.out = p.out + (row_begin + r0) * p.w_rows + o0 + first;
        s.ld = p.w_rows;
        s.valid = static_cast<int>(m - first < kStepOutputs ? m - first : kStepOutputs);
        s.bias = p.bias != nullptr ? p.bias + o0 + first : nullptr;
        s.prefetch = g == 0 && !widened;
        if (widened) {
          RunStepFor<DType::kF32>(n, s);
        } else {
          RunStepFor<D>(n, s);
        }
      }
    }
  }
}

// Where position p's vector for the problem's kv head starts.
inline const std::byte* SlotOf(const AttentionProblem& a, const std::byte* base, int64_t p) {
  const int64_t slot =
      ((static_cast<int64_t>(a.block_table[p / a.block_size]) * a.block_size + p % a.block_size) *
           a.kv_heads +
       a.kv_head) *
      a.head_dim;
  return base + slot * (a.kv_dtype == DType::kF32 ? 4 : 2);
}

// Up to kLanes elements [begin, begin + count) of a stored vector, zero-padded and widened.
template <DType D>
inline VF LoadPadded(const std::byte* row, int64_t begin, int64_t count) {
  std::byte padded[kLanes * 4] = {};
  std::memcpy(padded, row + begin * kElementBytes<D>, count * kElementBytes<D>);
  return LoadWeights<D>(padded, 0);
}

// Scores of G consecutive positions from p0: G independent chains, so the multiply-adds of
// neighbouring positions overlap; each position's sum is the same as alone.
template <DType D, int G>
inline void ScoreGroup(const AttentionProblem& a, int64_t p0, VF q_tail, float* scores) {
  const int64_t n = a.head_dim;
  const int64_t main = n - n % kLanes;
  const std::byte* k[G];
  for (int j = 0; j < G; ++j) k[j] = SlotOf(a, a.keys, p0 + j);
  VF acc[G] = {};
  for (int64_t i = 0; i < main; i += kLanes) {
    const VF qv = LoadFloats(a.q + i);
    for (int j = 0; j < G; ++j) acc[j] += qv * LoadWeights<D>(k[j], i);
  }
  if (main < n) {
    for (int j = 0; j < G; ++j) acc[j] += q_tail * LoadPadded<D>(k[j], main, n - main);
  }
  for (int j = 0; j < G; ++j) scores[p0 + j - a.lo] = Reduce(acc[j]);
}

template <DType D>
void ScoresOf(const AttentionProblem& a, float* scores) {
  const int64_t n = a.head_dim;
  const int64_t main = n - n % kLanes;
  float q_tail[kLanes] = {};
  std::memcpy(q_tail, a.q + main, (n - main) * sizeof(float));
  const VF qt = LoadFloats(q_tail);
  constexpr int kGroup = 4;
  int64_t p = a.lo;
  for (; p + kGroup - 1 <= a.hi; p += kGroup) ScoreGroup<D, kGroup>(a, p, qt, scores);
  for (; p <= a.hi; ++p) ScoreGroup<D, 1>(a, p, qt, scores);
}

// out[d0, d0 + C * kLanes) over every position, the C output vectors held in registers.
template <DType D, int C>
inline void ValuePass(const AttentionProblem& a, const float* weights, int64_t d0, float* out) {
  VF acc[C] = {};
  for (int64_t p = a.lo; p <= a.hi; ++p) {
    const VF w = VF{} + weights[p - a.lo];
    const std::byte* v = SlotOf(a, a.values, p);
    for (int c = 0; c < C; ++c) acc[c] += w * LoadWeights<D>(v, d0 + c * kLanes);
  }
  std::memcpy(out + d0, acc, sizeof(acc));
}

template <DType D>
void ValuesOf(const AttentionProblem& a, const float* weights, float* out) {
  const int64_t n = a.head_dim;
  const int64_t main = n - n % kLanes;
  constexpr int kVectors = 8;
  int64_t d = 0;
  for (; d + kVectors * kLanes <= main; d += kVectors * kLanes) {
    ValuePass<D, kVectors>(a, weights, d, out);
  }
  for (; d < main; d += kLanes) ValuePass<D, 1>(a, weights, d, out);
  if (main < n) {
    VF acc = {};
    for (int64_t p = a.lo; p <= a.hi; ++p) {
      acc += (VF{} + weights[p - a.lo]) * LoadPadded<D>(SlotOf(a, a.values, p), main, n - main);
    }
    std::memcpy(out + main, &acc, (n - main) * sizeof(float));
  }
}

}  // namespace

void AttentionScores(const AttentionProblem& a, float* scores) {
  switch (a.kv_dtype) {
    case DType::kF32:
      return ScoresOf<DType::kF32>(a, scores);
    case DType::kBF16:
      return ScoresOf<DType::kBF16>(a, scores);
    case DType::kF16:
      return ScoresOf<DType::kF16>(a, scores);
  }
}

void AttentionValues(const AttentionProblem& a, const float* weights, float* out) {
  switch (a.kv_dtype) {
    case DType::kF32:
      return ValuesOf<DType::kF32>(a, weights, out);
    case DType::kBF16:
      return ValuesOf<DType::kBF16>(a, weights, out);
    case DType::kF16:
      return ValuesOf<DType::kF16>(a, weights, out);
  }
}

int MaxRows() { return kMaxRows; }

void PackRows(const float* x, int64_t rows, int64_t cols, int64_t group_begin, int64_t group_end,
              float* packed) {
  const int64_t groups = RowGroups(rows);
  for (int64_t g = group_begin; g < group_end; ++g) {
    const int64_t r0 = GroupStart(rows, groups, g);
    const int64_t n = GroupStart(rows, groups, g + 1) - r0;
    float* dst = packed + r0 * cols;
    for (int64_t r = 0; r < n; ++r) {
      const float* src = x + (r0 + r) * cols;
      for (int64_t c = 0; c < cols; ++c) dst[c * n + r] = src[c];
    }
  }
}

void MatMulTiles(const MatMulProblem& p, int64_t tile_begin, int64_t tile_end, int64_t row_begin,
                 int64_t row_end) {
  switch (p.dtype) {
    case DType::kF32:
      TilesOf<DType::kF32>(p, tile_begin, tile_end, row_begin, row_end);
      return;
    case DType::kBF16:
      TilesOf<DType::kBF16>(p, tile_begin, tile_end, row_begin, row_end);
      return;
    case DType::kF16:
      TilesOf<DType::kF16>(p, tile_begin, tile_end, row_begin, row_end);
      return;
  }
}

}  // namespace vg::engine::cpu::VG_MATMUL_NAMESPACE
