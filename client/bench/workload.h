// What vaultgemma-bench sends and when: the prompts (synthetic token ids drawn from the model's
// vocabulary, or the lines of a JSONL dataset) and the Poisson arrival times of open-loop stages.
// Everything here is deterministic given a seed, and knows nothing of gRPC.
//
// Synthetic prompts are token ids, which the server uses as given (no BOS added), so a prompt of
// N ids is exactly N prompt tokens; outputs use ignore_eos with max_new_tokens, so the output
// length is exact too (unless the context runs out).
#ifndef VG_CLIENT_BENCH_WORKLOAD_H_
#define VG_CLIENT_BENCH_WORKLOAD_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/bench/options.h"

namespace vg::client {

// Synthetic prompt ids are drawn uniformly from [kFirstSyntheticTokenId, vocab_size): the ids
// below it are Gemma's pad, eos, bos and unk.
inline constexpr uint32_t kFirstSyntheticTokenId = 4;

// One request to send. Exactly one of prompt_ids / prompt_text is used (text when from_text).
struct RequestSpec {
  bool from_text = false;
  std::vector<uint32_t> prompt_ids;
  std::string prompt_text;
  uint32_t max_new_tokens = 0;
  std::string cache_salt;
};

// Draws lengths in [spec.min, spec.max]: fixed = spec.mean; uniform = every integer equally likely;
// normal = mean spec.mean, standard deviation (max - min) / 4, redrawn until inside the bounds
// (truncated normal). Thread-compatible; the generator is the caller's.
class LengthSampler {
 public:
  LengthSampler(LengthDistribution distribution, LengthSpec spec)
      : distribution_(distribution), spec_(spec) {}
  int Sample(std::mt19937_64& rng) const;

 private:
  LengthDistribution distribution_;
  LengthSpec spec_;
};

// Inter-arrival gaps of a Poisson process of `rate` requests per second (exponential gaps, mean
// 1/rate). A rate of +infinity gives gaps of 0. Deterministic for a seed. Not thread-safe.
class PoissonArrivals {
 public:
  PoissonArrivals(double rate, uint64_t seed) : rate_(rate), rng_(seed) {}
  double NextGapSeconds();

 private:
  double rate_;
  std::mt19937_64 rng_;
};

// One line of a dataset: {"prompt": "...", "max_new_tokens": N} (max_new_tokens optional).
struct DatasetEntry {
  std::string prompt;
  int max_new_tokens = 0;  // 0: not given, use --output-len
};

// Parses JSONL text (blank lines skipped). INVALID_ARGUMENT "NAME:LINE: what is wrong" for a line
// that is not a JSON object, lacks a string "prompt", or has a max_new_tokens that is not a
// positive integer; also for a dataset without any entry.
absl::StatusOr<std::vector<DatasetEntry>> ParseDataset(const std::string& text,
                                                       const std::string& name);
// Reads and parses a file; NOT_FOUND when it cannot be read.
absl::StatusOr<std::vector<DatasetEntry>> LoadDataset(const std::string& path);

// Makes the request with a given global index. Request i is the same whatever order the calls
// come in (its generator is seeded from the seed and i), so runs with one seed send the same
// prompts. Thread-compatible (const after construction).
class Workload {
 public:
  // Synthetic token-id prompts over a vocabulary of `vocab_size` ids (> kFirstSyntheticTokenId).
  static Workload Synthetic(const BenchOptions& options, uint32_t vocab_size);
  // Dataset prompts, in file order, cycling when the run needs more requests than lines.
  static Workload FromDataset(const BenchOptions& options, std::vector<DatasetEntry> entries);

  RequestSpec Make(uint64_t index) const;

 private:
  Workload(const BenchOptions& options, uint32_t vocab_size, std::vector<DatasetEntry> entries);

  LengthSampler input_;
  LengthSampler output_;
  int default_output_len_;
  uint64_t seed_;
  std::string cache_salt_;
  uint32_t vocab_size_;
  std::vector<DatasetEntry> entries_;
};

// A well-mixed 64-bit seed for stream `stream` of seed `seed` (SplitMix64).
uint64_t MixSeed(uint64_t seed, uint64_t stream);

}  // namespace vg::client

#endif  // VG_CLIENT_BENCH_WORKLOAD_H_
