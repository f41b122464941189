// Bearer-token authentication for vaultgemma.v1.TextGeneration.
//
// A BearerTokenAuth holds the accepted tokens (read from --auth-token-file) and checks a call's
// "authorization: Bearer <token>" metadata in constant time. It is enforced by
// TextGenerationService at the start of each of its handlers (TextGenerationService::SetAuthorizer)
// rather than by a grpc::AuthMetadataProcessor, because gRPC 1.51 runs processors only for secure
// (TLS) credentials and a server interceptor cannot end a call with UNAUTHENTICATED. The health
// service (grpc.health.v1.Health) and server reflection are not TextGenerationService and so are
// never checked.
//
// Thread-safety: immutable after construction; Check may be called from any thread.
#ifndef VG_SERVER_AUTH_H_
#define VG_SERVER_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace vg::server {

class BearerTokenAuth {
 public:
  // One token per line; surrounding whitespace is trimmed and blank lines are skipped.
  // NOT_FOUND when the file cannot be read, INVALID_ARGUMENT when it holds no token.
  static absl::StatusOr<BearerTokenAuth> FromFile(const std::string& path);

  // `tokens` must not be empty and none of them may be empty.
  explicit BearerTokenAuth(std::vector<std::string> tokens);

  // OK when the call's metadata has "authorization: Bearer <token>" for an accepted token;
  // UNAUTHENTICATED otherwise (the message never echoes what the client sent).
  grpc::Status Check(const grpc::ServerContextBase& context) const;

  // True when `presented` equals one of the tokens. Takes the same time whichever token matches
  // or where a mismatch occurs (it depends only on the lengths involved).
  bool Accepts(std::string_view presented) const;

 private:
  std::vector<std::string> tokens_;
};

}  // namespace vg::server

#endif  // VG_SERVER_AUTH_H_
