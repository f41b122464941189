// TextGenerationService end to end over loopback: a real engine on the committed fixture for
// outputs, and an engine over a slow fake backend for cancellation, deadlines and overload.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/model/config.h"
#include "engine/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/engine/test_sinks.h"
#include "tests/server/test_server.h"

namespace vg::server {
namespace {

namespace pb = ::vaultgemma::v1;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::string kFixture = std::string(VG_SOURCE_DIR) + "/tests/fixtures/f32_mha_tied_sliding";

std::unique_ptr<engine::Engine> FixtureEngine(engine::EngineOptions options = {}) {
  options.model_dir = kFixture;
  options.num_threads = 2;
  auto engine = engine::Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

// Everything one Generate call returned.
struct StreamResult {
  grpc::Status status;
  std::vector<pb::GenerateResponse> messages;
  std::vector<uint32_t> token_ids;
  std::string text;
  std::string request_id;  // from the initial metadata
};

StreamResult Generate(pb::TextGeneration::Stub& stub, const pb::GenerateRequest& request,
                      double deadline_seconds = 30) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(deadline_seconds * 1000)));
  StreamResult result;
  auto reader = stub.Generate(&context, request);
  pb::GenerateResponse message;
  while (reader->Read(&message)) {
    result.messages.push_back(message);
    result.token_ids.insert(result.token_ids.end(), message.token_ids().begin(),
                            message.token_ids().end());
    result.text += message.text();
  }
  result.status = reader->Finish();
  const auto& metadata = context.GetServerInitialMetadata();
  if (auto it = metadata.find(kRequestIdMetadataKey); it != metadata.end()) {
    result.request_id = std::string(it->second.data(), it->second.size());
  }
  return result;
}

pb::GenerateRequest IdsRequest(std::vector<uint32_t> ids, uint32_t max_new) {
  pb::GenerateRequest request;
  for (uint32_t id : ids) request.mutable_token_ids()->add_ids(id);
  request.mutable_stopping()->set_max_new_tokens(max_new);
  request.mutable_stopping()->set_ignore_eos(true);
  return request;
}

bool WaitForIdleEngine(const engine::Engine& engine, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int>(seconds * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    const engine::EngineStats stats = engine.Stats();
    if (stats.running == 0 && stats.waiting == 0 && stats.kv_blocks_used == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

TEST(TextGenerationServiceTest, GreedyStreamMatchesTheFixtureReference) {
  std::ifstream file(kFixture + "/reference.json");
  const nlohmann::json reference = nlohmann::json::parse(file);
  const nlohmann::json& c = reference["cases"][0];
  auto engine = FixtureEngine();
  ASSERT_NE(engine, nullptr);
  testing::TestServer server(engine.get());
  ASSERT_NE(server.port(), 0);

  pb::GenerateRequest request;
  request.set_text(c["prompt"].get<std::string>());
  const auto expected = c["greedy_token_ids"].get<std::vector<int32_t>>();
  request.mutable_stopping()->set_max_new_tokens(expected.size());
  const StreamResult result = Generate(server.stub(), request);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_FALSE(result.messages.empty());

  const std::vector<uint32_t> expected_u(expected.begin(), expected.end());
  EXPECT_EQ(result.token_ids, expected_u);
  auto decoded = engine->tokenizer().Decode(expected);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(result.text, *decoded);

  const auto prompt = c["prompt_token_ids"].get<std::vector<uint32_t>>();
  const pb::GenerateResponse& first = result.messages.front();
  EXPECT_EQ(std::vector<uint32_t>(first.prompt_token_ids().begin(), first.prompt_token_ids().end()),
            prompt);
  const auto logprobs = c["greedy_logprobs"].get<std::vector<float>>();
  size_t k = 0;
  for (const pb::GenerateResponse& m : result.messages) {
    ASSERT_EQ(m.logprobs_size(), m.token_ids_size());
    for (const pb::TokenLogprobs& lp : m.logprobs()) {
      ASSERT_LT(k, logprobs.size());
      EXPECT_NEAR(lp.logprob(), logprobs[k++], 1e-3);
    }
  }
  for (size_t i = 0; i + 1 < result.messages.size(); ++i) {
    EXPECT_EQ(result.messages[i].finish_reason(), pb::FINISH_REASON_UNSPECIFIED);
    EXPECT_FALSE(result.messages[i].has_usage());
  }
  const pb::GenerateResponse& last = result.messages.back();
  EXPECT_EQ(last.finish_reason(), pb::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), prompt.size());
  EXPECT_EQ(last.usage().completion_tokens(), expected.size());
  EXPECT_THAT(result.request_id, StartsWith("req-"));
}

TEST(TextGenerationServiceTest, RequestIdTravelsInInitialMetadata) {
  auto engine = FixtureEngine();
  ASSERT_NE(engine, nullptr);
  testing::TestServer server(engine.get());
  pb::GenerateRequest request = IdsRequest({2, 100, 200}, 2);
  request.set_request_id("client-chosen-id");
  StreamResult result = Generate(server.stub(), request);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.request_id, "client-chosen-id");

  request.clear_request_id();
  const StreamResult a = Generate(server.stub(), request);
  const StreamResult b = Generate(server.stub(), request);
  EXPECT_THAT(a.request_id, StartsWith("req-"));
  EXPECT_THAT(b.request_id, StartsWith("req-"));
  EXPECT_NE(a.request_id, b.request_id);
}

TEST(TextGenerationServiceTest, SixtyFourConcurrentStreamsMatchRunningAlone) {
  auto engine = FixtureEngine();
  ASSERT_NE(engine, nullptr);
  testing::TestServer server(engine.get());
  constexpr int kStreams = 64;
  std::vector<pb::GenerateRequest> requests;
  for (int i = 0; i < kStreams; ++i) {
    std::vector<uint32_t> prompt = {2};
    for (int j = 0; j < 3 + i % 11; ++j) prompt.push_back(5 + (i * 37 + j * 11) % 370);
    pb::GenerateRequest r = IdsRequest(prompt, 8 + i % 9);
    if (i % 2 == 1) {
      r.mutable_sampling()->set_temperature(0.9f);
      r.mutable_sampling()->set_seed(1000 + i);
    }
    requests.push_back(r);
  }
  std::vector<StreamResult> alone;
  for (const auto& r : requests) alone.push_back(Generate(server.stub(), r));

  std::vector<StreamResult> together(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { together[i] = Generate(server.stub(), requests[i]); });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(alone[i].status.ok()) << i << ": " << alone[i].status.error_message();
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_EQ(together[i].token_ids, alone[i].token_ids) << "stream " << i;
    EXPECT_EQ(together[i].text, alone[i].text) << "stream " << i;
    EXPECT_EQ(together[i].token_ids.size(), requests[i].stopping().max_new_tokens());
  }
  EXPECT_TRUE(WaitForIdleEngine(*engine, 1.0));
}

