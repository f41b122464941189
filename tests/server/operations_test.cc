// Operating the vaultgemma-server binary: graceful drain on SIGTERM, bearer-token auth, TLS and
// mutual TLS (certificates made at test time with the openssl CLI), connection-age flags.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/runner/subprocess.h"
#include "tests/server/server_process.h"
#include "tests/server/started_server.h"
#include "vaultgemma/v1/text_generation.grpc.pb.h"

namespace vg::server {
namespace {

namespace pb = ::vaultgemma::v1;
namespace health = ::grpc::health::v1;
using ::testing::HasSubstr;

const std::string kBinary = std::string(VG_BINARY_DIR) + "/bin/vaultgemma-server";
const std::string kFixture = std::string(VG_SOURCE_DIR) + "/tests/fixtures/f32_mha_tied_sliding";
constexpr int kMaxNewTokens = 100;  // the fixture's context is 128

using Started = testing::StartedServer;

Started StartServer(std::vector<std::string> extra) {
  std::vector<std::string> argv = {kBinary,    "--model",      kFixture,
                                   "--listen", "127.0.0.1:0",  "--threads",
                                   "1",        "--no-metrics", "--no-reflection"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return testing::StartServerBinary(argv, 30);
}

pb::GenerateRequest LongRequest() {
  pb::GenerateRequest request;
  request.set_text("a prompt of a few words for the drain test");
  request.mutable_stopping()->set_max_new_tokens(kMaxNewTokens);
  request.mutable_stopping()->set_ignore_eos(true);
  return request;
}

struct StreamResult {
  grpc::Status status;
  int tokens = 0;
  pb::FinishReason reason = pb::FINISH_REASON_UNSPECIFIED;
};

// Reads a whole stream; `submitted` is raised once the initial metadata arrived (the service sends
// it as it submits the request to the engine).
StreamResult ReadStream(pb::TextGeneration::Stub& stub, const pb::GenerateRequest& request,
                        std::atomic<int>* submitted, const std::string& bearer = "") {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!bearer.empty()) context.AddMetadata("authorization", "Bearer " + bearer);
  auto reader = stub.Generate(&context, request);
  reader->WaitForInitialMetadata();
  if (submitted != nullptr) submitted->fetch_add(1);
  StreamResult result;
  pb::GenerateResponse message;
  while (reader->Read(&message)) {
    result.tokens += message.token_ids_size();
    result.reason = message.finish_reason();
  }
  result.status = reader->Finish();
  return result;
}

StreamResult Generate(const std::shared_ptr<grpc::Channel>& channel,
                      const pb::GenerateRequest& request, const std::string& bearer = "") {
  auto stub = pb::TextGeneration::NewStub(channel);
  return ReadStream(*stub, request, nullptr, bearer);
}

pb::GenerateRequest ShortRequest() {
  pb::GenerateRequest request;
  request.set_text("hello");
  request.mutable_stopping()->set_max_new_tokens(3);
  request.mutable_stopping()->set_ignore_eos(true);
  return request;
}

bool WaitFor(const std::atomic<int>& counter, int value, double seconds) {
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  while (counter.load() < value) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

health::HealthCheckResponse::ServingStatus HealthOf(const std::shared_ptr<grpc::Channel>& channel,
                                                    const std::string& service) {
  auto stub = health::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  health::HealthCheckRequest request;
  request.set_service(service);
  health::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.status();
}

TEST(OperationsTest, ListensWhileLoadingNotServingThenServes) {
  // The test hook holds the loading state for 3 s.
  std::vector<std::string> argv = {kBinary,        "--model",   kFixture, "--listen",
                                   "127.0.0.1:0",  "--threads", "1",      "--no-metrics",
                                   "--access-log", "json"};
  testing::ServerProcess process(argv, {"VAULTGEMMA_TEST_LOAD_DELAY_SECONDS=3"});
  const auto loading = process.WaitForLine("(loading port ", 30);
  ASSERT_TRUE(loading.has_value()) << process.stderr_text();
  const int port = std::stoi(loading->substr(loading->rfind("(loading port ") + 14));
  auto channel =
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  auto stub = pb::TextGeneration::NewStub(channel);

  // Loading: health NOT_SERVING, overall and for the service; every call UNAVAILABLE.
  EXPECT_EQ(HealthOf(channel, ""), health::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(HealthOf(channel, "vaultgemma.v1.TextGeneration"),
            health::HealthCheckResponse::NOT_SERVING);
  pb::GenerateRequest request = ShortRequest();
  request.set_request_id("while-loading");
  const StreamResult early = Generate(channel, request);
  EXPECT_EQ(early.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(early.status.error_message(), HasSubstr("loading"));
  {
    grpc::ClientContext context;
    pb::ModelInfo info;
    EXPECT_EQ(stub->GetModelInfo(&context, pb::GetModelInfoRequest(), &info).error_code(),
              grpc::StatusCode::UNAVAILABLE);
  }
  {
    grpc::ClientContext context;
    pb::TokenizeRequest tokenize;
    tokenize.set_text("hello");
    pb::TokenizeResponse response;
    EXPECT_EQ(stub->Tokenize(&context, tokenize, &response).error_code(),
              grpc::StatusCode::UNAVAILABLE);
  }
  ASSERT_FALSE(process.WaitForLine("(port ", 0.01).has_value()) << "loaded too early for the test";

  // Loaded: SERVING, and the same channel now generates.
  ASSERT_TRUE(process.WaitForLine("(port ", 60).has_value()) << process.stderr_text();
  EXPECT_EQ(HealthOf(channel, ""), health::HealthCheckResponse::SERVING);
  EXPECT_EQ(HealthOf(channel, "vaultgemma.v1.TextGeneration"),
            health::HealthCheckResponse::SERVING);
  const StreamResult served = Generate(channel, ShortRequest());
  EXPECT_TRUE(served.status.ok()) << served.status.error_message();
  EXPECT_EQ(served.tokens, 3);

  // The refused call was access-logged (before the model finished loading), with its id and
  // status.
  const std::string& err = process.stderr_text();
  const size_t at = err.find("\"request_id\":\"while-loading\"");
  ASSERT_NE(at, std::string::npos) << err;
  const size_t begin = err.rfind('\n', at) + 1;
  const std::string logged = err.substr(begin, err.find('\n', at) - begin);
  EXPECT_THAT(logged, HasSubstr("\"code\":\"UNAVAILABLE\""));
  process.Signal(SIGTERM);
  EXPECT_EQ(process.WaitForExit(30), 0);
}

TEST(OperationsTest, SigtermDrainsInFlightStreamsThenExitsZero) {
  // One sequence at a time, so that some streams are still queued when the signal comes.
  Started server = StartServer({"--max-num-seqs", "1", "--drain-timeout", "60"});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  auto stub = pb::TextGeneration::NewStub(channel);
  constexpr int kStreams = 4;
  std::atomic<int> submitted{0};
  std::vector<StreamResult> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { results[i] = ReadStream(*stub, LongRequest(), &submitted); });
  }
  ASSERT_TRUE(WaitFor(submitted, kStreams, 30));
  server.process->Signal(SIGTERM);
  ASSERT_TRUE(server.process->WaitForLine("shutting down", 10).has_value())
      << server.process->stderr_text();

  // After the signal nothing new is admitted: a new Generate is UNAVAILABLE, whether it reaches
  // the draining service ("server is draining") or a server already closed.
  const StreamResult late = Generate(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()), ShortRequest());
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::UNAVAILABLE) << late.status.error_message();
  EXPECT_EQ(late.tokens, 0);
  // Health: NOT_SERVING while draining, or no server at all.
  {
    auto health_stub = health::Health::NewStub(
        grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    health::HealthCheckRequest request;
    health::HealthCheckResponse response;
    const grpc::Status status = health_stub->Check(&context, request, &response);
    if (status.ok()) {
      EXPECT_EQ(response.status(), health::HealthCheckResponse::NOT_SERVING);
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
    }
  }

  for (std::thread& thread : threads) thread.join();
  for (const StreamResult& result : results) {
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.tokens, kMaxNewTokens);
    EXPECT_EQ(result.reason, pb::FINISH_REASON_LENGTH);
  }
  EXPECT_TRUE(server.process->WaitForLine("stopped", 30).has_value())
      << server.process->stderr_text();
  EXPECT_THAT(server.process->stderr_text(), ::testing::Not(HasSubstr("drain timeout")));
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
}

// Clients that watch health need a moment to stop sending here, and a call that reaches gRPC after
// the server closes its connections is cancelled before the service sees it: so even an idle
// server keeps its connections open, refusing calls itself (logged), for a while after the signal.
TEST(OperationsTest, SigtermRefusesCallsItselfBeforeClosingConnections) {
  Started server = StartServer({"--access-log", "json"});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  ASSERT_TRUE(Generate(channel, ShortRequest()).status.ok());  // connected, and the model works
  server.process->Signal(SIGTERM);
  ASSERT_TRUE(server.process->WaitForLine("shutting down", 10).has_value())
      << server.process->stderr_text();
  const StreamResult refused = Generate(channel, ShortRequest());
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(refused.status.error_message(), "server is draining");
  EXPECT_EQ(HealthOf(channel, "vaultgemma.v1.TextGeneration"),
            health::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
  EXPECT_THAT(server.process->stderr_text(), HasSubstr("\"code\":\"UNAVAILABLE\""));
}

TEST(OperationsTest, DrainTimeoutZeroCancelsInFlightStreamsAndExitsZero) {
  // One sequence at a time: most streams are still queued when the signal comes.
  constexpr int kStreams = 16;
  Started server = StartServer({"--max-num-seqs", "1", "--drain-timeout", "0"});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  auto stub = pb::TextGeneration::NewStub(channel);
  std::atomic<int> submitted{0};
  std::vector<StreamResult> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { results[i] = ReadStream(*stub, LongRequest(), &submitted); });
  }
  ASSERT_TRUE(WaitFor(submitted, kStreams, 30));
  server.process->Signal(SIGTERM);
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
  int cut_short = 0;
  for (const StreamResult& result : results) {
    if (!result.status.ok()) {
      // Cancelled by the engine's shutdown: never a hang or another error.
      EXPECT_EQ(result.status.error_code(), grpc::StatusCode::CANCELLED)
          << result.status.error_message();
      ++cut_short;
      EXPECT_LT(result.tokens, kMaxNewTokens);
    } else {
      EXPECT_EQ(result.tokens, kMaxNewTokens);
    }
  }
  EXPECT_GT(cut_short, 0) << server.process->stderr_text();
  EXPECT_TRUE(server.process->WaitForLine("stopped", 30).has_value())
      << server.process->stderr_text();
  EXPECT_THAT(server.process->stderr_text(), HasSubstr("drain timeout, cancelling"));
}

