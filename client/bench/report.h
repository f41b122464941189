// vaultgemma-bench's outputs from a finished run: the human table printed on stdout, and with
// --out DIR the files results.json (schema: client/bench/results.schema.json), requests.csv (one
// row per measured request) and the SVG charts ttft_cdf.svg, itl_cdf.svg and, for sweeps of two
// or more stages, throughput_vs_load.svg and p99_latency_vs_load.svg.
#ifndef VG_CLIENT_BENCH_REPORT_H_
#define VG_CLIENT_BENCH_REPORT_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "client/bench/options.h"
#include "client/bench/stats.h"
#include "nlohmann/json.hpp"

namespace vg::client {

// The served model, as GetModelInfo describes it.
struct ModelDescription {
  std::string model_id;
  std::string architecture;
  std::string dtype;
  std::string device;
  std::string server_version;
  uint32_t vocab_size = 0;
  uint32_t context_length = 0;
};

struct RunReport {
  std::string started_at;  // ISO-8601 UTC, e.g. "2025-01-31T12:00:00Z"
  ModelDescription model;
  BenchOptions options;
  std::vector<StageStats> stages;
  std::vector<RequestRecord> records;  // every measured request (warmup excluded), all stages
};

// "concurrency 8", "rate 2 req/s", "rate inf".
std::string StageLabel(LoadKind kind, double value);

// The table for stdout: one block per stage, then (for sweeps) one summary row per stage.
std::string FormatTable(const RunReport& report);

// results.json's content. Summaries without values and an infinite request rate are null.
nlohmann::json ResultsJson(const RunReport& report);

// requests.csv: a header, then one row per record. Inter-token gaps are in one column, in
// seconds, joined by ';'; `peer` is the server that had the call; `error` comes last.
std::string RequestsCsv(const RunReport& report);

// The charts as (file name, SVG text).
std::vector<std::pair<std::string, std::string>> RenderCharts(const RunReport& report);

// Creates `dir` (and parents) and writes every file above. INTERNAL naming the file on failure.
absl::Status WriteRunFiles(const std::string& dir, const RunReport& report);

}  // namespace vg::client

#endif  // VG_CLIENT_BENCH_REPORT_H_
