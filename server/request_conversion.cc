#include "server/request_conversion.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vg::server {
namespace {

namespace pb = ::vaultgemma::v1;

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

uint64_t RandomSeed() {
  // random_device may be slow, but it is called once per request without a seed.
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

absl::Status CheckIdsInVocab(const std::vector<int32_t>& ids, int64_t vocab, const char* field) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return Invalid(absl::StrCat(field, "[", i, "] = ", ids[i], " is outside the vocabulary [0, ",
                                  vocab, ")"));
    }
  }
  return absl::OkStatus();
}

std::vector<int32_t> ToInt32(const google::protobuf::RepeatedField<uint32_t>& ids) {
  std::vector<int32_t> out;
  out.reserve(ids.size());
  for (uint32_t id : ids) {
    // Ids past INT32_MAX are outside every vocabulary; keep them detectable as out of range.
    out.push_back(id > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())
                      ? std::numeric_limits<int32_t>::max()
                      : static_cast<int32_t>(id));
  }
  return out;
}

absl::StatusOr<engine::SamplingParams> ConvertSampling(const pb::SamplingParams& in,
                                                       int64_t vocab) {
  engine::SamplingParams out;
  if (in.has_temperature()) {
    const float t = in.temperature();
    if (!std::isfinite(t) || t < 0) {
      return Invalid(absl::StrCat("sampling.temperature must be finite and >= 0, got ", t));
    }
    out.temperature = t;
  }
  if (in.has_top_k()) {
    out.top_k = static_cast<int32_t>(std::min<int64_t>(in.top_k(), vocab));
  }
  if (in.has_top_p()) {
    const float p = in.top_p();
    if (!(p > 0 && p <= 1))
      return Invalid(absl::StrCat("sampling.top_p must be in (0, 1], got ", p));
    out.top_p = p;
  }
  if (in.has_min_p()) {
    const float p = in.min_p();
    if (!(p >= 0 && p <= 1))
      return Invalid(absl::StrCat("sampling.min_p must be in [0, 1], got ", p));
    out.min_p = p;
  }
  if (in.has_repetition_penalty()) {
    const float r = in.repetition_penalty();
    if (!std::isfinite(r) || r <= 0) {
      return Invalid(absl::StrCat("sampling.repetition_penalty must be finite and > 0, got ", r));
    }
    out.repetition_penalty = r;
  }
  if (in.has_presence_penalty()) {
    const float v = in.presence_penalty();
    if (!(v >= -2 && v <= 2)) {
      return Invalid(absl::StrCat("sampling.presence_penalty must be in [-2, 2], got ", v));
    }
    out.presence_penalty = v;
  }
  if (in.has_frequency_penalty()) {
    const float v = in.frequency_penalty();
    if (!(v >= -2 && v <= 2)) {
      return Invalid(absl::StrCat("sampling.frequency_penalty must be in [-2, 2], got ", v));
    }
    out.frequency_penalty = v;
  }
  out.seed = in.has_seed() ? in.seed() : RandomSeed();
  return out;
}

absl::StatusOr<engine::StoppingCriteria> ConvertStopping(const pb::StoppingCriteria& in,
                                                         int64_t vocab, int64_t context) {
  engine::StoppingCriteria out;
  out.max_new_tokens = kDefaultMaxNewTokens;
  if (in.has_max_new_tokens()) {
    if (in.max_new_tokens() < 1) return Invalid("stopping.max_new_tokens must be >= 1");
    // The engine cuts generation at the end of the context anyway (finish reason LENGTH).
    out.max_new_tokens = static_cast<int32_t>(std::min<int64_t>(in.max_new_tokens(), context));
  }
  if (in.stop_size() > kMaxStopStrings) {
    return Invalid(absl::StrCat("stopping.stop has ", in.stop_size(), " strings; at most ",
                                kMaxStopStrings, " are allowed"));
  }
  for (int i = 0; i < in.stop_size(); ++i) {
    const std::string& s = in.stop(i);
    if (s.empty()) return Invalid(absl::StrCat("stopping.stop[", i, "] is empty"));
    if (s.size() > kMaxStopStringBytes) {
      return Invalid(absl::StrCat("stopping.stop[", i, "] is ", s.size(), " bytes; at most ",
                                  kMaxStopStringBytes, " are allowed"));
    }
    if (!IsValidUtf8(s)) return Invalid(absl::StrCat("stopping.stop[", i, "] is not valid UTF-8"));
    out.stop_strings.push_back(s);
  }
  out.stop_token_ids = ToInt32(in.stop_token_ids());
  if (absl::Status s = CheckIdsInVocab(out.stop_token_ids, vocab, "stopping.stop_token_ids");
      !s.ok()) {
    return s;
  }
  out.ignore_eos = in.ignore_eos();
  return out;
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int length = 0;
    uint32_t cp = 0;
    uint32_t min_cp = 0;
    if ((c & 0xE0) == 0xC0) {
      length = 2, cp = c & 0x1F, min_cp = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      length = 3, cp = c & 0x0F, min_cp = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      length = 4, cp = c & 0x07, min_cp = 0x10000;
    } else {
      return false;
    }
    if (end - p < length) return false;
    for (int i = 1; i < length; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    p += length;
  }
  return true;
}

