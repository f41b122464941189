#include "engine/backend/cpu/paged_attention.h"

#include <cmath>

#include "engine/backend/cpu/kernels.h"

namespace vg::engine::cpu {

void AttendHead(const float* q, const LayerKv& kv, std::span<const int32_t> block_table,
                int64_t kv_head, int64_t lo, int64_t hi, const AttentionParams& params,
                float* scores, float* out, const MatMulKernel* kernel) {
  const AttentionQuery query{q, lo, hi, scores, out};
  AttendHeads(std::span<const AttentionQuery>(&query, 1), kv, block_table, kv_head, params, kernel);
}

void AttendHeads(std::span<const AttentionQuery> queries, const LayerKv& kv,
                 std::span<const int32_t> block_table, int64_t kv_head,
                 const AttentionParams& params, const MatMulKernel* kernel) {
  if (queries.size() > static_cast<size_t>(kMaxAttentionRows)) {
    AttendHeads(queries.first(kMaxAttentionRows), kv, block_table, kv_head, params, kernel);
    AttendHeads(queries.subspan(kMaxAttentionRows), kv, block_table, kv_head, params, kernel);
    return;
  }
  const MatMulKernel& k = kernel != nullptr ? *kernel : SelectedMatMulKernel();
  const int count = static_cast<int>(queries.size());
  if (count == 0) return;
  AttentionProblem problems[kMaxAttentionRows];
  float* scores[kMaxAttentionRows];
  float* outs[kMaxAttentionRows];
  for (int r = 0; r < count; ++r) {
    AttentionProblem& a = problems[r];
    a.q = queries[r].q;
    a.kv_dtype = kv.dtype;
    a.keys = kv.keys;
    a.values = kv.values;
    a.block_table = block_table.data();
    a.block_size = kv.block_size;
    a.kv_heads = kv.kv_heads;
    a.head_dim = kv.head_dim;
    a.kv_head = kv_head;
    a.lo = queries[r].lo;
    a.hi = queries[r].hi;
    scores[r] = queries[r].scores;
    outs[r] = queries[r].out;
  }
  k.attention_scores(problems, count, scores);
  for (int r = 0; r < count; ++r) {
    float* s = scores[r];
    const int64_t n = queries[r].hi - queries[r].lo + 1;
    for (int64_t i = 0; i < n; ++i) s[i] *= params.scaling;
    if (params.softcap > 0.0f) SoftCap(s, n, params.softcap);
    float max_score = -INFINITY;
    for (int64_t i = 0; i < n; ++i) max_score = s[i] > max_score ? s[i] : max_score;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      s[i] = std::exp(s[i] - max_score);
      sum += s[i];
    }
    const float inv_sum = 1.0f / sum;
    for (int64_t i = 0; i < n; ++i) s[i] *= inv_sum;
  }
  k.attention_values(problems, count, scores, outs);
}

}  // namespace vg::engine::cpu
