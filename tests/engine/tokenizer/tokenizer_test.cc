// Unit tests of engine/tokenizer on small hand-built models (exact expectations for the BPE rules:
// tie-breaking, frozen user-defined symbols, UNUSED resegmentation, byte fallback, unknown fusion),
// load-time validation, add_bos, bad ids, and the newline goldens made by the PyPI sentencepiece
// (tools/tokenizers/make_newline_goldens.py), which spm_encode cannot check line by line.
#include "engine/tokenizer/tokenizer.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/model_proto.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/tokenizer/model_proto_writer.h"

namespace vg::engine {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const fs::path kFixtures = fs::path(VG_SOURCE_DIR) / "tests/fixtures/tokenizers";
constexpr char kWs[] = "\xE2\x96\x81";  // ▁

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A Gemma-like model: <pad> <eos> <bos> <unk>, then `extra` pieces, then the 256 byte pieces.
SpmModelProto GemmaLike(const std::vector<SpmPiece>& extra, bool byte_fallback = true) {
  SpmModelProto m;
  m.pieces = {{"<pad>", 0, SpmPieceType::kControl},
              {"<eos>", 0, SpmPieceType::kControl},
              {"<bos>", 0, SpmPieceType::kControl},
              {"<unk>", 0, SpmPieceType::kUnknown}};
  m.pieces.insert(m.pieces.end(), extra.begin(), extra.end());
  if (byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      m.pieces.push_back({name, 0, SpmPieceType::kByte});
    }
  }
  m.trainer_spec.model_type = SpmModelType::kBpe;
  m.trainer_spec.byte_fallback = byte_fallback;
  m.trainer_spec.pad_id = 0;
  m.trainer_spec.eos_id = 1;
  m.trainer_spec.bos_id = 2;
  m.trainer_spec.unk_id = 3;
  m.trainer_spec.pad_piece = "<pad>";
  m.trainer_spec.eos_piece = "<eos>";
  m.trainer_spec.bos_piece = "<bos>";
  m.trainer_spec.unk_piece = "<unk>";
  m.normalizer_spec.name = "identity";
  m.normalizer_spec.add_dummy_prefix = false;
  m.normalizer_spec.remove_extra_whitespaces = false;
  return m;
}

std::unique_ptr<Tokenizer> MustLoad(const SpmModelProto& m) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      Tokenizer::FromSerializedProto(testing::SerializeModelProto(m));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

absl::Status LoadStatus(const SpmModelProto& m) {
  return Tokenizer::FromSerializedProto(testing::SerializeModelProto(m), "test.model").status();
}

std::vector<std::string> Pieces(const Tokenizer& tok, std::string_view text) {
  std::vector<std::string> out;
  for (int32_t id : tok.Encode(text, false)) out.emplace_back(tok.IdToPiece(id));
  return out;
}

TEST(TokenizerTest, SpecialIdsAndAddBos) {
  auto tok = MustLoad(GemmaLike({{"a", -1}}));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->pad_id(), 0);
  EXPECT_EQ(tok->eos_id(), 1);
  EXPECT_EQ(tok->bos_id(), 2);
  EXPECT_EQ(tok->unk_id(), 3);
  EXPECT_EQ(tok->vocab_size(), 5 + 256);
  EXPECT_THAT(tok->Encode("a", /*add_bos=*/true), ElementsAre(2, 4));
  EXPECT_THAT(tok->Encode("a", /*add_bos=*/false), ElementsAre(4));
  EXPECT_THAT(tok->Encode("", /*add_bos=*/true), ElementsAre(2));
  EXPECT_THAT(tok->Encode("", /*add_bos=*/false), IsEmpty());
}

TEST(TokenizerTest, NoBosPieceMeansNoBos) {
  SpmModelProto m = GemmaLike({{"a", -1}});
  m.trainer_spec.bos_piece = "<s>";  // not a piece
  auto tok = MustLoad(m);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_THAT(tok->Encode("a", /*add_bos=*/true), ElementsAre(4));
}

