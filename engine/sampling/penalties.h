// Penalties: the history-dependent logit processors of one request.
//
// Two families, applied in this order (vLLM's order; transformers has only the first):
//   1. Repetition penalty, transformers' RepetitionPenaltyLogitsProcessor: for every DISTINCT id in
//      the prompt and the output so far, logit < 0 ? logit * penalty : logit / penalty. Applied
//      once per id, however often it occurs.
//   2. Presence and frequency penalties, OpenAI's definition: logit[j] -= frequency_penalty *
//      count[j] + presence_penalty * (count[j] > 0), with count[j] the occurrences of j in the
//      OUTPUT only (the prompt does not count).
// The history is sparse (sorted vectors of the ids seen), so a request costs memory in proportion
// to its distinct tokens, not to the vocabulary. Ids outside the row (negative or >= its size) are
// ignored, as transformers drops ids beyond the logits' vocabulary.
//
// ApplyPenalties is the same arithmetic over a history given as spans (a RowSampling's, for the
// CPU reference of on-device sampling, row_sampler.h).
//
// Thread-safety: used by one thread at a time (it belongs to one request's Sampler).
#ifndef VG_ENGINE_SAMPLING_PENALTIES_H_
#define VG_ENGINE_SAMPLING_PENALTIES_H_

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "engine/sampling/sampling_params.h"

namespace vg::engine {

// True when `params` switch on any penalty: repetition_penalty != 1, presence_penalty != 0 or
// frequency_penalty != 0.
bool AnyPenalty(const SamplingParams& params);

// Applies the penalties of `params` in place, repetition first, for the history
// `repetition_ids` (distinct ids of prompt and output) and `output_counts` ((id, count) of the
// output). Ids outside the row are ignored; -inf stays -inf.
void ApplyPenalties(const SamplingParams& params, std::span<const int32_t> repetition_ids,
                    std::span<const std::pair<int32_t, int32_t>> output_counts,
                    std::span<float> logits);

class Penalties {
 public:
  // Reads the three penalty fields of `params` (which must have passed ValidateSamplingParams) and
  // remembers the distinct ids of `prompt_token_ids` for the repetition penalty (nothing is kept
  // when that penalty is off).
  Penalties(const SamplingParams& params, std::span<const int32_t> prompt_token_ids);

  // True when any penalty would change some logit; when false, Apply is a no-op.
  bool active() const { return active_; }

  // Adds one generated token to the history.
  void Record(int32_t token_id);

  // Applies the penalties in place, repetition first. -inf stays -inf.
  void Apply(std::span<float> logits) const;

  // The history, as RowSampling carries it (row_sampling.h). Valid until the next Record.
  // The distinct ids of prompt and output, ascending; empty when the repetition penalty is 1.
  std::span<const int32_t> repetition_ids() const { return seen_; }
  // (id, count) of the output, ascending by id; empty when presence and frequency are both 0.
  std::span<const std::pair<int32_t, int32_t>> output_counts() const { return output_counts_; }

 private:
  SamplingParams params_;  // only the three penalty fields are read
  bool active_;
  std::vector<int32_t> seen_;                               // sorted distinct ids, prompt + output
  std::vector<std::pair<int32_t, int32_t>> output_counts_;  // (id, count) sorted by id
};

}  // namespace vg::engine

#endif  // VG_ENGINE_SAMPLING_PENALTIES_H_
