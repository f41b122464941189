#include "engine/kv/block_pool.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vg::engine {

absl::StatusOr<BlockPool> BlockPool::Create(int32_t num_blocks) {
  if (num_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("BlockPool: num_blocks must be positive, got ", num_blocks));
  }
  return BlockPool(num_blocks);
}

BlockPool::BlockPool(int32_t num_blocks) : ref_counts_(num_blocks, 0) {
  // A stack popped from the back: push the highest id first so id 0 is handed out first.
  free_.reserve(num_blocks);
  for (int32_t id = num_blocks - 1; id >= 0; --id) free_.push_back(id);
}

absl::StatusOr<int32_t> BlockPool::Allocate() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("BlockPool: all ", num_blocks(), " KV blocks are in use"));
  }
  const int32_t block = free_.back();
  free_.pop_back();
  ref_counts_[block] = 1;
  return block;
}

absl::Status BlockPool::AddRef(int32_t block) {
  if (block < 0 || block >= num_blocks()) {
    return absl::OutOfRangeError(
        absl::StrCat("BlockPool: block ", block, " outside [0, ", num_blocks(), ")"));
  }
  if (ref_counts_[block] == 0) {
    return absl::FailedPreconditionError(absl::StrCat("BlockPool: AddRef on free block ", block));
  }
  ++ref_counts_[block];
  return absl::OkStatus();
}

absl::Status BlockPool::Release(int32_t block) {
  if (block < 0 || block >= num_blocks()) {
    return absl::OutOfRangeError(
        absl::StrCat("BlockPool: block ", block, " outside [0, ", num_blocks(), ")"));
  }
  if (ref_counts_[block] == 0) {
    return absl::FailedPreconditionError(absl::StrCat("BlockPool: Release of free block ", block));
  }
  if (--ref_counts_[block] == 0) free_.push_back(block);
  return absl::OkStatus();
}

}  // namespace vg::engine
