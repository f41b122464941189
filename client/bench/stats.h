// Per-request measurements and the statistics vaultgemma-bench reports for each stage: latency
// summaries (mean, min, max, p50/p90/p95/p99), throughputs, error counts by gRPC status name and
// goodput under optional SLOs. Plain data and pure functions; no gRPC.
//
// Conventions (the README section repeats them):
//   TTFT  send -> first message carrying a token.
//   ITL   for each later message carrying k tokens, the gap since the previous token-carrying
//         message split evenly into k gaps of gap/k (the server's inter-token histogram does the
//         same, so client and server numbers compare). Tokens in the first message have no gap.
//   TPOT  (e2e - ttft) / (output_tokens - 1); undefined for fewer than 2 output tokens.
//   E2E   send -> the call's final status.
// Latency statistics, token counts and throughputs use completed (status OK) requests only.
#ifndef VG_CLIENT_BENCH_STATS_H_
#define VG_CLIENT_BENCH_STATS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "client/bench/options.h"

namespace vg::client {

struct RequestRecord {
  int stage = 0;                 // index into the run's stages
  uint64_t index = 0;            // global request index (the workload's)
  double start_s = 0;            // send time, seconds since the run started
  std::optional<double> ttft_s;  // unset without any token
  std::vector<double> itl_s;     // inter-token gaps, see above
  double e2e_s = 0;
  uint32_t prompt_tokens = 0;  // usage, or the prompt_token_ids received
  uint32_t output_tokens = 0;  // usage, or the token ids received
  uint32_t cached_prompt_tokens = 0;
  std::string status = "OK";  // gRPC status code name
  std::string error;          // the status message, empty when OK
  std::string peer;  // the server that had the call, as gRPC names it ("ipv4:10.0.0.7:50051");
                     // empty when it never reached one
  bool cancelled_at_end = false;  // cancelled by the bench when its stage's --duration ran out

  bool completed() const { return status == "OK"; }
  std::optional<double> tpot_s() const;
};

// Linear interpolation between closest ranks (numpy's default): rank = q * (n - 1) over the
// sorted values. `q` in [0, 1]; `sorted` ascending and not empty.
double Percentile(const std::vector<double>& sorted, double q);

struct LatencySummary {
  size_t count = 0;  // 0: every other field is meaningless (reported as null)
  double mean = 0, min = 0, max = 0, p50 = 0, p90 = 0, p95 = 0, p99 = 0;
};
LatencySummary Summarize(std::vector<double> values);

struct Goodput {
  std::optional<double> slo_ttft_s;
  std::optional<double> slo_tpot_s;
  int64_t good_requests = 0;   // completed and within every SLO given (no TPOT: within)
  double request_goodput = 0;  // good_requests / duration_s
};

struct StageStats {
  LoadKind kind = LoadKind::kConcurrency;
  double load_value = 0;  // concurrency, or requests/s (+inf allowed)
  double duration_s = 0;
  int64_t completed = 0, failed = 0, cancelled_at_end = 0;
  std::map<std::string, int64_t> errors;  // failed requests by status name
  int64_t prompt_tokens = 0, output_tokens = 0, cached_prompt_tokens = 0;
  double request_throughput = 0, output_token_throughput = 0, total_token_throughput = 0;
  std::optional<Goodput> goodput;  // set when an SLO was given
  LatencySummary ttft_s, itl_s, tpot_s, e2e_s;
};

// Aggregates one stage's records (already filtered to that stage). `duration_s` > 0.
StageStats ComputeStageStats(LoadKind kind, double load_value, double duration_s,
                             const std::vector<RequestRecord>& records,
                             std::optional<double> slo_ttft_s, std::optional<double> slo_tpot_s);

}  // namespace vg::client

#endif  // VG_CLIENT_BENCH_STATS_H_
