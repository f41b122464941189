// Conversion between the wire messages of vaultgemma.v1 and the engine's plain request/event
// structs. All request validation of server/ lives here: every bad field is INVALID_ARGUMENT with a
// message that names it ("sampling.top_p must be in (0, 1], got 0"), before the engine sees it.
#ifndef VG_SERVER_REQUEST_CONVERSION_H_
#define VG_SERVER_REQUEST_CONVERSION_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/request.h"
#include "engine/tokenizer/tokenizer.h"
#include "vaultgemma/v1/text_generation.pb.h"

namespace vg::server {

inline constexpr int kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;
inline constexpr int kMaxTopLogprobs = 20;
inline constexpr size_t kMaxRequestIdBytes = 128;
// Every registered prefix-cache block keeps its own copy of the salt, so an unbounded salt would
// let one request pin megabytes per block; a tenant id or a hash of one fits easily.
inline constexpr size_t kMaxCacheSaltBytes = 256;
inline constexpr int32_t kDefaultMaxNewTokens = 64;

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF).
bool IsValidUtf8(std::string_view text);

// Validates `request` and converts it. A text prompt becomes [config.bos_token_id] followed by
// tokenizer.Encode(text, false), exactly as vaultgemma-run does; token_ids are used as given.
// An unset seed becomes a random one. `request_id` becomes Request::id. INVALID_ARGUMENT naming the
// field for every bad value (cache_salt included: at most kMaxCacheSaltBytes). Thread-safe (the
// tokenizer's Encode is const).
absl::StatusOr<engine::Request> ToEngineRequest(const vaultgemma::v1::GenerateRequest& request,
                                                const engine::ModelConfig& config,
                                                const engine::Tokenizer& tokenizer,
                                                std::string request_id);

// INVALID_ARGUMENT unless `id` is 1..kMaxRequestIdBytes printable ASCII bytes (it travels in the
// "x-request-id" metadata).
absl::Status ValidateRequestId(std::string_view id);

// One streamed message for one engine event. finish_reason and usage are set only when the event
// is the last one (`finished`); kCancelled and kError have no wire reason (UNSPECIFIED) because
// they end the stream with a non-OK status instead.
vaultgemma::v1::GenerateResponse ToResponse(const engine::TokenEvent& event);

}  // namespace vg::server

#endif  // VG_SERVER_REQUEST_CONVERSION_H_
