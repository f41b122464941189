// Tokenizer: SentencePiece models (`tokenizer.model`) in our own code.
//
// Debian's libsentencepiece cannot share a process with gRPC (../shared/TOOLCHAIN.md, landmine 1),
// so this module reads the serialized sentencepiece.ModelProto itself and reimplements what
// `spm_encode` / `spm_decode` do for BPE models: the normalizer flags stored in the file,
// user-defined symbols (longest match, never merged), score-ordered BPE merges, resegmentation of
// UNUSED pieces, and byte fallback. ../shared/reference/sentencepiece-format.md is the
// specification. Parity with the real library is tested by running spm_encode / spm_decode as
// separate processes.
//
// Thread-safety: a loaded Tokenizer is immutable; all const methods may be called concurrently.
#ifndef VG_ENGINE_TOKENIZER_TOKENIZER_H_
#define VG_ENGINE_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace vg::engine {

class Tokenizer {
 public:
  // Loads a tokenizer.model file. NOT_FOUND if missing; INVALID_ARGUMENT (naming the file) if it is
  // not a valid ModelProto, uses a model type other than BPE, or fails SentencePiece's load-time
  // checks (exactly one UNKNOWN piece, complete byte pieces when byte_fallback is set, ...).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::filesystem::path& path);
  // Same, from the serialized bytes. `source` names the origin in error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromSerializedProto(
      std::string_view bytes, std::string_view source = "tokenizer.model");

  virtual ~Tokenizer() = default;

  // Encodes text exactly as `spm_encode --output_format=id` does; prepends bos_id() when add_bos.
  // Never fails: bytes that are not valid UTF-8 are encoded as SentencePiece does (U+FFFD).
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_bos) const = 0;

  // Decodes ids exactly as `spm_decode --input_format=id` does: control pieces vanish, byte pieces
  // are reassembled into UTF-8 (invalid bytes become U+FFFD), U+2581 becomes a space. The result is
  // always valid UTF-8. OUT_OF_RANGE naming the id when one is outside [0, vocab_size()).
  virtual absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const = 0;

  // The piece string of an id ("<0x41>", "▁the", "<bos>"); empty for ids out of range.
  virtual std::string_view IdToPiece(int32_t id) const = 0;

  // The id of a piece string as SentencePiece's PieceToId computes it (control, unknown and byte
  // pieces first, then the others); unk_id() when the string is not a piece. The default
  // implementation is a linear scan; Tokenizer::Load's implementation is a hash lookup.
  virtual int32_t PieceToId(std::string_view piece) const;

  // The bytes `id` contributes to decoded text in the middle of a sequence, for streaming: a byte
  // piece gives its single raw byte (which alone may not be valid UTF-8), a control piece nothing,
  // the unknown piece its surface (" \u2047 "), any other piece its string with U+2581 replaced
  // by ' '. Unlike Decode, no leading space is stripped and bytes are not checked as UTF-8.
  // Empty for ids out of range. The default implementation only replaces U+2581.
  virtual std::string PieceBytes(int32_t id) const;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when the model has none
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;
  virtual int32_t unk_id() const = 0;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_TOKENIZER_TOKENIZER_H_