TEST(TokenizerTest, EqualScoresMergeLeftmostFirst) {
  auto tok = MustLoad(GemmaLike({{"a", -1}, {"aa", -2}}));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Pieces(*tok, "aaa"), ElementsAre("aa", "a"));
  EXPECT_THAT(Pieces(*tok, "aaaa"), ElementsAre("aa", "aa"));
  EXPECT_THAT(Pieces(*tok, "aaaaa"), ElementsAre("aa", "aa", "a"));
}

TEST(TokenizerTest, HigherScoreMergesFirst) {
  // "bc" outranks "ab", so "abc" -> a + bc even though ab is leftmost.
  auto tok = MustLoad(GemmaLike({{"a", -1}, {"b", -1}, {"c", -1}, {"ab", -5}, {"bc", -2}}));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Pieces(*tok, "abc"), ElementsAre("a", "bc"));
}

TEST(TokenizerTest, UserDefinedSymbolsAreLongestMatchAndFrozen) {
  const std::string ws2 = std::string(kWs) + kWs, ws3 = ws2 + kWs;
  auto tok = MustLoad(GemmaLike({{"b", -1},
                                 {kWs, -1},
                                 {std::string(kWs) + "b", -2},
                                 {ws2, 0, SpmPieceType::kUserDefined},
                                 {ws3, 0, SpmPieceType::kUserDefined},
                                 {"<start_of_turn>", 0, SpmPieceType::kUserDefined}}));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Pieces(*tok, "   b"), ElementsAre(ws3, "b"));
  EXPECT_THAT(Pieces(*tok, "    b"), ElementsAre(ws3, std::string(kWs) + "b"));
  EXPECT_THAT(Pieces(*tok, " b"), ElementsAre(std::string(kWs) + "b"));
  EXPECT_THAT(Pieces(*tok, "<start_of_turn>b"), ElementsAre("<start_of_turn>", "b"));
  // A literal "<bos>" is text, not the control piece: its characters fall back to bytes.
  const std::vector<int32_t> ids = tok->Encode("<bos>", false);
  EXPECT_EQ(ids.size(), 5u);
  EXPECT_EQ(tok->IdToPiece(ids[0]), "<0x3C>");
}

TEST(TokenizerTest, UnusedPiecesAreResegmented) {
  auto tok = MustLoad(
      GemmaLike({{"a", -1}, {"b", -1}, {"c", -1}, {"ab", -2, SpmPieceType::kUnused}, {"abc", -3}}));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Pieces(*tok, "ab"), ElementsAre("a", "b"));  // UNUSED: split back
  EXPECT_THAT(Pieces(*tok, "abc"), ElementsAre("abc"));    // but still a merge step
}

TEST(TokenizerTest, ByteFallbackAndUnknownFusion) {
  auto with_bytes = MustLoad(GemmaLike({{"a", -1}}));
  ASSERT_NE(with_bytes, nullptr);
  EXPECT_THAT(Pieces(*with_bytes, "a\xC3\xA9z"), ElementsAre("a", "<0xC3>", "<0xA9>", "<0x7A>"));
  // Invalid UTF-8 is normalized to U+FFFD first, so the bytes are EF BF BD.
  EXPECT_THAT(Pieces(*with_bytes, "\xFF"), ElementsAre("<0xEF>", "<0xBF>", "<0xBD>"));
  auto no_bytes = MustLoad(GemmaLike({{"a", -1}}, /*byte_fallback=*/false));
  ASSERT_NE(no_bytes, nullptr);
  EXPECT_THAT(no_bytes->Encode("xyzaxy", false), ElementsAre(3, 4, 3));
  absl::StatusOr<std::string> text = no_bytes->Decode(std::vector<int32_t>{3, 4});
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, " \xE2\x81\x87 a");
}

