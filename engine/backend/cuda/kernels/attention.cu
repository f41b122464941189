// Paged attention over the BF16 KV cache: a partition kernel (split-K over the context) and a
// reduction kernel combining the partitions' max, sum and unnormalised output (flash-decoding),
// for decode rows; and a tiled kernel for prefill chunks that streams a sequence's K/V once per
// tile of query rows with an online (flash) softmax (see kernels.h).
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>

#include "engine/backend/cuda/kernels/kernels.h"

namespace vg::engine::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
// 48 KB less the static reduction array: no opt-in attribute needed.
constexpr int kMaxSharedFloats = 12 * 1024 - 64;

__device__ __forceinline__ float Bf16Bits(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

template <bool kMax>
__device__ float BlockReduce(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = kMax ? fmaxf(v, other) : v + other;
  }
  __syncthreads();  // earlier readers of shared are done
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  float r = shared[0];
  for (int w = 1; w < kWarps; ++w) r = kMax ? fmaxf(r, shared[w]) : r + shared[w];
  return r;
}

struct Partials {
  float* out;  // [rows][heads][max_parts][head_dim], unnormalised sum of p * v
  float* max;  // [rows][heads][max_parts]
  float* sum;  // [rows][heads][max_parts]
};

Partials SplitScratch(float* scratch, int64_t rows_heads, int max_parts, int head_dim) {
  Partials p;
  p.out = scratch;
  p.max = scratch + rows_heads * max_parts * head_dim;
  p.sum = p.max + rows_heads * max_parts;
  return p;
}

// Grid (query row, head, partition). Shared: q [head_dim] then the partition's logits.
__global__ void __launch_bounds__(kThreads)
    PartitionKernel(PagedAttentionShape s, const float* q, const int32_t* query_seq,
                    const int32_t* context_lens, const int32_t* rows, const int32_t* block_tables,
                    const uint16_t* k_cache, const uint16_t* v_cache, int max_parts,
                    Partials partials) {
  extern __shared__ float smem[];
  __shared__ float reduce[32];
  float* q_s = smem;
  float* logits = smem + s.head_dim;
  // i indexes the launch (and the partials), r the query row (q, query_seq, context_lens).
  const int i_row = blockIdx.x, h = blockIdx.y, part = blockIdx.z;
  const int r = rows != nullptr ? rows[i_row] : i_row;
  const int len = context_lens[r];
  const int lo = s.sliding_window > 0 ? max(0, len - s.sliding_window) : 0;
  const int start = lo + part * s.partition_size;
  if (start >= len) return;  // the whole block leaves together; the reduction skips this part
  const int end = min(start + s.partition_size, len);
  const int kv_head = h / (s.num_heads / s.num_kv_heads);
  const int32_t* table = block_tables + static_cast<int64_t>(query_seq[r]) * s.max_blocks_per_seq;
  const int D = s.head_dim;

  const float* q_row = q + (static_cast<int64_t>(r) * s.num_heads + h) * D;
  for (int d = threadIdx.x; d < D; d += kThreads) q_s[d] = q_row[d];
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int pos = start + warp; pos < end; pos += kWarps) {
    const int64_t slot =
        static_cast<int64_t>(table[pos / s.block_size]) * s.block_size + pos % s.block_size;
    const uint16_t* k_row = k_cache + (slot * s.num_kv_heads + kv_head) * D;
    float dot = 0.f;
    for (int d = lane; d < D; d += 32) dot += q_s[d] * Bf16Bits(k_row[d]);
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    if (lane == 0) {
      float score = dot * s.scale;
      if (s.logit_softcap > 0.f) score = tanhf(score / s.logit_softcap) * s.logit_softcap;
      logits[pos - start] = score;
    }
  }
  __syncthreads();

  const int n = end - start;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < n; i += kThreads) m = fmaxf(m, logits[i]);
  m = BlockReduce<true>(m, reduce);
  float sum = 0.f;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const float e = expf(logits[i] - m);
    logits[i] = e;
    sum += e;
  }
  sum = BlockReduce<false>(sum, reduce);  // its barriers also publish the exp writes

  const int64_t part_index = (static_cast<int64_t>(i_row) * s.num_heads + h) * max_parts + part;
  for (int d = threadIdx.x; d < D; d += kThreads) {
    float acc = 0.f;
    for (int i = 0; i < n; ++i) {
      const int pos = start + i;
      const int64_t slot =
          static_cast<int64_t>(table[pos / s.block_size]) * s.block_size + pos % s.block_size;
      acc += logits[i] * Bf16Bits(v_cache[(slot * s.num_kv_heads + kv_head) * D + d]);
    }
    partials.out[part_index * D + d] = acc;
  }
  if (threadIdx.x == 0) {
    partials.max[part_index] = m;
    partials.sum[part_index] = sum;
  }
}

