// Statistical tests of what the Sampler draws: chi-square goodness of fit of 20000 draws over a
// 6-token vocabulary against the distribution a plain reference (written here from transformers'
// definitions, full sorts, double precision) says the processors leave.
//
// Significance level alpha = 1e-3: a correct sampler fails each check with probability 1e-3 for a
// random seed. The seeds are fixed, so the outcome is deterministic; changing a seed (or the Rng)
// may legitimately fail one check in a thousand. Tokens the reference gives probability 0 must
// never be drawn; the statistic runs over the others, with (their count - 1) degrees of freedom.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "engine/sampling/sampler.h"
#include "gtest/gtest.h"

namespace vg::engine {
namespace {

constexpr int kDraws = 20000;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Upper 1e-3 quantiles of the chi-square distribution, by degrees of freedom (index).
constexpr double kCritical[] = {0, 10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322};

// A 6-token row with positive and negative logits (both branches of the repetition penalty).
std::vector<float> TestRow() {
  std::vector<float> row;
  for (double p : {0.35, 0.25, 0.15, 0.12, 0.08, 0.05}) {
    row.push_back(static_cast<float>(std::log(p) + 2.0));
  }
  return row;
}

std::vector<double> Softmax(const std::vector<double>& s) {
  const double m = *std::max_element(s.begin(), s.end());
  std::vector<double> p(s.size());
  double sum = 0;
  for (size_t i = 0; i < s.size(); ++i) sum += p[i] = s[i] == kNegInf ? 0.0 : std::exp(s[i] - m);
  for (double& x : p) x /= sum;
  return p;
}

// The sampling distribution, straight from the definitions (see warpers.h / penalties.h).
std::vector<double> Reference(const SamplingParams& params, const std::vector<float>& logits,
                              const std::vector<int32_t>& prompt,
                              const std::vector<int32_t>& generated) {
  std::vector<double> s(logits.begin(), logits.end());
  std::set<int32_t> seen(prompt.begin(), prompt.end());
  seen.insert(generated.begin(), generated.end());
  for (int32_t id : seen) {
    s[id] = s[id] < 0 ? s[id] * params.repetition_penalty : s[id] / params.repetition_penalty;
  }
  std::map<int32_t, int> counts;
  for (int32_t id : generated) ++counts[id];
  for (const auto& [id, n] : counts) {
    s[id] -= params.frequency_penalty * n + params.presence_penalty;
  }
  for (double& x : s) x /= params.temperature;
  const size_t n = s.size();
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < n) {
    std::vector<double> sorted = s;
    std::sort(sorted.rbegin(), sorted.rend());
    const double kth = sorted[params.top_k - 1];
    for (double& x : s) {
      if (x < kth) x = kNegInf;
    }
  }
  if (params.top_p < 1.0f) {
    std::vector<size_t> ascending(n);
    std::iota(ascending.begin(), ascending.end(), 0);
    std::stable_sort(ascending.begin(), ascending.end(),
                     [&](size_t a, size_t b) { return s[a] < s[b]; });
    const std::vector<double> p = Softmax(s);
    double cumulative = 0;
    std::vector<bool> remove(n, false);
    for (size_t i = 0; i < n; ++i) {
      cumulative += p[ascending[i]];
      remove[ascending[i]] = i + 1 < n && cumulative <= 1.0 - params.top_p;
    }
    for (size_t i = 0; i < n; ++i) {
      if (remove[i]) s[i] = kNegInf;
    }
  }
  if (params.min_p > 0.0f) {
    const std::vector<double> p = Softmax(s);
    const double top = *std::max_element(p.begin(), p.end());
    for (size_t i = 0; i < n; ++i) {
      if (p[i] < params.min_p * top) s[i] = kNegInf;
    }
  }
  return Softmax(s);
}

struct Fit {
  double statistic = 0;
  int degrees_of_freedom = 0;
  int impossible_draws = 0;  // draws of tokens the reference gives probability 0
};

Fit ChiSquare(const std::vector<int>& observed, const std::vector<double>& expected) {
  Fit fit;
  int draws = std::accumulate(observed.begin(), observed.end(), 0);
  for (size_t i = 0; i < expected.size(); ++i) {
    if (expected[i] == 0) {
      fit.impossible_draws += observed[i];
      continue;
    }
    const double e = expected[i] * draws;
    EXPECT_GE(e, 5.0) << "too few draws for the chi-square approximation";
    fit.statistic += (observed[i] - e) * (observed[i] - e) / e;
    ++fit.degrees_of_freedom;
  }
  --fit.degrees_of_freedom;
  return fit;
}

void ExpectFits(const std::vector<int>& observed, const std::vector<double>& expected) {
  const Fit fit = ChiSquare(observed, expected);
  EXPECT_EQ(fit.impossible_draws, 0);
  ASSERT_GE(fit.degrees_of_freedom, 1);
  EXPECT_LT(fit.statistic, kCritical[fit.degrees_of_freedom])
      << "chi-square with " << fit.degrees_of_freedom << " degrees of freedom";
}

// One sampler, kDraws consecutive draws of its stream (no penalties: the distribution is fixed).
std::vector<int> DrawStream(const SamplingParams& params, const std::vector<float>& row) {
  std::vector<int> observed(row.size(), 0);
  Sampler sampler(params, {});
  for (int i = 0; i < kDraws; ++i) ++observed[sampler.Sample(row).token_id];
  return observed;
}

struct Case {
  std::string name;
  SamplingParams params;
  int kept;  // how many tokens the reference keeps, pinned so a reference slip shows
};

class StreamDistributionTest : public testing::TestWithParam<Case> {};

TEST_P(StreamDistributionTest, ChiSquareFits) {
  const Case& c = GetParam();
  const std::vector<float> row = TestRow();
  const std::vector<double> expected = Reference(c.params, row, {}, {});
  EXPECT_EQ(std::count_if(expected.begin(), expected.end(), [](double p) { return p > 0; }),
            c.kept);
  ExpectFits(DrawStream(c.params, row), expected);
}

INSTANTIATE_TEST_SUITE_P(
    Warpers, StreamDistributionTest,
    testing::Values(
        Case{"temperature_1", {.temperature = 1.0f, .seed = 1}, 6},
        Case{"temperature_0_7", {.temperature = 0.7f, .seed = 2}, 6},
        Case{"temperature_1_6", {.temperature = 1.6f, .seed = 3}, 6},
        Case{"top_k_3", {.temperature = 1.2f, .top_k = 3, .seed = 4}, 3},
        // Mass above the 4th token is 0.75 < 0.8, above the 5th 0.87: 4 survive.
        Case{"top_p_0_8", {.temperature = 1.0f, .top_p = 0.8f, .seed = 5}, 4},
        // 0.12 >= 0.3 * 0.35 = 0.105 > 0.08: 4 survive; at T = 1.5 the ratios flatten to 5.
        Case{"min_p_0_3", {.temperature = 1.0f, .min_p = 0.3f, .seed = 6}, 4},
        Case{"min_p_0_3_temperature_1_5", {.temperature = 1.5f, .min_p = 0.3f, .seed = 7}, 5},
        Case{"all_warpers",
             {.temperature = 0.8f, .top_k = 5, .top_p = 0.9f, .min_p = 0.1f, .seed = 8},
             4}),
    [](const testing::TestParamInfo<Case>& info) { return info.param.name; });

// Penalties depend on the history, so each draw is the third step of a fresh sampler (its own
// seed) whose first two steps are forced to token 1 by a row where only 1 is finite.
std::vector<int> DrawAfterHistory(SamplingParams params, const std::vector<int32_t>& prompt,
                                  const std::vector<float>& row) {
  std::vector<float> force(row.size(), -std::numeric_limits<float>::infinity());
  force[1] = 0.0f;
  std::vector<int> observed(row.size(), 0);
  for (int i = 0; i < kDraws; ++i) {
    params.seed = 1000003ull * i + 17;
    Sampler sampler(params, prompt);
    EXPECT_EQ(sampler.Sample(force).token_id, 1);
    EXPECT_EQ(sampler.Sample(force).token_id, 1);
    ++observed[sampler.Sample(row).token_id];
  }
  return observed;
}

TEST(PenaltyDistributionTest, RepetitionPenaltyOverPromptAndOutput) {
  const SamplingParams params{.temperature = 1.0f, .repetition_penalty = 1.5f};
  const std::vector<int32_t> prompt = {0, 3, 3};  // 0 positive logit, 3 negative
  const std::vector<float> row = TestRow();
  const std::vector<double> expected = Reference(params, row, prompt, {1, 1});
  ExpectFits(DrawAfterHistory(params, prompt, row), expected);
}

TEST(PenaltyDistributionTest, PresenceAndFrequencyOverOutputOnly) {
  const SamplingParams params{
      .temperature = 0.9f, .presence_penalty = 0.5f, .frequency_penalty = 0.4f};
  const std::vector<int32_t> prompt = {0, 2};  // must not count
  const std::vector<float> row = TestRow();
  const std::vector<double> expected = Reference(params, row, prompt, {1, 1});
  ExpectFits(DrawAfterHistory(params, prompt, row), expected);
}

TEST(PenaltyDistributionTest, AllPenaltiesWithWarpers) {
  const SamplingParams params{.temperature = 1.3f,
                              .top_k = 5,
                              .top_p = 0.95f,
                              .min_p = 0.05f,
                              .repetition_penalty = 1.2f,
                              .presence_penalty = -0.3f,
                              .frequency_penalty = 0.6f};
  const std::vector<int32_t> prompt = {4, 5};
  const std::vector<float> row = TestRow();
  const std::vector<double> expected = Reference(params, row, prompt, {1, 1});
  ExpectFits(DrawAfterHistory(params, prompt, row), expected);
}

// The checks have power: draws at T = 0.7 are rejected as draws at T = 1, and penalized draws
// are rejected as unpenalized ones.
TEST(DistributionTestPower, WrongDistributionsAreRejected) {
  const std::vector<float> row = TestRow();
  const Fit temperature = ChiSquare(DrawStream({.temperature = 0.7f, .seed = 2}, row),
                                    Reference({.temperature = 1.0f}, row, {}, {}));
  EXPECT_GT(temperature.statistic, kCritical[temperature.degrees_of_freedom]);

  const SamplingParams penalized{.temperature = 1.0f, .repetition_penalty = 1.5f};
  const Fit penalty = ChiSquare(DrawAfterHistory(penalized, {0, 3, 3}, row),
                                Reference({.temperature = 1.0f}, row, {}, {}));
  EXPECT_GT(penalty.statistic, kCritical[penalty.degrees_of_freedom]);
}

}  // namespace
}  // namespace vg::engine
