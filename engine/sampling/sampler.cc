#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace vg::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t RotateLeft(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// NaN compares false with everything; map it to -inf so it can never be chosen.
float Clean(float x) { return std::isnan(x) ? kNegInf : x; }

// exp(x) for x <= 0, within 2e-7 relative error (Cephes' expf: x = n ln2 + r, a degree-6
// polynomial in r, then 2^n through the exponent bits). Below -87.3 it returns exp(-87.3), about
// 1.2e-38, instead of smaller values: negligible in a sum whose largest term is 1. Branch-free, so
// the loop over a 256000-entry vocabulary vectorises; a libm call per entry cost ~2 ms a token.
inline float ExpNonPositive(float x) {
  x = x < -87.3f ? -87.3f : x;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// log(sum(exp(logits))), summed in double, given the row's maximum; -inf for a row without
// finite logits.
double LogSumExp(std::span<const float> logits, float max_value) {
  if (max_value == kNegInf) return -std::numeric_limits<double>::infinity();
  double sum = 0.0;
  for (float v : logits) sum += static_cast<double>(ExpNonPositive(Clean(v) - max_value));
  return static_cast<double>(max_value) + std::log(sum);
}

float MaxOf(std::span<const float> logits) {
  float max_value = kNegInf;
  for (float v : logits) max_value = std::max(max_value, Clean(v));
  return max_value;
}

// log_softmax(x)[id] = x[id] - lse; -inf when the row has no finite logit.
float LogProbGivenLse(float value, double lse) {
  if (std::isinf(lse)) return kNegInf;
  return static_cast<float>(static_cast<double>(value) - lse);
}

// TopLogprobs with the row's log-sum-exp already known (or NaN to compute it here).
std::vector<TopLogprob> TopLogprobsGivenLse(std::span<const float> logits, int32_t count,
                                            double lse) {
  const size_t n = std::min(logits.size(), static_cast<size_t>(std::max(count, 0)));
  std::vector<TopLogprob> top;
  if (n == 0) return top;
  // A heap of the n best so far with the worst at the front: one pass, no vocabulary-sized buffer.
  std::vector<std::pair<float, int32_t>> heap;
  heap.reserve(n);
  const auto better = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  for (size_t i = 0; i < logits.size(); ++i) {
    const std::pair<float, int32_t> entry{Clean(logits[i]), static_cast<int32_t>(i)};
    if (heap.size() < n) {
      heap.push_back(entry);
      std::push_heap(heap.begin(), heap.end(), better);
    } else if (better(entry, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = entry;
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
  std::sort_heap(heap.begin(), heap.end(), better);
  if (std::isnan(lse)) lse = LogSumExp(logits, heap.front().first);
  top.reserve(n);
  for (const auto& [value, id] : heap) {
    top.push_back({.token_id = id, .logprob = LogProbGivenLse(value, lse)});
  }
  return top;
}

absl::Status OutOfRange(const char* field, const char* rule, float value) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be ", rule, ", got ", value));
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& params) {
  if (!std::isfinite(params.temperature) || params.temperature < 0.0f) {
    return OutOfRange("temperature", "a finite number >= 0", params.temperature);
  }
  if (params.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", params.top_k));
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return OutOfRange("top_p", "in (0, 1]", params.top_p);
  }
  if (!(params.min_p >= 0.0f && params.min_p <= 1.0f)) {
    return OutOfRange("min_p", "in [0, 1]", params.min_p);
  }
  if (!std::isfinite(params.repetition_penalty) || !(params.repetition_penalty > 0.0f)) {
    return OutOfRange("repetition_penalty", "a finite number > 0", params.repetition_penalty);
  }
  if (!(params.presence_penalty >= -2.0f && params.presence_penalty <= 2.0f)) {
    return OutOfRange("presence_penalty", "in [-2, 2]", params.presence_penalty);
  }
  if (!(params.frequency_penalty >= -2.0f && params.frequency_penalty <= 2.0f)) {
    return OutOfRange("frequency_penalty", "in [-2, 2]", params.frequency_penalty);
  }
  return absl::OkStatus();
}

Rng::Rng(uint64_t seed) {
  uint64_t state = seed;
  for (uint64_t& word : s_) word = SplitMix64(state);
}

uint64_t Rng::Next() {
  const uint64_t result = RotateLeft(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = RotateLeft(s_[3], 45);
  return result;
}

double Rng::NextDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

int32_t ArgMax(std::span<const float> logits) {
  int32_t best = 0;
  float best_value = kNegInf;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = Clean(logits[i]);
    if (v > best_value) {
      best_value = v;
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

float LogProb(std::span<const float> logits, int32_t id) {
  return LogProbGivenLse(Clean(logits[id]), LogSumExp(logits, MaxOf(logits)));
}

std::vector<TopLogprob> TopLogprobs(std::span<const float> logits, int32_t count) {
  return TopLogprobsGivenLse(logits, count, std::numeric_limits<double>::quiet_NaN());
}

Sampler::Sampler(const SamplingParams& params, std::span<const int32_t> prompt_token_ids)
    : params_(params), rng_(params.seed), penalties_(params, prompt_token_ids) {}

Sampler::Choice Sampler::Sample(std::span<const float> logits, int32_t top_logprobs) {
  Choice choice;
  if (logits.empty()) return choice;

  // One pass over the raw row gives its argmax (greedy's answer without penalties) and maximum.
  const int32_t raw_argmax = ArgMax(logits);
  const float raw_max = Clean(logits[raw_argmax]);

  std::span<const float> processed = logits;
  if (penalties_.active()) {
    penalized_.resize(logits.size());
    std::transform(logits.begin(), logits.end(), penalized_.begin(), Clean);
    penalties_.Apply(penalized_);
    processed = penalized_;
  }

  if (params_.temperature == 0.0f) {
    choice.token_id = penalties_.active() ? ArgMax(processed) : raw_argmax;
  } else {
    SelectCandidates(params_, processed, &candidates_);
    if (candidates_.kept.empty()) {
      choice.token_id = ArgMax(processed);
    } else {
      choice.token_id = DrawCandidate(candidates_, rng_.NextDouble());
    }
  }

  const double lse = LogSumExp(logits, raw_max);
  choice.logprob = LogProbGivenLse(Clean(logits[choice.token_id]), lse);
  if (top_logprobs > 0) choice.top = TopLogprobsGivenLse(logits, top_logprobs, lse);
  penalties_.Record(choice.token_id);
  return choice;
}

RowSampling Sampler::DeviceRow(int32_t top_logprobs) const {
  Rng peek = rng_;
  return RowSampling{.params = params_,
                     .uniform = peek.NextDouble(),
                     .repetition_ids = penalties_.repetition_ids(),
                     .output_counts = penalties_.output_counts(),
                     .top_logprobs = top_logprobs};
}

Sampler::Choice Sampler::Accept(RowSample sample) {
  if (sample.used_uniform) rng_.NextDouble();
  penalties_.Record(sample.token_id);
  return Choice{
      .token_id = sample.token_id, .logprob = sample.logprob, .top = std::move(sample.top)};
}

}  // namespace vg::engine