// Grid (query row, head): out = sum_p e^(m_p - M) o_p / sum_p e^(m_p - M) s_p.
__global__ void __launch_bounds__(kThreads)
    CombineKernel(PagedAttentionShape s, const int32_t* context_lens, const int32_t* rows,
                  int max_parts, Partials partials, float* out) {
  const int i_row = blockIdx.x, h = blockIdx.y;
  const int r = rows != nullptr ? rows[i_row] : i_row;
  const int len = context_lens[r];
  const int visible = s.sliding_window > 0 ? min(len, s.sliding_window) : len;
  const int parts = (visible + s.partition_size - 1) / s.partition_size;
  const int64_t base = (static_cast<int64_t>(i_row) * s.num_heads + h) * max_parts;
  float global_max = -INFINITY;
  for (int p = 0; p < parts; ++p) global_max = fmaxf(global_max, partials.max[base + p]);
  float denom = 0.f;
  for (int p = 0; p < parts; ++p) {
    denom += expf(partials.max[base + p] - global_max) * partials.sum[base + p];
  }
  const int D = s.head_dim;
  for (int d = threadIdx.x; d < D; d += kThreads) {
    float acc = 0.f;
    for (int p = 0; p < parts; ++p) {
      acc += expf(partials.max[base + p] - global_max) * partials.out[(base + p) * D + d];
    }
    // A padding row (context length 0) has no partitions: 0, not 0/0.
    out[(static_cast<int64_t>(r) * s.num_heads + h) * D + d] = parts > 0 ? acc / denom : 0.f;
  }
}

int MaxParts(const PagedAttentionShape& s, int max_context_len) {
  const int visible =
      s.sliding_window > 0 ? std::min(max_context_len, s.sliding_window) : max_context_len;
  return (visible + s.partition_size - 1) / s.partition_size;
}

}  // namespace

int64_t PagedAttentionScratchFloats(const PagedAttentionShape& shape, int num_queries,
                                    int max_context_len) {
  if (shape.partition_size <= 0) return 0;
  const int64_t rows_heads = static_cast<int64_t>(num_queries) * shape.num_heads;
  return rows_heads * MaxParts(shape, max_context_len) * (shape.head_dim + 2);
}

cudaError_t PagedAttention(const PagedAttentionShape& shape, const float* q,
                           const int32_t* query_seq, const int32_t* context_lens,
                           const int32_t* rows, int num_queries, int max_context_len,
                           const int32_t* block_tables, const uint16_t* k_cache,
                           const uint16_t* v_cache, float* scratch, float* out,
                           cudaStream_t stream) {
  if (shape.num_heads <= 0 || shape.num_kv_heads <= 0 ||
      shape.num_heads % shape.num_kv_heads != 0 || shape.head_dim <= 0 || shape.head_dim > 512 ||
      shape.block_size <= 0 || shape.partition_size <= 0 ||
      shape.head_dim + shape.partition_size > kMaxSharedFloats || max_context_len <= 0 ||
      shape.sliding_window < 0 || shape.num_heads > 65535) {
    return cudaErrorInvalidValue;
  }
  if (num_queries <= 0) return cudaSuccess;
  const int max_parts = MaxParts(shape, max_context_len);
  if (max_parts > 65535) return cudaErrorInvalidValue;
  const Partials partials = SplitScratch(
      scratch, static_cast<int64_t>(num_queries) * shape.num_heads, max_parts, shape.head_dim);
  const size_t shared = sizeof(float) * (shape.head_dim + shape.partition_size);
  PartitionKernel<<<dim3(num_queries, shape.num_heads, max_parts), kThreads, shared, stream>>>(
      shape, q, query_seq, context_lens, rows, block_tables, k_cache, v_cache, max_parts, partials);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  CombineKernel<<<dim3(num_queries, shape.num_heads), kThreads, 0, stream>>>(
      shape, context_lens, rows, max_parts, partials, out);
  return cudaGetLastError();
}

