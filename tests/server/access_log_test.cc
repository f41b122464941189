// AccessLog: the line formats, and end to end through TextGenerationService: one JSON line per
// finished RPC, with the request's counts and code, and never the prompt or completion text.
#include "server/access_log.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "engine/model/config.h"
#include "engine/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/text_generation_service.h"
#include "tests/engine/engine/test_sinks.h"

namespace vg::server {
namespace {

namespace pb = ::vaultgemma::v1;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kFixture = std::string(VG_SOURCE_DIR) + "/tests/fixtures/f32_mha_tied_sliding";
constexpr char kMarker[] = "MARKER-7f3a9";

AccessRecord SampleRecord() {
  AccessRecord r;
  r.time = absl::FromUnixSeconds(1700000000);
  r.request_id = "my id \"1\"";
  r.method = "Generate";
  r.code = grpc::StatusCode::OK;
  r.prompt_tokens = 7;
  r.completion_tokens = 4;
  r.cached_tokens = 0;
  r.finish_reason = "length";
  r.time_to_first_token_seconds = 0.0125;
  r.e2e_seconds = 0.5;
  r.peer = "ipv4:127.0.0.1:5000";
  return r;
}

TEST(AccessLogTest, ParsesFormatNames) {
  EXPECT_EQ(*AccessLog::ParseFormat("text"), AccessLog::Format::kText);
  EXPECT_EQ(*AccessLog::ParseFormat("json"), AccessLog::Format::kJson);
  EXPECT_EQ(AccessLog::ParseFormat("xml").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(AccessLogTest, TextLineHasEveryField) {
  AccessLog log(AccessLog::Format::kText, nullptr);
  EXPECT_EQ(log.FormatLine(SampleRecord()),
            "2023-11-14T22:13:20.000Z request_id=\"my id \\\"1\\\"\" method=Generate code=OK "
            "prompt_tokens=7 completion_tokens=4 cached_tokens=0 finish_reason=length "
            "ttft_s=0.012500 e2e_s=0.500000 peer=\"ipv4:127.0.0.1:5000\"");
  AccessRecord unary;
  unary.method = "Tokenize";
  unary.code = grpc::StatusCode::INVALID_ARGUMENT;
  EXPECT_THAT(log.FormatLine(unary),
              HasSubstr("request_id=- method=Tokenize code=INVALID_ARGUMENT prompt_tokens=- "
                        "completion_tokens=- cached_tokens=- finish_reason=- ttft_s=-"));
}

TEST(AccessLogTest, JsonLineParses) {
  AccessLog log(AccessLog::Format::kJson, nullptr);
  const nlohmann::json j = nlohmann::json::parse(log.FormatLine(SampleRecord()));
  EXPECT_EQ(j["time"], "2023-11-14T22:13:20.000Z");
  EXPECT_EQ(j["request_id"], "my id \"1\"");
  EXPECT_EQ(j["code"], "OK");
  EXPECT_EQ(j["prompt_tokens"], 7);
  EXPECT_EQ(j["completion_tokens"], 4);
  EXPECT_EQ(j["cached_tokens"], 0);
  EXPECT_EQ(j["finish_reason"], "length");
  EXPECT_DOUBLE_EQ(j["ttft_s"].get<double>(), 0.0125);
  EXPECT_DOUBLE_EQ(j["e2e_s"].get<double>(), 0.5);
  EXPECT_EQ(j["peer"], "ipv4:127.0.0.1:5000");
}

struct SlowEngine {
  SlowEngine() {
    tokenizer = *engine::Tokenizer::Load(kFixture + "/tokenizer.model");
    config = *engine::LoadModelConfig(kFixture + "/config.json");
    backend = std::make_unique<engine::testing::FakeBackend>(256, 16, config.vocab_size);
    backend->step_delay_ms = 5;
    engine = *engine::Engine::CreateForTest(engine::EngineOptions{.block_size = 16}, config,
                                            backend.get(), tokenizer.get());
  }
  std::unique_ptr<engine::Tokenizer> tokenizer;
  engine::ModelConfig config;
  std::unique_ptr<engine::testing::FakeBackend> backend;
  std::unique_ptr<engine::Engine> engine;
};

std::string ReadAll(std::FILE* file) {
  std::fflush(file);
  std::rewind(file);
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) out.append(buffer, n);
  std::fseek(file, 0, SEEK_END);
  return out;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    lines.push_back(text.substr(start, end - start));
  }
  return lines;
}

TEST(AccessLogTest, LogsEveryRpcWithoutItsText) {
  SlowEngine slow;
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  {
    AccessLog log(AccessLog::Format::kJson, file);
    TextGenerationService service(slow.engine.get(), "test-model", "cpu", nullptr, &log);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    ASSERT_NE(port, 0);
    auto stub = pb::TextGeneration::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));

