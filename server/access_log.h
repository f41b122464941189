// AccessLog: one line per finished RPC, in plain text or JSON lines, to a FILE* (stderr by
// default). A line holds the finish time, request id, method, gRPC code, token counts, finish
// reason, time to first token, the RPC's duration and the peer address. It never holds prompt or
// completion text: AccessRecord has no field that could carry either.
//
// Thread-safety: Write may be called from any thread; lines never interleave.
#ifndef VG_SERVER_ACCESS_LOG_H_
#define VG_SERVER_ACCESS_LOG_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace vg::server {

// What the access log knows of one RPC. Optional fields are absent for RPCs that never reached
// the engine (rejected requests, Tokenize, GetModelInfo) or that ended before the engine did.
struct AccessRecord {
  absl::Time time;         // when the RPC finished
  std::string request_id;  // empty when the client's id was invalid (it is not echoed)
  std::string method;      // "Generate", "Tokenize", "GetModelInfo"
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::optional<int32_t> prompt_tokens;
  std::optional<int32_t> completion_tokens;
  std::optional<int32_t> cached_tokens;
  std::string finish_reason;  // engine::FinishReasonName, or empty
  std::optional<double> time_to_first_token_seconds;
  double e2e_seconds = 0;  // server-side wall time of the RPC, from its start to its end
  std::string peer;        // grpc::ServerContext::peer(), e.g. "ipv4:127.0.0.1:53412"
};

class AccessLog {
 public:
  enum class Format { kText, kJson };

  // "text" or "json"; INVALID_ARGUMENT otherwise.
  static absl::StatusOr<Format> ParseFormat(std::string_view name);

  // `out` is not owned and must outlive the AccessLog; it is flushed after every line.
  explicit AccessLog(Format format, std::FILE* out = stderr) : format_(format), out_(out) {}

  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  void Write(const AccessRecord& record);

  // The line Write would print, without the newline.
  std::string FormatLine(const AccessRecord& record) const;

 private:
  const Format format_;
  std::mutex mu_;  // not absl::Mutex: see in_flight_calls.h
  std::FILE* const out_ ABSL_PT_GUARDED_BY(mu_);
};

}  // namespace vg::server

#endif  // VG_SERVER_ACCESS_LOG_H_