TEST(TokenizerTest, DecodeRules) {
  auto tok =
      MustLoad(GemmaLike({{std::string(kWs) + "hi", -1}, {"<b>", 0, SpmPieceType::kUserDefined}}));
  ASSERT_NE(tok, nullptr);
  const int32_t hi = 4, tag = 5, byte0 = 6;
  EXPECT_EQ(*tok->Decode(std::vector<int32_t>{2, hi, tag, 1, 0}), " hi<b>");  // no strip (Gemma)
  // Bytes C3 A9 = é; a lone C3 then 'A' -> U+FFFD A.
  EXPECT_EQ(*tok->Decode(std::vector<int32_t>{byte0 + 0xC3, byte0 + 0xA9}), "\xC3\xA9");
  EXPECT_EQ(*tok->Decode(std::vector<int32_t>{byte0 + 0xC3, byte0 + 'A'}),
            "\xEF\xBF\xBD"
            "A");
  EXPECT_EQ(*tok->Decode(std::vector<int32_t>{byte0 + 0xC3, hi}), "\xEF\xBF\xBD hi");
  EXPECT_EQ(tok->PieceBytes(hi), " hi");
  EXPECT_EQ(tok->PieceBytes(byte0 + 0xC3), "\xC3");
  EXPECT_EQ(tok->PieceBytes(2), "");
  EXPECT_EQ(tok->PieceBytes(-1), "");
  EXPECT_EQ(tok->PieceToId("<b>"), tag);
  EXPECT_EQ(tok->PieceToId("nope"), 3);
  EXPECT_EQ(tok->IdToPiece(9999), "");
}

TEST(TokenizerTest, DecodeRejectsBadIds) {
  auto tok = MustLoad(GemmaLike({{"a", -1}}));
  ASSERT_NE(tok, nullptr);
  for (int32_t bad : {-1, tok->vocab_size(), INT32_MAX, INT32_MIN}) {
    absl::StatusOr<std::string> text = tok->Decode(std::vector<int32_t>{4, bad});
    EXPECT_EQ(text.status().code(), absl::StatusCode::kOutOfRange) << bad;
    EXPECT_THAT(text.status().message(), HasSubstr(std::to_string(bad)));
  }
}