namespace {

// Tiled prefill attention. One block per (tile, kv head, slice of the group's query heads): its
// queries are the tile's rows x `heads_per_block` heads, all reading kv head `kv_head`. The
// block walks the positions the tile's rows see, kChunk at a time: the chunk's K and V (BF16)
// go to shared memory once, then every query scores them, updates its running max and sum
// (online softmax) and rescales its accumulator. Shared, in floats: q [Q][D], acc [Q][D],
// p [Q][kChunk], max/sum/alpha [Q] each, then K and V [kChunk][D] as BF16 bits; Q = rows x
// heads_per_block. Query index qi = row_in_tile * heads_per_block + head_in_block.
constexpr int kChunk = 16;

size_t TiledSharedBytes(int heads_per_block, int head_dim) {
  const size_t queries = static_cast<size_t>(kPrefillTileRows) * heads_per_block;
  return sizeof(float) * (queries * (2 * head_dim + kChunk + 3)) +
         sizeof(uint16_t) * 2 * kChunk * head_dim;
}

__global__ void __launch_bounds__(kThreads)
    TiledKernel(PagedAttentionShape s, const float* q, const int32_t* query_seq,
                const int32_t* context_lens, const int32_t* tiles, int heads_per_block,
                const int32_t* block_tables, const uint16_t* k_cache, const uint16_t* v_cache,
                float* out) {
  extern __shared__ float smem[];
  __shared__ int row_lo[kPrefillTileRows], row_len[kPrefillTileRows];
  const int D = s.head_dim;
  const int first_row = tiles[2 * blockIdx.x], num_rows = tiles[2 * blockIdx.x + 1];
  const int slices = (s.num_heads / s.num_kv_heads) / heads_per_block;
  const int kv_head = blockIdx.y / slices;
  const int first_head =
      kv_head * (s.num_heads / s.num_kv_heads) + (blockIdx.y % slices) * heads_per_block;
  const int Q = num_rows * heads_per_block;
  const int Qmax = kPrefillTileRows * heads_per_block;
  float* q_s = smem;
  float* acc = q_s + Qmax * D;
  float* p = acc + Qmax * D;
  float* run_max = p + Qmax * kChunk;
  float* run_sum = run_max + Qmax;
  float* alpha = run_sum + Qmax;
  uint16_t* k_s = reinterpret_cast<uint16_t*>(alpha + Qmax);
  uint16_t* v_s = k_s + kChunk * D;
  const int32_t* table =
      block_tables + static_cast<int64_t>(query_seq[first_row]) * s.max_blocks_per_seq;

  if (threadIdx.x < num_rows) {
    const int len = context_lens[first_row + threadIdx.x];
    row_len[threadIdx.x] = len;
    row_lo[threadIdx.x] = s.sliding_window > 0 ? max(0, len - s.sliding_window) : 0;
  }
  for (int i = threadIdx.x; i < Q * D; i += kThreads) {
    const int qi = i / D, d = i % D;
    const int row = first_row + qi / heads_per_block, h = first_head + qi % heads_per_block;
    q_s[i] = q[(static_cast<int64_t>(row) * s.num_heads + h) * D + d];
    acc[i] = 0.f;
  }
  for (int qi = threadIdx.x; qi < Q; qi += kThreads) {
    run_max[qi] = -INFINITY;
    run_sum[qi] = 0.f;
  }
  __syncthreads();
  // The union of the rows' ranges (every thread computes the same bounds).
  int start = INT_MAX, end = 0;
  for (int i = 0; i < num_rows; ++i) {
    if (row_len[i] > row_lo[i]) {
      start = min(start, row_lo[i]);
      end = max(end, row_len[i]);
    }
  }

  // Chunks start at multiples of kChunk, whatever the tile: a chunk a row does not see leaves
  // its max, sum and accumulator exactly as they were, so a row's result does not depend on the
  // other rows of its tile (how a prompt was chunked and tiled).
  start = start / kChunk * kChunk;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int chunk = start; chunk < end; chunk += kChunk) {
    const int n = min(kChunk, end - chunk);
    for (int i = threadIdx.x; i < n * D; i += kThreads) {
      const int c = i / D, d = i % D, pos = chunk + c;
      const int64_t slot =
          static_cast<int64_t>(table[pos / s.block_size]) * s.block_size + pos % s.block_size;
      const int64_t at = (slot * s.num_kv_heads + kv_head) * D + d;
      k_s[i] = k_cache[at];
      v_s[i] = v_cache[at];
    }
    __syncthreads();
    // Scores: one warp per (query, position) pair; positions a row does not see get -inf.
    for (int pair = warp; pair < Q * n; pair += kWarps) {
      const int qi = pair / n, c = pair % n, pos = chunk + c;
      float dot = 0.f;
      for (int d = lane; d < D; d += 32) dot += q_s[qi * D + d] * Bf16Bits(k_s[c * D + d]);
      for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      if (lane == 0) {
        const int row = qi / heads_per_block;
        float score = -INFINITY;
        if (pos >= row_lo[row] && pos < row_len[row]) {
          score = dot * s.scale;
          if (s.logit_softcap > 0.f) score = tanhf(score / s.logit_softcap) * s.logit_softcap;
        }
        p[qi * kChunk + c] = score;
      }
    }
    __syncthreads();
    // Online softmax: one thread per query. A query that has seen nothing keeps max -inf.
    for (int qi = threadIdx.x; qi < Q; qi += kThreads) {
      float m = run_max[qi];
      for (int c = 0; c < n; ++c) m = fmaxf(m, p[qi * kChunk + c]);
      float sum = 0.f;
      for (int c = 0; c < n; ++c) {
        const float score = p[qi * kChunk + c];
        const float e = score == -INFINITY ? 0.f : expf(score - m);
        p[qi * kChunk + c] = e;
        sum += e;
      }
      const float a = run_max[qi] == -INFINITY ? 0.f : expf(run_max[qi] - m);
      alpha[qi] = a;
      run_max[qi] = m;
      run_sum[qi] = run_sum[qi] * a + sum;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < Q * D; i += kThreads) {
      const int qi = i / D, d = i % D;
      float a = acc[i] * alpha[qi];
      for (int c = 0; c < n; ++c) a += p[qi * kChunk + c] * Bf16Bits(v_s[c * D + d]);
      acc[i] = a;
    }
    __syncthreads();  // before the next chunk overwrites k_s, v_s and p
  }
  for (int i = threadIdx.x; i < Q * D; i += kThreads) {
    const int qi = i / D, d = i % D;
    const int row = first_row + qi / heads_per_block, h = first_head + qi % heads_per_block;
    // A row that sees nothing (context length 0: padding) outputs 0, not 0/0.
    out[(static_cast<int64_t>(row) * s.num_heads + h) * D + d] =
        run_sum[qi] > 0.f ? acc[i] / run_sum[qi] : 0.f;
  }
}

}  // namespace

