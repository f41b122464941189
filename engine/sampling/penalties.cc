#include "engine/sampling/penalties.h"

#include <algorithm>

namespace vg::engine {

bool AnyPenalty(const SamplingParams& params) {
  return params.repetition_penalty != 1.0f || params.presence_penalty != 0.0f ||
         params.frequency_penalty != 0.0f;
}

void ApplyPenalties(const SamplingParams& params, std::span<const int32_t> repetition_ids,
                    std::span<const std::pair<int32_t, int32_t>> output_counts,
                    std::span<float> logits) {
  const auto in_row = [&](int32_t id) {
    return id >= 0 && static_cast<size_t>(id) < logits.size();
  };
  for (int32_t id : repetition_ids) {
    if (!in_row(id)) continue;
    float& v = logits[id];
    v = v < 0.0f ? v * params.repetition_penalty : v / params.repetition_penalty;
  }
  for (const auto& [id, count] : output_counts) {
    if (!in_row(id)) continue;
    logits[id] -= params.frequency_penalty * static_cast<float>(count) + params.presence_penalty;
  }
}

Penalties::Penalties(const SamplingParams& params, std::span<const int32_t> prompt_token_ids)
    : params_(params), active_(AnyPenalty(params)) {
  if (params_.repetition_penalty == 1.0f) return;
  seen_.assign(prompt_token_ids.begin(), prompt_token_ids.end());
  std::sort(seen_.begin(), seen_.end());
  seen_.erase(std::unique(seen_.begin(), seen_.end()), seen_.end());
}

void Penalties::Record(int32_t token_id) {
  if (params_.repetition_penalty != 1.0f) {
    auto it = std::lower_bound(seen_.begin(), seen_.end(), token_id);
    if (it == seen_.end() || *it != token_id) seen_.insert(it, token_id);
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    auto it = std::lower_bound(output_counts_.begin(), output_counts_.end(), token_id,
                               [](const auto& entry, int32_t id) { return entry.first < id; });
    if (it == output_counts_.end() || it->first != token_id) {
      output_counts_.insert(it, {token_id, 1});
    } else {
      ++it->second;
    }
  }
}

void Penalties::Apply(std::span<float> logits) const {
  ApplyPenalties(params_, seen_, output_counts_, logits);
}

}  // namespace vg::engine
