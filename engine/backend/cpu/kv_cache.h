// KvCache: the K and V tensors behind the KV pool's block ids, owned by the CPU backend.
//
// float32, laid out [layer][block][block_size][kv_heads][head_dim] for K and again for V, so one
// block of one layer is contiguous. Which blocks belong to which sequence is the plan's business
// (block tables); this class only maps (layer, block, offset) to memory.
//
// Thread-safety: none of its own; the backend writes disjoint slots from pool threads.
#ifndef VG_ENGINE_BACKEND_CPU_KV_CACHE_H_
#define VG_ENGINE_BACKEND_CPU_KV_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"

namespace vg::engine::cpu {

struct KvCacheShape {
  int64_t num_layers = 0;
  int32_t num_blocks = 0;
  int32_t block_size = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
};

// One layer's K and V as the attention kernel reads them.
struct LayerKv {
  const float* keys = nullptr;
  const float* values = nullptr;
  int32_t block_size = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;

  // Offset (in floats) of the vector for (block, offset within block, kv head).
  int64_t SlotOffset(int32_t block, int64_t offset, int64_t kv_head) const {
    return ((static_cast<int64_t>(block) * block_size + offset) * kv_heads + kv_head) * head_dim;
  }
};

class KvCache {
 public:
  // Zero-filled cache. INVALID_ARGUMENT for a non-positive dimension; RESOURCE_EXHAUSTED when
  // the size overflows or the allocation fails.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const KvCacheShape& shape);

  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  const KvCacheShape& shape() const { return shape_; }
  size_t bytes() const { return 2 * floats_per_tensor_ * sizeof(float); }

  LayerKv Layer(int64_t layer) const;
  // The kv_heads * head_dim floats of K (or V) for one token slot.
  float* KeySlot(int64_t layer, int32_t block, int64_t offset);
  float* ValueSlot(int64_t layer, int32_t block, int64_t offset);

 private:
  KvCache() = default;

  KvCacheShape shape_;
  size_t floats_per_layer_ = 0;
  size_t floats_per_tensor_ = 0;
  std::unique_ptr<float[]> keys_;
  std::unique_ptr<float[]> values_;
};

}  // namespace vg::engine::cpu

#endif  // VG_ENGINE_BACKEND_CPU_KV_CACHE_H_
