// Warpers: which tokens may be sampled from one row of (penalized) logits, and with what weight.
//
// Runs Hugging Face transformers' sampling warpers in the order GenerationMixin.
// _get_logits_processor appends them (transformers 5.24, generation/utils.py):
//   1. TemperatureLogitsWarper: logits / temperature.
//   2. TopKLogitsWarper: removes every logit strictly below the k-th largest, so ties with the
//      k-th are all kept.
//   3. TopPLogitsWarper: sorts ascending, takes the cumulative softmax, removes the tokens whose
//      cumulative probability is <= 1 - top_p, always keeps the most likely one. Equivalently, in
//      descending order a token survives while the mass strictly above it is < top_p.
//   4. MinPLogitsWarper: softmax of what survived so far (the temperature-scaled logits, after
//      top-k and top-p), removes the tokens with probability < min_p * the largest probability;
//      the top token always survives. min-p therefore sees temperature, as transformers notes
//      (applied after temperature scaling, per llama.cpp PR 3841), and runs LAST, after top-p.
// Top-p orders tied logits by lower id first. torch.sort is not stable on large rows, so where a
// tie straddles the top-p cut transformers' choice is arbitrary; ours is the lower id.
//
// Probabilities are computed in double precision from float logits.
#ifndef VG_ENGINE_SAMPLING_WARPERS_H_
#define VG_ENGINE_SAMPLING_WARPERS_H_

#include <cstdint>
#include <span>
#include <vector>

#include "engine/sampling/sampling_params.h"

namespace vg::engine {

// One surviving token: its id, its (penalized) logit and its unnormalised probability after
// temperature, exp(logit / T - max / T).
struct Candidate {
  int32_t id = 0;
  float logit = 0.0f;
  double weight = 0.0;
};

// The tokens that survive the warpers. Reused across calls so the vocabulary-sized buffer is
// allocated once per request. The order of `kept` is the order a draw walks, and part of the
// contract a device that samples must reproduce (row_sampling.h): ascending id when top_k == 0 and
// top_p == 1; otherwise descending logit, ties by lower id. Sorting the k survivors of top-k, or
// the prefix top-p keeps, costs little; a top_k at or beyond the vocabulary sorts all of it.
struct Candidates {
  std::vector<Candidate> kept;  // in the order above
  double total = 0.0;           // sum of the kept weights
};

// Runs the four warpers over `logits` and leaves the survivors in `out`. Preconditions:
// `params` passed ValidateSamplingParams and params.temperature > 0. NaN logits count as -inf;
// -inf logits never survive. `kept` is empty only when no logit is finite.
void SelectCandidates(const SamplingParams& params, std::span<const float> logits, Candidates* out);

// The inverse-CDF draw: the first of `candidates.kept`, in their order, whose cumulative weight
// exceeds uniform * total (the last one if rounding leaves the target past the end). Precondition:
// `kept` is non-empty and 0 <= uniform < 1.
int32_t DrawCandidate(const Candidates& candidates, double uniform);

}  // namespace vg::engine

#endif  // VG_ENGINE_SAMPLING_WARPERS_H_
