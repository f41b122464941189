// vaultgemma-server --device cuda on a machine without a CUDA device (or without the plugin)
// exits 2 with one clear line on stderr (issue 7). With a device present the server serves
// instead, so that test is skipped.
#include <string>

#include "engine/backend/cuda_plugin_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"

namespace {

using ::vg::server::testing::ServerProcess;

const std::string kServer = std::string(VG_BINARY_DIR) + "/bin/vaultgemma-server";
const std::string kFixture = std::string(VG_SOURCE_DIR) + "/tests/fixtures/f32_mha_tied_sliding";

// Runs the server with `extra` flags; returns its exit code and its stderr.
std::pair<int, std::string> RunServer(const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {kServer,       "--model",        kFixture, "--listen",
                                   "127.0.0.1:0", "--metrics-port", "0"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  ServerProcess process(argv);
  EXPECT_TRUE(process.started());
  const int code = process.WaitForExit(60);
  return {code, process.stderr_text()};
}

// The stderr lines that name an error (the metrics start-up line is informational).
std::vector<std::string> ErrorLines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.find("metrics on") == std::string::npos) lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

TEST(ServerCudaTest, MissingPluginExitsTwoWithOneLine) {
  auto [code, err] =
      RunServer({"--device", "cuda", "--cuda-plugin", "/no/such/libvaultgemma_cuda.so"});
  EXPECT_EQ(code, 2) << err;
  const auto lines = ErrorLines(err);
  ASSERT_EQ(lines.size(), 1u) << err;
  EXPECT_THAT(lines[0], ::testing::HasSubstr("/no/such/libvaultgemma_cuda.so"));
}

TEST(ServerCudaTest, BadGpuMemoryUtilizationExitsTwo) {
  auto [code, err] = RunServer({"--device", "cuda", "--gpu-memory-utilization", "1.5"});
  EXPECT_EQ(code, 2) << err;
  EXPECT_THAT(err, ::testing::HasSubstr("--gpu-memory-utilization"));
}

#ifdef VG_CUDA_PLUGIN_PATH
TEST(ServerCudaTest, NoDeviceExitsTwoWithOneLine) {
  // With a device the server would serve (and not exit): ask the plugin first.
  auto api = ::vg::engine::LoadCudaPlugin(VG_CUDA_PLUGIN_PATH);
  ASSERT_TRUE(api.ok()) << api.status();
  if ((*api)->list_devices().ok()) {
    GTEST_SKIP() << "a CUDA device is present; the no-device path cannot be checked here";
  }
  auto [code, err] = RunServer({"--device", "cuda"});
  const auto lines = ErrorLines(err);
  EXPECT_EQ(code, 2) << err;
  ASSERT_EQ(lines.size(), 1u) << err;
  EXPECT_THAT(lines[0], ::testing::HasSubstr("no CUDA"));
}
#endif

}  // namespace
