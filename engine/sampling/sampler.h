// Sampler: turns one row of logits into a token id, reproducibly, as transformers' `generate`
// would with the same parameters.
//
// Per step, over the final (soft-capped) logits, in transformers' order:
//   1. penalties (penalties.h): repetition penalty over prompt + output, then OpenAI presence and
//      frequency penalties over the output (vLLM's place for them);
//   2. temperature 0: greedy, the first index of the maximum of the penalized logits (torch.argmax;
//      transformers' greedy search also runs the repetition penalty);
//   3. otherwise the warpers (warpers.h): temperature, top-k, top-p, min-p; then one draw from the
//      request's own random stream (xoshiro256** seeded through SplitMix64), so with a seed the
//      same logits give the same tokens on every machine and whatever else runs in the batch.
// The chosen token joins the penalty history. Reported log-probabilities are those of the model:
// log_softmax of the raw row, before any processor.
//
// A backend that samples on its own device (row_sampling.h) gets this step's DeviceRow instead of
// handing the row to Sample, and the token it chose comes back through Accept; row_sampler.h is
// the CPU reference of that contract.
//
// Thread-safety: a Sampler is used by one thread at a time (the engine loop). Movable.
#ifndef VG_ENGINE_SAMPLING_SAMPLER_H_
#define VG_ENGINE_SAMPLING_SAMPLER_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "engine/sampling/penalties.h"
#include "engine/sampling/row_sampling.h"
#include "engine/sampling/sampling_params.h"
#include "engine/sampling/warpers.h"

namespace vg::engine {

// OK, or INVALID_ARGUMENT naming the field: temperature not finite or < 0; top_k < 0; top_p
// outside (0, 1]; min_p outside [0, 1]; repetition_penalty not finite or <= 0; presence_penalty
// or frequency_penalty not finite or outside [-2, 2].
absl::Status ValidateSamplingParams(const SamplingParams& params);

// A small, fully specified generator (xoshiro256**), so sequences do not depend on the C++ library.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t Next();
  // Uniform in [0, 1) with 53 random bits.
  double NextDouble();

 private:
  uint64_t s_[4];
};

class Sampler {
 public:
  // `params` must have passed ValidateSamplingParams. `prompt_token_ids` feed the repetition
  // penalty (transformers applies it to every id in input_ids: prompt and output); the span is
  // not kept.
  Sampler(const SamplingParams& params, std::span<const int32_t> prompt_token_ids);

  struct Choice {
    int32_t token_id = 0;
    float logprob = 0.0f;         // of token_id under the raw logits
    std::vector<TopLogprob> top;  // the `top_logprobs` most likely under the raw logits,
                                  // descending, ties by lower id
  };

  // Picks the next token from `logits` (one row, the whole vocabulary) and records it for the
  // penalties. `top_logprobs` <= 0 reports none; more than the vocabulary reports all. Never fails:
  // NaN logits count as -inf; a row with no finite logit (or an empty row) yields token 0.
  // Cost: greedy without penalties is one argmax and one log-sum-exp; penalties copy the row;
  // sampling adds O(vocab) exps plus a partial sort only as deep as top-k / top-p reach.
  Choice Sample(std::span<const float> logits, int32_t top_logprobs = 0);

  // This step as a device samples it (row_sampling.h): the params, the next draw of the random
  // stream, peeked (the stream does not advance), and spans over the penalty history, which stay
  // valid until the next Accept or Sample on this Sampler (or its move or destruction).
  RowSampling DeviceRow(int32_t top_logprobs) const;

  // Records the token a device chose from this step's DeviceRow, as Sample records its own
  // choice: the random stream advances by one draw iff sample.used_uniform, and the token joins
  // the penalty history. Returns the Choice Sample would have returned (moved from `sample`).
  // Precondition: sample.token_id is in the vocabulary. The one difference from Sample: Sample
  // records nothing for an empty row, which a backend never produces.
  Choice Accept(RowSample sample);

 private:
  SamplingParams params_;
  Rng rng_;
  Penalties penalties_;
  std::vector<float> penalized_;  // scratch: the row after the penalties
  Candidates candidates_;         // scratch: the warpers' survivors
};

// Index of the first maximum (torch.argmax); NaN is never chosen; 0 for an empty row.
int32_t ArgMax(std::span<const float> logits);

// log_softmax(logits)[id], computed in double precision.
float LogProb(std::span<const float> logits, int32_t id);

// The `count` largest entries of log_softmax(logits), descending, ties by lower id (all of them if
// count exceeds the row). NaN counts as -inf.
std::vector<TopLogprob> TopLogprobs(std::span<const float> logits, int32_t count);

}  // namespace vg::engine

#endif  // VG_ENGINE_SAMPLING_SAMPLER_H_
