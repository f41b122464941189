// The on-device sampling contract (row_sampling.h) against Sampler::Sample: choosing with the CPU
// reference SampleRow from Sampler::DeviceRow, then Sampler::Accept, gives the same tokens,
// log-probabilities and top logprobs as Sample and leaves the Sampler in the same state, step
// after step; and the order a draw walks is the canonical one a device can reproduce.
#include "engine/sampling/row_sampler.h"

#include <cmath>
#include <limits>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "engine/sampling/sampler.h"
#include "engine/sampling/warpers.h"
#include "gtest/gtest.h"

namespace vg::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// A row of `n` logits from `rng` on a coarse grid (many ties), with some -inf and NaN; every 9th
// step a row with a single finite logit and every 13th one with none, the edge cases of the draw.
std::vector<float> RandomRow(Rng& rng, int n, int step) {
  std::vector<float> row(n);
  for (float& v : row) v = static_cast<float>(static_cast<int>(rng.NextDouble() * 40) - 20) / 4;
  for (int i = 0; i < n / 10; ++i) row[rng.Next() % n] = kNegInf;
  row[rng.Next() % n] = std::numeric_limits<float>::quiet_NaN();
  if (step % 9 == 4) {
    std::fill(row.begin(), row.end(), kNegInf);
    row[rng.Next() % n] = 1.5f;
  }
  if (step % 13 == 7) std::fill(row.begin(), row.end(), kNegInf);
  return row;
}

void ExpectSameRowSampling(const RowSampling& a, const RowSampling& b) {
  EXPECT_EQ(a.uniform, b.uniform);
  EXPECT_EQ(std::vector<int32_t>(a.repetition_ids.begin(), a.repetition_ids.end()),
            std::vector<int32_t>(b.repetition_ids.begin(), b.repetition_ids.end()));
  using Counts = std::vector<std::pair<int32_t, int32_t>>;
  EXPECT_EQ(Counts(a.output_counts.begin(), a.output_counts.end()),
            Counts(b.output_counts.begin(), b.output_counts.end()));
  EXPECT_EQ(a.top_logprobs, b.top_logprobs);
}

