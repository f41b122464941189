// Elementwise and row kernels: embedding, residual + RMSNorm, RoPE + KV write, GeGLU, soft-cap.
#include <cuda_bf16.h>

#include <cmath>

#include "engine/backend/cuda/kernels/kernels.h"

namespace vg::engine::cuda {
namespace {

constexpr int kRowThreads = 256;

__device__ __forceinline__ float Bf16Bits(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}
__device__ __forceinline__ uint16_t ToBf16Bits(float f) {
  __nv_bfloat16 b = __float2bfloat16_rn(f);
  return *reinterpret_cast<uint16_t*>(&b);
}

// Sum over the block; every thread gets the result. shared must hold 32 floats.
__device__ float BlockSum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  float total = 0.f;
  for (int w = 0; w < warps; ++w) total += shared[w];
  return total;
}

__global__ void EmbedKernel(const uint16_t* table, const int32_t* ids, int hidden, float normalizer,
                            float* out) {
  const int64_t t = blockIdx.x;
  const uint16_t* row = table + static_cast<int64_t>(ids[t]) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    out[t * hidden + i] = Bf16Bits(row[i]) * normalizer;
  }
}

__global__ void ResidualRmsNormKernel(float* residual, const float* x, const float* weight,
                                      int hidden, float eps, uint16_t* normed, float* normed_f32) {
  __shared__ float shared[32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * hidden;
  float sumsq = 0.f;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    float h = residual[base + i];
    if (x != nullptr) {
      h += x[base + i];
      residual[base + i] = h;
    }
    sumsq += h * h;
  }
  const float inv = rsqrtf(BlockSum(sumsq, shared) / hidden + eps);
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    // Each thread rereads only the elements it wrote itself: no barrier needed.
    const float y = residual[base + i] * inv * (1.f + weight[i]);
    if (normed != nullptr) normed[base + i] = ToBf16Bits(y);
    if (normed_f32 != nullptr) normed_f32[base + i] = y;
  }
}

// One block per token; thread i of the half dimension handles the pair (i, i + half).
__global__ void RopeWriteKvKernel(const float* q, const float* k, const float* v,
                                  int64_t row_stride, const int32_t* positions,
                                  const int64_t* slots, int num_heads, int num_kv_heads,
                                  int head_dim, float rope_theta, float* q_out, uint16_t* k_cache,
                                  uint16_t* v_cache) {
  const int64_t t = blockIdx.x;
  const int half = head_dim / 2;
  const float pos = static_cast<float>(positions[t]);
  const int64_t slot = slots[t];
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    // inv_freq = theta^(-2i/d), computed in float64 then rounded like transformers' float32 tensor.
    const float inv_freq =
        static_cast<float>(1.0 / pow(static_cast<double>(rope_theta), (2.0 * i) / head_dim));
    const float angle = pos * inv_freq;
    float s, c;
    sincosf(angle, &s, &c);
    for (int h = 0; h < num_heads; ++h) {
      const float* row = q + t * row_stride + h * head_dim;
      const float a = row[i], b = row[i + half];  // both read before q_out (maybe q) is written
      float* out = q_out + (t * num_heads + h) * head_dim;
      out[i] = a * c - b * s;
      out[i + half] = b * c + a * s;
    }
    if (slot < 0) continue;  // a padding row (CUDA graph buckets): nothing goes to the cache
    for (int h = 0; h < num_kv_heads; ++h) {
      const int64_t src = t * row_stride + h * head_dim;
      const int64_t dst = (slot * num_kv_heads + h) * head_dim;
      const float a = k[src + i], b = k[src + i + half];
      k_cache[dst + i] = ToBf16Bits(a * c - b * s);
      k_cache[dst + i + half] = ToBf16Bits(b * c + a * s);
      v_cache[dst + i] = ToBf16Bits(v[src + i]);
      v_cache[dst + i + half] = ToBf16Bits(v[src + i + half]);
    }
  }
}

__global__ void GeGluKernel(const float* gate, const float* up, int64_t row_stride,
                            int intermediate, int64_t count, uint16_t* out) {
  const float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t in = (i / intermediate) * row_stride + i % intermediate;
    const float g = gate[in];
    const float gelu = 0.5f * g * (1.f + tanhf(kSqrt2OverPi * (g + 0.044715f * g * g * g)));
    out[i] = ToBf16Bits(gelu * up[in]);
  }
}

__global__ void AddBiasKernel(float* x, const float* bias, int64_t count, int cols) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] += bias[i % cols];
  }
}

__global__ void GatherRowsKernel(const float* in, const int32_t* rows, int cols, float* out) {
  const float* src = in + static_cast<int64_t>(rows[blockIdx.x]) * cols;
  float* dst = out + static_cast<int64_t>(blockIdx.x) * cols;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = src[i];
}

__global__ void FloatToBf16Kernel(const float* in, int64_t count, uint16_t* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = ToBf16Bits(in[i]);
  }
}

