#include "engine/kv/block_lru_list.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vg::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(BlockLruListTest, PushPopInOrderAndRemoveFromMiddle) {
  BlockLruList lru(6);
  EXPECT_TRUE(lru.empty());
  for (int32_t b : {4, 1, 5, 0}) lru.PushBack(b);
  EXPECT_EQ(lru.size(), 4);
  EXPECT_THAT(lru.ToVector(), ElementsAre(4, 1, 5, 0));
  EXPECT_TRUE(lru.Contains(5));
  EXPECT_FALSE(lru.Contains(2));
  lru.Remove(5);
  EXPECT_FALSE(lru.Contains(5));
  EXPECT_THAT(lru.ToVector(), ElementsAre(4, 1, 0));
  EXPECT_TRUE(lru.CheckLinks().ok());
  EXPECT_EQ(lru.PopFront(), 4);
  lru.PushBack(4);
  EXPECT_THAT(lru.ToVector(), ElementsAre(1, 0, 4));
  lru.Remove(4);  // the tail
  lru.Remove(1);  // the head
  EXPECT_THAT(lru.ToVector(), ElementsAre(0));
  EXPECT_EQ(lru.PopFront(), 0);
  EXPECT_TRUE(lru.empty());
  EXPECT_THAT(lru.ToVector(), IsEmpty());
  EXPECT_TRUE(lru.CheckLinks().ok());
}

}  // namespace
}  // namespace vg::engine
