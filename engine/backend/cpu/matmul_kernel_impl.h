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
// Input rows sharing one pass over a weight tile: 4 x 4 accumulators fit AVX-512's 32 registers;
// with 16 registers (SSE2, AVX2) 2 x 4 do.
constexpr int kMaxInputRows = kLanes >= 16 ? 4 : 2;
constexpr int kTile = static_cast<int>(kMatMulWeightTile);

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

// Input rows whose partial sums are kept (in memory) while a weight tile passes over them, and the
// columns of one pass: 16 rows x 256 floats of input (16 KiB) stay in the L1 cache for the
// kTile weight rows of the chunk. Chunking keeps each lane's summation order (increasing i).
constexpr int kRowsPerPass = 16;
constexpr int64_t kChunk = 256;

template <DType D>
constexpr int64_t kElementBytes = D == DType::kF32 ? 4 : 2;

// acc[r][j] += products of input rows x[0..XR) and weight rows w[0..kTile) over [begin, end),
// kLanes at a time; end - begin is a multiple of kLanes.
template <DType D, int XR>
inline void Accumulate(const std::byte* const* w, const float* const* x, int64_t begin, int64_t end,
                       VF (*acc)[kTile], int64_t prefetch_ahead = 0) {
  VF a[XR][kTile];
  for (int r = 0; r < XR; ++r) {
    for (int j = 0; j < kTile; ++j) a[r][j] = acc[r][j];
  }
  for (int64_t i = begin; i < end; i += kLanes) {
    VF wv[kTile];
    for (int j = 0; j < kTile; ++j) wv[j] = LoadWeights<D>(w[j], i);
    if (prefetch_ahead != 0) {
      for (int j = 0; j < kTile; ++j) {
        __builtin_prefetch(w[j] + i * kElementBytes<D> + prefetch_ahead, 0, 2);
      }
    }
    for (int r = 0; r < XR; ++r) {
      const VF xv = LoadFloats(x[r] + i);
      for (int j = 0; j < kTile; ++j) a[r][j] += xv * wv[j];
    }
  }
  for (int r = 0; r < XR; ++r) {
    for (int j = 0; j < kTile; ++j) acc[r][j] = a[r][j];
  }
}

// The last n % kLanes columns as one more step over zero-padded copies (zero bits are 0.0 in
// every dtype).
template <DType D, int XR>
inline void AccumulateTail(const std::byte* const* w, const float* const* x, int64_t main,
                           int64_t n, VF (*acc)[kTile]) {
  const int64_t left = n - main;
  VF wv[kTile];
  for (int j = 0; j < kTile; ++j) {
    std::byte padded[kLanes * 4] = {};
    std::memcpy(padded, w[j] + main * kElementBytes<D>, left * kElementBytes<D>);
    wv[j] = LoadWeights<D>(padded, 0);
  }
  for (int r = 0; r < XR; ++r) {
    float padded[kLanes] = {};
    std::memcpy(padded, x[r] + main, left * sizeof(float));
    const VF xv = LoadFloats(padded);
    for (int j = 0; j < kTile; ++j) acc[r][j] += xv * wv[j];
  }
}

// Runs `step` over the rows [0, rows) in register groups of kMaxInputRows, the remainder last.
template <DType D, typename Step>
inline void ForRowGroups(int rows, const Step& step) {
  int r = 0;
  for (; r + kMaxInputRows <= rows; r += kMaxInputRows) {
    step.template operator()<kMaxInputRows>(r);
  }
  switch (rows - r) {
    case 3:
      if constexpr (kMaxInputRows > 3) step.template operator()<3>(r);
      break;
    case 2:
      if constexpr (kMaxInputRows > 2) step.template operator()<2>(r);
      break;
    case 1:
      step.template operator()<1>(r);
      break;
    default:
      break;
  }
}

// Outputs of weight rows [o0, o0 + kTile) for up to kMaxInputRows input rows from r0 (one
// register group: every decode step of that many sequences; more rows go through GroupPass).
// Rows past the matrix's end repeat row o0 (computed, never stored), so every element goes
// through the same code.
template <DType D>
void TilePass(const MatMulProblem& p, int64_t o0, int64_t r0, int rows) {
  const int64_t n = p.cols;
  const std::byte* w[kTile];
  for (int j = 0; j < kTile; ++j) {
    const int64_t row = o0 + j < p.w_rows ? o0 + j : o0;
    w[j] = p.w + row * n * kElementBytes<D>;
  }
  const float* x[kMaxInputRows];
  for (int r = 0; r < rows; ++r) x[r] = p.x + (r0 + r) * n;
  VF acc[kMaxInputRows][kTile];
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < kTile; ++j) acc[r][j] = VF{};
  }
  const int64_t main = n - n % kLanes;
  // Weights are read once, straight from memory: each load is preceded by a prefetch of the same
  // column of the next tile (the rows that follow in memory) into L2, so the memory reads overlap
  // the arithmetic instead of stalling it, and the streams continue across page boundaries, where
  // the hardware prefetchers stop. Past the matrix end the prefetches are harmless hints.
  const int64_t ahead = kTile * n * kElementBytes<D>;
  ForRowGroups<D>(rows,
                  [&]<int XR>(int r) { Accumulate<D, XR>(w, x + r, 0, main, acc + r, ahead); });
  if (main < n) {
    ForRowGroups<D>(rows,
                    [&]<int XR>(int r) { AccumulateTail<D, XR>(w, x + r, main, n, acc + r); });
  }
  for (int r = 0; r < rows; ++r) {
    float* out = p.out + (r0 + r) * p.w_rows;
    for (int j = 0; j < kTile; ++j) {
      const int64_t o = o0 + j;
      if (o >= p.w_rows) break;
      const float dot = Reduce(acc[r][j]);
      out[o] = p.bias != nullptr ? dot + p.bias[o] : dot;
    }
  }
}

