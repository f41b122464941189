#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "engine/sampling/penalties.h"
#include "engine/sampling/warpers.h"
#include "gtest/gtest.h"

namespace vg::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::vector<float> LogitsOf(const std::vector<double>& probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}

std::map<int32_t, int> Histogram(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::map<int32_t, int> counts;
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(logits).token_id];
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

// The vocabulary-sized log-sum-exp uses a polynomial exp: within 1e-6 (plus the float32 rounding
// of the result) of the double reference on a 256000-entry row spanning 90 nats, with masked
// (-inf) and NaN entries.
TEST(LogProbTest, MatchesDirectLogSoftmaxOnAVocabularySizedRow) {
  std::vector<float> logits(256000);
  uint64_t state = 7;
  for (float& v : logits) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<float>(static_cast<double>(state >> 11) / 9007199254740992.0 * 90.0 - 60.0);
  }
  logits[5] = -std::numeric_limits<float>::infinity();
  logits[6] = std::numeric_limits<float>::quiet_NaN();
  const float max = *std::max_element(logits.begin() + 7, logits.end());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (i != 5 && i != 6) sum += std::exp(static_cast<double>(logits[i]) - max);
  }
  const double lse = max + std::log(sum);
  for (int id : {0, 1, 100, 255999}) {
    const double want = static_cast<double>(logits[id]) - lse;
    EXPECT_NEAR(LogProb(logits, id), want, 1e-6 + 6e-8 * std::fabs(want)) << id;
  }
  EXPECT_EQ(LogProb(logits, 5), -std::numeric_limits<float>::infinity());
}

TEST(SamplerTest, TemperatureZeroIsGreedyAndReportsTheRawLogprob) {
  Sampler sampler(SamplingParams{.temperature = 0.0f, .seed = 7}, {});
  const std::vector<float> logits = {0.1f, 0.9f, 0.5f};
  const Sampler::Choice choice = sampler.Sample(logits);
  EXPECT_EQ(choice.token_id, 1);
  EXPECT_FLOAT_EQ(choice.logprob, LogProb(logits, 1));
  EXPECT_TRUE(choice.top.empty());
}

TEST(SamplerTest, LogprobIsOfTheRawLogitsNotTheProcessedOnes) {
  // Temperature, top-k and the repetition penalty change what is drawn, not what is reported.
  const std::vector<int32_t> prompt = {0, 1};
  Sampler sampler(SamplingParams{.temperature = 0.3f, .top_k = 2, .repetition_penalty = 2.0f},
                  prompt);
  const std::vector<float> logits = {2.0f, 1.5f, -0.5f, 0.25f};
  for (int i = 0; i < 50; ++i) {
    const Sampler::Choice choice = sampler.Sample(logits);
    EXPECT_FLOAT_EQ(choice.logprob, LogProb(logits, choice.token_id));
  }
}

TEST(SamplerTest, TopKOneIsGreedyWhateverTheTemperature) {
  Sampler sampler(SamplingParams{.temperature = 5.0f, .top_k = 1, .seed = 3}, {});
  const std::vector<float> logits = {0.1f, 0.2f, 0.15f, -4.0f};
  for (int i = 0; i < 200; ++i) EXPECT_EQ(sampler.Sample(logits).token_id, 1);
}

TEST(SamplerTest, TopPKeepsTheSmallestPrefixReachingP) {
  const std::vector<float> logits = LogitsOf({0.2, 0.5, 0.3});
  Sampler only_best(SamplingParams{.temperature = 1.0f, .top_p = 0.5f, .seed = 1}, {});
  for (int i = 0; i < 500; ++i) EXPECT_EQ(only_best.Sample(logits).token_id, 1);
}

TEST(SamplerTest, TopPTieAtTheCutKeepsTheLowerId) {
  // Mass above id 2 is exactly 0.5, so one of the tied pair goes; torch.sort's order decides in
  // transformers, the lower id stays here.
  Sampler sampler(SamplingParams{.temperature = 1.0f, .top_p = 0.5f, .seed = 6}, {});
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(sampler.Sample(std::vector<float>{kNegInf, 0.0f, 0.0f}).token_id, 1);
  }
}

