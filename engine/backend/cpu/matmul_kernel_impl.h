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
          const int64_t index = TiledIndex(D, p.w_rows, cols, o0 + j, c) - o0 * cols;
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

// kLanes copies of x (x - 0 is x, so this is a plain broadcast).
inline VF Broadcast(float x) { return x - VF{}; }

// Query rows whose attention loops share each load of K and V: rows of one sequence and one kv
// head, consecutive in a prefill, see nearly the same positions.
constexpr int kAttentionRows = static_cast<int>(kMaxAttentionRows);

// The scores of Q query rows for G consecutive positions from p0, which every row sees: Q x G
// independent chains over the head dimension, each K vector loaded once for all rows. Each
// score's sum is the same as it would be alone (matmul_kernel.h).
template <DType D, int Q, int G>
inline void ScoreBlock(const AttentionProblem* a, int64_t p0, const VF* q_tail,
                       float* const* scores) {
  const int64_t n = a[0].head_dim;
  const int64_t main = n - n % kLanes;
  const std::byte* k[G];
  for (int j = 0; j < G; ++j) k[j] = SlotOf(a[0], a[0].keys, p0 + j);
  VF acc[Q][G] = {};
  for (int64_t i = 0; i < main; i += kLanes) {
    VF kv[G];
    for (int j = 0; j < G; ++j) kv[j] = LoadWeights<D>(k[j], i);
    for (int r = 0; r < Q; ++r) {
      const VF qv = LoadFloats(a[r].q + i);
      for (int j = 0; j < G; ++j) acc[r][j] += qv * kv[j];
    }
  }
  if (main < n) {
    for (int j = 0; j < G; ++j) {
      const VF kv = LoadPadded<D>(k[j], main, n - main);
      for (int r = 0; r < Q; ++r) acc[r][j] += q_tail[r] * kv;
    }
  }
  for (int r = 0; r < Q; ++r) {
    for (int j = 0; j < G; ++j) scores[r][p0 + j - a[r].lo] = Reduce(acc[r][j]);
  }
}

// Positions [from, to] for Q rows that all see them: blocks of positions, then one at a time.
template <DType D, int Q>
inline void ScoreRange(const AttentionProblem* a, int64_t from, int64_t to, const VF* q_tail,
                       float* const* scores) {
  // Q x G accumulators, G keys and a query vector must fit the registers (32 or 16).
  constexpr int kGroup = Q == 1 ? 4 : (kLanes >= 16 ? 4 : 2);
  int64_t p = from;
  for (; p + kGroup - 1 <= to; p += kGroup) ScoreBlock<D, Q, kGroup>(a, p, q_tail, scores);
  for (; p <= to; ++p) ScoreBlock<D, Q, 1>(a, p, q_tail, scores);
}

template <DType D, int Q>
void ScoresOf(const AttentionProblem* a, float* const* scores) {
  const int64_t n = a[0].head_dim;
  const int64_t main = n - n % kLanes;
  VF q_tail[Q];
  int64_t lo = a[0].lo, hi = a[0].hi;
  for (int r = 0; r < Q; ++r) {
    float tail[kLanes] = {};
    std::memcpy(tail, a[r].q + main, (n - main) * sizeof(float));
    q_tail[r] = LoadFloats(tail);
    lo = a[r].lo > lo ? a[r].lo : lo;
    hi = a[r].hi < hi ? a[r].hi : hi;
  }
  if (Q == 1 || lo > hi) {
    for (int r = 0; r < Q; ++r) ScoreRange<D, 1>(a + r, a[r].lo, a[r].hi, q_tail + r, scores + r);
    return;
  }
  // Every row sees [lo, hi]; what one row sees beyond it, it scores alone.
  for (int r = 0; r < Q; ++r) {
    ScoreRange<D, 1>(a + r, a[r].lo, lo - 1, q_tail + r, scores + r);
    ScoreRange<D, 1>(a + r, hi + 1, a[r].hi, q_tail + r, scores + r);
  }
  ScoreRange<D, Q>(a, lo, hi, q_tail, scores);
}

// acc[c] += weight(p) * V[p][d0 + c * kLanes ...] for p = from, ..., to, in that order.
template <DType D, int C>
inline void AddValues(const AttentionProblem& a, const float* weights, int64_t from, int64_t to,
                      int64_t d0, VF* acc) {
  for (int64_t p = from; p <= to; ++p) {
    const VF w = Broadcast(weights[p - a.lo]);
    const std::byte* v = SlotOf(a, a.values, p);
    for (int c = 0; c < C; ++c) acc[c] += w * LoadWeights<D>(v, d0 + c * kLanes);
  }
}

