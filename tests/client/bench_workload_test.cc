// vaultgemma-bench workload: Poisson arrivals, length distributions, synthetic prompts, JSONL
// datasets and option parsing.
#include <cmath>
#include <set>

#include "client/bench/options.h"
#include "client/bench/workload.h"
#include "gtest/gtest.h"

namespace vg::client {
namespace {

TEST(BenchWorkloadTest, PoissonGapsHaveMeanAndSpreadOfTheRate) {
  // Exponential gaps: mean 1/rate and standard deviation 1/rate. With 20000 draws the standard
  // error of the mean is 0.7% of it, so 3% is over four standard errors.
  constexpr double kRate = 50;
  constexpr int kDraws = 20000;
  PoissonArrivals arrivals(kRate, 7);
  double sum = 0, sum_squares = 0;
  for (int i = 0; i < kDraws; ++i) {
    const double gap = arrivals.NextGapSeconds();
    ASSERT_GE(gap, 0);
    sum += gap;
    sum_squares += gap * gap;
  }
  const double mean = sum / kDraws;
  const double stddev = std::sqrt(sum_squares / kDraws - mean * mean);
  EXPECT_NEAR(mean, 1 / kRate, 0.03 / kRate);
  EXPECT_NEAR(stddev, 1 / kRate, 0.05 / kRate);
}

TEST(BenchWorkloadTest, PoissonIsRepeatableForASeedAndInfiniteRateIsAllAtOnce) {
  PoissonArrivals a(3, 42), b(3, 42), c(3, 43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const double x = a.NextGapSeconds();
    EXPECT_EQ(x, b.NextGapSeconds());
    differs |= x != c.NextGapSeconds();
  }
  EXPECT_TRUE(differs);
  PoissonArrivals inf(std::numeric_limits<double>::infinity(), 1);
  EXPECT_EQ(inf.NextGapSeconds(), 0);
}

TEST(BenchWorkloadTest, LengthsStayWithinBounds) {
  std::mt19937_64 rng(1);
  const LengthSpec spec{100, 60, 180};
  const LengthSampler fixed(LengthDistribution::kFixed, spec);
  const LengthSampler uniform(LengthDistribution::kUniform, spec);
  const LengthSampler normal(LengthDistribution::kNormal, spec);
  std::set<int> uniform_seen;
  double normal_sum = 0;
  constexpr int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) {
    EXPECT_EQ(fixed.Sample(rng), 100);
    const int u = uniform.Sample(rng);
    ASSERT_GE(u, 60);
    ASSERT_LE(u, 180);
    uniform_seen.insert(u);
    const int n = normal.Sample(rng);
    ASSERT_GE(n, 60);
    ASSERT_LE(n, 180);
    normal_sum += n;
  }
  EXPECT_EQ(uniform_seen.size(), 121u);  // every value, both ends included
  // Truncation is asymmetric (60 is 1.33 sd below, 180 is 2.67 above): the mean moves up a bit.
  EXPECT_NEAR(normal_sum / kDraws, 100, 6);
  const LengthSampler degenerate(LengthDistribution::kNormal, LengthSpec{5, 5, 5});
  EXPECT_EQ(degenerate.Sample(rng), 5);
}

BenchOptions Synthetic(int input, int output) {
  BenchOptions o;
  o.input_len = {input, input, input};
  o.output_len = {output, output, output};
  o.seed = 9;
  return o;
}

TEST(BenchWorkloadTest, SyntheticPromptsAreExactInRangeAndRepeatable) {
  const Workload w = Workload::Synthetic(Synthetic(32, 16), 700);
  const Workload again = Workload::Synthetic(Synthetic(32, 16), 700);
  std::set<std::string> salts;
  for (uint64_t i = 0; i < 50; ++i) {
    const RequestSpec spec = w.Make(i);
    EXPECT_FALSE(spec.from_text);
    ASSERT_EQ(spec.prompt_ids.size(), 32u);
    EXPECT_EQ(spec.max_new_tokens, 16u);
    for (uint32_t id : spec.prompt_ids) {
      EXPECT_GE(id, kFirstSyntheticTokenId);
      EXPECT_LT(id, 700u);
    }
    EXPECT_EQ(spec.prompt_ids, again.Make(i).prompt_ids);
    salts.insert(spec.cache_salt);
  }
  EXPECT_EQ(salts.size(), 50u);  // a unique salt per request by default
  EXPECT_NE(w.Make(0).prompt_ids, w.Make(1).prompt_ids);
  BenchOptions shared = Synthetic(8, 8);
  shared.cache_salt = "tenant";
  EXPECT_EQ(Workload::Synthetic(shared, 700).Make(3).cache_salt, "tenant");
}

TEST(BenchWorkloadTest, DatasetLinesAndTheirErrors) {
  auto ok = ParseDataset(
      "{\"prompt\": \"hello\", \"max_new_tokens\": 5}\n\n{\"prompt\": \"world\"}\n", "d.jsonl");
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[0].max_new_tokens, 5);
  EXPECT_EQ((*ok)[1].max_new_tokens, 0);
  BenchOptions o = Synthetic(8, 7);
  const Workload w = Workload::FromDataset(o, *ok);
  EXPECT_TRUE(w.Make(0).from_text);
  EXPECT_EQ(w.Make(0).max_new_tokens, 5u);
  EXPECT_EQ(w.Make(1).max_new_tokens, 7u);    // --output-len
  EXPECT_EQ(w.Make(3).prompt_text, "world");  // cycles