// One block per row: cap in place, then a block argmax (ties -> lowest index).
__global__ void SoftcapArgmaxKernel(float* logits, int vocab, float cap, int32_t* argmax) {
  __shared__ float best_val[32];
  __shared__ int best_idx[32];
  float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  float bv = -INFINITY;
  int bi = vocab;  // larger than any index
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    float x = row[j];
    if (cap > 0.f) {
      x = tanhf(x / cap) * cap;
      row[j] = x;
    }
    if (x > bv || (x == bv && j < bi)) bv = x, bi = j;
  }
  if (argmax == nullptr) return;
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) best_val[warp] = bv, best_idx[warp] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) {
      if (best_val[w] > bv || (best_val[w] == bv && best_idx[w] < bi))
        bv = best_val[w], bi = best_idx[w];
    }
    argmax[blockIdx.x] = bi < vocab ? bi : 0;  // an all-NaN row yields 0
  }
}

int GridFor(int64_t count) {
  const int64_t blocks = (count + kRowThreads - 1) / kRowThreads;
  return static_cast<int>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

}  // namespace

float EmbeddingNormalizer(int hidden_size, bool bf16_activations) {
  const float n = std::sqrt(static_cast<float>(hidden_size));
  if (!bf16_activations) return n;
  return __bfloat162float(__float2bfloat16_rn(n));
}

cudaError_t EmbedTokens(const uint16_t* table, const int32_t* ids, int num_tokens, int hidden,
                        float normalizer, float* out, cudaStream_t stream) {
  if (num_tokens <= 0) return cudaSuccess;
  EmbedKernel<<<num_tokens, kRowThreads, 0, stream>>>(table, ids, hidden, normalizer, out);
  return cudaGetLastError();
}

cudaError_t ResidualRmsNorm(float* residual, const float* x, const float* weight, int num_tokens,
                            int hidden, float eps, uint16_t* normed, float* normed_f32,
                            cudaStream_t stream) {
  if (num_tokens <= 0) return cudaSuccess;
  ResidualRmsNormKernel<<<num_tokens, kRowThreads, 0, stream>>>(residual, x, weight, hidden, eps,
                                                                normed, normed_f32);
  return cudaGetLastError();
}

cudaError_t RopeAndWriteKv(const float* q, const float* k, const float* v, int64_t row_stride,
                           const int32_t* positions, const int64_t* slots, int num_tokens,
                           int num_heads, int num_kv_heads, int head_dim, float rope_theta,
                           float* q_out, uint16_t* k_cache, uint16_t* v_cache,
                           cudaStream_t stream) {
  if (head_dim % 2 != 0 || row_stride < static_cast<int64_t>(num_heads) * head_dim) {
    return cudaErrorInvalidValue;
  }
  if (num_tokens <= 0) return cudaSuccess;
  const int threads = head_dim / 2 < 128 ? ((head_dim / 2 + 31) / 32) * 32 : 128;
  RopeWriteKvKernel<<<num_tokens, threads, 0, stream>>>(q, k, v, row_stride, positions, slots,
                                                        num_heads, num_kv_heads, head_dim,
                                                        rope_theta, q_out, k_cache, v_cache);
  return cudaGetLastError();
}

cudaError_t GeGlu(const float* gate, const float* up, int64_t row_stride, int num_tokens,
                  int intermediate, uint16_t* out, cudaStream_t stream) {
  if (intermediate <= 0 || row_stride < intermediate) return cudaErrorInvalidValue;
  const int64_t count = static_cast<int64_t>(num_tokens) * intermediate;
  if (count <= 0) return cudaSuccess;
  GeGluKernel<<<GridFor(count), kRowThreads, 0, stream>>>(gate, up, row_stride, intermediate, count,
                                                          out);
  return cudaGetLastError();
}

cudaError_t AddBias(float* x, const float* bias, int num_rows, int cols, cudaStream_t stream) {
  const int64_t count = static_cast<int64_t>(num_rows) * cols;
  if (count <= 0) return cudaSuccess;
  AddBiasKernel<<<GridFor(count), kRowThreads, 0, stream>>>(x, bias, count, cols);
  return cudaGetLastError();
}

cudaError_t GatherRows(const float* in, const int32_t* rows, int num_rows, int cols, float* out,
                       cudaStream_t stream) {
  if (num_rows <= 0 || cols <= 0) return cudaSuccess;
  GatherRowsKernel<<<num_rows, kRowThreads, 0, stream>>>(in, rows, cols, out);
  return cudaGetLastError();
}

cudaError_t FloatToBf16(const float* in, int64_t count, uint16_t* out, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  FloatToBf16Kernel<<<GridFor(count), kRowThreads, 0, stream>>>(in, count, out);
  return cudaGetLastError();
}

cudaError_t FinalSoftcapArgmax(float* logits, int num_rows, int vocab, float cap, int32_t* argmax,
                               cudaStream_t stream) {
  if (num_rows <= 0) return cudaSuccess;
  SoftcapArgmaxKernel<<<num_rows, kRowThreads, 0, stream>>>(logits, vocab, cap, argmax);
  return cudaGetLastError();
}

}  // namespace vg::engine::cuda
