#include "server/text_generation_service.h"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/model/dtype.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/access_log.h"
#include "server/grpc_handoff.h"
#include "server/in_flight_calls.h"
#include "server/metrics.h"
#include "server/request_conversion.h"
#include "server/status_mapping.h"
#include "server/write_stall_watch.h"

namespace vg::server {
namespace {

namespace pb = ::vaultgemma::v1;

class GenerateReactor;

// Shared by a GenerateReactor and the engine's sink for its request. The engine may hold the sink
// (and so this state) after the reactor is gone; `reactor` is then null and events are dropped.
//
// Ownership of gRPC operations: a thread may call StartWrite or Finish on the reactor only after
// claiming the operation under `mu` (writing / finish_called). Finish is claimed only while no
// write is in flight, and OnDone (which deletes the reactor) follows Finish and the completion of
// every operation, so the reactor outlives every claimed call.
struct StreamState final : StallWatched {
  StreamState(Metrics* m, AccessLog* log) : metrics(m), access_log(log) {}
  // The access-log line is written when both the RPC and the engine are done with the request,
  // so that it has the gRPC code and the engine's usage even when the client left first.
  ~StreamState() {
    if (access_log != nullptr) access_log->Write(record);
  }

  Metrics* const metrics;       // optional
  AccessLog* const access_log;  // optional
  std::mutex mu;                // not absl::Mutex: see in_flight_calls.h
  GenerateReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
  std::deque<engine::TokenEvent> pending ABSL_GUARDED_BY(mu);
  bool writing ABSL_GUARDED_BY(mu) = false;
  bool finish_after_write ABSL_GUARDED_BY(mu) = false;
  bool finish_called ABSL_GUARDED_BY(mu) = false;
  bool broken ABSL_GUARDED_BY(mu) = false;  // cancelled, deadline, or a write failed
  bool first_message ABSL_GUARDED_BY(mu) = true;
  bool engine_done ABSL_GUARDED_BY(mu) = false;  // the engine sent its final event
  std::vector<int32_t> prompt_token_ids ABSL_GUARDED_BY(mu);
  // When the sink last received a token (engine thread only), for inter-token latency.
  std::optional<std::chrono::steady_clock::time_point> last_token_time ABSL_GUARDED_BY(mu);
  AccessRecord record ABSL_GUARDED_BY(mu);
  // For WriteStallWatch: the call's context (valid while `reactor` is set), when the write in
  // flight began, and the thread cancelling the call (OnDone waits for it; see CancelIfStalled).
  grpc::CallbackServerContext* context ABSL_GUARDED_BY(mu) = nullptr;
  std::chrono::steady_clock::time_point write_started ABSL_GUARDED_BY(mu);
  std::thread::id canceller ABSL_GUARDED_BY(mu);
  std::condition_variable cancelled;

  // Starts the next write or the Finish, if one is due and none is in flight. Any thread.
  void Pump();

  bool CancelIfStalled(std::chrono::steady_clock::time_point now,
                       std::chrono::steady_clock::duration timeout) override {
    grpc::CallbackServerContext* call = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (reactor == nullptr || !writing || now - write_started < timeout) return false;
      broken = true;
      call = context;
      canceller = std::this_thread::get_id();
    }
    // Outside the lock: gRPC may run the call's reactions (OnCancel, OnWriteDone, even OnDone)
    // on this thread. Until `canceller` is cleared, OnDone on another thread waits, so the
    // context outlives this call.
    call->TryCancel();
    {
      std::lock_guard<std::mutex> lock(mu);
      canceller = std::thread::id();
    }
    cancelled.notify_all();
    return true;
  }
};

class StreamSink final : public engine::TokenSink {
 public:
  explicit StreamSink(std::shared_ptr<StreamState> state) : state_(std::move(state)) {}

  // Engine loop thread: only buffers, then lets Pump issue a write (StartWrite never blocks).
  void OnEvent(engine::TokenEvent event) override {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      Observe(event);
      if (event.finished) state_->engine_done = true;
      if (state_->reactor == nullptr || state_->finish_called) return;
      state_->pending.push_back(std::move(event));
    }
    state_->Pump();
  }