// A temporary directory, removed with its files.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/vg-operations-test-XXXXXX";
    path_ = mkdtemp(pattern);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name, const std::string& content = "") const {
    const std::string path = path_ + "/" + name;
    if (!content.empty()) std::ofstream(path) << content;
    return path;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(OperationsTest, BearerTokenGuardsTextGenerationButNotHealth) {
  TempDir dir;
  const std::string tokens = dir.File("tokens", "  token-one \n\n\ttoken-two\n");
  Started server = StartServer({"--auth-token-file", tokens});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());

  const StreamResult missing = Generate(channel, ShortRequest());
  EXPECT_EQ(missing.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const StreamResult wrong = Generate(channel, ShortRequest(), "token-three");
  EXPECT_EQ(wrong.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const StreamResult prefix = Generate(channel, ShortRequest(), "token-on");
  EXPECT_EQ(prefix.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  for (const char* token : {"token-one", "token-two"}) {
    const StreamResult right = Generate(channel, ShortRequest(), token);
    EXPECT_TRUE(right.status.ok()) << right.status.error_message();
    EXPECT_EQ(right.tokens, 3);
  }
  auto stub = pb::TextGeneration::NewStub(channel);
  {
    grpc::ClientContext context;
    pb::ModelInfo info;
    EXPECT_EQ(stub->GetModelInfo(&context, pb::GetModelInfoRequest(), &info).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer token-one");
    pb::ModelInfo info;
    EXPECT_TRUE(stub->GetModelInfo(&context, pb::GetModelInfoRequest(), &info).ok());
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Basic token-one");
    pb::TokenizeResponse response;
    pb::TokenizeRequest request;
    request.set_text("hi");
    EXPECT_EQ(stub->Tokenize(&context, request, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  auto health_stub = health::Health::NewStub(channel);
  for (const char* service : {"", "vaultgemma.v1.TextGeneration"}) {
    grpc::ClientContext context;
    health::HealthCheckRequest request;
    request.set_service(service);
    health::HealthCheckResponse response;
    const grpc::Status status = health_stub->Check(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.status(), health::HealthCheckResponse::SERVING);
  }
  EXPECT_THAT(server.process->stderr_text(), ::testing::Not(HasSubstr("token-one")));
  server.process->Signal(SIGTERM);
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
}

bool RunShell(const std::string& command) { return std::system(command.c_str()) == 0; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, all signed by it.
bool MakeCertificates(const TempDir& dir) {
  const std::string d = dir.path();
  const std::string quiet = " >/dev/null 2>&1";
  std::ofstream(d + "/server.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
  return RunShell(
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=vg-test-ca"
             " -keyout " +
             d + "/ca.key -out " + d + "/ca.pem" + quiet) &&
         RunShell("openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout " + d +
                  "/server.key -out " + d + "/server.csr" + quiet) &&
         RunShell("openssl x509 -req -in " + d + "/server.csr -CA " + d + "/ca.pem -CAkey " + d +
                  "/ca.key -CAcreateserial -days 2 -extfile " + d + "/server.ext -out " + d +
                  "/server.pem" + quiet) &&
         RunShell("openssl req -newkey rsa:2048 -nodes -subj /CN=vg-test-client -keyout " + d +
                  "/client.key -out " + d + "/client.csr" + quiet) &&
         RunShell("openssl x509 -req -in " + d + "/client.csr -CA " + d + "/ca.pem -CAkey " + d +
                  "/ca.key -CAcreateserial -days 2 -out " + d + "/client.pem" + quiet);
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(RunShell("command -v openssl >/dev/null 2>&1"))
        << "the openssl command-line tool is required by the TLS tests (apt-get install openssl)";
    ASSERT_TRUE(MakeCertificates(dir_)) << "openssl could not make the test certificates";
  }

  std::shared_ptr<grpc::Channel> TlsChannel(const Started& server, bool with_client_cert) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = ReadFile(dir_.path() + "/ca.pem");
    if (with_client_cert) {
      options.pem_private_key = ReadFile(dir_.path() + "/client.key");
      options.pem_cert_chain = ReadFile(dir_.path() + "/client.pem");
    }
    // By IP (the certificate's SAN has 127.0.0.1): no DNS lookup, whose resolver leaks under ASan.
    return grpc::CreateChannel(server.address(), grpc::SslCredentials(options));
  }

  TempDir dir_;
};

TEST_F(TlsTest, TlsRoundTrip) {
  Started server = StartServer(
      {"--tls-cert", dir_.path() + "/server.pem", "--tls-key", dir_.path() + "/server.key"});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  EXPECT_THAT(server.process->stderr_text(), HasSubstr("with TLS"));
  const StreamResult result = Generate(TlsChannel(server, false), ShortRequest());
  EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.tokens, 3);
  // A plaintext client cannot talk to it.
  const StreamResult plain = Generate(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()), ShortRequest());
  EXPECT_FALSE(plain.status.ok());
  server.process->Signal(SIGTERM);
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
}

TEST_F(TlsTest, MutualTlsRequiresAClientCertificate) {
  Started server =
      StartServer({"--tls-cert", dir_.path() + "/server.pem", "--tls-key",
                   dir_.path() + "/server.key", "--tls-client-ca", dir_.path() + "/ca.pem"});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  const StreamResult with_cert = Generate(TlsChannel(server, true), ShortRequest());
  EXPECT_TRUE(with_cert.status.ok()) << with_cert.status.error_message();
  EXPECT_EQ(with_cert.tokens, 3);
  const StreamResult without_cert = Generate(TlsChannel(server, false), ShortRequest());
  EXPECT_EQ(without_cert.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << without_cert.status.error_message();
  EXPECT_EQ(without_cert.tokens, 0);
  server.process->Signal(SIGTERM);
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
}

TEST(OperationsTest, MaxConnectionAgeFlagsAreAccepted) {
  Started server = StartServer({"--max-connection-age", "1", "--max-connection-age-grace", "1"});
  ASSERT_GT(server.port, 0) << server.process->stderr_text();
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  const StreamResult result = Generate(channel, ShortRequest());
  EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  // Past the age the server sends GOAWAY; the channel reconnects and calls still work.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  const StreamResult later = Generate(channel, ShortRequest());
  EXPECT_TRUE(later.status.ok()) << later.status.error_message();
  server.process->Signal(SIGTERM);
  EXPECT_EQ(server.process->WaitForExit(30), 0) << server.process->stderr_text();
}

TEST(OperationsTest, BadOperationFlagsExitTwoWithOneLine) {
  TempDir dir;
  const std::string empty = dir.File("empty", "");
  std::ofstream(empty).close();
  const std::string blank = dir.File("blank", " \n\t\n");
  const std::string not_pem = dir.File("not-pem", "hello\n");
  for (const std::vector<std::string>& extra : std::vector<std::vector<std::string>>{
           {"--auth-token-file", empty},
           {"--auth-token-file", blank},
           {"--auth-token-file", dir.path() + "/missing"},
           {"--tls-cert", not_pem},
           {"--tls-cert", not_pem, "--tls-key", not_pem},
           {"--tls-cert", dir.path() + "/missing", "--tls-key", not_pem},
           {"--tls-client-ca", not_pem},
           {"--max-connection-age", "-1"},
           {"--max-connection-age", "soon"},
           {"--max-connection-age-grace", "-5"},
           {"--drain-timeout", "-1"},
       }) {
    std::vector<std::string> argv = {kBinary, "--model", kFixture, "--no-metrics"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    const vg::testing::ProcessResult result = vg::testing::RunProcess(argv);
    EXPECT_EQ(result.exit_code, 2) << extra.front() << ": " << result.err;
    EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  }
}

TEST(OperationsTest, HelpDocumentsTheOperationFlags) {
  const vg::testing::ProcessResult result = vg::testing::RunProcess({kBinary, "--help"});
  EXPECT_EQ(result.exit_code, 0);
  for (const char* flag :
       {"--drain-timeout", "--auth-token-file", "--tls-cert", "--tls-key", "--tls-client-ca",
        "--max-connection-age", "--max-connection-age-grace"}) {
    EXPECT_THAT(result.out, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace vg::server
