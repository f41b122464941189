// KvCache: the K and V tensors behind the KV pool's block ids, owned by the CPU backend.
//
// float32 (exact, the default) or bfloat16 (half the memory and the bytes attention reads; each
// K and V element rounded to nearest even once, when written, as a BF16 transformers model keeps
// its cache), laid out [layer][block][block_size][kv_heads][head_dim] for K and again for V, so
// one block of one layer is contiguous. Which blocks belong to which sequence is the plan's
// business (block tables); this class only maps (layer, block, offset) to memory.
//
// Thread-safety: none of its own; the backend writes disjoint slots from pool threads.
#ifndef VG_ENGINE_BACKEND_CPU_KV_CACHE_H_
#define VG_ENGINE_BACKEND_CPU_KV_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "engine/model/dtype.h"

namespace vg::engine::cpu {

struct KvCacheShape {
  int64_t num_layers = 0;
  int32_t num_blocks = 0;
  int32_t block_size = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  DType dtype = DType::kF32;  // kF32 or kBF16
};

// One layer's K and V as the attention kernel reads them.
struct LayerKv {
  DType dtype = DType::kF32;
  const std::byte* keys = nullptr;
  const std::byte* values = nullptr;
  int32_t block_size = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;

  // Offset (in elements) of the vector for (block, offset within block, kv head).
  int64_t SlotOffset(int32_t block, int64_t offset, int64_t kv_head) const {
    return ((static_cast<int64_t>(block) * block_size + offset) * kv_heads + kv_head) * head_dim;
  }
};

class KvCache {
 public:
  // Zero-filled cache. INVALID_ARGUMENT for a non-positive dimension or a dtype other than F32
  // and BF16; RESOURCE_EXHAUSTED when the size overflows or the allocation fails.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const KvCacheShape& shape);

  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  const KvCacheShape& shape() const { return shape_; }
  size_t bytes() const { return 2 * elements_per_tensor_ * element_bytes_; }
  // Bytes of K plus V for one position in every layer.
  static int64_t BytesPerPosition(int64_t num_layers, int64_t kv_heads, int64_t head_dim,
                                  DType dtype) {
    return 2 * num_layers * kv_heads * head_dim * (dtype == DType::kF32 ? 4 : 2);
  }

  LayerKv Layer(int64_t layer) const;
  // Stores the kv_heads * head_dim floats of K and of V for one token slot (rounded to the
  // cache's dtype).
  void Write(int64_t layer, int32_t block, int64_t offset, const float* k, const float* v);

 private:
  KvCache() = default;
  std::byte* Slot(std::byte* base, int64_t layer, int32_t block, int64_t offset) const;

  KvCacheShape shape_;
  size_t element_bytes_ = 4;
  size_t elements_per_layer_ = 0;
  size_t elements_per_tensor_ = 0;
  std::unique_ptr<std::byte[]> keys_;
  std::unique_ptr<std::byte[]> values_;
};

}  // namespace vg::engine::cpu

#endif  // VG_ENGINE_BACKEND_CPU_KV_CACHE_H_