 private:
  void Observe(const engine::TokenEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->mu) {
    StreamState& s = *state_;
    if (!event.token_ids.empty()) {
      const auto now = std::chrono::steady_clock::now();
      // An event normally carries one token; a gap shared by several is split evenly.
      if (s.metrics != nullptr && s.last_token_time.has_value()) {
        const double gap = std::chrono::duration<double>(now - *s.last_token_time).count() /
                           static_cast<double>(event.token_ids.size());
        for (size_t i = 0; i < event.token_ids.size(); ++i) s.metrics->ObserveInterTokenGap(gap);
      }
      s.last_token_time = now;
    }
    if (!event.finished) return;
    if (s.metrics != nullptr) {
      s.metrics->ObserveEngineFinish(event.finish_reason, event.timings, event.usage);
    }
    s.record.prompt_tokens = event.usage.prompt_tokens;
    s.record.completion_tokens = event.usage.completion_tokens;
    s.record.cached_tokens = event.usage.cached_prompt_tokens;
    s.record.finish_reason = std::string(engine::FinishReasonName(event.finish_reason));
    if (event.usage.completion_tokens > 0) {
      s.record.time_to_first_token_seconds = event.timings.time_to_first_token_seconds;
    }
  }

  std::shared_ptr<StreamState> state_;
};

class GenerateReactor final : public grpc::ServerWriteReactor<pb::GenerateResponse> {
 public:
  // `calls` has had Begin for this call and `open_streams` counts it; OnDone ends both.
  // `stall_watch` (optional) watches the stream's writes.
  GenerateReactor(engine::Engine* engine, Metrics* metrics, AccessLog* access_log,
                  InFlightCalls* calls, std::atomic<int64_t>* open_streams,
                  WriteStallWatch* stall_watch, grpc::CallbackServerContext* context,
                  const pb::GenerateRequest& request, std::string request_id)
      : engine_(engine),
        metrics_(metrics),
        calls_(calls),
        open_streams_(open_streams),
        state_(std::make_shared<StreamState>(metrics, access_log)),
        request_id_(request_id) {
    absl::Status valid_id = ValidateRequestId(request_id_);
    if (access_log != nullptr) {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->record.method = "Generate";
      state_->record.peer = context->peer();
      // An invalid id is not logged either: it could be anything.
      if (valid_id.ok()) state_->record.request_id = request_id_;
    }
    // An invalid client id is not echoed: it may not be a legal metadata value.
    if (!valid_id.ok()) {
      final_status_ = ToGrpcStatus(valid_id);
      ReleaseToGrpc(this);
      Finish(final_status_);
      return;
    }
    context->AddInitialMetadata(kRequestIdMetadataKey, request_id_);
    auto converted =
        ToEngineRequest(request, engine->config(), engine->tokenizer(), std::move(request_id));
    if (!converted.ok()) {
      final_status_ = ToGrpcStatus(converted.status());
      ReleaseToGrpc(this);
      Finish(final_status_);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->reactor = this;
      state_->context = context;
      state_->prompt_token_ids = converted->prompt_token_ids;
    }
    if (stall_watch != nullptr) stall_watch->Watch(state_);
    // Before Submit: once submitted, the engine thread may start the first write at any time.
    ReleaseToGrpc(this);
    StartSendInitialMetadata();
    absl::Status submitted =
        engine->Submit(*std::move(converted), std::make_shared<StreamSink>(state_));
    if (!submitted.ok()) {
      {
        std::lock_guard<std::mutex> lock(state_->mu);
        state_->finish_called = true;
      }
      final_status_ = ToGrpcStatus(submitted);
      ReleaseToGrpc(this);
      Finish(final_status_);
      return;
    }
    submitted_ = true;
    ReleaseToGrpc(this);  // the handler returns the reactor to gRPC
  }

