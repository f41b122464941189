// TextGenerationService: the vaultgemma.v1.TextGeneration gRPC service (callback API) over one
// engine::Engine.
//
// Generate validates the request (request_conversion.h), submits it and streams one
// GenerateResponse per engine event through a ServerWriteReactor. The engine's loop thread never
// blocks on a client: events are buffered in a state object shared by the reactor and the engine's
// sink, and the reactor writes them one at a time. The request id (the request's, or a generated
// "req-...") goes out in the initial metadata "x-request-id". Client cancellation, disconnection
// and deadlines cancel the engine request (Engine::Cancel); the engine frees its blocks at its next
// step. Statuses: those of ToEngineRequest and Engine::Submit, mapped by ToGrpcStatus; CANCELLED
// when the engine cancels the request (e.g. on shutdown); the engine's status for a backend error;
// the authorizer's (e.g. UNAUTHENTICATED) before any handler work; RESOURCE_EXHAUSTED past
// SetMaxStreams; UNAVAILABLE "the model is still loading" for every call until SetEngine;
// UNAVAILABLE "server is draining" for a Generate while draining. Every call, refused or not, is
// counted and access-logged, and counted as in flight until gRPC has finished it
// (WaitForNoCallsInFlight, for the shutdown).
//
// Thread-safety: all methods are called by gRPC on its threads; the service holds no mutable state
// but the engine pointer (set once), an atomic id counter, the draining flag, the in-flight and
// open-stream counts (SetAuthorizer and SetMaxStreams only before the server starts). The engine
// must outlive the server the service is registered with.
#ifndef VG_SERVER_TEXT_GENERATION_SERVICE_H_
#define VG_SERVER_TEXT_GENERATION_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "engine/engine.h"
#include "server/access_log.h"
#include "server/in_flight_calls.h"
#include "server/metrics.h"
#include "server/write_stall_watch.h"
#include "vaultgemma/v1/text_generation.grpc.pb.h"

namespace vg::server {

inline constexpr char kRequestIdMetadataKey[] = "x-request-id";
inline constexpr char kServerVersion[] = "0.1.0";
inline constexpr char kServiceName[] = "vaultgemma.v1.TextGeneration";

class TextGenerationService final : public vaultgemma::v1::TextGeneration::CallbackService {
 public:
  // `engine` is not owned and must outlive every RPC; null means the model is still loading
  // (SetEngine later). `model_id` is what GetModelInfo reports
  // (the --model argument); `device` e.g. "cpu". `metrics` and `access_log` are optional, not
  // owned, and must outlive every RPC: each finished RPC is counted
  // (vaultgemma_grpc_requests_total) and logged, and each generation observed (metrics.h).
  TextGenerationService(engine::Engine* engine, std::string model_id, std::string device = "cpu",
                        Metrics* metrics = nullptr, AccessLog* access_log = nullptr);

  // The loaded engine; from now on calls are served. Any thread, once.
  void SetEngine(engine::Engine* engine) { engine_.store(engine, std::memory_order_release); }

  // Checks every call before its handler runs (e.g. BearerTokenAuth::Check, auth.h); a non-OK
  // status ends the call with it. Null (the default) admits every call. Call before the server
  // starts; not thread-safe against running RPCs.
  using Authorizer = std::function<grpc::Status(const grpc::ServerContextBase&)>;
  void SetAuthorizer(Authorizer authorizer) { authorizer_ = std::move(authorizer); }

  // At most `max_streams` Generate streams at once (0, the default: no limit), each counted from
  // its handler until gRPC has finished the call, its last message to the client included; past
  // it a Generate is RESOURCE_EXHAUSTED at once. The engine bounds the requests it computes
  // (EngineOptions::max_waiting); this bounds what a server holds for clients that do not read
  // their streams (each stream buffers at most one context's events). Call before the server
  // starts.
  void SetMaxStreams(int64_t max_streams) { max_streams_ = max_streams; }

  // Cancels a Generate stream once one of its writes has waited `timeout` for the client to read
  // (write_stall_watch.h), freeing its place and its engine request. Zero (the default) never
  // does. Call before the server starts.
  void SetWriteStallTimeout(absl::Duration timeout);
  int64_t open_streams() const { return open_streams_.load(std::memory_order_relaxed); }

  // While draining, new Generate calls end at once with UNAVAILABLE "server is draining"; streams
  // already running are unaffected. Any thread.
  void SetDraining(bool draining) { draining_.store(draining, std::memory_order_relaxed); }
  bool draining() const { return draining_.load(std::memory_order_relaxed); }

  // Calls of this service whose handler has run and which gRPC has not finished yet (refused ones
  // included): once it is zero, every call's final status has been written to its connection.
  // WaitForNoCallsInFlight blocks until that is so (true) or `deadline` passes (false). Any thread.
  int64_t calls_in_flight() const { return calls_.count(); }
  bool WaitForNoCallsInFlight(absl::Time deadline) const { return calls_.WaitForNone(deadline); }

  grpc::ServerWriteReactor<vaultgemma::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context,
      const vaultgemma::v1::GenerateRequest* request) override;

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const vaultgemma::v1::TokenizeRequest* request,
                                     vaultgemma::v1::TokenizeResponse* response) override;

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const vaultgemma::v1::GetModelInfoRequest* request,
                                         vaultgemma::v1::ModelInfo* response) override;

 private:
  std::string NextRequestId();
  // Counts and logs a unary RPC, then finishes it.
  void FinishUnary(grpc::ServerUnaryReactor* reactor, const grpc::CallbackServerContext& context,
                   const char* method, std::chrono::steady_clock::time_point start,
                   grpc::Status status);
  // Counts the RPC in the metrics and writes its access-log line (no token counts).
  void ObserveAndLog(const grpc::CallbackServerContext& context, const char* method,
                     std::chrono::steady_clock::time_point start, grpc::StatusCode code,
                     std::string request_id);

  std::atomic<engine::Engine*> engine_;
  const std::string model_id_;
  const std::string device_;
  Metrics* const metrics_;       // optional
  AccessLog* const access_log_;  // optional
  const std::string id_prefix_;  // "req-<random hex>-", distinct per server process
  std::atomic<uint64_t> next_id_{1};
  Authorizer authorizer_;  // null: every call is admitted
  std::atomic<bool> draining_{false};
  InFlightCalls calls_;
  int64_t max_streams_ = 0;                       // 0: no limit
  std::atomic<int64_t> open_streams_{0};          // admitted Generate calls gRPC has not finished
  std::unique_ptr<WriteStallWatch> stall_watch_;  // null: no write timeout
};

}  // namespace vg::server

#endif  // VG_SERVER_TEXT_GENERATION_SERVICE_H_
