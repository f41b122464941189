// Device sampling: see sampling.h. Every kernel runs one block of kThreads per row; the block
// helpers below contain barriers, so every thread of the block calls them (all branches around
// them depend only on the row's parameters or on block-wide results).
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cub/cub.cuh>

#include "engine/backend/cuda/kernels/sampling.h"

namespace vg::engine::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kItems = 8;  // consecutive entries per thread in one scan tile
constexpr int kTile = kThreads * kItems;
constexpr size_t kAlign = 256;
constexpr float kNegInf = -INFINITY;

struct Entry {
  float value;
  int32_t id;
};

// NaN compares false with everything; as -inf it is never chosen (the CPU's Clean).
__device__ __forceinline__ float Clean(float x) { return isnan(x) ? kNegInf : x; }

// Descending value, ties by lower id: the order of TopLogprobs, ArgMax and the sorted warpers.
__device__ __forceinline__ bool Better(const Entry& a, const Entry& b) {
  return a.value > b.value || (a.value == b.value && a.id < b.id);
}

struct BetterOf {
  __device__ Entry operator()(const Entry& a, const Entry& b) const { return Better(a, b) ? a : b; }
};
struct MaxOf {
  template <typename T>
  __device__ T operator()(const T& a, const T& b) const {
    return a < b ? b : a;
  }
};
struct MinOf {
  template <typename T>
  __device__ T operator()(const T& a, const T& b) const {
    return b < a ? b : a;
  }
};

struct BlockShared {
  union {
    cub::BlockReduce<Entry, kThreads>::TempStorage entry;
    cub::BlockReduce<float, kThreads>::TempStorage single;
    cub::BlockReduce<double, kThreads>::TempStorage dbl;
    cub::BlockReduce<int, kThreads>::TempStorage integer;
    cub::BlockScan<double, kThreads>::TempStorage scan;
  } temp;
  union {
    Entry entry;
    float single;
    double dbl;
    int integer;
  } result;
};

// Block-wide reductions whose result every thread gets. Each ends with a barrier, so `s` may be
// reused by the next call at once.
__device__ Entry BlockBest(Entry v, BlockShared& s) {
  const Entry r = cub::BlockReduce<Entry, kThreads>(s.temp.entry).Reduce(v, BetterOf());
  if (threadIdx.x == 0) s.result.entry = r;
  __syncthreads();
  const Entry all = s.result.entry;
  __syncthreads();
  return all;
}
__device__ float BlockMax(float v, BlockShared& s) {
  const float r = cub::BlockReduce<float, kThreads>(s.temp.single).Reduce(v, MaxOf());
  if (threadIdx.x == 0) s.result.single = r;
  __syncthreads();
  const float all = s.result.single;
  __syncthreads();
  return all;
}
__device__ double BlockSum(double v, BlockShared& s) {
  const double r = cub::BlockReduce<double, kThreads>(s.temp.dbl).Sum(v);
  if (threadIdx.x == 0) s.result.dbl = r;
  __syncthreads();
  const double all = s.result.dbl;
  __syncthreads();
  return all;
}
template <typename Op>
__device__ int BlockInt(int v, Op op, BlockShared& s) {
  const int r = cub::BlockReduce<int, kThreads>(s.temp.integer).Reduce(v, op);
  if (threadIdx.x == 0) s.result.integer = r;
  __syncthreads();
  const int all = s.result.integer;
  __syncthreads();
  return all;
}
// Thread 0's value to every thread.
__device__ int BroadcastFromThread0(int v, BlockShared& s) {
  if (threadIdx.x == 0) s.result.integer = v;
  __syncthreads();
  const int all = s.result.integer;
  __syncthreads();
  return all;
}

