#include "engine/model/checkpoint.h"

#include <cstring>
#include <string>
#include <vector>

#include "engine/model/matrix_layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/model/safetensors_writer.h"

namespace vg::engine {
namespace {

using nlohmann::json;
using test::TestTensor;
using ::testing::HasSubstr;

class CheckpointTest : public ::testing::Test {
 protected:
  const std::filesystem::path& dir() const { return dir_.path(); }

  void WriteCheckpoint(const json& config, const std::vector<TestTensor>& tensors) {
    ASSERT_TRUE(test::WriteTinyCheckpoint(dir(), config, tensors).ok());
  }

  void WriteCheckpoint(const json& config, DType dtype = DType::kF32) {
    WriteCheckpoint(config, test::TinyCheckpointTensors(config, dtype));
  }

  std::string ExpectError(absl::StatusCode code) {
    auto checkpoint = Checkpoint::Open(dir());
    EXPECT_FALSE(checkpoint.ok());
    if (checkpoint.ok()) return "";
    EXPECT_EQ(checkpoint.status().code(), code) << checkpoint.status();
    return std::string(checkpoint.status().message());
  }

  test::TempDir dir_;
};

std::vector<TestTensor> Without(std::vector<TestTensor> tensors, const std::string& name) {
  std::erase_if(tensors, [&](const TestTensor& t) { return t.name == name; });
  return tensors;
}

const TestTensor& Find(const std::vector<TestTensor>& tensors, const std::string& name) {
  for (const TestTensor& t : tensors) {
    if (t.name == name) return t;
  }
  static const TestTensor kNone;
  return kNone;
}

void ExpectSameBytes(const TensorView& view, const TestTensor& tensor) {
  ASSERT_EQ(view.num_bytes, tensor.bytes.size()) << view.name;
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(view.data), view.num_bytes), tensor.bytes)
      << view.name;
}

