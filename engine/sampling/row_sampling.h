// RowSampling and RowSample: one logits row's sampling, handed to a backend that samples on its
// own device (the CUDA plugin) instead of returning the whole row to the host.
//
// The host keeps each request's state (sampler.h: the random stream and the penalty history) and
// describes one step of it as a RowSampling; the backend returns the chosen token as a RowSample;
// Sampler::Accept then records it. The backend must choose as Sampler::Sample would over the same
// logits: the same penalties, the same warpers, and the same inverse-CDF draw with `uniform` over
// the survivors in the same order (ascending id when neither top-k nor top-p is on; descending
// logit, ties by lower id, otherwise), so that only float rounding separates the two. Plain data.
#ifndef VG_ENGINE_SAMPLING_ROW_SAMPLING_H_
#define VG_ENGINE_SAMPLING_ROW_SAMPLING_H_

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "engine/sampling/sampling_params.h"

namespace vg::engine {

struct RowSampling {
  SamplingParams params;  // passed ValidateSamplingParams; `seed` is not used here
  // The request's next draw in [0, 1), peeked, not taken: used only when params.temperature > 0
  // and the penalized row has a finite logit (exactly when Sampler::Sample would draw).
  double uniform = 0.0;
  // The distinct ids of prompt and output, ascending; empty when repetition_penalty == 1.
  std::span<const int32_t> repetition_ids;
  // (id, count) of the output so far, ascending by id; empty when presence and frequency
  // penalties are both 0.
  std::span<const std::pair<int32_t, int32_t>> output_counts;
  int32_t top_logprobs = 0;  // 0..20
};

struct RowSample {
  int32_t token_id = 0;
  float logprob = 0.0f;         // of token_id under the raw (soft-capped) row
  std::vector<TopLogprob> top;  // top_logprobs most likely under the raw row, descending, ties by
                                // lower id
  bool used_uniform = false;    // the draw was consumed (Sampler::Accept advances the stream)
};

}  // namespace vg::engine

#endif  // VG_ENGINE_SAMPLING_ROW_SAMPLING_H_
