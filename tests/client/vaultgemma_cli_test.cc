// vaultgemma-cli against a real vaultgemma-server, both as separate processes, as a user runs them.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/runner/subprocess.h"
#include "tests/server/server_process.h"

namespace vg::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kBin = std::string(VG_BINARY_DIR) + "/bin/";
const fs::path kFixture = fs::path(VG_SOURCE_DIR) / "tests/fixtures/f32_mha_tied_sliding";

nlohmann::json ReadJson(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new server::testing::ServerProcess({kBin + "vaultgemma-server", "--model",
                                                  kFixture.string(), "--listen", "127.0.0.1:0",
                                                  "--threads", "2", "--metrics-port", "0"});
    auto line = server_->WaitForLine("(port ", 60);
    ASSERT_TRUE(line.has_value()) << server_->stderr_text();
    const size_t at = line->find("(port ") + 6;
    address_ = "127.0.0.1:" + line->substr(at, line->find(')', at) - at);
  }
  static void TearDownTestSuite() {
    server_->Signal(SIGTERM);
    EXPECT_EQ(server_->WaitForExit(30), 0);
    delete server_;
  }

  static ProcessResult Cli(std::vector<std::string> args, const std::string& stdin_text = "") {
    args.insert(args.begin(), kBin + "vaultgemma-cli");
    return RunProcess(args, stdin_text);
  }

  static server::testing::ServerProcess* server_;
  static std::string address_;
};

server::testing::ServerProcess* CliTest::server_ = nullptr;
std::string CliTest::address_;

TEST_F(CliTest, GenerateJsonEqualsVaultgemmaRunAndTheFixture) {
  const nlohmann::json c = ReadJson(kFixture / "reference.json")["cases"][0];
  const std::string prompt = c["prompt"];
  const std::string n = std::to_string(c["greedy_token_ids"].size());
  const ProcessResult cli =
      Cli({"generate", "--server", address_, "--prompt", prompt, "--max-new-tokens", n, "--json"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  const ProcessResult run = RunProcess({kBin + "vaultgemma-run", "--model", kFixture.string(),
                                        "--prompt", prompt, "--max-new-tokens", n, "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const nlohmann::json a = nlohmann::json::parse(cli.out);
  const nlohmann::json b = nlohmann::json::parse(run.out);
  EXPECT_EQ(a["prompt_token_ids"], b["prompt_token_ids"]);
  EXPECT_EQ(a["token_ids"], b["token_ids"]);
  EXPECT_EQ(a["token_ids"], c["greedy_token_ids"]);
  EXPECT_EQ(a["text"], b["text"]);
  EXPECT_EQ(a["finish_reason"], b["finish_reason"]);
  ASSERT_EQ(a["logprobs"].size(), b["logprobs"].size());
  for (size_t i = 0; i < a["logprobs"].size(); ++i) {
    EXPECT_NEAR(a["logprobs"][i].get<double>(), b["logprobs"][i].get<double>(), 1e-6);
  }
  EXPECT_EQ(a["usage"]["completion_tokens"], c["greedy_token_ids"].size());
  EXPECT_GT(a["time_to_first_token_seconds"].get<double>(), 0.0);
  EXPECT_FALSE(a["request_id"].get<std::string>().empty());
}

TEST_F(CliTest, TextModeStreamsTheSameTextFromStdin) {
  const ProcessResult json = Cli({"generate", "--server", address_, "--prompt", "Hello there",
                                  "--max-new-tokens", "10", "--json"});
  const ProcessResult text =
      Cli({"generate", "--server", address_, "--max-new-tokens", "10"}, "Hello there\n");
  ASSERT_EQ(json.exit_code, 0) << json.err;
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out, nlohmann::json::parse(json.out)["text"].get<std::string>() + "\n");
}

TEST_F(CliTest, TokenizeInfoHealth) {
  const nlohmann::json c = ReadJson(kFixture / "reference.json")["cases"][0];
  const ProcessResult tok =
      Cli({"tokenize", "--server", address_, "--text", c["prompt"], "--add-bos", "--json"});
  ASSERT_EQ(tok.exit_code, 0) << tok.err;
  EXPECT_EQ(nlohmann::json::parse(tok.out)["token_ids"], c["prompt_token_ids"]);

  const ProcessResult info = Cli({"info", "--server", address_});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  const nlohmann::json model = nlohmann::json::parse(info.out);
  EXPECT_EQ(model["vocab_size"], ReadJson(kFixture / "config.json")["vocab_size"]);
  EXPECT_EQ(model["architecture"], "VaultGemmaForCausalLM");

  const ProcessResult health = Cli({"health", "--server", address_});
  EXPECT_EQ(health.exit_code, 0) << health.err;
  EXPECT_EQ(health.out, "SERVING\n");
}

TEST_F(CliTest, ServerErrorsExitThreeUsageErrorsExitTwo) {
  const ProcessResult bad =
      Cli({"generate", "--server", address_, "--prompt", "x", "--temperature", "-1"});
  EXPECT_EQ(bad.exit_code, 3);
  EXPECT_THAT(bad.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(bad.err, HasSubstr("temperature"));

  const ProcessResult down = Cli({"info", "--server", "127.0.0.1:1", "--deadline", "2"});
  EXPECT_EQ(down.exit_code, 3);
  EXPECT_THAT(down.err, HasSubstr("UNAVAILABLE"));

  EXPECT_EQ(Cli({"generate", "--server", address_, "--bogus"}).exit_code, 2);
  EXPECT_EQ(Cli({"nonsense"}).exit_code, 2);
  EXPECT_EQ(Cli({"tokenize", "--server", address_}).exit_code, 2);
}

}  // namespace
}  // namespace vg::testing
