// Backend: runs the VaultGemma forward pass for one BatchPlan.
//
// Implementations: cpu/ (threads + SIMD) and, later, a CUDA plugin. The engine loop thread is the
// only caller; a backend need not be thread-safe. A backend owns the KV tensors for `num_blocks()`
// blocks of `block_size()` positions each and writes the K/V of every new token into the blocks
// named by the plan; which blocks are free is the KV pool's business (engine/kv/), not the
// backend's.
#ifndef VG_ENGINE_BACKEND_BACKEND_H_
#define VG_ENGINE_BACKEND_BACKEND_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "engine/backend/batch_plan.h"
#include "engine/sampling/row_sampling.h"

namespace vg::engine {

class Backend {
 public:
  virtual ~Backend() = default;

  // Runs every entry's new tokens through the model, appending their K/V to the cache, and fills
  // `logits` as BatchPlan's LogitsMode asks. INVALID_ARGUMENT for a plan that names blocks outside
  // [0, num_blocks()), a block table too short for its positions, tokens outside the vocabulary or
  // positions beyond the context; the cache is unchanged then.
  virtual absl::Status Forward(const BatchPlan& plan, Logits* logits) = 0;

  // True for a backend that samples on its own device (ForwardAndSample); the engine then sends
  // it each row's sampling instead of reading logits back.
  virtual bool samples_on_device() const { return false; }

  // Forward, then one token per logits row chosen on the device as row_sampling.h describes:
  // `rows[r]` is the sampling of the plan's r-th logits row and `samples` gets one RowSample per
  // row, in the same order. Only entries with LogitsMode kNone or kLast are accepted
  // (INVALID_ARGUMENT for kAll, or for rows.size() != the number of kLast entries); errors are
  // Forward's otherwise. UNIMPLEMENTED unless samples_on_device().
  virtual absl::Status ForwardAndSample(const BatchPlan& plan, std::span<const RowSampling> rows,
                                        std::vector<RowSample>* samples) {
    (void)plan;
    (void)rows;
    (void)samples;
    return absl::UnimplementedError("this backend does not sample on its device");
  }

  virtual int32_t num_blocks() const = 0;
  virtual int32_t block_size() const = 0;
  virtual int64_t vocab_size() const = 0;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_BACKEND_BACKEND_H_