    pb::GenerateRequest request;
    request.set_text(std::string("say ") + kMarker + " back");
    request.set_request_id("log-test-1");
    request.mutable_stopping()->set_max_new_tokens(4);
    request.mutable_stopping()->set_ignore_eos(true);
    std::string completion;
    {
      grpc::ClientContext context;
      auto reader = stub->Generate(&context, request);
      pb::GenerateResponse message;
      while (reader->Read(&message)) completion += message.text();
      ASSERT_TRUE(reader->Finish().ok());
    }
    {  // rejected
      pb::GenerateRequest invalid = request;
      invalid.set_request_id("log-test-2");
      invalid.mutable_sampling()->set_temperature(-1);
      grpc::ClientContext context;
      auto reader = stub->Generate(&context, invalid);
      pb::GenerateResponse message;
      while (reader->Read(&message)) {
      }
      EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    }
    {  // cancelled by the client
      pb::GenerateRequest long_one = request;
      long_one.set_request_id("log-test-3");
      long_one.mutable_stopping()->set_max_new_tokens(1000);
      grpc::ClientContext context;
      auto reader = stub->Generate(&context, long_one);
      pb::GenerateResponse message;
      ASSERT_TRUE(reader->Read(&message));
      context.TryCancel();
      while (reader->Read(&message)) {
      }
      EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    }
    {
      grpc::ClientContext context;
      pb::TokenizeRequest tokenize;
      tokenize.set_text(kMarker);
      pb::TokenizeResponse response;
      EXPECT_TRUE(stub->Tokenize(&context, tokenize, &response).ok());
    }
    // The cancelled request's line waits for the engine's final event.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (Lines(ReadAll(file)).size() < 4 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server->Wait();
    slow.engine->Shutdown(false);

    const std::string text = ReadAll(file);
    EXPECT_THAT(text, Not(HasSubstr(kMarker)));
    ASSERT_FALSE(completion.empty());
    EXPECT_THAT(text, Not(HasSubstr(completion)));
    const std::vector<std::string> lines = Lines(text);
    ASSERT_EQ(lines.size(), 4u) << text;
    std::map<std::string, nlohmann::json> by_id;
    for (const std::string& line : lines) {
      const nlohmann::json j = nlohmann::json::parse(line);  // throws (fails) if not JSON
      by_id[j["request_id"].is_null() ? j["method"].get<std::string>()
                                      : j["request_id"].get<std::string>()] = j;
    }
    const nlohmann::json& ok = by_id["log-test-1"];
    EXPECT_EQ(ok["method"], "Generate");
    EXPECT_EQ(ok["code"], "OK");
    EXPECT_EQ(ok["completion_tokens"], 4);
    EXPECT_GT(ok["prompt_tokens"].get<int>(), 1);
    EXPECT_EQ(ok["finish_reason"], "length");
    EXPECT_GE(ok["ttft_s"].get<double>(), 0);
    EXPECT_GT(ok["e2e_s"].get<double>(), 0);
    EXPECT_THAT(ok["peer"].get<std::string>(), HasSubstr("127.0.0.1"));
    const nlohmann::json& rejected = by_id["log-test-2"];
    EXPECT_EQ(rejected["code"], "INVALID_ARGUMENT");
    EXPECT_TRUE(rejected["completion_tokens"].is_null());
    EXPECT_TRUE(rejected["finish_reason"].is_null());
    const nlohmann::json& cancelled = by_id["log-test-3"];
    EXPECT_EQ(cancelled["code"], "CANCELLED");
    EXPECT_EQ(cancelled["finish_reason"], "cancelled");
    EXPECT_GE(cancelled["completion_tokens"].get<int>(), 1);
    EXPECT_EQ(by_id["Tokenize"]["code"], "OK");
  }
  std::fclose(file);
}

}  // namespace
}  // namespace vg::server
