#include "engine/backend/cpu/thread_pool.h"

#include <atomic>
#include <vector>

#include "gtest/gtest.h"

namespace vg::engine::cpu {
namespace {

TEST(CpuBackendThreadPoolTest, CoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (int64_t n : {0, 1, 2, 3, 5, 7, 8, 100, 1001}) {
      std::vector<std::atomic<int>> hits(n);
      std::atomic<int> calls{0};
      pool.ParallelFor(n, [&](int64_t begin, int64_t end) {
        EXPECT_LT(begin, end);
        calls.fetch_add(1);
        for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << threads << " " << n;
      EXPECT_LE(calls.load(), std::min<int64_t>(n, threads));
    }
  }
}

TEST(CpuBackendThreadPoolTest, ManySmallLoopsInARow) {
  ThreadPool pool(4);
  int64_t total = 0;
  std::vector<int64_t> partial(4);
  for (int iter = 0; iter < 2000; ++iter) {
    std::atomic<int64_t> sum{0};
    pool.ParallelFor(iter % 9, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) sum.fetch_add(i + 1);
    });
    const int64_t n = iter % 9;
    ASSERT_EQ(sum.load(), n * (n + 1) / 2);
    total += sum.load();
  }
  EXPECT_GT(total, 0);
}

TEST(CpuBackendThreadPoolTest, DefaultSizeIsPositive) {
  ThreadPool pool(0);
  EXPECT_GE(pool.num_threads(), 1);
}

}  // namespace
}  // namespace vg::engine::cpu
