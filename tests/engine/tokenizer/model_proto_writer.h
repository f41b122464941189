// Test support: serializes an SpmModelProto back to the protobuf wire format, so tests and the
// benchmark can build models in memory (synthetic vocabularies, variants of the committed fixtures
// with UNUSED or missing byte pieces) and feed them to our loader and to spm_encode alike.
// Writes every field model_proto.h knows, always (explicitly, even when equal to the default).
#ifndef VG_TESTS_ENGINE_TOKENIZER_MODEL_PROTO_WRITER_H_
#define VG_TESTS_ENGINE_TOKENIZER_MODEL_PROTO_WRITER_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/tokenizer/model_proto.h"

namespace vg::engine::testing {

// Low-level wire-format appenders, for hand-crafting malformed or unusual messages.
void AppendVarint(uint64_t value, std::string& out);
void AppendTag(uint32_t number, uint32_t wire_type, std::string& out);
void AppendVarintField(uint32_t number, uint64_t value, std::string& out);
void AppendInt32Field(uint32_t number, int32_t value, std::string& out);  // negative: 10 bytes
void AppendFloatField(uint32_t number, float value, std::string& out);
void AppendBytesField(uint32_t number, std::string_view bytes, std::string& out);

std::string SerializeModelProto(const SpmModelProto& model);

}  // namespace vg::engine::testing

#endif  // VG_TESTS_ENGINE_TOKENIZER_MODEL_PROTO_WRITER_H_
