#include "engine/tokenizer/model_proto.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/wire_reader.h"

namespace vg::engine {
namespace {

// Field numbers, from sentencepiece_model.proto.
namespace field {
constexpr uint32_t kPieces = 1, kTrainerSpec = 2, kNormalizerSpec = 3, kSelfTestData = 4,
                   kDenormalizerSpec = 5;
constexpr uint32_t kPiece = 1, kScore = 2, kType = 3;
constexpr uint32_t kModelType = 3, kVocabSize = 4, kTreatWhitespaceAsSuffix = 24, kSplitDigits = 25,
                   kByteFallback = 35, kUnkId = 40, kBosId = 41, kEosId = 42, kPadId = 43,
                   kUnkSurface = 44, kUnkPiece = 45, kBosPiece = 46, kEosPiece = 47, kPadPiece = 48;
constexpr uint32_t kName = 1, kPrecompiledCharsmap = 2, kAddDummyPrefix = 3,
                   kRemoveExtraWhitespaces = 4, kEscapeWhitespaces = 5;
constexpr uint32_t kSamples = 1, kInput = 1, kExpected = 2;
}  // namespace field

bool Is(const WireField& f, uint32_t number, WireType type) {
  return f.number == number && f.type == type;
}
bool IsVarint(const WireField& f, uint32_t number) { return Is(f, number, WireType::kVarint); }
bool IsBytes(const WireField& f, uint32_t number) {
  return Is(f, number, WireType::kLengthDelimited);
}

absl::Status WithContext(const absl::Status& status, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(message), ": ", status.message()));
}

// Calls `on_field` for every field of the message in `bytes`.
template <typename OnField>
absl::Status ForEachField(std::string_view bytes, std::string_view message, OnField on_field) {
  WireReader reader(bytes);
  while (!reader.done()) {
    absl::StatusOr<WireField> f = reader.Next();
    if (!f.ok()) return WithContext(f.status(), message);
    absl::Status status = on_field(*f);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status ParsePiece(std::string_view bytes, SpmPiece& piece) {
  return ForEachField(bytes, "ModelProto.SentencePiece", [&](const WireField& f) {
    if (IsBytes(f, field::kPiece)) {
      piece.piece = std::string(f.bytes);
    } else if (Is(f, field::kScore, WireType::kFixed32)) {
      piece.score = f.AsFloat();
    } else if (IsVarint(f, field::kType)) {
      const int32_t v = f.AsInt32();
      // Closed enum: unknown values are not stored (libprotobuf keeps them as unknown fields).
      if (v >= 1 && v <= 6) piece.type = static_cast<SpmPieceType>(v);
    }
    return absl::OkStatus();
  });
}

absl::Status ParseTrainerSpec(std::string_view bytes, SpmTrainerSpec& spec) {
  return ForEachField(bytes, "TrainerSpec", [&](const WireField& f) {
    if (f.type == WireType::kVarint) {
      const int32_t v = f.AsInt32();
      switch (f.number) {
        case field::kModelType:
          if (v >= 1 && v <= 4) spec.model_type = static_cast<SpmModelType>(v);
          break;
        case field::kVocabSize:
          spec.vocab_size = v;
          break;
        case field::kTreatWhitespaceAsSuffix:
          spec.treat_whitespace_as_suffix = f.AsBool();
          break;
        case field::kSplitDigits:
          spec.split_digits = f.AsBool();
          break;
        case field::kByteFallback:
          spec.byte_fallback = f.AsBool();
          break;
        case field::kUnkId:
          spec.unk_id = v;
          break;
        case field::kBosId:
          spec.bos_id = v;
          break;
        case field::kEosId:
          spec.eos_id = v;
          break;
        case field::kPadId:
          spec.pad_id = v;
          break;
        default:
          break;
      }
    } else if (f.type == WireType::kLengthDelimited) {
      switch (f.number) {
        case field::kUnkSurface:
          spec.unk_surface = std::string(f.bytes);
          break;
        case field::kUnkPiece:
          spec.unk_piece = std::string(f.bytes);
          break;
        case field::kBosPiece:
          spec.bos_piece = std::string(f.bytes);
          break;
        case field::kEosPiece:
          spec.eos_piece = std::string(f.bytes);
          break;
        case field::kPadPiece:
          spec.pad_piece = std::string(f.bytes);
          break;
        default:
          break;
      }
    }
    return absl::OkStatus();
  });
}

absl::Status ParseNormalizerSpec(std::string_view bytes, std::string_view message,
                                 SpmNormalizerSpec& spec) {
  return ForEachField(bytes, message, [&](const WireField& f) {
    if (IsBytes(f, field::kName)) {
      spec.name = std::string(f.bytes);
    } else if (IsBytes(f, field::kPrecompiledCharsmap)) {
      spec.precompiled_charsmap = std::string(f.bytes);
    } else if (IsVarint(f, field::kAddDummyPrefix)) {
      spec.add_dummy_prefix = f.AsBool();
    } else if (IsVarint(f, field::kRemoveExtraWhitespaces)) {
      spec.remove_extra_whitespaces = f.AsBool();
    } else if (IsVarint(f, field::kEscapeWhitespaces)) {
      spec.escape_whitespaces = f.AsBool();
    }
    return absl::OkStatus();
  });
}

absl::Status ParseSelfTestData(std::string_view bytes, std::vector<SpmSelfTestSample>& samples) {
  return ForEachField(bytes, "SelfTestData", [&](const WireField& f) {
    if (!IsBytes(f, field::kSamples)) return absl::OkStatus();
    SpmSelfTestSample sample;
    absl::Status status = ForEachField(f.bytes, "SelfTestData.Sample", [&](const WireField& s) {
      if (IsBytes(s, field::kInput)) sample.input = std::string(s.bytes);
      if (IsBytes(s, field::kExpected)) sample.expected = std::string(s.bytes);
      return absl::OkStatus();
    });
    if (status.ok()) samples.push_back(std::move(sample));
    return status;
  });
}

}  // namespace

absl::StatusOr<SpmModelProto> ParseModelProto(std::string_view bytes) {
  SpmModelProto model;
  absl::Status status = ForEachField(bytes, "ModelProto", [&](const WireField& f) {
    if (f.type != WireType::kLengthDelimited) return absl::OkStatus();
    switch (f.number) {
      case field::kPieces: {
        SpmPiece piece;
        absl::Status s = ParsePiece(f.bytes, piece);
        if (s.ok()) model.pieces.push_back(std::move(piece));
        return s;
      }
      case field::kTrainerSpec:
        return ParseTrainerSpec(f.bytes, model.trainer_spec);
      case field::kNormalizerSpec:
        return ParseNormalizerSpec(f.bytes, "NormalizerSpec", model.normalizer_spec);
      case field::kSelfTestData:
        return ParseSelfTestData(f.bytes, model.self_test);
      case field::kDenormalizerSpec:
        model.has_denormalizer_spec = true;
        return ParseNormalizerSpec(f.bytes, "denormalizer NormalizerSpec", model.denormalizer_spec);
      default:
        return absl::OkStatus();
    }
  });
  if (!status.ok()) return status;
  return model;
}

}  // namespace vg::engine
