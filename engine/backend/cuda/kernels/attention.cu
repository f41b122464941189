// Paged attention over the BF16 KV cache: a partition kernel (split-K over the context) and a
// reduction kernel combining the partitions' max, sum and unnormalised output (flash-decoding).
// Prefill uses the same kernels, one query row per new token (see kernels.h).
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

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
                    const int32_t* context_lens, const int32_t* block_tables,
                    const uint16_t* k_cache, const uint16_t* v_cache, int max_parts,
                    Partials partials) {
  extern __shared__ float smem[];
  __shared__ float reduce[32];
  float* q_s = smem;
  float* logits = smem + s.head_dim;
  const int r = blockIdx.x, h = blockIdx.y, part = blockIdx.z;
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

  const int64_t part_index = (static_cast<int64_t>(r) * s.num_heads + h) * max_parts + part;
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
    CombineKernel(PagedAttentionShape s, const int32_t* context_lens, int max_parts,
                  Partials partials, float* out) {
  const int r = blockIdx.x, h = blockIdx.y;
  const int len = context_lens[r];
  const int visible = s.sliding_window > 0 ? min(len, s.sliding_window) : len;
  const int parts = (visible + s.partition_size - 1) / s.partition_size;
  const int64_t base = (static_cast<int64_t>(r) * s.num_heads + h) * max_parts;
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
                           const int32_t* query_seq, const int32_t* context_lens, int num_queries,
                           int max_context_len, const int32_t* block_tables,
                           const uint16_t* k_cache, const uint16_t* v_cache, float* scratch,
                           float* out, cudaStream_t stream) {
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
      shape, q, query_seq, context_lens, block_tables, k_cache, v_cache, max_parts, partials);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  CombineKernel<<<dim3(num_queries, shape.num_heads), kThreads, 0, stream>>>(
      shape, context_lens, max_parts, partials, out);
  return cudaGetLastError();
}

}  // namespace vg::engine::cuda
