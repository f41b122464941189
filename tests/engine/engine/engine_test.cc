// The engine facade over a fake backend: batching, preemption, cancellation, stopping, validation,
// shutdown. The fake's logits depend on every cached token of a sequence, so any cache mix-up
// changes the output.
#include "engine/engine.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/engine/engine/test_sinks.h"

namespace vg::engine {
namespace {

using testing::CollectingSink;
using testing::FakeBackend;
using testing::FakeClock;
using testing::LoadTokenizer;
using testing::MakeRequest;
using testing::Prompt;

ModelConfig Config(int64_t vocab, int64_t context = 128) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.max_position_embeddings = context;
  c.eos_token_ids = {1};
  return c;
}

struct Harness {
  explicit Harness(int32_t blocks, EngineOptions options = {}, int64_t context = 128)
      : tokenizer(LoadTokenizer()),
        config(Config(tokenizer->vocab_size(), context)),
        backend(blocks, 4, tokenizer->vocab_size()) {
    engine = *Engine::CreateForTest(options, config, &backend, tokenizer.get());
  }
  CollectingSink::Result Run(Request r) {
    auto sink = std::make_shared<CollectingSink>();
    EXPECT_TRUE(engine->Submit(std::move(r), sink).ok());
    return sink->Wait();
  }
  std::unique_ptr<Tokenizer> tokenizer;
  ModelConfig config;
  FakeBackend backend;
  std::unique_ptr<Engine> engine;
};

TEST(EngineTest, ConcurrentRequestsMatchRunningAlone) {
  std::vector<Request> requests;
  for (int i = 0; i < 32; ++i) {
    Request r = MakeRequest("r" + std::to_string(i), Prompt(3 + (i * 5) % 40, i % 4), 4 + i % 13);
    if (i % 3 == 0) {
      r.sampling.temperature = 0.8f;
      r.sampling.seed = 100 + i;
    }
    requests.push_back(r);
  }
  std::vector<CollectingSink::Result> alone;
  {
    Harness h(256);
    for (const Request& r : requests) alone.push_back(h.Run(r));
  }
  Harness h(256, EngineOptions{.max_num_seqs = 16, .max_batched_tokens = 64});
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (const Request& r : requests) {
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(h.engine->Submit(r, sinks.back()).ok());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    const CollectingSink::Result together = sinks[i]->Wait();
    EXPECT_EQ(together.token_ids, alone[i].token_ids) << "request " << i;
    EXPECT_EQ(together.text, alone[i].text) << "request " << i;
    EXPECT_EQ(together.finish_reason, FinishReason::kLength);
    EXPECT_EQ(together.usage.completion_tokens, requests[i].stopping.max_new_tokens);
  }
  EXPECT_GT(h.backend.max_entries, 1) << "requests never shared a step";
}

// Records every step; reads happen after the engine is destroyed (its loop thread joined).
class RecordingObserver : public StepObserver {
 public:
  void OnStep(const StepInfo& step) override { steps.push_back(step); }
  std::vector<StepInfo> steps;
};

TEST(EngineTest, StepObserverSeesEveryBatch) {
  RecordingObserver observer;
  std::vector<Request> requests;
  int64_t prompt_tokens = 0;
  int64_t new_tokens = 0;
  for (int i = 0; i < 10; ++i) {
    requests.push_back(MakeRequest("s" + std::to_string(i), Prompt(5 + 3 * i, 50 + i), 3 + i));
    prompt_tokens += 5 + 3 * i;
    new_tokens += 3 + i;
  }
  int64_t steps_reported = 0;
  {
    Harness h(256, EngineOptions{.max_num_seqs = 4,
                                 .max_batched_tokens = 16,
                                 .enable_prefix_caching = false,
                                 .step_observer = &observer});
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    for (const Request& r : requests) {
      sinks.push_back(std::make_shared<CollectingSink>());
      ASSERT_TRUE(h.engine->Submit(r, sinks.back()).ok());
    }
    for (auto& sink : sinks) EXPECT_EQ(sink->Wait().finish_reason, FinishReason::kLength);
    h.engine->Shutdown(/*drain=*/true);
    steps_reported = h.engine->Stats().steps;
  }
  ASSERT_EQ(static_cast<int64_t>(observer.steps.size()), steps_reported);
  int64_t tokens = 0;
  bool batched = false;
  for (const StepInfo& step : observer.steps) {
    EXPECT_GE(step.num_sequences, 1);
    EXPECT_LE(step.num_sequences, 4);
    EXPECT_LE(step.num_tokens, 16);
    EXPECT_LE(step.num_prefill_sequences, step.num_sequences);
    EXPECT_GE(step.seconds, 0);
    EXPECT_GE(step.forward_seconds, 0);
    EXPECT_LE(step.forward_seconds, step.seconds);
    batched |= step.num_sequences > 1;
    tokens += step.num_tokens;
  }
  EXPECT_TRUE(batched);
  // Every prompt token is computed once, and every generated token but the last is fed back.
  EXPECT_EQ(tokens, prompt_tokens + new_tokens - static_cast<int64_t>(requests.size()));
}

TEST(EngineTest, PreemptionRecomputesTheSameTokens) {
  std::vector<Request> requests;
  for (int i = 0; i < 8; ++i) {
    requests.push_back(MakeRequest("p" + std::to_string(i), Prompt(10 + i, i), 20));
  }
  std::vector<CollectingSink::Result> roomy;
  {
    Harness h(512);
    for (const Request& r : requests) roomy.push_back(h.Run(r));
  }
  // 20 blocks of 4 = 80 positions for 8 sequences that grow to ~37 tokens each.
  Harness h(20, EngineOptions{.max_num_seqs = 8, .max_batched_tokens = 32});
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (const Request& r : requests) {
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(h.engine->Submit(r, sinks.back()).ok());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(sinks[i]->Wait().token_ids, roomy[i].token_ids) << "request " << i;
  }
  const EngineStats stats = h.engine->Stats();
  EXPECT_GT(stats.preemptions, 0);
  EXPECT_EQ(stats.kv_blocks_used, 0);
}

TEST(EngineTest, PrefixCacheIsSharedOnlyWithinASalt) {
  Harness h(256);
  Request first = MakeRequest("a", Prompt(30, 1), 5);
  first.cache_salt = "tenant-1";
  const auto a = h.Run(first);
  EXPECT_EQ(a.usage.cached_prompt_tokens, 0);

  Request same = first;
  same.id = "b";
  const auto b = h.Run(same);
  EXPECT_EQ(b.usage.cached_prompt_tokens, 28);  // 7 full blocks of 4; the last token is recomputed
  EXPECT_EQ(b.token_ids, a.token_ids);

  Request other = first;
  other.id = "c";
  other.cache_salt = "tenant-2";
  const auto c = h.Run(other);
  EXPECT_EQ(c.usage.cached_prompt_tokens, 0);
  EXPECT_EQ(c.token_ids, a.token_ids);
  EXPECT_GE(h.engine->Stats().cached_prompt_tokens, 28);
}

TEST(EngineTest, StreamsOneEventPerTokenAndTextMatchesDecode) {
  Harness h(256);
  const auto r = h.Run(MakeRequest("x", Prompt(5, 0), 24));
  ASSERT_EQ(r.token_ids.size(), 24u);
  EXPECT_EQ(r.events, 24);
  EXPECT_EQ(r.text, *h.tokenizer->Decode(r.token_ids));
  EXPECT_EQ(r.usage.prompt_tokens, 5);
}

TEST(EngineTest, StopsOnEosStopTokensStopStringsAndLength) {
  Harness h(256);
  const auto base = h.Run(MakeRequest("base", Prompt(6, 3), 30));
  ASSERT_EQ(base.token_ids.size(), 30u);

  Request stop_token = MakeRequest("st", Prompt(6, 3), 30);
  stop_token.stopping.stop_token_ids = {base.token_ids[5]};
  const auto st = h.Run(stop_token);
  EXPECT_EQ(st.finish_reason, FinishReason::kStopToken);
  const size_t first = std::find(base.token_ids.begin(), base.token_ids.end(), base.token_ids[5]) -
                       base.token_ids.begin();
  EXPECT_EQ(st.token_ids,
            std::vector<int32_t>(base.token_ids.begin(), base.token_ids.begin() + first + 1));

  // A stop string from the middle of the text: the output ends right before its first occurrence.
  ASSERT_GT(base.text.size(), 12u);
  const std::string stop = base.text.substr(base.text.size() / 2, 3);
  Request stop_string = MakeRequest("ss", Prompt(6, 3), 30);
  stop_string.stopping.stop_strings = {stop};
  const auto ss = h.Run(stop_string);
  EXPECT_EQ(ss.finish_reason, FinishReason::kStopSequence);
  EXPECT_EQ(ss.text, base.text.substr(0, base.text.find(stop)));

  // The context cuts max_new_tokens: 120 prompt tokens + 8 = 128.
  const auto cut = h.Run(MakeRequest("cut", Prompt(120, 1), 50));
  EXPECT_EQ(cut.token_ids.size(), 8u);
  EXPECT_EQ(cut.finish_reason, FinishReason::kLength);
}

TEST(EngineTest, EosEndsUnlessIgnored) {
  Harness probe(256);
  const auto base = probe.Run(MakeRequest("base", Prompt(6, 2), 12));
  // A model whose EOS is the 4th generated token.
  auto tokenizer = LoadTokenizer();
  ModelConfig config = Config(tokenizer->vocab_size());
  config.eos_token_ids = {base.token_ids[3]};
  FakeBackend backend(256, 4, tokenizer->vocab_size());
  auto engine = *Engine::CreateForTest({}, config, &backend, tokenizer.get());
  auto run = [&](bool ignore_eos) {
    Request r = MakeRequest(ignore_eos ? "i" : "e", Prompt(6, 2), 12);
    r.stopping.ignore_eos = ignore_eos;
    auto sink = std::make_shared<CollectingSink>();
    EXPECT_TRUE(engine->Submit(r, sink).ok());
    return sink->Wait();
  };
  const auto eos = run(false);
  EXPECT_EQ(eos.finish_reason, FinishReason::kEos);
  EXPECT_EQ(eos.token_ids.back(), base.token_ids[3]);
  EXPECT_LE(eos.token_ids.size(), 4u);
  const auto ignored = run(true);
  EXPECT_EQ(ignored.token_ids, base.token_ids);
}

TEST(EngineTest, CancelEndsTheRequestAndFreesItsBlocks) {
  Harness h(256);
  h.backend.step_delay_ms = 5;
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(h.engine->Submit(MakeRequest("c", Prompt(20, 0), 100), sink).ok());
  while (sink->events() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  h.engine->Cancel("c");
  const auto r = sink->Wait();
  EXPECT_EQ(r.finish_reason, FinishReason::kCancelled);
  EXPECT_LT(r.token_ids.size(), 100u);
  for (int i = 0; i < 200 && h.engine->Stats().kv_blocks_used != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(h.engine->Stats().kv_blocks_used, 0);
  h.engine->Cancel("c");        // finished: ignored
  h.engine->Cancel("unknown");  // ignored
  // The id is free again.
  EXPECT_EQ(h.Run(MakeRequest("c", Prompt(3, 0), 2)).token_ids.size(), 2u);
}

TEST(EngineTest, RejectsWhatCanNeverRun) {
  Harness h(8, {}, 64);  // 32 KV positions, context 64
  auto submit = [&](Request r) {
    return h.engine->Submit(std::move(r), std::make_shared<CollectingSink>());
  };
  EXPECT_EQ(submit(MakeRequest("a", {}, 4)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(submit(MakeRequest("a", {2, 700}, 4)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(submit(MakeRequest("a", {2, -1}, 4)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(submit(MakeRequest("a", Prompt(64, 0), 4)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(submit(MakeRequest("a", Prompt(32, 0), 4)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(submit(MakeRequest("a", Prompt(3, 0), 0)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(submit(MakeRequest("", Prompt(3, 0), 4)).code(), absl::StatusCode::kInvalidArgument);
  Request bad = MakeRequest("a", Prompt(3, 0), 4);
  bad.top_logprobs = 21;
  EXPECT_EQ(submit(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = MakeRequest("a", Prompt(3, 0), 4);
  bad.sampling.temperature = -1;
  EXPECT_EQ(submit(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = MakeRequest("a", Prompt(3, 0), 4);
  bad.stopping.stop_token_ids = {100000};
  EXPECT_EQ(submit(bad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.engine->Stats().steps, 0);
}

TEST(EngineTest, QueueBoundDuplicateIdsAndShutdown) {
  Harness h(256, EngineOptions{.max_num_seqs = 1, .max_waiting = 2});
  h.backend.step_delay_ms = 20;
  auto submit = [&](const std::string& id) {
    return h.engine->Submit(MakeRequest(id, Prompt(4, 0), 50), std::make_shared<CollectingSink>());
  };
  ASSERT_TRUE(submit("1").ok());
  EXPECT_EQ(submit("1").code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(submit("2").ok());
  ASSERT_TRUE(submit("3").ok());  // one running + two waiting
  EXPECT_EQ(submit("4").code(), absl::StatusCode::kResourceExhausted);
  h.engine->Shutdown(/*drain=*/false);
  EXPECT_EQ(submit("5").code(), absl::StatusCode::kUnavailable);
  h.engine->Shutdown(false);  // idempotent
}

TEST(EngineTest, ShutdownDrainFinishesEverythingAbortCancels) {
  {
    Harness h(256);
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    for (int i = 0; i < 5; ++i) {
      sinks.push_back(std::make_shared<CollectingSink>());
      ASSERT_TRUE(
          h.engine->Submit(MakeRequest(std::to_string(i), Prompt(5, i), 10), sinks.back()).ok());
    }
    h.engine->Shutdown(/*drain=*/true);
    for (auto& s : sinks) {
      ASSERT_TRUE(s->finished());
      EXPECT_EQ(s->Wait().finish_reason, FinishReason::kLength);
    }
  }
  {
    Harness h(256);
    h.backend.step_delay_ms = 10;
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    for (int i = 0; i < 5; ++i) {
      sinks.push_back(std::make_shared<CollectingSink>());
      ASSERT_TRUE(
          h.engine->Submit(MakeRequest(std::to_string(i), Prompt(5, i), 500), sinks.back()).ok());
    }
    h.engine->Shutdown(/*drain=*/false);
    for (auto& s : sinks) {
      ASSERT_TRUE(s->finished());
      EXPECT_EQ(s->Wait().finish_reason, FinishReason::kCancelled);
    }
  }
}

TEST(EngineTest, BackendFailureEndsTheStepsRequestsWithError) {
  Harness h(256);
  h.backend.fail = true;
  const auto r = h.Run(MakeRequest("f", Prompt(5, 0), 10));
  EXPECT_EQ(r.finish_reason, FinishReason::kError);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInternal);
  h.backend.fail = false;
  EXPECT_EQ(h.Run(MakeRequest("g", Prompt(5, 0), 3)).token_ids.size(), 3u);
}

TEST(EngineTest, TopLogprobsAreReportedPerToken) {
  Harness h(256);
  Request r = MakeRequest("t", Prompt(5, 0), 6);
  r.top_logprobs = 5;
  const auto out = h.Run(r);
  ASSERT_EQ(out.top_logprobs.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    ASSERT_EQ(out.top_logprobs[i].size(), 5u);
    EXPECT_EQ(out.top_logprobs[i][0].token_id, out.token_ids[i]);  // greedy takes the best
    EXPECT_FLOAT_EQ(out.top_logprobs[i][0].logprob, out.logprobs[i]);
  }
}

TEST(EngineTest, TimingsFollowTheClock) {
  // Every Forward takes exactly one second of fake time; one sequence runs at a time.
  FakeClock clock;
  auto tokenizer = LoadTokenizer();
  const ModelConfig config = Config(tokenizer->vocab_size());
  FakeBackend backend(256, 4, tokenizer->vocab_size());
  // Nothing advances the clock until both requests are submitted at the same instant.
  std::atomic<bool> go{false};
  backend.on_forward = [&] {
    while (!go) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    clock.Advance(1.0);
  };
  auto engine = *Engine::CreateForTest({.max_num_seqs = 1, .clock = &clock}, config, &backend,
                                       tokenizer.get());
  auto first = std::make_shared<CollectingSink>();
  auto second = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine->Submit(MakeRequest("1", Prompt(5, 0), 3), first).ok());
  ASSERT_TRUE(engine->Submit(MakeRequest("2", Prompt(5, 1), 2), second).ok());
  go = true;
  const auto a = first->Wait();
  const auto b = second->Wait();
  // The first: admitted at once, a token at the end of each of its 3 steps.
  EXPECT_DOUBLE_EQ(a.timings.queue_seconds, 0.0);
  EXPECT_DOUBLE_EQ(a.timings.time_to_first_token_seconds, 1.0);
  EXPECT_DOUBLE_EQ(a.timings.total_seconds, 3.0);
  // The second waits for the first's 3 steps, then runs 2.
  EXPECT_DOUBLE_EQ(b.timings.queue_seconds, 3.0);
  EXPECT_DOUBLE_EQ(b.timings.time_to_first_token_seconds, 4.0);
  EXPECT_DOUBLE_EQ(b.timings.total_seconds, 5.0);
  EXPECT_DOUBLE_EQ(engine->Stats().total_step_seconds, 5.0);
}

}  // namespace
}  // namespace vg::engine
