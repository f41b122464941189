#include "engine/scheduler/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace vg::engine {

Scheduler::Scheduler(const SchedulerOptions& options, KvCacheManager* kv)
    : options_(options), kv_(kv) {}

absl::Status Scheduler::Add(int64_t seq_id, std::vector<int32_t> tokens, std::string cache_salt) {
  if (sequences_.contains(seq_id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", seq_id, " is already scheduled"));
  }
  if (tokens.empty()) return absl::InvalidArgumentError("a sequence needs at least one token");
  const int64_t capacity = static_cast<int64_t>(kv_->num_blocks()) * kv_->block_size();
  if (static_cast<int64_t>(tokens.size()) > capacity) {
    return absl::InvalidArgumentError(absl::StrCat(
        tokens.size(), " tokens do not fit in the KV pool (", capacity, " positions)"));
  }
  Sequence& s = sequences_[seq_id];
  s.tokens = std::move(tokens);
  s.salt = std::move(cache_salt);
  waiting_.push_back(seq_id);
  return absl::OkStatus();
}

bool Scheduler::PreemptNewest(StepSchedule* schedule) {
  if (running_.empty()) return false;
  const int64_t victim = running_.back();
  running_.pop_back();
  Sequence& s = sequences_.at(victim);
  kv_->EndSequence(victim);
  s.num_computed = 0;
  s.running = false;
  waiting_.push_front(victim);
  schedule->preempted.push_back(victim);
  ++preemptions_;
  return true;
}

bool Scheduler::TryAdmit(int64_t seq_id, int32_t* budget, StepSchedule* schedule) {
  Sequence& s = sequences_.at(seq_id);
  absl::StatusOr<int32_t> cached = kv_->BeginSequence(seq_id, s.tokens, s.salt);
  if (!cached.ok()) return false;
  const int32_t total = static_cast<int32_t>(s.tokens.size());
  const int32_t n = std::min(total - *cached, *budget);
  if (kv_->BlocksNeeded(seq_id, *cached + n) > kv_->NumAllocatableBlocks() ||
      !kv_->EnsureCapacity(seq_id, *cached + n).ok()) {
    kv_->EndSequence(seq_id);
    return false;
  }
  s.num_computed = *cached;
  if (s.cached_prompt_tokens < 0) s.cached_prompt_tokens = *cached;
  s.running = true;
  running_.push_back(seq_id);
  schedule->chunks.push_back({seq_id, *cached, n, *cached + n == total});
  *budget -= n;
  return true;
}

StepSchedule Scheduler::Schedule() {
  StepSchedule schedule;
  int32_t budget = options_.max_batched_tokens;

  // Running sequences first, oldest admission first. Preemption takes victims from the back, so a
  // victim has never been scheduled earlier in this step.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    const int64_t id = running_[i];
    Sequence& s = sequences_.at(id);
    const int32_t total = static_cast<int32_t>(s.tokens.size());
    const int32_t n = std::min(total - s.num_computed, budget);
    if (n <= 0) {
      ++i;
      continue;
    }
    bool self_preempted = false;
    while (kv_->BlocksNeeded(id, s.num_computed + n) > kv_->NumAllocatableBlocks()) {
      const bool is_self = running_.back() == id;
      PreemptNewest(&schedule);
      if (is_self) {
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) break;  // it was the newest: nothing after it is left to schedule
    if (!kv_->EnsureCapacity(id, s.num_computed + n).ok()) break;  // unreachable: checked above
    schedule.chunks.push_back({id, s.num_computed, n, s.num_computed + n == total});
    budget -= n;
    ++i;
  }

  // Then waiting sequences in arrival order, never skipping one (no starvation), and none at all
  // in a step that had to preempt (a preempted sequence must not be overtaken).
  if (schedule.preempted.empty()) {
    while (!waiting_.empty() && budget > 0 &&
           static_cast<int32_t>(running_.size()) < options_.max_num_seqs) {
      if (!TryAdmit(waiting_.front(), &budget, &schedule)) break;
      waiting_.pop_front();
    }
  }
  for (const ScheduledChunk& c : schedule.chunks) schedule.num_tokens += c.num_tokens;
  return schedule;
}

void Scheduler::OnComputed(const StepSchedule& schedule) {
  for (const ScheduledChunk& c : schedule.chunks) {
    auto it = sequences_.find(c.seq_id);
    if (it == sequences_.end() || !it->second.running) continue;
    it->second.num_computed = c.start + c.num_tokens;
    kv_->CacheComputedBlocks(c.seq_id, it->second.tokens, it->second.num_computed);
  }
}

void Scheduler::AppendToken(int64_t seq_id, int32_t token) {
  auto it = sequences_.find(seq_id);
  if (it != sequences_.end()) it->second.tokens.push_back(token);
}

void Scheduler::Remove(int64_t seq_id) {
  auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) return;
  kv_->EndSequence(seq_id);
  running_.erase(std::remove(running_.begin(), running_.end(), seq_id), running_.end());
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), seq_id), waiting_.end());
  sequences_.erase(it);
}

std::span<const int32_t> Scheduler::Tokens(int64_t seq_id) const {
  auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) return {};
  return it->second.tokens;
}

int32_t Scheduler::CachedPromptTokens(int64_t seq_id) const {
  auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) return 0;
  return std::max(0, it->second.cached_prompt_tokens);
}

}  // namespace vg::engine
