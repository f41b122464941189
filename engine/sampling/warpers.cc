#include "engine/sampling/warpers.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace vg::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// NaN compares false with everything; as -inf it can never be chosen.
float Clean(float x) { return std::isnan(x) ? kNegInf : x; }

// Descending logit, ties by lower id: the one order every warper here uses.
bool Higher(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// Keeps the prefix of the descending order whose mass strictly above each token is < top_p. The
// prefix is usually short, so the order is built in growing chunks (nth_element, then a sort of
// the chunk) rather than by sorting the whole vocabulary.
void ApplyTopP(double top_p, std::vector<Candidate>& kept) {
  double total = 0.0;
  for (const Candidate& c : kept) total += c.weight;
  const double removed_at_or_below = 1.0 - top_p;
  size_t sorted_end = 0;
  size_t chunk = 64;
  double above = 0.0;  // mass of the tokens ranked above kept[i]
  for (size_t i = 0; i < kept.size(); ++i) {
    if (i == sorted_end) {
      const size_t next = std::min(kept.size(), sorted_end + chunk);
      if (next < kept.size()) {
        std::nth_element(kept.begin() + sorted_end, kept.begin() + next, kept.end(), Higher);
      }
      std::sort(kept.begin() + sorted_end, kept.begin() + next, Higher);
      sorted_end = next;
      chunk *= 4;
    }
    // transformers' cumulative probability at this token, summed from the least likely up.
    if (i > 0 && (total - above) / total <= removed_at_or_below) {
      kept.resize(i);
      return;
    }
    above += kept[i].weight;
  }
}

}  // namespace

void SelectCandidates(const SamplingParams& params, std::span<const float> logits,
                      Candidates* out) {
  std::vector<Candidate>& kept = out->kept;
  kept.clear();
  kept.reserve(logits.size());
  out->total = 0.0;
  float max_logit = kNegInf;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = Clean(logits[i]);
    if (v == kNegInf) continue;
    kept.push_back({.id = static_cast<int32_t>(i), .logit = v});
    max_logit = std::max(max_logit, v);
  }
  if (kept.empty()) return;

  // Top-k. Dividing by a positive temperature keeps the order, so it can run before the division.
  const size_t top_k = static_cast<size_t>(params.top_k);
  if (top_k > 0 && top_k < kept.size()) {
    std::nth_element(kept.begin(), kept.begin() + (top_k - 1), kept.end(), Higher);
    const float kth = kept[top_k - 1].logit;
    // The first k are >= kth; what follows is <= kth, and the ties with kth stay.
    kept.erase(std::partition(kept.begin() + top_k, kept.end(),
                              [&](const Candidate& c) { return c.logit == kth; }),
               kept.end());
  }
  // nth_element leaves the survivors in an order no device could reproduce; the draw walks the
  // canonical one (warpers.h).
  if (top_k > 0) std::sort(kept.begin(), kept.end(), Higher);

  // Temperature: softmax numerators of logit / T.
  const double temperature = params.temperature;
  const double max_scaled = static_cast<double>(max_logit) / temperature;
  for (Candidate& c : kept)
    c.weight = std::exp(static_cast<double>(c.logit) / temperature - max_scaled);

  if (params.top_p < 1.0f) ApplyTopP(params.top_p, kept);

  // Min-p, relative to the most likely survivor, whose weight is exp(0) = 1: top-k and top-p both
  // keep the maximum.
  if (params.min_p > 0.0f) {
    const double min_ratio = params.min_p;
    kept.erase(std::remove_if(kept.begin(), kept.end(),
                              [&](const Candidate& c) { return c.weight < min_ratio; }),
               kept.end());
  }

  for (const Candidate& c : kept) out->total += c.weight;
}

int32_t DrawCandidate(const Candidates& candidates, double uniform) {
  const double target = uniform * candidates.total;
  double cumulative = 0.0;
  for (const Candidate& c : candidates.kept) {
    cumulative += c.weight;
    if (target < cumulative) return c.id;
  }
  return candidates.kept.back().id;
}

}  // namespace vg::engine
