// Server transport credentials from the --tls-* flags: plaintext, TLS, or mutual TLS.
//
// Thread-safety: free function, no shared state.
#ifndef VG_SERVER_TLS_H_
#define VG_SERVER_TLS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace vg::server {

// PEM file paths; empty means not given.
struct TlsFiles {
  std::string cert;       // --tls-cert: server certificate chain
  std::string key;        // --tls-key: its private key
  std::string client_ca;  // --tls-client-ca: CA bundle that client certificates must chain to
};

// No files: grpc::InsecureServerCredentials(). cert and key: TLS. With client_ca as well: mutual
// TLS, where a client without a certificate signed by client_ca is refused at the handshake.
// INVALID_ARGUMENT when only one of cert/key is given, or client_ca without them; NOT_FOUND when a
// file cannot be read; INVALID_ARGUMENT when a file holds no PEM block. (gRPC itself checks that
// the PEM parses, when the server starts.)
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files);

}  // namespace vg::server

#endif  // VG_SERVER_TLS_H_
