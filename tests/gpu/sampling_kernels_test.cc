// Tests of engine/backend/cuda/kernels/sampling.h against the CPU sampler (engine/sampling).
//
// Verified: SampleRows over batches that mix every kind of row (greedy; greedy with each penalty;
// temperature alone and with min-p; top-k with k = 1, ties at the k-th value and k > vocab; top-p
// 0.5 and 0.9, with ties at the cut; everything combined; NaN and -inf entries; rows with no
// finite logit; -0.0 next to +0.0), at vocab 97, 1000 and 256000, top_logprobs 0/1/5/20. The
// reference is the CPU's own code: Penalties, ArgMax, SelectCandidates, LogProb, TopLogprobs, with
// the survivors put in the order row_sampling.h names and the same inverse-CDF draw with the same
// uniform. Outputs are poisoned (0xFF) before each call.
// Tolerances: token, used_uniform and top ids exact; log-probabilities within 1e-4 absolute (the
// device sums in parallel and uses its own exp). A draw landing within 1e-9 of the total weight
// from a bin boundary may take either neighbour: the device's parallel double sums and its exp
// move the boundaries by ~1e-15 relative, so that is the only place the two may honestly differ.
// Not verified: performance, concurrent calls on several streams, rows * vocab over INT32_MAX.
// Without a CUDA device every test skips with "no CUDA device: <error>".
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/backend/cuda/kernels/sampling.h"
#include "engine/sampling/penalties.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/sampling_params.h"
#include "engine/sampling/warpers.h"
#include "tests/gpu/device_buffer.h"

