// The engine over a backend that samples on its device (Backend::ForwardAndSample): the same
// requests give the same tokens, log-probabilities, text and finish reasons as host sampling over
// the same logits, and a failing or misbehaving device ends the step's requests with an error.
// The device is DeviceSamplingFakeBackend, whose "device" is the CPU reference SampleRow, so the
// outputs must be identical, not merely close.
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/engine/engine/test_sinks.h"

namespace vg::engine {
namespace {

using testing::CollectingSink;
using testing::DeviceSamplingFakeBackend;
using testing::FakeBackend;
using testing::LoadTokenizer;
using testing::MakeRequest;
using testing::Prompt;

// One engine over a backend of type B (FakeBackend: host sampling; DeviceSamplingFakeBackend).
template <typename B>
struct Harness {
  explicit Harness(int32_t blocks, const EngineOptions& options = {}, int32_t eos = 1)
      : tokenizer(LoadTokenizer()), backend(blocks, 4, tokenizer->vocab_size()) {
    config.vocab_size = tokenizer->vocab_size();
    config.max_position_embeddings = 128;
    config.eos_token_ids = {eos};
    engine = *Engine::CreateForTest(options, config, &backend, tokenizer.get());
  }
  CollectingSink::Result Run(Request r) { return RunAll({std::move(r)})[0]; }
  // Submits every request before waiting for any, so they share steps.
  std::vector<CollectingSink::Result> RunAll(const std::vector<Request>& requests) {
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    for (const Request& r : requests) {
      sinks.push_back(std::make_shared<CollectingSink>());
      EXPECT_TRUE(engine->Submit(r, sinks.back()).ok()) << r.id;
    }
    std::vector<CollectingSink::Result> results;
    results.reserve(sinks.size());
    for (auto& sink : sinks) results.push_back(sink->Wait());
    return results;
  }
  std::unique_ptr<Tokenizer> tokenizer;
  ModelConfig config;
  B backend;
  std::unique_ptr<Engine> engine;
};

// Greedy and seeded sampling with every warper and penalty, top logprobs, EOS, stop tokens and
// stop strings (taken from a first run's text so that they match).
std::vector<Request> MixedRequests() {
  std::vector<Request> requests;
  auto add = [&](const std::string& id, int32_t prompt, int32_t salt, int32_t max_new,
                 SamplingParams sampling, int32_t top_logprobs = 0) {
    Request r = MakeRequest(id, Prompt(prompt, salt), max_new);
    r.sampling = sampling;
    r.top_logprobs = top_logprobs;
    requests.push_back(std::move(r));
  };
  add("greedy", 7, 1, 20, {});
  add("greedy_top20", 12, 2, 16, {}, 20);
  add("temperature", 9, 3, 24, {.temperature = 0.8f, .seed = 11}, 3);
  add("hot", 5, 4, 24, {.temperature = 2.5f, .seed = 12});
  add("top_k", 30, 5, 24, {.temperature = 1.0f, .top_k = 5, .seed = 13}, 5);
  add("top_k_1", 6, 6, 12, {.temperature = 1.3f, .top_k = 1, .seed = 14});
  add("top_p", 14, 7, 24, {.temperature = 0.9f, .top_p = 0.7f, .seed = 15}, 2);
  add("min_p", 21, 8, 24, {.temperature = 1.1f, .min_p = 0.2f, .seed = 16});
  add("all_warpers", 17, 9, 24,
      {.temperature = 0.7f, .top_k = 40, .top_p = 0.9f, .min_p = 0.05f, .seed = 17}, 4);
  add("greedy_repetition", 8, 10, 30, {.repetition_penalty = 1.5f});
  add("greedy_presence_frequency", 8, 11, 30, {.presence_penalty = 0.8f, .frequency_penalty = 1.2f},
      1);
  add("sampled_penalties", 25, 12, 30,
      {.temperature = 0.9f,
       .top_k = 20,
       .top_p = 0.95f,
       .repetition_penalty = 1.3f,
       .presence_penalty = -0.5f,
       .frequency_penalty = 0.7f,
       .seed = 18},
      3);
  add("sampled_penalties_no_warpers", 11, 13, 30,
      {.temperature = 1.0f, .repetition_penalty = 0.7f, .frequency_penalty = 2.0f, .seed = 19});
  Request eos = MakeRequest("eos", Prompt(9, 14), 60);
  eos.sampling = {.temperature = 3.0f, .seed = 20};
  eos.stopping.ignore_eos = false;
  requests.push_back(eos);
  return requests;
}

void ExpectSameOutputs(const std::vector<Request>& requests,
                       const std::vector<CollectingSink::Result>& host,
                       const std::vector<CollectingSink::Result>& device) {
  ASSERT_EQ(host.size(), requests.size());
  ASSERT_EQ(device.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(requests[i].id);
    EXPECT_TRUE(host[i].status.ok()) << host[i].status;
    EXPECT_TRUE(device[i].status.ok()) << device[i].status;
    EXPECT_EQ(device[i].token_ids, host[i].token_ids);
    EXPECT_EQ(device[i].logprobs, host[i].logprobs);
    ASSERT_EQ(device[i].top_logprobs.size(), host[i].top_logprobs.size());
    for (size_t t = 0; t < host[i].top_logprobs.size(); ++t) {
      ASSERT_EQ(device[i].top_logprobs[t].size(), host[i].top_logprobs[t].size()) << t;
      for (size_t k = 0; k < host[i].top_logprobs[t].size(); ++k) {
        EXPECT_EQ(device[i].top_logprobs[t][k].token_id, host[i].top_logprobs[t][k].token_id);
        EXPECT_EQ(device[i].top_logprobs[t][k].logprob, host[i].top_logprobs[t][k].logprob);
      }
    }
    EXPECT_EQ(device[i].text, host[i].text);
    EXPECT_EQ(device[i].finish_reason, host[i].finish_reason);
    EXPECT_EQ(device[i].usage.completion_tokens, host[i].usage.completion_tokens);
    EXPECT_EQ(device[i].events, host[i].events);
  }
}

// Adds requests that stop on a token and on a string of `base`'s output, so both stops happen.
void AddStops(const Request& base_request, const CollectingSink::Result& base,
              std::vector<Request>* requests) {
  ASSERT_GT(base.token_ids.size(), 8u);
  Request stop_token = base_request;
  stop_token.id = base_request.id + "_stop_token";
  stop_token.stopping.stop_token_ids = {base.token_ids[6]};
  requests->push_back(stop_token);
  ASSERT_GT(base.text.size(), 12u);
  Request stop_string = base_request;
  stop_string.id = base_request.id + "_stop_string";
  stop_string.stopping.stop_strings = {base.text.substr(base.text.size() / 2, 3)};
  requests->push_back(stop_string);
}

TEST(DeviceSamplingTest, SameOutputsAsHostSamplingAloneAndBatched) {
  std::vector<Request> requests = MixedRequests();
  // A probe run (EOS ignored everywhere) picks the stops: the model's EOS is the 6th token of the
  // request that heeds EOS, and two requests get a stop token and a stop string of their output.
  int32_t eos = 0;
  {
    Harness<FakeBackend> probe(256);
    for (const Request& r : std::vector<Request>(requests)) {
      Request ignoring = r;
      ignoring.stopping.ignore_eos = true;
      const CollectingSink::Result base = probe.Run(ignoring);
      if (!r.stopping.ignore_eos) eos = base.token_ids.at(5);
      if (r.id == "temperature" || r.id == "sampled_penalties") AddStops(r, base, &requests);
    }
  }
  // Alone, one at a time.
  std::vector<CollectingSink::Result> host_alone;
  std::vector<CollectingSink::Result> device_alone;
  {
    Harness<FakeBackend> host(256, {}, eos);
    Harness<DeviceSamplingFakeBackend> device(256, {}, eos);
    for (const Request& r : requests) {
      host_alone.push_back(host.Run(r));
      device_alone.push_back(device.Run(r));
    }
    EXPECT_EQ(device.backend.forward_and_sample_calls, device.backend.forward_calls)
        << "the engine called Forward on a backend that samples on its device";
  }
  ExpectSameOutputs(requests, host_alone, device_alone);
  bool stopped_on_token = false, stopped_on_string = false, stopped_on_eos = false;
  for (const auto& r : host_alone) {
    stopped_on_token |= r.finish_reason == FinishReason::kStopToken;
    stopped_on_string |= r.finish_reason == FinishReason::kStopSequence;
    stopped_on_eos |= r.finish_reason == FinishReason::kEos;
  }
  EXPECT_TRUE(stopped_on_token);
  EXPECT_TRUE(stopped_on_string);
  EXPECT_TRUE(stopped_on_eos);

  // All at once: shared steps, chunked prefills (kNone entries) and, with a small pool,
  // preemption. Each request's stream is its own, so the tokens are those of running alone.
  for (int32_t blocks : {256, 40}) {
    SCOPED_TRACE(blocks);
    const EngineOptions options{.max_num_seqs = 8, .max_batched_tokens = 24};
    Harness<FakeBackend> host(blocks, options, eos);
    Harness<DeviceSamplingFakeBackend> device(blocks, options, eos);
    const auto host_together = host.RunAll(requests);
    const auto device_together = device.RunAll(requests);
    ExpectSameOutputs(requests, host_together, device_together);
    ExpectSameOutputs(requests, host_alone, device_together);
    EXPECT_GT(device.backend.max_entries, 1);
    EXPECT_EQ(device.backend.forward_and_sample_calls, device.backend.forward_calls);
    int64_t generated = 0;
    for (const auto& r : device_together) generated += r.usage.completion_tokens;
    EXPECT_EQ(device.backend.sampled_rows, generated);
    if (blocks == 40) {
      EXPECT_GT(device.engine->Stats().preemptions, 0);
    }
  }
}

TEST(DeviceSamplingTest, ForwardAndSampleFailureEndsTheStepsRequestsWithError) {
  Harness<DeviceSamplingFakeBackend> h(256);
  h.backend.fail = true;
  const auto failed =
      h.RunAll({MakeRequest("f1", Prompt(5, 0), 10), MakeRequest("f2", Prompt(9, 1), 10)});
  for (const auto& r : failed) {
    EXPECT_EQ(r.finish_reason, FinishReason::kError);
    EXPECT_EQ(r.status.code(), absl::StatusCode::kInternal);
    EXPECT_EQ(r.status.message(), "injected backend failure");
    EXPECT_TRUE(r.token_ids.empty());
  }
  EXPECT_EQ(h.engine->Stats().kv_blocks_used, 0);
  h.backend.fail = false;
  EXPECT_EQ(h.Run(MakeRequest("g", Prompt(5, 0), 3)).token_ids.size(), 3u);
}

TEST(DeviceSamplingTest, ATokenOutsideTheVocabularyIsAnInternalError) {
  Harness<DeviceSamplingFakeBackend> h(256);
  h.backend.token_offset = static_cast<int32_t>(h.config.vocab_size);
  const auto r = h.Run(MakeRequest("bad", Prompt(5, 0), 10));
  EXPECT_EQ(r.finish_reason, FinishReason::kError);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(r.token_ids.empty());
  h.backend.token_offset = 0;
  EXPECT_EQ(h.Run(MakeRequest("good", Prompt(5, 0), 3)).token_ids.size(), 3u);
}

}  // namespace
}  // namespace vg::engine
