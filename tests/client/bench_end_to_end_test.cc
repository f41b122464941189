// vaultgemma-bench end to end, as separate processes against a real vaultgemma-server with a
// random demo-shape model: the CI smoke run (results.json against its schema, the CSV, the
// charts), a sweep, an overloaded server whose refusals are counted rather than fatal, and the
// exit codes for usage errors and an unreachable server.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/client/json_schema_subset.h"
#include "tests/client/xml_balance.h"
#include "tests/runner/subprocess.h"
#include "tests/server/server_process.h"

namespace vg::testing {
namespace {

namespace fs = std::filesystem;
using server::testing::ServerProcess;
const std::string kBin = std::string(VG_BINARY_DIR) + "/bin/";

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class BenchEndToEndTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ =
        new fs::path(fs::temp_directory_path() / ("vg_bench_model_" + std::to_string(getpid())));
    const ProcessResult made =
        RunProcess({kBin + "make_random_checkpoint", "--out", model_->string(), "--shape", "demo",
                    "--tokenizer",
                    std::string(VG_SOURCE_DIR) + "/tests/fixtures/tokenizers/gemma_bpe_700.model"});
    ASSERT_EQ(made.exit_code, 0) << made.err;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*model_);
    delete model_;
  }
  void SetUp() override {
    out_ = fs::temp_directory_path() /
           ("vg_bench_out_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(out_);
  }
  void TearDown() override { fs::remove_all(out_); }

  // Starts a server with `extra` flags; returns "127.0.0.1:PORT" or "" on failure.
  std::string StartServer(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {
        kBin + "vaultgemma-server", "--model", model_->string(), "--listen", "127.0.0.1:0",
        "--metrics-port",           "0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    server_ = std::make_unique<ServerProcess>(argv);
    const auto line = server_->WaitForLine("(port ", 60);
    if (!line.has_value()) return "";
    const size_t at = line->find("(port ");
    return "127.0.0.1:" + std::to_string(std::stoi(line->substr(at + 6)));
  }

  ProcessResult Bench(const std::string& server, std::vector<std::string> args) {
    args.insert(args.begin(), {kBin + "vaultgemma-bench", "--server", server});
    return RunProcess(args);
  }

  static nlohmann::json Schema() {
    return nlohmann::json::parse(
        ReadFile(std::string(VG_SOURCE_DIR) + "/client/bench/results.schema.json"));
  }

  static fs::path* model_;
  fs::path out_;
  std::unique_ptr<ServerProcess> server_;
};
fs::path* BenchEndToEndTest::model_ = nullptr;

TEST_F(BenchEndToEndTest, SmokeRunWritesValidResultsCsvAndCharts) {
  const std::string server = StartServer();
  ASSERT_FALSE(server.empty()) << server_->stderr_text();
  const ProcessResult run =
      Bench(server, {"--concurrency", "8", "--duration", "8", "--input-len", "32", "--output-len",
                     "16", "--out", out_.string(), "--fail-on-error"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("=== stage 1/1: concurrency 8 ==="), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("TTFT"), std::string::npos);

  const nlohmann::json results = nlohmann::json::parse(ReadFile(out_ / "results.json"));
  const std::vector<std::string> errors = ValidateJsonSchema(Schema(), results);
  EXPECT_TRUE(errors.empty()) << errors.front();
  ASSERT_EQ(results["stages"].size(), 1u);
  const nlohmann::json& stage = results["stages"][0];
  const int64_t completed = stage["completed"];
  EXPECT_GT(completed, 8);
  EXPECT_EQ(stage["failed"], 0);
  EXPECT_EQ(stage["output_tokens"], completed * 16);
  EXPECT_EQ(stage["prompt_tokens"], completed * 32);
  EXPECT_GT(stage["output_token_throughput"].get<double>(), 0);
  EXPECT_GT(stage["ttft_s"]["p50"].get<double>(), 0);
  EXPECT_NEAR(stage["duration_s"].get<double>(), 8.0, 0.5);
  // Every token after each request's first message has a gap: at most 15 per request.
  EXPECT_LE(stage["itl_s"]["count"].get<int64_t>(), completed * 15);
  EXPECT_GT(stage["itl_s"]["count"].get<int64_t>(), 0);
  EXPECT_EQ(results["model"]["vocab_size"], 700);

  const std::vector<std::string> csv = Lines(ReadFile(out_ / "requests.csv"));
  ASSERT_FALSE(csv.empty());
  EXPECT_EQ(csv[0].rfind("stage,load_kind,load_value,request_index,start_s,status,", 0), 0u);
  EXPECT_EQ(csv[0].substr(csv[0].size() - 17), ",itl_s,peer,error");
  int64_t ok_rows = 0;
  for (size_t i = 1; i < csv.size(); ++i) {
    if (csv[i].find(",OK,") == std::string::npos) continue;
    ++ok_rows;
    // The server that had the call, then an empty error.
    EXPECT_EQ(csv[i].substr(csv[i].rfind(',', csv[i].size() - 2)), ",ipv4:" + server + ",")
        << csv[i];
  }
  EXPECT_EQ(ok_rows, completed);
  EXPECT_EQ(static_cast<int64_t>(csv.size()) - 1,
            completed + stage["failed"].get<int64_t>() + stage["cancelled_at_end"].get<int64_t>());

  for (const char* chart : {"ttft_cdf.svg", "itl_cdf.svg"}) {
    const std::string svg = ReadFile(out_ / chart);
    EXPECT_EQ(CheckXmlBalance(svg, "svg"), "") << chart;
    EXPECT_TRUE(svg.rfind("<?xml", 0) == 0 || svg.rfind("<svg", 0) == 0) << chart;
    EXPECT_NE(svg.find(">concurrency 8</text>"), std::string::npos) << chart;
  }
  EXPECT_FALSE(fs::exists(out_ / "throughput_vs_load.svg"));  // one stage: no sweep charts

  // A sweep on the same server: one stage per value, and the two charts against load.
  const fs::path sweep = out_ / "sweep";
  const ProcessResult swept =
      Bench(server, {"--concurrency", "1,3", "--num-requests", "6", "--input-len", "16",
                     "--output-len", "4", "--warmup-requests", "0", "--out", sweep.string()});
  ASSERT_EQ(swept.exit_code, 0) << swept.err;
  const nlohmann::json sweep_results = nlohmann::json::parse(ReadFile(sweep / "results.json"));
  EXPECT_TRUE(ValidateJsonSchema(Schema(), sweep_results).empty());
  ASSERT_EQ(sweep_results["stages"].size(), 2u);
  EXPECT_EQ(sweep_results["stages"][1]["load"]["value"], 3);
  EXPECT_EQ(sweep_results["stages"][1]["completed"], 6);
  for (const char* chart : {"throughput_vs_load.svg", "p99_latency_vs_load.svg"}) {
    EXPECT_EQ(CheckXmlBalance(ReadFile(sweep / chart), "svg"), "") << chart;
  }
  EXPECT_NE(swept.out.find("Sweep"), std::string::npos);
}

TEST_F(BenchEndToEndTest, OverloadIsCountedNotFatalAndTheServerSurvives) {
  const std::string server = StartServer({"--max-num-seqs", "1", "--max-queued", "1"});
  ASSERT_FALSE(server.empty()) << server_->stderr_text();
  const std::vector<std::string> args = {
      "--request-rate", "inf", "--num-requests",    "20", "--input-len", "16",
      "--output-len",   "16",  "--warmup-requests", "0",  "--out",       out_.string()};
  const ProcessResult run = Bench(server, args);
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const nlohmann::json results = nlohmann::json::parse(ReadFile(out_ / "results.json"));
  EXPECT_TRUE(ValidateJsonSchema(Schema(), results).empty());
  const nlohmann::json& stage = results["stages"][0];
  ASSERT_TRUE(stage["errors"].contains("RESOURCE_EXHAUSTED")) << stage.dump();
  EXPECT_GT(stage["errors"]["RESOURCE_EXHAUSTED"].get<int64_t>(), 0);
  EXPECT_GE(stage["completed"].get<int64_t>(), 1);
  EXPECT_EQ(stage["completed"].get<int64_t>() + stage["failed"].get<int64_t>(), 20);
  EXPECT_NE(run.out.find("RESOURCE_EXHAUSTED"), std::string::npos) << run.out;

  std::vector<std::string> failing = args;
  failing.back() = (out_ / "again").string();
  failing.push_back("--fail-on-error");
  EXPECT_EQ(Bench(server, failing).exit_code, 1);

  const ProcessResult info = RunProcess({kBin + "vaultgemma-cli", "info", "--server", server});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("\"vocab_size\": 700"), std::string::npos) << info.out;

  // Checks that need the model's context length: a prompt that cannot fit is a usage error.
  const ProcessResult too_long = Bench(server, {"--input-len", "5000"});
  EXPECT_EQ(too_long.exit_code, 2);
  EXPECT_NE(too_long.err.find("--input-len"), std::string::npos) << too_long.err;
}

TEST_F(BenchEndToEndTest, UsageErrorsExitTwoWithOneLineNamingTheFlag) {
  const fs::path bad = fs::temp_directory_path() / ("vg_bench_bad_" + std::to_string(getpid()));
  std::ofstream(bad) << "{\"prompt\": \"ok\"}\n{\"prompt\": 7}\n";
  const std::pair<std::vector<std::string>, std::string> kCases[] = {
      {{"--concurrency", "0"}, "--concurrency"},
      {{"--request-rate", "fast"}, "--request-rate"},
      {{"--concurrency", "2", "--request-rate", "1"}, "--request-rate"},
      {{"--len-distribution", "zipf"}, "--len-distribution"},
      {{"--duration", "-3"}, "--duration"},
      {{"--warp-speed"}, "--warp-speed"},
      {{"--dataset", "/nonexistent/prompts.jsonl"}, "--dataset"},
      {{"--dataset", bad.string()}, bad.string() + ":2:"},
  };
  for (const auto& [args, needle] : kCases) {
    const ProcessResult r = Bench("127.0.0.1:1", args);
    EXPECT_EQ(r.exit_code, 2) << needle;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(Lines(r.err).size(), 1u) << r.err;
  }
  fs::remove(bad);
  EXPECT_EQ(RunProcess({kBin + "vaultgemma-bench", "--help"}).exit_code, 0);
}

TEST_F(BenchEndToEndTest, UnreachableServerExitsThree) {
  const ProcessResult r = Bench("127.0.0.1:1", {"--num-requests", "1"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("GetModelInfo"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace vg::testing
