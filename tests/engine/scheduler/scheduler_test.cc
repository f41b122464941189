#include "engine/scheduler/scheduler.h"

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "engine/kv/kv_cache_manager.h"
#include "gtest/gtest.h"

namespace vg::engine {
namespace {

std::unique_ptr<KvCacheManager> Pool(int32_t blocks, int32_t block_size = 4, bool cache = true) {
  return *KvCacheManager::Create({blocks, block_size, cache});
}

std::vector<int32_t> Prompt(int32_t n, int32_t salt = 0) {
  std::vector<int32_t> out;
  for (int32_t i = 0; i < n; ++i) out.push_back(100 + (i * 7 + salt) % 50);
  return out;
}

// What the engine does after the backend ran a step: mark it computed, sample for every chunk that
// reached the end of its tokens.
void Complete(Scheduler& s, const StepSchedule& step, int32_t token = 5) {
  s.OnComputed(step);
  for (const ScheduledChunk& c : step.chunks) {
    if (c.samples) s.AppendToken(c.seq_id, token);
  }
}

const ScheduledChunk* Find(const StepSchedule& step, int64_t id) {
  for (const ScheduledChunk& c : step.chunks) {
    if (c.seq_id == id) return &c;
  }
  return nullptr;
}

TEST(SchedulerTest, ChunkedPrefillInterleavesWithDecodes) {
  auto kv = Pool(64);
  Scheduler s({.max_num_seqs = 8, .max_batched_tokens = 8}, kv.get());
  ASSERT_TRUE(s.Add(1, Prompt(4), "").ok());
  StepSchedule step = s.Schedule();
  ASSERT_EQ(step.chunks.size(), 1u);
  EXPECT_EQ(step.chunks[0].num_tokens, 4);
  EXPECT_TRUE(step.chunks[0].samples);
  Complete(s, step);

  ASSERT_TRUE(s.Add(2, Prompt(20, 1), "").ok());
  int32_t prefilled = 0;
  for (int i = 0; i < 3; ++i) {
    step = s.Schedule();
    // The running stream decodes one token every step while the long prompt goes in by chunks.
    const ScheduledChunk* decode = Find(step, 1);
    const ScheduledChunk* prefill = Find(step, 2);
    ASSERT_NE(decode, nullptr) << "step " << i;
    ASSERT_NE(prefill, nullptr) << "step " << i;
    EXPECT_EQ(decode->num_tokens, 1);
    EXPECT_TRUE(decode->samples);
    EXPECT_EQ(prefill->start, prefilled);
    EXPECT_LE(step.num_tokens, 8);
    prefilled += prefill->num_tokens;
    EXPECT_EQ(prefill->samples, prefilled == 20);
    Complete(s, step);
  }
  EXPECT_EQ(prefilled, 20);
  EXPECT_EQ(s.Tokens(2).size(), 21u);  // its first token was sampled when the prompt completed
  EXPECT_TRUE(kv->CheckInvariants().ok());
}

TEST(SchedulerTest, SequenceLimitAndArrivalOrder) {
  auto kv = Pool(64);
  Scheduler s({.max_num_seqs = 2, .max_batched_tokens = 100}, kv.get());
  for (int64_t id = 1; id <= 4; ++id) ASSERT_TRUE(s.Add(id, Prompt(3, id), "").ok());
  StepSchedule step = s.Schedule();
  ASSERT_EQ(step.chunks.size(), 2u);
  EXPECT_EQ(step.chunks[0].seq_id, 1);
  EXPECT_EQ(step.chunks[1].seq_id, 2);
  EXPECT_EQ(s.num_waiting(), 2);
  Complete(s, step);
  s.Remove(1);
  step = s.Schedule();
  EXPECT_NE(Find(step, 3), nullptr);
  EXPECT_EQ(Find(step, 4), nullptr);
}

TEST(SchedulerTest, RemoveFreesBlocksAtOnce) {
  auto kv = Pool(16, 4, /*cache=*/false);
  Scheduler s({.max_num_seqs = 4, .max_batched_tokens = 64}, kv.get());
  ASSERT_TRUE(s.Add(1, Prompt(10), "").ok());
  Complete(s, s.Schedule());
  EXPECT_EQ(kv->Stats().used, 3);
  s.Remove(1);
  EXPECT_EQ(kv->Stats().used, 0);
  EXPECT_TRUE(s.empty());
  EXPECT_TRUE(s.Schedule().chunks.empty());
}

TEST(SchedulerTest, PreemptsTheNewestAndRequeuesItFirst) {
  // 6 blocks of 4: two prompts of 12 tokens take all of them; the next token of each needs more.
  auto kv = Pool(6, 4, /*cache=*/false);
  Scheduler s({.max_num_seqs = 4, .max_batched_tokens = 64}, kv.get());
  ASSERT_TRUE(s.Add(1, Prompt(12), "").ok());
  ASSERT_TRUE(s.Add(2, Prompt(12, 1), "").ok());
  ASSERT_TRUE(s.Add(3, Prompt(2, 2), "").ok());
  StepSchedule step = s.Schedule();
  ASSERT_EQ(step.chunks.size(), 2u);  // 3 blocks each; sequence 3 cannot be admitted
  Complete(s, step);
  // Both now hold 13 tokens and no block is free: the oldest gets the newest's blocks.
  step = s.Schedule();
  ASSERT_EQ(step.preempted.size(), 1u);
  EXPECT_EQ(step.preempted[0], 2);
  ASSERT_EQ(step.chunks.size(), 1u);
  EXPECT_EQ(step.chunks[0].seq_id, 1);
  EXPECT_EQ(s.num_preemptions(), 1);
  EXPECT_EQ(s.num_waiting(), 2);
  Complete(s, step);
  s.Remove(1);
  // Sequence 2 comes back before 3 and recomputes all 13 of its tokens.
  step = s.Schedule();
  ASSERT_FALSE(step.chunks.empty());
  EXPECT_EQ(step.chunks[0].seq_id, 2);
  EXPECT_EQ(step.chunks[0].start, 0);
  EXPECT_EQ(step.chunks[0].num_tokens, 13);
  EXPECT_TRUE(step.chunks[0].samples);
  EXPECT_TRUE(kv->CheckInvariants().ok());
}

TEST(SchedulerTest, ReusesCachedPrefixBlocks) {
  auto kv = Pool(32, 4);
  Scheduler s({.max_num_seqs = 4, .max_batched_tokens = 64}, kv.get());
  ASSERT_TRUE(s.Add(1, Prompt(10), "salt").ok());
  Complete(s, s.Schedule());
  ASSERT_TRUE(s.Add(2, Prompt(10), "salt").ok());
  ASSERT_TRUE(s.Add(3, Prompt(10), "other").ok());
  StepSchedule step = s.Schedule();
  ASSERT_NE(Find(step, 2), nullptr);
  EXPECT_EQ(Find(step, 2)->start, 8);
  EXPECT_EQ(s.CachedPromptTokens(2), 8);
  EXPECT_EQ(Find(step, 3)->start, 0);
  EXPECT_EQ(s.CachedPromptTokens(3), 0);
}

TEST(SchedulerTest, RejectsSequencesThatCanNeverFit) {
  auto kv = Pool(2, 4);
  Scheduler s({}, kv.get());
  EXPECT_EQ(s.Add(1, {}, "").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.Add(1, Prompt(9), "").code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(s.Add(1, Prompt(8), "").ok());
  EXPECT_EQ(s.Add(1, Prompt(3), "").code(), absl::StatusCode::kAlreadyExists);
}

// A random workload: sequences arrive, run until they reach their length (capped by the pool),
// and leave. Every sequence finishes within a bounded number of steps, the pool never leaks, and
// every step respects the budget.
TEST(SchedulerTest, RandomWorkloadAlwaysDrainsWithoutStarvation) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    auto kv = Pool(12, 4, /*cache=*/seed % 2 == 0);
    Scheduler s({.max_num_seqs = 4, .max_batched_tokens = 10}, kv.get());
    std::map<int64_t, int32_t> target;  // total tokens at which each sequence finishes
    std::map<int64_t, int> arrival_step;
    int64_t next_id = 1;
    for (int step_index = 0; step_index < 3000 && (next_id <= 40 || !s.empty()); ++step_index) {
      if (next_id <= 40 && rng() % 3 == 0) {
        const int32_t prompt = 1 + rng() % 20;
        ASSERT_TRUE(s.Add(next_id, Prompt(prompt, rng() % 3), "").ok());
        target[next_id] = std::min<int32_t>(prompt + 1 + rng() % 15, 48);
        arrival_step[next_id] = step_index;
        ++next_id;
      }
      StepSchedule step = s.Schedule();
      ASSERT_LE(step.num_tokens, 10);
      ASSERT_TRUE(kv->CheckInvariants().ok()) << kv->CheckInvariants();
      Complete(s, step);
      for (const ScheduledChunk& c : step.chunks) {
        if (c.samples && static_cast<int32_t>(s.Tokens(c.seq_id).size()) >= target[c.seq_id]) {
          s.Remove(c.seq_id);
          EXPECT_LT(step_index - arrival_step[c.seq_id], 1500) << "sequence " << c.seq_id;
          target.erase(c.seq_id);
        }
      }
    }
    EXPECT_TRUE(s.empty()) << "seed " << seed << ": " << target.size() << " never finished";
    EXPECT_EQ(kv->Stats().used, 0);
  }
}

}  // namespace
}  // namespace vg::engine
