#include "engine/tokenizer/detokenizer.h"

#include <span>
#include <utility>

#include "absl/status/statusor.h"
#include "engine/tokenizer/byte_piece.h"
#include "engine/tokenizer/utf8.h"

namespace vg::engine {
namespace {

bool IsTrailByte(char c) { return (static_cast<uint8_t>(c) & 0xC0) == 0x80; }

// Whether the incomplete `prefix` (ValidCharLen == 0) can still become a character that
// utf8::ValidCharLen accepts. Its rules (no overlongs, surrogates or code points past U+10FFFF)
// only look at the lead byte and the first trail byte, so trying every second byte and padding
// the rest with trail bytes is exact.
bool CanBecomeValidChar(std::string_view prefix) {
  const uint8_t lead = static_cast<uint8_t>(prefix[0]);
  const size_t length = (lead & 0xE0) == 0xC0   ? 2
                        : (lead & 0xF0) == 0xE0 ? 3
                        : (lead & 0xF8) == 0xF0 ? 4
                                                : 1;
  if (prefix.size() >= length) return false;
  for (size_t i = 1; i < prefix.size(); ++i) {
    if (!IsTrailByte(prefix[i])) return false;
  }
  std::string candidate(prefix);
  const bool needs_second = candidate.size() == 1;
  candidate.resize(length, '\x80');
  if (!needs_second) return utf8::ValidCharLen(candidate) == length;
  for (int second = 0x80; second <= 0xBF; ++second) {
    candidate[1] = static_cast<char>(second);
    if (utf8::ValidCharLen(candidate) == length) return true;
  }
  return false;
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer)
    : tokenizer_(&tokenizer) {}

void IncrementalDetokenizer::DrainBytes(bool final, std::string& out) {
  // Decode's greedy left-to-right pass over the byte run; UTF-8 is prefix-free, so holding an
  // unfinished tail and resuming later yields the same characters and U+FFFDs.
  const std::string_view run(bytes_);
  size_t pos = 0;
  while (pos < run.size()) {
    const std::string_view rest = run.substr(pos);
    const size_t n = utf8::ValidCharLen(rest);
    if (n > 0) {
      out.append(rest.substr(0, n));
      pos += n;
      continue;
    }
    if (!final && CanBecomeValidChar(rest)) break;
    out.append(utf8::kReplacementChar);
    ++pos;
  }
  if (pos > 0) produced_text_ = true;
  bytes_.erase(0, pos);
}

std::string IncrementalDetokenizer::Push(int32_t token_id) {
  std::string out;
  if (token_id < 0 || token_id >= tokenizer_->vocab_size()) return out;
  // Decode maps each id to its piece and back, so a piece string shared by two ids decodes as
  // the one PieceToId finds (control, unknown and byte pieces win).
  const std::string_view piece = tokenizer_->IdToPiece(token_id);
  const int32_t id = tokenizer_->PieceToId(piece);
  std::string surface = tokenizer_->PieceBytes(id);

  // A byte piece is the only kind whose surface is its single raw byte ("<0x41>" as a user-defined
  // piece of a model without byte fallback decodes literally).
  const int byte = PieceToByte(piece);
  if (byte >= 0 && surface.size() == 1 && static_cast<uint8_t>(surface[0]) == byte) {
    bytes_.push_back(surface[0]);
    DrainBytes(/*final=*/false, out);
    return out;
  }

  // The rest mirrors the loop body of BpeTokenizer::Decode for a non-byte piece.
  DrainBytes(/*final=*/true, out);
  if (stripped_space_ || produced_text_) at_start_ = false;
  stripped_space_ = false;
  // Control pieces (empty surface) and the unknown piece are never stripped.
  if (surface.empty() || id == tokenizer_->unk_id() || !at_start_) {
    if (!surface.empty()) produced_text_ = true;
    out.append(surface);
    return out;
  }
  // The first text piece: Decode alone knows whether the model strips its leading U+2581
  // (add_dummy_prefix || remove_extra_whitespaces), so ask it about this one piece.
  const int32_t one[1] = {id};
  absl::StatusOr<std::string> first = tokenizer_->Decode(std::span<const int32_t>(one));
  std::string text = first.ok() ? *std::move(first) : surface;
  const bool stripped = text.size() < surface.size();
  if (stripped && text.empty()) {
    // A lone "▁" vanished. Whether the next piece is still stripped distinguishes
    // remove_extra_whitespaces (strip while the output is empty) from add_dummy_prefix (once).
    if (strips_while_empty_ < 0) {
      const int32_t two[2] = {id, id};
      absl::StatusOr<std::string> both = tokenizer_->Decode(std::span<const int32_t>(two));
      strips_while_empty_ = both.ok() && both->empty() ? 1 : 0;
    }
    stripped_space_ = strips_while_empty_ == 0;
  } else {
    stripped_space_ = stripped;
  }
  if (!text.empty()) produced_text_ = true;
  out.append(text);
  return out;
}

std::string IncrementalDetokenizer::Finish() {
  std::string out;
  DrainBytes(/*final=*/true, out);
  return out;
}

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) {
  for (std::string& stop : stops) {
    if (!stop.empty()) stops_.push_back(std::move(stop));
  }
}

StopStringMatcher::Result StopStringMatcher::Push(std::string_view text) {
  if (stopped_) return {"", true};
  held_.append(text);
  const std::string_view buffer(held_);
  // Positions before held_ were ruled out by earlier calls, so scanning held_ + text from the
  // start finds the earliest position where a stop occurs or may still begin. held_ stays
  // shorter than the longest stop, so the scan is O((|text| + max stop) * total stop length).
  for (size_t i = 0; i < buffer.size(); ++i) {
    const std::string_view rest = buffer.substr(i);
    bool complete = false;
    bool partial = false;
    for (const std::string& stop : stops_) {
      if (stop[0] != rest[0]) continue;
      if (rest.size() >= stop.size()) {
        complete = complete || rest.substr(0, stop.size()) == stop;
      } else {
        partial = partial || std::string_view(stop).substr(0, rest.size()) == rest;
      }
    }
    if (complete) {
      // Any stop matching here cuts the text at the same place, so which one is irrelevant.
      Result result{held_.substr(0, i), true};
      stopped_ = true;
      held_.clear();
      return result;
    }
    if (partial) {
      // A stop starting with a trail byte (invalid UTF-8) must not make us split a character.
      size_t cut = i;
      while (cut > 0 && IsTrailByte(buffer[cut])) --cut;
      Result result{held_.substr(0, cut), false};
      held_.erase(0, cut);
      return result;
    }
  }
  Result result{std::move(held_), false};
  held_.clear();
  return result;
}

std::string StopStringMatcher::Flush() {
  if (stopped_) return "";
  // The stream has ended, so only complete stops count now; the earliest one cuts the text.
  size_t cut = held_.size();
  for (const std::string& stop : stops_) {
    const size_t found = held_.find(stop);
    if (found < cut) {
      cut = found;
      stopped_ = true;
    }
  }
  std::string out = held_.substr(0, cut);
  held_.clear();
  return out;
}

}  // namespace vg::engine
