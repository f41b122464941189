// Faults and overload against the vaultgemma-server binary (issue 9, hardening): abandoned streams
// leave nothing behind, a burst past the queue is refused at once while admitted requests finish,
// a KV pool too small for the batch preempts without changing any token, a missing or corrupt
// model directory is a clean one-line exit, oversized messages are refused without harm, and a
// client that never reads blocks nobody. The model is the tiny f32 fixture (context 128).
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/http_get.h"
#include "tests/server/server_process.h"
#include "tests/server/started_server.h"
#include "vaultgemma/v1/text_generation.grpc.pb.h"

namespace vg::server {
namespace {

namespace pb = ::vaultgemma::v1;
using ::testing::HasSubstr;

using testing::kRssIsMeaningful;

const std::string kBinary = std::string(VG_BINARY_DIR) + "/bin/vaultgemma-server";
const std::string kFixture = std::string(VG_SOURCE_DIR) + "/tests/fixtures/f32_mha_tied_sliding";
constexpr int kLongTokens = 100;  // the fixture's context is 128
// KV bytes per 16-position block of the fixture in float32: 2 layers x (K, V) x 4 heads x 8 dims x
// 4 bytes x 16 positions.
constexpr int64_t kFixtureBlockBytes = 2 * 2 * 4 * 8 * 4 * 16;

// A running server with metrics, and the ports it printed.
using Started = testing::StartedServer;
using testing::MetricValue;

Started StartServer(std::vector<std::string> extra) {
  std::vector<std::string> argv = {kBinary,       "--model",        kFixture, "--listen",
                                   "127.0.0.1:0", "--threads",      "1",      "--metrics-port",
                                   "0",           "--no-reflection"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return testing::StartServerBinary(argv);
}

struct Gauges {
  double running = -1, waiting = -1, kv_used = -1;
  bool AtRest() const { return running == 0 && waiting == 0 && kv_used == 0; }
};

Gauges ReadGauges(int metrics_port) {
  const std::string body = testing::HttpGetBody(metrics_port, "/metrics");
  return Gauges{MetricValue(body, "vaultgemma_requests_running"),
                MetricValue(body, "vaultgemma_requests_waiting"),
                MetricValue(body, "vaultgemma_kv_cache_blocks{state=\"used\"}")};
}

// Polls until no request runs or waits and no KV block is referenced (the engine publishes its
// stats each step), for up to `seconds`.
Gauges WaitForRest(int metrics_port, double seconds) {
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  Gauges gauges = ReadGauges(metrics_port);
  while (!gauges.AtRest() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    gauges = ReadGauges(metrics_port);
  }
  return gauges;
}

// VmRSS of a process in KiB, -1 if unreadable.
int64_t RssKib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

pb::GenerateRequest LongRequest(const std::string& text = "a prompt of a few words") {
  pb::GenerateRequest request;
  request.set_text(text);
  request.mutable_stopping()->set_max_new_tokens(kLongTokens);
  request.mutable_stopping()->set_ignore_eos(true);
  return request;
}

struct StreamResult {
  grpc::Status status;
  std::vector<uint32_t> token_ids;
  pb::FinishReason reason = pb::FINISH_REASON_UNSPECIFIED;
  double seconds = 0;  // from the call to its status
};

StreamResult ReadStream(pb::TextGeneration::Stub& stub, const pb::GenerateRequest& request,
                        double deadline_seconds = 60) {
  const auto start = std::chrono::steady_clock::now();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(deadline_seconds * 1000)));
  auto reader = stub.Generate(&context, request);
  StreamResult result;
  pb::GenerateResponse message;
  while (reader->Read(&message)) {
    result.token_ids.insert(result.token_ids.end(), message.token_ids().begin(),
                            message.token_ids().end());
    result.reason = message.finish_reason();
  }
  result.status = reader->Finish();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

// Opens `count` streams from `threads` threads, reads the first message that carries a token and
// abandons the stream: even streams are cancelled by the client (TryCancel), odd ones are simply
// dropped (the ClientContext goes away with the call unfinished, which cancels it). Returns how
// many streams got a token before they were abandoned.
int OpenAndAbandon(const Started& server, int count, int threads) {
  std::atomic<int> next{0};
  std::atomic<int> got_token{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      auto stub = pb::TextGeneration::NewStub(server.NewChannel());
      for (int i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        auto reader =
            stub->Generate(&context, LongRequest("abandoned stream " + std::to_string(i)));
        pb::GenerateResponse message;
        while (reader->Read(&message)) {
          if (message.token_ids_size() > 0) {
            got_token.fetch_add(1);
            break;
          }
        }
        if (i % 2 == 0) {
          context.TryCancel();
          reader->Finish();
        }
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  return got_token.load();
}

TEST(FaultsTest, AbandonedStreamsLeaveNothingBehind) {
  Started server = StartServer({"--max-num-seqs", "16"});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  constexpr int kThreads = 8;

  // Warm-up: the thread pools, allocator arenas and KV pages settle.
  EXPECT_EQ(OpenAndAbandon(server, 200, kThreads), 200);
  Gauges gauges = WaitForRest(server.metrics_port, 30);
  ASSERT_TRUE(gauges.AtRest()) << gauges.running << " running, " << gauges.waiting << " waiting, "
                               << gauges.kv_used << " KV blocks used";
  const int64_t warm_rss = RssKib(server.process->pid());
  ASSERT_GT(warm_rss, 0);

  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(OpenAndAbandon(server, 1000, kThreads), 1000);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  gauges = WaitForRest(server.metrics_port, 30);
  EXPECT_TRUE(gauges.AtRest()) << gauges.running << " running, " << gauges.waiting << " waiting, "
                               << gauges.kv_used << " KV blocks used";
  const int64_t rss = RssKib(server.process->pid());
  if (kRssIsMeaningful) {
    EXPECT_LE(rss, warm_rss + warm_rss / 20)
        << "RSS " << rss << " KiB after 1,000 abandoned streams, " << warm_rss
        << " KiB after the warm-up";
  }

  // Most were really cut mid-generation (the engine counts them as cancelled).
  const std::string body = testing::HttpGetBody(server.metrics_port, "/metrics");
  const double cancelled =
      MetricValue(body, "vaultgemma_requests_total{finish_reason=\"cancelled\"}");
  EXPECT_GT(cancelled, 600) << body;

  // And the server still serves a whole request.
  auto stub = pb::TextGeneration::NewStub(server.NewChannel());
  const StreamResult after = ReadStream(*stub, LongRequest());
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.token_ids.size(), static_cast<size_t>(kLongTokens));
  std::cerr << "1,000 abandoned streams in " << seconds << " s; RSS " << warm_rss << " -> " << rss
            << " KiB; " << cancelled << " cancelled in the engine\n";
  stub.reset();  // an idle sync client does not answer the shutdown's PING; let it go first
  server.process->Signal(SIGTERM);
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
}

TEST(FaultsTest, BurstTenTimesTheQueueIsRefusedAtOnceAndAdmittedOnesFinish) {
  // One running sequence and two queued: three live requests at most; the burst is thirty.
  constexpr int kCapacity = 3;
  constexpr int kBurst = 10 * kCapacity;
  Started server = StartServer({"--max-num-seqs", "1", "--max-queued", "2"});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  auto channel = server.NewChannel();
  ASSERT_TRUE(
      channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)));

