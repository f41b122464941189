// SamplingParams: how one request turns logits into tokens, and TopLogprob, what it reports.
// Plain data; see sampler.h.
#ifndef VG_ENGINE_SAMPLING_SAMPLING_PARAMS_H_
#define VG_ENGINE_SAMPLING_SAMPLING_PARAMS_H_

#include <cstdint>

namespace vg::engine {

struct SamplingParams {
  float temperature = 0.0f;         // 0 = greedy
  int32_t top_k = 0;                // 0 = off
  float top_p = 1.0f;               // 1 = off
  float min_p = 0.0f;               // 0 = off
  float repetition_penalty = 1.0f;  // transformers' semantics, over prompt and output; 1 = off
  float presence_penalty = 0.0f;    // OpenAI's semantics, over output tokens; in [-2, 2]
  float frequency_penalty = 0.0f;   // OpenAI's semantics, over output tokens; in [-2, 2]
  uint64_t seed = 0;                // the request's random stream
};

// One of the most likely tokens at a step, with its log-probability under the model's
// distribution (soft-capped logits, before any sampling processor).
struct TopLogprob {
  int32_t token_id = 0;
  float logprob = 0.0f;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_SAMPLING_SAMPLING_PARAMS_H_
