// Scheduler: continuous (iteration-level) batching over the paged KV pool, in the manner of Orca
// and vLLM v1.
//
// Each step has a token budget (max_batched_tokens) and a sequence limit (max_num_seqs). Running
// sequences are served first, oldest admission first, each with all its uncomputed tokens up to
// the remaining budget (1 for a decode; a chunk for a prompt still being prefilled: chunked
// prefill, so running streams keep flowing while a long prompt goes in). Then waiting sequences are
// admitted in arrival order while the budget, the sequence limit and the free KV blocks allow,
// after reusing any cached prefix blocks. When a running sequence needs a block and none can be
// had, the most recently admitted running sequence is preempted: its blocks are released and it
// goes back to the front of the queue, to be recomputed from its tokens (prompt and generated)
// later. Nothing is admitted in a step that preempted, so a preempted sequence is not overtaken.
//
// The scheduler owns each sequence's token list and how much of it is computed; the engine owns
// sampling, text and sinks. Thread-safety: none; the engine loop thread owns it.
#ifndef VG_ENGINE_SCHEDULER_SCHEDULER_H_
#define VG_ENGINE_SCHEDULER_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "engine/kv/kv_cache_manager.h"

namespace vg::engine {

struct SchedulerOptions {
  int32_t max_num_seqs = 16;
  int32_t max_batched_tokens = 512;
};

// One sequence's share of a step: tokens [start, start + num_tokens) of its token list.
struct ScheduledChunk {
  int64_t seq_id = 0;
  int32_t start = 0;
  int32_t num_tokens = 0;
  bool samples = false;  // the chunk reaches the end of the known tokens: sample the next one
};

struct StepSchedule {
  std::vector<ScheduledChunk> chunks;
  std::vector<int64_t> preempted;  // sequences sent back to the queue this step
  int32_t num_tokens = 0;
};

class Scheduler {
 public:
  // `kv` must outlive the scheduler; its block size is the scheduler's.
  Scheduler(const SchedulerOptions& options, KvCacheManager* kv);

  // Queues a new sequence at the back. ALREADY_EXISTS for a known id; INVALID_ARGUMENT when the
  // token list is empty or could never fit in the KV pool.
  absl::Status Add(int64_t seq_id, std::vector<int32_t> tokens, std::string cache_salt);

  // Plans the next step and reserves its KV blocks. Empty when there is nothing to run.
  StepSchedule Schedule();

  // After the backend ran `schedule`: marks the chunks computed and registers newly full blocks
  // in the prefix cache.
  void OnComputed(const StepSchedule& schedule);

  // Appends a sampled token to a running sequence (computed in a later step).
  void AppendToken(int64_t seq_id, int32_t token);

  // Forgets a sequence (finished or cancelled), releasing its blocks. Unknown ids are ignored.
  void Remove(int64_t seq_id);

  bool Contains(int64_t seq_id) const { return sequences_.contains(seq_id); }
  std::span<const int32_t> Tokens(int64_t seq_id) const;
  // Prompt tokens served from the prefix cache at the sequence's first admission.
  int32_t CachedPromptTokens(int64_t seq_id) const;

  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int64_t num_preemptions() const { return preemptions_; }
  bool empty() const { return sequences_.empty(); }

 private:
  struct Sequence {
    std::vector<int32_t> tokens;
    std::string salt;
    int32_t num_computed = 0;
    int32_t cached_prompt_tokens = -1;  // -1 until first admitted
    bool running = false;
  };

  // Releases the most recently admitted running sequence; false when none is left.
  bool PreemptNewest(StepSchedule* schedule);
  bool TryAdmit(int64_t seq_id, int32_t* budget, StepSchedule* schedule);

  SchedulerOptions options_;
  KvCacheManager* kv_;
  absl::flat_hash_map<int64_t, Sequence> sequences_;
  std::vector<int64_t> running_;  // admission order, oldest first
  std::deque<int64_t> waiting_;   // arrival order; preempted sequences go to the front
  int64_t preemptions_ = 0;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_SCHEDULER_SCHEDULER_H_
