#include "tests/engine/tokenizer/model_proto_writer.h"

#include <cstring>

namespace vg::engine::testing {

void AppendVarint(uint64_t value, std::string& out) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void AppendTag(uint32_t number, uint32_t wire_type, std::string& out) {
  AppendVarint((static_cast<uint64_t>(number) << 3) | wire_type, out);
}

void AppendVarintField(uint32_t number, uint64_t value, std::string& out) {
  AppendTag(number, 0, out);
  AppendVarint(value, out);
}

void AppendInt32Field(uint32_t number, int32_t value, std::string& out) {
  // int32 is sign-extended to 64 bits on the wire, so negatives take 10 bytes.
  AppendVarintField(number, static_cast<uint64_t>(static_cast<int64_t>(value)), out);
}

void AppendFloatField(uint32_t number, float value, std::string& out) {
  AppendTag(number, 5, out);
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xFF));
}

void AppendBytesField(uint32_t number, std::string_view bytes, std::string& out) {
  AppendTag(number, 2, out);
  AppendVarint(bytes.size(), out);
  out.append(bytes);
}

namespace {

std::string SerializeNormalizerSpec(const SpmNormalizerSpec& spec) {
  std::string out;
  AppendBytesField(1, spec.name, out);
  if (!spec.precompiled_charsmap.empty()) AppendBytesField(2, spec.precompiled_charsmap, out);
  AppendVarintField(3, spec.add_dummy_prefix, out);
  AppendVarintField(4, spec.remove_extra_whitespaces, out);
  AppendVarintField(5, spec.escape_whitespaces, out);
  return out;
}

}  // namespace

std::string SerializeModelProto(const SpmModelProto& model) {
  std::string out;
  for (const SpmPiece& piece : model.pieces) {
    std::string p;
    AppendBytesField(1, piece.piece, p);
    AppendFloatField(2, piece.score, p);
    AppendInt32Field(3, static_cast<int32_t>(piece.type), p);
    AppendBytesField(1, p, out);
  }
  const SpmTrainerSpec& t = model.trainer_spec;
  std::string trainer;
  AppendInt32Field(3, static_cast<int32_t>(t.model_type), trainer);
  AppendInt32Field(4, t.vocab_size, trainer);
  AppendVarintField(24, t.treat_whitespace_as_suffix, trainer);
  AppendVarintField(25, t.split_digits, trainer);
  AppendVarintField(35, t.byte_fallback, trainer);
  AppendInt32Field(40, t.unk_id, trainer);
  AppendInt32Field(41, t.bos_id, trainer);
  AppendInt32Field(42, t.eos_id, trainer);
  AppendInt32Field(43, t.pad_id, trainer);
  AppendBytesField(44, t.unk_surface, trainer);
  AppendBytesField(45, t.unk_piece, trainer);
  AppendBytesField(46, t.bos_piece, trainer);
  AppendBytesField(47, t.eos_piece, trainer);
  AppendBytesField(48, t.pad_piece, trainer);
  AppendBytesField(2, trainer, out);
  AppendBytesField(3, SerializeNormalizerSpec(model.normalizer_spec), out);
  if (!model.self_test.empty()) {
    std::string data;
    for (const SpmSelfTestSample& sample : model.self_test) {
      std::string s;
      AppendBytesField(1, sample.input, s);
      AppendBytesField(2, sample.expected, s);
      AppendBytesField(1, s, data);
    }
    AppendBytesField(4, data, out);
  }
  if (model.has_denormalizer_spec) {
    AppendBytesField(5, SerializeNormalizerSpec(model.denormalizer_spec), out);
  }
  return out;
}

}  // namespace vg::engine::testing