  std::vector<StreamResult> results(kBurst);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kBurst; ++i) {
    threads.emplace_back([&, i] {
      auto stub = pb::TextGeneration::NewStub(channel);
      ready.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      results[i] = ReadStream(*stub, LongRequest("burst " + std::to_string(i)));
    });
  }
  while (ready.load() < kBurst) std::this_thread::yield();
  go.store(true);
  for (std::thread& thread : threads) thread.join();

  int admitted = 0;
  int refused = 0;
  double slowest_refusal = 0;
  for (const StreamResult& result : results) {
    if (result.status.ok()) {
      ++admitted;
      EXPECT_EQ(result.token_ids.size(), static_cast<size_t>(kLongTokens));
      EXPECT_EQ(result.reason, pb::FINISH_REASON_LENGTH);
    } else {
      ++refused;
      EXPECT_EQ(result.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << result.status.error_message();
      EXPECT_THAT(result.status.error_message(), HasSubstr("queue is full"));
      EXPECT_TRUE(result.token_ids.empty());
      slowest_refusal = std::max(slowest_refusal, result.seconds);
    }
  }
  std::cerr << admitted << " admitted, " << refused << " refused, slowest refusal "
            << slowest_refusal << " s\n";
  EXPECT_GE(admitted, kCapacity);
  // Requests that arrive after an admitted one finished are admitted too, but most of a burst
  // that arrives within milliseconds cannot be.
  EXPECT_GE(refused, kBurst / 2) << admitted << " admitted";
  // Refused at once: not after waiting for a slot (an admitted stream takes longer than this
  // under sanitizers too, but a refusal is one round trip).
  EXPECT_LT(slowest_refusal, 2.0);
  const Gauges gauges = WaitForRest(server.metrics_port, 30);
  EXPECT_TRUE(gauges.AtRest());
  channel.reset();  // an idle sync client does not answer the shutdown's PING; let it go first
  server.process->Signal(SIGTERM);
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
}

TEST(FaultsTest, KvExhaustionPreemptsAndKeepsEveryTokenOfGreedyDecoding) {
  // Ten blocks (160 positions): one request (a short prompt + 100 tokens, 7 blocks) fits alone,
  // eight at once cannot.
  constexpr int kRequests = 8;
  Started server = StartServer({"--max-num-seqs", std::to_string(kRequests), "--kv-cache-bytes",
                                std::to_string(10 * kFixtureBlockBytes)});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  auto stub = pb::TextGeneration::NewStub(server.NewChannel());
  std::vector<pb::GenerateRequest> requests;
  for (int i = 0; i < kRequests; ++i) {
    requests.push_back(LongRequest("kv pressure " + std::to_string(i) + " words"));
  }
  std::vector<StreamResult> alone;
  for (const pb::GenerateRequest& request : requests) {
    alone.push_back(ReadStream(*stub, request));
    ASSERT_TRUE(alone.back().status.ok()) << alone.back().status.error_message();
    ASSERT_EQ(alone.back().token_ids.size(), static_cast<size_t>(kLongTokens));
  }
  std::string body = testing::HttpGetBody(server.metrics_port, "/metrics");
  EXPECT_EQ(MetricValue(body, "vaultgemma_preemptions_total"), 0) << body;

  std::vector<StreamResult> together(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] { together[i] = ReadStream(*stub, requests[i]); });
  }
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_EQ(together[i].reason, pb::FINISH_REASON_LENGTH);
    EXPECT_EQ(together[i].token_ids, alone[i].token_ids) << "request " << i;
  }
  body = testing::HttpGetBody(server.metrics_port, "/metrics");
  EXPECT_GT(MetricValue(body, "vaultgemma_preemptions_total"), 0) << body;
  EXPECT_TRUE(WaitForRest(server.metrics_port, 30).AtRest());
  stub.reset();  // an idle sync client does not answer the shutdown's PING; let it go first
  server.process->Signal(SIGTERM);
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
}

