// vaultgemma-cli: talk to a running vaultgemma-server.
//   vaultgemma-cli generate|tokenize|info|health [flags]
// Exit codes: 0 ok, 2 usage error, 3 the server answered with an error status (printed), 1 other.
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/connection.h"
#include "engine/runner/command_line.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "vaultgemma/v1/text_generation.grpc.pb.h"

namespace vg::client {
namespace {

namespace pb = ::vaultgemma::v1;
using engine::CommandLine;
using engine::FlagSpec;

constexpr char kUsage[] = R"(usage: vaultgemma-cli COMMAND [flags]

Commands:
  generate   stream a completion to stdout (--json: one object at the end)
  tokenize   print the token ids of --text
  info       print the served model's description
  health     print the server's health (SERVING / NOT_SERVING)

Connection (every command):
  --server ADDR        host:port, dns:///host:port, or ip:port,ip:port,... (round-robin);
                       default localhost:50051
  --tls-ca FILE        PEM roots to verify the server (TLS); default plaintext
  --auth-token TOKEN   bearer token
  --deadline SECONDS   give up after this long

generate:
  --prompt TEXT | --prompt-ids 2,651,...   (default: read standard input)
  --max-new-tokens N  --temperature T  --top-k K  --top-p P  --min-p P  --seed S
  --repetition-penalty R  --presence-penalty P  --frequency-penalty F
  --stop STRING (repeatable)  --stop-token-ids 1,107  --ignore-eos
  --top-logprobs N  --request-id ID  --cache-salt SALT  --json
tokenize:
  --text TEXT  --add-bos  --json
)";

constexpr FlagSpec kFlags[] = {
    {"server"},
    {"tls-ca"},
    {"auth-token"},
    {"deadline"},
    {"prompt"},
    {"prompt-ids"},
    {"max-new-tokens"},
    {"temperature"},
    {"top-k"},
    {"top-p"},
    {"min-p"},
    {"seed"},
    {"repetition-penalty"},
    {"presence-penalty"},
    {"frequency-penalty"},
    {"stop", true, true},
    {"stop-token-ids"},
    {"ignore-eos", false},
    {"top-logprobs"},
    {"request-id"},
    {"cache-salt"},
    {"json", false},
    {"text"},
    {"add-bos", false},
    {"help", false},
};

int UsageError(absl::string_view message) {
  std::cerr << "vaultgemma-cli: " << message << " (see --help)\n";
  return 2;
}

int ServerError(const grpc::Status& status) {
  std::cerr << "vaultgemma-cli: " << StatusCodeName(status.error_code()) << ": "
            << status.error_message() << "\n";
  return 3;
}

std::string FinishReasonName(pb::FinishReason reason) {
  switch (reason) {
    case pb::FINISH_REASON_LENGTH:
      return "length";
    case pb::FINISH_REASON_EOS:
      return "eos";
    case pb::FINISH_REASON_STOP_TOKEN:
      return "stop_token";
    case pb::FINISH_REASON_STOP_SEQUENCE:
      return "stop_sequence";
    default:
      return "unspecified";
  }
}

// Fills the request from flags; INVALID_ARGUMENT naming the flag.
absl::Status BuildRequest(const CommandLine& cl, pb::GenerateRequest* request) {
  if (cl.Has("prompt") && cl.Has("prompt-ids")) {
    return absl::InvalidArgumentError("give either --prompt or --prompt-ids, not both");
  }
  if (cl.Has("prompt-ids")) {
    auto ids = cl.GetIntList("prompt-ids");
    if (!ids.ok()) return ids.status();
    for (int32_t id : *ids) {
      if (id < 0) return absl::InvalidArgumentError("--prompt-ids must be non-negative");
      request->mutable_token_ids()->add_ids(static_cast<uint32_t>(id));
    }
  } else if (cl.Has("prompt")) {
    request->set_text(*cl.GetString("prompt"));
  } else {
    if (isatty(STDIN_FILENO))
      return absl::InvalidArgumentError("no prompt: give --prompt or stdin");
    std::string text(std::istreambuf_iterator<char>(std::cin), {});
    if (!text.empty() && text.back() == '\n') text.pop_back();
    request->set_text(text);
  }
  pb::SamplingParams* sampling = request->mutable_sampling();
  for (const char* name : {"temperature", "top-p", "min-p", "repetition-penalty",
                           "presence-penalty", "frequency-penalty"}) {
    if (!cl.Has(name)) continue;
    auto v = cl.GetDouble(name, 0);
    if (!v.ok()) return v.status();
    const float f = static_cast<float>(*v);
    const std::string n = name;
    if (n == "temperature") sampling->set_temperature(f);
    if (n == "top-p") sampling->set_top_p(f);
    if (n == "min-p") sampling->set_min_p(f);
    if (n == "repetition-penalty") sampling->set_repetition_penalty(f);
    if (n == "presence-penalty") sampling->set_presence_penalty(f);
    if (n == "frequency-penalty") sampling->set_frequency_penalty(f);
  }
  if (cl.Has("top-k")) {
    auto k = cl.GetInt("top-k", 0, 0, 1 << 30);
    if (!k.ok()) return k.status();
    sampling->set_top_k(static_cast<uint32_t>(*k));
  }
  if (cl.Has("seed")) {
    auto seed = cl.GetUint64("seed", 0);
    if (!seed.ok()) return seed.status();
    sampling->set_seed(*seed);
  }
  pb::StoppingCriteria* stopping = request->mutable_stopping();
  if (cl.Has("max-new-tokens")) {
    auto n = cl.GetInt("max-new-tokens", 64, 0, 1 << 30);
    if (!n.ok()) return n.status();
    stopping->set_max_new_tokens(static_cast<uint32_t>(*n));
  }
  for (const std::string& s : cl.GetAll("stop")) stopping->add_stop(s);
  auto stop_ids = cl.GetIntList("stop-token-ids");
  if (!stop_ids.ok()) return stop_ids.status();
  for (int32_t id : *stop_ids) stopping->add_stop_token_ids(static_cast<uint32_t>(id));
  stopping->set_ignore_eos(cl.Has("ignore-eos"));
  auto top = cl.GetInt("top-logprobs", 0, 0, 1 << 20);
  if (!top.ok()) return top.status();
  request->set_top_logprobs(static_cast<uint32_t>(*top));
  request->set_request_id(cl.GetString("request-id").value_or(""));
  request->set_cache_salt(cl.GetString("cache-salt").value_or(""));
  return absl::OkStatus();
}

int Generate(const CommandLine& cl, const ConnectionOptions& conn, double deadline,
             std::shared_ptr<grpc::Channel> channel) {
  pb::GenerateRequest request;
  if (absl::Status s = BuildRequest(cl, &request); !s.ok()) return UsageError(s.message());
  const bool json = cl.Has("json");
  auto stub = pb::TextGeneration::NewStub(channel);
  auto context = MakeContext(conn, deadline);
  const auto start = std::chrono::steady_clock::now();
  std::optional<double> ttft;
  auto reader = stub->Generate(context.get(), request);
  pb::GenerateResponse response;
  nlohmann::json out = {{"prompt_token_ids", nlohmann::json::array()},
                        {"token_ids", nlohmann::json::array()},
                        {"logprobs", nlohmann::json::array()},
                        {"text", ""}};
  std::string text;
  while (reader->Read(&response)) {
    if (!ttft.has_value() && response.token_ids_size() > 0) {
      ttft = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    for (uint32_t id : response.prompt_token_ids()) out["prompt_token_ids"].push_back(id);
    for (uint32_t id : response.token_ids()) out["token_ids"].push_back(id);
    for (const auto& lp : response.logprobs()) out["logprobs"].push_back(lp.logprob());
    text += response.text();
    if (!json) std::cout << response.text() << std::flush;
    if (response.finish_reason() != pb::FINISH_REASON_UNSPECIFIED) {
      out["finish_reason"] = FinishReasonName(response.finish_reason());
      out["usage"] = {{"prompt_tokens", response.usage().prompt_tokens()},
                      {"completion_tokens", response.usage().completion_tokens()},
                      {"cached_prompt_tokens", response.usage().cached_prompt_tokens()}};
    }
  }
  const grpc::Status status = reader->Finish();
  if (!json) std::cout << "\n";
  if (!status.ok()) return ServerError(status);
  if (json) {
    out["text"] = text;
    out["time_to_first_token_seconds"] = ttft.value_or(0.0);
    const auto& metadata = context->GetServerInitialMetadata();
    if (auto it = metadata.find("x-request-id"); it != metadata.end()) {
      out["request_id"] = std::string(it->second.data(), it->second.size());
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  return 0;
}

int Tokenize(const CommandLine& cl, const ConnectionOptions& conn, double deadline,
             std::shared_ptr<grpc::Channel> channel) {
  if (!cl.Has("text")) return UsageError("tokenize needs --text");
  pb::TokenizeRequest request;
  request.set_text(*cl.GetString("text"));
  request.set_add_bos(cl.Has("add-bos"));
  pb::TokenizeResponse response;
  auto context = MakeContext(conn, deadline);
  const grpc::Status status =
      pb::TextGeneration::NewStub(channel)->Tokenize(context.get(), request, &response);
  if (!status.ok()) return ServerError(status);
  nlohmann::json out = {{"token_ids", response.token_ids()}, {"pieces", response.pieces()}};
  if (cl.Has("json")) {
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::string line;
    for (uint32_t id : response.token_ids()) absl::StrAppend(&line, line.empty() ? "" : " ", id);
    std::cout << line << "\n";
  }
  return 0;
}

int Info(const ConnectionOptions& conn, double deadline, std::shared_ptr<grpc::Channel> channel) {
  pb::ModelInfo info;
  auto context = MakeContext(conn, deadline);
  const grpc::Status status = pb::TextGeneration::NewStub(channel)->GetModelInfo(
      context.get(), pb::GetModelInfoRequest(), &info);
  if (!status.ok()) return ServerError(status);
  nlohmann::json out = {{"model_id", info.model_id()},
                        {"architecture", info.architecture()},
                        {"dtype", info.dtype()},
                        {"context_length", info.context_length()},
                        {"vocab_size", info.vocab_size()},
                        {"device", info.device()},
                        {"server_version", info.server_version()}};
  std::cout << out.dump(2) << "\n";
  return 0;
}

int Health(const ConnectionOptions& conn, double deadline, std::shared_ptr<grpc::Channel> channel) {
  grpc::health::v1::HealthCheckResponse response;
  auto context = MakeContext(conn, deadline > 0 ? deadline : 5.0);
  const grpc::Status status = grpc::health::v1::Health::NewStub(channel)->Check(
      context.get(), grpc::health::v1::HealthCheckRequest(), &response);
  if (!status.ok()) return ServerError(status);
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()) << "\n";
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 3;
}

int Run(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "help") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  // Parse the flags after the command (argv[1] stands in for the program name).
  auto cl = CommandLine::Parse(argc - 1, argv + 1, kFlags);
  if (!cl.ok()) return UsageError(cl.status().message());
  if (cl->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  ConnectionOptions conn;
  conn.server = cl->GetString("server").value_or(conn.server);
  conn.tls_ca_file = cl->GetString("tls-ca").value_or("");
  conn.auth_token = cl->GetString("auth-token").value_or("");
  auto deadline = cl->GetDouble("deadline", 0);
  if (!deadline.ok() || *deadline < 0) return UsageError("--deadline must be a number >= 0");
  auto channel = Connect(conn);
  if (!channel.ok()) return UsageError(channel.status().message());
  if (command == "generate") return Generate(*cl, conn, *deadline, *channel);
  if (command == "tokenize") return Tokenize(*cl, conn, *deadline, *channel);
  if (command == "info") return Info(conn, *deadline, *channel);
  if (command == "health") return Health(conn, *deadline, *channel);
  return UsageError(absl::StrCat("unknown command '", command, "'"));
}

}  // namespace
}  // namespace vg::client

int main(int argc, char** argv) { return vg::client::Run(argc, argv); }
