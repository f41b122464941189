// BlockLruList: the least-recently-used order of cached (unreferenced, registered) KV blocks,
// private to engine/kv/. An intrusive doubly-linked list over block ids [0, num_blocks): O(1)
// append, pop of the oldest and removal of any member (a cached block reclaimed by a prefix hit
// leaves the middle of the list). No allocation after construction.
//
// Thread-safety: none; owned by KvCacheManager.
#ifndef VG_ENGINE_KV_BLOCK_LRU_LIST_H_
#define VG_ENGINE_KV_BLOCK_LRU_LIST_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace vg::engine {

class BlockLruList {
 public:
  explicit BlockLruList(int32_t num_blocks);

  // Appends `block` as the most recently used. Precondition: in range and not a member.
  void PushBack(int32_t block);
  // Unlinks a member. Precondition: Contains(block).
  void Remove(int32_t block);
  // Unlinks and returns the least recently used member. Precondition: !empty().
  int32_t PopFront();

  bool Contains(int32_t block) const { return next_[block] != kNotLinked; }
  bool empty() const { return size_ == 0; }
  int32_t size() const { return size_; }

  // Members from least to most recently used. O(size); for tests and invariant checks.
  std::vector<int32_t> ToVector() const;
  // INTERNAL when the links are inconsistent (broken back links, a cycle, a wrong size).
  absl::Status CheckLinks() const;

 private:
  static constexpr int32_t kNotLinked = -1;

  int32_t sentinel() const { return static_cast<int32_t>(next_.size()) - 1; }

  // Indices [0, num_blocks) are blocks; the last index is the sentinel closing the ring.
  std::vector<int32_t> prev_;
  std::vector<int32_t> next_;
  int32_t size_ = 0;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_KV_BLOCK_LRU_LIST_H_
