// Fuzzes what server/ does with a GenerateRequest before the engine sees it: the protobuf parse of
// arbitrary bytes (as gRPC hands the message to the service), then exactly the service's steps
// (text_generation_service.cc): the request id (generated when empty, else ValidateRequestId),
// ToEngineRequest with a real config and tokenizer (tests/fixtures/f32_mha_tied_sliding), and
// ToResponse for an event shaped like the request; plus Tokenize's path on the same text.
//
// Checks: a rejected request is INVALID_ARGUMENT; an accepted engine::Request satisfies every
// bound the engine relies on without checking again (prompt non-empty, inside the vocabulary and
// shorter than the context, sampling values in range, stops bounded and valid UTF-8); and
// IsValidUtf8 agrees with the tokenizer's own UTF-8 rules on the raw input bytes.
#include <google/protobuf/stubs/logging.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model/config.h"
#include "engine/request.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/request_conversion.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/tokenizer_text_check.h"
#include "vaultgemma/v1/text_generation.pb.h"

namespace {

namespace pb = ::vaultgemma::v1;
using vg::engine::Request;

struct Model {
  vg::engine::ModelConfig config;
  std::unique_ptr<vg::engine::Tokenizer> tokenizer;
};

const Model& TheModel() {
  static const Model* model = [] {
    const std::string dir = std::string(VG_SOURCE_DIR) + "/tests/fixtures/f32_mha_tied_sliding/";
    auto config = vg::engine::LoadModelConfig(dir + "config.json");
    auto tokenizer = vg::engine::Tokenizer::Load(dir + "tokenizer.model");
    if (!config.ok() || !tokenizer.ok()) {
      std::fprintf(stderr, "cannot load the fixture model from %s\n", dir.c_str());
      std::abort();
    }
    return new Model{*config, *std::move(tokenizer)};
  }();
  return *model;
}

void CheckAccepted(const pb::GenerateRequest& in, const Request& out, const std::string& id,
                   const Model& model) {
  const int64_t vocab = model.config.vocab_size;
  const int64_t context = model.config.max_position_embeddings;
  VG_FUZZ_CHECK(out.id == id, "id");
  VG_FUZZ_CHECK(!out.prompt_token_ids.empty(), "empty prompt accepted");
  VG_FUZZ_CHECK(static_cast<int64_t>(out.prompt_token_ids.size()) < context, "prompt too long");
  for (int32_t t : out.prompt_token_ids) VG_FUZZ_CHECK(t >= 0 && t < vocab, "prompt id");
  if (in.has_text()) {
    VG_FUZZ_CHECK(out.prompt_token_ids[0] == model.config.bos_token_id, "no BOS");
    VG_FUZZ_CHECK(vg::server::IsValidUtf8(in.text()), "invalid text accepted");
  }
  const vg::engine::SamplingParams& s = out.sampling;
  VG_FUZZ_CHECK(std::isfinite(s.temperature) && s.temperature >= 0, "temperature");
  VG_FUZZ_CHECK(s.top_k >= 0 && s.top_k <= vocab, absl::StrCat("top_k ", s.top_k));
  VG_FUZZ_CHECK(s.top_p > 0 && s.top_p <= 1, "top_p");
  VG_FUZZ_CHECK(s.min_p >= 0 && s.min_p <= 1, "min_p");
  VG_FUZZ_CHECK(std::isfinite(s.repetition_penalty) && s.repetition_penalty > 0, "repetition");
  VG_FUZZ_CHECK(s.presence_penalty >= -2 && s.presence_penalty <= 2, "presence_penalty");
  VG_FUZZ_CHECK(s.frequency_penalty >= -2 && s.frequency_penalty <= 2, "frequency_penalty");
  if (in.sampling().has_seed()) VG_FUZZ_CHECK(s.seed == in.sampling().seed(), "seed");
  const vg::engine::StoppingCriteria& stop = out.stopping;
  VG_FUZZ_CHECK(stop.max_new_tokens >= 1 && stop.max_new_tokens <= context, "max_new_tokens");
  VG_FUZZ_CHECK(static_cast<int>(stop.stop_strings.size()) <= vg::server::kMaxStopStrings, "stops");
  for (const std::string& s : stop.stop_strings) {
    VG_FUZZ_CHECK(!s.empty() && s.size() <= vg::server::kMaxStopStringBytes, "stop size");
    VG_FUZZ_CHECK(vg::fuzz::IsWellFormedUtf8(s), "stop UTF-8");
  }
  for (int32_t t : stop.stop_token_ids) VG_FUZZ_CHECK(t >= 0 && t < vocab, "stop token id");
  VG_FUZZ_CHECK(out.top_logprobs >= 0 && out.top_logprobs <= vg::server::kMaxTopLogprobs,
                "top_logprobs");
  VG_FUZZ_CHECK(out.cache_salt == in.cache_salt(), "cache_salt");
  VG_FUZZ_CHECK(out.cache_salt.size() <= vg::server::kMaxCacheSaltBytes, "cache_salt size");
}

// A response for an event built from the accepted request, as the engine could produce it.
void CheckResponse(const Request& request) {
  vg::engine::TokenEvent event;
  const size_t n = std::min<size_t>(request.prompt_token_ids.size(), 8);
  event.token_ids.assign(request.prompt_token_ids.begin(), request.prompt_token_ids.begin() + n);
  event.logprobs.assign(n / 2, -1.0f);  // fewer logprobs than tokens must still be safe
  event.top_logprobs.resize(std::min<size_t>(n, request.top_logprobs));
  for (auto& top : event.top_logprobs) top.push_back({request.prompt_token_ids[0], -0.5f});
  if (!request.stopping.stop_strings.empty()) event.text = request.stopping.stop_strings[0];
  event.finished = request.stopping.ignore_eos;
  event.finish_reason = static_cast<vg::engine::FinishReason>(request.top_logprobs % 6);
  const pb::GenerateResponse response = vg::server::ToResponse(event);
  VG_FUZZ_CHECK(response.token_ids_size() == static_cast<int>(n), "token_ids");
  VG_FUZZ_CHECK(response.logprobs_size() == static_cast<int>(n), "one logprobs entry per token");
  std::string wire;
  VG_FUZZ_CHECK(response.SerializeToString(&wire), "serialize");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 in a string field is logged
  TheModel();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view raw(reinterpret_cast<const char*>(data), size);
  VG_FUZZ_CHECK(vg::server::IsValidUtf8(raw) == vg::fuzz::IsWellFormedUtf8(raw),
                "IsValidUtf8 disagrees with the tokenizer's UTF-8 rules");

  pb::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  const Model& model = TheModel();

  // Tokenize's path (TextGenerationService::Tokenize) on the same text.
  if (vg::server::IsValidUtf8(request.text())) {
    for (int32_t id : model.tokenizer->Encode(request.text(), /*add_bos=*/false)) {
      VG_FUZZ_CHECK(!model.tokenizer->IdToPiece(id).empty(), "Tokenize piece");
    }
  }

  std::string id = request.request_id();
  if (id.empty()) id = "req-0123456789abcdef-1";  // what the service generates
  absl::StatusOr<Request> converted =
      vg::server::ToEngineRequest(request, model.config, *model.tokenizer, id);
  if (!converted.ok()) {
    VG_FUZZ_CHECK(converted.status().code() == absl::StatusCode::kInvalidArgument,
                  converted.status().ToString());
    VG_FUZZ_CHECK(!converted.status().message().empty(), "an error without a message");
    return 0;
  }
  VG_FUZZ_CHECK(vg::server::ValidateRequestId(id).ok(), "accepted an invalid request id");
  CheckAccepted(request, *converted, id, model);
  CheckResponse(*converted);
  return 0;
}
