// Our hand-written ModelProto reader against libprotobuf:
// engine/tokenizer/sentencepiece_model.proto is compiled with protoc (test-only; this binary links
// libprotobuf, never libsentencepiece), and every committed tokenizer.model must parse identically:
// piece strings, scores, types, trainer and normalizer fields, proto2 defaults included. Also
// differential on mutated bytes: whenever libprotobuf accepts a mutated model, we accept it too and
// read the same values.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "engine/tokenizer/model_proto.h"
#include "gtest/gtest.h"
#include "sentencepiece_model.pb.h"

namespace vg::engine {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void ExpectNormalizerEq(const sentencepiece::NormalizerSpec& want, const SpmNormalizerSpec& got) {
  EXPECT_EQ(got.name, want.name());
  EXPECT_EQ(got.precompiled_charsmap, want.precompiled_charsmap());
  EXPECT_EQ(got.add_dummy_prefix, want.add_dummy_prefix());
  EXPECT_EQ(got.remove_extra_whitespaces, want.remove_extra_whitespaces());
  EXPECT_EQ(got.escape_whitespaces, want.escape_whitespaces());
}

// Returns the number of pieces compared.
size_t ExpectSameModel(const sentencepiece::ModelProto& want, const SpmModelProto& got) {
  EXPECT_EQ(got.pieces.size(), static_cast<size_t>(want.pieces_size()));
  size_t n = 0;
  for (int i = 0; i < want.pieces_size() && i < static_cast<int>(got.pieces.size()); ++i, ++n) {
    const auto& p = want.pieces(i);
    EXPECT_EQ(got.pieces[i].piece, p.piece()) << i;
    // Bitwise float equality (NaN-safe).
    const float want_score = p.score();
    EXPECT_EQ(std::memcmp(&got.pieces[i].score, &want_score, sizeof(float)), 0) << i;
    EXPECT_EQ(static_cast<int>(got.pieces[i].type), static_cast<int>(p.type())) << i;
  }
  const auto& t = want.trainer_spec();
  EXPECT_EQ(static_cast<int>(got.trainer_spec.model_type), static_cast<int>(t.model_type()));
  EXPECT_EQ(got.trainer_spec.vocab_size, t.vocab_size());
  EXPECT_EQ(got.trainer_spec.treat_whitespace_as_suffix, t.treat_whitespace_as_suffix());
  EXPECT_EQ(got.trainer_spec.split_digits, t.split_digits());
  EXPECT_EQ(got.trainer_spec.byte_fallback, t.byte_fallback());
  EXPECT_EQ(got.trainer_spec.unk_id, t.unk_id());
  EXPECT_EQ(got.trainer_spec.bos_id, t.bos_id());
  EXPECT_EQ(got.trainer_spec.eos_id, t.eos_id());
  EXPECT_EQ(got.trainer_spec.pad_id, t.pad_id());
  EXPECT_EQ(got.trainer_spec.unk_surface, t.unk_surface());
  EXPECT_EQ(got.trainer_spec.unk_piece, t.unk_piece());
  EXPECT_EQ(got.trainer_spec.bos_piece, t.bos_piece());
  EXPECT_EQ(got.trainer_spec.eos_piece, t.eos_piece());
  EXPECT_EQ(got.trainer_spec.pad_piece, t.pad_piece());
  ExpectNormalizerEq(want.normalizer_spec(), got.normalizer_spec);
  EXPECT_EQ(got.has_denormalizer_spec, want.has_denormalizer_spec());
  ExpectNormalizerEq(want.denormalizer_spec(), got.denormalizer_spec);
  EXPECT_EQ(got.self_test.size(), static_cast<size_t>(want.self_test_data().samples_size()));
  for (int i = 0;
       i < want.self_test_data().samples_size() && i < static_cast<int>(got.self_test.size());
       ++i) {
    EXPECT_EQ(got.self_test[i].input, want.self_test_data().samples(i).input());
    EXPECT_EQ(got.self_test[i].expected, want.self_test_data().samples(i).expected());
  }
  return n;
}

std::vector<fs::path> CommittedModels() {
  std::vector<fs::path> models;
  for (const auto& entry :
       fs::directory_iterator(fs::path(VG_SOURCE_DIR) / "tests/fixtures/tokenizers")) {
    if (entry.path().extension() == ".model") models.push_back(entry.path());
  }
  std::sort(models.begin(), models.end());
  return models;
}

TEST(TokenizerProtoParityTest, EveryCommittedModelParsesLikeLibprotobuf) {
  const std::vector<fs::path> models = CommittedModels();
  ASSERT_GE(models.size(), 3u);
  for (const fs::path& path : models) {
    SCOPED_TRACE(path.filename().string());
    const std::string bytes = ReadFile(path);
    sentencepiece::ModelProto want;
    ASSERT_TRUE(want.ParseFromString(bytes));
    absl::StatusOr<SpmModelProto> got = ParseModelProto(bytes);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_GT(ExpectSameModel(want, *got), 0u);
  }
}

TEST(TokenizerProtoParityTest, MutatedModelsParseLikeLibprotobuf) {
  const std::string original = ReadFile(CommittedModels().front());
  std::mt19937 rng(7);
  int both_ok = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    std::string bytes = original;
    for (int e = 0; e < 1 + static_cast<int>(rng() % 3); ++e) {
      const size_t pos = rng() % bytes.size();
      if (rng() % 2) {
        bytes[pos] = static_cast<char>(rng());
      } else {
        bytes[pos] ^= static_cast<char>(1u << (rng() % 8));
      }
    }
    sentencepiece::ModelProto want;
    const bool protobuf_ok = want.ParseFromString(bytes);
    absl::StatusOr<SpmModelProto> got = ParseModelProto(bytes);
    if (!protobuf_ok) continue;
    ASSERT_TRUE(got.ok()) << "libprotobuf accepted what we rejected: " << got.status();
    ++both_ok;
    ExpectSameModel(want, *got);
    if (HasFailure()) break;
  }
  EXPECT_GT(both_ok, 100);
}

}  // namespace
}  // namespace vg::engine
