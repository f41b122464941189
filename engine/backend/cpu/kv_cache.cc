#include "engine/backend/cpu/kv_cache.h"

#include <cstring>
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
  if (shape.dtype != DType::kF32 && shape.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("KV cache: dtype must be float32 or bfloat16");
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
  cache->element_bytes_ = shape.dtype == DType::kF32 ? 4 : 2;
  cache->elements_per_layer_ = static_cast<size_t>(per_layer);
  cache->elements_per_tensor_ = static_cast<size_t>(total);
  const size_t tensor_bytes = cache->elements_per_tensor_ * cache->element_bytes_;
  cache->keys_.reset(new (std::nothrow) std::byte[tensor_bytes]());
  cache->values_.reset(new (std::nothrow) std::byte[tensor_bytes]());
  if (!cache->keys_ || !cache->values_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache: cannot allocate ", cache->bytes(), " bytes"));
  }
  return cache;
}

LayerKv KvCache::Layer(int64_t layer) const {
  LayerKv kv;
  kv.dtype = shape_.dtype;
  kv.keys = keys_.get() + layer * elements_per_layer_ * element_bytes_;
  kv.values = values_.get() + layer * elements_per_layer_ * element_bytes_;
  kv.block_size = shape_.block_size;
  kv.kv_heads = shape_.kv_heads;
  kv.head_dim = shape_.head_dim;
  return kv;
}

std::byte* KvCache::Slot(std::byte* base, int64_t layer, int32_t block, int64_t offset) const {
  const size_t element = layer * elements_per_layer_ + Layer(layer).SlotOffset(block, offset, 0);
  return base + element * element_bytes_;
}

void KvCache::Write(int64_t layer, int32_t block, int64_t offset, const float* k, const float* v) {
  const int64_t n = shape_.kv_heads * shape_.head_dim;
  std::byte* key = Slot(keys_.get(), layer, block, offset);
  std::byte* value = Slot(values_.get(), layer, block, offset);
  if (shape_.dtype == DType::kF32) {
    std::memcpy(key, k, n * sizeof(float));
    std::memcpy(value, v, n * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t kb = FloatToBF16(k[i]), vb = FloatToBF16(v[i]);
    std::memcpy(key + 2 * i, &kb, 2);
    std::memcpy(value + 2 * i, &vb, 2);
  }
}

}  // namespace vg::engine::cpu
