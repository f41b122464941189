// The vaultgemma-server binary as a separate process: start, serve one Generate, SIGTERM -> exit 0;
// bad usage -> exit 2 with one line on stderr.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/runner/subprocess.h"
#include "tests/server/server_process.h"
#include "vaultgemma/v1/text_generation.grpc.pb.h"

namespace vg::server {
namespace {

namespace pb = ::vaultgemma::v1;
using ::testing::HasSubstr;

const std::string kBinary = std::string(VG_BINARY_DIR) + "/bin/vaultgemma-server";
const std::string kFixture = std::string(VG_SOURCE_DIR) + "/tests/fixtures/f32_mha_tied_sliding";

TEST(VaultgemmaServerTest, ServesAGenerateAndExitsZeroOnSigterm) {
  testing::ServerProcess process({kBinary, "--model", kFixture, "--listen", "127.0.0.1:0",
                                  "--threads", "1", "--max-num-seqs", "4", "--metrics-port", "0"});
  ASSERT_TRUE(process.started());
  const auto line = process.WaitForLine("(port ", 20);
  ASSERT_TRUE(line.has_value()) << process.stderr_text();
  const size_t at = line->rfind("(port ");
  const int port = std::stoi(line->substr(at + 6));
  ASSERT_GT(port, 0);
  EXPECT_THAT(*line, HasSubstr("serving " + kFixture));

  auto stub = pb::TextGeneration::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  pb::GenerateRequest request;
  request.set_text("a secret prompt");
  request.mutable_stopping()->set_max_new_tokens(5);
  request.mutable_stopping()->set_ignore_eos(true);
  auto reader = stub->Generate(&context, request);
  pb::GenerateResponse message;
  int tokens = 0;
  pb::FinishReason reason = pb::FINISH_REASON_UNSPECIFIED;
  while (reader->Read(&message)) {
    tokens += message.token_ids_size();
    reason = message.finish_reason();
  }
  const grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(tokens, 5);
  EXPECT_EQ(reason, pb::FINISH_REASON_LENGTH);

  process.Signal(SIGTERM);
  EXPECT_EQ(process.WaitForExit(10), 0) << process.stderr_text();
  EXPECT_THAT(process.stderr_text(), ::testing::Not(HasSubstr("secret")));
}

TEST(VaultgemmaServerTest, BadUsageExitsTwoWithOneLine) {
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {kBinary, "--bogus"},
           {kBinary},
           {kBinary, "--model", kFixture, "--threads", "many"},
           {kBinary, "--model", "/no/such/model/dir"},
       }) {
    const vg::testing::ProcessResult result = vg::testing::RunProcess(argv);
    EXPECT_EQ(result.exit_code, 2) << argv.back() << ": " << result.err;
    EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  }
}

TEST(VaultgemmaServerTest, HelpExitsZero) {
  const vg::testing::ProcessResult result = vg::testing::RunProcess({kBinary, "--help"});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_THAT(result.out, HasSubstr("--listen"));
}

}  // namespace
}  // namespace vg::server