  // Called by StreamState::Pump with the lock held: claims the next operation.
  enum class Action { kNone, kWrite, kFinish };
  Action NextActionLocked(StreamState& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    if (s.finish_called || s.writing) return Action::kNone;
    if (s.broken) {
      return ClaimFinish(s, grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled"));
    }
    if (s.finish_after_write) return ClaimFinish(s, grpc::Status::OK);
    if (s.pending.empty()) return Action::kNone;
    engine::TokenEvent event = std::move(s.pending.front());
    s.pending.pop_front();
    if (event.finished && event.finish_reason == engine::FinishReason::kError) {
      absl::Status status =
          event.status.ok() ? absl::InternalError("the engine failed") : event.status;
      return ClaimFinish(s, ToGrpcStatus(status));
    }
    if (event.finished && event.finish_reason == engine::FinishReason::kCancelled) {
      return ClaimFinish(s, grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled"));
    }
    response_ = ToResponse(event);
    if (s.first_message) {
      s.first_message = false;
      for (int32_t id : s.prompt_token_ids) response_.add_prompt_token_ids(id);
    }
    s.finish_after_write = event.finished;
    s.writing = true;
    s.write_started = std::chrono::steady_clock::now();
    return Action::kWrite;
  }

  void Write() {
    ReleaseToGrpc(this);
    StartWrite(&response_);
  }
  void FinishClaimed() {
    ReleaseToGrpc(this);
    Finish(final_status_);
  }

  void OnWriteDone(bool ok) override {
    AcquireFromGrpc(this);
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->writing = false;
      if (!ok) state_->broken = true;
    }
    state_->Pump();
  }

  // Client cancellation, disconnection or deadline.
  void OnCancel() override {
    AcquireFromGrpc(this);
    bool cancel_engine = false;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->broken = true;
      // A finished id may already belong to a new request; cancel only our own live one.
      cancel_engine = submitted_ && !state_->engine_done;
    }
    if (cancel_engine) engine_->Cancel(request_id_);
    state_->Pump();
  }

  // Every operation has completed, so final_status_ is the RPC's status, written to the connection.
  void OnDone() override {
    AcquireFromGrpc(this);
    if (metrics_ != nullptr) metrics_->ObserveRpc("Generate", final_status_.error_code());
    {
      std::unique_lock<std::mutex> lock(state_->mu);
      // The stall watch may be cancelling this call with its context; gRPC frees the context when
      // OnDone returns. (If the watch's thread runs this OnDone itself, it is done with it.)
      state_->cancelled.wait(lock, [this] {
        return state_->canceller == std::thread::id() ||
               state_->canceller == std::this_thread::get_id();
      });
      state_->reactor = nullptr;
      state_->context = nullptr;
      state_->pending.clear();
      state_->record.time = absl::Now();
      state_->record.code = final_status_.error_code();
      state_->record.e2e_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }
    InFlightCalls* const calls = calls_;
    open_streams_->fetch_sub(1, std::memory_order_relaxed);
    delete this;
    calls->End();
  }

 private:
  Action ClaimFinish(StreamState& s, grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    s.finish_called = true;
    final_status_ = std::move(status);
    return Action::kFinish;
  }

  engine::Engine* const engine_;
  Metrics* const metrics_;  // optional
  InFlightCalls* const calls_;
  std::atomic<int64_t>* const open_streams_;
  const std::shared_ptr<StreamState> state_;
  const std::string request_id_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  bool submitted_ = false;         // written in the constructor only
  pb::GenerateResponse response_;  // the message in flight; touched only by the write's claimant
  grpc::Status final_status_;      // touched only by the Finish claimant (or the constructor)
};

void StreamState::Pump() {
  GenerateReactor* r = nullptr;
  GenerateReactor::Action action = GenerateReactor::Action::kNone;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (reactor == nullptr) return;
    r = reactor;
    action = r->NextActionLocked(*this);
  }
  // Outside the lock: gRPC may run reactions inline, and they take the lock.
  if (action == GenerateReactor::Action::kWrite) r->Write();
  if (action == GenerateReactor::Action::kFinish) r->FinishClaimed();
}

std::string RandomHex() {
  std::random_device device;
  char buffer[17];
  std::snprintf(buffer, sizeof(buffer), "%08x%08x", device(), device());
  return buffer;
}

