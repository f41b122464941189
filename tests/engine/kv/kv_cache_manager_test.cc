#include "engine/kv/kv_cache_manager.h"

#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vg::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr int32_t kBlock = 4;

std::unique_ptr<KvCacheManager> MakeManager(int32_t num_blocks, bool prefix_caching = true) {
  auto manager = KvCacheManager::Create(
      {.num_blocks = num_blocks, .block_size = kBlock, .enable_prefix_caching = prefix_caching});
  EXPECT_TRUE(manager.ok()) << manager.status();
  return *std::move(manager);
}

// `count` consecutive token ids starting at `first`.
std::vector<int32_t> Tokens(int32_t first, int32_t count) {
  std::vector<int32_t> tokens(count);
  std::iota(tokens.begin(), tokens.end(), first);
  return tokens;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<int32_t> Table(const KvCacheManager& manager, int64_t seq_id) {
  const std::span<const int32_t> table = manager.BlockTable(seq_id);
  return {table.begin(), table.end()};
}

// Begins `seq_id`, allocates for all of `tokens`, computes and registers them.
void RunPrompt(KvCacheManager& manager, int64_t seq_id, const std::vector<int32_t>& tokens,
               std::string_view salt = "") {
  ASSERT_TRUE(manager.BeginSequence(seq_id, tokens, salt).ok());
  ASSERT_TRUE(manager.EnsureCapacity(seq_id, static_cast<int32_t>(tokens.size())).ok());
  manager.CacheComputedBlocks(seq_id, tokens, static_cast<int32_t>(tokens.size()));
  ASSERT_TRUE(manager.CheckInvariants().ok()) << manager.CheckInvariants();
}

TEST(KvCacheManagerTest, CreateRejectsNonPositiveSizes) {
  EXPECT_EQ(KvCacheManager::Create({.num_blocks = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCacheManager::Create({.num_blocks = 4, .block_size = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCacheManager::Create({.num_blocks = -1, .block_size = 16}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KvCacheManagerTest, FreshPoolIsAllFree) {
  auto manager = MakeManager(5);
  EXPECT_EQ(manager->num_blocks(), 5);
  EXPECT_EQ(manager->block_size(), kBlock);
  const KvCacheStats stats = manager->Stats();
  EXPECT_EQ(stats.total, 5);
  EXPECT_EQ(stats.free, 5);
  EXPECT_EQ(stats.used, 0);
  EXPECT_EQ(stats.cached, 0);
  EXPECT_EQ(stats.evictions, 0);
  EXPECT_EQ(manager->NumAllocatableBlocks(), 5);
  EXPECT_TRUE(manager->CheckInvariants().ok());
}

TEST(KvCacheManagerTest, MisuseReturnsStatusesAndIsIgnoredWhereDocumented) {
  auto manager = MakeManager(4);
  EXPECT_EQ(manager->EnsureCapacity(7, 4).code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Table(*manager, 7), IsEmpty());
  manager->EndSequence(7);                           // ignored
  manager->CacheComputedBlocks(7, Tokens(0, 8), 8);  // ignored
  ASSERT_TRUE(manager->BeginSequence(7, Tokens(0, 3), "").ok());
  EXPECT_EQ(manager->BeginSequence(7, Tokens(0, 3), "").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(manager->EnsureCapacity(7, -1).code(), absl::StatusCode::kInvalidArgument);
  // More computed tokens than tokens or than the table holds: clamped, nothing registered.
  manager->CacheComputedBlocks(7, Tokens(0, 3), 100);
  ASSERT_TRUE(manager->EnsureCapacity(7, 3).ok());
  manager->CacheComputedBlocks(7, Tokens(0, 3), 100);
  EXPECT_TRUE(manager->CheckInvariants().ok());
  manager->EndSequence(7);
  EXPECT_EQ(manager->Stats().free, 4);
}

TEST(KvCacheManagerTest, EnsureCapacityAllocatesLowestIdsAndCountsBlocks) {
  auto manager = MakeManager(8);
  ASSERT_TRUE(manager->BeginSequence(1, Tokens(0, 6), "").ok());
  EXPECT_EQ(manager->BlocksNeeded(1, 0), 0);
  EXPECT_EQ(manager->BlocksNeeded(1, 1), 1);
  EXPECT_EQ(manager->BlocksNeeded(1, 4), 1);
  EXPECT_EQ(manager->BlocksNeeded(1, 5), 2);
  EXPECT_EQ(manager->BlocksNeeded(99, 9), 3);  // unknown: what a new sequence would need
  ASSERT_TRUE(manager->EnsureCapacity(1, 6).ok());
  EXPECT_THAT(Table(*manager, 1), ElementsAre(0, 1));
  EXPECT_EQ(manager->BlocksNeeded(1, 8), 0);
  EXPECT_EQ(manager->BlocksNeeded(1, 9), 1);
  ASSERT_TRUE(manager->EnsureCapacity(1, 3).ok());  // already covered: no-op
  ASSERT_TRUE(manager->EnsureCapacity(1, 9).ok());
  EXPECT_THAT(Table(*manager, 1), ElementsAre(0, 1, 2));
  EXPECT_EQ(manager->Stats().used, 3);
  EXPECT_EQ(manager->Stats().free, 5);
  EXPECT_EQ(manager->NumAllocatableBlocks(), 5);
  EXPECT_TRUE(manager->CheckInvariants().ok());
  manager->EndSequence(1);
  EXPECT_EQ(manager->Stats().free, 8);
  EXPECT_THAT(Table(*manager, 1), IsEmpty());
}

TEST(KvCacheManagerTest, EnsureCapacityIsAllOrNothing) {
  auto manager = MakeManager(4);
  ASSERT_TRUE(manager->BeginSequence(1, Tokens(0, 12), "").ok());
  ASSERT_TRUE(manager->EnsureCapacity(1, 12).ok());
  ASSERT_TRUE(manager->BeginSequence(2, Tokens(100, 5), "").ok());
  ASSERT_TRUE(manager->EnsureCapacity(2, 1).ok());
  const KvCacheStats before = manager->Stats();
  const absl::Status status = manager->EnsureCapacity(2, 9);  // needs 2 more, 0 allocatable
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(Table(*manager, 2), ElementsAre(3));
  EXPECT_EQ(manager->Stats().used, before.used);
  EXPECT_EQ(manager->Stats().free, before.free);
  manager->EndSequence(1);
  ASSERT_TRUE(manager->EnsureCapacity(2, 9).ok());
  EXPECT_THAT(Table(*manager, 2), ElementsAre(3, 0, 1));
  EXPECT_TRUE(manager->CheckInvariants().ok());
}

TEST(KvCacheManagerTest, PrefixHitAcrossSequencesWithSameSalt) {
  auto manager = MakeManager(10);
  const std::vector<int32_t> prompt = Tokens(0, 10);
  RunPrompt(*manager, 1, prompt, "tenant");
  EXPECT_THAT(Table(*manager, 1), ElementsAre(0, 1, 2));
  // Only the two full blocks are registered.
  EXPECT_EQ(manager->CachedPrefixLength(prompt, "tenant"), 8);
  EXPECT_EQ(manager->CachedPrefixLength(Concat(Tokens(0, 8), Tokens(50, 5)), "tenant"), 8);
  EXPECT_EQ(manager->CachedPrefixLength(Concat(Tokens(0, 6), Tokens(50, 5)), "tenant"), 4);
  EXPECT_EQ(manager->CachedPrefixLength(Concat(Tokens(1, 8), Tokens(50, 5)), "tenant"), 0);

  auto hit = manager->BeginSequence(2, Concat(Tokens(0, 8), Tokens(50, 5)), "tenant");
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(*hit, 8);
  EXPECT_THAT(Table(*manager, 2), ElementsAre(0, 1));
  ASSERT_TRUE(manager->EnsureCapacity(2, 13).ok());
  EXPECT_THAT(Table(*manager, 2), ElementsAre(0, 1, 3, 4));
  EXPECT_EQ(manager->Stats().used, 5);
  EXPECT_TRUE(manager->CheckInvariants().ok());

  manager->EndSequence(1);
  EXPECT_EQ(manager->Stats().used, 4);  // blocks 0 and 1 are still held by sequence 2
  EXPECT_EQ(manager->Stats().free, 6);  // block 2 held a partial block: back to free
  manager->EndSequence(2);
  EXPECT_EQ(manager->Stats().cached, 2);
  EXPECT_EQ(manager->Stats().used, 0);
  EXPECT_TRUE(manager->CheckInvariants().ok());
}

TEST(KvCacheManagerTest, DifferentSaltNeverShares) {
  auto manager = MakeManager(10);
  const std::vector<int32_t> prompt = Tokens(0, 9);
  RunPrompt(*manager, 1, prompt, "alice");
  EXPECT_EQ(manager->CachedPrefixLength(prompt, "alice"), 8);
  EXPECT_EQ(manager->CachedPrefixLength(prompt, "bob"), 0);
  EXPECT_EQ(manager->CachedPrefixLength(prompt, ""), 0);
  auto hit = manager->BeginSequence(2, prompt, "bob");
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(*hit, 0);
  ASSERT_TRUE(manager->EnsureCapacity(2, 9).ok());
  manager->CacheComputedBlocks(2, prompt, 9);
  EXPECT_THAT(Table(*manager, 2), ElementsAre(3, 4, 5));
  // Both chains are registered, each under its own salt.
  manager->EndSequence(1);
  manager->EndSequence(2);
  EXPECT_EQ(manager->Stats().cached, 4);
  auto alice = manager->BeginSequence(3, prompt, "alice");
  auto bob = manager->BeginSequence(4, prompt, "bob");
  ASSERT_TRUE(alice.ok() && bob.ok());
  EXPECT_EQ(*alice, 8);
  EXPECT_EQ(*bob, 8);
  EXPECT_THAT(Table(*manager, 3), ElementsAre(0, 1));
  EXPECT_THAT(Table(*manager, 4), ElementsAre(3, 4));
  EXPECT_TRUE(manager->CheckInvariants().ok());
}

TEST(KvCacheManagerTest, FullyCachedPromptBacksOffOneBlock) {
  auto manager = MakeManager(6);
  const std::vector<int32_t> prompt = Tokens(0, 8);
  RunPrompt(*manager, 1, prompt);
  EXPECT_EQ(manager->CachedPrefixLength(prompt, ""), 4);
  EXPECT_EQ(manager->CachedPrefixLength(Tokens(0, 9), ""), 8);
  EXPECT_EQ(manager->CachedPrefixLength(Tokens(0, 4), ""), 0);
  EXPECT_EQ(manager->CachedPrefixLength(Tokens(0, 0), ""), 0);
  auto hit = manager->BeginSequence(2, prompt, "");
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(*hit, 4);
  EXPECT_THAT(Table(*manager, 2), ElementsAre(0));
  auto empty = manager->BeginSequence(3, {}, "");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, 0);
}

TEST(KvCacheManagerTest, CachedBlocksAreReclaimedFromTheLru) {
  auto manager = MakeManager(4);
  RunPrompt(*manager, 1, Tokens(0, 9));
  manager->EndSequence(1);
  EXPECT_EQ(manager->Stats().cached, 2);
  EXPECT_EQ(manager->Stats().free, 2);
  EXPECT_EQ(manager->NumAllocatableBlocks(), 4);
  auto hit = manager->BeginSequence(2, Tokens(0, 9), "");
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(*hit, 8);
  EXPECT_EQ(manager->Stats().cached, 0);
  EXPECT_EQ(manager->Stats().used, 2);
  EXPECT_EQ(manager->NumAllocatableBlocks(), 2);
  EXPECT_TRUE(manager->CheckInvariants().ok());
  // Two holders, then one: the block stays used until the last reference goes.
  auto again = manager->BeginSequence(3, Tokens(0, 5), "");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 4);
  manager->EndSequence(2);
  EXPECT_EQ(manager->Stats().used, 1);
  EXPECT_EQ(manager->Stats().cached, 1);
  manager->EndSequence(3);
  EXPECT_EQ(manager->Stats().cached, 2);
  EXPECT_TRUE(manager->CheckInvariants().ok());
}

TEST(KvCacheManagerTest, EvictsInLruOrderTailBlocksFirst) {
  auto manager = MakeManager(4);
  const std::vector<int32_t> x = Tokens(0, 8);
  const std::vector<int32_t> y = Tokens(100, 8);
  RunPrompt(*manager, 1, x);  // blocks 0, 1
  RunPrompt(*manager, 2, y);  // blocks 2, 3
  manager->EndSequence(1);    // LRU: 1 0
  manager->EndSequence(2);    // LRU: 1 0 3 2
  EXPECT_EQ(manager->Stats().cached, 4);
  ASSERT_TRUE(manager->BeginSequence(3, Tokens(200, 12), "").ok());

  ASSERT_TRUE(manager->EnsureCapacity(3, 4).ok());
  EXPECT_THAT(Table(*manager, 3), ElementsAre(1));
  EXPECT_EQ(manager->Stats().evictions, 1);
  EXPECT_EQ(manager->CachedPrefixLength(Concat(x, {7}), ""), 4);  // x's tail went first
  EXPECT_EQ(manager->CachedPrefixLength(Concat(y, {7}), ""), 8);

  ASSERT_TRUE(manager->EnsureCapacity(3, 8).ok());
  EXPECT_THAT(Table(*manager, 3), ElementsAre(1, 0));
  EXPECT_EQ(manager->CachedPrefixLength(Concat(x, {7}), ""), 0);
  EXPECT_EQ(manager->CachedPrefixLength(Concat(y, {7}), ""), 8);

  ASSERT_TRUE(manager->EnsureCapacity(3, 12).ok());
  EXPECT_THAT(Table(*manager, 3), ElementsAre(1, 0, 3));
  EXPECT_EQ(manager->CachedPrefixLength(Concat(y, {7}), ""), 4);
  EXPECT_EQ(manager->Stats().evictions, 3);
  EXPECT_EQ(manager->Stats().cached, 1);
  EXPECT_TRUE(manager->CheckInvariants().ok());
}

TEST(KvCacheManagerTest, ReclaimedBlockReturnsToTheLruEnd) {
  auto manager = MakeManager(3);
  RunPrompt(*manager, 1, Tokens(0, 4));   // block 0 (a full block, but the only one: registered)
  RunPrompt(*manager, 2, Tokens(50, 4));  // block 1
  manager->EndSequence(1);                // LRU: 0
  manager->EndSequence(2);                // LRU: 0 1
  ASSERT_TRUE(manager->BeginSequence(3, Tokens(0, 5), "").ok());  // takes block 0 back
  manager->EndSequence(3);                                        // LRU: 1 0
  ASSERT_TRUE(manager->BeginSequence(4, Tokens(300, 8), "").ok());
  ASSERT_TRUE(manager->EnsureCapacity(4, 8).ok());  // free block 2, then evicts block 1
  EXPECT_THAT(Table(*manager, 4), ElementsAre(2, 1));
  EXPECT_EQ(manager->CachedPrefixLength(Tokens(0, 5), ""), 4);
  EXPECT_EQ(manager->CachedPrefixLength(Tokens(50, 5), ""), 0);
}

TEST(KvCacheManagerTest, ConcurrentDuplicateStaysUnregisteredAndIsFreedOnEnd) {
  auto manager = MakeManager(8);
  const std::vector<int32_t> prompt = Tokens(0, 6);
  ASSERT_TRUE(manager->BeginSequence(1, prompt, "").ok());
  ASSERT_TRUE(manager->BeginSequence(2, prompt, "").ok());
  ASSERT_TRUE(manager->EnsureCapacity(1, 6).ok());  // 0, 1
  ASSERT_TRUE(manager->EnsureCapacity(2, 6).ok());  // 2, 3
  manager->CacheComputedBlocks(1, prompt, 6);
  manager->CacheComputedBlocks(2, prompt, 6);  // block 2 duplicates block 0
  EXPECT_TRUE(manager->CheckInvariants().ok());
  manager->EndSequence(2);
  EXPECT_EQ(manager->Stats().cached, 0);
  EXPECT_EQ(manager->Stats().free, 6);
  auto hit = manager->BeginSequence(3, prompt, "");
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(*hit, 4);
  EXPECT_THAT(Table(*manager, 3), ElementsAre(0));
}

// Sequence 2 computes a prompt concurrently with sequence 1: its first block duplicates
// sequence 1's and stays unregistered, its second block registers under sequence 1's first block.
// Evicting that parent makes the child unreachable; sequence 2's next CacheComputedBlocks
// re-registers its own blocks so the prefix becomes reusable again.
TEST(KvCacheManagerTest, EvictedParentOrphansChildUntilTheHolderReRegisters) {
  auto manager = MakeManager(4);
  const std::vector<int32_t> first = Tokens(0, 4);
  const std::vector<int32_t> prompt = Concat(first, Tokens(40, 5));  // 9 tokens, 2 full blocks
  ASSERT_TRUE(manager->BeginSequence(1, first, "").ok());
  ASSERT_TRUE(manager->BeginSequence(2, prompt, "").ok());
  ASSERT_TRUE(manager->EnsureCapacity(1, 4).ok());  // block 0
  ASSERT_TRUE(manager->EnsureCapacity(2, 9).ok());  // blocks 1, 2, 3
  manager->CacheComputedBlocks(1, first, 4);
  manager->CacheComputedBlocks(2, prompt, 9);  // block 1 duplicate; block 2 child of block 0
  EXPECT_EQ(manager->CachedPrefixLength(prompt, ""), 8);
  manager->EndSequence(1);  // block 0 -> LRU, the only allocatable block
  EXPECT_EQ(manager->CachedPrefixLength(prompt, ""), 8);

  ASSERT_TRUE(manager->BeginSequence(3, Tokens(90, 3), "").ok());
  ASSERT_TRUE(manager->EnsureCapacity(3, 3).ok());  // evicts block 0
  EXPECT_EQ(manager->Stats().evictions, 1);
  EXPECT_EQ(manager->CachedPrefixLength(prompt, ""), 0);  // block 2 is orphaned
  EXPECT_TRUE(manager->CheckInvariants().ok());

  manager->CacheComputedBlocks(2, prompt, 9);
  EXPECT_EQ(manager->CachedPrefixLength(prompt, ""), 8);
  auto hit = manager->BeginSequence(4, prompt, "");
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(*hit, 8);
  EXPECT_THAT(Table(*manager, 4), ElementsAre(1, 2));
  EXPECT_TRUE(manager->CheckInvariants().ok());
}

TEST(KvCacheManagerTest, CacheComputedBlocksRegistersOnlyFullComputedBlocksIdempotently) {
  auto manager = MakeManager(6);
  const std::vector<int32_t> tokens = Tokens(0, 13);
  ASSERT_TRUE(manager->BeginSequence(1, tokens, "").ok());
  ASSERT_TRUE(manager->EnsureCapacity(1, 13).ok());
  manager->CacheComputedBlocks(1, tokens, 7);
  EXPECT_EQ(manager->CachedPrefixLength(tokens, ""), 4);
  manager->CacheComputedBlocks(1, tokens, 7);
  manager->CacheComputedBlocks(1, tokens, 3);
  EXPECT_EQ(manager->CachedPrefixLength(tokens, ""), 4);
  manager->CacheComputedBlocks(1, tokens, 12);
  EXPECT_EQ(manager->CachedPrefixLength(tokens, ""), 12);
  EXPECT_TRUE(manager->CheckInvariants().ok());
  manager->EndSequence(1);
  EXPECT_EQ(manager->Stats().cached, 3);
  EXPECT_EQ(manager->Stats().free, 3);
}

TEST(KvCacheManagerTest, TokensDisagreeingWithSharedBlocksRegisterNothingMore) {
  auto manager = MakeManager(6);
  RunPrompt(*manager, 1, Tokens(0, 9));
  ASSERT_TRUE(manager->BeginSequence(2, Tokens(0, 9), "").ok());  // shares blocks 0, 1
  ASSERT_TRUE(manager->EnsureCapacity(2, 12).ok());
  manager->CacheComputedBlocks(2, Tokens(500, 12), 12);  // caller bug: other tokens
  EXPECT_TRUE(manager->CheckInvariants().ok());
  EXPECT_EQ(manager->CachedPrefixLength(Tokens(0, 9), ""), 8);
  EXPECT_EQ(manager->CachedPrefixLength(Tokens(500, 13), ""), 0);
}

TEST(KvCacheManagerTest, DisabledPrefixCachingNeverCachesOrShares) {
  auto manager = MakeManager(6, /*prefix_caching=*/false);
  const std::vector<int32_t> prompt = Tokens(0, 9);
  RunPrompt(*manager, 1, prompt);
  EXPECT_EQ(manager->CachedPrefixLength(prompt, ""), 0);
  auto hit = manager->BeginSequence(2, prompt, "");
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(*hit, 0);
  EXPECT_THAT(Table(*manager, 2), IsEmpty());
  manager->EndSequence(1);
  manager->EndSequence(2);
  EXPECT_EQ(manager->Stats().cached, 0);
  EXPECT_EQ(manager->Stats().free, 6);
  EXPECT_TRUE(manager->CheckInvariants().ok());
}

}  // namespace
}  // namespace vg::engine
