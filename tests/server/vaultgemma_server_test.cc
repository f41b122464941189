// The vaultgemma-server binary as a separate process: start, serve one Generate, SIGTERM -> exit 0;
// bad usage -> exit 2 with one line on stderr.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/runner/subprocess.h"
#include "tests/server/http_get.h"
#include "tests/server/server_process.h"
#include "vaultgemma/v1/text_generation.grpc.pb.h"

namespace vg::server {
namespace {

namespace pb = ::vaultgemma::v1;
using ::testing::HasSubstr;

const std::string kBinary = std::string(VG_BINARY_DIR) + "/bin/vaultgemma-server";
const std::string kFixture = std::string(VG_SOURCE_DIR) + "/tests/fixtures/f32_mha_tied_sliding";

// A string no model output, id or metric could contain by chance.
constexpr char kMarker[] = "QZXMARKER7731";

grpc::Status RunGenerate(pb::TextGeneration::Stub& stub, const pb::GenerateRequest& request,
                         int* tokens, pb::FinishReason* reason) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto reader = stub.Generate(&context, request);
  pb::GenerateResponse message;
  while (reader->Read(&message)) {
    *tokens += message.token_ids_size();
    *reason = message.finish_reason();
  }
  return reader->Finish();
}

TEST(VaultgemmaServerTest, ServesAndNeverLogsPromptTextThenExitsZeroOnSigterm) {
  testing::ServerProcess process({kBinary, "--model", kFixture, "--listen", "127.0.0.1:0",
                                  "--threads", "1", "--max-num-seqs", "4", "--metrics-port", "0",
                                  "--access-log", "json"});
  ASSERT_TRUE(process.started());
  const auto metrics_line = process.WaitForLine("(metrics port ", 20);
  ASSERT_TRUE(metrics_line.has_value()) << process.stderr_text();
  const int metrics_port =
      std::stoi(metrics_line->substr(metrics_line->rfind("(metrics port ") + 14));
  const auto line = process.WaitForLine("(port ", 20);
  ASSERT_TRUE(line.has_value()) << process.stderr_text();
  const size_t at = line->rfind("(port ");
  const int port = std::stoi(line->substr(at + 6));
  ASSERT_GT(port, 0);
  EXPECT_THAT(*line, HasSubstr("serving " + kFixture));

  auto stub = pb::TextGeneration::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  const std::string marked = std::string("a secret prompt ") + kMarker;
  // A good request whose prompt and stop string hold the marker.
  pb::GenerateRequest request;
  request.set_text(marked);
  request.mutable_stopping()->set_max_new_tokens(5);
  request.mutable_stopping()->set_ignore_eos(true);
  request.mutable_stopping()->add_stop(kMarker);
  int tokens = 0;
  pb::FinishReason reason = pb::FINISH_REASON_UNSPECIFIED;
  const grpc::Status status = RunGenerate(*stub, request, &tokens, &reason);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(tokens, 5);
  EXPECT_EQ(reason, pb::FINISH_REASON_LENGTH);
  // Refused ones: a bad field, and a prompt too long for the context.
  pb::GenerateRequest bad = request;
  bad.mutable_sampling()->set_top_p(2);
  EXPECT_EQ(RunGenerate(*stub, bad, &tokens, &reason).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  pb::GenerateRequest too_long = request;
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += marked + " ";
  too_long.set_text(long_text);
  EXPECT_EQ(RunGenerate(*stub, too_long, &tokens, &reason).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  {
    grpc::ClientContext context;
    pb::TokenizeRequest tokenize;
    tokenize.set_text(marked);
    pb::TokenizeResponse response;
    EXPECT_TRUE(stub->Tokenize(&context, tokenize, &response).ok());
  }
  const std::string scrape = server::testing::HttpGetBody(metrics_port, "/metrics");
  EXPECT_THAT(scrape, HasSubstr("vaultgemma_grpc_requests_total"));
  EXPECT_THAT(scrape, ::testing::Not(HasSubstr(kMarker)));

  process.Signal(SIGTERM);
  EXPECT_EQ(process.WaitForExit(10), 0) << process.stderr_text();
  // Four access-log lines came out, none with the marker or any of the prompt's text.
  const std::string& err = process.stderr_text();
  size_t logged = 0;
  for (size_t p = err.find("\"method\":"); p != std::string::npos;
       p = err.find("\"method\":", p + 1)) {
    ++logged;
  }
  EXPECT_EQ(logged, 4u) << err;
  EXPECT_THAT(err, ::testing::Not(HasSubstr(kMarker)));
  EXPECT_THAT(err, ::testing::Not(HasSubstr("secret")));
}

TEST(VaultgemmaServerTest, BadUsageExitsTwoWithOneLine) {
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {kBinary, "--bogus"},
           {kBinary},
           {kBinary, "--model", kFixture, "--threads", "many"},
           {kBinary, "--model", "/no/such/model/dir"},
           // (--device cuda itself serves where a device is present; tests/gpu/server_cuda_test
           // covers its refusals.)
           {kBinary, "--model", kFixture, "--device", "cuda:first"},
           {kBinary, "--model", kFixture, "--device", "tpu"},
           {kBinary, "--model", kFixture, "--kv-cache-dtype", "fp8"},
       }) {
    const vg::testing::ProcessResult result = vg::testing::RunProcess(argv);
    EXPECT_EQ(result.exit_code, 2) << argv.back() << ": " << result.err;
    EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  }
}

TEST(VaultgemmaServerTest, ServesWithABfloat16KvCache) {
  testing::ServerProcess process({kBinary, "--model", kFixture, "--listen", "127.0.0.1:0",
                                  "--threads", "1", "--no-metrics", "--kv-cache-dtype",
                                  "bfloat16"});
  ASSERT_TRUE(process.started());
  const auto line = process.WaitForLine("(port ", 20);
  ASSERT_TRUE(line.has_value()) << process.stderr_text();
  const int port = std::stoi(line->substr(line->rfind("(port ") + 6));
  auto stub = pb::TextGeneration::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  pb::GenerateRequest request;
  request.set_text("hello there");
  request.mutable_stopping()->set_max_new_tokens(6);
  request.mutable_stopping()->set_ignore_eos(true);
  int tokens = 0;
  pb::FinishReason reason = pb::FINISH_REASON_UNSPECIFIED;
  const grpc::Status status = RunGenerate(*stub, request, &tokens, &reason);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(tokens, 6);
  EXPECT_EQ(reason, pb::FINISH_REASON_LENGTH);
  process.Signal(SIGTERM);
  EXPECT_EQ(process.WaitForExit(15), 0) << process.stderr_text();
}

TEST(VaultgemmaServerTest, HelpExitsZero) {
  const vg::testing::ProcessResult result = vg::testing::RunProcess({kBinary, "--help"});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_THAT(result.out, HasSubstr("--listen"));
}

}  // namespace
}  // namespace vg::server
