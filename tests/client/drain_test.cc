// SIGTERM under load: vaultgemma-server stops taking work, lets the in-flight streams finish, and
// exits 0. Separate processes all the way: the server, three vaultgemma-cli streams, and a scrape
// of /metrics to know the streams are running before the signal.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/runner/subprocess.h"
#include "tests/server/http_get.h"
#include "tests/server/server_process.h"

namespace vg::testing {
namespace {

namespace fs = std::filesystem;
const std::string kBin = std::string(VG_BINARY_DIR) + "/bin/";

int PortFrom(const std::string& line, const std::string& tag) {
  const size_t at = line.find(tag);
  return at == std::string::npos ? 0 : std::stoi(line.substr(at + tag.size()));
}

TEST(DrainTest, SigtermLetsInFlightStreamsFinishAndExitsZero) {
  // A model slow enough to still be generating when the signal comes: the demo shape (4 layers,
  // hidden 256) with a committed tokenizer, made at test time.
  const fs::path model = fs::temp_directory_path() / ("vg_drain_" + std::to_string(getpid()));
  const ProcessResult made = RunProcess(
      {kBin + "make_random_checkpoint", "--out", model.string(), "--shape", "demo", "--tokenizer",
       std::string(VG_SOURCE_DIR) + "/tests/fixtures/tokenizers/gemma_bpe_700.model"});
  ASSERT_EQ(made.exit_code, 0) << made.err;

  server::testing::ServerProcess server({kBin + "vaultgemma-server", "--model", model.string(),
                                         "--listen", "127.0.0.1:0", "--metrics-port", "0",
                                         "--threads", "1", "--drain-timeout", "120"});
  const auto metrics_line = server.WaitForLine("(metrics port ", 60);
  ASSERT_TRUE(metrics_line.has_value()) << server.stderr_text();
  const auto line = server.WaitForLine("(port ", 60);
  ASSERT_TRUE(line.has_value()) << server.stderr_text();
  const int port = PortFrom(*line, "(port ");
  const int metrics_port = PortFrom(*metrics_line, "(metrics port ");

  constexpr int kStreams = 3;
  constexpr int kTokens = 300;
  std::vector<ProcessResult> results(kStreams);
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      results[i] = RunProcess({kBin + "vaultgemma-cli", "generate", "--server",
                               "127.0.0.1:" + std::to_string(port), "--prompt",
                               "stream " + std::to_string(i), "--max-new-tokens",
                               std::to_string(kTokens), "--ignore-eos", "--json"});
    });
  }
  // Signal only once every stream is running (the gauge refreshes every 250 ms).
  const std::regex running("\nvaultgemma_requests_running ([0-9.]+)");
  bool all_running = false;
  for (int attempt = 0; attempt < 600 && !all_running; ++attempt) {
    std::smatch m;
    const std::string text = server::testing::HttpGetBody(metrics_port, "/metrics");
    all_running = std::regex_search(text, m, running) && std::stod(m[1]) >= kStreams;
    if (!all_running) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(all_running) << "the streams never ran together";
  server.Signal(SIGTERM);
  for (auto& c : clients) c.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_EQ(results[i].exit_code, 0) << results[i].err;
    const nlohmann::json out = nlohmann::json::parse(results[i].out);
    EXPECT_EQ(out["finish_reason"], "length");
    EXPECT_EQ(out["token_ids"].size(), static_cast<size_t>(kTokens));
  }
  EXPECT_EQ(server.WaitForExit(60), 0) << server.stderr_text();
  fs::remove_all(model);
}

}  // namespace
}  // namespace vg::testing
