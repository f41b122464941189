// The engine on the CUDA backend, as the server runs it (issue 7): the plugin's backend through
// EngineOptions::backend_factory, with CUDA graphs for decode and sampling on the device (only
// tokens and log-probabilities come back), against the engine on the CPU backend.
//
// Greedy: for every committed fixture and every prompt of its reference.json, concurrently, the
// GPU engine's tokens equal the CPU engine's until the first step where the CPU's top-two margin
// is within twice the forward pass's tolerance (3e-2 x max(1, the fixture's largest |logit|), as
// tests/gpu/forward_pass_test.cc; the fixtures' margins can be smaller, so a stream may stop being
// compared early), and each compared token's log-probability agrees within twice that tolerance.
// Deterministic mode: seeded sampling requests (temperature, top-k, top-p, min-p, penalties,
// top log-probabilities) give bitwise the same tokens and log-probabilities alone and batched.
// These bounds are derived, not yet measured on a device. Without one every test skips.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend/cuda_plugin_loader.h"
#include "engine/engine.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/engine/test_sinks.h"

namespace vg::engine {
namespace {

namespace fs = std::filesystem;
using testing::CollectingSink;
using testing::RunAll;

constexpr float kRelativeTolerance = 3e-2f;

const char* const kFixtures[] = {
    "f32_config_defaults",      "f32_gqa_untied_nocaps", "f32_mha_tied_sliding",
    "bf16_gqa_sharded_eoslist", "bf16_mqa_bias_caps",    "f16_oldrope_mixedcaps",
};

fs::path Fixture(const std::string& name) { return fs::path(VG_FIXTURES_DIR) / name; }

nlohmann::json Reference(const std::string& name) {
  std::ifstream in(Fixture(name) / "reference.json");
  return nlohmann::json::parse(in);
}

class CudaEngineTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    auto api = LoadCudaPlugin(VG_CUDA_PLUGIN_PATH);
    ASSERT_TRUE(api.ok()) << api.status();
    auto devices = (*api)->list_devices();
    if (!devices.ok()) GTEST_SKIP() << devices.status().message();
    api_ = *api;
  }

  std::unique_ptr<Engine> MakeEngine(bool cuda, bool deterministic) {
    EngineOptions options;
    options.model_dir = Fixture(GetParam());
    options.num_threads = 2;
    options.block_size = 4;
    options.max_num_seqs = 4;
    options.max_batched_tokens = 32;
    if (cuda) {
      options.checkpoint_layout = MatrixLayout::kRowMajor;
      const CudaBackendOptions cuda_options{.device_index = 0,
                                            .block_size = options.block_size,
                                            .gpu_memory_utilization = 0.5,
                                            .max_num_blocks = 256,
                                            .max_step_tokens = options.max_batched_tokens,
                                            .max_num_seqs = options.max_num_seqs,
                                            .deterministic = deterministic};
      const VgCudaPluginApi* api = api_;
      options.backend_factory =
          [api,
           cuda_options](const Checkpoint& checkpoint) -> absl::StatusOr<std::unique_ptr<Backend>> {
        return api->create_backend(checkpoint, cuda_options);
      };
    }
    auto engine = Engine::Create(options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *std::move(engine) : nullptr;
  }

  const VgCudaPluginApi* api_ = nullptr;
};

TEST_P(CudaEngineTest, GreedyMatchesTheCpuEngineWhereTheMarginAllows) {
  const nlohmann::json reference = Reference(GetParam());
  std::vector<Request> requests;
  float max_logit = 1.f;
  for (const auto& c : reference["cases"]) {
    Request r;
    r.id = "greedy-" + std::to_string(requests.size());
    r.prompt_token_ids = c["prompt_token_ids"].get<std::vector<int32_t>>();
    r.stopping.max_new_tokens = 16;
    r.stopping.ignore_eos = true;
    r.top_logprobs = 2;
    requests.push_back(std::move(r));
    max_logit = std::max({max_logit, c["max_abs_greedy_logit"].get<float>(),
                          c["max_abs_prompt_logit"].get<float>()});
  }
  const float tolerance = kRelativeTolerance * max_logit;
  auto cpu = MakeEngine(/*cuda=*/false, false);
  auto gpu = MakeEngine(/*cuda=*/true, false);
  ASSERT_NE(cpu, nullptr);
  ASSERT_NE(gpu, nullptr);
  const auto want = RunAll(*cpu, requests);
  const auto got = RunAll(*gpu, requests);
  int compared = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status;
    ASSERT_EQ(got[i].token_ids.size(), want[i].token_ids.size()) << requests[i].id;
    ASSERT_EQ(got[i].top_logprobs.size(), got[i].token_ids.size()) << requests[i].id;
    for (size_t t = 0; t < want[i].token_ids.size(); ++t) {
      const auto& top = want[i].top_logprobs[t];
      ASSERT_EQ(top.size(), 2u);
      if (top[0].logprob - top[1].logprob <= 2 * tolerance) break;  // a near tie: stop here
      ASSERT_EQ(got[i].token_ids[t], want[i].token_ids[t]) << requests[i].id << " token " << t;
      EXPECT_NEAR(got[i].logprobs[t], want[i].logprobs[t], 2 * tolerance)
          << requests[i].id << " token " << t;
      ASSERT_EQ(got[i].top_logprobs[t].size(), 2u);
      EXPECT_EQ(got[i].top_logprobs[t][0].token_id, got[i].token_ids[t]);
      ++compared;
    }
  }
  RecordProperty("tokens_compared", compared);
}

