// BpeTokenizer: the Tokenizer for SentencePiece BPE models (model_type = BPE), a port of spm's
// bpe::Model::Encode plus the processor's byte-fallback / unknown handling and Decode. Created by
// Tokenizer::Load / FromSerializedProto (tokenizer.cc), which parse the ModelProto; this file
// holds the load-time validation and the algorithms.
//
// Thread-safety: immutable after Create; all const methods may be called concurrently.
#ifndef VG_ENGINE_TOKENIZER_BPE_TOKENIZER_H_
#define VG_ENGINE_TOKENIZER_BPE_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/model_proto.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/prefix_matcher.h"
#include "engine/tokenizer/tokenizer.h"

namespace vg::engine {

class BpeTokenizer final : public Tokenizer {
 public:
  // Validates `model` as spm's ModelInterface::InitializePieces and Normalizer do, and builds the
  // lookup tables. INVALID_ARGUMENT, prefixed with `source`, when: the model type is not BPE; a
  // piece is empty, duplicated within its class (as in spm, a CONTROL, UNKNOWN or BYTE piece may
  // share its string with a NORMAL, USER_DEFINED or UNUSED one; PieceToId then returns the
  // former), or (non-byte) not valid UTF-8; there is not exactly one UNKNOWN piece; byte pieces
  // appear without byte_fallback, or byte_fallback lacks any of the 256; a score is NaN; a charsmap
  // is malformed; a denormalizer charsmap is present (not supported); or a self-test sample stored
  // in the model does not reproduce.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Create(SpmModelProto model,
                                                              std::string_view source);

  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const override;
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const override;
  std::string_view IdToPiece(int32_t id) const override;
  int32_t PieceToId(std::string_view piece) const override;
  std::string PieceBytes(int32_t id) const override;

  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  int32_t pad_id() const override { return pad_id_; }
  int32_t unk_id() const override { return unk_id_; }

  // The normalized text BPE segments (exposed for tests).
  std::string Normalize(std::string_view text) const { return normalizer_->Normalize(text); }

 private:
  BpeTokenizer() = default;
  absl::Status Init(std::string_view source);
  SpmPieceType type(int32_t id) const { return model_.pieces[id].type; }
  // Appends the decoded text of `id` (a non-byte piece) as spm's DecodeSentencePiece does.
  void AppendPieceText(int32_t id, bool strip_leading_space, std::string& text) const;

  SpmModelProto model_;  // owns the piece strings the maps below point into
  std::vector<SpmPiece>& pieces_ = model_.pieces;
  // NORMAL, USER_DEFINED and UNUSED pieces: merge targets.
  absl::flat_hash_map<std::string_view, int32_t> mergeable_ids_;
  // CONTROL, UNKNOWN and BYTE pieces: looked up first by PieceToId, never merge targets.
  absl::flat_hash_map<std::string_view, int32_t> reserved_ids_;
  std::array<int32_t, 256> byte_ids_{};  // valid when byte_fallback_
  std::unique_ptr<PrefixMatcher> user_symbols_;
  std::optional<Normalizer> normalizer_;
  bool byte_fallback_ = false;
  bool has_unused_ = false;
  bool strip_leading_space_ = false;       // add_dummy_prefix || remove_extra_whitespaces
  bool strip_all_leading_spaces_ = false;  // remove_extra_whitespaces
  int32_t unk_id_ = -1;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  int32_t pad_id_ = -1;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_TOKENIZER_BPE_TOKENIZER_H_
