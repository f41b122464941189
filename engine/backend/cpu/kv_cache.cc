#include "engine/backend/cpu/kv_cache.h"

#include <limits>
#include <new>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vg::engine::cpu {

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const KvCacheShape& shape) {
  if (shape.num_layers <= 0 || shape.num_blocks <= 0 || shape.block_size <= 0 ||
      shape.kv_heads <= 0 || shape.head_dim <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache: every dimension must be positive (layers ", shape.num_layers,
                     ", blocks ", shape.num_blocks, ", block_size ", shape.block_size,
                     ", kv_heads ", shape.kv_heads, ", head_dim ", shape.head_dim, ")"));
  }
  // Overflow-checked product; the limit also keeps bytes() (2 tensors * 4 bytes) representable.
  const unsigned __int128 per_layer = static_cast<unsigned __int128>(shape.num_blocks) *
                                      shape.block_size * shape.kv_heads * shape.head_dim;
  const unsigned __int128 total = per_layer * shape.num_layers;
  if (total > std::numeric_limits<size_t>::max() / 16) {
    return absl::ResourceExhaustedError("KV cache: size overflows");
  }
  std::unique_ptr<KvCache> cache(new KvCache());
  cache->shape_ = shape;
  cache->floats_per_layer_ = static_cast<size_t>(per_layer);
  cache->floats_per_tensor_ = static_cast<size_t>(total);
  cache->keys_.reset(new (std::nothrow) float[cache->floats_per_tensor_]());
  cache->values_.reset(new (std::nothrow) float[cache->floats_per_tensor_]());
  if (!cache->keys_ || !cache->values_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache: cannot allocate ", cache->bytes(), " bytes"));
  }
  return cache;
}

LayerKv KvCache::Layer(int64_t layer) const {
  LayerKv kv;
  kv.keys = keys_.get() + layer * floats_per_layer_;
  kv.values = values_.get() + layer * floats_per_layer_;
  kv.block_size = shape_.block_size;
  kv.kv_heads = shape_.kv_heads;
  kv.head_dim = shape_.head_dim;
  return kv;
}

float* KvCache::KeySlot(int64_t layer, int32_t block, int64_t offset) {
  return keys_.get() + layer * floats_per_layer_ + Layer(layer).SlotOffset(block, offset, 0);
}

float* KvCache::ValueSlot(int64_t layer, int32_t block, int64_t offset) {
  return values_.get() + layer * floats_per_layer_ + Layer(layer).SlotOffset(block, offset, 0);
}

}  // namespace vg::engine::cpu
