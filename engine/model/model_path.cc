#include "engine/model/model_path.h"

#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace vg::engine {
namespace {

namespace fs = std::filesystem;

std::optional<std::string> Env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

// The hub cache root, as huggingface_hub computes it; nullopt when not even HOME is set.
std::optional<fs::path> HubCacheDir() {
  if (auto cache = Env("HF_HUB_CACHE")) return fs::path(*cache);
  if (auto home = Env("HF_HOME")) return fs::path(*home) / "hub";
  if (auto home = Env("HOME")) return fs::path(*home) / ".cache" / "huggingface" / "hub";
  return std::nullopt;
}

bool IsRepoNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}

// "ORG/NAME" with Hugging Face's repo-id characters; anything else is treated as a path.
bool LooksLikeRepoId(std::string_view model) {
  const size_t slash = model.find('/');
  if (slash == std::string_view::npos || model.find('/', slash + 1) != std::string_view::npos) {
    return false;
  }
  const std::string_view org = model.substr(0, slash);
  const std::string_view name = model.substr(slash + 1);
  for (std::string_view part : {org, name}) {
    if (part.empty() || part.front() == '.' || part.find("..") != std::string_view::npos) {
      return false;
    }
    for (char c : part) {
      if (!IsRepoNameChar(c)) return false;
    }
  }
  return true;
}

bool HasConfig(const fs::path& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::is_regular_file(dir / "config.json", ec);
}

// The snapshot refs/main points at, else the most recently modified snapshot with a config.json.
std::optional<fs::path> FindSnapshot(const fs::path& repo_dir) {
  std::error_code ec;
  std::ifstream ref(repo_dir / "refs" / "main");
  std::string revision;
  if (ref && std::getline(ref, revision)) {
    revision = std::string(absl::StripAsciiWhitespace(revision));
    const fs::path snapshot = repo_dir / "snapshots" / revision;
    if (!revision.empty() && revision.find('/') == std::string::npos && revision != "." &&
        revision != ".." && HasConfig(snapshot)) {
      return snapshot;
    }
  }
  std::optional<fs::path> best;
  fs::file_time_type best_time;
  fs::directory_iterator it(repo_dir / "snapshots", ec);
  if (ec) return std::nullopt;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    const fs::path candidate = it->path();
    if (!HasConfig(candidate)) continue;
    const fs::file_time_type time = fs::last_write_time(candidate, ec);
    if (ec) continue;
    if (!best.has_value() || time > best_time) {
      best = candidate;
      best_time = time;
    }
  }
  return best;
}

}  // namespace

absl::StatusOr<fs::path> ResolveModelPath(std::string_view model_arg) {
  // Debian's Abseil has its own string_view; a std::string talks to StrCat.
  const std::string model(model_arg);
  if (model.empty()) return absl::InvalidArgumentError("--model is empty");
  const fs::path as_path(model);
  std::error_code ec;
  if (fs::is_directory(as_path, ec)) return as_path;

  if (LooksLikeRepoId(model)) {
    const std::string hint = absl::StrCat("; download it with: huggingface-cli download ", model);
    const std::optional<fs::path> cache = HubCacheDir();
    if (!cache.has_value()) {
      return absl::NotFoundError(absl::StrCat(
          "model '", model,
          "' is not a directory and there is no Hugging Face cache (HF_HUB_CACHE, HF_HOME and "
          "HOME are unset)",
          hint));
    }
    const size_t slash = model.find('/');
    const fs::path repo_dir =
        *cache / absl::StrCat("models--", model.substr(0, slash), "--", model.substr(slash + 1));
    if (fs::is_directory(repo_dir, ec)) {
      if (std::optional<fs::path> snapshot = FindSnapshot(repo_dir)) return *snapshot;
      return absl::NotFoundError(absl::StrCat("model '", model, "' is in the Hugging Face cache (",
                                              repo_dir.string(),
                                              ") but no snapshot there has a config.json", hint));
    }
    return absl::NotFoundError(absl::StrCat("model '", model,
                                            "' is not a directory and is not in the Hugging Face "
                                            "cache (",
                                            cache->string(), ")", hint));
  }
  if (fs::exists(as_path, ec)) {
    return absl::NotFoundError(absl::StrCat(model, ": is not a directory"));
  }
  return absl::NotFoundError(absl::StrCat(model, ": no such directory"));
}

}  // namespace vg::engine