  const std::pair<const char*, const char*> kBad[] = {
      {"{\"prompt\": \"a\"}\n{not json\n", "d.jsonl:2: not valid JSON"},
      {"\n\n[1, 2]\n", "d.jsonl:3: not a JSON object"},
      {"{\"text\": \"a\"}", "d.jsonl:1: needs a string \"prompt\""},
      {"{\"prompt\": 3}", "d.jsonl:1: needs a string \"prompt\""},
      {"{\"prompt\": \"a\", \"max_new_tokens\": 0}", "d.jsonl:1: \"max_new_tokens\" must be"},
      {"{\"prompt\": \"a\", \"max_new_tokens\": 2.5}", "d.jsonl:1: \"max_new_tokens\" must be"},
      {"\n  \n", "d.jsonl: no prompts"},
  };
  for (const auto& [text, message] : kBad) {
    auto parsed = ParseDataset(text, "d.jsonl");
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(parsed.status().message()).find(message), std::string::npos)
        << parsed.status();
  }
  EXPECT_EQ(LoadDataset("/nonexistent/x.jsonl").status().code(), absl::StatusCode::kNotFound);
}

absl::StatusOr<BenchOptions> Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "vaultgemma-bench");
  return ParseBenchOptions(static_cast<int>(args.size()), args.data());
}

TEST(BenchOptionsTest, ParsesLoadShapesAndDefaults) {
  auto d = Parse({});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->load_kind, LoadKind::kConcurrency);
  EXPECT_EQ(d->load_values, std::vector<double>{1});
  EXPECT_EQ(d->num_requests, 100);
  auto sweep = Parse({"--request-rate", "0.5,2,inf", "--duration", "3", "--max-concurrency", "8"});
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_EQ(sweep->load_kind, LoadKind::kRequestRate);
  ASSERT_EQ(sweep->load_values.size(), 3u);
  EXPECT_TRUE(std::isinf(sweep->load_values[2]));
  EXPECT_FALSE(sweep->num_requests.has_value());
  EXPECT_EQ(sweep->duration_s, 3.0);
  auto lengths = Parse({"--len-distribution", "normal", "--input-len", "100", "--output-len-range",
                        "10:200", "--output-len", "50"});
  ASSERT_TRUE(lengths.ok()) << lengths.status();
  EXPECT_EQ(lengths->input_len.min, 50);
  EXPECT_EQ(lengths->input_len.max, 150);
  EXPECT_EQ(lengths->output_len.min, 10);
  EXPECT_EQ(lengths->output_len.max, 200);
}

TEST(BenchOptionsTest, ErrorsNameTheFlag) {
  const std::pair<std::vector<const char*>, const char*> kBad[] = {
      {{"--concurrency", "0"}, "--concurrency"},
      {{"--concurrency", "2,x"}, "--concurrency"},
      {{"--request-rate", "-1"}, "--request-rate"},
      {{"--concurrency", "2", "--request-rate", "1"}, "--request-rate"},
      {{"--concurrency", "2", "--max-concurrency", "1"}, "--max-concurrency"},
      {{"--request-rate", "inf", "--duration", "5"}, "--request-rate"},
      {{"--duration", "0"}, "--duration"},
      {{"--len-distribution", "zipf"}, "--len-distribution"},
      {{"--input-len-range", "1:9"}, "--input-len-range"},
      {{"--len-distribution", "uniform", "--input-len-range", "200:300"}, "--input-len-range"},
      {{"--dataset", "x.jsonl", "--input-len", "5"}, "--input-len"},
      {{"--slo-ttft", "-1"}, "--slo-ttft"},
      {{"--num-requests", "0"}, "--num-requests"},
      {{"--bogus"}, "--bogus"},
  };
  for (const auto& [args, flag] : kBad) {
    auto parsed = Parse(args);
    ASSERT_FALSE(parsed.ok()) << flag;
    EXPECT_NE(std::string(parsed.status().message()).find(flag), std::string::npos)
        << parsed.status();
  }
}

}  // namespace
}  // namespace vg::client