// A temporary copy of the fixture, removed with its files.
class FixtureCopy {
 public:
  FixtureCopy() {
    char pattern[] = "/tmp/vg-faults-test-XXXXXX";
    path_ = mkdtemp(pattern);
    for (const char* name : {"config.json", "model.safetensors", "tokenizer.model"}) {
      std::filesystem::copy_file(kFixture + "/" + name, path_ + "/" + name);
    }
  }
  ~FixtureCopy() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  void Write(const std::string& name, const std::string& content) const {
    std::ofstream(path_ + "/" + name, std::ios::trunc | std::ios::binary) << content;
  }
  void Truncate(const std::string& name, uintmax_t size) const {
    std::filesystem::resize_file(path_ + "/" + name, size);
  }

 private:
  std::string path_;
};

// The server's stderr lines that are not its "loading ..., listening on" progress line.
std::vector<std::string> ErrorLines(const std::string& err) {
  std::vector<std::string> lines;
  std::istringstream in(err);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("(loading port ") == std::string::npos) lines.push_back(line);
  }
  return lines;
}

// Runs the server on `model_dir` and expects a non-zero exit (not a crash) with one error line
// containing `expected`.
void ExpectCleanExit(const std::string& model_dir, const std::string& expected) {
  testing::ServerProcess process(
      {kBinary, "--model", model_dir, "--listen", "127.0.0.1:0", "--threads", "1", "--no-metrics"});
  ASSERT_TRUE(process.started());
  const int code = process.WaitForExit(60);
  EXPECT_GT(code, 0) << "exit code " << code
                     << " (-1: killed or still running): " << process.stderr_text();
  const std::vector<std::string> lines = ErrorLines(process.stderr_text());
  ASSERT_EQ(lines.size(), 1u) << process.stderr_text();
  EXPECT_THAT(lines[0], HasSubstr("vaultgemma-server: "));
  EXPECT_THAT(lines[0], HasSubstr(expected));
}

