// The engine on the real CPU backend and the committed transformers fixtures: 32 concurrent
// requests give exactly what each gives alone (batch invariance), also through preemption, and
// the prefix cache is reused within a salt and never across salts.
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine/model/checkpoint.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/engine/test_sinks.h"

namespace vg::engine {
namespace {

namespace fs = std::filesystem;
using testing::CollectingSink;
using testing::RunAll;

fs::path Fixture(const std::string& name) {
  return fs::path(VG_SOURCE_DIR) / "tests" / "fixtures" / name;
}

nlohmann::json Reference(const std::string& name) {
  std::ifstream in(Fixture(name) / "reference.json");
  return nlohmann::json::parse(in);
}

std::unique_ptr<Engine> MakeEngine(const std::string& fixture, EngineOptions options) {
  options.model_dir = Fixture(fixture);
  options.num_threads = 2;
  auto engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return *std::move(engine);
}

// 32 requests of mixed prompt and output lengths: the fixture's prompts, their prefixes and
// synthetic id lists; every third one sampled with its own seed.
std::vector<Request> MixedRequests(const std::string& fixture, const Tokenizer& tokenizer) {
  std::vector<std::vector<int32_t>> prompts;
  const nlohmann::json reference = Reference(fixture);
  for (const auto& c : reference["cases"]) {
    prompts.push_back(c["prompt_token_ids"].get<std::vector<int32_t>>());
  }
  std::vector<Request> out;
  for (int i = 0; i < 32; ++i) {
    Request r;
    r.id = "req-" + std::to_string(i);
    std::vector<int32_t> prompt = prompts[i % prompts.size()];
    if (i % 4 == 1) prompt.resize(std::max<size_t>(2, prompt.size() / 2));
    if (i % 4 == 2) {
      for (int j = 0; j < i; ++j) prompt.push_back(4 + (j * 37 + i) % (tokenizer.vocab_size() - 4));
    }
    r.prompt_token_ids = prompt;
    r.stopping.max_new_tokens = 1 + (i * 7) % 32;
    r.stopping.ignore_eos = true;
    if (i % 3 == 0) {
      r.sampling.temperature = 0.9f;
      r.sampling.top_p = 0.95f;
      r.sampling.seed = 1000 + i;
    }
    out.push_back(std::move(r));
  }
  return out;
}

class EngineFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineFixtureTest, ConcurrentEqualsAloneAlsoUnderPreemption) {
  const std::string fixture = GetParam();
  auto alone_engine = MakeEngine(fixture, {.enable_prefix_caching = false});
  const std::vector<Request> requests = MixedRequests(fixture, alone_engine->tokenizer());
  std::vector<CollectingSink::Result> alone;
  for (const Request& r : requests) alone.push_back(RunAll(*alone_engine, {r})[0]);

  // The fixture's own greedy continuation (transformers), through the engine.
  const nlohmann::json ref = Reference(fixture)["cases"][1];
  Request greedy;
  greedy.id = "greedy";
  greedy.prompt_token_ids = ref["prompt_token_ids"].get<std::vector<int32_t>>();
  greedy.stopping.max_new_tokens = static_cast<int32_t>(ref["greedy_token_ids"].size());
  EXPECT_EQ(RunAll(*alone_engine, {greedy})[0].token_ids,
            ref["greedy_token_ids"].get<std::vector<int32_t>>());

  auto batched = MakeEngine(fixture, {.max_num_seqs = 16, .max_batched_tokens = 48});
  const auto together = RunAll(*batched, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(together[i].token_ids, alone[i].token_ids) << requests[i].id;
    EXPECT_EQ(together[i].logprobs, alone[i].logprobs) << requests[i].id;  // bit-identical
    EXPECT_EQ(together[i].text, alone[i].text) << requests[i].id;
  }

