// SIGTERM under load: vaultgemma-server stops taking work, lets the in-flight streams finish, and
// exits 0. Separate processes all the way: the server, three vaultgemma-cli streams, and a scrape
// of /metrics to know the streams are running before the signal; then vaultgemma-bench over two
// servers while one drains, where no call may be lost.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
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

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A vaultgemma-server on the committed fixture with a JSON access log. Its stderr goes to `log`
// (thousands of access-log lines would fill a pipe nobody reads during the run).
struct LoggedServer {
  LoggedServer(const fs::path& log_path, const std::vector<std::string>& flags) : log(log_path) {
    std::vector<std::string> argv = {
        "/bin/sh",
        "-c",
        "exec \"$0\" \"$@\" 2> \"$VG_TEST_LOG\"",
        kBin + "vaultgemma-server",
        "--model",
        std::string(VG_SOURCE_DIR) + "/tests/fixtures/f32_mha_tied_sliding",
        "--listen",
        "127.0.0.1:0",
        "--no-metrics",
        "--threads",
        "1",
        "--access-log",
        "json"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    process = std::make_unique<server::testing::ServerProcess>(
        argv, std::vector<std::string>{"VG_TEST_LOG=" + log.string()});
    for (int i = 0; i < 600 && port == 0; ++i) {
      port = PortFrom(ReadFile(log), "(port ");
      if (port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  // Generate calls the access log records with `code`.
  int Logged(const std::string& code) const {
    int n = 0;
    for (absl::string_view line : absl::StrSplit(ReadFile(log), '\n')) {
      n += absl::StrContains(line, "\"method\":\"Generate\"") &&
           absl::StrContains(line, "\"code\":\"" + code + "\"");
    }
    return n;
  }

  fs::path log;
  std::unique_ptr<server::testing::ServerProcess> process;
  int port = 0;
};

// What rolling out a replica does to a client that balances over several (vaultgemma-bench with
// two addresses, as behind a headless Service): one server drains while the run goes on. No call
// may be lost: each one completes, is refused by the draining server with UNAVAILABLE "server is
// draining" (and logged as such), or is cancelled by the bench at the end of its run. Before the
// clients watched health and the server kept refusing for a while before it closed its
// connections, some calls reached gRPC's Shutdown and ended as CANCELLED, unseen by the service;
// and a stream still writing its end when a connection closes can reach its client as UNAVAILABLE
// "Connection reset by peer" (server_main.cc).
TEST(DrainTest, BenchOverTwoServersLosesNoCallWhileOneDrains) {
  const fs::path dir = fs::temp_directory_path() / ("vg_drain_bench_" + std::to_string(getpid()));
  fs::create_directories(dir);
  LoggedServer draining(dir / "draining.log", {"--drain-timeout", "20"});
  LoggedServer staying(dir / "staying.log", {"--drain-timeout", "20"});
  ASSERT_GT(draining.port, 0) << ReadFile(draining.log);
  ASSERT_GT(staying.port, 0) << ReadFile(staying.log);

  ProcessResult bench;
  std::thread run([&] {
    bench = RunProcess({kBin + "vaultgemma-bench", "--server",
                        draining.address() + "," + staying.address(), "--concurrency", "8",
                        "--duration", "4", "--input-len", "8", "--output-len", "8",
                        "--warmup-requests", "0", "--out", (dir / "bench").string()});
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  draining.process->Signal(SIGTERM);
  EXPECT_EQ(draining.process->WaitForExit(30), 0) << ReadFile(draining.log);
  run.join();
  ASSERT_EQ(bench.exit_code, 0) << bench.out << bench.err;
  staying.process->Signal(SIGTERM);
  EXPECT_EQ(staying.process->WaitForExit(30), 0) << ReadFile(staying.log);
  const std::string draining_log = ReadFile(draining.log);
  EXPECT_TRUE(absl::StrContains(draining_log, "SIGTERM, shutting down")) << draining_log;
  EXPECT_FALSE(absl::StrContains(draining_log, "still writing their status")) << draining_log;

  // requests.csv: request_index,start_s,status,cancelled_at_end are columns 3-6, peer 14, error
  // the rest.
  int ok = 0, refused = 0, cancelled_at_end = 0, on_draining = 0, on_staying = 0;
  const std::vector<std::string> rows =
      absl::StrSplit(ReadFile(dir / "bench" / "requests.csv"), '\n', absl::SkipEmpty());
  ASSERT_GT(rows.size(), 1u);
  for (size_t i = 1; i < rows.size(); ++i) {
    const std::vector<std::string> f = absl::StrSplit(rows[i], ',');
    ASSERT_GE(f.size(), 16u) << rows[i];
    const std::string& status = f[5];
    const std::string& peer = f[14];
    const std::string error = absl::StrJoin(f.begin() + 15, f.end(), ",");
    on_draining += peer == "ipv4:" + draining.address();
    on_staying += peer == "ipv4:" + staying.address();
    if (status == "OK") {
      ++ok;
    } else if (f[6] == "1") {
      ++cancelled_at_end;
    } else {
      EXPECT_EQ(status, "UNAVAILABLE") << rows[i];
      EXPECT_TRUE(absl::StrContains(error, "server is draining")) << rows[i];
      EXPECT_EQ(peer, "ipv4:" + draining.address()) << rows[i];
      ++refused;
    }
  }
  EXPECT_GT(on_draining, 0);
  EXPECT_GT(on_staying, 0);
  // Each refusal the server logged reached the client, and each call the bench completed was
  // finished by a server; a server also finished those the bench cancelled after their last
  // message.
  EXPECT_EQ(refused, draining.Logged("UNAVAILABLE"));
  const int finished = draining.Logged("OK") + staying.Logged("OK");
  EXPECT_GE(finished, ok);
  EXPECT_LE(finished, ok + cancelled_at_end);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace vg::testing