// Tiles that share one pass when there are more input rows than one register group: their
// widened chunks (16 weight rows x kChunk floats, 16 KiB) stay in L1 while each register group's
// input rows are read once for all of them, not once per tile (the input rows of a pass, up to
// 16 x cols floats, do not fit in L1 next to the rest; this cut their L2 traffic fourfold).
constexpr int kGroupTiles = 4;

// Outputs of weight rows [o0, o0 + tiles * kTile) for kMaxInputRows < rows <= kRowsPerPass input
// rows from r0; every element is summed exactly as TilePass sums it.
template <DType D>
void GroupPass(const MatMulProblem& p, int64_t o0, int tiles, int64_t r0, int rows) {
  const int64_t n = p.cols;
  const int weight_rows = tiles * kTile;
  const std::byte* w[kGroupTiles * kTile];
  for (int j = 0; j < weight_rows; ++j) {
    const int64_t row = o0 + j < p.w_rows ? o0 + j : o0;
    w[j] = p.w + row * n * kElementBytes<D>;
  }
  const float* x[kRowsPerPass];
  for (int r = 0; r < rows; ++r) x[r] = p.x + (r0 + r) * n;
  VF acc[kGroupTiles][kRowsPerPass][kTile];
  for (int t = 0; t < tiles; ++t) {
    for (int r = 0; r < rows; ++r) {
      for (int j = 0; j < kTile; ++j) acc[t][r][j] = VF{};
    }
  }
  const int64_t main = n - n % kLanes;
  const int64_t ahead = weight_rows * n * kElementBytes<D>;  // the next group's rows
  // BF16/F16 chunks are widened once into a float32 copy that every register group reads:
  // widening is exact, so the sums are the same as TilePass's, and the shifts no longer compete
  // with the multiply-adds for execution ports.
  alignas(64) float widened[kGroupTiles * kTile][kChunk];
  const std::byte* wf[kGroupTiles * kTile];
  for (int j = 0; j < weight_rows; ++j) wf[j] = reinterpret_cast<const std::byte*>(widened[j]);
  for (int64_t begin = 0; begin < main; begin += kChunk) {
    const int64_t end = begin + kChunk < main ? begin + kChunk : main;
    if constexpr (D == DType::kF32) {
      ForRowGroups<D>(rows, [&]<int XR>(int r) {
        for (int t = 0; t < tiles; ++t) {
          Accumulate<D, XR>(w + t * kTile, x + r, begin, end, acc[t] + r);
        }
      });
    } else {
      for (int j = 0; j < weight_rows; ++j) {
        for (int64_t i = begin; i < end; i += kLanes) {
          __builtin_prefetch(w[j] + i * kElementBytes<D> + ahead, 0, 2);
          const VF v = LoadWeights<D>(w[j], i);
          std::memcpy(&widened[j][i - begin], &v, sizeof(v));
        }
      }
      const float* xs[kRowsPerPass];
      for (int r = 0; r < rows; ++r) xs[r] = x[r] + begin;
      ForRowGroups<D>(rows, [&]<int XR>(int r) {
        for (int t = 0; t < tiles; ++t) {
          Accumulate<DType::kF32, XR>(wf + t * kTile, xs + r, 0, end - begin, acc[t] + r);
        }
      });
    }
  }
  for (int t = 0; t < tiles; ++t) {
    if (main < n) {
      ForRowGroups<D>(rows, [&]<int XR>(int r) {
        AccumulateTail<D, XR>(w + t * kTile, x + r, main, n, acc[t] + r);
      });
    }
    for (int r = 0; r < rows; ++r) {
      float* out = p.out + (r0 + r) * p.w_rows;
      for (int j = 0; j < kTile; ++j) {
        const int64_t o = o0 + t * kTile + j;
        if (o >= p.w_rows) break;
        const float dot = Reduce(acc[t][r][j]);
        out[o] = p.bias != nullptr ? dot + p.bias[o] : dot;
      }
    }
  }
}

template <DType D>
void TilesOf(const MatMulProblem& p, int64_t tile_begin, int64_t tile_end, int64_t row_begin,
             int64_t row_end) {
  if (row_end - row_begin <= kMaxInputRows) {
    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
      TilePass<D>(p, tile * kTile, row_begin, static_cast<int>(row_end - row_begin));
    }
    return;
  }
  for (int64_t tile = tile_begin; tile < tile_end; tile += kGroupTiles) {
    const int tiles =
        static_cast<int>(tile_end - tile < kGroupTiles ? tile_end - tile : kGroupTiles);
    for (int64_t r = row_begin; r < row_end; r += kRowsPerPass) {
      const int64_t rows = row_end - r < kRowsPerPass ? row_end - r : kRowsPerPass;
      if (rows > kMaxInputRows) {
        GroupPass<D>(p, tile * kTile, tiles, r, static_cast<int>(rows));
      } else {
        for (int t = 0; t < tiles; ++t) {
          TilePass<D>(p, (tile + t) * kTile, r, static_cast<int>(rows));
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
