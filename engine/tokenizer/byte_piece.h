// Byte-fallback pieces: SentencePiece names them "<0xXX>" (uppercase hex).
#ifndef VG_ENGINE_TOKENIZER_BYTE_PIECE_H_
#define VG_ENGINE_TOKENIZER_BYTE_PIECE_H_

#include <string_view>

namespace vg::engine {

// spm's PieceToByte: the byte a piece named exactly "<0xXX>" stands for; -1 for anything else.
inline int PieceToByte(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (const char c : piece.substr(3, 2)) {
    value <<= 4;
    if (c >= '0' && c <= '9') {
      value |= c - '0';
    } else if (c >= 'A' && c <= 'F') {
      value |= c - 'A' + 10;
    } else {
      return -1;
    }
  }
  return value;
}

}  // namespace vg::engine

#endif  // VG_ENGINE_TOKENIZER_BYTE_PIECE_H_
