// IncrementalDetokenizer and StopStringMatcher: text that streams correctly.
//
// IncrementalDetokenizer turns a growing list of token ids into text pieces that are always
// complete UTF-8: a byte-fallback character split across tokens (an emoji as four <0xXX> pieces)
// is emitted only when its last byte arrives, and the concatenation of every piece returned, plus
// Finish(), equals Tokenizer::Decode(all ids). Work per token is O(1): it replays Decode's state
// machine (../shared/reference/sentencepiece-format.md section 4) one id at a time and keeps only
// the bytes of an unfinished character (at most three).
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
  // Keeps a reference to `tokenizer`, which must outlive this object. Cheap to copy.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer);

  // Appends one generated token; returns the newly complete text (possibly empty), always valid
  // UTF-8 that never ends inside a character. Bytes that can no longer start a valid character
  // come out as one U+FFFD each, as Decode writes them. An id outside [0, vocab_size()) (which
  // Decode rejects) contributes nothing. Precondition: Finish() has not been called.
  std::string Push(int32_t token_id);

  // Flushes what is still pending (an incomplete character becomes one U+FFFD per byte, as Decode
  // does). Afterwards Push must not be called; a second Finish returns "".
  std::string Finish();

 private:
  // Decodes the pending byte-piece run into `out`. Unless `final`, a tail that may still become a
  // valid character stays in bytes_.
  void DrainBytes(bool final, std::string& out);

  const Tokenizer* tokenizer_;  // not owned
  std::string bytes_;           // unfinished character from byte pieces (<= 3 bytes)
  // Decode's leading-space state: whether the next text piece may lose its leading U+2581.
  bool produced_text_ = false;  // Decode's `!text.empty()`
  bool at_start_ = true;
  bool stripped_space_ = false;
  // Whether the model strips leading spaces while the output is empty (remove_extra_whitespaces)
  // or only once; probed through Decode the first time it matters. -1: not known yet.
  int strips_while_empty_ = -1;
};

class StopStringMatcher {
 public:
  // Empty strings in `stops` are ignored. Stops should be valid UTF-8 (matching is byte-exact);
  // then the text returned never splits a character when the pushed text does not.
  explicit StopStringMatcher(std::vector<std::string> stops);

  struct Result {
    std::string text;      // safe to emit now
    bool stopped = false;  // a stop string matched; `text` ends right before it
  };

  // Feeds newly decoded text. The result is what the stream becomes if cut at the earliest
  // position where any stop string occurs (several stops at the same position give the same
  // text, so which one matched is not reported). It stops as soon as that position is certain: a
  // match is reported only when no stop string starting earlier could still complete. Held back
  // is exactly the shortest suffix from which a stop string could still begin. After a stop,
  // returns {"", true}.
  Result Push(std::string_view text);

  // End of generation without a reported match: releases everything held back. If the held text
  // contains a complete stop string (held because a longer stop starting earlier was pending),
  // returns only the text before it and stopped() becomes true.
  std::string Flush();

  // Whether a stop string has matched (in Push or Flush).
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_TOKENIZER_DETOKENIZER_H_
