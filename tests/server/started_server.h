// The vaultgemma-server binary run as a child process by the tests that need the real thing
// (faults, operations, the soak): started, its ports read from the lines it prints, and its
// /metrics text read back. Test-only helper.
#ifndef VG_TESTS_SERVER_STARTED_SERVER_H_
#define VG_TESTS_SERVER_STARTED_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/server/server_process.h"

namespace vg::server::testing {

// Whether the server's RSS can show a leak in this build. Under AddressSanitizer freed memory sits
// in a quarantine of up to 256 MiB (LeakSanitizer checks the server at its exit instead: a leak
// fails the exit code the tests expect to be 0); ThreadSanitizer's shadow memory and delayed frees
// make RSS as meaningless. The Release build checks it.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kRssIsMeaningful = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kRssIsMeaningful = false;
#else
inline constexpr bool kRssIsMeaningful = true;
#endif
#else
inline constexpr bool kRssIsMeaningful = true;
#endif

// A started server and the ports it printed; port is 0 when it never said it was serving.
struct StartedServer {
  std::unique_ptr<ServerProcess> process;
  int port = 0;
  int metrics_port = 0;  // 0 with --no-metrics
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  std::shared_ptr<grpc::Channel> NewChannel() const {
    return grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
  }
};

// Starts `argv` (the binary first) and waits up to `timeout_seconds` for "(metrics port N)",
// unless argv has --no-metrics, then for "(port N)".
StartedServer StartServerBinary(const std::vector<std::string>& argv, double timeout_seconds = 60);

// N from the first "`marker`N" in `line` (e.g. marker "(port "); nullopt when absent.
std::optional<int> PortAfter(const std::string& line, const std::string& marker);

// The first sample in a /metrics body whose line starts with `series` plus a space
// (e.g. `vaultgemma_kv_cache_blocks{state="used"}`); -1 when absent.
double MetricValue(const std::string& body, const std::string& series);

}  // namespace vg::server::testing

#endif  // VG_TESTS_SERVER_STARTED_SERVER_H_