// The first j in [0, n) whose inclusive cumulative weight (in index order) satisfies
// pred(cumulative, weight(j)), or n. `pred` must be monotone in the cumulative weight. Tiles of
// kTile entries, kItems consecutive ones per thread, a block scan of the thread sums per tile;
// stops at the first tile with a hit.
template <typename WeightFn, typename Pred>
__device__ int FirstCrossing(int n, WeightFn weight, Pred pred, BlockShared& s) {
  double carry = 0.0;  // the same in every thread: the sum of the previous tiles' aggregates
  for (int64_t tile = 0; tile < n; tile += kTile) {
    const int64_t first = tile + static_cast<int64_t>(threadIdx.x) * kItems;
    double w[kItems];
    double local = 0.0;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      w[k] = first + k < n ? weight(static_cast<int>(first + k)) : 0.0;
      local += w[k];
    }
    double before = 0.0, tile_total = 0.0;
    cub::BlockScan<double, kThreads>(s.temp.scan).ExclusiveSum(local, before, tile_total);
    __syncthreads();  // the scan's storage is reused by BlockInt
    double cumulative = carry + before;
    int found = INT_MAX;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      if (first + k < n) {
        cumulative += w[k];
        if (found == INT_MAX && pred(cumulative, w[k])) found = static_cast<int>(first + k);
      }
    }
    const int hit = BlockInt(found, MinOf(), s);
    if (hit != INT_MAX) return hit;
    carry += tile_total;
  }
  return n;
}

// The first index in [0, n) whose key is < bound, for keys sorted descending; n if none.
__device__ int FirstBelow(const float* keys, int n, float bound) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (keys[mid] < bound) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

__device__ __forceinline__ float LogProbGivenLse(float value, double lse) {
  if (isinf(lse)) return kNegInf;
  return static_cast<float>(static_cast<double>(value) - lse);
}

__device__ __forceinline__ bool PenaltiesActive(const DeviceSamplingRow& p) {
  return p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
}
// The device twin of sampling.h's NeedsSort (keep the two equal).
__device__ __forceinline__ bool RowSorts(const DeviceSamplingRow& p) {
  return p.temperature > 0.0f && (p.top_k > 0 || p.top_p < 1.0f);
}

// Step 1: raw statistics (lse into row_lse, top list into out), the penalized copy into keys
// (and ids = iota for sorted rows), and the sort's segment of this row.
__global__ void __launch_bounds__(kThreads)
    PrepareRowsKernel(const float* logits, int vocab, const DeviceSamplingRow* params,
                      const int32_t* repetition_ids, const int32_t* count_ids,
                      const int32_t* count_values, double* row_lse, float* keys, int32_t* ids,
                      int* segment_begin, int* segment_end, DeviceSample* out) {
  __shared__ BlockShared s;
  const int row = blockIdx.x;
  const int64_t base = static_cast<int64_t>(row) * vocab;
  const float* raw = logits + base;
  const DeviceSamplingRow p = params[row];

  float local_max = kNegInf;
  for (int i = threadIdx.x; i < vocab; i += kThreads) local_max = fmaxf(local_max, Clean(raw[i]));
  const float row_max = BlockMax(local_max, s);
  double local_sum = 0.0;
  if (row_max != kNegInf) {
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      local_sum += static_cast<double>(expf(Clean(raw[i]) - row_max));
    }
  }
  const double sum = BlockSum(local_sum, s);
  const double lse =
      row_max == kNegInf ? -static_cast<double>(INFINITY) : static_cast<double>(row_max) + log(sum);
  if (threadIdx.x == 0) row_lse[row] = lse;

  const int top = min(max(p.top_logprobs, 0), min(kMaxDeviceTopLogprobs, vocab));
  if (top > 0) {
    // Each thread's best `top` of its strided entries, sorted; then `top` rounds of a block-wide
    // best over the threads' heads. vocab >= top real entries, so the sentinel never wins.
    Entry list[kMaxDeviceTopLogprobs];
    int count = 0;
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const Entry e{Clean(raw[i]), i};
      if (count == top && !Better(e, list[top - 1])) continue;
      int pos = count < top ? count++ : top - 1;
      while (pos > 0 && Better(e, list[pos - 1])) {
        list[pos] = list[pos - 1];
        --pos;
      }
      list[pos] = e;
    }
    int head = 0;
    for (int k = 0; k < top; ++k) {
      const Entry mine = head < count ? list[head] : Entry{kNegInf, INT_MAX};
      const Entry best = BlockBest(mine, s);
      if (head < count && mine.id == best.id) ++head;
      if (threadIdx.x == 0) {
        out[row].top_ids[k] = best.id;
        out[row].top_logprobs[k] = LogProbGivenLse(best.value, lse);
      }
    }
  }
  if (threadIdx.x == 0) out[row].top_count = top;

  const bool sorted = RowSorts(p);
  if (PenaltiesActive(p) || sorted) {
    float* row_keys = keys + base;
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      row_keys[i] = Clean(raw[i]);
      if (sorted) ids[base + i] = i;
    }
    __syncthreads();  // global writes of the whole block are visible after the barrier
    if (p.repetition_penalty != 1.0f) {
      // Distinct ids, so no two threads touch one entry. __f*_rn: the CPU's float operations,
      // never contracted into an FMA.
      for (int j = threadIdx.x; j < p.repetition_count; j += kThreads) {
        const int32_t id = repetition_ids[p.repetition_begin + j];
        if (id < 0 || id >= vocab) continue;
        const float v = row_keys[id];
        row_keys[id] =
            v < 0.0f ? __fmul_rn(v, p.repetition_penalty) : __fdiv_rn(v, p.repetition_penalty);
      }
    }
    __syncthreads();
    for (int j = threadIdx.x; j < p.counts_count; j += kThreads) {
      const int32_t id = count_ids[p.counts_begin + j];
      if (id < 0 || id >= vocab) continue;
      const float count = static_cast<float>(count_values[p.counts_begin + j]);
      const float penalty = __fadd_rn(__fmul_rn(p.frequency_penalty, count), p.presence_penalty);
      row_keys[id] = __fsub_rn(row_keys[id], penalty);
    }
    __syncthreads();
    if (sorted) {
      // The radix sort orders -0.0 below +0.0; the CPU's comparisons tie them (then by id).
      for (int i = threadIdx.x; i < vocab; i += kThreads) {
        if (row_keys[i] == 0.0f) row_keys[i] = 0.0f;
      }
    }
  }
  if (threadIdx.x == 0) {
    segment_begin[row] = static_cast<int>(base);
    segment_end[row] = static_cast<int>(base) + (sorted ? vocab : 0);
  }
}