absl::Status ValidateRequestId(std::string_view id) {
  if (id.empty() || id.size() > kMaxRequestIdBytes) {
    return Invalid(
        absl::StrCat("request_id must be 1 to ", kMaxRequestIdBytes, " bytes, got ", id.size()));
  }
  for (char c : id) {
    if (c < 0x20 || c > 0x7E) return Invalid("request_id must be printable ASCII");
  }
  return absl::OkStatus();
}

absl::StatusOr<engine::Request> ToEngineRequest(const pb::GenerateRequest& request,
                                                const engine::ModelConfig& config,
                                                const engine::Tokenizer& tokenizer,
                                                std::string request_id) {
  const int64_t vocab = config.vocab_size;
  const int64_t context = config.max_position_embeddings;
  engine::Request out;
  if (absl::Status s = ValidateRequestId(request_id); !s.ok()) return s;
  out.id = std::move(request_id);

  switch (request.prompt_case()) {
    case pb::GenerateRequest::kText: {
      const std::string& text = request.text();
      if (text.empty()) return Invalid("text is empty");
      if (!IsValidUtf8(text)) return Invalid("text is not valid UTF-8");
      // Identical to vaultgemma-run: the model's BOS (config.json), then the text without BOS.
      out.prompt_token_ids = {static_cast<int32_t>(config.bos_token_id)};
      const std::vector<int32_t> ids = tokenizer.Encode(text, /*add_bos=*/false);
      out.prompt_token_ids.insert(out.prompt_token_ids.end(), ids.begin(), ids.end());
      break;
    }
    case pb::GenerateRequest::kTokenIds: {
      if (request.token_ids().ids_size() == 0) return Invalid("token_ids.ids is empty");
      out.prompt_token_ids = ToInt32(request.token_ids().ids());
      if (absl::Status s = CheckIdsInVocab(out.prompt_token_ids, vocab, "token_ids.ids"); !s.ok()) {
        return s;
      }
      break;
    }
    default:
      return Invalid("prompt is missing: set text or token_ids");
  }
  if (static_cast<int64_t>(out.prompt_token_ids.size()) >= context) {
    return Invalid(absl::StrCat("prompt is ", out.prompt_token_ids.size(),
                                " tokens; the context holds ", context,
                                ", leaving no room to generate"));
  }

  auto sampling = ConvertSampling(request.sampling(), vocab);
  if (!sampling.ok()) return sampling.status();
  out.sampling = *sampling;
  auto stopping = ConvertStopping(request.stopping(), vocab, context);
  if (!stopping.ok()) return stopping.status();
  out.stopping = *std::move(stopping);

  if (request.top_logprobs() > static_cast<uint32_t>(kMaxTopLogprobs)) {
    return Invalid(absl::StrCat("top_logprobs must be in 0..", kMaxTopLogprobs, ", got ",
                                request.top_logprobs()));
  }
  out.top_logprobs = static_cast<int32_t>(request.top_logprobs());
  if (request.cache_salt().size() > kMaxCacheSaltBytes) {
    return Invalid(absl::StrCat("cache_salt is ", request.cache_salt().size(), " bytes; at most ",
                                kMaxCacheSaltBytes, " are allowed"));
  }
  out.cache_salt = request.cache_salt();
  return out;
}

pb::GenerateResponse ToResponse(const engine::TokenEvent& event) {
  pb::GenerateResponse out;
  out.set_text(event.text);
  for (size_t i = 0; i < event.token_ids.size(); ++i) {
    out.add_token_ids(static_cast<uint32_t>(event.token_ids[i]));
    pb::TokenLogprobs* lp = out.add_logprobs();
    if (i < event.logprobs.size()) lp->set_logprob(event.logprobs[i]);
    if (i < event.top_logprobs.size()) {
      for (const engine::TopLogprob& top : event.top_logprobs[i]) {
        pb::TopLogprob* t = lp->add_top();
        t->set_token_id(static_cast<uint32_t>(top.token_id));
        t->set_logprob(top.logprob);
      }
    }
  }
  if (event.finished) {
    switch (event.finish_reason) {
      case engine::FinishReason::kLength:
        out.set_finish_reason(pb::FINISH_REASON_LENGTH);
        break;
      case engine::FinishReason::kEos:
        out.set_finish_reason(pb::FINISH_REASON_EOS);
        break;
      case engine::FinishReason::kStopToken:
        out.set_finish_reason(pb::FINISH_REASON_STOP_TOKEN);
        break;
      case engine::FinishReason::kStopSequence:
        out.set_finish_reason(pb::FINISH_REASON_STOP_SEQUENCE);
        break;
      case engine::FinishReason::kCancelled:
      case engine::FinishReason::kError:
        out.set_finish_reason(pb::FINISH_REASON_UNSPECIFIED);
        break;
    }
    pb::Usage* usage = out.mutable_usage();
    usage->set_prompt_tokens(static_cast<uint32_t>(event.usage.prompt_tokens));
    usage->set_completion_tokens(static_cast<uint32_t>(event.usage.completion_tokens));
    usage->set_cached_prompt_tokens(static_cast<uint32_t>(event.usage.cached_prompt_tokens));
  }
  return out;
}

}  // namespace vg::server
