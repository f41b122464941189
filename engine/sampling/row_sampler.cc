#include "engine/sampling/row_sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/sampling/penalties.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/warpers.h"

namespace vg::engine {
namespace {

// NaN compares false with everything; as -inf it can never be chosen (as in Sampler::Sample).
float Clean(float x) { return std::isnan(x) ? -std::numeric_limits<float>::infinity() : x; }

}  // namespace

RowSample SampleRow(std::span<const float> logits, const RowSampling& row) {
  RowSample sample;
  if (logits.empty()) return sample;

  std::span<const float> processed = logits;
  std::vector<float> penalized;
  if (AnyPenalty(row.params)) {
    penalized.resize(logits.size());
    std::transform(logits.begin(), logits.end(), penalized.begin(), Clean);
    ApplyPenalties(row.params, row.repetition_ids, row.output_counts, penalized);
    processed = penalized;
  }

  if (row.params.temperature == 0.0f) {
    sample.token_id = ArgMax(processed);
  } else {
    Candidates candidates;
    SelectCandidates(row.params, processed, &candidates);
    if (candidates.kept.empty()) {
      sample.token_id = ArgMax(processed);
    } else {
      sample.token_id = DrawCandidate(candidates, row.uniform);
      sample.used_uniform = true;
    }
  }

  sample.logprob = LogProb(logits, sample.token_id);
  sample.top = TopLogprobs(logits, row.top_logprobs);
  return sample;
}

}  // namespace vg::engine
