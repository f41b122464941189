#include "engine/backend/cpu/paged_attention.h"

#include <cmath>

#include "engine/backend/cpu/kernels.h"

namespace vg::engine::cpu {

void AttendHead(const float* q, const LayerKv& kv, std::span<const int32_t> block_table,
                int64_t kv_head, int64_t lo, int64_t hi, const AttentionParams& params,
                float* scores, float* out, const MatMulKernel* kernel) {
  const MatMulKernel& k = kernel != nullptr ? *kernel : SelectedMatMulKernel();
  AttentionProblem a;
  a.q = q;
  a.kv_dtype = kv.dtype;
  a.keys = kv.keys;
  a.values = kv.values;
  a.block_table = block_table.data();
  a.block_size = kv.block_size;
  a.kv_heads = kv.kv_heads;
  a.head_dim = kv.head_dim;
  a.kv_head = kv_head;
  a.lo = lo;
  a.hi = hi;
  const int64_t count = hi - lo + 1;
  k.attention_scores(a, scores);
  for (int64_t i = 0; i < count; ++i) scores[i] *= params.scaling;
  if (params.softcap > 0.0f) SoftCap(scores, count, params.softcap);
  float max_score = -INFINITY;
  for (int64_t i = 0; i < count; ++i) max_score = scores[i] > max_score ? scores[i] : max_score;
  float sum = 0.0f;
  for (int64_t i = 0; i < count; ++i) {
    scores[i] = std::exp(scores[i] - max_score);
    sum += scores[i];
  }
  const float inv_sum = 1.0f / sum;
  for (int64_t i = 0; i < count; ++i) scores[i] *= inv_sum;
  k.attention_values(a, scores, out);
}

}  // namespace vg::engine::cpu