// Greedy: the first index of the maximum; 0 when nothing is finite.
__device__ int ArgMaxRow(const float* values, int vocab, BlockShared& s) {
  Entry best{kNegInf, INT_MAX};
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const Entry e{Clean(values[i]), i};
    if (Better(e, best)) best = e;
  }
  return BlockBest(best, s).id;  // vocab >= 1, so a real entry (id 0 at worst) wins
}

// Temperature with optional min-p, in ascending id order (SelectCandidates keeps that order when
// neither top-k nor top-p runs). Returns the token; *used tells whether the draw was taken.
__device__ int DrawInIdOrder(const float* values, int vocab, const DeviceSamplingRow& p, int* used,
                             BlockShared& s) {
  float local_max = kNegInf;
  for (int i = threadIdx.x; i < vocab; i += kThreads)
    local_max = fmaxf(local_max, Clean(values[i]));
  const float row_max = BlockMax(local_max, s);
  if (row_max == kNegInf) {
    *used = 0;
    return 0;
  }
  const double temperature = p.temperature;
  const double max_scaled = static_cast<double>(row_max) / temperature;
  const double min_p = p.min_p;
  const bool min_p_on = p.min_p > 0.0f;
  // A survivor is finite and, with min-p on, weighs >= min_p (the maximum weighs exp(0) = 1, so
  // one always survives). Non-survivors weigh 0 here.
  const auto weigh = [&](int i, bool* survives) -> double {
    const float v = Clean(values[i]);
    *survives = false;
    if (v == kNegInf) return 0.0;
    const double w = exp(static_cast<double>(v) / temperature - max_scaled);
    if (min_p_on && w < min_p) return 0.0;
    *survives = true;
    return w;
  };
  const auto weight = [&](int i) -> double {
    bool survives;
    return weigh(i, &survives);
  };
  double local_total = 0.0;
  int local_last = -1;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    bool survives;
    local_total += weigh(i, &survives);
    if (survives) local_last = i;
  }
  const double total = BlockSum(local_total, s);
  const int last = BlockInt(local_last, MaxOf(), s);  // the CPU's kept.back()
  const double target = p.uniform * total;
  // A weight-0 entry never crosses first (the cumulative did not grow), except across a thread
  // boundary by rounding: require w > 0 so a non-survivor is never chosen.
  const int hit = FirstCrossing(
      vocab, weight, [&](double cumulative, double w) { return w > 0.0 && target < cumulative; },
      s);
  *used = 1;
  return hit < vocab ? hit : last;
}