TEST(FaultsTest, MissingOrCorruptModelExitsNonZeroWithOneLine) {
  ExpectCleanExit("/no/such/model/dir", "/no/such/model/dir");
  {
    FixtureCopy copy;
    copy.Write("config.json", "{\"hidden_size\": ");
    ExpectCleanExit(copy.path(), "config.json");
  }
  {
    FixtureCopy copy;
    std::filesystem::remove(copy.path() + "/config.json");
    ExpectCleanExit(copy.path(), "config.json");
  }
  {
    FixtureCopy copy;
    copy.Truncate("model.safetensors", 1000);
    ExpectCleanExit(copy.path(), "model.safetensors");
  }
  {
    FixtureCopy copy;
    copy.Write("model.safetensors", "");
    ExpectCleanExit(copy.path(), "model.safetensors");
  }
  {
    FixtureCopy copy;
    copy.Write("model.safetensors", std::string(4096, '\xff'));
    ExpectCleanExit(copy.path(), "model.safetensors");
  }
  {
    FixtureCopy copy;
    copy.Write("tokenizer.model", "not a sentencepiece model");
    ExpectCleanExit(copy.path(), "tokenizer.model");
  }
  {
    FixtureCopy copy;
    std::filesystem::remove(copy.path() + "/tokenizer.model");
    ExpectCleanExit(copy.path(), "tokenizer.model");
  }
}

TEST(FaultsTest, ModelDirectoryDisappearingWhileLoadingExitsNonZeroWithOneLine) {
  auto copy = std::make_unique<FixtureCopy>();
  const std::string dir = copy->path();
  // The test hook holds the loading state (config.json read, weights not yet) for 2 s.
  testing::ServerProcess process(
      {kBinary, "--model", dir, "--listen", "127.0.0.1:0", "--threads", "1", "--no-metrics"},
      {"VAULTGEMMA_TEST_LOAD_DELAY_SECONDS=2"});
  ASSERT_TRUE(process.WaitForLine("(loading port ", 30).has_value()) << process.stderr_text();
  copy.reset();
  ASSERT_FALSE(std::filesystem::exists(dir));
  const int code = process.WaitForExit(60);
  EXPECT_GT(code, 0) << process.stderr_text();
  const std::vector<std::string> lines = ErrorLines(process.stderr_text());
  ASSERT_EQ(lines.size(), 1u) << process.stderr_text();
  EXPECT_THAT(lines[0], HasSubstr(dir));
}

