#include "engine/sampling/sampler.h"

#include <cmath>
#include <limits>
#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace vg::engine {
namespace {

std::vector<float> LogitsOf(const std::vector<double>& probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}

std::map<int32_t, int> Histogram(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::map<int32_t, int> counts;
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(logits)];
  return counts;
}

TEST(ArgMaxTest, FirstMaximumWinsAndNanIsNeverChosen) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(ArgMax(std::vector<float>{1, 3, 3, 2}), 1);
  EXPECT_EQ(ArgMax(std::vector<float>{nan, -5, nan}), 1);
  EXPECT_EQ(ArgMax(std::vector<float>{-1, -1}), 0);
}

TEST(LogProbTest, MatchesDirectLogSoftmax) {
  const std::vector<float> logits = {2.5f, -1.0f, 0.25f, 7.0f};
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v));
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(LogProb(logits, i), std::log(std::exp(static_cast<double>(logits[i])) / sum), 1e-6);
  }
  // Large logits must not overflow.
  const std::vector<float> big = {1000.0f, 1000.0f};
  EXPECT_NEAR(LogProb(big, 0), std::log(0.5), 1e-6);
}

TEST(SamplerTest, TemperatureZeroIsGreedy) {
  Sampler sampler(SamplingParams{.temperature = 0.0f, .seed = 7});
  EXPECT_EQ(sampler.Sample(std::vector<float>{0.1f, 0.9f, 0.5f}), 1);
}

TEST(SamplerTest, TopKOneIsGreedyWhateverTheTemperature) {
  Sampler sampler(SamplingParams{.temperature = 5.0f, .top_k = 1, .seed = 3});
  const std::vector<float> logits = {0.1f, 0.2f, 0.15f, -4.0f};
  for (int i = 0; i < 200; ++i) EXPECT_EQ(sampler.Sample(logits), 1);
}

TEST(SamplerTest, FrequenciesFollowTheDistribution) {
  Sampler sampler(SamplingParams{.temperature = 1.0f, .seed = 11});
  const auto counts = Histogram(sampler, LogitsOf({0.5, 0.3, 0.2}), 40000);
  EXPECT_NEAR(counts.at(0) / 40000.0, 0.5, 0.01);
  EXPECT_NEAR(counts.at(1) / 40000.0, 0.3, 0.01);
  EXPECT_NEAR(counts.at(2) / 40000.0, 0.2, 0.01);
}

TEST(SamplerTest, TemperatureSharpens) {
  // At T = 0.5 the probabilities become p^2 / sum(p^2): 0.25/0.38, 0.09/0.38, 0.04/0.38.
  Sampler sampler(SamplingParams{.temperature = 0.5f, .seed = 5});
  const auto counts = Histogram(sampler, LogitsOf({0.5, 0.3, 0.2}), 40000);
  EXPECT_NEAR(counts.at(0) / 40000.0, 0.25 / 0.38, 0.01);
  EXPECT_NEAR(counts.at(2) / 40000.0, 0.04 / 0.38, 0.01);
}

TEST(SamplerTest, TopPKeepsTheSmallestPrefixReachingP) {
  const std::vector<float> logits = LogitsOf({0.2, 0.5, 0.3});
  Sampler only_best(SamplingParams{.temperature = 1.0f, .top_p = 0.5f, .seed = 1});
  for (int i = 0; i < 500; ++i) EXPECT_EQ(only_best.Sample(logits), 1);

  Sampler two(SamplingParams{.temperature = 1.0f, .top_p = 0.7f, .seed = 2});
  const auto counts = Histogram(two, logits, 20000);
  EXPECT_EQ(counts.count(0), 0u);
  EXPECT_NEAR(counts.at(1) / 20000.0, 0.5 / 0.8, 0.015);
}

TEST(SamplerTest, TopKKeepsTies) {
  Sampler sampler(SamplingParams{.temperature = 1.0f, .top_k = 1, .seed = 9});
  const auto counts = Histogram(sampler, std::vector<float>{1.0f, 3.0f, 3.0f, 0.0f}, 4000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_GT(counts.at(1), 1500);
  EXPECT_GT(counts.at(2), 1500);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  const std::vector<float> logits = LogitsOf({0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1});
  auto draw = [&](uint64_t seed) {
    Sampler sampler(SamplingParams{.temperature = 1.0f, .seed = seed});
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(sampler.Sample(logits));
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(RngTest, UniformDoublesStayInRange) {
  Rng rng(123);
  double sum = 0;
  for (int i = 0; i < 100000; ++i) {
    const double u = rng.NextDouble();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.01);
}

TEST(ValidateSamplingParamsTest, NamesTheField) {
  EXPECT_TRUE(ValidateSamplingParams({}).ok());
  auto message = [](SamplingParams p) { return std::string(ValidateSamplingParams(p).message()); };
  EXPECT_NE(message({.temperature = -1.0f}).find("temperature"), std::string::npos);
  EXPECT_NE(message({.temperature = std::numeric_limits<float>::infinity()}).find("temperature"),
            std::string::npos);
  EXPECT_NE(message({.top_k = -2}).find("top_k"), std::string::npos);
  EXPECT_NE(message({.top_p = 0.0f}).find("top_p"), std::string::npos);
  EXPECT_NE(message({.top_p = 1.5f}).find("top_p"), std::string::npos);
}

}  // namespace
}  // namespace vg::engine
