#include "engine/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/byte_piece.h"
#include "engine/tokenizer/utf8.h"

namespace vg::engine {
namespace {

bool IsValidUtf8(std::string_view s) {
  while (!s.empty()) {
    const size_t n = utf8::ValidCharLen(s);
    if (n == 0) return false;
    s.remove_prefix(n);
  }
  return true;
}

const char* TypeName(SpmModelType type) {
  switch (type) {
    case SpmModelType::kUnigram:
      return "UNIGRAM";
    case SpmModelType::kBpe:
      return "BPE";
    case SpmModelType::kWord:
      return "WORD";
    case SpmModelType::kChar:
      return "CHAR";
  }
  return "?";
}

// Symbols of the segmentation, a doubly linked list over a vector (spm's bpe::Model::Symbol).
struct Symbol {
  int32_t prev;
  int32_t next;
  uint32_t begin;  // byte offset into the normalized text; size 0 = merged away
  uint32_t size;
  bool frozen;  // a user-defined symbol: never merged
};

// A candidate merge of symbols `left` and its right neighbour `right`.
struct MergeCandidate {
  float score;
  int32_t left;
  int32_t right;
  uint32_t size;  // bytes of the merged piece, to detect stale candidates
};

// Max-heap order: higher score first; among equal scores the smaller left index.
struct LowerPriority {
  bool operator()(const MergeCandidate& a, const MergeCandidate& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Create(SpmModelProto model,
                                                                   std::string_view source) {
  std::unique_ptr<BpeTokenizer> tokenizer(new BpeTokenizer());
  tokenizer->model_ = std::move(model);
  absl::Status status = tokenizer->Init(source);
  if (!status.ok()) return status;
  return tokenizer;
}

absl::Status BpeTokenizer::Init(std::string_view source) {
  const auto invalid = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": ", parts...));
  };
  const SpmTrainerSpec& trainer = model_.trainer_spec;
  if (trainer.model_type != SpmModelType::kBpe) {
    return invalid("model type ", TypeName(trainer.model_type),
                   " is not supported (only BPE SentencePiece models are)");
  }
  if (model_.has_denormalizer_spec && !model_.denormalizer_spec.precompiled_charsmap.empty()) {
    return invalid("a denormalizer with a precompiled charsmap is not supported");
  }
  if (pieces_.empty()) return invalid("the model has no pieces");
  if (pieces_.size() > static_cast<size_t>(INT32_MAX)) return invalid("too many pieces");
  byte_fallback_ = trainer.byte_fallback;
  std::array<bool, 256> byte_seen{};
  std::vector<std::string_view> user_defined;
  mergeable_ids_.reserve(pieces_.size());
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const SpmPiece& p = pieces_[i];
    const int32_t id = static_cast<int32_t>(i);
    if (p.piece.empty()) return invalid("piece ", id, " is empty");
    if (std::isnan(p.score)) return invalid("piece ", id, " has a NaN score");
    const bool mergeable = p.type == SpmPieceType::kNormal ||
                           p.type == SpmPieceType::kUserDefined || p.type == SpmPieceType::kUnused;
    if (!(mergeable ? mergeable_ids_ : reserved_ids_).emplace(p.piece, id).second) {
      return invalid("piece ", id, " \"", p.piece, "\" is already defined");
    }
    if (p.type != SpmPieceType::kByte && !IsValidUtf8(p.piece)) {
      return invalid("piece ", id, " is not valid UTF-8");
    }
    switch (p.type) {
      case SpmPieceType::kUserDefined:
        user_defined.push_back(p.piece);
        break;
      case SpmPieceType::kUnused:
        has_unused_ = true;
        break;
      case SpmPieceType::kUnknown:
        if (unk_id_ >= 0)
          return invalid("unk is already defined (pieces ", unk_id_, " and ", id, ")");
        unk_id_ = id;
        break;
      case SpmPieceType::kByte: {
        if (!byte_fallback_) {
          return invalid("byte piece ", p.piece, " is found although byte_fallback is false");
        }
        const int byte = PieceToByte(p.piece);
        if (byte < 0) return invalid("byte piece ", id, " \"", p.piece, "\" is invalid");
        byte_seen[byte] = true;
        byte_ids_[byte] = id;
        break;
      }
      default:
        break;
    }
  }
  if (unk_id_ < 0) return invalid("unk is not defined");
  if (byte_fallback_ && std::find(byte_seen.begin(), byte_seen.end(), false) != byte_seen.end()) {
    return invalid("there are not 256 byte pieces although byte_fallback is true");
  }
  if (!IsValidUtf8(trainer.unk_surface)) return invalid("unk_surface is not valid UTF-8");