// An engine over the fake backend, slowed so that requests stay live long enough to cancel.
struct SlowEngine {
  explicit SlowEngine(engine::EngineOptions options = {}) {
    tokenizer = *engine::Tokenizer::Load(kFixture + "/tokenizer.model");
    config = *engine::LoadModelConfig(kFixture + "/config.json");
    backend = std::make_unique<engine::testing::FakeBackend>(256, 16, config.vocab_size);
    backend->step_delay_ms = 10;
    options.block_size = 16;
    engine = *engine::Engine::CreateForTest(options, config, backend.get(), tokenizer.get());
  }
  std::unique_ptr<engine::Tokenizer> tokenizer;
  engine::ModelConfig config;
  std::unique_ptr<engine::testing::FakeBackend> backend;
  std::unique_ptr<engine::Engine> engine;
};

TEST(TextGenerationServiceTest, ClientCancelFreesTheEngineRequest) {
  SlowEngine slow;
  testing::TestServer server(slow.engine.get());
  grpc::ClientContext context;
  auto reader = server.stub().Generate(&context, IdsRequest({2, 10, 11, 12}, 100));
  pb::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));
  EXPECT_EQ(slow.engine->Stats().running, 1);
  context.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitForIdleEngine(*slow.engine, 1.0))
      << "running " << slow.engine->Stats().running << " blocks "
      << slow.engine->Stats().kv_blocks_used;
}

