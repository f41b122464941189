// The subset of sentencepiece.ModelProto the tokenizer reads, as plain structs, and a hand-written
// parser for its wire format (sentencepiece_model.proto in this folder documents the fields and
// their numbers). Absent fields take their proto2 defaults, which are not always zero/false:
// add_dummy_prefix, remove_extra_whitespaces and escape_whitespaces default to true, pad_id to -1.
// Unknown fields, and known fields with an unexpected wire type, are skipped; unknown enum values
// leave the field unset, as libprotobuf does for proto2 (closed) enums. Repeated occurrences of a
// singular field follow protobuf semantics: scalars take the last value, messages merge.
//
// Thread-safety: plain data; ParseModelProto is reentrant.
#ifndef VG_ENGINE_TOKENIZER_MODEL_PROTO_H_
#define VG_ENGINE_TOKENIZER_MODEL_PROTO_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace vg::engine {

// ModelProto.SentencePiece.Type. The numbering is the wire format's (BYTE comes after UNUSED).
enum class SpmPieceType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// TrainerSpec.ModelType.
enum class SpmModelType : int32_t { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

struct SpmPiece {
  std::string piece;                          // field 1
  float score = 0.0f;                         // field 2
  SpmPieceType type = SpmPieceType::kNormal;  // field 3
};

struct SpmTrainerSpec {
  SpmModelType model_type = SpmModelType::kUnigram;  // 3
  int32_t vocab_size = 8000;                         // 4
  bool treat_whitespace_as_suffix = false;           // 24
  bool split_digits = false;                         // 25 (training only; kept for inspection)
  bool byte_fallback = false;                        // 35
  int32_t unk_id = 0;                                // 40
  int32_t bos_id = 1;                                // 41
  int32_t eos_id = 2;                                // 42
  int32_t pad_id = -1;                               // 43
  std::string unk_surface = " \xE2\x81\x87 ";        // 44
  std::string unk_piece = "<unk>";                   // 45
  std::string bos_piece = "<s>";                     // 46
  std::string eos_piece = "</s>";                    // 47
  std::string pad_piece = "<pad>";                   // 48
};

struct SpmNormalizerSpec {
  std::string name;                      // 1
  std::string precompiled_charsmap;      // 2
  bool add_dummy_prefix = true;          // 3
  bool remove_extra_whitespaces = true;  // 4
  bool escape_whitespaces = true;        // 5
};

// SelfTestData.Sample: `expected` is the space-joined pieces of encoding `input`.
struct SpmSelfTestSample {
  std::string input;     // 1
  std::string expected;  // 2
};

struct SpmModelProto {
  std::vector<SpmPiece> pieces;              // 1; a piece's id is its index
  SpmTrainerSpec trainer_spec;               // 2
  SpmNormalizerSpec normalizer_spec;         // 3
  std::vector<SpmSelfTestSample> self_test;  // 4 (SelfTestData.samples = 1)
  bool has_denormalizer_spec = false;        // 5 present
  SpmNormalizerSpec denormalizer_spec;       // 5
};

// Parses a serialized ModelProto. INVALID_ARGUMENT describing the first wire-format error
// (truncation, bad lengths, bad tags). Does not check SentencePiece's semantic rules (that is the
// tokenizer's load-time validation).
absl::StatusOr<SpmModelProto> ParseModelProto(std::string_view bytes);

}  // namespace vg::engine

#endif  // VG_ENGINE_TOKENIZER_MODEL_PROTO_H_
