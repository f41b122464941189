#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace vg::engine {
namespace {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t RotateLeft(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// NaN compares false with everything; map it to -inf so it can never be chosen.
float Clean(float x) { return std::isnan(x) ? -std::numeric_limits<float>::infinity() : x; }

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& params) {
  if (!std::isfinite(params.temperature) || params.temperature < 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be a finite number >= 0, got ", params.temperature));
  }
  if (params.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", params.top_k));
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", params.top_p));
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
  float best_value = -std::numeric_limits<float>::infinity();
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
  double max_value = -std::numeric_limits<double>::infinity();
  for (float v : logits) max_value = std::max(max_value, static_cast<double>(Clean(v)));
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(Clean(v)) - max_value);
  return static_cast<float>(static_cast<double>(Clean(logits[id])) - max_value - std::log(sum));
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

int32_t Sampler::Sample(std::span<const float> logits) {
  if (params_.temperature == 0.0f || logits.empty()) return ArgMax(logits);

  // Candidates sorted by logit, descending; ties keep the lower id first so the order (and thus
  // the sample for a given random draw) is fully determined.
  const int32_t vocab = static_cast<int32_t>(logits.size());
  order_.resize(vocab);
  std::iota(order_.begin(), order_.end(), 0);
  int32_t keep = vocab;
  auto by_logit = [&](int32_t a, int32_t b) {
    const float la = Clean(logits[a]), lb = Clean(logits[b]);
    return la > lb || (la == lb && a < b);
  };
  if (params_.top_k > 0 && params_.top_k < vocab) {
    keep = params_.top_k;
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), by_logit);
    // Hugging Face's TopKLogitsWarper keeps every token tied with the k-th logit.
    const float kth = Clean(logits[order_[keep - 1]]);
    std::sort(order_.begin() + keep, order_.end(), by_logit);
    while (keep < vocab && Clean(logits[order_[keep]]) == kth) ++keep;
  } else {
    std::sort(order_.begin(), order_.end(), by_logit);
  }

  // Softmax of logits / temperature over the kept candidates.
  const double inv_t = 1.0 / params_.temperature;
  const double top = static_cast<double>(Clean(logits[order_[0]])) * inv_t;
  weights_.resize(keep);
  double total = 0.0;
  for (int32_t i = 0; i < keep; ++i) {
    weights_[i] = std::exp(static_cast<double>(Clean(logits[order_[i]])) * inv_t - top);
    total += weights_[i];
  }

  // Top-p: the smallest prefix whose mass reaches top_p (at least one token), as Hugging Face's
  // TopPLogitsWarper keeps it.
  if (params_.top_p < 1.0f) {
    double cumulative = 0.0;
    int32_t cut = keep;
    for (int32_t i = 0; i < keep; ++i) {
      cumulative += weights_[i] / total;
      if (cumulative >= params_.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = std::max<int32_t>(cut, 1);
    total = std::accumulate(weights_.begin(), weights_.begin() + keep, 0.0);
  }

  const double target = rng_.NextDouble() * total;
  double cumulative = 0.0;
  for (int32_t i = 0; i < keep; ++i) {
    cumulative += weights_[i];
    if (target < cumulative) return order_[i];
  }
  return order_[keep - 1];
}

}  // namespace vg::engine