namespace {

// Per device: its shared-memory and multiprocessor counts, read once, and the dynamic shared
// memory TiledKernel has been allowed so far. Guarded by `mu` (backends on several threads).
struct DeviceLimits {
  std::mutex mu;
  int max_shared = 0;
  int sms = 0;  // 0 until read
  size_t shared_opt_in = 48 * 1024;
};

DeviceLimits& LimitsOf(int device) {
  static std::mutex map_mu;
  static std::map<int, std::unique_ptr<DeviceLimits>>* limits =
      new std::map<int, std::unique_ptr<DeviceLimits>>();  // never destroyed: used until exit
  std::lock_guard<std::mutex> lock(map_mu);
  std::unique_ptr<DeviceLimits>& entry = (*limits)[device];
  if (entry == nullptr) entry = std::make_unique<DeviceLimits>();
  return *entry;
}

}  // namespace

cudaError_t TiledPrefillAttention(const PagedAttentionShape& shape, const float* q,
                                  const int32_t* query_seq, const int32_t* context_lens,
                                  const int32_t* tiles, int num_tiles, const int32_t* block_tables,
                                  const uint16_t* k_cache, const uint16_t* v_cache, float* out,
                                  cudaStream_t stream) {
  if (shape.num_heads <= 0 || shape.num_kv_heads <= 0 ||
      shape.num_heads % shape.num_kv_heads != 0 || shape.head_dim <= 0 || shape.head_dim > 512 ||
      shape.block_size <= 0 || shape.sliding_window < 0 || shape.num_heads > 65535 ||
      num_tiles < 0) {
    return cudaErrorInvalidValue;
  }
  if (num_tiles == 0) return cudaSuccess;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  DeviceLimits& limits = LimitsOf(device);  // cached: this launch runs 26 times a prefill step
  std::lock_guard<std::mutex> lock(limits.mu);
  if (limits.sms == 0) {
    err =
        cudaDeviceGetAttribute(&limits.max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (err == cudaSuccess) {
      err = cudaDeviceGetAttribute(&limits.sms, cudaDevAttrMultiProcessorCount, device);
    }
    if (err != cudaSuccess) {
      limits.sms = 0;
      return err;
    }
  }
  const int max_shared = limits.max_shared, sms = limits.sms;
  // As many of the group's heads per block as fit (each K/V chunk then serves them all), unless
  // that leaves fewer than two blocks per multiprocessor: then as few as fit, for parallelism
  // (a 512-token chunk is only 32 tiles). Each h reads the K/V once per tile per block.
  const int group = shape.num_heads / shape.num_kv_heads;
  int heads_per_block = 0;
  for (int h = group; h >= 1; --h) {
    // + the static row bounds, which count against the same per-block limit.
    if (group % h != 0 || TiledSharedBytes(h, shape.head_dim) + 2 * sizeof(int) * kPrefillTileRows >
                              static_cast<size_t>(max_shared)) {
      continue;
    }
    heads_per_block = h;
    if (static_cast<int64_t>(num_tiles) * shape.num_kv_heads * (group / h) >= 2 * sms) break;
  }
  if (heads_per_block == 0) return cudaErrorInvalidValue;
  const size_t shared = TiledSharedBytes(heads_per_block, shape.head_dim);
  // The kernel's opt-in limit only ever grows, so a launch by another caller with a smaller
  // need on the same device cannot lower it under this one.
  if (shared > limits.shared_opt_in) {
    err = cudaFuncSetAttribute(TiledKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(shared));
    if (err != cudaSuccess) return err;
    limits.shared_opt_in = shared;
  }
  const int blocks_y = shape.num_kv_heads * (group / heads_per_block);
  if (blocks_y > 65535) return cudaErrorInvalidValue;
  TiledKernel<<<dim3(num_tiles, blocks_y), kThreads, shared, stream>>>(
      shape, q, query_seq, context_lens, tiles, heads_per_block, block_tables, k_cache, v_cache,
      out);
  return cudaGetLastError();
}

}  // namespace vg::engine::cuda