struct Case {
  std::string name;
  SamplingParams params;
  int32_t top_logprobs;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class RowSamplerEquivalenceTest : public testing::TestWithParam<Case> {};

TEST_P(RowSamplerEquivalenceTest, DeviceRowSampleRowAcceptMatchesSample) {
  const Case& c = GetParam();
  ASSERT_TRUE(ValidateSamplingParams(c.params).ok());
  const std::vector<int32_t> prompt = {3, 17, 17, 42, 5, 200};  // 200 is outside the row
  Sampler host(c.params, prompt);
  Sampler device(c.params, prompt);
  Rng rows(c.params.seed + 1);
  int draws = 0;
  for (int step = 0; step < 300; ++step) {
    SCOPED_TRACE(step);
    const std::vector<float> logits = RandomRow(rows, 64, step);
    const RowSampling row = device.DeviceRow(c.top_logprobs);
    // Same state before the step: the same peeked draw and history.
    ExpectSameRowSampling(row, host.DeviceRow(c.top_logprobs));
    EXPECT_EQ(row.uniform, device.DeviceRow(c.top_logprobs).uniform) << "DeviceRow advanced";

    const RowSample sample = SampleRow(logits, row);
    draws += sample.used_uniform;
    const Sampler::Choice want = host.Sample(logits, c.top_logprobs);
    const Sampler::Choice got = device.Accept(sample);
    ASSERT_EQ(got.token_id, want.token_id);
    EXPECT_EQ(got.logprob, want.logprob);
    ASSERT_EQ(got.top.size(), want.top.size());
    for (size_t k = 0; k < want.top.size(); ++k) {
      EXPECT_EQ(got.top[k].token_id, want.top[k].token_id) << k;
      EXPECT_EQ(got.top[k].logprob, want.top[k].logprob) << k;
    }
    EXPECT_EQ(sample.used_uniform,
              c.params.temperature > 0.0f && step % 13 != 7);  // a row with a finite logit
  }
  ExpectSameRowSampling(device.DeviceRow(c.top_logprobs), host.DeviceRow(c.top_logprobs));
  if (c.params.temperature == 0.0f) {
    EXPECT_EQ(draws, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Params, RowSamplerEquivalenceTest,
    testing::Values(
        Case{"greedy", {.seed = 1}, 0}, Case{"greedy_top_logprobs", {.seed = 2}, 5},
        Case{"temperature", {.temperature = 0.8f, .seed = 3}, 3},
        Case{"top_k", {.temperature = 1.2f, .top_k = 7, .seed = 4}, 0},
        Case{"top_k_beyond_the_row", {.temperature = 1.0f, .top_k = 500, .seed = 5}, 2},
        Case{"top_p", {.temperature = 0.9f, .top_p = 0.6f, .seed = 6}, 0},
        Case{"min_p", {.temperature = 1.5f, .min_p = 0.2f, .seed = 7}, 20},
        Case{"all_warpers",
             {.temperature = 0.7f, .top_k = 12, .top_p = 0.85f, .min_p = 0.05f, .seed = 8},
             4},
        Case{"greedy_penalties",
             {.repetition_penalty = 1.4f,
              .presence_penalty = 0.3f,
              .frequency_penalty = 0.4f,
              .seed = 9},
             2},
        Case{"sampled_penalties",
             {.temperature = 1.1f,
              .top_k = 20,
              .top_p = 0.95f,
              .min_p = 0.02f,
              .repetition_penalty = 0.8f,
              .presence_penalty = -0.7f,
              .frequency_penalty = 1.5f,
              .seed = 10},
             1},
        Case{"repetition_only", {.temperature = 1.0f, .repetition_penalty = 2.0f, .seed = 11}, 0},
        Case{"frequency_only", {.temperature = 0.5f, .frequency_penalty = -2.0f, .seed = 12}, 0}),
    [](const testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(RowSamplerTest, DeviceRowCarriesOnlyTheHistoryItsPenaltiesUse) {
  const std::vector<int32_t> prompt = {9, 4, 9, 1};
  Sampler neutral(SamplingParams{.temperature = 1.0f}, prompt);
  RowSampling row = neutral.DeviceRow(0);
  EXPECT_TRUE(row.repetition_ids.empty());
  EXPECT_TRUE(row.output_counts.empty());

  Sampler repetition(SamplingParams{.repetition_penalty = 1.2f}, prompt);
  repetition.Accept(RowSample{.token_id = 7});
  repetition.Accept(RowSample{.token_id = 4});
  row = repetition.DeviceRow(3);
  EXPECT_EQ(std::vector<int32_t>(row.repetition_ids.begin(), row.repetition_ids.end()),
            (std::vector<int32_t>{1, 4, 7, 9}));
  EXPECT_TRUE(row.output_counts.empty());
  EXPECT_EQ(row.top_logprobs, 3);
  EXPECT_EQ(row.params.repetition_penalty, 1.2f);

  Sampler frequency(SamplingParams{.frequency_penalty = 0.5f}, prompt);
  for (int32_t id : {8, 2, 8}) frequency.Accept(RowSample{.token_id = id});
  row = frequency.DeviceRow(0);
  EXPECT_TRUE(row.repetition_ids.empty());
  using Counts = std::vector<std::pair<int32_t, int32_t>>;
  EXPECT_EQ(Counts(row.output_counts.begin(), row.output_counts.end()), (Counts{{2, 1}, {8, 2}}));
}

TEST(RowSamplerTest, AcceptAdvancesTheStreamOnlyWhenTheDrawWasUsed) {
  const SamplingParams params{.temperature = 1.0f, .seed = 77};
  Sampler sampler(params, {});
  Rng stream(77);
  const double first = stream.NextDouble();
  const double second = stream.NextDouble();
  EXPECT_EQ(sampler.DeviceRow(0).uniform, first);
  sampler.Accept(RowSample{.token_id = 1, .used_uniform = false});
  EXPECT_EQ(sampler.DeviceRow(0).uniform, first);
  const Sampler::Choice choice =
      sampler.Accept(RowSample{.token_id = 2,
                               .logprob = -0.5f,
                               .top = {{.token_id = 2, .logprob = -0.5f}},
                               .used_uniform = true});
  EXPECT_EQ(choice.token_id, 2);
  EXPECT_EQ(choice.logprob, -0.5f);
  ASSERT_EQ(choice.top.size(), 1u);
  EXPECT_EQ(sampler.DeviceRow(0).uniform, second);
}

// The draw walks the survivors in the canonical order (warpers.h): with k = 2 the three tied 3s
// survive, in id order, each a third of the mass; without top-k and top-p, ascending id.
TEST(RowSamplerTest, TheDrawWalksTheCanonicalOrder) {
  const std::vector<float> logits = {1.0f, 3.0f, 0.0f, 3.0f, 2.0f, 3.0f};
  RowSampling row{.params = {.temperature = 1.0f, .top_k = 2}};
  const std::vector<std::pair<double, int32_t>> top_k_draws = {{0.0, 1},  {0.3, 1},  {0.34, 3},
                                                               {0.66, 3}, {0.67, 5}, {0.999, 5}};
  for (const auto& [uniform, want] : top_k_draws) {
    row.uniform = uniform;
    const RowSample sample = SampleRow(logits, row);
    EXPECT_EQ(sample.token_id, want) << uniform;
    EXPECT_TRUE(sample.used_uniform);
  }
  Candidates candidates;
  SelectCandidates({.temperature = 1.0f, .top_k = 4}, logits, &candidates);
  std::vector<int32_t> ids;
  for (const Candidate& c : candidates.kept) ids.push_back(c.id);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 3, 5, 4}));
  SelectCandidates({.temperature = 1.0f, .top_k = 100, .min_p = 0.1f}, logits, &candidates);
  ids.clear();
  for (const Candidate& c : candidates.kept) ids.push_back(c.id);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 3, 5, 4, 0})) << "top-k on, even beyond the row";
  SelectCandidates({.temperature = 1.0f, .min_p = 0.1f}, logits, &candidates);
  ids.clear();
  for (const Candidate& c : candidates.kept) ids.push_back(c.id);
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 1, 3, 4, 5})) << "neither top-k nor top-p: by id";
  // Without top-k and top-p the walk is by id: 0 holds the first e^1 / total of the mass.
  row = RowSampling{.params = {.temperature = 1.0f}, .uniform = 0.0};
  EXPECT_EQ(SampleRow(logits, row).token_id, 0);
}

