// The hand-written wire-format reader: protobuf encodings (negative int32 as 10-byte varints,
// fixed32 floats, unknown fields of every wire type, message merging), and robustness: every
// prefix and thousands of random mutations of a real model load or fail cleanly, never crash.
#include "engine/tokenizer/wire_reader.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "engine/tokenizer/model_proto.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/engine/tokenizer/model_proto_writer.h"

namespace vg::engine {
namespace {

using testing::AppendBytesField;
using testing::AppendFloatField;
using testing::AppendInt32Field;
using testing::AppendTag;
using testing::AppendVarint;
using testing::AppendVarintField;

std::string ReadFixture(const char* name) {
  std::ifstream in(std::filesystem::path(VG_SOURCE_DIR) / "tests/fixtures/tokenizers" / name,
                   std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(TokenizerWireReaderTest, DecodesEveryWireType) {
  std::string msg;
  AppendInt32Field(1, -1, msg);
  AppendFloatField(2, -2.5f, msg);
  AppendBytesField(3, "xyz", msg);
  AppendTag(4, 1, msg);
  msg.append("\x01\x02\x03\x04\x05\x06\x07\x08", 8);
  AppendTag(5, 3, msg);  // group with a nested group inside
  AppendVarintField(1, 7, msg);
  AppendTag(2, 3, msg);
  AppendTag(2, 4, msg);
  AppendTag(5, 4, msg);
  AppendVarintField(6, 1, msg);
  EXPECT_EQ(msg.size() > 10 + 2, true);
  WireReader r(msg);
  auto f = r.Next();
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->AsInt32(), -1);
  EXPECT_EQ(f->type, WireType::kVarint);
  f = r.Next();
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->AsFloat(), -2.5f);
  f = r.Next();
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->bytes, "xyz");
  f = r.Next();
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->fixed, 0x0807060504030201ull);
  f = r.Next();
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->type, WireType::kStartGroup);
  f = r.Next();
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->number, 6u);
  EXPECT_TRUE(r.done());
}

TEST(TokenizerWireReaderTest, RejectsMalformedInput) {
  for (std::string bad : {std::string("\x08", 1), std::string("\x0A\x05xy"),
                          std::string("\x15\x01\x02"), std::string("\x00\x01", 2),
                          std::string("\x0F"), std::string("\x0C"), std::string("\x0B\x08\x01"),
                          std::string(11, '\xFF'), std::string("\x0A\xFF\xFF\xFF\xFF\x0F")}) {
    WireReader r(bad);
    absl::Status status;
    while (!r.done() && status.ok()) status = r.Next().status();
    EXPECT_FALSE(status.ok()) << "accepted a malformed message of " << bad.size() << " bytes";
  }
}

TEST(TokenizerWireReaderTest, ProtoDefaultsUnknownFieldsAndMerging) {
  std::string trainer;
  AppendInt32Field(3, 2, trainer);    // BPE
  AppendInt32Field(43, -1, trainer);  // pad_id -1: 10-byte varint
  AppendInt32Field(41, -7, trainer);
  AppendBytesField(999, "ignored", trainer);
  AppendFloatField(1000, 1.0f, trainer);
  AppendBytesField(3, "wrong wire type: ignored", trainer);
  std::string trainer2;
  AppendVarintField(35, 1, trainer2);  // byte_fallback, in a second trainer_spec: messages merge
  std::string piece;
  AppendBytesField(1, "x", piece);
  AppendVarintField(3, 77, piece);  // unknown enum value: type stays NORMAL
  std::string model;
  AppendBytesField(1, piece, model);
  AppendBytesField(2, trainer, model);
  AppendBytesField(2, trainer2, model);
  AppendBytesField(3, "", model);  // empty normalizer_spec: defaults
  AppendVarintField(100, 5, model);
  absl::StatusOr<SpmModelProto> m = ParseModelProto(model);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->trainer_spec.model_type, SpmModelType::kBpe);
  EXPECT_EQ(m->trainer_spec.pad_id, -1);
  EXPECT_EQ(m->trainer_spec.bos_id, -7);
  EXPECT_EQ(m->trainer_spec.eos_id, 2);
  EXPECT_TRUE(m->trainer_spec.byte_fallback);
  EXPECT_EQ(m->trainer_spec.unk_piece, "<unk>");
  ASSERT_EQ(m->pieces.size(), 1u);
  EXPECT_EQ(m->pieces[0].type, SpmPieceType::kNormal);
  EXPECT_TRUE(m->normalizer_spec.add_dummy_prefix);
  EXPECT_TRUE(m->normalizer_spec.remove_extra_whitespaces);
  EXPECT_TRUE(m->normalizer_spec.escape_whitespaces);
  EXPECT_FALSE(m->has_denormalizer_spec);
  std::string negative;
  AppendVarint(static_cast<uint64_t>(-1), negative);
  EXPECT_EQ(negative.size(), 10u);
}

TEST(TokenizerWireReaderTest, EveryPrefixOfAModelLoadsOrFailsCleanly) {
  const std::string bytes = ReadFixture("gemma_bpe_700.model");
  ASSERT_FALSE(bytes.empty());
  int ok = 0;
  for (size_t n = 0; n < bytes.size(); ++n) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
        Tokenizer::FromSerializedProto(std::string_view(bytes).substr(0, n));
    if (tok.ok()) {
      ++ok;
      (*tok)->Encode("probe <start_of_turn> \xFF text", true);
    } else {
      EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
  EXPECT_TRUE(Tokenizer::FromSerializedProto(bytes).ok());
  // A truncated model lacks byte pieces or the normalizer, so almost every prefix fails.
  EXPECT_LT(ok, 10);
}

TEST(TokenizerWireReaderTest, RandomMutationsNeverCrash) {
  const std::string original = ReadFixture("gemma_bpe_700.model");
  ASSERT_FALSE(original.empty());
  std::mt19937 rng(42);
  int loaded = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string bytes = original;
    const int edits = 1 + rng() % 4;
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % bytes.size();
      switch (rng() % 4) {
        case 0:
          bytes[pos] = static_cast<char>(rng());
          break;
        case 1:
          bytes[pos] ^= static_cast<char>(1u << (rng() % 8));
          break;
        case 2:
          bytes.erase(pos, 1 + rng() % 8);
          break;
        default:
          bytes.insert(pos, 1, static_cast<char>(rng()));
          break;
      }
      if (bytes.empty()) bytes = "x";
    }
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromSerializedProto(bytes);
    if (!tok.ok()) continue;
    ++loaded;
    const std::vector<int32_t> ids =
        (*tok)->Encode("mutated \xE2\x96\x81 <td> \t\t 123 \xF0\x9F\x8E\x89", true);
    for (int32_t id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, (*tok)->vocab_size());
    }
    ASSERT_TRUE((*tok)->Decode(ids).ok());
  }
  EXPECT_GT(loaded, 0);  // many mutations hit piece bytes or scores and still load
}

}  // namespace
}  // namespace vg::engine
