#include "engine/backend/cpu/paged_attention.h"

#include <cmath>

#include "engine/backend/cpu/kernels.h"

namespace vg::engine::cpu {

void AttendHead(const float* q, const LayerKv& kv, std::span<const int32_t> block_table,
                int64_t kv_head, int64_t lo, int64_t hi, const AttentionParams& params,
                float* scores, float* out) {
  const int64_t head_dim = kv.head_dim;
  const int64_t count = hi - lo + 1;
  float max_score = -INFINITY;
  for (int64_t p = lo; p <= hi; ++p) {
    const int64_t slot = kv.SlotOffset(block_table[p / kv.block_size], p % kv.block_size, kv_head);
    float s = Dot(q, kv.keys + slot, head_dim) * params.scaling;
    if (params.softcap > 0.0f) s = std::tanh(s / params.softcap) * params.softcap;
    scores[p - lo] = s;
    max_score = s > max_score ? s : max_score;
  }
  float sum = 0.0f;
  for (int64_t i = 0; i < count; ++i) {
    scores[i] = std::exp(scores[i] - max_score);
    sum += scores[i];
  }
  const float inv_sum = 1.0f / sum;
  for (int64_t d = 0; d < head_dim; ++d) out[d] = 0.0f;
  for (int64_t p = lo; p <= hi; ++p) {
    const int64_t slot = kv.SlotOffset(block_table[p / kv.block_size], p % kv.block_size, kv_head);
    const float weight = scores[p - lo] * inv_sum;
    const float* v = kv.values + slot;
    for (int64_t d = 0; d < head_dim; ++d) out[d] += weight * v[d];
  }
}

}  // namespace vg::engine::cpu
