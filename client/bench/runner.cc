#include "client/bench/runner.h"

#include <algorithm>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "vaultgemma/v1/text_generation.grpc.pb.h"

namespace vg::client {

namespace pb = ::vaultgemma::v1;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

pb::GenerateRequest ToRequest(const RequestSpec& spec) {
  pb::GenerateRequest request;
  if (spec.from_text) {
    request.set_text(spec.prompt_text);
  } else {
    for (uint32_t id : spec.prompt_ids) request.mutable_token_ids()->add_ids(id);
  }
  request.mutable_stopping()->set_max_new_tokens(spec.max_new_tokens);
  request.mutable_stopping()->set_ignore_eos(true);
  request.set_cache_salt(spec.cache_salt);
  return request;
}

}  // namespace

// Shared by the dispatching thread and the calls' reactions.
class LoadRunner::StageState {
 public:
  std::mutex mu;
  std::condition_variable changed;  // a call ended
  // The contexts of the calls in flight, by request index: what a duration cut cancels. A shared
  // pointer so that TryCancel can run outside the lock on a context whose call just ended.
  std::unordered_map<uint64_t, std::shared_ptr<grpc::ClientContext>> in_flight;
  std::vector<RequestRecord> records;
  int64_t errors = 0;
  bool cutting = false;  // after the cut, CANCELLED means "cancelled by us at the end"
  Clock::time_point last_end;
  std::atomic<int64_t> tokens{0};

  void Finish(RequestRecord record, Clock::time_point end) {
    std::lock_guard<std::mutex> lock(mu);
    if (cutting && record.status == "CANCELLED") record.cancelled_at_end = true;
    if (!record.completed() && !record.cancelled_at_end) ++errors;
    in_flight.erase(record.index);
    last_end = std::max(last_end, end);
    records.push_back(std::move(record));
    // Under the lock: once in_flight is empty the dispatcher may return and destroy this object.
    changed.notify_all();
  }
};

// One Generate stream. Owns itself: deleted at the end of OnDone, gRPC's last reaction.
class LoadRunner::Call final : public grpc::ClientReadReactor<pb::GenerateResponse> {
 public:
  Call(StageState* state, RequestRecord record, const RequestSpec& spec,
       std::shared_ptr<grpc::ClientContext> context)
      : state_(state),
        record_(std::move(record)),
        request_(ToRequest(spec)),
        context_(std::move(context)) {}

  void Start(pb::TextGeneration::Stub* stub, Clock::time_point epoch) {
    start_ = Clock::now();
    record_.start_s = Seconds(start_ - epoch);
    stub->async()->Generate(context_.get(), &request_, this);
    StartRead(&response_);
    StartCall();
  }

  // The peer is read here, while it is known: a TryCancel at the stage's cut makes gRPC forget it
  // (CancelWithError clears the call's peer, even for a call that has already ended OK), and
  // context->peer() then answers the channel's target instead ("127.0.0.1:5000", not "ipv4:...").
  void OnReadInitialMetadataDone(bool ok) override {
    if (ok) peer_ = context_->peer();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows
    const Clock::time_point now = Clock::now();
    const int k = response_.token_ids_size();
    if (k > 0) {
      if (!record_.ttft_s.has_value()) {
        record_.ttft_s = Seconds(now - start_);
      } else {
        const double gap = Seconds(now - last_token_) / k;
        for (int i = 0; i < k; ++i) record_.itl_s.push_back(gap);
      }
      last_token_ = now;
      received_ += static_cast<uint32_t>(k);
      state_->tokens.fetch_add(k, std::memory_order_relaxed);
    }
    if (response_.prompt_token_ids_size() > 0) {
      record_.prompt_tokens = static_cast<uint32_t>(response_.prompt_token_ids_size());
    }
    if (response_.has_usage()) {
      has_usage_ = true;
      record_.prompt_tokens = response_.usage().prompt_tokens();
      record_.output_tokens = response_.usage().completion_tokens();
      record_.cached_prompt_tokens = response_.usage().cached_prompt_tokens();
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    const Clock::time_point end = Clock::now();
    record_.e2e_s = Seconds(end - start_);
    if (!has_usage_) record_.output_tokens = received_;
    record_.status = StatusCodeName(status.error_code());
    record_.error = status.error_message();
    // OnDone runs after every other reaction has returned, so peer_ is settled.
    record_.peer = peer_.empty() ? context_->peer() : std::move(peer_);
    state_->Finish(std::move(record_), end);
    delete this;
  }

 private:
  StageState* state_;
  RequestRecord record_;
  pb::GenerateRequest request_;
  pb::GenerateResponse response_;
  std::shared_ptr<grpc::ClientContext> context_;
  Clock::time_point start_;
  Clock::time_point last_token_;
  std::string peer_;  // from the response's initial metadata; empty if none came
  uint32_t received_ = 0;
  bool has_usage_ = false;
};

LoadRunner::LoadRunner(std::shared_ptr<grpc::Channel> channel, ConnectionOptions connection,
                       double deadline_s, const Workload* workload, Clock::time_point epoch)
    : channel_(std::move(channel)),
      connection_(std::move(connection)),
      deadline_s_(deadline_s),
      workload_(workload),
      epoch_(epoch) {}

StageRun LoadRunner::RunStage(const StageConfig& config,
                              const std::function<void(const StageProgress&)>& progress,
                              const std::atomic<bool>* interrupt) {
  StageState state;
  auto stub = pb::TextGeneration::NewStub(channel_);
  const Clock::time_point start = Clock::now();
  state.last_end = start;
  std::optional<Clock::time_point> cut_at;
  if (config.duration_s.has_value()) {
    cut_at = start + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(*config.duration_s));
  }
  const bool open_loop = config.kind == LoadKind::kRequestRate;
  const size_t limit =
      open_loop
          ? static_cast<size_t>(config.max_concurrency.value_or(std::numeric_limits<int>::max()))
          : static_cast<size_t>(config.value);
  PoissonArrivals arrivals(config.value, config.arrival_seed);
  Clock::time_point next_arrival = start;
  Clock::time_point next_progress = start;
  constexpr auto kProgressPeriod = std::chrono::milliseconds(250);
  int64_t launched = 0;
  std::optional<Clock::time_point> cut_time;

