#include "engine/kv/kv_cache_manager.h"

#include <algorithm>
#include <cassert>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "engine/kv/block_lru_list.h"
#include "engine/kv/prefix_block_key.h"

namespace vg::engine {
namespace {

// Registration id 0 means "not registered"; it is also the parent id of a chain's first block.
constexpr uint64_t kUnregistered = 0;

class KvCacheManagerImpl final : public KvCacheManager {
 public:
  explicit KvCacheManagerImpl(const KvCacheManagerOptions& options);

  int32_t CachedPrefixLength(std::span<const int32_t> tokens, std::string_view salt) const override;
  absl::StatusOr<int32_t> BeginSequence(int64_t seq_id, std::span<const int32_t> tokens,
                                        std::string_view salt) override;
  int32_t BlocksNeeded(int64_t seq_id, int32_t num_tokens) const override;
  int32_t NumAllocatableBlocks() const override {
    return static_cast<int32_t>(free_heap_.size()) + lru_.size();
  }
  absl::Status EnsureCapacity(int64_t seq_id, int32_t num_tokens) override;
  void CacheComputedBlocks(int64_t seq_id, std::span<const int32_t> tokens,
                           int32_t num_computed) override;
  void EndSequence(int64_t seq_id) override;
  std::span<const int32_t> BlockTable(int64_t seq_id) const override;
  KvCacheStats Stats() const override;
  int32_t block_size() const override { return block_size_; }
  int32_t num_blocks() const override { return static_cast<int32_t>(blocks_.size()); }
  absl::Status CheckInvariants() const override;

 private:
  struct Block {
    int32_t ref_count = 0;
    uint64_t reg_id = kUnregistered;
    PrefixBlockKey key;  // meaningful only while registered
  };
  struct SequenceState {
    std::string salt;
    std::vector<int32_t> blocks;
    // chain_ids[i]: the registration id that names tokens [0, (i+1)*B) under `salt` (this
    // sequence's block i, or an identical block registered first by another sequence). Valid
    // while no registration has been dropped since `chain_epoch`.
    std::vector<uint64_t> chain_ids;
    uint64_t chain_epoch = 0;
  };

  // Walks the registered chain of `tokens` under `salt` for at most `max_blocks` full blocks;
  // appends the blocks found to `found` when not null and returns how many there are.
  int32_t WalkCachedPrefix(std::span<const int32_t> tokens, std::string_view salt,
                           int64_t max_blocks, std::vector<int32_t>* found) const;
  // Full blocks a prompt of `num_tokens` may reuse: the last token is always computed.
  int64_t MaxReusableBlocks(size_t num_tokens) const {
    return num_tokens == 0 ? 0 : static_cast<int64_t>((num_tokens - 1) / block_size_);
  }
  int64_t BlocksFor(int64_t num_tokens) const {
    return num_tokens <= 0 ? 0 : (num_tokens + block_size_ - 1) / block_size_;
  }

  int32_t TakeBlock();  // precondition: NumAllocatableBlocks() > 0
  void Acquire(int32_t block);
  void Release(int32_t block);
  void Register(int32_t block, const PrefixBlockKeyView& key);
  void Unregister(int32_t block);

