#include "engine/backend/cpu/plan_validation.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace vg::engine::cpu {
namespace {

absl::Status EntryError(size_t index, const BatchEntry& entry, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("batch entry ", index, " (sequence ", entry.sequence_id, "): ", problem));
}

}  // namespace

absl::Status ValidatePlan(const BatchPlan& plan, const PlanLimits& limits) {
  // (physical slot, entry index) of every new token, to catch two writers of one slot.
  std::vector<std::pair<int64_t, size_t>> slots;
  for (size_t e = 0; e < plan.entries.size(); ++e) {
    const BatchEntry& entry = plan.entries[e];
    const int64_t len = static_cast<int64_t>(entry.token_ids.size());
    if (len == 0) return EntryError(e, entry, "token_ids is empty");
    if (entry.start_position < 0) {
      return EntryError(e, entry,
                        absl::StrCat("start_position ", entry.start_position, " is negative"));
    }
    const int64_t end = static_cast<int64_t>(entry.start_position) + len;  // one past the last
    if (end > limits.max_positions) {
      return EntryError(
          e, entry,
          absl::StrCat("positions [", entry.start_position, ", ", end, ") exceed the context of ",
                       limits.max_positions, " positions (max_position_embeddings)"));
    }
    for (int64_t i = 0; i < len; ++i) {
      const int32_t token = entry.token_ids[i];
      if (token < 0 || token >= limits.vocab_size) {
        return EntryError(e, entry,
                          absl::StrCat("token_ids[", i, "] = ", token,
                                       " is outside the vocabulary [0, ", limits.vocab_size, ")"));
      }
    }
    const int64_t blocks_needed = (end + limits.block_size - 1) / limits.block_size;
    if (static_cast<int64_t>(entry.block_table.size()) < blocks_needed) {
      return EntryError(
          e, entry,
          absl::StrCat("block_table has ", entry.block_table.size(), " blocks but positions up to ",
                       end - 1, " need ", blocks_needed, " of size ", limits.block_size));
    }
    for (int64_t b = 0; b < blocks_needed; ++b) {
      const int32_t block = entry.block_table[b];
      if (block < 0 || block >= limits.num_blocks) {
        return EntryError(e, entry,
                          absl::StrCat("block_table[", b, "] = ", block, " is outside [0, ",
                                       limits.num_blocks, ")"));
      }
    }
    for (int64_t p = entry.start_position; p < end; ++p) {
      const int64_t block = entry.block_table[p / limits.block_size];
      slots.emplace_back(block * limits.block_size + p % limits.block_size, e);
    }
  }
  std::sort(slots.begin(), slots.end());
  for (size_t i = 1; i < slots.size(); ++i) {
    if (slots[i].first == slots[i - 1].first) {
      const BatchEntry& entry = plan.entries[slots[i].second];
      return EntryError(slots[i].second, entry,
                        absl::StrCat("writes KV slot ", slots[i].first % limits.block_size,
                                     " of block ", slots[i].first / limits.block_size,
                                     ", which another new token of this plan (entry ",
                                     slots[i - 1].second, ") also writes"));
    }
  }
  return absl::OkStatus();
}

}  // namespace vg::engine::cpu
