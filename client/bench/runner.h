// LoadRunner drives one stage of a vaultgemma-bench run against a server: it sends Generate calls
// shaped by the stage's load (closed-loop concurrency, or open-loop Poisson arrivals with an
// optional in-flight cap) and records each call's timings into a RequestRecord.
//
// Calls use gRPC's callback API: an in-flight request is a heap object (a ClientReadReactor), not a
// thread, so hundreds of concurrent streams cost memory only. The caller's thread dispatches (waits
// for the next arrival or a free slot) and refreshes the progress line; gRPC's own threads run the
// reactions. When a stage's --duration runs out, calls still in flight are cancelled (TryCancel)
// and recorded as cancelled_at_end, not as errors.
#ifndef VG_CLIENT_BENCH_RUNNER_H_
#define VG_CLIENT_BENCH_RUNNER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "client/bench/options.h"
#include "client/bench/stats.h"
#include "client/bench/workload.h"
#include "client/connection.h"
#include "grpcpp/grpcpp.h"

namespace vg::client {

struct StageConfig {
  int stage = 0;  // recorded in each RequestRecord
  LoadKind kind = LoadKind::kConcurrency;
  double value = 1;                    // concurrency, or requests/s (+inf: all at once)
  std::optional<int> max_concurrency;  // request-rate stages: arrivals wait for a free slot
  std::optional<int64_t> num_requests;
  std::optional<double> duration_s;
  uint64_t first_request_index = 0;  // the workload index of the stage's first request
  uint64_t arrival_seed = 0;
};

// What the progress line shows; passed to the progress callback about every 250 ms.
struct StageProgress {
  int64_t done = 0;  // finished calls, any status
  int64_t in_flight = 0;
  int64_t errors = 0;  // finished with a status other than OK (cancellations at end excluded)
  double elapsed_s = 0;
  int64_t tokens = 0;  // output tokens received so far, in-flight calls included
};

struct StageRun {
  std::vector<RequestRecord> records;  // in completion order
  double duration_s = 0;               // to the last call's end, or to the --duration cut
  int64_t launched = 0;
};

class LoadRunner {
 public:
  // `channel` and `workload` must outlive the runner. `epoch` is the run's time zero
  // (RequestRecord::start_s counts from it).
  LoadRunner(std::shared_ptr<grpc::Channel> channel, ConnectionOptions connection,
             double deadline_s, const Workload* workload,
             std::chrono::steady_clock::time_point epoch);

  // Runs one stage to its end: every call it started has finished when it returns. Thread-
  // compatible (one stage at a time). `progress` may be empty. Setting `*interrupt` (e.g. from a
  // SIGINT handler) ends the stage as if its duration ran out.
  StageRun RunStage(const StageConfig& config,
                    const std::function<void(const StageProgress&)>& progress,
                    const std::atomic<bool>* interrupt);

 private:
  class Call;
  class StageState;

  std::shared_ptr<grpc::Channel> channel_;
  ConnectionOptions connection_;
  double deadline_s_;
  const Workload* workload_;
  std::chrono::steady_clock::time_point epoch_;
};

}  // namespace vg::client

#endif  // VG_CLIENT_BENCH_RUNNER_H_