  const int32_t block_size_;
  const bool prefix_caching_;
  std::vector<Block> blocks_;
  // Unreferenced, unregistered blocks; a min-heap so the lowest id is handed out first.
  std::vector<int32_t> free_heap_;
  // Unreferenced, registered blocks, least recently released first.
  BlockLruList lru_;
  PrefixBlockIndex index_;
  absl::flat_hash_map<int64_t, SequenceState> sequences_;
  uint64_t next_reg_id_ = 1;
  // Registrations dropped so far (evictions and re-keys): a change invalidates cached chain ids.
  uint64_t registrations_dropped_ = 0;
  int64_t evictions_ = 0;
};

KvCacheManagerImpl::KvCacheManagerImpl(const KvCacheManagerOptions& options)
    : block_size_(options.block_size),
      prefix_caching_(options.enable_prefix_caching),
      blocks_(options.num_blocks),
      lru_(options.num_blocks) {
  free_heap_.reserve(options.num_blocks);
  for (int32_t b = 0; b < options.num_blocks; ++b) free_heap_.push_back(b);  // sorted: a heap
}

int32_t KvCacheManagerImpl::WalkCachedPrefix(std::span<const int32_t> tokens, std::string_view salt,
                                             int64_t max_blocks,
                                             std::vector<int32_t>* found) const {
  uint64_t parent = kUnregistered;
  int32_t count = 0;
  for (; count < max_blocks; ++count) {
    const PrefixBlockKeyView key{
        parent, salt,
        tokens.subspan(static_cast<size_t>(count) * block_size_, static_cast<size_t>(block_size_))};
    const auto it = index_.find(key);
    if (it == index_.end()) break;
    if (found != nullptr) found->push_back(it->second);
    parent = blocks_[it->second].reg_id;
  }
  return count;
}

int32_t KvCacheManagerImpl::CachedPrefixLength(std::span<const int32_t> tokens,
                                               std::string_view salt) const {
  if (!prefix_caching_) return 0;
  return WalkCachedPrefix(tokens, salt, MaxReusableBlocks(tokens.size()), nullptr) * block_size_;
}

absl::StatusOr<int32_t> KvCacheManagerImpl::BeginSequence(int64_t seq_id,
                                                          std::span<const int32_t> tokens,
                                                          std::string_view salt) {
  if (sequences_.contains(seq_id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("KvCacheManager: sequence ", seq_id, " is already live"));
  }
  SequenceState state;
  state.salt = std::string(salt);
  if (prefix_caching_) {
    WalkCachedPrefix(tokens, salt, MaxReusableBlocks(tokens.size()), &state.blocks);
    for (const int32_t block : state.blocks) {
      Acquire(block);
      state.chain_ids.push_back(blocks_[block].reg_id);
    }
  }
  state.chain_epoch = registrations_dropped_;
  const auto covered = static_cast<int32_t>(state.blocks.size()) * block_size_;
  sequences_.emplace(seq_id, std::move(state));
  return covered;
}

int32_t KvCacheManagerImpl::BlocksNeeded(int64_t seq_id, int32_t num_tokens) const {
  // An unknown sequence has an empty table: this is what a new one would need after Begin.
  const auto it = sequences_.find(seq_id);
  const int64_t have = it == sequences_.end() ? 0 : static_cast<int64_t>(it->second.blocks.size());
  return static_cast<int32_t>(std::max<int64_t>(0, BlocksFor(num_tokens) - have));
}

absl::Status KvCacheManagerImpl::EnsureCapacity(int64_t seq_id, int32_t num_tokens) {
  const auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("KvCacheManager: no live sequence ", seq_id));
  }
  if (num_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCacheManager: negative token count ", num_tokens));
  }
  std::vector<int32_t>& table = it->second.blocks;
  const int64_t needed = BlocksFor(num_tokens) - static_cast<int64_t>(table.size());
  if (needed <= 0) return absl::OkStatus();
  if (needed > NumAllocatableBlocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("KvCacheManager: sequence ", seq_id, " needs ",
                                                     needed, " more KV blocks, only ",
                                                     NumAllocatableBlocks(), " allocatable"));
  }
  table.reserve(table.size() + needed);
  for (int64_t i = 0; i < needed; ++i) table.push_back(TakeBlock());
  return absl::OkStatus();
}

