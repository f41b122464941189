// Metrics end to end: an in-process server with Metrics on a free port, a few Generate, Tokenize
// and GetModelInfo calls (completed, rejected, cancelled), then /metrics scraped over HTTP and
// parsed. Uses the fake backend, slowed so that a request stays live long enough to cancel.
#include "server/metrics.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "engine/model/config.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "server/text_generation_service.h"
#include "tests/engine/engine/test_sinks.h"
#include "tests/server/http_get.h"

namespace vg::server {
namespace {

namespace pb = ::vaultgemma::v1;

const std::string kFixture = std::string(VG_SOURCE_DIR) + "/tests/fixtures/f32_mha_tied_sliding";

struct SlowEngine {
  // `metrics` (optional) observes the engine's steps and follows its stats until destruction.
  explicit SlowEngine(Metrics* metrics = nullptr) : metrics(metrics) {
    tokenizer = *engine::Tokenizer::Load(kFixture + "/tokenizer.model");
    config = *engine::LoadModelConfig(kFixture + "/config.json");
    backend = std::make_unique<engine::testing::FakeBackend>(256, 16, config.vocab_size);
    backend->step_delay_ms = 5;
    engine = *engine::Engine::CreateForTest(
        engine::EngineOptions{.block_size = 16, .step_observer = metrics}, config, backend.get(),
        tokenizer.get());
    if (metrics != nullptr) metrics->AttachEngine(engine.get());
  }
  ~SlowEngine() {
    if (metrics != nullptr) metrics->AttachEngine(nullptr);
  }
  Metrics* metrics;
  std::unique_ptr<engine::Tokenizer> tokenizer;
  engine::ModelConfig config;
  std::unique_ptr<engine::testing::FakeBackend> backend;
  std::unique_ptr<engine::Engine> engine;
};

// A port nothing listens on now (the Exposer does not accept port 0).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::string Scrape(int port) { return testing::HttpGetBody(port, "/metrics"); }

// One sample of the text exposition format.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

std::vector<Sample> Parse(const std::string& text) {
  std::vector<Sample> samples;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.empty() || line[0] == '#') continue;
    Sample sample;
    const size_t space = line.rfind(' ');
    sample.value = std::strtod(line.c_str() + space + 1, nullptr);
    const std::string series = line.substr(0, space);
    const size_t brace = series.find('{');
    sample.name = series.substr(0, brace);
    if (brace != std::string::npos) {
      // k="v",k="v"} ; our label values hold no quotes or commas.
      size_t pos = brace + 1;
      while (pos < series.size() && series[pos] != '}') {
        const size_t eq = series.find('=', pos);
        const size_t close_quote = series.find('"', eq + 2);
        sample.labels[series.substr(pos, eq - pos)] = series.substr(eq + 2, close_quote - (eq + 2));
        pos = close_quote + 1;
        if (pos < series.size() && series[pos] == ',') ++pos;
      }
    }
    samples.push_back(std::move(sample));
  }
  return samples;
}

// The value of the one sample named `name` whose labels include `labels`; -1 when none.
double Value(const std::vector<Sample>& samples, const std::string& name,
             const std::map<std::string, std::string>& labels = {}) {
  for (const Sample& s : samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) match = false;
    }
    if (match) return s.value;
  }
  return -1;
}

struct Observed {
  explicit Observed(engine::Engine* engine, Metrics* metrics)
      : service(engine, "test-model", "cpu", metrics) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    stub = pb::TextGeneration::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                           grpc::InsecureChannelCredentials()));
  }
  ~Observed() {
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server->Wait();
  }
  TextGenerationService service;
  int port = 0;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<pb::TextGeneration::Stub> stub;
};

pb::GenerateRequest TextRequest(const std::string& text, uint32_t max_new) {
  pb::GenerateRequest request;
  request.set_text(text);
  request.mutable_stopping()->set_max_new_tokens(max_new);
  request.mutable_stopping()->set_ignore_eos(true);
  return request;
}

// Runs one Generate to its end; returns the status and counts the tokens received.
grpc::Status Generate(pb::TextGeneration::Stub& stub, const pb::GenerateRequest& request,
                      int* tokens) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto reader = stub.Generate(&context, request);
  pb::GenerateResponse message;
  while (reader->Read(&message)) *tokens += message.token_ids_size();
  return reader->Finish();
}

TEST(MetricsTest, StartRejectsABusyPort) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int busy = ntohs(addr.sin_port);
  auto metrics = Metrics::Start("127.0.0.1:" + std::to_string(busy), ModelLabels{});
  EXPECT_EQ(metrics.status().code(), absl::StatusCode::kUnavailable) << metrics.status();
  close(fd);
}

