// BlockPool: bookkeeping for the paged KV cache. Pure ids, no tensors (the backend owns those).
//
// A fixed set of `num_blocks` block ids. Allocate() hands out a free id with reference count 1;
// Release() drops a reference and returns the id to the free list at zero. The engine issue grows
// this into the full pool (prefix-cache hashes, LRU of cached free blocks); the contract here
// stays.
//
// Thread-safety: none; owned by the engine loop thread.
#ifndef VG_ENGINE_KV_BLOCK_POOL_H_
#define VG_ENGINE_KV_BLOCK_POOL_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace vg::engine {

class BlockPool {
 public:
  // INVALID_ARGUMENT when num_blocks <= 0.
  static absl::StatusOr<BlockPool> Create(int32_t num_blocks);

  // A free block with reference count 1. RESOURCE_EXHAUSTED when none is free.
  absl::StatusOr<int32_t> Allocate();
  // Adds a reference to an allocated block. FAILED_PRECONDITION if it is free.
  absl::Status AddRef(int32_t block);
  // Drops one reference; at zero the block is free again. FAILED_PRECONDITION if already free,
  // OUT_OF_RANGE for an id outside the pool.
  absl::Status Release(int32_t block);

  int32_t num_blocks() const { return static_cast<int32_t>(ref_counts_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t ref_count(int32_t block) const { return ref_counts_[block]; }

 private:
  explicit BlockPool(int32_t num_blocks);
  std::vector<int32_t> ref_counts_;
  std::vector<int32_t> free_;  // stack; lowest ids are handed out first
};

}  // namespace vg::engine

#endif  // VG_ENGINE_KV_BLOCK_POOL_H_
