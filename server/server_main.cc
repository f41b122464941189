// vaultgemma-server: serves vaultgemma.v1.TextGeneration, grpc.health.v1.Health and server
// reflection over one CPU engine. Exit codes: 0 after SIGINT/SIGTERM, 2 bad usage or bad model
// (one line on stderr), 1 anything else. Never logs prompt or completion text.
#include <arpa/inet.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <future>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/backend/cuda_plugin_loader.h"
#include "engine/engine.h"
#include "engine/model/dtype.h"
#include "engine/model/model_path.h"
#include "engine/runner/command_line.h"
#include "server/access_log.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/text_generation_service.h"
#include "server/tls.h"

namespace vg::server {
namespace {

constexpr char kUsage[] = R"(usage: vaultgemma-server --model DIR_OR_ID [options]

Serves VaultGemma over gRPC (vaultgemma.v1.TextGeneration, grpc.health.v1.Health, reflection).

  --model DIR|ORG/NAME     checkpoint directory, or a Hugging Face id resolved offline in the
                           local Hugging Face cache
  --listen HOST:PORT       default 0.0.0.0:50051; port 0 picks a free port (printed on start)
  --device DEVICE          where the model runs: cpu (the default), cuda or cuda:N (loads the
                           CUDA plugin libvaultgemma_cuda.so after metrics start; weights and
                           KV cache in BF16 on that device; --threads, --kv-cache-bytes and
                           --kv-cache-dtype are CPU settings and do not apply)
  --cuda-plugin PATH       the CUDA plugin; default: ../lib/libvaultgemma_cuda.so from this
                           binary's directory, then the library search path
  --gpu-memory-utilization F  fraction in (0, 1] of the device memory left after the weights
                           and the activations of the largest step that the KV pool takes,
                           default 0.9
  --enforce-eager          CUDA: run every kernel eagerly instead of replaying CUDA graphs for
                           decode steps
  --deterministic          CUDA: batch-invariant matrix products, so that a request's tokens do
                           not depend on what else is in its batch (the CPU backend always is);
                           slower
  --threads N              compute threads, default: all cores
  --kv-cache-bytes N       KV-cache pool budget, default: room for max-num-seqs full contexts
  --kv-cache-dtype TYPE    float32 (default, exact) or bfloat16: K and V rounded once when
                           stored; half the memory per token and the bytes attention reads
  --max-num-seqs N         sequences per engine step, default 16
  --max-batched-tokens N   tokens per engine step, default 512
  --max-queued N           requests waiting beyond max-num-seqs before RESOURCE_EXHAUSTED,
                           default 256. A stream counts until its client has received its last
                           message, so clients that do not read cannot pile streams up
  --no-reflection          do not serve gRPC server reflection
  --metrics-port N         Prometheus /metrics on 0.0.0.0:N, default 9464; 0 picks a free port
                           (printed on start)
  --no-metrics             no metrics endpoint
  --access-log FORMAT      off (default), text or json: one line per finished RPC on stderr,
                           never any prompt or completion text
  --drain-timeout SECONDS  on SIGTERM/SIGINT, how long in-flight streams may run before they are
                           cancelled, default 30. While draining, health is NOT_SERVING and new
                           Generate calls get UNAVAILABLE; connections close once every call has
                           sent its status, and not before 0.5 s after the signal
  --auth-token-file FILE   require "authorization: Bearer <token>" on TextGeneration calls, with
                           one accepted token per line (whitespace trimmed); others get
                           UNAUTHENTICATED. Health and reflection need no token
  --tls-cert FILE          serve TLS with this PEM certificate chain (needs --tls-key)
  --tls-key FILE           PEM private key for --tls-cert
  --tls-client-ca FILE     mutual TLS: require client certificates signed by this PEM CA bundle
  --max-connection-age SECONDS
                           close each client connection (GOAWAY) after this long, so clients
                           rebalance; default 0 = never
  --max-connection-age-grace SECONDS
                           then how long its streams may still run before the connection is
                           closed, default 600
  --keepalive-time SECONDS HTTP/2 PING each connection that has calls this often, default 60,
                           so that streams of clients that vanished (host down, network cut)
                           end and free their place
  --keepalive-timeout SECONDS
                           close the connection when a PING is not answered this fast,
                           default 20
  --stream-write-timeout SECONDS
                           cancel a Generate stream whose client has not read for this long
                           (one message waiting on flow control), freeing its place; default
                           60, 0 = never
  --help                   this text
)";

constexpr engine::FlagSpec kFlags[] = {
    {"model"},
    {"listen"},
    {"device"},
    {"cuda-plugin"},
    {"gpu-memory-utilization"},
    {"enforce-eager", false},
    {"deterministic", false},
    {"threads"},
    {"kv-cache-bytes"},
    {"kv-cache-dtype"},
    {"max-num-seqs"},
    {"max-batched-tokens"},
    {"max-queued"},
    {"no-reflection", false},
    {"metrics-port"},
    {"no-metrics", false},
    {"access-log"},
    {"drain-timeout"},
    {"auth-token-file"},
    {"tls-cert"},
    {"tls-key"},
    {"tls-client-ca"},
    {"max-connection-age"},
    {"max-connection-age-grace"},
    {"keepalive-time"},
    {"keepalive-timeout"},
    {"stream-write-timeout"},
    {"help", false},
};

int UsageError(const absl::Status& status) {
  std::cerr << "vaultgemma-server: " << status.message() << " (see --help)\n";
  return 2;
}

struct ServerArgs {
  std::string model;
  std::string device = "cpu";
  int cuda_device_index = -1;  // >= 0 when --device is cuda[:N]
  std::string cuda_plugin;     // empty = the loader's default location
  double gpu_memory_utilization = 0.9;
  bool cuda_graphs = true;
  bool deterministic = false;
  std::string listen = "0.0.0.0:50051";
  engine::EngineOptions engine;
  bool reflection = true;
  int metrics_port = 9464;  // -1 = off
  std::string access_log = "off";
  double drain_timeout_seconds = 30;
  std::string auth_token_file;  // empty: no authentication
  TlsFiles tls;
  int64_t max_connection_age_ms = 0;  // 0: off
  int64_t max_connection_age_grace_ms = 600'000;
  int64_t keepalive_time_ms = 60'000;
  int64_t keepalive_timeout_ms = 20'000;
  int64_t stream_write_timeout_s = 60;
};

absl::StatusOr<ServerArgs> ReadArgs(const engine::CommandLine& cl) {
  ServerArgs args;
  auto model = cl.GetString("model");
  if (!model.has_value() || model->empty()) {
    return absl::InvalidArgumentError("--model is required");
  }
  args.model = *model;
  if (auto listen = cl.GetString("listen"); listen.has_value()) {
    if (listen->empty()) return absl::InvalidArgumentError("--listen is empty");
    args.listen = *listen;
  }
  args.device = cl.GetString("device").value_or("cpu");
  auto device_index = engine::ParseDeviceFlag(args.device);
  if (!device_index.ok()) return device_index.status();
  args.cuda_device_index = *device_index;
  auto threads = cl.GetInt("threads", 0, 0, 1024);
  auto kv_bytes = cl.GetInt("kv-cache-bytes", 0, 0, int64_t{1} << 50);
  auto max_seqs = cl.GetInt("max-num-seqs", 16, 1, 4096);
  auto max_tokens = cl.GetInt("max-batched-tokens", 512, 1, 1 << 20);
  auto max_queued = cl.GetInt("max-queued", 256, 0, 1 << 20);
  for (const absl::Status& s : {threads.status(), kv_bytes.status(), max_seqs.status(),
                                max_tokens.status(), max_queued.status()}) {
    if (!s.ok()) return s;
  }
  args.engine.num_threads = static_cast<int>(*threads);
  args.engine.kv_cache_bytes = *kv_bytes;
  auto kv_dtype = engine::ParseKvCacheDType(cl.GetString("kv-cache-dtype").value_or("float32"));
  if (!kv_dtype.ok()) return kv_dtype.status();
  args.engine.kv_cache_dtype = *kv_dtype;
  args.engine.max_num_seqs = static_cast<int32_t>(*max_seqs);
  args.engine.max_batched_tokens = static_cast<int32_t>(*max_tokens);
  args.engine.max_waiting = static_cast<int32_t>(*max_queued);
  args.reflection = !cl.Has("no-reflection");
  auto metrics_port = cl.GetInt("metrics-port", 9464, 0, 65535);
  if (!metrics_port.ok()) return metrics_port.status();
  args.metrics_port = cl.Has("no-metrics") ? -1 : static_cast<int>(*metrics_port);
  args.access_log = cl.GetString("access-log").value_or("off");
  if (args.access_log != "off" && !AccessLog::ParseFormat(args.access_log).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--access-log must be off, text or json, got '", args.access_log, "'"));
  }
  auto drain = cl.GetDouble("drain-timeout", 30);
  if (!drain.ok()) return drain.status();
  if (*drain < 0) return absl::InvalidArgumentError("--drain-timeout must be >= 0");
  args.drain_timeout_seconds = *drain;
  args.auth_token_file = cl.GetString("auth-token-file").value_or("");
  if (cl.Has("auth-token-file") && args.auth_token_file.empty()) {
    return absl::InvalidArgumentError("--auth-token-file is empty");
  }
  args.tls.cert = cl.GetString("tls-cert").value_or("");
  args.tls.key = cl.GetString("tls-key").value_or("");
  args.tls.client_ca = cl.GetString("tls-client-ca").value_or("");
  // At most ~24 days: gRPC takes the milliseconds as an int.
  constexpr int64_t kMaxAgeSeconds = (int64_t{1} << 31) / 1000 - 1;
  auto age = cl.GetInt("max-connection-age", 0, 0, kMaxAgeSeconds);
  if (!age.ok()) return age.status();
  auto grace = cl.GetInt("max-connection-age-grace", 600, 0, kMaxAgeSeconds);
  if (!grace.ok()) return grace.status();
  args.max_connection_age_ms = *age * 1000;
  args.max_connection_age_grace_ms = *grace * 1000;
  auto keepalive = cl.GetInt("keepalive-time", 60, 1, kMaxAgeSeconds);
  if (!keepalive.ok()) return keepalive.status();
  auto keepalive_timeout = cl.GetInt("keepalive-timeout", 20, 1, kMaxAgeSeconds);
  if (!keepalive_timeout.ok()) return keepalive_timeout.status();
  args.keepalive_time_ms = *keepalive * 1000;
  args.keepalive_timeout_ms = *keepalive_timeout * 1000;
  auto write_timeout = cl.GetInt("stream-write-timeout", 60, 0, kMaxAgeSeconds);
  if (!write_timeout.ok()) return write_timeout.status();
  args.stream_write_timeout_s = *write_timeout;
  args.cuda_plugin = cl.GetString("cuda-plugin").value_or("");
  if (auto fraction = cl.GetString("gpu-memory-utilization"); fraction.has_value()) {
    auto parsed = engine::ParseGpuMemoryUtilization(*fraction);
    if (!parsed.ok()) return parsed.status();
    args.gpu_memory_utilization = *parsed;
  }
  args.cuda_graphs = !cl.Has("enforce-eager");
  args.deterministic = cl.Has("deterministic");
  if (args.cuda_device_index < 0 && (cl.Has("enforce-eager") || cl.Has("deterministic"))) {
    return absl::InvalidArgumentError(
        "--enforce-eager and --deterministic apply to --device cuda only");
  }

  return args;
}

// "0.0.0.0:50051" -> "0.0.0.0:<port>", "[::]:0" -> "[::]:<port>".
std::string WithPort(const std::string& listen, int port) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return absl::StrCat(listen, ":", port);
  return absl::StrCat(listen.substr(0, colon + 1), port);
}

