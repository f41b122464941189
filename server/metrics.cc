#include "server/metrics.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace vg::server {
namespace {

// From 0.5 ms (a fast GPU decode step) to 2.5 s (a slow CPU step); shared by the latency
// histograms measured per token.
const prometheus::Histogram::BucketBoundaries& TokenLatencyBuckets() {
  static const auto* const kBuckets = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
  return *kBuckets;
}

// Whole-request latencies: up to minutes on a CPU.
const prometheus::Histogram::BucketBoundaries& RequestLatencyBuckets() {
  static const auto* const kBuckets = new prometheus::Histogram::BucketBoundaries{
      0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320};
  return *kBuckets;
}

// Powers of two up to 4096: sequences per step (at most --max-num-seqs) and tokens per step (at
// most --max-batched-tokens).
const prometheus::Histogram::BucketBoundaries& BatchBuckets() {
  static const auto* const kBuckets = new prometheus::Histogram::BucketBoundaries{
      1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
  return *kBuckets;
}

prometheus::Gauge* AddGauge(prometheus::Registry& registry, const std::string& name,
                            const std::string& help, const prometheus::Labels& labels = {}) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add(labels);
}

prometheus::Counter* AddCounter(prometheus::Registry& registry, const std::string& name,
                                const std::string& help) {
  return &prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add({});
}

prometheus::Histogram* AddHistogram(prometheus::Registry& registry, const std::string& name,
                                    const std::string& help,
                                    const prometheus::Histogram::BucketBoundaries& buckets) {
  return &prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add({}, buckets);
}

// Advances a counter to a cumulative value; a smaller value (never expected) is ignored.
template <typename T>
void AdvanceCounter(prometheus::Counter* counter, T now, T last) {
  if (now > last) counter->Increment(static_cast<double>(now - last));
}

// What the Exposer serves: the registry, refreshed from the engine first, so that a scrape never
// shows counters up to 250 ms behind the requests it already counted.
class RefreshingCollectable final : public prometheus::Collectable {
 public:
  RefreshingCollectable(Metrics* metrics, std::shared_ptr<prometheus::Registry> registry)
      : metrics_(metrics), registry_(std::move(registry)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    metrics_->Refresh();
    return registry_->Collect();
  }

 private:
  Metrics* const metrics_;
  const std::shared_ptr<prometheus::Registry> registry_;
};

}  // namespace

std::string_view GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Start(const std::string& listen_address,
                                                        const ModelLabels& labels) {
  std::unique_ptr<Metrics> metrics(new Metrics(labels));
  try {
    // One worker thread is plenty for a scraper or two.
    metrics->exposer_ = std::make_unique<prometheus::Exposer>(listen_address, 1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", listen_address, ": ", e.what()));
  }
  metrics->collectable_ =
      std::make_shared<RefreshingCollectable>(metrics.get(), metrics->registry_);
  metrics->exposer_->RegisterCollectable(metrics->collectable_);
  metrics->Refresh();
  metrics->thread_ = std::thread([m = metrics.get()] { m->RefreshLoop(); });
  return metrics;
}

Metrics::Metrics(const ModelLabels& labels) : registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  requests_running_ =
      AddGauge(r, "vaultgemma_requests_running", "Requests in the engine's running batch.");
  requests_waiting_ =
      AddGauge(r, "vaultgemma_requests_waiting", "Requests admitted and waiting to be scheduled.");
  kv_usage_ratio_ = AddGauge(r, "vaultgemma_kv_cache_usage_ratio",
                             "KV-cache blocks referenced by live sequences / all blocks (0..1).");
  auto& blocks = prometheus::BuildGauge()
                     .Name("vaultgemma_kv_cache_blocks")
                     .Help(
                         "KV-cache blocks by state: used by live sequences, cached (free but "
                         "holding reusable prefix blocks), free.")
                     .Register(r);
  kv_blocks_used_ = &blocks.Add({{"state", "used"}});
  kv_blocks_cached_ = &blocks.Add({{"state", "cached"}});
  kv_blocks_free_ = &blocks.Add({{"state", "free"}});
  AddGauge(r, "vaultgemma_model_info", "The served model; always 1.",
           {{"model_id", labels.model_id},
            {"dtype", labels.dtype},
            {"device", labels.device},
            {"version", labels.version}})
      ->Set(1);

  prompt_tokens_ = AddCounter(r, "vaultgemma_prompt_tokens_total",
                              "Prompt tokens computed (recomputation after preemption included).");
  generation_tokens_ = AddCounter(r, "vaultgemma_generation_tokens_total", "Tokens generated.");
  prefix_cache_hit_tokens_ = AddCounter(r, "vaultgemma_prefix_cache_hit_tokens_total",
                                        "Prompt tokens whose KV came from the prefix cache.");
  preemptions_ =
      AddCounter(r, "vaultgemma_preemptions_total", "Sequences preempted to free KV-cache blocks.");
  engine_steps_ = AddCounter(r, "vaultgemma_engine_steps_total", "Engine steps (forward passes).");
  engine_step_seconds_ = AddCounter(r, "vaultgemma_engine_step_seconds_total",
                                    "Time spent in engine steps, in seconds.");
  stream_write_timeouts_ = AddCounter(
      r, "vaultgemma_stream_write_timeouts_total",
      "Generate streams cancelled by the server because their client stopped reading for "
      "--stream-write-timeout.");

  requests_total_ = &prometheus::BuildCounter()
                         .Name("vaultgemma_requests_total")
                         .Help("Generation requests the engine finished, by finish reason.")
                         .Register(r);
  for (engine::FinishReason reason :
       {engine::FinishReason::kLength, engine::FinishReason::kEos, engine::FinishReason::kStopToken,
        engine::FinishReason::kStopSequence, engine::FinishReason::kCancelled,
        engine::FinishReason::kError}) {
    requests_total_->Add({{"finish_reason", std::string(engine::FinishReasonName(reason))}});
  }
  grpc_requests_total_ = &prometheus::BuildCounter()
                              .Name("vaultgemma_grpc_requests_total")
                              .Help("Finished RPCs by method and gRPC status code.")
                              .Register(r);

  time_to_first_token_ =
      AddHistogram(r, "vaultgemma_time_to_first_token_seconds",
                   "From submission to the first generated token.", TokenLatencyBuckets());
  inter_token_latency_ =
      AddHistogram(r, "vaultgemma_inter_token_latency_seconds",
                   "Wall-clock gap between successive tokens of a stream, as the server "
                   "received them.",
                   TokenLatencyBuckets());
  e2e_latency_ =
      AddHistogram(r, "vaultgemma_e2e_request_latency_seconds",
                   "From submission to the request's end in the engine.", RequestLatencyBuckets());
  queue_time_ =
      AddHistogram(r, "vaultgemma_request_queue_time_seconds",
                   "From submission to the request's first engine step.", RequestLatencyBuckets());
  batch_sequences_ = AddHistogram(r, "vaultgemma_batch_size_sequences",
                                  "Sequences in each engine step's batch.", BatchBuckets());
  batch_tokens_ = AddHistogram(
      r, "vaultgemma_batch_size_tokens",
      "Tokens computed in each engine step (prompt chunks plus one per decode).", BatchBuckets());
}

