#include "server/access_log.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/metrics.h"

namespace vg::server {
namespace {

std::string TimeString(absl::Time time) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone());
}

template <typename T>
std::string OrDash(const std::optional<T>& value) {
  return value.has_value() ? absl::StrCat(*value) : "-";
}

std::string Seconds(const std::optional<double>& value) {
  return value.has_value() ? absl::StrFormat("%.6f", *value) : "-";
}

// Text fields are quoted when they could hold spaces (a client's request id may).
std::string Quoted(std::string_view value) {
  if (value.empty()) return "-";
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

}  // namespace

absl::StatusOr<AccessLog::Format> AccessLog::ParseFormat(std::string_view name) {
  if (name == "text") return Format::kText;
  if (name == "json") return Format::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("access log format must be text or json, got \"", std::string(name), "\""));
}

std::string AccessLog::FormatLine(const AccessRecord& r) const {
  if (format_ == Format::kText) {
    return absl::StrCat(TimeString(r.time), " request_id=", Quoted(r.request_id),
                        " method=", r.method, " code=", std::string(GrpcCodeName(r.code)),
                        " prompt_tokens=", OrDash(r.prompt_tokens),
                        " completion_tokens=", OrDash(r.completion_tokens),
                        " cached_tokens=", OrDash(r.cached_tokens),
                        " finish_reason=", r.finish_reason.empty() ? "-" : r.finish_reason,
                        " ttft_s=", Seconds(r.time_to_first_token_seconds),
                        " e2e_s=", Seconds(r.e2e_seconds), " peer=", Quoted(r.peer));
  }
  nlohmann::json j;
  j["time"] = TimeString(r.time);
  j["request_id"] = r.request_id.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.request_id);
  j["method"] = r.method;
  j["code"] = std::string(GrpcCodeName(r.code));
  auto optional = [](const auto& v) {
    return v.has_value() ? nlohmann::json(*v) : nlohmann::json();
  };
  j["prompt_tokens"] = optional(r.prompt_tokens);
  j["completion_tokens"] = optional(r.completion_tokens);
  j["cached_tokens"] = optional(r.cached_tokens);
  j["finish_reason"] =
      r.finish_reason.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.finish_reason);
  j["ttft_s"] = optional(r.time_to_first_token_seconds);
  j["e2e_s"] = r.e2e_seconds;
  j["peer"] = r.peer;
  // replace: a malformed byte must not throw on a server thread.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void AccessLog::Write(const AccessRecord& record) {
  const std::string line = FormatLine(record) + "\n";
  std::lock_guard<std::mutex> lock(mu_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace vg::server
