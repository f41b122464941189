// The one place where an absl::Status (engine, validation) becomes a grpc::Status. Every RPC
// handler in server/ goes through ToGrpcStatus; nothing else constructs a grpc::Status from one.
#ifndef VG_SERVER_STATUS_MAPPING_H_
#define VG_SERVER_STATUS_MAPPING_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace vg::server {

// Same code (absl and gRPC share the canonical numbering) and the same message. OK maps to
// grpc::Status::OK. Thread-safe, pure.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace vg::server

#endif  // VG_SERVER_STATUS_MAPPING_H_