TEST_F(CheckpointTest, OpensTinyCheckpoint) {
  const json config = test::TinyConfigJson();
  const auto tensors = test::TinyCheckpointTensors(config, DType::kF32);
  WriteCheckpoint(config, tensors);
  auto checkpoint = Checkpoint::Open(dir());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const Checkpoint& c = **checkpoint;
  EXPECT_EQ(c.dir(), dir());
  EXPECT_EQ(c.config().hidden_size, 8);
  const ModelWeights& w = c.weights();
  EXPECT_EQ(w.embed_tokens.shape, (std::vector<int64_t>{32, 8}));
  EXPECT_EQ(w.final_norm.shape, (std::vector<int64_t>{8}));
  EXPECT_EQ(w.lm_head.data, w.embed_tokens.data);  // tied
  ExpectSameBytes(w.embed_tokens, Find(tensors, "model.embed_tokens.weight"));
  ExpectSameBytes(w.final_norm, Find(tensors, "model.norm.weight"));
  ASSERT_EQ(w.layers.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const LayerWeights& l = w.layers[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    EXPECT_EQ(l.q_proj.shape, (std::vector<int64_t>{8, 8}));
    EXPECT_EQ(l.k_proj.shape, (std::vector<int64_t>{4, 8}));
    EXPECT_EQ(l.v_proj.shape, (std::vector<int64_t>{4, 8}));
    EXPECT_EQ(l.o_proj.shape, (std::vector<int64_t>{8, 8}));
    EXPECT_EQ(l.gate_proj.shape, (std::vector<int64_t>{16, 8}));
    EXPECT_EQ(l.up_proj.shape, (std::vector<int64_t>{16, 8}));
    EXPECT_EQ(l.down_proj.shape, (std::vector<int64_t>{8, 16}));
    ExpectSameBytes(l.input_layernorm, Find(tensors, p + "input_layernorm.weight"));
    ExpectSameBytes(l.pre_feedforward_layernorm,
                    Find(tensors, p + "pre_feedforward_layernorm.weight"));
    ExpectSameBytes(l.q_proj, Find(tensors, p + "self_attn.q_proj.weight"));
    ExpectSameBytes(l.down_proj, Find(tensors, p + "mlp.down_proj.weight"));
    EXPECT_FALSE(l.q_bias.has_value());
    EXPECT_FALSE(l.o_bias.has_value());
  }
  size_t total = 0;
  for (const TestTensor& t : tensors) total += t.bytes.size();
  EXPECT_EQ(c.WeightBytes(), total);
}

TEST_F(CheckpointTest, Bf16AndMixedDTypes) {
  const json config = test::TinyConfigJson();
  auto tensors = test::TinyCheckpointTensors(config, DType::kBF16);
  tensors[0] = test::MakeTensor(tensors[0].name, DType::kF16, Find(tensors, tensors[0].name).shape,
                                {0.5f, -1.0f});
  WriteCheckpoint(config, tensors);
  auto checkpoint = Checkpoint::Open(dir());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ((*checkpoint)->weights().final_norm.dtype, DType::kBF16);
}

TEST_F(CheckpointTest, ShardedCheckpoint) {
  const json config = test::TinyConfigJson();
  const auto tensors = test::TinyCheckpointTensors(config, DType::kF32);
  std::vector<TestTensor> first, second;
  json weight_map = json::object();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const bool in_first = i % 2 == 0;
    (in_first ? first : second).push_back(tensors[i]);
    weight_map[tensors[i].name] =
        in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  ASSERT_TRUE(test::WriteFile(dir() / "config.json", config.dump()).ok());
  ASSERT_TRUE(test::WriteSafetensors(dir() / "model-00001-of-00002.safetensors", first).ok());
  ASSERT_TRUE(test::WriteSafetensors(dir() / "model-00002-of-00002.safetensors", second).ok());
  const json index = {{"metadata", {{"total_size", 1234}}}, {"weight_map", weight_map}};
  ASSERT_TRUE(test::WriteFile(dir() / "model.safetensors.index.json", index.dump()).ok());

  auto checkpoint = Checkpoint::Open(dir());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const ModelWeights& w = (*checkpoint)->weights();
  ExpectSameBytes(w.embed_tokens, Find(tensors, "model.embed_tokens.weight"));
  ExpectSameBytes(w.layers[1].up_proj, Find(tensors, "model.layers.1.mlp.up_proj.weight"));
  EXPECT_EQ(w.embed_tokens.file, "model-00001-of-00002.safetensors");
  EXPECT_EQ(w.embed_tokens.name, tensors[0].name);
  EXPECT_EQ(w.layers[0].down_proj.name, tensors[2].name);
  EXPECT_EQ(w.layers[0].gate_proj.file, "model-00002-of-00002.safetensors");
  size_t total = 0;
  for (const TestTensor& t : tensors) total += t.bytes.size();
  EXPECT_EQ((*checkpoint)->WeightBytes(), total);

  // A tensor the index lists but its shard lacks.
  json broken = index;
  const std::string norm_shard = weight_map["model.norm.weight"];
  const std::string other_shard = norm_shard == "model-00001-of-00002.safetensors"
                                      ? "model-00002-of-00002.safetensors"
                                      : "model-00001-of-00002.safetensors";
  broken["weight_map"]["model.norm.weight"] = other_shard;
  ASSERT_TRUE(test::WriteFile(dir() / "model.safetensors.index.json", broken.dump()).ok());
  EXPECT_EQ(ExpectError(absl::StatusCode::kInvalidArgument),
            "model.safetensors.index.json: tensor 'model.norm.weight' is listed in weight_map but "
            "missing from " +
                other_shard);

  // A tensor the forward pass needs but the index does not list.
  broken = index;
  broken["weight_map"].erase("model.layers.0.mlp.up_proj.weight");
  ASSERT_TRUE(test::WriteFile(dir() / "model.safetensors.index.json", broken.dump()).ok());
  EXPECT_EQ(ExpectError(absl::StatusCode::kInvalidArgument),
            "missing tensor 'model.layers.0.mlp.up_proj.weight' in model.safetensors.index.json");

  // A missing shard file.
  broken = index;
  broken["weight_map"]["model.norm.weight"] = "model-00003-of-00002.safetensors";
  ASSERT_TRUE(test::WriteFile(dir() / "model.safetensors.index.json", broken.dump()).ok());
  EXPECT_THAT(ExpectError(absl::StatusCode::kNotFound),
              HasSubstr("model-00003-of-00002.safetensors"));
}

TEST_F(CheckpointTest, IndexIsValidated) {
  const json config = test::TinyConfigJson();
  WriteCheckpoint(config);  // model.safetensors exists but the index takes precedence
  auto write_index = [&](const std::string& text) {
    ASSERT_TRUE(test::WriteFile(dir() / "model.safetensors.index.json", text).ok());
  };
  for (const char* shard :
       {"../model.safetensors", "sub/model.safetensors", "/etc/passwd", "..", "", "."}) {
    write_index(json{{"weight_map", {{"model.norm.weight", shard}}}}.dump());
    EXPECT_THAT(ExpectError(absl::StatusCode::kInvalidArgument),
                HasSubstr("is not a plain file name"))
        << shard;
  }
  write_index("{not json");
  EXPECT_THAT(ExpectError(absl::StatusCode::kInvalidArgument),
              HasSubstr("model.safetensors.index.json: not valid JSON"));
  write_index("{\"weight_map\": [1]}");
  EXPECT_THAT(ExpectError(absl::StatusCode::kInvalidArgument), HasSubstr("weight_map must be"));
  write_index("{}");
  EXPECT_THAT(ExpectError(absl::StatusCode::kInvalidArgument), HasSubstr("weight_map must be"));
  write_index("{\"weight_map\": {\"model.norm.weight\": 3}}");
  EXPECT_THAT(ExpectError(absl::StatusCode::kInvalidArgument),
              HasSubstr("weight_map['model.norm.weight'] must be a shard file name"));
}

TEST_F(CheckpointTest, MissingTensor) {
  const json config = test::TinyConfigJson();
  WriteCheckpoint(config, Without(test::TinyCheckpointTensors(config, DType::kF32),
                                  "model.layers.1.self_attn.k_proj.weight"));
  EXPECT_EQ(ExpectError(absl::StatusCode::kInvalidArgument),
            "missing tensor 'model.layers.1.self_attn.k_proj.weight' in model.safetensors");
}

TEST_F(CheckpointTest, WrongShape) {
  json config = test::TinyConfigJson();
  auto tensors = test::TinyCheckpointTensors(config, DType::kF32);
  config["intermediate_size"] = 12;  // the file was written for 16
  WriteCheckpoint(config, tensors);
  EXPECT_EQ(ExpectError(absl::StatusCode::kInvalidArgument),
            "tensor 'model.layers.0.mlp.gate_proj.weight' in model.safetensors has shape [16, 8], "
            "expected [12, 8] (from config.json)");
}

TEST_F(CheckpointTest, UntiedEmbeddings) {
  json config = test::TinyConfigJson();
  config["tie_word_embeddings"] = false;
  const auto tensors = test::TinyCheckpointTensors(config, DType::kF32);
  WriteCheckpoint(config, tensors);
  auto checkpoint = Checkpoint::Open(dir());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const ModelWeights& w = (*checkpoint)->weights();
  EXPECT_NE(w.lm_head.data, w.embed_tokens.data);
  ExpectSameBytes(w.lm_head, Find(tensors, "lm_head.weight"));

  WriteCheckpoint(config, Without(tensors, "lm_head.weight"));
  EXPECT_THAT(ExpectError(absl::StatusCode::kInvalidArgument),
              HasSubstr("missing tensor lm_head.weight (tie_word_embeddings is false)"));

  // Tied config but the file carries lm_head.weight: use it.
  config["tie_word_embeddings"] = true;
  WriteCheckpoint(config, tensors);
  auto tied = Checkpoint::Open(dir());
  ASSERT_TRUE(tied.ok()) << tied.status();
  ExpectSameBytes((*tied)->weights().lm_head, Find(tensors, "lm_head.weight"));
}

// Opened with MatrixLayout::kTiles, the product matrices (and the embedding, when lm_head is it)
// are rearranged in memory and say so; everything else keeps the file's bytes.
TEST_F(CheckpointTest, OpensWithMatricesInTiles) {
  for (bool tied : {true, false}) {
    json config = test::TinyConfigJson();
    config["tie_word_embeddings"] = tied;
    const auto tensors = test::TinyCheckpointTensors(config, DType::kBF16);
    WriteCheckpoint(config, tied ? Without(tensors, "lm_head.weight") : tensors);
    auto checkpoint = Checkpoint::Open(dir(), MatrixLayout::kTiles);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    const ModelWeights& w = (*checkpoint)->weights();
    const auto expect_tiled = [&](const TensorView& view, const std::string& name) {
      EXPECT_EQ(view.layout, MatrixLayout::kTiles) << name;
      const TestTensor& stored = Find(tensors, name);
      std::vector<std::byte> want(stored.bytes.size());
      std::memcpy(want.data(), stored.bytes.data(), want.size());
      RearrangeToTiles(view.dtype, view.shape[0], view.shape[1], want.data());
      EXPECT_EQ(std::memcmp(view.data, want.data(), want.size()), 0) << name;
    };
    expect_tiled(w.lm_head, tied ? "model.embed_tokens.weight" : "lm_head.weight");
    if (tied) {
      EXPECT_EQ(w.embed_tokens.layout, MatrixLayout::kTiles);
    } else {
      EXPECT_EQ(w.embed_tokens.layout, MatrixLayout::kRowMajor);
      ExpectSameBytes(w.embed_tokens, Find(tensors, "model.embed_tokens.weight"));
    }
    expect_tiled(w.layers[1].q_proj, "model.layers.1.self_attn.q_proj.weight");
    expect_tiled(w.layers[0].down_proj, "model.layers.0.mlp.down_proj.weight");
    EXPECT_EQ(w.final_norm.layout, MatrixLayout::kRowMajor);
    ExpectSameBytes(w.final_norm, Find(tensors, "model.norm.weight"));
    ExpectSameBytes(w.layers[0].input_layernorm,
                    Find(tensors, "model.layers.0.input_layernorm.weight"));
  }
}

TEST_F(CheckpointTest, AttentionBias) {
  json config = test::TinyConfigJson();
  config["attention_bias"] = true;
  const auto tensors = test::TinyCheckpointTensors(config, DType::kF32);
  WriteCheckpoint(config, tensors);
  auto checkpoint = Checkpoint::Open(dir());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const LayerWeights& l = (*checkpoint)->weights().layers[1];
  ASSERT_TRUE(l.q_bias.has_value() && l.k_bias.has_value() && l.v_bias.has_value() &&
              l.o_bias.has_value());
  EXPECT_EQ(l.q_bias->shape, (std::vector<int64_t>{8}));
  EXPECT_EQ(l.k_bias->shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(l.v_bias->shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(l.o_bias->shape, (std::vector<int64_t>{8}));
  ExpectSameBytes(*l.v_bias, Find(tensors, "model.layers.1.self_attn.v_proj.bias"));

  WriteCheckpoint(config, Without(tensors, "model.layers.0.self_attn.o_proj.bias"));
  EXPECT_THAT(ExpectError(absl::StatusCode::kInvalidArgument),
              HasSubstr("missing tensor 'model.layers.0.self_attn.o_proj.bias'"));

  // Biases in the file but attention_bias false: the config does not describe this file.
  config["attention_bias"] = false;
  WriteCheckpoint(config, tensors);
  EXPECT_THAT(ExpectError(absl::StatusCode::kInvalidArgument),
              HasSubstr("unexpected tensor 'model.layers.0.self_attn.k_proj.bias'"));
}

TEST_F(CheckpointTest, Gemma2PostNormsAreRejected) {
  const json config = test::TinyConfigJson();
  auto tensors = test::TinyCheckpointTensors(config, DType::kF32);
  tensors.push_back(
      test::MakeTensor("model.layers.0.post_attention_layernorm.weight", DType::kF32, {8}, {0}));
  WriteCheckpoint(config, tensors);
  EXPECT_THAT(ExpectError(absl::StatusCode::kInvalidArgument),
              HasSubstr("unexpected tensor 'model.layers.0.post_attention_layernorm.weight' in "
                        "model.safetensors"));
}

TEST_F(CheckpointTest, LayersBeyondConfigAreRejected) {
  json config = test::TinyConfigJson();
  const auto tensors = test::TinyCheckpointTensors(config, DType::kF32);
  config["num_hidden_layers"] = 1;
  config["layer_types"] = {"full_attention"};
  WriteCheckpoint(config, tensors);
  EXPECT_THAT(ExpectError(absl::StatusCode::kInvalidArgument),
              HasSubstr("unexpected tensor 'model.layers.1."));
}

TEST_F(CheckpointTest, UnrelatedExtraTensorsAreIgnored) {
  const json config = test::TinyConfigJson();
  auto tensors = test::TinyCheckpointTensors(config, DType::kF32);
  tensors.push_back(test::MakeTensor("model.something_else", DType::kF32, {2}, {1}));
  tensors.push_back(
      test::MakeTensor("model.layers.0.self_attn.rotary_emb.inv_freq", DType::kF32, {2}, {1}));
  WriteCheckpoint(config, tensors);
  auto checkpoint = Checkpoint::Open(dir());
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
}

TEST_F(CheckpointTest, MissingPieces) {
  auto no_dir = Checkpoint::Open(dir() / "absent");
  ASSERT_FALSE(no_dir.ok());
  EXPECT_EQ(no_dir.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(no_dir.status().message()), HasSubstr("absent: no such directory"));

  EXPECT_THAT(ExpectError(absl::StatusCode::kNotFound), HasSubstr("config.json: no such file"));

  ASSERT_TRUE(test::WriteFile(dir() / "config.json", test::TinyConfigJson().dump()).ok());
  EXPECT_EQ(ExpectError(absl::StatusCode::kNotFound),
            dir().string() + ": no model.safetensors or model.safetensors.index.json");

  ASSERT_TRUE(test::WriteFile(dir() / "model.safetensors", "garbage").ok());
  EXPECT_THAT(ExpectError(absl::StatusCode::kInvalidArgument), HasSubstr("model.safetensors: "));

  ASSERT_TRUE(test::WriteFile(dir() / "config.json", "{\"model_type\": \"gemma2\"}").ok());
  EXPECT_THAT(ExpectError(absl::StatusCode::kInvalidArgument), HasSubstr("model_type"));
}

}  // namespace
}  // namespace vg::engine
