#include "engine/sampling/penalties.h"

#include <algorithm>

namespace vg::engine {

Penalties::Penalties(const SamplingParams& params, std::span<const int32_t> prompt_token_ids)
    : repetition_penalty_(params.repetition_penalty),
      presence_penalty_(params.presence_penalty),
      frequency_penalty_(params.frequency_penalty),
      active_(params.repetition_penalty != 1.0f || params.presence_penalty != 0.0f ||
              params.frequency_penalty != 0.0f) {
  if (repetition_penalty_ == 1.0f) return;
  seen_.assign(prompt_token_ids.begin(), prompt_token_ids.end());
  std::sort(seen_.begin(), seen_.end());
  seen_.erase(std::unique(seen_.begin(), seen_.end()), seen_.end());
}

void Penalties::Record(int32_t token_id) {
  if (repetition_penalty_ != 1.0f) {
    auto it = std::lower_bound(seen_.begin(), seen_.end(), token_id);
    if (it == seen_.end() || *it != token_id) seen_.insert(it, token_id);
  }
  if (presence_penalty_ != 0.0f || frequency_penalty_ != 0.0f) {
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
  const auto in_row = [&](int32_t id) {
    return id >= 0 && static_cast<size_t>(id) < logits.size();
  };
  for (int32_t id : seen_) {
    if (!in_row(id)) continue;
    float& v = logits[id];
    v = v < 0.0f ? v * repetition_penalty_ : v / repetition_penalty_;
  }
  for (const auto& [id, count] : output_counts_) {
    if (!in_row(id)) continue;
    logits[id] -= frequency_penalty_ * static_cast<float>(count) + presence_penalty_;
  }
}

}  // namespace vg::engine
