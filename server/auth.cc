#include "server/auth.h"

#include <cstddef>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vg::server {
namespace {

constexpr char kAuthorizationKey[] = "authorization";
constexpr std::string_view kBearerPrefix = "Bearer ";

std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n\f\v";
  const size_t begin = s.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  const size_t end = s.find_last_not_of(kSpace);
  return s.substr(begin, end - begin + 1);
}

// Compares every byte of `presented` whatever the outcome; no early exit on a mismatch.
bool ConstantTimeEquals(std::string_view expected, std::string_view presented) {
  unsigned char diff = expected.size() == presented.size() ? 0 : 1;
  for (size_t i = 0; i < presented.size(); ++i) {
    const unsigned char e =
        expected.empty() ? 0 : static_cast<unsigned char>(expected[i % expected.size()]);
    diff |= static_cast<unsigned char>(e ^ static_cast<unsigned char>(presented[i]));
  }
  return diff == 0;
}

}  // namespace

absl::StatusOr<BearerTokenAuth> BearerTokenAuth::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read --auth-token-file ", path));
  std::vector<std::string> tokens;
  std::string line;
  while (std::getline(in, line)) {
    const std::string_view token = Trim(line);
    if (!token.empty()) tokens.emplace_back(token);
  }
  if (in.bad()) return absl::NotFoundError(absl::StrCat("cannot read --auth-token-file ", path));
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--auth-token-file ", path, " has no token"));
  }
  return BearerTokenAuth(std::move(tokens));
}

BearerTokenAuth::BearerTokenAuth(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {}

bool BearerTokenAuth::Accepts(std::string_view presented) const {
  bool accepted = false;
  for (const std::string& token : tokens_) {
    // Non-short-circuiting: every token is compared.
    accepted = ConstantTimeEquals(token, presented) | accepted;
  }
  return accepted;
}

grpc::Status BearerTokenAuth::Check(const grpc::ServerContextBase& context) const {
  const auto& metadata = context.client_metadata();
  auto [begin, end] = metadata.equal_range(kAuthorizationKey);
  if (begin == end) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing authorization metadata");
  }
  for (auto it = begin; it != end; ++it) {
    const std::string_view value(it->second.data(), it->second.size());
    if (value.size() > kBearerPrefix.size() &&
        value.substr(0, kBearerPrefix.size()) == kBearerPrefix &&
        Accepts(Trim(value.substr(kBearerPrefix.size())))) {
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid bearer token");
}

}  // namespace vg::server