// Top-k / top-p / min-p over a row sorted descending (ties in ascending id), then the draw in
// that order.
__device__ int DrawSorted(const float* keys, const int32_t* ids, int vocab,
                          const DeviceSamplingRow& p, int* used, BlockShared& s) {
  int kept = 0;  // survivors of top-k: a prefix
  if (threadIdx.x == 0) {
    const int finite = FirstBelow(keys, vocab, -FLT_MAX);  // -inf sorts last
    kept = finite;
    if (p.top_k > 0 && p.top_k < finite) kept = FirstBelow(keys, finite, keys[p.top_k - 1]);
  }
  kept = BroadcastFromThread0(kept, s);
  if (kept == 0) {
    *used = 0;
    return 0;  // ArgMax of an all -inf row
  }
  const double temperature = p.temperature;
  const double max_scaled = static_cast<double>(keys[0]) / temperature;
  const auto weight = [&](int j) -> double {
    return exp(static_cast<double>(keys[j]) / temperature - max_scaled);
  };
  if (p.top_p < 1.0f) {
    double local_total = 0.0;
    for (int j = threadIdx.x; j < kept; j += kThreads) local_total += weight(j);
    const double total = BlockSum(local_total, s);
    const double removed_at_or_below = 1.0 - static_cast<double>(p.top_p);
    // ApplyTopP: token i > 0 is cut when (total - mass above it) / total <= 1 - top_p; the mass
    // above i is the cumulative weight through i - 1.
    const int j = FirstCrossing(
        kept, weight,
        [&](double cumulative, double) {
          return (total - cumulative) / total <= removed_at_or_below;
        },
        s);
    if (j < kept) kept = j + 1;
  }
  if (p.min_p > 0.0f) {
    // Weights fall along the order, so min-p keeps a prefix; the first weight below min_p ends it
    // (never index 0, whose weight is exp(0) = 1).
    const double min_p = p.min_p;
    int local_first = INT_MAX;
    for (int j = threadIdx.x; j < kept; j += kThreads) {
      if (weight(j) < min_p) {
        local_first = j;
        break;
      }
    }
    const int first = BlockInt(local_first, MinOf(), s);
    if (first < kept) kept = first;
  }
  double local_total = 0.0;
  for (int j = threadIdx.x; j < kept; j += kThreads) local_total += weight(j);
  const double target = p.uniform * BlockSum(local_total, s);
  const int hit = FirstCrossing(
      kept, weight, [&](double cumulative, double w) { return w > 0.0 && target < cumulative; }, s);
  *used = 1;
  return ids[hit < kept ? hit : kept - 1];
}

// Step 3: the token, its log-probability and whether the draw was used.
__global__ void __launch_bounds__(kThreads)
    SelectTokensKernel(const float* logits, int vocab, const DeviceSamplingRow* params,
                       const double* row_lse, const float* penalized, const float* sorted_keys,
                       const int32_t* sorted_ids, DeviceSample* out) {
  __shared__ BlockShared s;
  const int row = blockIdx.x;
  const int64_t base = static_cast<int64_t>(row) * vocab;
  const float* raw = logits + base;
  const DeviceSamplingRow p = params[row];
  // Rows without penalties were not copied; the raw row is read through Clean as the copy was.
  const float* values = PenaltiesActive(p) ? penalized + base : raw;
  int used = 0;
  int token;
  if (!(p.temperature > 0.0f)) {
    token = ArgMaxRow(values, vocab, s);
  } else if (RowSorts(p)) {
    token = DrawSorted(sorted_keys + base, sorted_ids + base, vocab, p, &used, s);
  } else {
    token = DrawInIdOrder(values, vocab, p, &used, s);
  }
  if (threadIdx.x == 0) {
    out[row].token_id = token;
    out[row].logprob = LogProbGivenLse(Clean(raw[token]), row_lse[row]);
    out[row].used_uniform = used;
  }
}

size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Byte offsets of the scratch's parts.
struct ScratchLayout {
  size_t lse, keys0, keys1, ids0, ids1, begin, end, cub, cub_bytes, total;
};