// The count vaultgemma-server's shutdown waits on: a call is in flight from its handler until gRPC
// has written its status, whether it streams, is refused or is unary.
TEST(TextGenerationServiceTest, CallsAreInFlightUntilTheirStatusIsWritten) {
  SlowEngine slow;
  testing::TestServer server(slow.engine.get());
  TextGenerationService& service = server.service();
  EXPECT_EQ(service.calls_in_flight(), 0);
  EXPECT_TRUE(service.WaitForNoCallsInFlight(absl::Now()));
  // The server's OnDone may run a moment after the client has the status.
  const auto settles_to = [&service](int64_t want) {
    for (int i = 0; i < 500 && service.calls_in_flight() != want; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return service.calls_in_flight();
  };

  grpc::ClientContext context;
  auto reader = server.stub().Generate(&context, IdsRequest({2, 10, 11, 12}, 100));
  pb::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));
  EXPECT_EQ(service.calls_in_flight(), 1);
  EXPECT_FALSE(service.WaitForNoCallsInFlight(absl::Now() + absl::Milliseconds(50)));

  grpc::ClientContext tokenize_context;
  pb::TokenizeRequest tokenize;
  tokenize.set_text("hello");
  pb::TokenizeResponse tokens;
  ASSERT_TRUE(server.stub().Tokenize(&tokenize_context, tokenize, &tokens).ok());
  EXPECT_EQ(settles_to(1), 1);

  service.SetDraining(true);
  const StreamResult refused = Generate(server.stub(), IdsRequest({2, 20, 21}, 4));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(settles_to(1), 1);

  // The stream admitted before the drain is still one call until its status is out.
  EXPECT_FALSE(service.WaitForNoCallsInFlight(absl::Now() + absl::Milliseconds(50)));
  context.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(service.WaitForNoCallsInFlight(absl::Now() + absl::Seconds(5)));
  EXPECT_EQ(service.calls_in_flight(), 0);
}

TEST(TextGenerationServiceTest, DeadlineEndsALongGeneration) {
  SlowEngine slow;
  testing::TestServer server(slow.engine.get());
  const StreamResult result = Generate(server.stub(), IdsRequest({2, 10, 11, 12}, 100), 0.3);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(result.token_ids.size(), 100u);
  EXPECT_TRUE(WaitForIdleEngine(*slow.engine, 1.0));
}

TEST(TextGenerationServiceTest, FullQueueIsResourceExhausted) {
  SlowEngine slow(engine::EngineOptions{.max_num_seqs = 1, .max_waiting = 0});
  testing::TestServer server(slow.engine.get());
  grpc::ClientContext context;
  auto reader = server.stub().Generate(&context, IdsRequest({2, 10, 11, 12}, 100));
  pb::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));

  const StreamResult second = Generate(server.stub(), IdsRequest({2, 20, 21}, 4));
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << second.status.error_message();
  EXPECT_FALSE(second.request_id.empty());
  context.TryCancel();
  while (reader->Read(&message)) {
  }
  reader->Finish();
  EXPECT_TRUE(WaitForIdleEngine(*slow.engine, 1.0));
}

struct InvalidCase {
  const char* name;
  std::function<void(pb::GenerateRequest&)> edit;
  const char* field;  // must appear in the message
};

TEST(TextGenerationServiceTest, InvalidRequestsNameTheField) {
  auto engine = FixtureEngine();
  ASSERT_NE(engine, nullptr);
  testing::TestServer server(engine.get());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<InvalidCase> cases = {
      {"negative temperature", [](auto& r) { r.mutable_sampling()->set_temperature(-0.5f); },
       "sampling.temperature"},
      {"nan temperature", [=](auto& r) { r.mutable_sampling()->set_temperature(nan); },
       "sampling.temperature"},
      {"inf temperature", [=](auto& r) { r.mutable_sampling()->set_temperature(inf); },
       "sampling.temperature"},
      {"top_p 0", [](auto& r) { r.mutable_sampling()->set_top_p(0); }, "sampling.top_p"},
      {"top_p > 1", [](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }, "sampling.top_p"},
      {"top_p nan", [=](auto& r) { r.mutable_sampling()->set_top_p(nan); }, "sampling.top_p"},
      {"min_p < 0", [](auto& r) { r.mutable_sampling()->set_min_p(-0.1f); }, "sampling.min_p"},
      {"min_p > 1", [](auto& r) { r.mutable_sampling()->set_min_p(1.1f); }, "sampling.min_p"},
      {"repetition 0", [](auto& r) { r.mutable_sampling()->set_repetition_penalty(0); },
       "sampling.repetition_penalty"},
      {"repetition inf", [=](auto& r) { r.mutable_sampling()->set_repetition_penalty(inf); },
       "sampling.repetition_penalty"},
      {"presence 3", [](auto& r) { r.mutable_sampling()->set_presence_penalty(3); },
       "sampling.presence_penalty"},
      {"frequency -3", [](auto& r) { r.mutable_sampling()->set_frequency_penalty(-3); },
       "sampling.frequency_penalty"},
      {"17 stop strings",
       [](auto& r) {
         for (int i = 0; i < 17; ++i) r.mutable_stopping()->add_stop(absl::StrCat("s", i));
       },
       "stopping.stop"},
      {"long stop string", [](auto& r) { r.mutable_stopping()->add_stop(std::string(257, 'a')); },
       "stopping.stop[0]"},
      {"empty stop string", [](auto& r) { r.mutable_stopping()->add_stop(""); },
       "stopping.stop[0]"},
      {"stop token outside vocab", [](auto& r) { r.mutable_stopping()->add_stop_token_ids(384); },
       "stopping.stop_token_ids"},
      {"top_logprobs 21", [](auto& r) { r.set_top_logprobs(21); }, "top_logprobs"},
      {"no prompt", [](auto& r) { r.clear_prompt(); }, "prompt"},
      {"empty text", [](auto& r) { r.set_text(""); }, "text"},
      {"empty token_ids", [](auto& r) { r.mutable_token_ids()->clear_ids(); }, "token_ids"},
      {"token id outside vocab", [](auto& r) { r.mutable_token_ids()->add_ids(384); }, "token_ids"},
      {"prompt fills the context",
       [](auto& r) {
         r.mutable_token_ids()->clear_ids();
         for (int i = 0; i < 128; ++i) r.mutable_token_ids()->add_ids(5);
       },
       "prompt"},
      {"max_new_tokens 0", [](auto& r) { r.mutable_stopping()->set_max_new_tokens(0); },
       "stopping.max_new_tokens"},
      {"request_id not ASCII", [](auto& r) { r.set_request_id("caf\xC3\xA9"); }, "request_id"},
  };
  for (const InvalidCase& c : cases) {
    pb::GenerateRequest request = IdsRequest({2, 10, 11}, 4);
    c.edit(request);
    const StreamResult result = Generate(server.stub(), request);
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name;
    EXPECT_THAT(result.status.error_message(), HasSubstr(c.field)) << c.name;
    EXPECT_TRUE(result.messages.empty()) << c.name;
  }
  EXPECT_EQ(engine->Stats().running, 0);
}