void KvCacheManagerImpl::CacheComputedBlocks(int64_t seq_id, std::span<const int32_t> tokens,
                                             int32_t num_computed) {
  if (!prefix_caching_) return;
  const auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) return;
  SequenceState& seq = it->second;
  const int64_t computed =
      std::min<int64_t>({num_computed, static_cast<int64_t>(tokens.size()),
                         static_cast<int64_t>(seq.blocks.size()) * block_size_});
  const int64_t full_blocks = computed <= 0 ? 0 : computed / block_size_;

  // Usually only the newly filled blocks are visited. If any registration died since this
  // sequence's chain ids were computed, one of them may be dead: walk again from the start.
  if (seq.chain_epoch != registrations_dropped_) seq.chain_ids.clear();
  for (auto i = static_cast<int64_t>(seq.chain_ids.size()); i < full_blocks; ++i) {
    const uint64_t parent = i == 0 ? kUnregistered : seq.chain_ids[i - 1];
    const PrefixBlockKeyView key{
        parent, seq.salt,
        tokens.subspan(static_cast<size_t>(i) * block_size_, static_cast<size_t>(block_size_))};
    const int32_t block = seq.blocks[i];
    Block& meta = blocks_[block];
    if (meta.reg_id != kUnregistered) {
      const PrefixBlockKeyView own = meta.key.view();
      if (own == key) {
        seq.chain_ids.push_back(meta.reg_id);
        continue;
      }
      // Same content under a dead parent is a stale registration that can be renamed below;
      // different content means the caller's tokens disagree with the block: register no more.
      if (own.salt != key.salt || !std::ranges::equal(own.tokens, key.tokens)) break;
    }
    if (const auto existing = index_.find(key); existing != index_.end()) {
      // Another block holds this prefix already (computed concurrently): keep that one and leave
      // ours unregistered; it returns to the free list when released.
      seq.chain_ids.push_back(blocks_[existing->second].reg_id);
      continue;
    }
    // The stale registration is unreachable (the live name of this prefix is `key`), so renaming
    // it breaks no live chain.
    if (meta.reg_id != kUnregistered) Unregister(block);
    Register(block, key);
    seq.chain_ids.push_back(meta.reg_id);
  }
  seq.chain_epoch = registrations_dropped_;
}

void KvCacheManagerImpl::EndSequence(int64_t seq_id) {
  const auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) return;
  // Tail first, so a prefix's later blocks are evicted before its first ones (as vLLM does): the
  // first blocks are the ones most other prompts can share.
  const std::vector<int32_t>& table = it->second.blocks;
  for (auto block = table.rbegin(); block != table.rend(); ++block) Release(*block);
  sequences_.erase(it);
}

std::span<const int32_t> KvCacheManagerImpl::BlockTable(int64_t seq_id) const {
  const auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) return {};
  return it->second.blocks;
}

KvCacheStats KvCacheManagerImpl::Stats() const {
  KvCacheStats stats;
  stats.total = num_blocks();
  stats.free = static_cast<int32_t>(free_heap_.size());
  stats.cached = lru_.size();
  stats.used = stats.total - stats.free - stats.cached;
  stats.evictions = evictions_;
  return stats;
}

int32_t KvCacheManagerImpl::TakeBlock() {
  int32_t block;
  if (!free_heap_.empty()) {
    std::pop_heap(free_heap_.begin(), free_heap_.end(), std::greater<>());
    block = free_heap_.back();
    free_heap_.pop_back();
  } else {
    assert(!lru_.empty());
    block = lru_.PopFront();
    Unregister(block);
    ++evictions_;
  }
  blocks_[block].ref_count = 1;
  return block;
}

void KvCacheManagerImpl::Acquire(int32_t block) {
  // Only registered blocks are shared, so an unreferenced one is in the LRU, not the free list.
  if (blocks_[block].ref_count == 0) lru_.Remove(block);
  ++blocks_[block].ref_count;
}

void KvCacheManagerImpl::Release(int32_t block) {
  Block& meta = blocks_[block];
  assert(meta.ref_count > 0);
  if (--meta.ref_count > 0) return;
  if (meta.reg_id != kUnregistered) {
    lru_.PushBack(block);
  } else {
    free_heap_.push_back(block);
    std::push_heap(free_heap_.begin(), free_heap_.end(), std::greater<>());
  }
}

void KvCacheManagerImpl::Register(int32_t block, const PrefixBlockKeyView& key) {
  Block& meta = blocks_[block];
  meta.reg_id = next_reg_id_++;
  meta.key = PrefixBlockKey(key);
  index_.emplace(meta.key, block);
}

void KvCacheManagerImpl::Unregister(int32_t block) {
  // The registration id dies with the entry; children registered under it stay in the index but
  // can never be reached again, and age out of the LRU like any cached block.
  Block& meta = blocks_[block];
  index_.erase(meta.key);
  meta.reg_id = kUnregistered;
  meta.key = PrefixBlockKey();
  ++registrations_dropped_;
}

