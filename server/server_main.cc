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
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/model/dtype.h"
#include "engine/model/model_path.h"
#include "engine/runner/command_line.h"
#include "server/access_log.h"
#include "server/metrics.h"
#include "server/text_generation_service.h"

namespace vg::server {
namespace {

constexpr char kUsage[] = R"(usage: vaultgemma-server --model DIR_OR_ID [options]

Serves VaultGemma over gRPC (vaultgemma.v1.TextGeneration, grpc.health.v1.Health, reflection).

  --model DIR|ORG/NAME     checkpoint directory, or a Hugging Face id resolved offline in the
                           local Hugging Face cache
  --listen HOST:PORT       default 0.0.0.0:50051; port 0 picks a free port (printed on start)
  --threads N              compute threads, default: all cores
  --kv-cache-bytes N       KV-cache pool budget, default: room for max-num-seqs full contexts
  --max-num-seqs N         sequences per engine step, default 16
  --max-batched-tokens N   tokens per engine step, default 512
  --max-queued N           requests waiting beyond max-num-seqs before RESOURCE_EXHAUSTED,
                           default 256
  --no-reflection          do not serve gRPC server reflection
  --metrics-port N         Prometheus /metrics on 0.0.0.0:N, default 9464; 0 picks a free port
                           (printed on start)
  --no-metrics             no metrics endpoint
  --access-log FORMAT      off (default), text or json: one line per finished RPC on stderr,
                           never any prompt or completion text
  --drain-timeout SECONDS  on SIGTERM/SIGINT, how long in-flight streams may run before they are
                           cancelled, default 30
  --help                   this text
)";

constexpr engine::FlagSpec kFlags[] = {
    {"model"},        {"listen"},
    {"threads"},      {"kv-cache-bytes"},
    {"max-num-seqs"}, {"max-batched-tokens"},
    {"max-queued"},   {"no-reflection", false},
    {"metrics-port"}, {"no-metrics", false},
    {"access-log"},   {"drain-timeout"},
    {"help", false},
};

int UsageError(const absl::Status& status) {
  std::cerr << "vaultgemma-server: " << status.message() << " (see --help)\n";
  return 2;
}

struct ServerArgs {
  std::string model;
  std::string listen = "0.0.0.0:50051";
  engine::EngineOptions engine;
  bool reflection = true;
  int metrics_port = 9464;  // -1 = off
  std::string access_log = "off";
  double drain_timeout_seconds = 30;
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

  auto dir = engine::ResolveModelPath(args->model);
  if (!dir.ok()) {
    std::cerr << "vaultgemma-server: " << dir.status().message() << "\n";
    return 2;
  }
  args->engine.model_dir = *dir;
  auto engine = engine::Engine::Create(args->engine);
  if (!engine.ok()) {
    std::cerr << "vaultgemma-server: " << engine.status().message() << "\n";
    const absl::StatusCode code = engine.status().code();
    return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ? 2
                                                                                             : 1;
  }

  // Metrics start before anything could load a CUDA plugin (TOOLCHAIN.md, landmine 2).
  std::unique_ptr<Metrics> metrics;
  if (args->metrics_port >= 0) {
    const int metrics_port = args->metrics_port == 0 ? FreePort() : args->metrics_port;
    const engine::ModelConfig& config = (*engine)->config();
    auto started =
        Metrics::Start(absl::StrCat("0.0.0.0:", metrics_port), engine->get(),
                       ModelLabels{args->model,
                                   config.torch_dtype.has_value()
                                       ? std::string(engine::TorchDTypeName(*config.torch_dtype))
                                       : "unknown",
                                   "cpu", kServerVersion});
    if (!started.ok()) {
      std::cerr << "vaultgemma-server: metrics on port " << metrics_port << ": "
                << started.status().message() << "\n";
      (*engine)->Shutdown(false);
      return 2;
    }
    metrics = *std::move(started);
    std::cerr << "vaultgemma-server: metrics on http://0.0.0.0:" << metrics_port
              << "/metrics (metrics port " << metrics_port << ")" << std::endl;
  }
  std::unique_ptr<AccessLog> access_log;
  if (args->access_log != "off") {
    access_log = std::make_unique<AccessLog>(*AccessLog::ParseFormat(args->access_log));
  }

  TextGenerationService service(engine->get(), args->model, "cpu", metrics.get(), access_log.get());
  grpc::EnableDefaultHealthCheckService(true);
  if (args->reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(args->listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "vaultgemma-server: cannot listen on " << args->listen << "\n";
    (*engine)->Shutdown(false);
    return 2;
  }
  server->GetHealthCheckService()->SetServingStatus(kServiceName, true);
  server->GetHealthCheckService()->SetServingStatus(true);
  std::cerr << "vaultgemma-server: serving " << args->model << " on "
            << WithPort(args->listen, port) << " (port " << port << ")" << std::endl;

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::cerr << "vaultgemma-server: " << (signal_number == SIGINT ? "SIGINT" : "SIGTERM")
            << ", shutting down" << std::endl;
  // Drain: health says NOT_SERVING, the engine refuses new requests (UNAVAILABLE) and finishes
  // the admitted ones; past --drain-timeout the rest are cancelled.
  server->GetHealthCheckService()->SetServingStatus(kServiceName, false);
  server->GetHealthCheckService()->SetServingStatus(false);
  std::thread drain([&] { (*engine)->Shutdown(/*drain=*/true); });
  const auto give_up =
      std::chrono::steady_clock::now() +
      std::chrono::microseconds(static_cast<int64_t>(args->drain_timeout_seconds * 1e6));
  while ((*engine)->Stats().running + (*engine)->Stats().waiting > 0 &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  (*engine)->Shutdown(/*drain=*/false);  // cancels whatever is left; returns once the loop ended
  drain.join();
  // Let the streams write their last messages, then close.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  std::cerr << "vaultgemma-server: stopped" << std::endl;
  return 0;
}

}  // namespace
}  // namespace vg::server

int main(int argc, char** argv) { return vg::server::Run(argc, argv); }
