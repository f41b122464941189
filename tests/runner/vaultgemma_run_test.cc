// vaultgemma-run as a user runs it: a separate process, its stdout, stderr and exit code.
// Good runs must agree with the transformers fixtures; every bad input must exit 2 with one line
// naming the problem (and, in the ASan build, stay clean: the child is instrumented too).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/runner/subprocess.h"

namespace vg::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::string kRun = std::string(VG_BINARY_DIR) + "/bin/vaultgemma-run";

std::vector<fs::path> FixtureDirs() {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(fs::path(VG_SOURCE_DIR) / "tests/fixtures")) {
    if (fs::exists(entry.path() / "reference.json")) out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

nlohmann::json ReadJson(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A fixture with a single model.safetensors, copied to a fresh temporary directory.
fs::path CopyOfSingleFileFixture(const std::string& tag) {
  for (const fs::path& dir : FixtureDirs()) {
    if (!fs::exists(dir / "model.safetensors")) continue;
    const fs::path out =
        fs::temp_directory_path() / ("vg_run_test_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(out);
    fs::create_directories(out);
    for (const char* name : {"config.json", "model.safetensors", "tokenizer.model"}) {
      fs::copy_file(dir / name, out / name);
    }
    return out;
  }
  ADD_FAILURE() << "no fixture with a single model.safetensors";
  return {};
}

// Rewrites the JSON header of a safetensors file, keeping the data section as it is.
template <typename Edit>
void EditSafetensorsHeader(const fs::path& path, Edit edit) {
  const std::string bytes = ReadFile(path);
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_size));
  edit(header);
  std::string text = header.dump();
  const uint64_t new_size = text.size();
  std::string out(reinterpret_cast<const char*>(&new_size), 8);
  out += text;
  out += bytes.substr(8 + header_size);
  WriteFile(path, out);
}

ProcessResult RunTool(const std::vector<std::string>& args, const std::string& stdin_text = "") {
  std::vector<std::string> argv = {kRun};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, stdin_text);
}

// The contract for bad input: exit code 2, exactly one line on stderr, naming the problem.
void ExpectUsageError(const ProcessResult& r, const std::string& needle) {
  EXPECT_EQ(r.signal, 0) << r.err;
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, StartsWith("vaultgemma-run: "));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr(needle));
}