absl::Status KvCacheManagerImpl::CheckInvariants() const {
  const int32_t n = num_blocks();
  std::vector<int32_t> refs(n, 0);
  for (const auto& [seq_id, seq] : sequences_) {
    if (seq.chain_ids.size() > seq.blocks.size()) {
      return absl::InternalError(
          absl::StrCat("sequence ", seq_id, " has more chain ids than blocks"));
    }
    for (const int32_t block : seq.blocks) {
      if (block < 0 || block >= n) {
        return absl::InternalError(absl::StrCat("sequence ", seq_id, " holds bad block ", block));
      }
      ++refs[block];
    }
  }
  if (absl::Status links = lru_.CheckLinks(); !links.ok()) return links;
  if (!std::is_heap(free_heap_.begin(), free_heap_.end(), std::greater<>())) {
    return absl::InternalError("free list is not a min-heap");
  }
  std::vector<bool> in_free(n, false);
  for (const int32_t block : free_heap_) {
    if (block < 0 || block >= n || in_free[block]) {
      return absl::InternalError(absl::StrCat("free list holds bad or repeated block ", block));
    }
    in_free[block] = true;
  }
  int32_t used = 0, cached = 0, free = 0, registered = 0;
  absl::flat_hash_set<uint64_t> reg_ids;
  for (int32_t b = 0; b < n; ++b) {
    const Block& meta = blocks_[b];
    if (meta.ref_count != refs[b]) {
      return absl::InternalError(absl::StrCat("block ", b, " has ref count ", meta.ref_count,
                                              " but ", refs[b], " table entries"));
    }
    const bool is_registered = meta.reg_id != kUnregistered;
    if (meta.ref_count > 0) {
      if (in_free[b] || lru_.Contains(b)) {
        return absl::InternalError(absl::StrCat("referenced block ", b, " is free or cached"));
      }
      ++used;
    } else if (in_free[b] == lru_.Contains(b)) {
      return absl::InternalError(
          absl::StrCat("unreferenced block ", b, " must be in exactly one of free list and LRU"));
    } else if (lru_.Contains(b) != is_registered) {
      return absl::InternalError(absl::StrCat("block ", b, ": LRU membership ", lru_.Contains(b),
                                              " but registered ", is_registered));
    } else {
      ++(in_free[b] ? free : cached);
    }
    if (!is_registered) continue;
    ++registered;
    if (!prefix_caching_) return absl::InternalError("registered block with caching off");
    if (meta.reg_id >= next_reg_id_ || !reg_ids.insert(meta.reg_id).second) {
      return absl::InternalError(absl::StrCat("block ", b, " has bad registration ", meta.reg_id));
    }
    if (static_cast<int32_t>(meta.key.tokens.size()) != block_size_) {
      return absl::InternalError(absl::StrCat("block ", b, " key is not a full block"));
    }
    const auto it = index_.find(meta.key);
    if (it == index_.end() || it->second != b) {
      return absl::InternalError(absl::StrCat("registered block ", b, " is not indexed to itself"));
    }
  }
  if (registered != static_cast<int32_t>(index_.size())) {
    return absl::InternalError(
        absl::StrCat(index_.size(), " index entries but ", registered, " registered blocks"));
  }
  for (const auto& [key, block] : index_) {
    if (block < 0 || block >= n || blocks_[block].reg_id == kUnregistered ||
        !(blocks_[block].key == key)) {
      return absl::InternalError(
          absl::StrCat("index entry points at block ", block, " whose key differs"));
    }
  }
  const KvCacheStats stats = Stats();
  if (used != stats.used || cached != stats.cached || free != stats.free ||
      used + cached + free != n) {
    return absl::InternalError(absl::StrCat("counted used/cached/free ", used, "/", cached, "/",
                                            free, ", stats say ", stats.used, "/", stats.cached,
                                            "/", stats.free, " of ", n));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvCacheManager>> KvCacheManager::Create(
    const KvCacheManagerOptions& options) {
  if (options.num_blocks <= 0 || options.block_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCacheManager: num_blocks and block_size must be positive, got num_blocks=",
                     options.num_blocks, " block_size=", options.block_size));
  }
  return std::make_unique<KvCacheManagerImpl>(options);
}

}  // namespace vg::engine