  std::unique_lock<std::mutex> lock(state.mu);
  // Called with the lock held; releases it around the callback.
  auto report = [&](Clock::time_point now, bool force = false) {
    if (!progress || (now < next_progress && !force)) return;
    next_progress = now + kProgressPeriod;
    StageProgress p{static_cast<int64_t>(state.records.size()),
                    static_cast<int64_t>(state.in_flight.size()), state.errors,
                    Seconds(now - start), state.tokens.load(std::memory_order_relaxed)};
    lock.unlock();
    progress(p);
    lock.lock();
  };

  while (true) {
    const Clock::time_point now = Clock::now();
    report(now);
    if ((interrupt != nullptr && interrupt->load()) || (cut_at.has_value() && now >= *cut_at)) {
      cut_time = now;
      break;
    }
    if (config.num_requests.has_value() && launched >= *config.num_requests) break;
    const bool arrived = !open_loop || now >= next_arrival;
    if (arrived && state.in_flight.size() < limit) {
      const uint64_t index = config.first_request_index + static_cast<uint64_t>(launched++);
      if (open_loop) {
        // Arrivals keep their schedule: one held back by the in-flight cap does not delay the next.
        next_arrival += std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(arrivals.NextGapSeconds()));
      }
      auto context = std::shared_ptr<grpc::ClientContext>(MakeContext(connection_, deadline_s_));
      state.in_flight.emplace(index, context);
      lock.unlock();
      RequestRecord record;
      record.stage = config.stage;
      record.index = index;
      auto* call = new Call(&state, std::move(record), workload_->Make(index), std::move(context));
      call->Start(stub.get(), epoch_);
      lock.lock();
      continue;
    }
    Clock::time_point wake = next_progress;
    if (progress == nullptr) wake = now + kProgressPeriod;  // still look at *interrupt
    if (cut_at.has_value()) wake = std::min(wake, *cut_at);
    if (!arrived) wake = std::min(wake, next_arrival);
    state.changed.wait_until(lock, wake);
  }

  if (cut_time.has_value()) {
    state.cutting = true;
    std::vector<std::shared_ptr<grpc::ClientContext>> contexts;
    for (const auto& entry : state.in_flight) contexts.push_back(entry.second);
    lock.unlock();
    // Outside the lock: a cancelled call may end (and take the lock) on this very thread.
    for (const auto& context : contexts) context->TryCancel();
    lock.lock();
  }
  while (!state.in_flight.empty()) {
    report(Clock::now());
    state.changed.wait_until(lock, Clock::now() + kProgressPeriod);
  }
  report(Clock::now(), /*force=*/true);  // the final count
  StageRun run;
  run.launched = launched;
  run.duration_s = Seconds((cut_time.has_value() ? *cut_time : state.last_end) - start);
  if (run.duration_s <= 0) run.duration_s = Seconds(Clock::now() - start);
  run.records = std::move(state.records);
  return run;
}

}  // namespace vg::client