  // A pool of 24 blocks of 4 for 16 running sequences: preemption must happen.
  auto tight = MakeEngine(
      fixture,
      {.block_size = 4, .num_kv_blocks = 24, .max_num_seqs = 16, .max_batched_tokens = 48});
  const auto preempted = RunAll(*tight, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(preempted[i].token_ids, alone[i].token_ids) << requests[i].id;
    EXPECT_EQ(preempted[i].logprobs, alone[i].logprobs) << requests[i].id;
  }
  const EngineStats stats = tight->Stats();
  EXPECT_GT(stats.preemptions, 0);
  EXPECT_EQ(stats.kv_blocks_used, 0);
  EXPECT_EQ(stats.running + stats.waiting, 0);
}

TEST_P(EngineFixtureTest, PrefixCacheWithinSaltOnly) {
  const std::string fixture = GetParam();
  auto engine = MakeEngine(fixture, {.block_size = 4});
  Request r;
  const nlohmann::json reference = Reference(fixture);
  r.prompt_token_ids = reference["cases"][2]["prompt_token_ids"].get<std::vector<int32_t>>();
  r.stopping.max_new_tokens = 8;
  r.cache_salt = "alice";
  r.id = "1";
  const auto first = RunAll(*engine, {r})[0];
  EXPECT_EQ(first.usage.cached_prompt_tokens, 0);
  r.id = "2";
  const auto second = RunAll(*engine, {r})[0];
  EXPECT_GT(second.usage.cached_prompt_tokens, 0);
  EXPECT_EQ(second.token_ids, first.token_ids);
  EXPECT_EQ(second.logprobs, first.logprobs);
  r.id = "3";
  r.cache_salt = "bob";
  const auto third = RunAll(*engine, {r})[0];
  EXPECT_EQ(third.usage.cached_prompt_tokens, 0);
  EXPECT_EQ(third.token_ids, first.token_ids);
}

// EngineOptions::backend_factory: the engine opens the checkpoint in the layout asked for, calls
// the factory once, runs on its backend (here a CPU backend over the row-major checkpoint, the
// layout the CUDA plugin needs) and gives what the default CPU backend gives.
TEST_P(EngineFixtureTest, BackendFactoryReplacesTheCpuBackend) {
  const std::string fixture = GetParam();
  Request r;
  const nlohmann::json reference = Reference(fixture);
  r.id = "1";
  r.prompt_token_ids = reference["cases"][0]["prompt_token_ids"].get<std::vector<int32_t>>();
  r.stopping.max_new_tokens = 8;
  r.stopping.ignore_eos = true;
  const auto want = RunAll(*MakeEngine(fixture, {.block_size = 4}), {r})[0];

  int calls = 0;
  EngineOptions options{.block_size = 4};
  options.checkpoint_layout = MatrixLayout::kRowMajor;
  options.backend_factory =
      [&calls](const Checkpoint& checkpoint) -> absl::StatusOr<std::unique_ptr<Backend>> {
    ++calls;
    EXPECT_EQ(checkpoint.weights().layers[0].q_proj.layout, MatrixLayout::kRowMajor);
    auto backend = CpuBackend::Create(
        checkpoint, CpuBackendOptions{.num_threads = 2, .block_size = 4, .num_blocks = 40});
    if (!backend.ok()) return backend.status();
    return std::unique_ptr<Backend>(*std::move(backend));
  };
  auto engine = MakeEngine(fixture, options);
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(calls, 1);
  const auto got = RunAll(*engine, {r})[0];
  EXPECT_EQ(engine->Stats().kv_blocks_total, 40);  // the factory's pool (published per step)
  EXPECT_EQ(got.token_ids, want.token_ids);
  EXPECT_EQ(got.logprobs, want.logprobs);
}

TEST_P(EngineFixtureTest, BackendFactoryErrorIsReturned) {
  EngineOptions options;
  options.model_dir = Fixture(GetParam());
  options.backend_factory = [](const Checkpoint&) -> absl::StatusOr<std::unique_ptr<Backend>> {
    return absl::FailedPreconditionError("no CUDA device: test");
  };
  auto engine = Engine::Create(options);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine.status().message(), "no CUDA device: test");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineFixtureTest,
                         ::testing::Values("f32_mha_tied_sliding", "bf16_gqa_sharded_eoslist"));

}  // namespace
}  // namespace vg::engine
