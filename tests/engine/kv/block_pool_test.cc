#include "engine/kv/block_pool.h"

#include <algorithm>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace vg::engine {
namespace {

TEST(BlockPoolTest, RejectsNonPositiveSize) {
  EXPECT_EQ(BlockPool::Create(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BlockPool::Create(-3).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BlockPoolTest, AllocatesEveryBlockOnceLowestFirstThenExhausts) {
  auto pool = BlockPool::Create(5);
  ASSERT_TRUE(pool.ok());
  EXPECT_EQ(pool->num_blocks(), 5);
  EXPECT_EQ(pool->num_free(), 5);
  for (int32_t expected = 0; expected < 5; ++expected) {
    auto block = pool->Allocate();
    ASSERT_TRUE(block.ok());
    EXPECT_EQ(*block, expected);
    EXPECT_EQ(pool->ref_count(*block), 1);
  }
  EXPECT_EQ(pool->num_free(), 0);
  EXPECT_EQ(pool->Allocate().status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(pool->Release(3).ok());
  auto again = pool->Allocate();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 3);
}

TEST(BlockPoolTest, RefCountsAndErrors) {
  auto pool = BlockPool::Create(3);
  ASSERT_TRUE(pool.ok());
  EXPECT_EQ(pool->AddRef(1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(pool->Release(1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(pool->Release(3).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(pool->Release(-1).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(pool->AddRef(7).code(), absl::StatusCode::kOutOfRange);

  auto block = pool->Allocate();
  ASSERT_TRUE(block.ok());
  ASSERT_TRUE(pool->AddRef(*block).ok());
  EXPECT_EQ(pool->ref_count(*block), 2);
  ASSERT_TRUE(pool->Release(*block).ok());
  EXPECT_EQ(pool->num_free(), 2);  // still referenced once
  ASSERT_TRUE(pool->Release(*block).ok());
  EXPECT_EQ(pool->num_free(), 3);
  EXPECT_EQ(pool->Release(*block).code(), absl::StatusCode::kFailedPrecondition);
}

// Property: under random Allocate/AddRef/Release the pool's counts agree with a model, no id is
// handed out twice while held, and releasing every reference returns every block.
TEST(BlockPoolTest, RandomOperationsLeakNothing) {
  constexpr int32_t kBlocks = 17;
  std::mt19937 rng(1234);
  for (int round = 0; round < 20; ++round) {
    auto pool = BlockPool::Create(kBlocks);
    ASSERT_TRUE(pool.ok());
    std::vector<int32_t> model(kBlocks, 0);
    std::vector<int32_t> refs;  // one entry per held reference
    for (int step = 0; step < 2000; ++step) {
      const int op = static_cast<int>(rng() % 3);
      if (op == 0) {
        auto block = pool->Allocate();
        const bool any_free = std::count(model.begin(), model.end(), 0) > 0;
        ASSERT_EQ(block.ok(), any_free);
        if (!block.ok()) {
          EXPECT_EQ(block.status().code(), absl::StatusCode::kResourceExhausted);
          continue;
        }
        ASSERT_EQ(model[*block], 0) << "block handed out while held";
        model[*block] = 1;
        refs.push_back(*block);
      } else if (op == 1 && !refs.empty()) {
        const int32_t block = refs[rng() % refs.size()];
        ASSERT_TRUE(pool->AddRef(block).ok());
        ++model[block];
        refs.push_back(block);
      } else if (!refs.empty()) {
        const size_t i = rng() % refs.size();
        const int32_t block = refs[i];
        refs[i] = refs.back();
        refs.pop_back();
        ASSERT_TRUE(pool->Release(block).ok());
        --model[block];
      }
      int32_t free_count = 0;
      for (int32_t b = 0; b < kBlocks; ++b) {
        ASSERT_EQ(pool->ref_count(b), model[b]);
        free_count += model[b] == 0;
      }
      ASSERT_EQ(pool->num_free(), free_count);
    }
    for (int32_t block : refs) ASSERT_TRUE(pool->Release(block).ok());
    EXPECT_EQ(pool->num_free(), kBlocks);
    for (int32_t b = 0; b < kBlocks; ++b) EXPECT_EQ(pool->ref_count(b), 0);
  }
}

}  // namespace
}  // namespace vg::engine