// out[r][d0, d0 + C * kLanes) for Q rows, the Q x C output vectors held in registers; each row
// adds its positions in increasing order, those every row sees with one load of V for all.
template <DType D, int Q, int C>
inline void ValueBlock(const AttentionProblem* a, const float* const* weights, int64_t lo,
                       int64_t hi, int64_t d0, float* const* out) {
  VF acc[Q][C] = {};
  for (int r = 0; r < Q; ++r) AddValues<D, C>(a[r], weights[r], a[r].lo, lo - 1, d0, acc[r]);
  for (int64_t p = lo; p <= hi; ++p) {
    const std::byte* v = SlotOf(a[0], a[0].values, p);
    VF vv[C];
    for (int c = 0; c < C; ++c) vv[c] = LoadWeights<D>(v, d0 + c * kLanes);
    for (int r = 0; r < Q; ++r) {
      const VF w = Broadcast(weights[r][p - a[r].lo]);
      for (int c = 0; c < C; ++c) acc[r][c] += w * vv[c];
    }
  }
  for (int r = 0; r < Q; ++r) {
    AddValues<D, C>(a[r], weights[r], hi + 1, a[r].hi, d0, acc[r]);
    std::memcpy(out[r] + d0, acc[r], sizeof(acc[r]));
  }
}

template <DType D, int Q>
void ValuesOf(const AttentionProblem* a, const float* const* weights, float* const* out) {
  const int64_t n = a[0].head_dim;
  const int64_t main = n - n % kLanes;
  int64_t lo = a[0].lo, hi = a[0].hi;
  for (int r = 0; r < Q; ++r) {
    lo = a[r].lo > lo ? a[r].lo : lo;
    hi = a[r].hi < hi ? a[r].hi : hi;
  }
  if (Q > 1 && lo > hi) {
    for (int r = 0; r < Q; ++r) ValuesOf<D, 1>(a + r, weights + r, out + r);
    return;
  }
  // Q x C accumulators, C values and a broadcast weight within the registers (32 or 16).
  constexpr int kVectors = Q == 1 ? 8 : (kLanes >= 16 ? 4 : 2);
  int64_t d = 0;
  for (; d + kVectors * kLanes <= main; d += kVectors * kLanes) {
    ValueBlock<D, Q, kVectors>(a, weights, lo, hi, d, out);
  }
  for (; d < main; d += kLanes) ValueBlock<D, Q, 1>(a, weights, lo, hi, d, out);
  if (main < n) {
    for (int r = 0; r < Q; ++r) {
      VF acc = {};
      for (int64_t p = a[r].lo; p <= a[r].hi; ++p) {
        acc += Broadcast(weights[r][p - a[r].lo]) *
               LoadPadded<D>(SlotOf(a[r], a[r].values, p), main, n - main);
      }
      std::memcpy(out[r] + main, &acc, (n - main) * sizeof(float));
    }
  }
}

template <DType D>
void ScoresFor(const AttentionProblem* a, int count, float* const* scores) {
  switch (count) {
    case 1:
      return ScoresOf<D, 1>(a, scores);
    case 2:
      return ScoresOf<D, 2>(a, scores);
    case 3:
      return ScoresOf<D, 3>(a, scores);
    default:
      return ScoresOf<D, 4>(a, scores);
  }
}

template <DType D>
void ValuesFor(const AttentionProblem* a, int count, const float* const* weights,
               float* const* out) {
  switch (count) {
    case 1:
      return ValuesOf<D, 1>(a, weights, out);
    case 2:
      return ValuesOf<D, 2>(a, weights, out);
    case 3:
      return ValuesOf<D, 3>(a, weights, out);
    default:
      return ValuesOf<D, 4>(a, weights, out);
  }
}

static_assert(kAttentionRows == 4);

}  // namespace

void AttentionScores(const AttentionProblem* a, int count, float* const* scores) {
  switch (a[0].kv_dtype) {
    case DType::kF32:
      return ScoresFor<DType::kF32>(a, count, scores);
    case DType::kBF16:
      return ScoresFor<DType::kBF16>(a, count, scores);
    case DType::kF16:
      return ScoresFor<DType::kF16>(a, count, scores);
  }
}

void AttentionValues(const AttentionProblem* a, int count, const float* const* weights,
                     float* const* out) {
  switch (a[0].kv_dtype) {
    case DType::kF32:
      return ValuesFor<DType::kF32>(a, count, weights, out);
    case DType::kBF16:
      return ValuesFor<DType::kBF16>(a, count, weights, out);
    case DType::kF16:
      return ValuesFor<DType::kF16>(a, count, weights, out);
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
