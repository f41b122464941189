// IncrementalDetokenizer and StopStringMatcher: text that streams correctly.
//
// IncrementalDetokenizer turns a growing list of token ids into text pieces that are always
// complete UTF-8: a byte-fallback character split across tokens (an emoji as four <0xXX> pieces)
// is emitted only when its last byte arrives, and the concatenation of every piece returned, plus
// Finish(), equals Tokenizer::Decode(all ids). Work per token is O(1) amortised (it decodes only a
// short window of recent tokens, not the whole sequence).
//
// StopStringMatcher watches that text for any of a request's stop strings, across token
// boundaries. It releases text as soon as it can no longer become the start of a stop string, holds
// back the rest, and on a match returns the text before the stop string (never the stop string).
//
// Thread-safety: one owner (the engine loop); the Tokenizer must outlive the detokenizer.
#ifndef VG_ENGINE_TOKENIZER_DETOKENIZER_H_
#define VG_ENGINE_TOKENIZER_DETOKENIZER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace vg::engine {

class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer);
  // Appends one generated token; returns the newly complete text (possibly empty).
  std::string Push(int32_t token_id);
  // Flushes what is still pending (an incomplete character becomes U+FFFD, as Decode does).
  std::string Finish();

 private:
  const Tokenizer& tokenizer_;
  std::vector<int32_t> pending_;  // tokens whose text is not yet fully emitted
  size_t emitted_ = 0;            // bytes of Decode(pending_) already returned
};

class StopStringMatcher {
 public:
  // Empty strings in `stops` are ignored.
  explicit StopStringMatcher(std::vector<std::string> stops);

  struct Result {
    std::string text;      // safe to emit now
    bool stopped = false;  // a stop string matched; `text` ends right before it
  };
  // Feeds newly decoded text.
  Result Push(std::string_view text);
  // End of generation without a match: releases everything held back.
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_TOKENIZER_DETOKENIZER_H_
