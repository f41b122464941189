// vaultgemma-bench's configuration: every command-line flag parsed and checked once into plain data
// (BenchOptions), so the rest of the load tester never sees argv. A bad flag is an
// INVALID_ARGUMENT whose message names the flag; the caller prints it on one line and exits 2.
//
// The load shape is a list of stages run in order: `--concurrency 1,4,16` (closed loop, that many
// requests always in flight) or `--request-rate 1,2,inf` (open loop, Poisson arrivals). Each stage
// is bounded by `--num-requests` and/or `--duration`, so a run always ends by itself.
#ifndef VG_CLIENT_BENCH_OPTIONS_H_
#define VG_CLIENT_BENCH_OPTIONS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/connection.h"

namespace vg::client {

enum class LoadKind { kConcurrency, kRequestRate };
enum class LengthDistribution { kFixed, kUniform, kNormal };

// "concurrency" / "request_rate"; "fixed" / "uniform" / "normal".
const char* LoadKindName(LoadKind kind);
const char* LengthDistributionName(LengthDistribution distribution);

// How the lengths of synthetic prompts or outputs are drawn; see LengthSampler (workload.h).
struct LengthSpec {
  int mean = 0;  // --input-len / --output-len
  int min = 0;   // --*-len-range MIN:MAX (defaults: see DefaultRange in options.cc)
  int max = 0;
};

struct BenchOptions {
  ConnectionOptions connection;
  double deadline_s = 0;  // per request; 0 = none

  // One stage per value, in order. A request rate of +infinity sends everything at once.
  LoadKind load_kind = LoadKind::kConcurrency;
  std::vector<double> load_values = {1};
  std::optional<int> max_concurrency;   // request-rate stages only
  std::optional<int64_t> num_requests;  // per stage
  std::optional<double> duration_s;     // per stage
  int warmup_requests = 2;              // once, before the first stage, not measured

  // Prompts: synthetic token ids (dataset empty) or the lines of a JSONL file.
  std::string dataset;
  LengthDistribution len_distribution = LengthDistribution::kFixed;
  LengthSpec input_len = {128, 128, 128};
  LengthSpec output_len = {128, 128, 128};
  uint64_t seed = 0;
  // Empty: every request gets its own salt, so no two requests share prefix-cache blocks.
  std::string cache_salt;

  std::optional<double> slo_ttft_s;
  std::optional<double> slo_tpot_s;

  std::string out_dir;  // empty: no files
  bool fail_on_error = false;
  bool help = false;
};

// The usage text printed by --help.
extern const char kBenchUsage[];

// Parses argv. INVALID_ARGUMENT naming the flag for anything malformed or inconsistent.
absl::StatusOr<BenchOptions> ParseBenchOptions(int argc, const char* const* argv);

}  // namespace vg::client

#endif  // VG_CLIENT_BENCH_OPTIONS_H_