  user_symbols_ = std::make_unique<PrefixMatcher>(std::move(user_defined));
  absl::StatusOr<Normalizer> normalizer =
      Normalizer::Create(model_.normalizer_spec, trainer.treat_whitespace_as_suffix,
                         user_symbols_->empty() ? nullptr : user_symbols_.get());
  if (!normalizer.ok()) return invalid(std::string(normalizer.status().message()));
  normalizer_.emplace(*std::move(normalizer));
  strip_leading_space_ =
      model_.normalizer_spec.add_dummy_prefix || model_.normalizer_spec.remove_extra_whitespaces;
  strip_all_leading_spaces_ = model_.normalizer_spec.remove_extra_whitespaces;

  // As SentencePieceProcessor::bos_id() etc.: the named piece, if it has the expected type.
  const auto special = [&](const std::string& piece, SpmPieceType want) {
    const int32_t id = PieceToId(piece);
    return type(id) == want ? id : -1;
  };
  bos_id_ = special(trainer.bos_piece, SpmPieceType::kControl);
  eos_id_ = special(trainer.eos_piece, SpmPieceType::kControl);
  pad_id_ = special(trainer.pad_piece, SpmPieceType::kControl);

  for (const SpmSelfTestSample& sample : model_.self_test) {
    std::string pieces;
    for (const int32_t id : Encode(sample.input, /*add_bos=*/false)) {
      if (!pieces.empty()) pieces.push_back(' ');
      pieces.append(IdToPiece(id));
    }
    if (pieces != sample.expected) {
      return invalid("self-test failed on \"", sample.input, "\": expected \"", sample.expected,
                     "\", got \"", pieces, "\"");
    }
  }
  return absl::OkStatus();
}

std::string_view BpeTokenizer::IdToPiece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return pieces_[id].piece;
}

int32_t BpeTokenizer::PieceToId(std::string_view piece) const {
  if (auto it = reserved_ids_.find(piece); it != reserved_ids_.end()) return it->second;
  if (auto it = mergeable_ids_.find(piece); it != mergeable_ids_.end()) return it->second;
  return unk_id_;
}

std::vector<int32_t> BpeTokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  const std::string normalized = normalizer_->Normalize(text);
  if (normalized.empty()) return ids;
  const std::string_view norm(normalized);
  const auto piece_of = [&](const Symbol& s) { return norm.substr(s.begin, s.size); };

  // 1. Initial split: user-defined symbols (longest match, frozen), else one UTF-8 character.
  std::vector<Symbol> symbols;
  symbols.reserve(norm.size());
  for (size_t pos = 0; pos < norm.size();) {
    const std::string_view rest = norm.substr(pos);
    size_t length = user_symbols_->LongestMatch(rest);
    const bool frozen = length > 0;
    if (!frozen) length = utf8::OneCharLen(rest);
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({index - 1, pos + length < norm.size() ? index + 1 : -1,
                       static_cast<uint32_t>(pos), static_cast<uint32_t>(length), frozen});
    pos += length;
  }

  // 2-3. Merge the best-scoring adjacent pair until none is a piece.
  std::vector<MergeCandidate> agenda;
  agenda.reserve(symbols.size());
  // Only needed to resegment UNUSED pieces: merged piece -> (left, right) it was made from.
  absl::flat_hash_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;
  const auto maybe_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0 || symbols[left].frozen || symbols[right].frozen) return;
    const uint32_t size = symbols[left].size + symbols[right].size;
    const std::string_view merged = norm.substr(symbols[left].begin, size);
    const auto it = mergeable_ids_.find(merged);
    if (it == mergeable_ids_.end()) return;
    agenda.push_back({pieces_[it->second].score, left, right, size});
    std::push_heap(agenda.begin(), agenda.end(), LowerPriority());
    if (has_unused_ && type(it->second) == SpmPieceType::kUnused) {
      rev_merge[merged] = {piece_of(symbols[left]), piece_of(symbols[right])};
    }
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) maybe_add(i - 1, i);
  while (!agenda.empty()) {
    std::pop_heap(agenda.begin(), agenda.end(), LowerPriority());
    const MergeCandidate top = agenda.back();
    agenda.pop_back();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    if (left.size == 0 || right.size == 0 || left.size + right.size != top.size) continue;
    left.size += right.size;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.size = 0;
    maybe_add(left.prev, top.left);
    maybe_add(top.left, left.next);
  }

  // 4-5. Resegment UNUSED pieces into the halves they were merged from; unknown symbols become
  // byte pieces (byte_fallback) or are fused into one unk id.
  bool prev_unknown = false;
  std::vector<std::string_view> stack;
  for (int32_t index = 0; index != -1; index = symbols[index].next) {
    stack.push_back(piece_of(symbols[index]));
    while (!stack.empty()) {
      const std::string_view piece = stack.back();
      stack.pop_back();
      const int32_t id = PieceToId(piece);
      if (has_unused_ && type(id) == SpmPieceType::kUnused) {
        if (auto it = rev_merge.find(piece); it != rev_merge.end()) {
          stack.push_back(it->second.second);
          stack.push_back(it->second.first);
          continue;
        }
      }
      const bool unknown = id == unk_id_;
      if (unknown && byte_fallback_) {
        for (const char c : piece) ids.push_back(byte_ids_[static_cast<uint8_t>(c)]);
      } else if (!(unknown && prev_unknown)) {
        ids.push_back(id);
      }
      prev_unknown = unknown;
    }
  }
  return ids;
}