TEST_P(CudaEngineTest, DeterministicModeSeededRequestsAreBatchInvariant) {
  const nlohmann::json reference = Reference(GetParam());
  std::vector<Request> requests;
  for (int i = 0; i < 6; ++i) {
    Request r;
    r.id = "seeded-" + std::to_string(i);
    r.prompt_token_ids = reference["cases"][i % reference["cases"].size()]["prompt_token_ids"]
                             .get<std::vector<int32_t>>();
    r.stopping.max_new_tokens = 12;
    r.stopping.ignore_eos = true;
    r.sampling.seed = 1000 + i;
    r.sampling.temperature = 0.7f + 0.1f * i;
    if (i % 3 == 1) r.sampling.top_k = 5;
    if (i % 3 == 2) r.sampling.top_p = 0.8f;
    if (i == 3) r.sampling.min_p = 0.05f;
    if (i == 4) {
      r.sampling.repetition_penalty = 1.3f;
      r.sampling.frequency_penalty = 0.5f;
    }
    if (i == 5) r.sampling.temperature = 0.f;  // greedy beside the sampled ones
    r.top_logprobs = i;
    requests.push_back(std::move(r));
  }
  auto gpu = MakeEngine(/*cuda=*/true, /*deterministic=*/true);
  ASSERT_NE(gpu, nullptr);
  std::vector<CollectingSink::Result> alone;
  for (const Request& r : requests) alone.push_back(RunAll(*gpu, {r})[0]);
  const auto together = RunAll(*gpu, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(alone[i].status.ok()) << alone[i].status;
    EXPECT_EQ(together[i].token_ids, alone[i].token_ids) << requests[i].id;
    EXPECT_EQ(together[i].logprobs, alone[i].logprobs) << requests[i].id;
    ASSERT_EQ(together[i].top_logprobs.size(), alone[i].top_logprobs.size());
    for (size_t t = 0; t < alone[i].top_logprobs.size(); ++t) {
      ASSERT_EQ(together[i].top_logprobs[t].size(), alone[i].top_logprobs[t].size());
      for (size_t k = 0; k < alone[i].top_logprobs[t].size(); ++k) {
        EXPECT_EQ(together[i].top_logprobs[t][k].token_id, alone[i].top_logprobs[t][k].token_id);
        EXPECT_EQ(together[i].top_logprobs[t][k].logprob, alone[i].top_logprobs[t][k].logprob);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaEngineTest, ::testing::ValuesIn(kFixtures),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param);
                         });

}  // namespace
}  // namespace vg::engine