TEST(VaultgemmaRunTest, JsonAgreesWithEveryFixture) {
  const auto dirs = FixtureDirs();
  ASSERT_FALSE(dirs.empty()) << "no fixtures under tests/fixtures";
  for (const fs::path& dir : dirs) {
    const nlohmann::json ref = ReadJson(dir / "reference.json");
    const nlohmann::json& c = ref["cases"][0];
    SCOPED_TRACE(dir.filename().string());
    const auto greedy = c["greedy_token_ids"].get<std::vector<int32_t>>();
    const ProcessResult r =
        RunTool({"--model", dir.string(), "--prompt", c["prompt"].get<std::string>(), "--json",
                 "--max-new-tokens", std::to_string(greedy.size()), "--threads", "2"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const nlohmann::json out = nlohmann::json::parse(r.out);
    EXPECT_EQ(out["prompt_token_ids"].get<std::vector<int32_t>>(),
              c["prompt_token_ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(out["token_ids"].get<std::vector<int32_t>>(), greedy);
    EXPECT_EQ(out["finish_reason"], c["finish_reason"]);
    const auto logprobs = out["logprobs"].get<std::vector<double>>();
    const auto ref_logprobs = c["greedy_logprobs"].get<std::vector<double>>();
    ASSERT_EQ(logprobs.size(), ref_logprobs.size());
    for (size_t i = 0; i < logprobs.size(); ++i) {
      EXPECT_NEAR(logprobs[i], ref_logprobs[i], 1e-3) << "token " << i;
    }
    EXPECT_TRUE(out["text"].is_string());
  }
}

TEST(VaultgemmaRunTest, TextModeStdinAndPromptAgree) {
  const fs::path dir = FixtureDirs().at(0);
  const std::string prompt = ReadJson(dir / "reference.json")["cases"][0]["prompt"];
  const ProcessResult json =
      RunTool({"--model", dir.string(), "--prompt", prompt, "--json", "--max-new-tokens", "12"});
  const ProcessResult text =
      RunTool({"--model", dir.string(), "--max-new-tokens", "12"}, prompt + "\n");
  ASSERT_EQ(json.exit_code, 0) << json.err;
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out, nlohmann::json::parse(json.out)["text"].get<std::string>() + "\n");
}

TEST(VaultgemmaRunTest, PromptIdsAreUsedAsGiven) {
  const fs::path dir = FixtureDirs().at(0);
  const ProcessResult r = RunTool(
      {"--model", dir.string(), "--prompt-ids", "5, 6,7", "--json", "--max-new-tokens", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["prompt_token_ids"], nlohmann::json({5, 6, 7}));
}

TEST(VaultgemmaRunTest, SeededSamplingRepeats) {
  const fs::path dir = FixtureDirs().at(0);
  const std::vector<std::string> args = {"--model",       dir.string(), "--prompt", "Hello",
                                         "--temperature", "1.5",        "--top-p",  "0.9",
                                         "--seed",        "7",          "--json"};
  const ProcessResult a = RunTool(args), b = RunTool(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
}

TEST(VaultgemmaRunTest, HelpExitsZero) {
  const ProcessResult r = RunTool({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--max-new-tokens"));
}

TEST(VaultgemmaRunTest, BadFlagsExitTwo) {
  const std::string dir = FixtureDirs().at(0).string();
  ExpectUsageError(RunTool({"--model", dir, "--prompt", "x", "--bogus"}), "--bogus");
  ExpectUsageError(RunTool({"--model", dir, "--prompt", "x", "--temperature", "-1"}),
                   "--temperature");
  ExpectUsageError(RunTool({"--model", dir, "--prompt", "x", "--temperature", "nan"}),
                   "--temperature");
  ExpectUsageError(RunTool({"--model", dir, "--prompt", "x", "--top-p", "2"}), "--top-p");
  ExpectUsageError(RunTool({"--model", dir, "--prompt", "x", "--max-new-tokens", "ten"}),
                   "--max-new-tokens");
  ExpectUsageError(RunTool({"--model", dir, "--prompt", "x", "--prompt-ids", "1,2"}),
                   "--prompt-ids");
  ExpectUsageError(RunTool({"--model", dir, "--prompt-ids", "2,x"}), "--prompt-ids");
  ExpectUsageError(RunTool({"--prompt", "x"}), "--model");
  ExpectUsageError(RunTool({"--model", dir, "--prompt", ""}), "empty");
  ExpectUsageError(RunTool({"--model", dir}, ""), "empty");
  ExpectUsageError(RunTool({"--model"}), "--model");
}

TEST(VaultgemmaRunTest, BadPromptsExitTwo) {
  const fs::path dir = FixtureDirs().at(0);
  const nlohmann::json config = ReadJson(dir / "config.json");
  const int64_t vocab = config["vocab_size"];
  const int64_t context = config.value("max_position_embeddings", 8192);
  ExpectUsageError(RunTool({"--model", dir.string(), "--prompt-ids", "2," + std::to_string(vocab)}),
                   std::to_string(vocab));
  ExpectUsageError(RunTool({"--model", dir.string(), "--prompt-ids", "2,-1"}), "-1");
  std::string long_prompt = "2";
  for (int64_t i = 0; i < context; ++i) long_prompt += ",5";
  ExpectUsageError(RunTool({"--model", dir.string(), "--prompt-ids", long_prompt}), "context");
}

TEST(VaultgemmaRunTest, MissingFilesExitTwo) {
  ExpectUsageError(RunTool({"--model", "/nonexistent/model/dir", "--prompt", "x"}),
                   "/nonexistent/model/dir");
  ExpectUsageError(RunTool({"--model", "nobody/no-such-model", "--prompt", "x"}),
                   "huggingface-cli download nobody/no-such-model");

  const fs::path dir = CopyOfSingleFileFixture("missing");
  fs::remove(dir / "tokenizer.model");
  ExpectUsageError(RunTool({"--model", dir.string(), "--prompt", "x"}), "tokenizer.model");
  fs::remove(dir / "model.safetensors");
  ExpectUsageError(RunTool({"--model", dir.string(), "--prompt", "x"}), "model.safetensors");
  fs::remove(dir / "config.json");
  ExpectUsageError(RunTool({"--model", dir.string(), "--prompt", "x"}), "config.json");
  fs::remove_all(dir);
}

TEST(VaultgemmaRunTest, BrokenConfigsExitTwo) {
  const fs::path dir = CopyOfSingleFileFixture("config");
  const std::string original = ReadFile(dir / "config.json");
  auto with_config = [&](auto edit, const std::string& needle) {
    nlohmann::json config = nlohmann::json::parse(original);
    edit(config);
    WriteFile(dir / "config.json", config.dump());
    SCOPED_TRACE(needle);
    ExpectUsageError(RunTool({"--model", dir.string(), "--prompt", "x"}), needle);
  };
  WriteFile(dir / "config.json", "{\"model_type\": \"vaultgemma\", ");
  ExpectUsageError(RunTool({"--model", dir.string(), "--prompt", "x"}), "config.json");
  with_config([](nlohmann::json& c) { c["num_attention_heads"] = "four"; }, "num_attention_heads");
  with_config([](nlohmann::json& c) { c["model_type"] = "llama"; }, "model_type");
  with_config([](nlohmann::json& c) { c["num_key_value_heads"] = 3; }, "num_key_value_heads");
  with_config([](nlohmann::json& c) { c["layer_types"] = {"full_attention"}; }, "layer_types");
  with_config([](nlohmann::json& c) { c["hidden_activation"] = "relu"; }, "hidden_activation");
  with_config([](nlohmann::json& c) { c["hidden_size"] = c["hidden_size"].get<int>() * 2; },
              "expected");
  fs::remove_all(dir);
}

TEST(VaultgemmaRunTest, CorruptWeightsExitTwo) {
  const fs::path dir = CopyOfSingleFileFixture("weights");
  const fs::path weights = dir / "model.safetensors";
  const std::string original = ReadFile(weights);
  auto expect = [&](const std::string& needle) {
    SCOPED_TRACE(needle);
    ExpectUsageError(RunTool({"--model", dir.string(), "--prompt", "x"}), needle);
    WriteFile(weights, original);
  };

  WriteFile(weights, original.substr(0, original.size() / 2));
  expect("model.safetensors");
  WriteFile(weights, original.substr(0, 5));
  expect("model.safetensors");
  std::string lying = original;
  const uint64_t huge = uint64_t{1} << 40;
  std::memcpy(lying.data(), &huge, 8);
  WriteFile(weights, lying);
  expect("model.safetensors");

  const std::string tensor = "model.norm.weight";
  EditSafetensorsHeader(weights, [&](nlohmann::json& h) { h.erase(tensor); });
  expect(tensor);
  EditSafetensorsHeader(weights, [&](nlohmann::json& h) { h[tensor]["dtype"] = "I64"; });
  expect(tensor);
  EditSafetensorsHeader(weights, [&](nlohmann::json& h) {
    h[tensor]["dtype"] = h[tensor]["dtype"] == "F32" ? "BF16" : "F32";
  });
  expect(tensor);
  EditSafetensorsHeader(
      weights, [&](nlohmann::json& h) { h[tensor]["data_offsets"][1] = original.size() * 4; });
  expect(tensor);
  // A consistent header whose shape disagrees with config.json.
  EditSafetensorsHeader(weights, [&](nlohmann::json& h) {
    const int64_t n = h[tensor]["shape"][0];
    h[tensor]["shape"] = {n / 2, 2};
  });
  expect(tensor);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace vg::testing