void Metrics::AttachEngine(engine::Engine* engine) {
  {
    std::lock_guard<std::mutex> lock(refresh_mu_);
    engine_ = engine;
  }
  Refresh();
}

void Metrics::OnStep(const engine::StepInfo& step) {
  batch_sequences_->Observe(step.num_sequences);
  batch_tokens_->Observe(step.num_tokens);
}

Metrics::~Metrics() { Stop(); }

void Metrics::Stop() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    if (stop_) return;
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  Refresh();
}

void Metrics::RefreshLoop() {
  std::unique_lock<std::mutex> lock(stop_mu_);
  while (!stop_cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return stop_; })) {
    lock.unlock();
    Refresh();
    lock.lock();
  }
}

void Metrics::Refresh() {
  std::lock_guard<std::mutex> lock(refresh_mu_);
  if (engine_ == nullptr) return;
  const engine::EngineStats stats = engine_->Stats();
  requests_running_->Set(stats.running);
  requests_waiting_->Set(stats.waiting);
  const int32_t free_blocks =
      std::max(0, stats.kv_blocks_total - stats.kv_blocks_used - stats.kv_blocks_cached);
  kv_blocks_used_->Set(stats.kv_blocks_used);
  kv_blocks_cached_->Set(stats.kv_blocks_cached);
  kv_blocks_free_->Set(free_blocks);
  kv_usage_ratio_->Set(stats.kv_blocks_total > 0
                           ? static_cast<double>(stats.kv_blocks_used) / stats.kv_blocks_total
                           : 0.0);
  AdvanceCounter(prompt_tokens_, stats.prompt_tokens_processed, last_.prompt_tokens_processed);
  AdvanceCounter(generation_tokens_, stats.generation_tokens, last_.generation_tokens);
  AdvanceCounter(prefix_cache_hit_tokens_, stats.cached_prompt_tokens, last_.cached_prompt_tokens);
  AdvanceCounter(preemptions_, stats.preemptions, last_.preemptions);
  AdvanceCounter(engine_steps_, stats.steps, last_.steps);
  AdvanceCounter(engine_step_seconds_, stats.total_step_seconds, last_.total_step_seconds);
  // Keep the maxima, so that a stat that ever went backwards cannot be counted twice.
  last_.prompt_tokens_processed =
      std::max(last_.prompt_tokens_processed, stats.prompt_tokens_processed);
  last_.generation_tokens = std::max(last_.generation_tokens, stats.generation_tokens);
  last_.cached_prompt_tokens = std::max(last_.cached_prompt_tokens, stats.cached_prompt_tokens);
  last_.preemptions = std::max(last_.preemptions, stats.preemptions);
  last_.steps = std::max(last_.steps, stats.steps);
  last_.total_step_seconds = std::max(last_.total_step_seconds, stats.total_step_seconds);
}

int Metrics::port() const {
  const std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void Metrics::ObserveEngineFinish(engine::FinishReason reason,
                                  const engine::RequestTimings& timings,
                                  const engine::Usage& usage) {
  requests_total_->Add({{"finish_reason", std::string(engine::FinishReasonName(reason))}})
      .Increment();
  e2e_latency_->Observe(timings.total_seconds);
  queue_time_->Observe(timings.queue_seconds);
  if (usage.completion_tokens > 0) {
    time_to_first_token_->Observe(timings.time_to_first_token_seconds);
  }
}

void Metrics::ObserveInterTokenGap(double seconds) { inter_token_latency_->Observe(seconds); }

void Metrics::ObserveStreamWriteTimeouts(int64_t streams) {
  stream_write_timeouts_->Increment(static_cast<double>(streams));
}

void Metrics::ObserveRpc(std::string_view method, grpc::StatusCode code) {
  grpc_requests_total_
      ->Add({{"method", std::string(method)}, {"code", std::string(GrpcCodeName(code))}})
      .Increment();
}

}  // namespace vg::server
