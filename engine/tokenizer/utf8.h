// UTF-8 helpers with SentencePiece's exact semantics (src/util.h, util.cc), which the encoder and
// decoder must reproduce byte for byte: what counts as one character, and what counts as invalid.
#ifndef VG_ENGINE_TOKENIZER_UTF8_H_
#define VG_ENGINE_TOKENIZER_UTF8_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace vg::engine::utf8 {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD
inline constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";      // U+2581 "▁"

// Length of the character starting at text[0], judged by the lead byte only and clipped to the
// text (spm's OneCharLen). Precondition: !text.empty().
inline size_t OneCharLen(std::string_view text) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return std::min<size_t>(kLen[static_cast<uint8_t>(text[0]) >> 4], text.size());
}

// Length of the well-formed character (no surrogates, no overlongs, <= U+10FFFF) at text[0], or 0
// when it is malformed (spm's IsValidDecodeUTF8 returning false; spm then consumes one byte).
// Precondition: !text.empty().
inline size_t ValidCharLen(std::string_view text) {
  const auto b = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const auto trail = [&](size_t i) { return (b(i) & 0xC0) == 0x80; };
  const auto valid = [](uint32_t cp) { return cp < 0xD800 || (cp >= 0xE000 && cp <= 0x10FFFF); };
  const size_t len = text.size();
  if (b(0) < 0x80) return 1;
  if (len >= 2 && (b(0) & 0xE0) == 0xC0) {
    const uint32_t cp = ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    return trail(1) && cp >= 0x80 && valid(cp) ? 2 : 0;
  }
  if (len >= 3 && (b(0) & 0xF0) == 0xE0) {
    const uint32_t cp = ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    return trail(1) && trail(2) && cp >= 0x800 && valid(cp) ? 3 : 0;
  }
  if (len >= 4 && (b(0) & 0xF8) == 0xF0) {
    const uint32_t cp =
        ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    return trail(1) && trail(2) && trail(3) && cp >= 0x10000 && valid(cp) ? 4 : 0;
  }
  return 0;
}

// Appends `piece` to `out` with every U+2581 replaced by ' ' (how pieces decode).
inline void AppendUnescaped(std::string_view piece, std::string& out) {
  for (size_t pos = 0;;) {
    const size_t found = piece.find(kSpaceSymbol, pos);
    if (found == std::string_view::npos) {
      out.append(piece.substr(pos));
      return;
    }
    out.append(piece.substr(pos, found - pos));
    out.push_back(' ');
    pos = found + kSpaceSymbol.size();
  }
}

}  // namespace vg::engine::utf8

#endif  // VG_ENGINE_TOKENIZER_UTF8_H_
