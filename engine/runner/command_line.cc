#include "engine/runner/command_line.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace vg::engine {

absl::StatusOr<CommandLine> CommandLine::Parse(int argc, const char* const* argv,
                                               std::span<const FlagSpec> specs) {
  CommandLine out;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.size() <= 2 || arg.compare(0, 2, "--") != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", argv[i], "'"));
    }
    arg.erase(0, 2);
    std::string name = arg;
    std::optional<std::string> value;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    const FlagSpec* spec = nullptr;
    for (const FlagSpec& s : specs) {
      if (s.name == name) spec = &s;
    }
    if (spec == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (out.values_.count(name) > 0 && !spec->repeated) {
      return absl::InvalidArgumentError(absl::StrCat("flag --", name, " given more than once"));
    }
    if (!spec->takes_value) {
      if (value.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " takes no value"));
      }
      out.values_[name] = "";
      continue;
    }
    if (!value.has_value()) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
      }
      value = argv[++i];
    }
    out.values_[name] = *value;
    if (spec->repeated) out.repeated_[name].push_back(*value);
  }
  return out;
}

std::vector<std::string> CommandLine::GetAll(const std::string& name) const {
  auto it = repeated_.find(name);
  return it == repeated_.end() ? std::vector<std::string>{} : it->second;
}

std::optional<std::string> CommandLine::GetString(const std::string& name) const {
  auto it = values_.find(std::string(name));
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<int64_t> CommandLine::GetInt(const std::string& name, int64_t default_value,
                                            int64_t min, int64_t max) const {
  auto text = GetString(name);
  if (!text.has_value()) return default_value;
  int64_t value;
  if (!absl::SimpleAtoi(*text, &value) || value < min || value > max) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be an integer in [", min,
                                                   ", ", max, "], got '", *text, "'"));
  }
  return value;
}

absl::StatusOr<uint64_t> CommandLine::GetUint64(const std::string& name,
                                                uint64_t default_value) const {
  auto text = GetString(name);
  if (!text.has_value()) return default_value;
  uint64_t value;
  if (!absl::SimpleAtoi(*text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be a non-negative integer, got '", *text, "'"));
  }
  return value;
}

absl::StatusOr<double> CommandLine::GetDouble(const std::string& name, double default_value) const {
  auto text = GetString(name);
  if (!text.has_value()) return default_value;
  double value;
  if (!absl::SimpleAtod(*text, &value) || !std::isfinite(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be a finite number, got '", *text, "'"));
  }
  return value;
}

absl::StatusOr<std::vector<int32_t>> CommandLine::GetIntList(const std::string& name) const {
  std::vector<int32_t> out;
  auto text = GetString(name);
  if (!text.has_value()) return out;
  for (absl::string_view part : absl::StrSplit(*text, ',')) {
    int32_t value;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", name, " must be a comma-separated list of integers, got '", part, "'"));
    }
    out.push_back(value);
  }
  return out;
}

}  // namespace vg::engine
