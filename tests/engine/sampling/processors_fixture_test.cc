// Checks Penalties + SelectCandidates against transformers' logits processors on the cases in
// tests/fixtures/sampling/processors.json (written by tools/fixtures/make_sampling_fixtures.py).
// Tolerance: finite values within 1e-5 relative (1e-6 absolute near zero); the -inf (filtered)
// sets must be identical; our normalised weights match softmax(expected) within 1e-6 absolute.
#include <cmath>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "engine/sampling/penalties.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/warpers.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace vg::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::vector<float> Row(const nlohmann::json& values) {
  std::vector<float> row;
  for (const auto& v : values) row.push_back(v.is_null() ? kNegInf : v.get<float>());
  return row;
}

nlohmann::json LoadFixture() {
  std::ifstream in(std::string(VG_SOURCE_DIR) + "/tests/fixtures/sampling/processors.json");
  EXPECT_TRUE(in.good()) << "missing fixture; run tools/fixtures/make_sampling_fixtures.py";
  return nlohmann::json::parse(in);
}

SamplingParams ParamsOf(const nlohmann::json& p) {
  return SamplingParams{.temperature = p.at("temperature").get<float>(),
                        .top_k = p.at("top_k").get<int32_t>(),
                        .top_p = p.at("top_p").get<float>(),
                        .min_p = p.at("min_p").get<float>(),
                        .repetition_penalty = p.at("repetition_penalty").get<float>(),
                        .presence_penalty = p.at("presence_penalty").get<float>(),
                        .frequency_penalty = p.at("frequency_penalty").get<float>()};
}

void ExpectSameRow(const std::vector<float>& ours, const std::vector<float>& expected) {
  ASSERT_EQ(ours.size(), expected.size());
  for (size_t i = 0; i < ours.size(); ++i) {
    SCOPED_TRACE(i);
    if (expected[i] == kNegInf) {
      EXPECT_EQ(ours[i], kNegInf);
    } else {
      ASSERT_NE(ours[i], kNegInf);
      EXPECT_NEAR(ours[i], expected[i], std::max(1e-5 * std::fabs(expected[i]), 1e-6));
    }
  }
}

TEST(ProcessorsFixtureTest, MatchesTransformers) {
  const nlohmann::json fixture = LoadFixture();
  ASSERT_GE(fixture.at("cases").size(), 20u);
  for (const auto& c : fixture.at("cases")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const SamplingParams params = ParamsOf(c.at("params"));
    ASSERT_TRUE(ValidateSamplingParams(params).ok());
    const auto prompt = c.at("prompt_ids").get<std::vector<int32_t>>();
    const auto generated = c.at("generated_ids").get<std::vector<int32_t>>();
    const std::vector<float> expected = Row(c.at("expected"));

    Penalties penalties(params, prompt);
    for (int32_t id : generated) penalties.Record(id);
    std::vector<float> row = Row(c.at("logits"));
    penalties.Apply(row);

    if (params.temperature == 0.0f) {
      // Greedy: transformers runs only the penalties, then torch.argmax.
      ExpectSameRow(row, expected);
      Sampler sampler(params, prompt);
      for (int32_t id : generated) {
        std::vector<float> only(row.size(), kNegInf);
        only[id] = 0.0f;
        ASSERT_EQ(sampler.Sample(only).token_id, id);  // replays the generated history
      }
      EXPECT_EQ(sampler.Sample(Row(c.at("logits"))).token_id, ArgMax(expected));
      continue;
    }

    Candidates candidates;
    SelectCandidates(params, row, &candidates);
    std::vector<float> ours(row.size(), kNegInf);
    for (const Candidate& c : candidates.kept) ours[c.id] = row[c.id] / params.temperature;
    ExpectSameRow(ours, expected);

    // The weights we draw from are softmax(expected).
    double max_expected = kNegInf, sum = 0.0;
    for (float v : expected) max_expected = std::max<double>(max_expected, v);
    for (float v : expected) sum += std::exp(v - max_expected);
    for (const Candidate& c : candidates.kept) {
      EXPECT_EQ(c.logit, row[c.id]);
      EXPECT_NEAR(c.weight / candidates.total, std::exp(expected[c.id] - max_expected) / sum, 1e-6);
    }
  }
}

}  // namespace
}  // namespace vg::engine
