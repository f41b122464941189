// Attention of one query head over positions of a sequence held in the paged KV cache.
//
// Scores are q.k * scaling, then (when a cap is set) tanh(s / cap) * cap, then softmax in float32
// over positions [lo, hi] only: the causal / sliding-window mask is expressed by the range, which
// is equivalent to transformers adding -inf to the masked scores after the cap.
#ifndef VG_ENGINE_BACKEND_CPU_PAGED_ATTENTION_H_
#define VG_ENGINE_BACKEND_CPU_PAGED_ATTENTION_H_

#include <cstdint>
#include <span>

#include "engine/backend/cpu/kv_cache.h"
#include "engine/backend/cpu/matmul_kernel.h"

namespace vg::engine::cpu {

struct AttentionParams {
  float scaling = 1.0f;  // query_pre_attn_scalar^-0.5
  float softcap = 0.0f;  // attn_logit_softcapping; 0 = none
};

// The first position a query at `position` may see: position - window + 1 for a sliding layer
// (transformers' sliding_window_overlay keeps kv_idx > q_idx - window), 0 for a full layer
// (window <= 0).
inline int64_t FirstVisiblePosition(int64_t position, int64_t window) {
  if (window <= 0) return 0;
  const int64_t lo = position - window + 1;
  return lo > 0 ? lo : 0;
}

// out[head_dim] = sum_{p in [lo, hi]} softmax(scores)_p * V[p], where K/V of position p live in
// block block_table[p / block_size] at offset p % block_size, head `kv_head`. `scores` is caller
// scratch of at least hi - lo + 1 floats. Preconditions (checked by the caller's plan
// validation): 0 <= lo <= hi, block_table covers hi, its ids are within the cache.
// The two loops over positions run in `kernel`'s instruction set (null: SelectedMatMulKernel());
// the soft-cap uses Tanh (kernels.h) and the softmax std::exp, in float32.
void AttendHead(const float* q, const LayerKv& kv, std::span<const int32_t> block_table,
                int64_t kv_head, int64_t lo, int64_t hi, const AttentionParams& params,
                float* scores, float* out, const MatMulKernel* kernel = nullptr);

// One query row of AttendHeads: AttendHead's q, lo, hi, scores and out.
struct AttentionQuery {
  const float* q = nullptr;
  int64_t lo = 0;
  int64_t hi = 0;
  float* scores = nullptr;
  float* out = nullptr;
};

// AttendHead for up to kMaxAttentionRows query rows of one sequence and kv head (consecutive
// prefill rows, say): the K and V of positions several rows see are read once for all of them.
// Each row's output is bit-identical to AttendHead's.
void AttendHeads(std::span<const AttentionQuery> queries, const LayerKv& kv,
                 std::span<const int32_t> block_table, int64_t kv_head,
                 const AttentionParams& params, const MatMulKernel* kernel = nullptr);

}  // namespace vg::engine::cpu

#endif  // VG_ENGINE_BACKEND_CPU_PAGED_ATTENTION_H_
