// vaultgemma-bench statistics against values computed by hand and by a naive reference.
#include <algorithm>
#include <cmath>

#include "client/bench/stats.h"
#include "gtest/gtest.h"

namespace vg::client {
namespace {

// Reference percentile, written independently: position p*(n-1) in the sorted list, blended
// between its two neighbours by the fractional part.
double NaivePercentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double position = q * (static_cast<double>(v.size()) - 1);
  const double below = std::floor(position);
  const double above = std::ceil(position);
  const double weight = position - below;
  return v[static_cast<size_t>(below)] * (1 - weight) + v[static_cast<size_t>(above)] * weight;
}

TEST(BenchStatsTest, PercentilesMatchHandComputedValues) {
  // Sorted 1..5: rank q*4. p50 -> 3; p90 -> rank 3.6 -> 4.6; p95 -> 4.8; p99 -> 4.96.
  const LatencySummary s = Summarize({5, 1, 4, 2, 3});
  EXPECT_EQ(s.count, 5u);
  EXPECT_DOUBLE_EQ(s.mean, 3.0);
  EXPECT_DOUBLE_EQ(s.min, 1.0);
  EXPECT_DOUBLE_EQ(s.max, 5.0);
  EXPECT_DOUBLE_EQ(s.p50, 3.0);
  EXPECT_DOUBLE_EQ(s.p90, 4.6);
  EXPECT_DOUBLE_EQ(s.p95, 4.8);
  EXPECT_DOUBLE_EQ(s.p99, 4.96);
  // Two values: every percentile interpolates between them.
  const LatencySummary two = Summarize({10, 20});
  EXPECT_DOUBLE_EQ(two.p50, 15.0);
  EXPECT_DOUBLE_EQ(two.p90, 19.0);
  // One value: all the same.
  const LatencySummary one = Summarize({0.25});
  EXPECT_DOUBLE_EQ(one.p99, 0.25);
  EXPECT_DOUBLE_EQ(one.min, 0.25);
  EXPECT_EQ(Summarize({}).count, 0u);
}

TEST(BenchStatsTest, PercentileAgreesWithNaiveReferenceOnAwkwardInputs) {
  std::vector<double> values;
  uint64_t x = 12345;
  for (int n = 1; n <= 40; ++n) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    values.push_back(static_cast<double>(x >> 40) / 1e3 - 5000);  // some negative, some repeated
    if (n % 7 == 0) values.push_back(values.back());
    std::vector<double> sorted = values;
    std::sort(sorted.begin(), sorted.end());
    for (double q : {0.0, 0.1, 0.5, 0.9, 0.95, 0.99, 1.0}) {
      EXPECT_NEAR(Percentile(sorted, q), NaivePercentile(values, q), 1e-9)
          << "n=" << values.size() << " q=" << q;
    }
  }
}

RequestRecord Completed(double ttft, std::vector<double> gaps, double e2e, uint32_t prompt,
                        uint32_t output) {
  RequestRecord r;
  r.ttft_s = ttft;
  r.itl_s = std::move(gaps);
  r.e2e_s = e2e;
  r.prompt_tokens = prompt;
  r.output_tokens = output;
  return r;
}