TEST(FaultsTest, OversizedMessagesAreResourceExhaustedAndTheServerKeepsServing) {
  Started server = StartServer({});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  auto stub = pb::TextGeneration::NewStub(server.NewChannel());
  {
    // Just under the limit: a prompt of millions of tokens is tokenized and refused, no more.
    std::string words;
    while (words.size() < (4u << 20) - 1024) words += "hello world. ";
    const StreamResult result = ReadStream(*stub, LongRequest(words), 120);
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << result.status.error_message();
    EXPECT_THAT(result.status.error_message(), HasSubstr("the context holds 128"));
  }
  const std::string huge(5 << 20, 'a');  // beyond gRPC's 4 MiB default receive limit
  for (int i = 0; i < 3; ++i) {
    pb::GenerateRequest request = LongRequest(huge);
    const StreamResult result = ReadStream(*stub, request);
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << result.status.error_message();
    EXPECT_TRUE(result.token_ids.empty());

    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    pb::TokenizeRequest tokenize;
    tokenize.set_text(huge);
    pb::TokenizeResponse response;
    EXPECT_EQ(stub->Tokenize(&context, tokenize, &response).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  const StreamResult after = ReadStream(*stub, LongRequest());
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.token_ids.size(), static_cast<size_t>(kLongTokens));
  EXPECT_TRUE(WaitForRest(server.metrics_port, 30).AtRest());
  stub.reset();  // an idle sync client does not answer the shutdown's PING; let it go first
  server.process->Signal(SIGTERM);
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
}

// The Generate calls that gRPC finished with `code` (e.g. "OK", "CANCELLED").
double GenerateCalls(int metrics_port, const std::string& code) {
  return MetricValue(testing::HttpGetBody(metrics_port, "/metrics"),
                     "vaultgemma_grpc_requests_total{code=\"" + code + "\",method=\"Generate\"}");
}

double WaitForGenerateCalls(int metrics_port, const std::string& code, double value) {
  double calls = GenerateCalls(metrics_port, code);
  for (int i = 0; i < 500 && calls < value; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    calls = GenerateCalls(metrics_port, code);
  }
  return calls;
}

// A channel whose streams stall: a small receive window that grows only as the application reads
// (no BDP probing), after one round trip so that the server has these SETTINGS before any stream
// (until then a stream may use HTTP/2's default 64 KiB).
std::shared_ptr<grpc::Channel> StallingChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  grpc::ClientContext context;
  pb::ModelInfo info;
  pb::TextGeneration::NewStub(channel)->GetModelInfo(&context, pb::GetModelInfoRequest(), &info);
  return channel;
}

TEST(FaultsTest, ClientThatNeverReadsBlocksNobodyAndIsReleasedWhenItGoes) {
  // At most 4 + 8 = 12 streams open at once.
  Started server = StartServer({"--max-num-seqs", "4", "--max-queued", "8"});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  const int64_t idle_rss = RssKib(server.process->pid());

  // The stuck client: its streams stall on HTTP/2 flow control (StallingChannel), ask for the
  // largest messages a request can (20 top logprobs per token), and are never read.
  auto stuck_channel = StallingChannel(server.address());
  auto stuck_stub = pb::TextGeneration::NewStub(stuck_channel);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<pb::GenerateResponse>>> readers;
  auto open_stuck = [&](int count) {
    for (int i = 0; i < count; ++i) {
      contexts.push_back(std::make_unique<grpc::ClientContext>());
      pb::GenerateRequest request = LongRequest("never read " + std::to_string(readers.size()));
      request.set_top_logprobs(20);
      readers.push_back(stuck_stub->Generate(contexts.back().get(), request));
      readers.back()->WaitForInitialMetadata();  // admitted: sent once the engine has it
    }
  };
  open_stuck(8);

  // Other clients are served whole meanwhile, and the engine is not held up: it computes every
  // token of the stuck streams too (they wait in the streams' buffers) and goes back to rest.
  auto stub = pb::TextGeneration::NewStub(server.NewChannel());
  for (int i = 0; i < 4; ++i) {
    const StreamResult result = ReadStream(*stub, LongRequest("reader " + std::to_string(i)), 30);
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.token_ids.size(), static_cast<size_t>(kLongTokens));
  }
  Gauges gauges = WaitForRest(server.metrics_port, 30);
  EXPECT_TRUE(gauges.AtRest()) << gauges.running << " running, " << gauges.waiting << " waiting";
  // The stuck streams really are stuck: only the readers' calls have ended.
  // (gRPC runs a call's OnDone, which counts it, just after the client has its status.)
  EXPECT_EQ(WaitForGenerateCalls(server.metrics_port, "OK", 4), 4);

  // Streams the engine has finished but the client has not read still count against the limit:
  // a client that never reads cannot make the server hold an unbounded number of them.
  open_stuck(4);
  const StreamResult refused = ReadStream(*stub, LongRequest(), 30);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.status.error_message();
  EXPECT_THAT(refused.status.error_message(), HasSubstr("queue is full"));
  const int64_t stuck_rss = RssKib(server.process->pid());
  if (kRssIsMeaningful) {
    EXPECT_LT(stuck_rss, idle_rss + 64 * 1024) << idle_rss << " KiB idle";
  }

  // The stuck client goes away: each of its calls ends, and the server serves again.
  for (auto& context : contexts) context->TryCancel();
  for (auto& reader : readers) {
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  readers.clear();
  contexts.clear();
  stuck_stub.reset();
  stuck_channel.reset();
  EXPECT_EQ(WaitForGenerateCalls(server.metrics_port, "CANCELLED", 12), 12)
      << testing::HttpGetBody(server.metrics_port, "/metrics");
  // The client's own cancels, not write timeouts (--stream-write-timeout is 60 s here).
  EXPECT_EQ(MetricValue(testing::HttpGetBody(server.metrics_port, "/metrics"),
                        "vaultgemma_stream_write_timeouts_total"),
            0);
  const StreamResult after = ReadStream(*stub, LongRequest(), 30);
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.token_ids.size(), static_cast<size_t>(kLongTokens));
  EXPECT_TRUE(WaitForRest(server.metrics_port, 30).AtRest());
  stub.reset();  // an idle sync client does not answer the shutdown's PING; let it go first
  server.process->Signal(SIGTERM);
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
  EXPECT_THAT(server.process->stderr_text(), ::testing::Not(HasSubstr("still writing")));
}