TEST(SamplerTest, TopKKeepsTies) {
  Sampler sampler(SamplingParams{.temperature = 1.0f, .top_k = 1, .seed = 9}, {});
  const auto counts = Histogram(sampler, std::vector<float>{1.0f, 3.0f, 3.0f, 0.0f}, 4000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_GT(counts.at(1), 1500);
  EXPECT_GT(counts.at(2), 1500);
}

TEST(SamplerTest, MinPOneKeepsOnlyTheTiedMaxima) {
  Sampler sampler(SamplingParams{.temperature = 2.0f, .min_p = 1.0f, .seed = 4}, {});
  const auto counts = Histogram(sampler, std::vector<float>{3.0f, 1.0f, 3.0f, 2.9f}, 2000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_EQ(counts.count(1) + counts.count(3), 0u);
}

TEST(SamplerTest, NeverPicksMinusInfinityOrNan) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Sampler sampler(SamplingParams{.temperature = 50.0f, .seed = 8}, {});
  const auto counts = Histogram(sampler, std::vector<float>{nan, 0.0f, kNegInf, 1.0f}, 2000);
  EXPECT_EQ(counts.count(0) + counts.count(2), 0u);
}

TEST(SamplerTest, RowWithoutFiniteLogitsGivesTokenZero) {
  Sampler sampler(SamplingParams{.temperature = 1.0f, .repetition_penalty = 1.5f}, {});
  EXPECT_EQ(sampler.Sample(std::vector<float>{kNegInf, kNegInf}).token_id, 0);
  EXPECT_EQ(sampler.Sample(std::vector<float>{}).token_id, 0);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  const std::vector<float> logits = LogitsOf({0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1});
  const std::vector<int32_t> prompt = {3, 4};
  auto draw = [&](uint64_t seed) {
    Sampler sampler(SamplingParams{.temperature = 0.9f,
                                   .top_k = 8,
                                   .top_p = 0.95f,
                                   .min_p = 0.01f,
                                   .repetition_penalty = 1.1f,
                                   .presence_penalty = 0.2f,
                                   .frequency_penalty = 0.1f,
                                   .seed = seed},
                    prompt);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(sampler.Sample(logits).token_id);
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(SamplerTest, StreamsAreIndependentOfOtherSamplers) {
  // Interleaving another request's draws must not change this one's sequence.
  const std::vector<float> logits = LogitsOf({0.3, 0.3, 0.2, 0.2});
  const SamplingParams params{.temperature = 1.0f, .seed = 99};
  Sampler alone(params, {});
  Sampler interleaved(params, {});
  Sampler other(SamplingParams{.temperature = 1.0f, .seed = 100}, {});
  for (int i = 0; i < 100; ++i) {
    other.Sample(logits);
    EXPECT_EQ(alone.Sample(logits).token_id, interleaved.Sample(logits).token_id);
  }
}

TEST(SamplerTest, TopLogprobsAreTheRawLogSoftmaxSortedWithTiesByLowerId) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, nan, 0.5f, 3.0f, kNegInf};
  Sampler sampler(SamplingParams{.temperature = 0.7f, .seed = 1}, {});
  const Sampler::Choice choice = sampler.Sample(logits, 5);
  ASSERT_EQ(choice.top.size(), 5u);
  const std::vector<int32_t> want_ids = {6, 1, 3, 0, 5};
  for (size_t i = 0; i < want_ids.size(); ++i) {
    EXPECT_EQ(choice.top[i].token_id, want_ids[i]) << i;
    EXPECT_FLOAT_EQ(choice.top[i].logprob, LogProb(logits, want_ids[i])) << i;
  }
  // More than the vocabulary: all of it, NaN and -inf last (as -inf, lower id first).
  const std::vector<TopLogprob> all = TopLogprobs(logits, 100);
  ASSERT_EQ(all.size(), logits.size());
  EXPECT_EQ(all[6].token_id, 4);
  EXPECT_EQ(all[7].token_id, 7);
  EXPECT_EQ(all[7].logprob, kNegInf);
  EXPECT_TRUE(TopLogprobs(logits, 0).empty());
  EXPECT_TRUE(sampler.Sample(logits, -3).top.empty());
}

TEST(SamplerTest, TopLogprobsOnALargeRowMatchAFullSort) {
  std::vector<float> logits(5000);
  Rng rng(5);
  for (float& v : logits) v = static_cast<float>(static_cast<int>(rng.NextDouble() * 300)) / 10;
  const std::vector<TopLogprob> top = TopLogprobs(logits, 20);
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  ASSERT_EQ(top.size(), 20u);
  for (size_t i = 0; i < top.size(); ++i) {
    EXPECT_EQ(top[i].token_id, ids[i]) << i;
    EXPECT_NEAR(top[i].logprob, LogProb(logits, ids[i]), 1e-6) << i;
  }
}

TEST(SamplerTest, GreedyRepetitionPenaltyChangesTheChoiceWhenItShould) {
  const std::vector<float> logits = {1.0f, 2.4f, 2.0f, -3.0f};
  // Token 1 leads by 0.4; a 1.3 penalty makes it 1.846 < 2.0.
  Sampler penalized(SamplingParams{.temperature = 0.0f, .repetition_penalty = 1.3f},
                    std::vector<int32_t>{1});
  EXPECT_EQ(penalized.Sample(logits).token_id, 2);
  // Penalty 1.1: 2.18 still beats 2.0.
  Sampler mild(SamplingParams{.temperature = 0.0f, .repetition_penalty = 1.1f},
               std::vector<int32_t>{1});
  EXPECT_EQ(mild.Sample(logits).token_id, 1);
  // Output tokens count too: the first choice is penalized at the next step.
  Sampler fresh(SamplingParams{.temperature = 0.0f, .repetition_penalty = 1.3f}, {});
  EXPECT_EQ(fresh.Sample(logits).token_id, 1);
  EXPECT_EQ(fresh.Sample(logits).token_id, 2);
  EXPECT_EQ(fresh.Sample(logits).token_id, 1);  // both penalized now: 1.846 vs 1.538
}

TEST(SamplerTest, GreedyPresenceAndFrequencyPenaltiesCountOutputOnly) {
  const std::vector<float> logits = {1.0f, 2.4f, 2.0f, -3.0f};
  // The prompt does not count for presence / frequency.
  Sampler sampler(
      SamplingParams{.temperature = 0.0f, .presence_penalty = 0.3f, .frequency_penalty = 0.2f},
      std::vector<int32_t>{1, 1, 1});
  EXPECT_EQ(sampler.Sample(logits).token_id, 1);  // 2.4
  EXPECT_EQ(sampler.Sample(logits).token_id, 2);  // 1: 2.4 - 0.5 = 1.9 < 2.0
  EXPECT_EQ(sampler.Sample(logits).token_id, 1);  // 1: 1.9 vs 2: 1.5
  EXPECT_EQ(sampler.Sample(logits).token_id, 1);  // 1: 2.4 - 0.7 = 1.7 vs 2: 1.5
}

TEST(PenaltiesTest, RepetitionAppliesOncePerDistinctIdAndKeepsInfinity) {
  Penalties penalties(SamplingParams{.repetition_penalty = 2.0f},
                      std::vector<int32_t>{0, 0, 2, 3, 99, -1});
  penalties.Record(2);
  std::vector<float> row = {4.0f, 4.0f, -4.0f, kNegInf, 0.0f};
  penalties.Apply(row);
  EXPECT_EQ(row, (std::vector<float>{2.0f, 4.0f, -8.0f, kNegInf, 0.0f}));
}

TEST(PenaltiesTest, InactiveWhenNeutral) {
  EXPECT_FALSE(Penalties(SamplingParams{}, std::vector<int32_t>{1, 2}).active());
  EXPECT_TRUE(Penalties(SamplingParams{.presence_penalty = -0.1f}, {}).active());
}

TEST(ValidateSamplingParamsTest, NamesTheField) {
  EXPECT_TRUE(ValidateSamplingParams({}).ok());
  EXPECT_TRUE(ValidateSamplingParams({.temperature = 1.0f,
                                      .top_k = 5,
                                      .top_p = 1.0f,
                                      .min_p = 1.0f,
                                      .repetition_penalty = 0.5f,
                                      .presence_penalty = -2.0f,
                                      .frequency_penalty = 2.0f})
                  .ok());
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto expect_names = [](SamplingParams p, const std::string& field) {
    const absl::Status status = ValidateSamplingParams(p);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(std::string(status.message()).find(field), std::string::npos) << status.message();
  };
  expect_names({.temperature = -1.0f}, "temperature");
  expect_names({.temperature = inf}, "temperature");
  expect_names({.temperature = nan}, "temperature");
  expect_names({.top_k = -2}, "top_k");
  expect_names({.top_p = 0.0f}, "top_p");
  expect_names({.top_p = 1.5f}, "top_p");
  expect_names({.top_p = nan}, "top_p");
  expect_names({.min_p = -0.1f}, "min_p");
  expect_names({.min_p = 1.01f}, "min_p");
  expect_names({.min_p = nan}, "min_p");
  expect_names({.repetition_penalty = 0.0f}, "repetition_penalty");
  expect_names({.repetition_penalty = -1.0f}, "repetition_penalty");
  expect_names({.repetition_penalty = inf}, "repetition_penalty");
  expect_names({.repetition_penalty = nan}, "repetition_penalty");
  expect_names({.presence_penalty = 2.5f}, "presence_penalty");
  expect_names({.presence_penalty = -inf}, "presence_penalty");
  expect_names({.presence_penalty = nan}, "presence_penalty");
  expect_names({.frequency_penalty = -2.01f}, "frequency_penalty");
  expect_names({.frequency_penalty = nan}, "frequency_penalty");
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

}  // namespace
}  // namespace vg::engine