void BpeTokenizer::AppendPieceText(int32_t id, bool strip_leading_space, std::string& text) const {
  std::string_view piece = pieces_[id].piece;
  if (strip_leading_space && piece.substr(0, utf8::kSpaceSymbol.size()) == utf8::kSpaceSymbol) {
    piece.remove_prefix(utf8::kSpaceSymbol.size());
  }
  utf8::AppendUnescaped(piece, text);
}

absl::StatusOr<std::string> BpeTokenizer::Decode(std::span<const int32_t> ids) const {
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      return absl::OutOfRangeError(
          absl::StrCat("Invalid id: ", id, " (vocab size ", vocab_size(), ")"));
    }
  }
  std::string text;
  std::string bytes;  // a pending run of byte pieces
  const auto flush_bytes = [&] {
    std::string_view rest(bytes);
    while (!rest.empty()) {
      const size_t n = utf8::ValidCharLen(rest);
      text.append(n == 0 ? utf8::kReplacementChar : rest.substr(0, n));
      rest.remove_prefix(n == 0 ? 1 : n);
    }
    bytes.clear();
  };
  bool at_start = true;         // still expecting the leading space to strip
  bool stripped_space = false;  // a leading "▁" was consumed
  for (const int32_t given : ids) {
    // spm maps ids to pieces and back, so a piece string shared by two ids decodes as the one
    // PieceToId finds.
    const int32_t id = PieceToId(pieces_[given].piece);
    const SpmPieceType t = type(id);
    if (t == SpmPieceType::kByte) {
      bytes.push_back(static_cast<char>(PieceToByte(pieces_[id].piece)));
      continue;
    }
    flush_bytes();
    if (stripped_space || !text.empty()) at_start = false;
    stripped_space = false;
    if (t == SpmPieceType::kControl) continue;
    if (t == SpmPieceType::kUnknown) {
      text.append(model_.trainer_spec.unk_surface);
      continue;
    }
    const bool strip = at_start && strip_leading_space_;
    AppendPieceText(id, strip, text);
    if (strip && !strip_all_leading_spaces_) {
      stripped_space =
          pieces_[id].piece.compare(0, utf8::kSpaceSymbol.size(), utf8::kSpaceSymbol) == 0;
    }
  }
  flush_bytes();
  return text;
}

std::string BpeTokenizer::PieceBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  switch (type(id)) {
    case SpmPieceType::kControl:
      return {};
    case SpmPieceType::kUnknown:
      return model_.trainer_spec.unk_surface;
    case SpmPieceType::kByte:
      return std::string(1, static_cast<char>(PieceToByte(pieces_[id].piece)));
    default: {
      std::string text;
      utf8::AppendUnescaped(pieces_[id].piece, text);
      return text;
    }
  }
}

}  // namespace vg::engine