// Not a test: the client process of the next test (run by it, with VG_FAULTS_TEST_SERVER set). It
// opens a stream it never reads, says so on stderr, and waits to be stopped and killed.
TEST(FaultsTest, DISABLED_VanishingClient) {
  const char* address = std::getenv("VG_FAULTS_TEST_SERVER");
  if (address == nullptr) GTEST_SKIP() << "run by VanishedClientsStreamIsCancelledByKeepalive";
  auto channel = StallingChannel(address);
  auto stub = pb::TextGeneration::NewStub(channel);
  grpc::ClientContext context;
  pb::GenerateRequest request = LongRequest("a client about to vanish");
  request.set_top_logprobs(20);
  auto reader = stub->Generate(&context, request);
  reader->WaitForInitialMetadata();
  std::cerr << "vanishing client: stream open" << std::endl;
  std::this_thread::sleep_for(std::chrono::seconds(120));
}

// A client that vanishes without closing its connection (here: stopped with SIGSTOP, so it answers
// nothing, as a host that died) while its stream waits on flow control: the server's keepalive
// PINGs go unanswered, it closes the connection, and the stream's place is free again.
TEST(FaultsTest, VanishedClientsStreamIsCancelledByKeepalive) {
  // One stream at a time.
  Started server = StartServer({"--max-num-seqs", "1", "--max-queued", "0", "--keepalive-time", "1",
                                "--keepalive-timeout", "1"});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  testing::ServerProcess client(
      {std::string(VG_BINARY_DIR) + "/tests/faults_test",
       "--gtest_filter=FaultsTest.DISABLED_VanishingClient", "--gtest_also_run_disabled_tests"},
      {"VG_FAULTS_TEST_SERVER=" + server.address()});
  ASSERT_TRUE(client.WaitForLine("stream open", 60).has_value()) << client.stderr_text();
  client.Signal(SIGSTOP);

  auto stub = pb::TextGeneration::NewStub(server.NewChannel());
  const StreamResult refused = ReadStream(*stub, LongRequest(), 30);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.status.error_message();
  // Within a few PING periods the place is free.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  StreamResult served;
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    served = ReadStream(*stub, LongRequest(), 30);
  } while (!served.status.ok() && std::chrono::steady_clock::now() < until);
  EXPECT_TRUE(served.status.ok()) << served.status.error_message();
  EXPECT_EQ(served.token_ids.size(), static_cast<size_t>(kLongTokens));
  EXPECT_EQ(WaitForGenerateCalls(server.metrics_port, "CANCELLED", 1), 1);
  // Keepalive ended it, not the (60 s) write timeout.
  EXPECT_EQ(MetricValue(testing::HttpGetBody(server.metrics_port, "/metrics"),
                        "vaultgemma_stream_write_timeouts_total"),
            0);
  stub.reset();  // an idle sync client does not answer the shutdown's PING; let it go first
  server.process->Signal(SIGTERM);
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
}