TEST(RowSamplerTest, GreedyIsTheFirstArgmaxOfThePenalizedRowAndNeverDraws) {
  const std::vector<float> logits = {1.0f, 2.4f, 2.0f, 2.4f};
  const std::vector<int32_t> seen = {1};
  RowSampling row{.params = {.repetition_penalty = 1.3f}, .uniform = 0.5, .repetition_ids = seen};
  const RowSample sample = SampleRow(logits, row);
  EXPECT_EQ(sample.token_id, 3);  // 1 is penalized to 1.846; 3 keeps 2.4
  EXPECT_FALSE(sample.used_uniform);
  EXPECT_EQ(sample.logprob, LogProb(logits, 3));
  row.repetition_ids = {};
  EXPECT_EQ(SampleRow(logits, row).token_id, 1);
}

TEST(RowSamplerTest, RowsWithoutFiniteLogitsAndEmptyRowsGiveTokenZeroWithoutADraw) {
  const RowSampling row{.params = {.temperature = 1.0f}, .uniform = 0.5, .top_logprobs = 2};
  const RowSample none = SampleRow(std::vector<float>{kNegInf, kNegInf, kNegInf}, row);
  EXPECT_EQ(none.token_id, 0);
  EXPECT_FALSE(none.used_uniform);
  EXPECT_EQ(none.top.size(), 2u);
  const RowSample empty = SampleRow(std::vector<float>{}, row);
  EXPECT_EQ(empty.token_id, 0);
  EXPECT_FALSE(empty.used_uniform);
  EXPECT_TRUE(empty.top.empty());
}

}  // namespace
}  // namespace vg::engine