grpc::Status LoadingStatus() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is still loading");
}

// A Generate refused before it reaches the engine (unauthenticated, loading, draining): finishes
// at once. `calls` has had Begin for this call; OnDone ends it.
class RejectedGenerate final : public grpc::ServerWriteReactor<pb::GenerateResponse> {
 public:
  RejectedGenerate(InFlightCalls* calls, grpc::Status status) : calls_(calls) {
    ReleaseToGrpc(this);
    Finish(std::move(status));
  }
  void OnDone() override {
    AcquireFromGrpc(this);
    InFlightCalls* const calls = calls_;
    delete this;
    calls->End();
  }

 private:
  InFlightCalls* const calls_;
};

// The reactor of a unary call (what CallbackServerContext::DefaultReactor gives, plus the end of
// the call in `calls`, which has had Begin for it).
class UnaryReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit UnaryReactor(InFlightCalls* calls) : calls_(calls) {}
  void OnDone() override {
    AcquireFromGrpc(this);
    InFlightCalls* const calls = calls_;
    delete this;
    calls->End();
  }

 private:
  InFlightCalls* const calls_;
};

}  // namespace

TextGenerationService::TextGenerationService(engine::Engine* engine, std::string model_id,
                                             std::string device, Metrics* metrics,
                                             AccessLog* access_log)
    : engine_(engine),
      model_id_(std::move(model_id)),
      device_(std::move(device)),
      metrics_(metrics),
      access_log_(access_log),
      id_prefix_(absl::StrCat("req-", RandomHex(), "-")) {}

void TextGenerationService::SetWriteStallTimeout(absl::Duration timeout) {
  stall_watch_.reset();
  if (timeout > absl::ZeroDuration()) {
    Metrics* const metrics = metrics_;
    stall_watch_ = std::make_unique<WriteStallWatch>(
        absl::ToChronoNanoseconds(timeout), [metrics](int64_t streams) {
          if (metrics != nullptr) metrics->ObserveStreamWriteTimeouts(streams);
        });
  }
}

std::string TextGenerationService::NextRequestId() {
  return absl::StrCat(id_prefix_, next_id_.fetch_add(1, std::memory_order_relaxed));
}

grpc::ServerWriteReactor<pb::GenerateResponse>* TextGenerationService::Generate(
    grpc::CallbackServerContext* context, const pb::GenerateRequest* request) {
  const auto start = std::chrono::steady_clock::now();
  calls_.Begin();  // ended by the reactor's OnDone
  engine::Engine* const engine = engine_.load(std::memory_order_acquire);
  grpc::Status rejected = authorizer_ ? authorizer_(*context) : grpc::Status::OK;
  if (rejected.ok() && engine == nullptr) rejected = LoadingStatus();
  if (rejected.ok() && draining()) {
    rejected = grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is draining");
  }
  // Counted until OnDone: a stream whose client does not read keeps its place (and its buffered
  // events) until the client reads, cancels or goes away.
  if (rejected.ok() && open_streams_.fetch_add(1, std::memory_order_relaxed) >= max_streams_ &&
      max_streams_ > 0) {
    open_streams_.fetch_sub(1, std::memory_order_relaxed);  // not admitted: no OnDone for it
    rejected = grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("the queue is full (", max_streams_,
                     " streams open, counting those still being sent to their clients)"));
  }
  if (!rejected.ok()) {
    // The client's id is logged only when valid (it could be anything); none is made up.
    const std::string& id = request->request_id();
    ObserveAndLog(*context, "Generate", start, rejected.error_code(),
                  ValidateRequestId(id).ok() ? id : std::string());
    return new RejectedGenerate(&calls_, std::move(rejected));
  }
  std::string id = request->request_id();
  if (id.empty()) id = NextRequestId();
  return new GenerateReactor(engine, metrics_, access_log_, &calls_, &open_streams_,
                             stall_watch_.get(), context, *request, std::move(id));
}