TEST(MetricsTest, ScrapeAgreesWithTheRequestsMade) {
  const int metrics_port = FreePort();
  ASSERT_NE(metrics_port, 0);
  auto metrics = Metrics::Start("127.0.0.1:" + std::to_string(metrics_port),
                                ModelLabels{"test-model", "float32", "cpu", kServerVersion});
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  // Before an engine is attached the endpoint already answers, with idle gauges.
  {
    const std::vector<Sample> before = Parse(Scrape(metrics_port));
    EXPECT_EQ(Value(before, "vaultgemma_requests_running"), 0);
    EXPECT_EQ(Value(before, "vaultgemma_model_info",
                    {{"model_id", "test-model"},
                     {"dtype", "float32"},
                     {"device", "cpu"},
                     {"version", kServerVersion}}),
              1);
  }
  SlowEngine slow(metrics->get());
  EXPECT_EQ((*metrics)->port(), metrics_port);
  Observed observed(slow.engine.get(), metrics->get());
  ASSERT_NE(observed.port, 0);

  // Three completed requests of 4 tokens.
  int received = 0;
  for (int i = 0; i < 3; ++i) {
    const grpc::Status status =
        Generate(*observed.stub, TextRequest("hello " + std::to_string(i), 4), &received);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  EXPECT_EQ(received, 12);
  // A scrape right after the streams ended already counts their tokens (refreshed per scrape).
  EXPECT_GE(Value(Parse(Scrape(metrics_port)), "vaultgemma_generation_tokens_total"), 12);
  // One rejected.
  pb::GenerateRequest invalid = TextRequest("hello", 4);
  invalid.mutable_sampling()->set_temperature(-1);
  EXPECT_EQ(Generate(*observed.stub, invalid, &received).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // One cancelled after its first message.
  {
    grpc::ClientContext context;
    auto reader = observed.stub->Generate(&context, TextRequest("a long one", 1000));
    pb::GenerateResponse message;
    ASSERT_TRUE(reader->Read(&message));
    EXPECT_GT(message.token_ids_size(), 0);
    context.TryCancel();
    while (reader->Read(&message)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  {
    grpc::ClientContext context;
    pb::TokenizeRequest request;
    request.set_text("hello");
    pb::TokenizeResponse response;
    EXPECT_TRUE(observed.stub->Tokenize(&context, request, &response).ok());
  }
  {
    grpc::ClientContext context;
    pb::ModelInfo response;
    EXPECT_TRUE(observed.stub->GetModelInfo(&context, pb::GetModelInfoRequest(), &response).ok());
  }

  // The engine's final events and the refresh thread run asynchronously: poll the scrape.
  std::vector<Sample> s;
  std::string body;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    body = Scrape(metrics_port);
    s = Parse(body);
    const engine::EngineStats stats = slow.engine->Stats();
    // The gRPC side counts the cancelled call in its OnDone, which may run after the engine is
    // done with the request (seen under TSan).
    if (Value(s, "vaultgemma_requests_total", {{"finish_reason", "cancelled"}}) == 1 &&
        Value(s, "vaultgemma_grpc_requests_total",
              {{"method", "Generate"}, {"code", "CANCELLED"}}) == 1 &&
        Value(s, "vaultgemma_requests_running") == 0 &&
        Value(s, "vaultgemma_generation_tokens_total") ==
            static_cast<double>(stats.generation_tokens) &&
        stats.running == 0) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(body.empty());
  const engine::EngineStats stats = slow.engine->Stats();

  EXPECT_EQ(Value(s, "vaultgemma_model_info",
                  {{"model_id", "test-model"},
                   {"dtype", "float32"},
                   {"device", "cpu"},
                   {"version", kServerVersion}}),
            1);
  // Gauges back to idle.
  EXPECT_EQ(Value(s, "vaultgemma_requests_running"), 0);
  EXPECT_EQ(Value(s, "vaultgemma_requests_waiting"), 0);
  EXPECT_EQ(Value(s, "vaultgemma_kv_cache_usage_ratio"), 0);
  EXPECT_EQ(Value(s, "vaultgemma_kv_cache_blocks", {{"state", "used"}}), 0);
  EXPECT_EQ(Value(s, "vaultgemma_kv_cache_blocks", {{"state", "free"}}) +
                Value(s, "vaultgemma_kv_cache_blocks", {{"state", "cached"}}),
            stats.kv_blocks_total);

  // Engine counters follow Stats(); the completed requests' tokens are all in them.
  EXPECT_EQ(Value(s, "vaultgemma_generation_tokens_total"), stats.generation_tokens);
  EXPECT_GE(Value(s, "vaultgemma_generation_tokens_total"), 12 + 1);
  EXPECT_EQ(Value(s, "vaultgemma_prompt_tokens_total"), stats.prompt_tokens_processed);
  EXPECT_EQ(Value(s, "vaultgemma_prefix_cache_hit_tokens_total"), stats.cached_prompt_tokens);
  EXPECT_EQ(Value(s, "vaultgemma_preemptions_total"), stats.preemptions);
  EXPECT_EQ(Value(s, "vaultgemma_engine_steps_total"), stats.steps);
  // Every step's batch was observed; each held between 1 and max_num_seqs sequences.
  EXPECT_EQ(Value(s, "vaultgemma_batch_size_sequences_count"), stats.steps);
  EXPECT_EQ(Value(s, "vaultgemma_batch_size_tokens_count"), stats.steps);
  EXPECT_GE(Value(s, "vaultgemma_batch_size_sequences_sum"), stats.steps);
  EXPECT_EQ(Value(s, "vaultgemma_batch_size_sequences_bucket", {{"le", "16"}}), stats.steps);
  // Tokens computed: every prompt token once, every generated token but each request's last.
  EXPECT_GE(Value(s, "vaultgemma_batch_size_tokens_sum"),
            static_cast<double>(stats.prompt_tokens_processed));

  // Per-request observations.
  EXPECT_EQ(Value(s, "vaultgemma_requests_total", {{"finish_reason", "length"}}), 3);
  EXPECT_EQ(Value(s, "vaultgemma_requests_total", {{"finish_reason", "cancelled"}}), 1);
  EXPECT_EQ(Value(s, "vaultgemma_requests_total", {{"finish_reason", "eos"}}), 0);
  EXPECT_EQ(Value(s, "vaultgemma_requests_total", {{"finish_reason", "error"}}), 0);
  EXPECT_EQ(Value(s, "vaultgemma_grpc_requests_total", {{"method", "Generate"}, {"code", "OK"}}),
            3);
  EXPECT_EQ(Value(s, "vaultgemma_grpc_requests_total",
                  {{"method", "Generate"}, {"code", "INVALID_ARGUMENT"}}),
            1);
  EXPECT_EQ(
      Value(s, "vaultgemma_grpc_requests_total", {{"method", "Generate"}, {"code", "CANCELLED"}}),
      1);
  EXPECT_EQ(Value(s, "vaultgemma_grpc_requests_total", {{"method", "Tokenize"}, {"code", "OK"}}),
            1);
  EXPECT_EQ(
      Value(s, "vaultgemma_grpc_requests_total", {{"method", "GetModelInfo"}, {"code", "OK"}}), 1);

  // Four requests reached the engine; all four produced a token.
  EXPECT_EQ(Value(s, "vaultgemma_e2e_request_latency_seconds_count"), 4);
  EXPECT_EQ(Value(s, "vaultgemma_request_queue_time_seconds_count"), 4);
  EXPECT_EQ(Value(s, "vaultgemma_time_to_first_token_seconds_count"), 4);
  EXPECT_GT(Value(s, "vaultgemma_e2e_request_latency_seconds_sum"), 0);
  EXPECT_EQ(Value(s, "vaultgemma_e2e_request_latency_seconds_bucket", {{"le", "+Inf"}}), 4);
  // 3 gaps in each 4-token stream, and those of the cancelled one's tokens.
  EXPECT_GE(Value(s, "vaultgemma_inter_token_latency_seconds_count"), 9);
  EXPECT_EQ(Value(s, "vaultgemma_inter_token_latency_seconds_bucket", {{"le", "+Inf"}}),
            Value(s, "vaultgemma_inter_token_latency_seconds_count"));
  EXPECT_GT(Value(s, "vaultgemma_inter_token_latency_seconds_sum"), 0);

  // No prompt text in any label.
  EXPECT_EQ(body.find("hello"), std::string::npos);

  // Prometheus' own linter (Debian package `prometheus`, installed by `make deps`).
  ASSERT_EQ(std::system("command -v promtool > /dev/null 2>&1"), 0)
      << "promtool is missing: run `make deps` (it installs Debian's prometheus package)";
  const std::string path = ::testing::TempDir() + "/metrics_scrape.txt";
  std::ofstream(path) << body;
  EXPECT_EQ(std::system(("promtool check metrics < " + path + " 2>&1").c_str()), 0) << body;

  (*metrics)->Stop();
  EXPECT_FALSE(Scrape(metrics_port).empty()) << "the endpoint serves after Stop";
}

}  // namespace
}  // namespace vg::server