namespace vg::engine::cuda {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// One row to sample: its logits, parameters and the request's history.
struct RowCase {
  std::string name;
  std::vector<float> logits;
  SamplingParams params;
  double uniform = 0.0;
  int32_t top_logprobs = 0;
  std::vector<int32_t> prompt;  // may hold ids outside the row: they are ignored
  std::vector<int32_t> output;  // generated so far, with repeats
};

// What the CPU chooses, and which tokens a draw near a bin boundary may also honestly pick.
struct Expected {
  int32_t token = 0;
  std::set<int32_t> acceptable;
  bool used_uniform = false;
  float logprob = 0.0f;
  std::vector<TopLogprob> top;
};

float Clean(float x) { return std::isnan(x) ? kNegInf : x; }

Expected Reference(const RowCase& c) {
  Expected e;
  Penalties penalties(c.params, c.prompt);
  for (int32_t id : c.output) penalties.Record(id);
  std::vector<float> penalized(c.logits.size());
  std::transform(c.logits.begin(), c.logits.end(), penalized.begin(), Clean);
  penalties.Apply(penalized);
  if (c.params.temperature == 0.0f) {
    e.token = ArgMax(penalized);
  } else {
    Candidates candidates;
    SelectCandidates(c.params, penalized, &candidates);
    if (candidates.kept.empty()) {
      e.token = ArgMax(penalized);
    } else {
      std::vector<Candidate>& kept = candidates.kept;
      // row_sampling.h's order: ascending id without top-k and top-p, else descending logit with
      // ties by lower id (SelectCandidates' top-k order is being changed to that).
      if (c.params.top_k > 0 || c.params.top_p < 1.0f) {
        std::stable_sort(kept.begin(), kept.end(), [](const Candidate& a, const Candidate& b) {
          return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
        });
      } else {
        std::sort(kept.begin(), kept.end(),
                  [](const Candidate& a, const Candidate& b) { return a.id < b.id; });
      }
      const double target = c.uniform * candidates.total;
      const double slack = 1e-9 * candidates.total;
      double cumulative = 0.0;
      e.token = kept.back().id;
      bool found = false;
      for (const Candidate& k : kept) {
        const double before = cumulative;
        cumulative += k.weight;
        if (!found && target < cumulative) {
          e.token = k.id;
          found = true;
        }
        if (k.weight > 0.0 && before - slack <= target && target < cumulative + slack) {
          e.acceptable.insert(k.id);
        }
      }
      if (target >= cumulative - slack) e.acceptable.insert(kept.back().id);
      e.used_uniform = true;
    }
  }
  e.acceptable.insert(e.token);
  e.logprob = LogProb(c.logits, e.token);
  e.top = TopLogprobs(c.logits, c.top_logprobs);
  return e;
}

void ExpectLogprobNear(float actual, float expected, const std::string& what) {
  if (std::isinf(expected)) {
    EXPECT_EQ(actual, expected) << what;
  } else {
    EXPECT_NEAR(actual, expected, 1e-4) << what;
  }
}

// Samples `cases` (all of one vocabulary size) in one SampleRows call and checks every row.
void CheckBatch(const std::vector<RowCase>& cases) {
  const int rows = static_cast<int>(cases.size());
  const int vocab = static_cast<int>(cases[0].logits.size());
  std::vector<float> logits;
  std::vector<DeviceSamplingRow> params(rows);
  std::vector<int32_t> repetition_ids, count_ids, count_values;
  for (int r = 0; r < rows; ++r) {
    const RowCase& c = cases[r];
    ASSERT_EQ(static_cast<int>(c.logits.size()), vocab);
    logits.insert(logits.end(), c.logits.begin(), c.logits.end());
    DeviceSamplingRow& p = params[r];
    p.uniform = c.uniform;
    p.temperature = c.params.temperature;
    p.top_p = c.params.top_p;
    p.min_p = c.params.min_p;
    p.repetition_penalty = c.params.repetition_penalty;
    p.presence_penalty = c.params.presence_penalty;
    p.frequency_penalty = c.params.frequency_penalty;
    p.top_k = c.params.top_k;
    p.top_logprobs = c.top_logprobs;
    // As RowSampling carries them: empty where the penalty is off.
    p.repetition_begin = static_cast<int32_t>(repetition_ids.size());
    if (c.params.repetition_penalty != 1.0f) {
      std::set<int32_t> seen(c.prompt.begin(), c.prompt.end());
      seen.insert(c.output.begin(), c.output.end());
      repetition_ids.insert(repetition_ids.end(), seen.begin(), seen.end());
    }
    p.repetition_count = static_cast<int32_t>(repetition_ids.size()) - p.repetition_begin;
    p.counts_begin = static_cast<int32_t>(count_ids.size());
    if (c.params.presence_penalty != 0.0f || c.params.frequency_penalty != 0.0f) {
      std::map<int32_t, int32_t> counts;
      for (int32_t id : c.output) ++counts[id];
      for (const auto& [id, n] : counts) {
        count_ids.push_back(id);
        count_values.push_back(n);
      }
    }
    p.counts_count = static_cast<int32_t>(count_ids.size()) - p.counts_begin;
  }

  size_t scratch_bytes = 0;
  CUDA_OK(SampleRowsScratchBytes(rows, vocab, &scratch_bytes));
  DeviceBuffer<float> d_logits(logits);
  DeviceBuffer<DeviceSamplingRow> d_params(params);
  DeviceBuffer<int32_t> d_repetition(repetition_ids);
  DeviceBuffer<int32_t> d_count_ids(count_ids);
  DeviceBuffer<int32_t> d_count_values(count_values);
  DeviceBuffer<char> d_scratch(scratch_bytes);
  DeviceBuffer<DeviceSample> d_out(static_cast<size_t>(rows));  // poisoned
  const bool any_row_sorts = std::any_of(params.begin(), params.end(), NeedsSort);
  CUDA_OK(SampleRows(d_logits.get(), rows, vocab, d_params.get(), d_repetition.get(),
                     d_count_ids.get(), d_count_values.get(), d_scratch.get(), scratch_bytes,
                     any_row_sorts, d_out.get(), nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<DeviceSample> out = d_out.Download();
  if (!any_row_sorts) {  // skipping the sort changes nothing for rows that do not need it
    DeviceBuffer<DeviceSample> d_sorted(static_cast<size_t>(rows));
    CUDA_OK(SampleRows(d_logits.get(), rows, vocab, d_params.get(), d_repetition.get(),
                       d_count_ids.get(), d_count_values.get(), d_scratch.get(), scratch_bytes,
                       /*any_row_sorts=*/true, d_sorted.get(), nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<DeviceSample> sorted = d_sorted.Download();
    for (int r = 0; r < rows; ++r) {
      EXPECT_EQ(sorted[r].token_id, out[r].token_id) << "row " << r;
      EXPECT_EQ(sorted[r].used_uniform, out[r].used_uniform) << "row " << r;
    }
  }

  for (int r = 0; r < rows; ++r) {
    const RowCase& c = cases[r];
    const std::string what =
        c.name + " (vocab " + std::to_string(vocab) + ", row " + std::to_string(r) + ")";
    const Expected e = Reference(c);
    const DeviceSample& s = out[r];
    EXPECT_TRUE(e.acceptable.count(s.token_id) > 0)
        << what << ": device token " << s.token_id << ", CPU token " << e.token;
    if (s.token_id == e.token) ExpectLogprobNear(s.logprob, e.logprob, what + " logprob");
    EXPECT_EQ(s.used_uniform, e.used_uniform ? 1 : 0) << what;
    ASSERT_EQ(s.top_count, static_cast<int32_t>(e.top.size())) << what;
    for (size_t k = 0; k < e.top.size(); ++k) {
      EXPECT_EQ(s.top_ids[k], e.top[k].token_id) << what << " top " << k;
      ExpectLogprobNear(s.top_logprobs[k], e.top[k].logprob, what + " top " + std::to_string(k));
    }
  }
}

std::vector<float> RandomLogits(int vocab, std::mt19937& rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(vocab);
  for (float& x : v) x = dist(rng);
  return v;
}

// Few distinct values, so ties everywhere (top-k's k-th value, top-p's cut); zeros of both signs.
std::vector<float> TiedLogits(int vocab, std::mt19937& rng) {
  std::uniform_int_distribution<int> dist(-6, 6);
  std::vector<float> v(vocab);
  for (int i = 0; i < vocab; ++i) {
    const int k = dist(rng);
    v[i] = k == 0 ? (i % 2 == 0 ? -0.0f : 0.0f) : 0.5f * static_cast<float>(k);
  }
  return v;
}

std::vector<RowCase> Cases(int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::uniform_int_distribution<int32_t> any_id(0, vocab - 1);
  std::vector<RowCase> cases;
  const auto add = [&](std::string name, std::vector<float> logits, SamplingParams params) {
    RowCase c;
    c.name = std::move(name);
    c.logits = std::move(logits);
    c.params = params;
    c.uniform = uniform(rng);
    static constexpr int32_t kTops[] = {0, 1, 5, 20};
    c.top_logprobs = kTops[cases.size() % 4];
    c.prompt = {-1, vocab + 3};  // outside the row: ignored
    for (int i = 0; i < 12; ++i) c.prompt.push_back(any_id(rng));
    for (int i = 0; i < 10; ++i) c.output.push_back(any_id(rng));
    // Make penalties matter: repeat the row's best token in the history.
    const auto best = std::max_element(c.logits.begin(), c.logits.end(),
                                       [](float a, float b) { return Clean(a) < Clean(b); });
    const int32_t best_id = static_cast<int32_t>(best - c.logits.begin());
    c.output.push_back(best_id);
    c.output.push_back(best_id);
    cases.push_back(std::move(c));
  };
  const auto params = [](float temperature, int32_t top_k, float top_p, float min_p) {
    SamplingParams p;
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    return p;
  };
  const auto penalized = [](SamplingParams p, float repetition, float presence, float frequency) {
    p.repetition_penalty = repetition;
    p.presence_penalty = presence;
    p.frequency_penalty = frequency;
    return p;
  };

  add("greedy", RandomLogits(vocab, rng, 3.0f), params(0, 0, 1, 0));
  add("greedy+repetition", RandomLogits(vocab, rng, 3.0f),
      penalized(params(0, 0, 1, 0), 1.3f, 0, 0));
  // All negative: the penalty multiplies the repeated best token down instead of dividing it.
  std::vector<float> negative = RandomLogits(vocab, rng, 0.3f);
  for (float& v : negative) v -= 20.0f;
  add("greedy+repetition, negative row", negative, penalized(params(0, 0, 1, 0), 1.3f, 0, 0));
  add("greedy+presence", RandomLogits(vocab, rng, 0.5f), penalized(params(0, 0, 1, 0), 1, 1.5f, 0));
  add("greedy+frequency", RandomLogits(vocab, rng, 0.5f),
      penalized(params(0, 0, 1, 0), 1, 0, 0.9f));
  add("greedy, ties", TiedLogits(vocab, rng), params(0, 0, 1, 0));
  add("temperature", RandomLogits(vocab, rng, 3.0f), params(0.8f, 0, 1, 0));
  add("temperature, flat", RandomLogits(vocab, rng, 0.1f), params(1.0f, 0, 1, 0));
  add("temperature+min_p", RandomLogits(vocab, rng, 3.0f), params(1.3f, 0, 1, 0.1f));
  add("top_k=1", RandomLogits(vocab, rng, 3.0f), params(1.0f, 1, 1, 0));
  add("top_k=5, ties", TiedLogits(vocab, rng), params(1.0f, 5, 1, 0));
  add("top_k=40", RandomLogits(vocab, rng, 2.0f), params(0.9f, 40, 1, 0));
  add("top_k>vocab", RandomLogits(vocab, rng, 2.0f), params(1.0f, vocab + 10, 1, 0));
  add("top_p=0.5", RandomLogits(vocab, rng, 2.0f), params(1.0f, 0, 0.5f, 0));
  add("top_p=0.9", RandomLogits(vocab, rng, 1.0f), params(0.7f, 0, 0.9f, 0));
  add("top_p=0.9, ties", TiedLogits(vocab, rng), params(1.0f, 0, 0.9f, 0));
  add("top_p=0.5, ties", TiedLogits(vocab, rng), params(1.0f, 0, 0.5f, 0));
  add("all combined", RandomLogits(vocab, rng, 3.0f),
      penalized(params(0.7f, 40, 0.9f, 0.05f), 1.2f, 0.5f, 0.3f));
  add("all combined, ties", TiedLogits(vocab, rng),
      penalized(params(1.5f, 7, 0.8f, 0.02f), 0.8f, -0.5f, -0.2f));
  add("top_k=3+penalties", RandomLogits(vocab, rng, 3.0f),
      penalized(params(1.0f, 3, 1, 0), 1.5f, 2.0f, 0));

  // Only zeros of both signs at the top: the sorted order must tie -0.0 with +0.0 (then by id).
  std::vector<float> zeros(vocab);
  for (int i = 0; i < vocab; ++i) zeros[i] = i % 3 == 0 ? -0.0f : (i % 3 == 1 ? 0.0f : -1.0f);
  add("signed zeros, top_k", zeros, params(1.0f, 5, 1, 0));
  add("signed zeros, top_p", zeros, params(1.0f, 0, 0.6f, 0));

  // NaN and -inf entries (never the whole row).
  std::vector<float> holes = RandomLogits(vocab, rng, 3.0f);
  for (int i = 0; i < vocab; i += 3) holes[i] = i % 2 == 0 ? kNaN : kNegInf;
  add("holes, greedy", holes, params(0, 0, 1, 0));
  add("holes, temperature", holes, params(1.0f, 0, 1, 0.01f));
  add("holes, top_p", holes, penalized(params(1.0f, 0, 0.8f, 0), 1.1f, 0, 0));
  add("holes, top_k", holes, params(1.0f, 20, 1, 0));

  // No finite logit: token 0, no draw, -inf log-probabilities.
  std::vector<float> empty(vocab, kNegInf);
  for (int i = 1; i < vocab; i += 4) empty[i] = kNaN;
  add("no finite, greedy", empty, params(0, 0, 1, 0));
  add("no finite, temperature", empty, penalized(params(1.0f, 0, 1, 0), 1.2f, 0.5f, 0));
  add("no finite, top_k", empty, params(1.0f, 5, 0.9f, 0.1f));

  // Extreme draws.
  add("uniform 0", RandomLogits(vocab, rng, 2.0f), params(1.0f, 0, 0.95f, 0));
  cases.back().uniform = 0.0;
  add("uniform ~1", RandomLogits(vocab, rng, 2.0f), params(1.0f, 0, 1, 0));
  cases.back().uniform = std::nextafter(1.0, 0.0);
  add("uniform ~1, sorted", RandomLogits(vocab, rng, 2.0f), params(1.0f, 50, 1, 0));
  cases.back().uniform = std::nextafter(1.0, 0.0);
  return cases;
}

class SamplingKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) GTEST_SKIP() << "no CUDA device: " << cudaGetErrorString(err);
    if (count == 0) GTEST_SKIP() << "no CUDA device: cudaGetDeviceCount returned 0";
  }
};

TEST_F(SamplingKernelsTest, MatchesCpuSamplerVocab97) { CheckBatch(Cases(97, 1)); }
TEST_F(SamplingKernelsTest, MatchesCpuSamplerVocab1000) { CheckBatch(Cases(1000, 2)); }
TEST_F(SamplingKernelsTest, MatchesCpuSamplerVocab256000) { CheckBatch(Cases(256000, 3)); }

// Batches in which no row needs the sort (greedy, penalties, temperature and min-p only): the
// sort's launches are skipped, and CheckBatch also compares with a run that sorts anyway.
TEST_F(SamplingKernelsTest, BatchesWithoutSortedRowsMatchCpu) {
  for (const int vocab : {97, 256000}) {
    std::vector<RowCase> unsorted;
    for (RowCase& c : Cases(vocab, 4)) {
      if (c.params.temperature > 0.0f && (c.params.top_k > 0 || c.params.top_p < 1.0f)) continue;
      unsorted.push_back(std::move(c));
    }
    ASSERT_GE(unsorted.size(), 4u);
    CheckBatch(unsorted);
  }
}

// Many draws of one row at several uniforms: the inverse CDF walks every bin, not one.
TEST_F(SamplingKernelsTest, ManyUniformsMatchCpu) {
  std::mt19937 rng(4);
  const std::vector<float> logits = RandomLogits(300, rng, 1.5f);
  std::vector<RowCase> cases;
  for (int i = 0; i < 64; ++i) {
    RowCase c;
    c.name = "uniform sweep " + std::to_string(i);
    c.logits = logits;
    c.params.temperature = 1.0f;
    c.params.top_k = i % 2 == 0 ? 0 : 100;
    c.params.top_p = i % 3 == 0 ? 0.8f : 1.0f;
    c.params.min_p = i % 5 == 0 ? 0.05f : 0.0f;
    c.uniform = (i + 0.5) / 64.0;
    cases.push_back(c);
  }
  CheckBatch(cases);
}

TEST_F(SamplingKernelsTest, RejectsBadSizesAndSmallScratch) {
  size_t bytes = 0;
  EXPECT_EQ(SampleRowsScratchBytes(2, 0, &bytes), cudaErrorInvalidValue);
  EXPECT_EQ(SampleRowsScratchBytes(-1, 10, &bytes), cudaErrorInvalidValue);
  EXPECT_EQ(SampleRowsScratchBytes(1 << 16, 1 << 16, &bytes), cudaErrorInvalidValue);
  EXPECT_EQ(SampleRows(nullptr, 0, 10, nullptr, nullptr, nullptr, nullptr, nullptr, 0, true,
                       nullptr, nullptr),
            cudaSuccess);
  CUDA_OK(SampleRowsScratchBytes(2, 10, &bytes));
  DeviceBuffer<float> logits(20);
  DeviceBuffer<DeviceSamplingRow> params(2);
  DeviceBuffer<char> scratch(bytes);
  DeviceBuffer<DeviceSample> out(2);
  EXPECT_EQ(SampleRows(logits.get(), 2, 10, params.get(), nullptr, nullptr, nullptr, scratch.get(),
                       bytes - 1, true, out.get(), nullptr),
            cudaErrorInvalidValue);
}

}  // namespace
}  // namespace vg::engine::cuda
