// Tests of the CUDA plugin plumbing that run without a GPU (issue 7): the loader's errors, loading
// the plugin after a Prometheus exposer has started (TOOLCHAIN.md, landmine 2), and the device
// query's clean failure on a device-less machine (or the device list where a device exists).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "engine/backend/cuda_plugin_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/exposer.h"

namespace vg::engine {
namespace {

using ::testing::HasSubstr;

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

TEST(CudaPluginLoaderTest, MissingPluginNamesThePath) {
  auto api = LoadCudaPlugin("/nonexistent/dir/libvaultgemma_cuda.so");
  ASSERT_FALSE(api.ok());
  EXPECT_EQ(api.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(api.status().message(), HasSubstr("/nonexistent/dir/libvaultgemma_cuda.so"));
}

#ifdef VG_CUDA_PLUGIN_PATH
TEST(CudaPluginLoaderTest, LoadsAfterTheExposerAndQueriesDevices) {
  auto exposer = std::make_unique<prometheus::Exposer>("127.0.0.1:" + std::to_string(FreePort()));
  auto api = LoadCudaPlugin(VG_CUDA_PLUGIN_PATH);
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_EQ((*api)->abi_version, kVgCudaPluginAbiVersion);
  auto devices = (*api)->list_devices();
  if (devices.ok()) {
    ASSERT_FALSE(devices->empty());
    for (const CudaDeviceInfo& d : *devices) {
      EXPECT_FALSE(d.name.empty());
      EXPECT_GT(d.total_memory_bytes, 0);
    }
  } else {
    EXPECT_EQ(devices.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(devices.status().message(), HasSubstr("no CUDA"));
  }
  // The exposer's threads still start after cuBLASLt is in the process.
  auto second = std::make_unique<prometheus::Exposer>("127.0.0.1:" + std::to_string(FreePort()));
}

TEST(CudaPluginLoaderTest, DefaultPathIsLibNextToBin) {
  EXPECT_EQ(DefaultCudaPluginPath().filename(), kCudaPluginFileName);
  EXPECT_EQ(DefaultCudaPluginPath().parent_path().filename(), "lib");
}
#endif

}  // namespace
}  // namespace vg::engine