TEST(TokenizerTest, LoadValidation) {
  SpmModelProto m = GemmaLike({{"a", -1}});
  m.trainer_spec.model_type = SpmModelType::kUnigram;
  EXPECT_THAT(LoadStatus(m).message(), HasSubstr("UNIGRAM"));
  m.trainer_spec.model_type = SpmModelType::kWord;
  EXPECT_THAT(LoadStatus(m).message(), HasSubstr("WORD"));
  m.trainer_spec.model_type = SpmModelType::kChar;
  EXPECT_EQ(LoadStatus(m).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(LoadStatus(m).message(), HasSubstr("test.model"));

  m = GemmaLike({{"a", -1}, {"<unk2>", 0, SpmPieceType::kUnknown}});
  EXPECT_THAT(LoadStatus(m).message(), HasSubstr("unk is already defined"));
  m = GemmaLike({{"a", -1}});
  m.pieces[3].type = SpmPieceType::kControl;
  EXPECT_THAT(LoadStatus(m).message(), HasSubstr("unk is not defined"));
  m = GemmaLike({{"a", -1}, {"a", -2}});
  EXPECT_THAT(LoadStatus(m).message(), HasSubstr("already defined"));
  m = GemmaLike({{"", -1}});
  EXPECT_THAT(LoadStatus(m).message(), HasSubstr("empty"));
  m = GemmaLike({{"a", -1}});
  m.pieces.pop_back();  // <0xFF>
  EXPECT_THAT(LoadStatus(m).message(), HasSubstr("256 byte pieces"));
  m = GemmaLike({{"a", -1}});
  m.trainer_spec.byte_fallback = false;
  EXPECT_THAT(LoadStatus(m).message(), HasSubstr("byte_fallback is false"));
  m = GemmaLike({{"<0xzz>", 0, SpmPieceType::kByte}});
  EXPECT_THAT(LoadStatus(m).message(), HasSubstr("invalid"));
  m = GemmaLike({{"\xFF", -1}});
  EXPECT_THAT(LoadStatus(m).message(), HasSubstr("UTF-8"));
  m = GemmaLike({{"a", -1}});
  m.has_denormalizer_spec = true;
  m.denormalizer_spec.precompiled_charsmap = "xxxxxxxx";
  EXPECT_THAT(LoadStatus(m).message(), HasSubstr("denormalizer"));
  m = GemmaLike({{"a", -1}});
  m.normalizer_spec.precompiled_charsmap = "\xFF\xFF\xFF\x7F";
  EXPECT_EQ(LoadStatus(m).code(), absl::StatusCode::kInvalidArgument);
  m = GemmaLike({{"a", -1}});
  m.pieces.clear();
  EXPECT_EQ(LoadStatus(m).code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerTest, SelfTestDataIsChecked) {
  SpmModelProto m = GemmaLike({{"a", -1}, {"aa", -2}});
  m.self_test = {{"aaa", "aa a"}};
  EXPECT_TRUE(LoadStatus(m).ok()) << LoadStatus(m);
  m.self_test = {{"aaa", "a aa"}};
  EXPECT_THAT(LoadStatus(m).message(), HasSubstr("self-test"));
}

TEST(TokenizerTest, LoadFromFile) {
  EXPECT_EQ(Tokenizer::Load(kFixtures / "does_not_exist.model").status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      Tokenizer::Load(kFixtures / "gemma_bpe_700.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 700);
  EXPECT_EQ((*tok)->bos_id(), 2);
  const std::vector<int32_t> ids = (*tok)->Encode("<start_of_turn>user\nhi<end_of_turn>\n", true);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids[0], 2);
  EXPECT_EQ((*tok)->IdToPiece(ids[1]), "<start_of_turn>");
  absl::StatusOr<std::string> text = (*tok)->Decode(ids);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "<start_of_turn>user\nhi<end_of_turn>\n");
}

TEST(TokenizerTest, NormalizerDefaultsWhenSpecAbsent) {
  // A hand-written proto with an empty normalizer_spec: add_dummy_prefix and
  // remove_extra_whitespaces default to true.
  SpmModelProto m = GemmaLike({{kWs, -1}, {"a", -1}});
  std::string bytes = testing::SerializeModelProto(m);
  absl::StatusOr<SpmModelProto> parsed = ParseModelProto(bytes);
  ASSERT_TRUE(parsed.ok());
  parsed->normalizer_spec = SpmNormalizerSpec();
  auto tok = MustLoad(*parsed);
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Pieces(*tok, "  a  a  "), ElementsAre(kWs, "a", kWs, "a"));
  EXPECT_EQ(*tok->Decode(tok->Encode("  a  a  ", false)), "a a");
}

TEST(TokenizerTest, NewlineGoldens) {
  const nlohmann::json goldens =
      nlohmann::json::parse(ReadFile(kFixtures / "newline_goldens.json"), nullptr, false);
  ASSERT_FALSE(goldens.is_discarded());
  int compared = 0;
  for (const auto& c : goldens["cases"]) {
    const std::string model = c["model"];
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
        Tokenizer::Load(kFixtures / (model + ".model"));
    ASSERT_TRUE(tok.ok()) << tok.status();
    const std::string text = c["text"];
    const std::vector<int32_t> want = c["ids"];
    EXPECT_EQ((*tok)->Encode(text, false), want) << model << ": " << text;
    absl::StatusOr<std::string> decoded = (*tok)->Decode(want);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, c["decoded"].get<std::string>()) << model << ": " << text;
    ++compared;
  }
  EXPECT_GE(compared, 50);
}

}  // namespace
}  // namespace vg::engine