grpc::ServerUnaryReactor* TextGenerationService::Tokenize(grpc::CallbackServerContext* context,
                                                          const pb::TokenizeRequest* request,
                                                          pb::TokenizeResponse* response) {
  const auto start = std::chrono::steady_clock::now();
  calls_.Begin();  // ended by the reactor's OnDone
  grpc::ServerUnaryReactor* reactor = new UnaryReactor(&calls_);
  engine::Engine* const engine = engine_.load(std::memory_order_acquire);
  grpc::Status denied = authorizer_ ? authorizer_(*context) : grpc::Status::OK;
  if (denied.ok() && engine == nullptr) denied = LoadingStatus();
  if (!denied.ok()) {
    FinishUnary(reactor, *context, "Tokenize", start, std::move(denied));
    return reactor;
  }
  if (!IsValidUtf8(request->text())) {
    FinishUnary(reactor, *context, "Tokenize", start,
                ToGrpcStatus(absl::InvalidArgumentError("text is not valid UTF-8")));
    return reactor;
  }
  const engine::Tokenizer& tokenizer = engine->tokenizer();
  std::vector<int32_t> ids;
  if (request->add_bos()) ids.push_back(static_cast<int32_t>(engine->config().bos_token_id));
  const std::vector<int32_t> text_ids = tokenizer.Encode(request->text(), /*add_bos=*/false);
  ids.insert(ids.end(), text_ids.begin(), text_ids.end());
  for (int32_t id : ids) {
    response->add_token_ids(static_cast<uint32_t>(id));
    response->add_pieces(std::string(tokenizer.IdToPiece(id)));
  }
  FinishUnary(reactor, *context, "Tokenize", start, grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* TextGenerationService::GetModelInfo(
    grpc::CallbackServerContext* context, const pb::GetModelInfoRequest* request,
    pb::ModelInfo* response) {
  const auto start = std::chrono::steady_clock::now();
  calls_.Begin();  // ended by the reactor's OnDone
  grpc::ServerUnaryReactor* reactor = new UnaryReactor(&calls_);
  engine::Engine* const engine = engine_.load(std::memory_order_acquire);
  grpc::Status denied = authorizer_ ? authorizer_(*context) : grpc::Status::OK;
  if (denied.ok() && engine == nullptr) denied = LoadingStatus();
  if (!denied.ok()) {
    FinishUnary(reactor, *context, "GetModelInfo", start, std::move(denied));
    return reactor;
  }
  const engine::ModelConfig& config = engine->config();
  response->set_model_id(model_id_);
  response->set_architecture("VaultGemmaForCausalLM");
  response->set_dtype(config.torch_dtype.has_value()
                          ? std::string(engine::TorchDTypeName(*config.torch_dtype))
                          : "unknown");
  response->set_context_length(static_cast<uint32_t>(config.max_position_embeddings));
  response->set_vocab_size(static_cast<uint32_t>(config.vocab_size));
  response->set_device(device_);
  response->set_server_version(kServerVersion);
  FinishUnary(reactor, *context, "GetModelInfo", start, grpc::Status::OK);
  return reactor;
}

void TextGenerationService::FinishUnary(grpc::ServerUnaryReactor* reactor,
                                        const grpc::CallbackServerContext& context,
                                        const char* method,
                                        std::chrono::steady_clock::time_point start,
                                        grpc::Status status) {
  ObserveAndLog(context, method, start, status.error_code(), /*request_id=*/"");
  ReleaseToGrpc(reactor);
  reactor->Finish(std::move(status));
}

void TextGenerationService::ObserveAndLog(const grpc::CallbackServerContext& context,
                                          const char* method,
                                          std::chrono::steady_clock::time_point start,
                                          grpc::StatusCode code, std::string request_id) {
  if (metrics_ != nullptr) metrics_->ObserveRpc(method, code);
  if (access_log_ != nullptr) {
    AccessRecord record;
    record.time = absl::Now();
    record.request_id = std::move(request_id);
    record.method = method;
    record.code = code;
    record.e2e_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    record.peer = context.peer();
    access_log_->Write(record);
  }
}

}  // namespace vg::server