// proto3 `string` fields are checked for UTF-8 by protobuf itself when the server parses the
// request, so malformed text never reaches ToEngineRequest over the wire (gRPC answers with its
// own parse-failure status); request_conversion_test covers the server's own check.
TEST(TextGenerationServiceTest, MalformedUtf8NeverReachesTheEngine) {
  auto engine = FixtureEngine();
  ASSERT_NE(engine, nullptr);
  testing::TestServer server(engine.get());
  pb::GenerateRequest request = IdsRequest({2, 10, 11}, 4);
  request.set_text("ab\xC3(");
  const StreamResult result = Generate(server.stub(), request);
  EXPECT_FALSE(result.status.ok());
  EXPECT_TRUE(result.messages.empty());
  EXPECT_TRUE(WaitForIdleEngine(*engine, 1.0));
}

TEST(TextGenerationServiceTest, TokenizeMatchesTheEngineTokenizer) {
  auto engine = FixtureEngine();
  ASSERT_NE(engine, nullptr);
  testing::TestServer server(engine.get());
  grpc::ClientContext context;
  pb::TokenizeRequest request;
  request.set_text("Hello I am doing a project");
  request.set_add_bos(true);
  pb::TokenizeResponse response;
  ASSERT_TRUE(server.stub().Tokenize(&context, request, &response).ok());
  std::vector<int32_t> expected = {static_cast<int32_t>(engine->config().bos_token_id)};
  for (int32_t id : engine->tokenizer().Encode(request.text(), false)) expected.push_back(id);
  ASSERT_EQ(response.token_ids_size(), static_cast<int>(expected.size()));
  ASSERT_EQ(response.pieces_size(), static_cast<int>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(response.token_ids(i), static_cast<uint32_t>(expected[i]));
    EXPECT_EQ(response.pieces(i), std::string(engine->tokenizer().IdToPiece(expected[i])));
  }
}

TEST(TextGenerationServiceTest, GetModelInfoDescribesTheModel) {
  auto engine = FixtureEngine();
  ASSERT_NE(engine, nullptr);
  testing::TestServer server(engine.get(), "fixtures/tiny");
  grpc::ClientContext context;
  pb::ModelInfo info;
  ASSERT_TRUE(server.stub().GetModelInfo(&context, pb::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.model_id(), "fixtures/tiny");
  EXPECT_EQ(info.architecture(), "VaultGemmaForCausalLM");
  EXPECT_EQ(info.dtype(), "float32");
  EXPECT_EQ(info.context_length(), 128u);
  EXPECT_EQ(info.vocab_size(), 384u);
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_EQ(info.server_version(), "0.1.0");
}

TEST(TextGenerationServiceTest, HealthCheckIsServing) {
  auto engine = FixtureEngine();
  ASSERT_NE(engine, nullptr);
  testing::TestServer server(engine.get());
  auto health = grpc::health::v1::Health::NewStub(server.channel());
  for (const std::string service : {"", "vaultgemma.v1.TextGeneration"}) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = health->Check(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
}

}  // namespace
}  // namespace vg::server
