// A strict command-line parser for the project's tools: `--name value`, `--name=value` and boolean
// `--name`. Unknown flags, missing values, repeated flags and malformed numbers are errors that
// name the flag, so every tool can answer bad usage with one line and exit code 2.
#ifndef VG_ENGINE_RUNNER_COMMAND_LINE_H_
#define VG_ENGINE_RUNNER_COMMAND_LINE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace vg::engine {

struct FlagSpec {
  std::string_view name;  // without the leading "--"
  bool takes_value = true;
  bool repeated = false;  // may be given several times (GetAll)
};

class CommandLine {
 public:
  // INVALID_ARGUMENT for an unknown flag, a value flag without a value, a boolean flag given a
  // value, a flag given twice, or a positional argument.
  static absl::StatusOr<CommandLine> Parse(int argc, const char* const* argv,
                                           std::span<const FlagSpec> specs);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::optional<std::string> GetString(const std::string& name) const;
  // Typed values; INVALID_ARGUMENT naming the flag when the text is not a number in [min, max].
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t default_value, int64_t min,
                                 int64_t max) const;
  absl::StatusOr<uint64_t> GetUint64(const std::string& name, uint64_t default_value) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double default_value) const;
  // Every value of a repeated flag, in order.
  std::vector<std::string> GetAll(const std::string& name) const;
  // A comma-separated list of integers ("2,651,1234").
  absl::StatusOr<std::vector<int32_t>> GetIntList(const std::string& name) const;

 private:
  std::map<std::string, std::string> values_;  // booleans map to ""; repeated: the last value
  std::map<std::string, std::vector<std::string>> repeated_;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_RUNNER_COMMAND_LINE_H_