TEST(BenchStatsTest, StageAggregatesCountOnlyCompletedRequests) {
  std::vector<RequestRecord> records;
  records.push_back(Completed(0.1, {0.01, 0.03}, 0.14, 10, 3));  // TPOT (0.14-0.1)/2 = 0.02
  records.push_back(Completed(0.3, {0.05}, 0.35, 20, 2));        // TPOT 0.05
  records.push_back(Completed(0.2, {}, 0.2, 30, 1));             // no TPOT
  records.back().cached_prompt_tokens = 16;
  RequestRecord refused;
  refused.status = "RESOURCE_EXHAUSTED";
  refused.e2e_s = 0.001;
  records.push_back(refused);
  records.push_back(refused);
  RequestRecord unavailable;
  unavailable.status = "UNAVAILABLE";
  records.push_back(unavailable);
  RequestRecord cut = Completed(0.1, {0.01}, 5, 100, 50);
  cut.status = "CANCELLED";
  cut.cancelled_at_end = true;
  records.push_back(cut);

  const StageStats st = ComputeStageStats(LoadKind::kConcurrency, 4, 2.0, records, 0.25, 0.03);
  EXPECT_EQ(st.completed, 3);
  EXPECT_EQ(st.failed, 3);
  EXPECT_EQ(st.cancelled_at_end, 1);
  EXPECT_EQ(st.errors.at("RESOURCE_EXHAUSTED"), 2);
  EXPECT_EQ(st.errors.at("UNAVAILABLE"), 1);
  EXPECT_EQ(st.errors.size(), 2u);
  EXPECT_EQ(st.prompt_tokens, 60);
  EXPECT_EQ(st.output_tokens, 6);
  EXPECT_EQ(st.cached_prompt_tokens, 16);
  EXPECT_DOUBLE_EQ(st.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(st.output_token_throughput, 3.0);
  EXPECT_DOUBLE_EQ(st.total_token_throughput, 33.0);
  EXPECT_EQ(st.ttft_s.count, 3u);
  EXPECT_NEAR(st.ttft_s.mean, 0.2, 1e-12);
  EXPECT_DOUBLE_EQ(st.ttft_s.p50, 0.2);
  EXPECT_EQ(st.itl_s.count, 3u);  // 0.01, 0.03, 0.05
  EXPECT_DOUBLE_EQ(st.itl_s.p50, 0.03);
  EXPECT_DOUBLE_EQ(st.itl_s.max, 0.05);
  EXPECT_EQ(st.tpot_s.count, 2u);
  EXPECT_NEAR(st.tpot_s.min, 0.02, 1e-12);
  EXPECT_NEAR(st.tpot_s.max, 0.05, 1e-12);
  EXPECT_DOUBLE_EQ(st.e2e_s.max, 0.35);
  // Goodput: TTFT <= 0.25 and TPOT <= 0.03: the first (0.1, 0.02) and third (0.2, no TPOT).
  ASSERT_TRUE(st.goodput.has_value());
  EXPECT_EQ(st.goodput->good_requests, 2);
  EXPECT_DOUBLE_EQ(st.goodput->request_goodput, 1.0);
}

TEST(BenchStatsTest, GoodputAbsentWithoutSlosAndEachSloAlone) {
  std::vector<RequestRecord> records = {Completed(0.1, {}, 0.5, 1, 5),    // TPOT 0.1
                                        Completed(0.4, {}, 0.44, 1, 5)};  // TPOT 0.01
  EXPECT_FALSE(ComputeStageStats(LoadKind::kRequestRate, 1, 1, records, {}, {}).goodput);
  EXPECT_EQ(
      ComputeStageStats(LoadKind::kRequestRate, 1, 1, records, 0.2, {}).goodput->good_requests, 1);
  EXPECT_EQ(
      ComputeStageStats(LoadKind::kRequestRate, 1, 1, records, {}, 0.05).goodput->good_requests, 1);
  EXPECT_EQ(
      ComputeStageStats(LoadKind::kRequestRate, 1, 1, records, 1.0, 1.0).goodput->good_requests, 2);
}

TEST(BenchStatsTest, TpotNeedsTwoTokensAndAFirstToken) {
  RequestRecord r = Completed(0.5, {}, 1.5, 1, 3);
  EXPECT_DOUBLE_EQ(*r.tpot_s(), 0.5);
  r.output_tokens = 1;
  EXPECT_FALSE(r.tpot_s().has_value());
  r.output_tokens = 3;
  r.ttft_s.reset();
  EXPECT_FALSE(r.tpot_s().has_value());
}

}  // namespace
}  // namespace vg::client