TEST(FaultsTest, ClientThatStopsReadingLosesItsStreamsAfterTheWriteTimeout) {
  // 4 + 8 = 12 places, all taken by a client that never reads; --stream-write-timeout frees them
  // while that client is still connected (keepalive alone would not: its transport answers PINGs).
  Started server =
      StartServer({"--max-num-seqs", "4", "--max-queued", "8", "--stream-write-timeout", "2"});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  auto stuck_channel = StallingChannel(server.address());
  auto stuck_stub = pb::TextGeneration::NewStub(stuck_channel);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<pb::GenerateResponse>>> readers;
  for (int i = 0; i < 12; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    pb::GenerateRequest request = LongRequest("never read " + std::to_string(i));
    request.set_top_logprobs(20);
    readers.push_back(stuck_stub->Generate(contexts.back().get(), request));
    readers.back()->WaitForInitialMetadata();
  }
  const auto stuck_at = std::chrono::steady_clock::now();

  // Every place is taken for now...
  auto stub = pb::TextGeneration::NewStub(server.NewChannel());
  const StreamResult refused = ReadStream(*stub, LongRequest(), 30);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.status.error_message();

  // ...until the stalled writes time out: the server ends all 12 calls itself.
  EXPECT_EQ(WaitForGenerateCalls(server.metrics_port, "CANCELLED", 12), 12)
      << testing::HttpGetBody(server.metrics_port, "/metrics");
  // ...and counts them as write timeouts (a client's own cancel would not be).
  EXPECT_EQ(MetricValue(testing::HttpGetBody(server.metrics_port, "/metrics"),
                        "vaultgemma_stream_write_timeouts_total"),
            12);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stuck_at).count();
  EXPECT_GE(seconds, 2.0);
  const StreamResult after = ReadStream(*stub, LongRequest(), 30);
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.token_ids.size(), static_cast<size_t>(kLongTokens));
  Gauges gauges = WaitForRest(server.metrics_port, 30);
  EXPECT_TRUE(gauges.AtRest()) << gauges.running << " running, " << gauges.waiting << " waiting, "
                               << gauges.kv_used << " KV blocks used";
  std::cerr << "12 stalled streams ended by the server after " << seconds << " s\n";

  // The stuck client, reading at last, finds each of its streams cancelled.
  for (auto& reader : readers) {
    pb::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  readers.clear();
  contexts.clear();
  stuck_stub.reset();
  stuck_channel.reset();
  stub.reset();
  server.process->Signal(SIGTERM);
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
}

TEST(FaultsTest, BadKeepaliveFlagsExitTwoWithOneLine) {
  for (const std::vector<std::string>& extra : std::vector<std::vector<std::string>>{
           {"--keepalive-time", "0"},
           {"--keepalive-time", "often"},
           {"--keepalive-timeout", "-1"},
           {"--stream-write-timeout", "-1"},
       }) {
    std::vector<std::string> argv = {kBinary, "--model", kFixture, "--no-metrics"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    testing::ServerProcess process(argv);
    ASSERT_TRUE(process.started());
    EXPECT_EQ(process.WaitForExit(30), 2) << extra.front() << ": " << process.stderr_text();
    EXPECT_EQ(std::count(process.stderr_text().begin(), process.stderr_text().end(), '\n'), 1)
        << process.stderr_text();
    EXPECT_THAT(process.stderr_text(), HasSubstr(extra.front()));
  }
}

}  // namespace
}  // namespace vg::server
