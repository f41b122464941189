// Metrics: the server's Prometheus metrics (all named vaultgemma_*, in base units) and the HTTP
// endpoint that serves them (GET /metrics, prometheus-cpp's civetweb Exposer).
//
// Three sources feed it. Each scrape (and a background thread, every 250 ms) reads
// engine::Engine::Stats(), sets the gauges (requests running/waiting, KV-cache usage) and advances
// the engine counters by the positive deltas of the cumulative stats
// (prompt/generation/prefix-cache tokens, preemptions, steps), so counters never decrease.
// TextGenerationService reports each request: its finish reason and timings (ObserveEngineFinish),
// gaps between streamed tokens (ObserveInterTokenGap) and each RPC's final gRPC code (ObserveRpc).
// The engine tells it about every step it runs (engine::StepObserver: the batch-size histograms).
// Labels never carry prompt or completion text.
//
// The endpoint starts before the model loads (so that it can also start before anything loads a
// CUDA library); until AttachEngine the engine gauges read 0.
//
// Thread-safety: every method may be called from any thread. The Exposer starts its own threads
// (TOOLCHAIN.md landmine 2: start metrics before loading a cuBLAS plugin).
#ifndef VG_SERVER_METRICS_H_
#define VG_SERVER_METRICS_H_

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/request.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace vg::server {

// The constant labels of vaultgemma_model_info.
struct ModelLabels {
  std::string model_id;  // the --model argument
  std::string dtype;     // e.g. "bfloat16"
  std::string device;    // e.g. "cpu"
  std::string version;   // kServerVersion
};

// "OK", "CANCELLED", "INVALID_ARGUMENT", ... (the names of grpc/status.h's codes).
std::string_view GrpcCodeName(grpc::StatusCode code);

class Metrics final : public engine::StepObserver {
 public:
  // Serves /metrics on `listen_address` ("0.0.0.0:9090", "127.0.0.1:9464"; port 0 is not
  // supported by the Exposer) and starts the refresh thread. UNAVAILABLE when the address cannot
  // be bound.
  static absl::StatusOr<std::unique_ptr<Metrics>> Start(const std::string& listen_address,
                                                        const ModelLabels& labels);
  ~Metrics();  // Stop(), then closes the endpoint

  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Joins the refresh thread (after one last refresh). Idempotent; /metrics keeps answering.
  void Stop();

  // The engine whose Stats() the gauges and counters follow; not owned. Null detaches it: call
  // AttachEngine(nullptr) before the engine is destroyed (no refresh touches it afterwards).
  void AttachEngine(engine::Engine* engine);

  // Reads the engine's Stats() now (the refresh thread does this every 250 ms).
  void Refresh();

  // engine::StepObserver: observes the step's batch size in sequences and in tokens.
  void OnStep(const engine::StepInfo& step) override;

  // The port the endpoint listens on.
  int port() const;

  // A request the engine finished (its final TokenEvent): counts the finish reason and observes
  // queue time and end-to-end latency, and time to first token when a token was generated.
  void ObserveEngineFinish(engine::FinishReason reason, const engine::RequestTimings& timings,
                           const engine::Usage& usage);
  // The wall-clock gap between two successive tokens as the server received them.
  void ObserveInterTokenGap(double seconds);
  // An RPC's final status; `method` is the short name ("Generate", "Tokenize", "GetModelInfo").
  void ObserveRpc(std::string_view method, grpc::StatusCode code);
  // Generate streams the server cancelled because their client stopped reading
  // (--stream-write-timeout).
  void ObserveStreamWriteTimeouts(int64_t streams);

 private:
  explicit Metrics(const ModelLabels& labels);
  void RefreshLoop();

  const std::shared_ptr<prometheus::Registry> registry_;

  prometheus::Gauge* requests_running_;
  prometheus::Gauge* requests_waiting_;
  prometheus::Gauge* kv_usage_ratio_;
  prometheus::Gauge* kv_blocks_used_;
  prometheus::Gauge* kv_blocks_cached_;
  prometheus::Gauge* kv_blocks_free_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Counter* prefix_cache_hit_tokens_;
  prometheus::Counter* preemptions_;
  prometheus::Counter* engine_steps_;
  prometheus::Counter* engine_step_seconds_;
  prometheus::Counter* stream_write_timeouts_;
  prometheus::Family<prometheus::Counter>* requests_total_;
  prometheus::Family<prometheus::Counter>* grpc_requests_total_;
  prometheus::Histogram* time_to_first_token_;
  prometheus::Histogram* inter_token_latency_;
  prometheus::Histogram* e2e_latency_;
  prometheus::Histogram* queue_time_;
  prometheus::Histogram* batch_sequences_;
  prometheus::Histogram* batch_tokens_;

  // std::mutex rather than absl::Mutex: see in_flight_calls.h.
  std::mutex refresh_mu_;
  engine::Engine* engine_ ABSL_GUARDED_BY(refresh_mu_) = nullptr;
  // The last Stats() the counters were advanced to.
  engine::EngineStats last_ ABSL_GUARDED_BY(refresh_mu_);

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread thread_;

  std::shared_ptr<prometheus::Collectable> collectable_;  // the registry, refreshed per scrape
  std::unique_ptr<prometheus::Exposer> exposer_;          // last: destroyed first, stops serving
};

}  // namespace vg::server

#endif  // VG_SERVER_METRICS_H_
