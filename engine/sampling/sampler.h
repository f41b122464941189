// Sampler: turns one row of logits into a token id, reproducibly.
//
// The processors run in Hugging Face's order (temperature, then top-k, then top-p) over the final,
// soft-capped logits. Temperature 0 means greedy: the first index of the maximum, as torch.argmax.
// A request's random stream is its own (xoshiro256** seeded through SplitMix64), so with a seed the
// same logits give the same tokens on every machine and whatever else runs in the batch.
// The engine issue adds min-p, penalties and top logprobs here.
//
// Thread-safety: a Sampler is used by one thread at a time (the engine loop).
#ifndef VG_ENGINE_SAMPLING_SAMPLER_H_
#define VG_ENGINE_SAMPLING_SAMPLER_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/sampling/sampling_params.h"

namespace vg::engine {


// INVALID_ARGUMENT naming the field: temperature negative or not finite, top_k negative,
// top_p outside (0, 1].
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
  // `params` must have passed ValidateSamplingParams.
  explicit Sampler(const SamplingParams& params);

  // Picks the next token from `logits` (one row, the vocabulary). Never fails for finite input;
  // NaN logits are treated as -infinity.
  int32_t Sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  Rng rng_;
  std::vector<int32_t> order_;   // scratch: candidate ids
  std::vector<double> weights_;  // scratch: candidate probabilities
};

// Index of the first maximum (torch.argmax); 0 for an empty row.
int32_t ArgMax(std::span<const float> logits);

// log_softmax(logits)[id], computed in double precision.
float LogProb(std::span<const float> logits, int32_t id);

}  // namespace vg::engine

#endif  // VG_ENGINE_SAMPLING_SAMPLER_H_