cudaError_t LayOut(int rows, int vocab, ScratchLayout* layout) {
  // int indices: strided loops and scan tiles step past vocab by up to kTile.
  if (rows < 0 || vocab <= 0 || vocab > INT_MAX - kTile ||
      static_cast<int64_t>(rows) * vocab > static_cast<int64_t>(INT_MAX)) {
    return cudaErrorInvalidValue;
  }
  const size_t rows_z = static_cast<size_t>(rows);
  const size_t items = rows_z * static_cast<size_t>(vocab);
  size_t offset = 0;
  const auto take = [&](size_t bytes) {
    const size_t at = offset;
    offset = AlignUp(offset + bytes);
    return at;
  };
  layout->lse = take(rows_z * sizeof(double));
  layout->keys0 = take(items * sizeof(float));
  layout->keys1 = take(items * sizeof(float));
  layout->ids0 = take(items * sizeof(int32_t));
  layout->ids1 = take(items * sizeof(int32_t));
  layout->begin = take(rows_z * sizeof(int));
  layout->end = take(rows_z * sizeof(int));
  cub::DoubleBuffer<float> keys(nullptr, nullptr);
  cub::DoubleBuffer<int32_t> values(nullptr, nullptr);
  size_t cub_bytes = 0;
  const cudaError_t err = cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, cub_bytes, keys, values, static_cast<int>(items), rows,
      static_cast<const int*>(nullptr), static_cast<const int*>(nullptr));
  if (err != cudaSuccess) return err;
  layout->cub_bytes = cub_bytes;
  layout->cub = take(cub_bytes);
  layout->total = offset;
  return cudaSuccess;
}

}  // namespace

cudaError_t SampleRowsScratchBytes(int rows, int vocab, size_t* bytes) {
  if (bytes == nullptr) return cudaErrorInvalidValue;
  ScratchLayout layout;
  const cudaError_t err = LayOut(rows, vocab, &layout);
  if (err == cudaSuccess) *bytes = layout.total;
  return err;
}

cudaError_t SampleRows(const float* logits, int rows, int vocab, const DeviceSamplingRow* params,
                       const int32_t* repetition_ids, const int32_t* count_ids,
                       const int32_t* count_values, void* scratch, size_t scratch_bytes,
                       bool any_row_sorts, DeviceSample* out, cudaStream_t stream) {
  if (rows < 0 || vocab <= 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  if (logits == nullptr || params == nullptr || scratch == nullptr || out == nullptr) {
    return cudaErrorInvalidValue;
  }
  ScratchLayout layout;
  cudaError_t err = LayOut(rows, vocab, &layout);
  if (err != cudaSuccess) return err;
  if (scratch_bytes < layout.total) return cudaErrorInvalidValue;
  char* base = static_cast<char*>(scratch);
  double* row_lse = reinterpret_cast<double*>(base + layout.lse);
  float* keys0 = reinterpret_cast<float*>(base + layout.keys0);
  float* keys1 = reinterpret_cast<float*>(base + layout.keys1);
  int32_t* ids0 = reinterpret_cast<int32_t*>(base + layout.ids0);
  int32_t* ids1 = reinterpret_cast<int32_t*>(base + layout.ids1);
  int* segment_begin = reinterpret_cast<int*>(base + layout.begin);
  int* segment_end = reinterpret_cast<int*>(base + layout.end);

  PrepareRowsKernel<<<rows, kThreads, 0, stream>>>(logits, vocab, params, repetition_ids, count_ids,
                                                   count_values, row_lse, keys0, ids0,
                                                   segment_begin, segment_end, out);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  // Rows that need no sort are empty segments: their keys0 (the penalized copy) is not touched.
  // With DoubleBuffer the sort ping-pongs between the two buffers (no copy back); Current() names
  // the one holding the result, decided on the host from the number of passes.
  cub::DoubleBuffer<float> keys(keys0, keys1);
  cub::DoubleBuffer<int32_t> ids(ids0, ids1);
  if (any_row_sorts) {  // else every segment is empty and the sort would only cost launches
    size_t cub_bytes = layout.cub_bytes;
    err = cub::DeviceSegmentedRadixSort::SortPairsDescending(
        base + layout.cub, cub_bytes, keys, ids, rows * vocab, rows, segment_begin, segment_end, 0,
        static_cast<int>(sizeof(float) * 8), stream);
    if (err != cudaSuccess) return err;
  }

  SelectTokensKernel<<<rows, kThreads, 0, stream>>>(logits, vocab, params, row_lse, keys0,
                                                    keys.Current(), ids.Current(), out);
  return cudaGetLastError();
}

}  // namespace vg::engine::cuda
