// Normalizer: SentencePiece's text normalization (src/normalizer.cc) as configured by a
// NormalizerSpec: user-defined symbols copied as is, the precompiled character map (a Darts-clone
// double array of replacement rules, e.g. nmt_nfkc; empty for "identity", which Gemma uses),
// malformed UTF-8 -> U+FFFD one byte at a time, optional removal of extra spaces, the dummy "▁"
// prefix (or suffix) and escaping of ' ' to U+2581.
//
// Thread-safety: immutable after Create; Normalize may be called concurrently.
#ifndef VG_ENGINE_TOKENIZER_NORMALIZER_H_
#define VG_ENGINE_TOKENIZER_NORMALIZER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "engine/tokenizer/model_proto.h"
#include "engine/tokenizer/prefix_matcher.h"

namespace vg::engine {

// A validated view of a precompiled_charsmap blob:
// <uint32 LE byte size of the double array><double array units><'\0'-separated replacements>.
class PrecompiledCharsMap {
 public:
  // Copies the blob. INVALID_ARGUMENT when its header or array size is inconsistent.
  static absl::StatusOr<PrecompiledCharsMap> Create(std::string_view blob);

  // The longest rule matching a prefix of `text` (among the first 32 matches, as spm's
  // commonPrefixSearch is capped): {bytes consumed, replacement}. {0, ""} when no rule matches.
  // Corrupt arrays yield no match rather than an out-of-bounds read.
  std::pair<size_t, std::string_view> LongestMatch(std::string_view text) const;

 private:
  std::vector<uint32_t> units_;
  std::string replacements_;
};

class Normalizer {
 public:
  // `user_symbols` (may be null) must outlive the Normalizer. INVALID_ARGUMENT when the spec's
  // charsmap is malformed.
  static absl::StatusOr<Normalizer> Create(const SpmNormalizerSpec& spec,
                                           bool treat_whitespace_as_suffix,
                                           const PrefixMatcher* user_symbols);

  // The normalized text that BPE segments (what spm's Normalizer::Normalize returns).
  std::string Normalize(std::string_view input) const;

 private:
  Normalizer() = default;
  // One normalization step: {output for the prefix, bytes of input consumed (>= 1)}.
  std::pair<std::string_view, size_t> NormalizePrefix(std::string_view input) const;

  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
  bool treat_whitespace_as_suffix_ = false;
  const PrefixMatcher* user_symbols_ = nullptr;
  bool has_charsmap_ = false;
  PrecompiledCharsMap charsmap_;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_TOKENIZER_NORMALIZER_H_
