// KvCacheManager: the paged KV-cache pool's bookkeeping, with prefix caching. Pure ids, no tensors
// (the backend owns the tensors for block ids).
//
// A fixed set of blocks of `block_size` positions. Each live sequence has a block table (block i
// holds positions [i*B, (i+1)*B)). Blocks carry reference counts; a block whose count drops to zero
// goes back to the free list, and if it holds a full, registered prefix block it stays reusable
// ("cached") until it is evicted in LRU order to satisfy an allocation.
//
// Prefix caching: a full block is identified by its chain (the identity of the block before it in
// the sequence, the block's token ids, and the request's cache salt). A new sequence whose prompt
// starts with registered blocks under the same salt takes references on them and skips computing
// them. Requests with different salts never share a block (prefix-cache timing is a side channel).
// Lookups compare the full key (no hash-collision aliasing).
//
// Thread-safety: none; owned by the engine loop thread.
#ifndef VG_ENGINE_KV_KV_CACHE_MANAGER_H_
#define VG_ENGINE_KV_KV_CACHE_MANAGER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vg::engine {

struct KvCacheManagerOptions {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  bool enable_prefix_caching = true;
};

struct KvCacheStats {
  int32_t total = 0;
  int32_t used = 0;    // referenced by at least one live sequence
  int32_t cached = 0;  // unreferenced but holding a registered prefix block (evictable)
  int32_t free = 0;    // unreferenced and empty; used + cached + free == total
  int64_t evictions = 0;
};

class KvCacheManager {
 public:
  // INVALID_ARGUMENT when num_blocks or block_size is not positive.
  static absl::StatusOr<std::unique_ptr<KvCacheManager>> Create(
      const KvCacheManagerOptions& options);
  virtual ~KvCacheManager() = default;

  // Number of leading tokens of `tokens` whose blocks are registered under `salt`: a multiple of
  // block_size, and always < tokens.size() (the last token is computed anyway, to get its logits).
  // 0 when prefix caching is off. Takes no references.
  virtual int32_t CachedPrefixLength(std::span<const int32_t> tokens,
                                     std::string_view salt) const = 0;

  // Starts a sequence: its block table begins with references to the cached prefix blocks of
  // `tokens` (as CachedPrefixLength finds them); returns how many tokens they cover.
  // ALREADY_EXISTS for a live id. Allocates nothing else.
  virtual absl::StatusOr<int32_t> BeginSequence(int64_t seq_id, std::span<const int32_t> tokens,
                                                std::string_view salt) = 0;

  // Blocks EnsureCapacity(seq_id, num_tokens) would need to take from the pool.
  virtual int32_t BlocksNeeded(int64_t seq_id, int32_t num_tokens) const = 0;
  // Blocks an allocation could take now: free plus cached-unreferenced (evictable).
  virtual int32_t NumAllocatableBlocks() const = 0;

  // Grows the sequence's block table to cover `num_tokens` positions, taking free blocks first,
  // then evicting the least recently used cached blocks. All or nothing: RESOURCE_EXHAUSTED leaves
  // everything unchanged. NOT_FOUND for an unknown sequence.
  virtual absl::Status EnsureCapacity(int64_t seq_id, int32_t num_tokens) = 0;

  // Registers the sequence's blocks that are full and computed (the first `num_computed` tokens of
  // `tokens`, the sequence's whole token list) as reusable prefix blocks under its salt.
  // Idempotent.
  virtual void CacheComputedBlocks(int64_t seq_id, std::span<const int32_t> tokens,
                                   int32_t num_computed) = 0;

  // Drops the sequence's references. Registered blocks stay cached (most recently used last in
  // the LRU); others return to the free list. Unknown ids are ignored.
  virtual void EndSequence(int64_t seq_id) = 0;

  // The sequence's block table (empty span for an unknown id). Valid until the next mutation.
  virtual std::span<const int32_t> BlockTable(int64_t seq_id) const = 0;

  virtual KvCacheStats Stats() const = 0;
  virtual int32_t block_size() const = 0;
  virtual int32_t num_blocks() const = 0;

  // Checks every invariant (reference counts match the block tables, used + cached + free ==
  // total, no block both free and referenced, LRU and index consistent). For tests; O(blocks).
  virtual absl::Status CheckInvariants() const = 0;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_KV_KV_CACHE_MANAGER_H_
