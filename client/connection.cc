#include "client/connection.h"

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace vg::client {

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const ConnectionOptions& options) {
  std::vector<std::string> servers = absl::StrSplit(options.server, ',', absl::SkipWhitespace());
  if (servers.empty()) return absl::InvalidArgumentError("--server is empty");
  std::string target = servers[0];
  grpc::ChannelArguments args;
  if (servers.size() > 1) {
    // Several addresses: one channel balancing calls over all of them.
    for (const std::string& s : servers) {
      if (s.find("://") != std::string::npos || s.find(':') == std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("--server: with several addresses each must be ip:port, got '", s, "'"));
      }
    }
    target = "ipv4:" + absl::StrJoin(servers, ",");
    // Round robin over the servers whose health service says SERVING for the TextGeneration
    // service (client-side health checking, gRFC A17): a server that is loading or draining drops
    // out as soon as it says NOT_SERVING, instead of refusing calls until it closes the connection
    // (and calls in flight when it closes can be lost, see server/server_main.cc). A server
    // without the health service counts as healthy.
    args.SetServiceConfigJSON(
        R"({"loadBalancingConfig": [{"round_robin": {}}],)"
        R"( "healthCheckConfig": {"serviceName": "vaultgemma.v1.TextGeneration"}})");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca_file.empty()) {
    std::ifstream in(options.tls_ca_file);
    if (!in) return absl::NotFoundError(absl::StrCat(options.tls_ca_file, ": cannot read"));
    std::stringstream pem;
    pem << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem.str();
    credentials = grpc::SslCredentials(ssl);
  }
  return grpc::CreateCustomChannel(target, credentials, args);
}

std::unique_ptr<grpc::ClientContext> MakeContext(const ConnectionOptions& options,
                                                 double deadline_seconds) {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!options.auth_token.empty()) {
    context->AddMetadata("authorization", "Bearer " + options.auth_token);
  }
  if (deadline_seconds > 0) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::microseconds(static_cast<int64_t>(deadline_seconds * 1e6)));
  }
  return context;
}

std::string StatusCodeName(grpc::StatusCode code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  const int index = static_cast<int>(code);
  return index >= 0 && index < 17 ? kNames[index] : absl::StrCat("CODE_", index);
}

}  // namespace vg::client
