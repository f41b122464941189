// vaultgemma-bench: load-tests a running vaultgemma-server and reports latency and throughput.
// Exit codes: 0 the run completed (server errors are counted, not fatal), 1 --fail-on-error and a
// request failed, 2 usage error, 3 the server cannot be reached or GetModelInfo fails,
// 4 the output files cannot be written, 130 interrupted (SIGINT; results so far are reported).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <ctime>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/bench/options.h"
#include "client/bench/report.h"
#include "client/bench/runner.h"
#include "client/bench/stats.h"
#include "client/bench/workload.h"
#include "client/connection.h"
#include "vaultgemma/v1/text_generation.grpc.pb.h"

namespace vg::client {
namespace {

namespace pb = ::vaultgemma::v1;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_interrupted{false};
void OnSigint(int) { g_interrupted.store(true); }

int UsageError(absl::string_view message) {
  std::cerr << "vaultgemma-bench: " << message << " (see --help)\n";
  return 2;
}

std::string UtcNow() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

absl::StatusOr<ModelDescription> FetchModel(const std::shared_ptr<grpc::Channel>& channel,
                                            const ConnectionOptions& connection) {
  pb::ModelInfo info;
  auto context = MakeContext(connection, 10.0);
  const grpc::Status status = pb::TextGeneration::NewStub(channel)->GetModelInfo(
      context.get(), pb::GetModelInfoRequest(), &info);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("GetModelInfo from ", connection.server, ": ",
                                               StatusCodeName(status.error_code()), ": ",
                                               status.error_message()));
  }
  return ModelDescription{info.model_id(),      info.architecture(),   info.dtype(),
                          info.device(),        info.server_version(), info.vocab_size(),
                          info.context_length()};
}

// Progress on one terminal line, rewritten in place.
std::function<void(const StageProgress&)> ProgressLine(const std::string& stage,
                                                       std::optional<int64_t> total) {
  if (!isatty(STDERR_FILENO)) return {};
  return [stage, total](const StageProgress& p) {
    const double rate = p.elapsed_s > 0 ? static_cast<double>(p.tokens) / p.elapsed_s : 0;
    std::cerr << absl::StrFormat(
                     "\r\033[K[%s] %d%s done, %d in flight, %d errors, %.1f tok/s, %.1f s", stage,
                     p.done, total ? absl::StrCat("/", *total) : "", p.in_flight, p.errors, rate,
                     p.elapsed_s)
              << std::flush;
  };
}

int Run(int argc, char** argv) {
  auto parsed = ParseBenchOptions(argc, argv);
  if (!parsed.ok()) return UsageError(parsed.status().message());
  const BenchOptions& o = *parsed;
  if (o.help) {
    std::cout << kBenchUsage;
    return 0;
  }
  std::vector<DatasetEntry> dataset;
  if (!o.dataset.empty()) {
    auto loaded = LoadDataset(o.dataset);
    if (!loaded.ok()) return UsageError(absl::StrCat("--dataset ", loaded.status().message()));
    dataset = *std::move(loaded);
  }
  auto channel = Connect(o.connection);
  if (!channel.ok()) return UsageError(channel.status().message());
  auto model = FetchModel(*channel, o.connection);
  if (!model.ok()) {
    std::cerr << "vaultgemma-bench: " << model.status().message() << "\n";
    return 3;
  }
  if (o.dataset.empty()) {
    if (model->vocab_size <= kFirstSyntheticTokenId) {
      std::cerr << "vaultgemma-bench: the model's vocabulary is too small for synthetic prompts\n";
      return 3;
    }
    if (static_cast<int64_t>(o.input_len.max) + o.output_len.max > model->context_length) {
      return UsageError(absl::StrCat("--input-len and --output-len: up to ", o.input_len.max, " + ",
                                     o.output_len.max, " tokens exceed the context of ",
                                     model->context_length));
    }
  }
  const Workload workload = o.dataset.empty() ? Workload::Synthetic(o, model->vocab_size)
                                              : Workload::FromDataset(o, std::move(dataset));
  std::signal(SIGINT, OnSigint);
  RunReport report;
  report.started_at = UtcNow();
  report.model = *model;
  report.options = o;
  LoadRunner runner(*channel, o.connection, o.deadline_s, &workload, Clock::now());

  if (o.warmup_requests > 0) {
    StageConfig warmup;
    warmup.value = std::min(o.warmup_requests, 4);
    warmup.num_requests = o.warmup_requests;
    warmup.first_request_index = uint64_t{1} << 62;  // apart from the measured requests
    const StageRun run =
        runner.RunStage(warmup, ProgressLine("warmup", o.warmup_requests), &g_interrupted);
    int64_t failed = 0;
    for (const RequestRecord& r : run.records) failed += r.completed() ? 0 : 1;
    if (isatty(STDERR_FILENO)) std::cerr << "\n";
    if (failed > 0) {
      std::cerr << "vaultgemma-bench: " << failed << " of " << run.records.size()
                << " warmup requests failed (first: " << run.records.front().status << ")\n";
    }
  }

  uint64_t next_index = 0;
  int64_t failed = 0;
  for (size_t i = 0; i < o.load_values.size() && !g_interrupted.load(); ++i) {
    StageConfig config;
    config.stage = static_cast<int>(i);
    config.kind = o.load_kind;
    config.value = o.load_values[i];
    config.max_concurrency = o.max_concurrency;
    config.num_requests = o.num_requests;
    config.duration_s = o.duration_s;
    config.first_request_index = next_index;
    config.arrival_seed = MixSeed(o.seed, 1000 + i);
    const std::string label = absl::StrFormat("stage %d/%d %s", i + 1, o.load_values.size(),
                                              StageLabel(o.load_kind, config.value));
    StageRun run = runner.RunStage(config, ProgressLine(label, o.num_requests), &g_interrupted);
    if (isatty(STDERR_FILENO)) std::cerr << "\n";
    next_index += static_cast<uint64_t>(run.launched);
    report.stages.push_back(ComputeStageStats(o.load_kind, config.value, run.duration_s,
                                              run.records, o.slo_ttft_s, o.slo_tpot_s));
    failed += report.stages.back().failed;
    std::sort(run.records.begin(), run.records.end(),
              [](const RequestRecord& a, const RequestRecord& b) { return a.index < b.index; });
    for (RequestRecord& r : run.records) report.records.push_back(std::move(r));
  }

  std::cout << FormatTable(report) << std::flush;
  if (!o.out_dir.empty()) {
    if (absl::Status s = WriteRunFiles(o.out_dir, report); !s.ok()) {
      std::cerr << "vaultgemma-bench: " << s.message() << "\n";
      return 4;
    }
    std::cout << "Wrote results.json, requests.csv and charts to " << o.out_dir << "\n";
  }
  if (g_interrupted.load()) return 130;
  return o.fail_on_error && failed > 0 ? 1 : 0;
}

}  // namespace
}  // namespace vg::client

int main(int argc, char** argv) { return vg::client::Run(argc, argv); }