// A free TCP port on all interfaces (prometheus-cpp's Exposer does not take port 0).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

int Run(int argc, char** argv) {
  auto cl = engine::CommandLine::Parse(argc, argv, kFlags);
  if (!cl.ok()) return UsageError(cl.status());
  if (cl->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  auto args = ReadArgs(*cl);
  if (!args.ok()) return UsageError(args.status());

  // Block the shutdown signals in every thread created from here on; main waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::optional<BearerTokenAuth> auth;
  if (!args->auth_token_file.empty()) {
    auto loaded = BearerTokenAuth::FromFile(args->auth_token_file);
    if (!loaded.ok()) return UsageError(loaded.status());
    auth = *std::move(loaded);
  }
  auto credentials = MakeServerCredentials(args->tls);
  if (!credentials.ok()) return UsageError(credentials.status());

  auto dir = engine::ResolveModelPath(args->model);
  if (!dir.ok()) {
    std::cerr << "vaultgemma-server: " << dir.status().message() << "\n";
    return 2;
  }
  args->engine.model_dir = *dir;
  // config.json first: it is cheap, names the dtype for the metrics, and a bad one is a usage
  // error before anything starts listening.
  auto config = engine::LoadModelConfig(*dir / "config.json");
  if (!config.ok()) {
    std::cerr << "vaultgemma-server: " << config.status().message() << "\n";
    return 2;
  }

  // Metrics start before anything could load a CUDA plugin (TOOLCHAIN.md, landmine 2), and so
  // before the model.
  std::unique_ptr<Metrics> metrics;
  if (args->metrics_port >= 0) {
    const int metrics_port = args->metrics_port == 0 ? FreePort() : args->metrics_port;
    auto started =
        Metrics::Start(absl::StrCat("0.0.0.0:", metrics_port),
                       ModelLabels{args->model,
                                   config->torch_dtype.has_value()
                                       ? std::string(engine::TorchDTypeName(*config->torch_dtype))
                                       : "unknown",
                                   args->device, kServerVersion});
    if (!started.ok()) {
      std::cerr << "vaultgemma-server: metrics on port " << metrics_port << ": "
                << started.status().message() << "\n";
      return 2;
    }
    metrics = *std::move(started);
  }
  // --device cuda: the plugin loads only now, after the exposer (TOOLCHAIN.md, landmine 2). Its
  // refusals come before the metrics line, so that each is the one line the server prints.
  if (args->cuda_device_index >= 0) {
    auto factory = engine::MakeCudaBackendFactory(
        args->cuda_plugin, {.device_index = args->cuda_device_index,
                            .block_size = args->engine.block_size,
                            .gpu_memory_utilization = args->gpu_memory_utilization,
                            .max_step_tokens = args->engine.max_batched_tokens,
                            .max_num_seqs = args->engine.max_num_seqs,
                            .cuda_graphs = args->cuda_graphs,
                            .deterministic = args->deterministic});
    if (!factory.ok()) {
      std::cerr << "vaultgemma-server: --device " << args->device << ": "
                << factory.status().message() << "\n";
      return 2;
    }
    // The engine opens the checkpoint row-major for it.
    args->engine.checkpoint_layout = engine::MatrixLayout::kRowMajor;
    args->engine.backend_factory = *std::move(factory);
  }
  if (metrics != nullptr) {
    std::cerr << "vaultgemma-server: metrics on http://0.0.0.0:" << metrics->port()
              << "/metrics (metrics port " << metrics->port() << ")" << std::endl;
  }
  std::unique_ptr<AccessLog> access_log;
  if (args->access_log != "off") {
    access_log = std::make_unique<AccessLog>(*AccessLog::ParseFormat(args->access_log));
  }

  // The gRPC server listens while the model loads: health says NOT_SERVING and calls get
  // UNAVAILABLE "the model is still loading", so that probes and clients see why.
  TextGenerationService service(/*engine=*/nullptr, args->model, args->device, metrics.get(),
                                access_log.get());
  grpc::EnableDefaultHealthCheckService(true);
  if (args->reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  if (auth.has_value()) {
    service.SetAuthorizer(
        [&auth](const grpc::ServerContextBase& context) { return auth->Check(context); });
  }
  service.SetMaxStreams(static_cast<int64_t>(args->engine.max_num_seqs) + args->engine.max_waiting);
  service.SetWriteStallTimeout(absl::Seconds(args->stream_write_timeout_s));
  grpc::ServerBuilder builder;
  if (args->max_connection_age_ms > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(args->max_connection_age_ms));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               static_cast<int>(args->max_connection_age_grace_ms));
  }
  // A client that vanished without closing its connection (its host died, a cable was cut) sends
  // no RST, and a stream waiting on its flow-control window sends nothing the kernel could fail to
  // deliver: without PINGs its call, and its place among --max-queued, would last forever. A
  // client that is alive answers PINGs even while it does not read its streams. PINGs continue
  // while no data flows (a stalled stream sends none).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(args->keepalive_time_ms));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             static_cast<int>(args->keepalive_timeout_ms));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  int port = 0;
  builder.AddListeningPort(args->listen, *credentials, &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "vaultgemma-server: cannot listen on " << args->listen << "\n";
    return 2;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(kServiceName, false);
  health->SetServingStatus(false);
  std::cerr << "vaultgemma-server: loading " << args->model << ", listening on "
            << WithPort(args->listen, port) << " (loading port " << port << ")" << std::endl;

  // Test hook: hold the loading state this long, so that tests can watch it.
  if (const char* delay = std::getenv("VAULTGEMMA_TEST_LOAD_DELAY_SECONDS"); delay != nullptr) {
    std::this_thread::sleep_for(std::chrono::duration<double>(std::atof(delay)));
  }
  args->engine.step_observer = metrics.get();
  auto created = engine::Engine::Create(args->engine);
  if (!created.ok()) {
    std::cerr << "vaultgemma-server: " << created.status().message() << "\n";
    server->Shutdown(std::chrono::system_clock::now());
    server->Wait();
    const absl::StatusCode code = created.status().code();
    return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ? 2
                                                                                             : 1;
  }
  std::unique_ptr<engine::Engine> engine = *std::move(created);
  service.SetEngine(engine.get());
  if (metrics != nullptr) metrics->AttachEngine(engine.get());
  health->SetServingStatus(kServiceName, true);
  health->SetServingStatus(true);
  std::cerr << "vaultgemma-server: serving " << args->model << " on "
            << WithPort(args->listen, port) << (args->tls.cert.empty() ? "" : " with TLS")
            << (args->tls.client_ca.empty() ? "" : " (client certificates required)")
            << (auth.has_value() ? " (bearer token required)" : "") << " (port " << port << ")"
            << std::endl;

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  const absl::Time signalled = absl::Now();
  // Drain: health says NOT_SERVING and new Generate calls get UNAVAILABLE at once; the admitted
  // requests run to their end, but past --drain-timeout the rest are cancelled.
  health->SetServingStatus(kServiceName, false);
  health->SetServingStatus(false);
  service.SetDraining(true);
  // Printed once new calls are refused (tests wait for it).
  std::cerr << "vaultgemma-server: " << (signal_number == SIGINT ? "SIGINT" : "SIGTERM")
            << ", shutting down" << std::endl;
  std::promise<void> drained;
  std::future<void> drained_future = drained.get_future();
  std::thread drain([&] {
    engine->Shutdown(/*drain=*/true);
    drained.set_value();
  });
  const auto timeout =
      std::chrono::microseconds(static_cast<int64_t>(args->drain_timeout_seconds * 1e6));
  if (drained_future.wait_for(timeout) != std::future_status::ready) {
    const engine::EngineStats stats = engine->Stats();
    std::cerr << "vaultgemma-server: drain timeout, cancelling " << stats.running + stats.waiting
              << " requests" << std::endl;
    engine->Shutdown(/*drain=*/false);  // cancels what is left; returns once the loop ended
  }
  drain.join();
  // Close the connections only once no client can lose a call's end to the close. gRPC closes a
  // connection as soon as its last stream has ended after Shutdown's GOAWAY, and Linux answers a
  // close() with unread input (the client's WINDOW_UPDATEs for the last messages) with a RST that
  // drops what the socket had not sent yet: the last messages and status of the streams that had
  // just ended, which their client sees as UNAVAILABLE "Connection reset by peer". So:
  //  - keep refusing (health NOT_SERVING, Generate UNAVAILABLE "server is draining", logged) for
  //    at least kRefusalWindow after the signal: clients that watch health (vaultgemma-bench and
  //    vaultgemma-cli with several addresses) stop sending here. A call that reaches gRPC after
  //    Shutdown is cancelled by gRPC itself (CANCELLED) before the service sees it;
  //  - then wait until every call has written its status: Shutdown's GOAWAY and PING follow them
  //    on each connection, and gRPC closes it only once the client has acked that PING, that is,
  //    has received everything before it.
  // Both share the final 5 s (the deployment's terminationGracePeriodSeconds counts on it); past
  // that, Shutdown cancels what is left.
  constexpr absl::Duration kRefusalWindow = absl::Milliseconds(500);
  absl::SleepFor(signalled + kRefusalWindow - absl::Now());
  const auto final_deadline = std::chrono::system_clock::now() + std::chrono::seconds(5);
  if (!service.WaitForNoCallsInFlight(absl::FromChrono(final_deadline))) {
    std::cerr << "vaultgemma-server: closing with " << service.calls_in_flight()
              << " calls still writing their status" << std::endl;
  }
  server->Shutdown(final_deadline);
  server->Wait();
  if (metrics != nullptr) metrics->AttachEngine(nullptr);
  engine.reset();
  std::cerr << "vaultgemma-server: stopped" << std::endl;
  return 0;
}

}  // namespace
}  // namespace vg::server

int main(int argc, char** argv) { return vg::server::Run(argc, argv); }
