#include "client/bench/workload.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace vg::client {

uint64_t MixSeed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

int LengthSampler::Sample(std::mt19937_64& rng) const {
  switch (distribution_) {
    case LengthDistribution::kUniform:
      return std::uniform_int_distribution<int>(spec_.min, spec_.max)(rng);
    case LengthDistribution::kNormal: {
      if (spec_.max == spec_.min) return spec_.min;
      std::normal_distribution<double> normal(spec_.mean, (spec_.max - spec_.min) / 4.0);
      // Redraws are rare (the bounds are two standard deviations out, or more on one side);
      // the clamp only guards a pathological generator.
      for (int attempt = 0; attempt < 1000; ++attempt) {
        const int64_t value = std::llround(normal(rng));
        if (value >= spec_.min && value <= spec_.max) return static_cast<int>(value);
      }
      return spec_.mean;
    }
    default:
      return spec_.mean;
  }
}

double PoissonArrivals::NextGapSeconds() {
  if (std::isinf(rate_)) return 0;
  return std::exponential_distribution<double>(rate_)(rng_);
}

absl::StatusOr<std::vector<DatasetEntry>> ParseDataset(const std::string& text,
                                                       const std::string& name) {
  std::vector<DatasetEntry> entries;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == absl::string_view::npos) continue;
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(name, ":", line_number, ": ", what));
    };
    const nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
    if (j.is_discarded()) return bad("not valid JSON");
    if (!j.is_object()) return bad("not a JSON object");
    if (!j.contains("prompt") || !j["prompt"].is_string()) return bad("needs a string \"prompt\"");
    DatasetEntry entry;
    entry.prompt = j["prompt"].get<std::string>();
    if (entry.prompt.empty()) return bad("\"prompt\" is empty");
    if (j.contains("max_new_tokens")) {
      const nlohmann::json& n = j["max_new_tokens"];
      if (!n.is_number_integer() || n.get<int64_t>() < 1 || n.get<int64_t>() > (1 << 24)) {
        return bad("\"max_new_tokens\" must be a positive integer");
      }
      entry.max_new_tokens = n.get<int>();
    }
    entries.push_back(std::move(entry));
  }
  if (entries.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": no prompts"));
  return entries;
}

absl::StatusOr<std::vector<DatasetEntry>> LoadDataset(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseDataset(text.str(), path);
}

Workload::Workload(const BenchOptions& options, uint32_t vocab_size,
                   std::vector<DatasetEntry> entries)
    : input_(options.len_distribution, options.input_len),
      output_(options.len_distribution, options.output_len),
      default_output_len_(options.output_len.mean),
      seed_(options.seed),
      cache_salt_(options.cache_salt),
      vocab_size_(vocab_size),
      entries_(std::move(entries)) {}

Workload Workload::Synthetic(const BenchOptions& options, uint32_t vocab_size) {
  return Workload(options, vocab_size, {});
}

Workload Workload::FromDataset(const BenchOptions& options, std::vector<DatasetEntry> entries) {
  return Workload(options, 0, std::move(entries));
}

RequestSpec Workload::Make(uint64_t index) const {
  RequestSpec spec;
  // Unique per seed and index: synthetic prompts are random anyway, but a dataset cycles, and
  // repeated prompts hitting the prefix cache would flatter the server.
  spec.cache_salt =
      cache_salt_.empty() ? absl::StrCat("vaultgemma-bench-", seed_, "-", index) : cache_salt_;
  std::mt19937_64 rng(MixSeed(seed_, index));
  if (!entries_.empty()) {
    const DatasetEntry& entry = entries_[index % entries_.size()];
    spec.from_text = true;
    spec.prompt_text = entry.prompt;
    spec.max_new_tokens = static_cast<uint32_t>(entry.max_new_tokens > 0 ? entry.max_new_tokens
                                                                         : default_output_len_);
    return spec;
  }
  const int input_len = input_.Sample(rng);
  spec.max_new_tokens = static_cast<uint32_t>(output_.Sample(rng));
  std::uniform_int_distribution<uint32_t> id(kFirstSyntheticTokenId, vocab_size_ - 1);
  spec.prompt_ids.reserve(input_len);
  for (int i = 0; i < input_len; ++i) spec.prompt_ids.push_back(id(rng));
  return spec;
}

}  // namespace vg::client
