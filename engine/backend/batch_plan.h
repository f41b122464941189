// BatchPlan: the plain data one engine step hands to a Backend.
//
// Each entry is one sequence's slice of work for this step: the new tokens to run, the position of
// the first of them (= tokens already in the KV cache), and the block table covering every position
// up to the last new one. Prefill, chunked prefill and decode are the same thing at different
// lengths. The scheduler (engine/scheduler/) builds plans; the backend owns the tensors for block
// ids and never allocates or frees blocks itself.
#ifndef VG_ENGINE_BACKEND_BATCH_PLAN_H_
#define VG_ENGINE_BACKEND_BATCH_PLAN_H_

#include <cstdint>
#include <span>
#include <vector>

namespace vg::engine {

enum class LogitsMode : uint8_t {
  kNone,  // no logits for this entry (a prefill chunk that is not the last)
  kLast,  // logits of the last new token only (the usual case)
  kAll,   // logits of every new token (tests, prompt logprobs)
};

struct BatchEntry {
  int64_t sequence_id = 0;
  std::span<const int32_t> token_ids;    // new tokens this step; non-empty
  int32_t start_position = 0;            // position of token_ids[0]
  std::span<const int32_t> block_table;  // physical block i holds positions [i*B, (i+1)*B)
  LogitsMode logits = LogitsMode::kLast;
};

struct BatchPlan {
  std::vector<BatchEntry> entries;
};

// Logits a Forward call produced: rows in plan order (an entry with kAll contributes one row per
// new token, kLast one row, kNone none), each `vocab_size` floats after the final soft-cap.
struct Logits {
  int64_t vocab_size = 0;
  std::vector<float> values;       // rows * vocab_size
  std::vector<int32_t> row_entry;  // for each row, the index of its BatchEntry

  int64_t rows() const {
    return vocab_size == 0 ? 0 : static_cast<int64_t>(values.size()) / vocab_size;
  }
  std::span<const float> Row(int64_t r) const {
    return {values.data() + r * vocab_size, static_cast<size_t>(vocab_size)};
  }
};

}  // namespace vg::engine

#endif  // VG_ENGINE_BACKEND_BATCH_PLAN_H_
