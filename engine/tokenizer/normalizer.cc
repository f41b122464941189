#include "engine/tokenizer/normalizer.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/utf8.h"

namespace vg::engine {
namespace {

// spm's kMaxTrieResultsSize: commonPrefixSearch reports at most this many matches.
constexpr size_t kMaxCharsMapResults = 32;

// Darts-clone DoubleArrayUnit accessors.
bool HasLeaf(uint32_t unit) { return ((unit >> 8) & 1) == 1; }
uint32_t Value(uint32_t unit) { return unit & ((1U << 31) - 1); }
uint32_t Label(uint32_t unit) { return unit & ((1U << 31) | 0xFF); }
uint32_t Offset(uint32_t unit) { return (unit >> 10) << ((unit & (1U << 9)) >> 6); }

}  // namespace

absl::StatusOr<PrecompiledCharsMap> PrecompiledCharsMap::Create(std::string_view blob) {
  if (blob.size() <= 4) return absl::InvalidArgumentError("precompiled_charsmap is truncated");
  uint32_t trie_size = 0;
  for (int i = 0; i < 4; ++i)
    trie_size |= static_cast<uint32_t>(static_cast<uint8_t>(blob[i])) << (8 * i);
  if (trie_size < 4 || trie_size > blob.size() - 4 || trie_size % 4 != 0) {
    return absl::InvalidArgumentError("precompiled_charsmap: bad double-array size");
  }
  PrecompiledCharsMap map;
  map.units_.resize(trie_size / 4);
  for (size_t u = 0; u < map.units_.size(); ++u) {
    uint32_t unit = 0;
    for (int i = 0; i < 4; ++i) {
      unit |= static_cast<uint32_t>(static_cast<uint8_t>(blob[4 + 4 * u + i])) << (8 * i);
    }
    map.units_[u] = unit;
  }
  map.replacements_ = std::string(blob.substr(4 + trie_size));
  return map;
}

std::pair<size_t, std::string_view> PrecompiledCharsMap::LongestMatch(std::string_view text) const {
  size_t num_results = 0;
  size_t longest_length = 0;
  uint32_t longest_value = 0;
  uint32_t node_pos = Offset(units_[0]);
  for (size_t i = 0; i < text.size(); ++i) {
    const uint8_t byte = static_cast<uint8_t>(text[i]);
    node_pos ^= byte;
    if (node_pos >= units_.size()) break;
    const uint32_t unit = units_[node_pos];
    if (Label(unit) != byte) break;
    node_pos ^= Offset(unit);
    if (HasLeaf(unit)) {
      if (node_pos >= units_.size()) break;
      if (num_results < kMaxCharsMapResults && i + 1 > longest_length) {
        longest_length = i + 1;
        longest_value = Value(units_[node_pos]);
      }
      ++num_results;
    }
  }
  if (longest_length == 0 || longest_value >= replacements_.size()) return {0, {}};
  // Replacements are '\0'-terminated; a missing terminator ends at the blob's end.
  std::string_view rest = std::string_view(replacements_).substr(longest_value);
  return {longest_length, rest.substr(0, std::min(rest.find('\0'), rest.size()))};
}

absl::StatusOr<Normalizer> Normalizer::Create(const SpmNormalizerSpec& spec,
                                              bool treat_whitespace_as_suffix,
                                              const PrefixMatcher* user_symbols) {
  Normalizer n;
  n.add_dummy_prefix_ = spec.add_dummy_prefix;
  n.remove_extra_whitespaces_ = spec.remove_extra_whitespaces;
  n.escape_whitespaces_ = spec.escape_whitespaces;
  n.treat_whitespace_as_suffix_ = treat_whitespace_as_suffix;
  n.user_symbols_ = user_symbols;
  if (!spec.precompiled_charsmap.empty()) {
    absl::StatusOr<PrecompiledCharsMap> map =
        PrecompiledCharsMap::Create(spec.precompiled_charsmap);
    if (!map.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("normalizer '", spec.name, "': ", map.status().message()));
    }
    n.charsmap_ = *std::move(map);
    n.has_charsmap_ = true;
  }
  return n;
}

std::pair<std::string_view, size_t> Normalizer::NormalizePrefix(std::string_view input) const {
  if (user_symbols_ != nullptr) {
    const size_t length = user_symbols_->LongestMatch(input);
    if (length > 0) return {input.substr(0, length), length};
  }
  if (has_charsmap_) {
    const auto [length, replacement] = charsmap_.LongestMatch(input);
    if (length > 0) return {replacement, length};
  }
  const size_t length = utf8::ValidCharLen(input);
  if (length == 0) return {utf8::kReplacementChar, 1};
  return {input.substr(0, length), length};
}

std::string Normalizer::Normalize(std::string_view input) const {
  std::string out;
  out.reserve(input.size() * 3 / 2 + 4);
  const std::string_view space = escape_whitespaces_ ? utf8::kSpaceSymbol : " ";
  if (remove_extra_whitespaces_) {
    while (!input.empty()) {
      const auto [piece, consumed] = NormalizePrefix(input);
      if (piece != " ") break;
      input.remove_prefix(consumed);
    }
  }
  if (input.empty()) return out;
  if (!treat_whitespace_as_suffix_ && add_dummy_prefix_) out.append(space);

  bool is_prev_space = remove_extra_whitespaces_;
  while (!input.empty()) {
    auto [piece, consumed] = NormalizePrefix(input);
    if (is_prev_space) {
      while (!piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
    }
    if (!piece.empty()) {
      for (const char c : piece) {
        if (escape_whitespaces_ && c == ' ') {
          out.append(utf8::kSpaceSymbol);
        } else {
          out.push_back(c);
        }
      }
      is_prev_space = piece.back() == ' ';
    }
    input.remove_prefix(consumed);
    if (!remove_extra_whitespaces_) is_prev_space = false;
  }
  if (remove_extra_whitespaces_) {
    while (std::string_view(out).ends_with(space)) out.resize(out.size() - space.size());
  }
  if (treat_whitespace_as_suffix_ && add_dummy_prefix_) out.append(space);
  return out;
}

}  // namespace vg::engine
