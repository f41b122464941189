#include "engine/kv/block_lru_list.h"

#include <cassert>

#include "absl/strings/str_cat.h"

namespace vg::engine {

BlockLruList::BlockLruList(int32_t num_blocks)
    : prev_(num_blocks + 1, kNotLinked), next_(num_blocks + 1, kNotLinked) {
  prev_[sentinel()] = sentinel();
  next_[sentinel()] = sentinel();
}

void BlockLruList::PushBack(int32_t block) {
  assert(block >= 0 && block < sentinel() && !Contains(block));
  const int32_t last = prev_[sentinel()];
  prev_[block] = last;
  next_[block] = sentinel();
  next_[last] = block;
  prev_[sentinel()] = block;
  ++size_;
}

void BlockLruList::Remove(int32_t block) {
  assert(block >= 0 && block < sentinel() && Contains(block));
  next_[prev_[block]] = next_[block];
  prev_[next_[block]] = prev_[block];
  prev_[block] = kNotLinked;
  next_[block] = kNotLinked;
  --size_;
}

int32_t BlockLruList::PopFront() {
  assert(!empty());
  const int32_t block = next_[sentinel()];
  Remove(block);
  return block;
}

std::vector<int32_t> BlockLruList::ToVector() const {
  std::vector<int32_t> blocks;
  blocks.reserve(size_);
  for (int32_t b = next_[sentinel()]; b != sentinel() && b != kNotLinked; b = next_[b]) {
    blocks.push_back(b);
    if (static_cast<int32_t>(blocks.size()) > sentinel()) break;  // a cycle; CheckLinks reports it
  }
  return blocks;
}

absl::Status BlockLruList::CheckLinks() const {
  int32_t walked = 0;
  int32_t prev = sentinel();
  for (int32_t b = next_[sentinel()]; b != sentinel(); b = next_[b]) {
    if (b < 0 || b >= sentinel()) {
      return absl::InternalError(absl::StrCat("BlockLruList: bad link ", b, " after ", prev));
    }
    if (prev_[b] != prev) {
      return absl::InternalError(absl::StrCat("BlockLruList: block ", b, " has back link ",
                                              prev_[b], ", expected ", prev));
    }
    if (++walked > sentinel()) return absl::InternalError("BlockLruList: cycle");
    prev = b;
  }
  if (prev_[sentinel()] != prev) return absl::InternalError("BlockLruList: bad tail link");
  int32_t linked = 0;
  for (int32_t b = 0; b < sentinel(); ++b) {
    if (Contains(b)) ++linked;
  }
  if (walked != size_ || linked != size_) {
    return absl::InternalError(absl::StrCat("BlockLruList: size ", size_, " but ", walked,
                                            " reachable and ", linked, " linked"));
  }
  return absl::OkStatus();
}

}  // namespace vg::engine
