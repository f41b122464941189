// Plain data of one generation request and the events it produces. No behaviour, no protocol:
// server/ converts protobuf messages to and from these; the engine reads and writes nothing else.
#ifndef VG_ENGINE_REQUEST_H_
#define VG_ENGINE_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "engine/sampling/sampling_params.h"

namespace vg::engine {

struct StoppingCriteria {
  int32_t max_new_tokens = 64;            // cut to what fits in the context (finish reason kLength)
  std::vector<std::string> stop_strings;  // matched on decoded text; never emitted
  std::vector<int32_t> stop_token_ids;    // the token is emitted, then generation ends
  bool ignore_eos = false;
};

struct Request {
  std::string id;                         // unique among live requests; Cancel() takes it
  std::vector<int32_t> prompt_token_ids;  // used as given (the caller adds BOS)
  SamplingParams sampling;
  StoppingCriteria stopping;
  int32_t top_logprobs = 0;  // 0..20 most likely tokens reported with each generated token
  std::string cache_salt;    // prefix-cache blocks are shared only between equal salts
};

enum class FinishReason {
  kLength,        // max_new_tokens or the end of the context
  kEos,           // an EOS id of the model (unless ignore_eos)
  kStopToken,     // one of stopping.stop_token_ids
  kStopSequence,  // one of stopping.stop_strings
  kCancelled,     // Cancel(), or Shutdown without drain
  kError,         // the backend failed; TokenEvent::status says why
};

// "length", "eos", "stop_token", "stop_sequence", "cancelled", "error".
std::string_view FinishReasonName(FinishReason reason);

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_prompt_tokens = 0;  // prompt tokens whose KV came from the prefix cache
};

// Where a finished request's time went, from Submit (seconds, on the engine's Clock).
struct RequestTimings {
  double queue_seconds = 0;                // until its first step ran
  double time_to_first_token_seconds = 0;  // until its first generated token
  double total_seconds = 0;                // until it finished
};

// What one engine step produced for one request. Every generated token appears in exactly one
// event, in order; `text` is the newly complete UTF-8 since the previous event (held back while it
// could still become a stop string). The last event of a request has `finished` set.
struct TokenEvent {
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;  // of each token, under the soft-capped model distribution
  std::vector<std::vector<TopLogprob>> top_logprobs;  // per token, when asked for
  std::string text;
  bool finished = false;
  FinishReason finish_reason = FinishReason::kLength;  // meaningful when finished
  Usage usage;                                         // meaningful when finished
  RequestTimings timings;                              // meaningful when finished
  absl::Status status;                                 // non-OK only with kError
};

// Where the engine delivers a request's events. Called on the engine loop thread; implementations
// must return quickly and never block (buffer, then let the consumer drain).
class TokenSink {
 public:
  virtual ~TokenSink() = default;
  virtual void OnEvent(TokenEvent event) = 0;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_REQUEST_H_
