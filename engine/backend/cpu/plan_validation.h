// Checks a BatchPlan against a backend's limits before any of it runs, so that a bad plan is an
// INVALID_ARGUMENT with the cache untouched rather than a crash or a corrupted cache.
#ifndef VG_ENGINE_BACKEND_CPU_PLAN_VALIDATION_H_
#define VG_ENGINE_BACKEND_CPU_PLAN_VALIDATION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "engine/backend/batch_plan.h"

namespace vg::engine::cpu {

struct PlanLimits {
  int64_t vocab_size = 0;
  int64_t max_positions = 0;  // max_position_embeddings: positions must be < this
  int32_t block_size = 0;
  int32_t num_blocks = 0;
};

// OK, or INVALID_ARGUMENT naming the entry (index and sequence id) and the problem: empty
// token_ids, negative start_position, a position >= max_positions, a token outside
// [0, vocab_size), a block table shorter than ceil((start_position + len) / block_size), a block id
// used by the entry outside [0, num_blocks), or two new tokens of the plan mapped to the same
// physical cache slot.
absl::Status ValidatePlan(const BatchPlan& plan, const PlanLimits& limits);

}  // namespace vg::engine::cpu

#endif  // VG_ENGINE_BACKEND_CPU_PLAN_VALIDATION_H_
