// How the project's clients reach a server: one or several addresses, plaintext or TLS.
#ifndef VG_CLIENT_CONNECTION_H_
#define VG_CLIENT_CONNECTION_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace vg::client {

struct ConnectionOptions {
  // "host:port", "dns:///host:port", or several "ip:port" joined by commas (round-robin over
  // those whose gRPC health service reports the TextGeneration service SERVING).
  std::string server = "localhost:50051";
  std::string tls_ca_file;  // PEM roots; empty = plaintext
  std::string auth_token;   // sent as "authorization: Bearer ..." when not empty
};

// INVALID_ARGUMENT for an empty or malformed server list; NOT_FOUND for an unreadable CA file.
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const ConnectionOptions& options);

// A context with the token and, when `deadline_seconds` > 0, a deadline.
std::unique_ptr<grpc::ClientContext> MakeContext(const ConnectionOptions& options,
                                                 double deadline_seconds);

// "OK", "CANCELLED", ... "UNAUTHENTICATED" (grpc/status.h's names); "CODE_<n>" for anything else.
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace vg::client

#endif  // VG_CLIENT_CONNECTION_H_
