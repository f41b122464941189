#include "engine/model/config.h"

#include <random>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/model/safetensors_writer.h"

namespace vg::engine {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

// What google/vaultgemma-1b's config.json looks like (newer transformers spelling of RoPE).
json VaultGemma1bConfig() {
  json layer_types = json::array();
  for (int i = 0; i < 26; ++i) layer_types.push_back("full_attention");
  return {{"architectures", {"VaultGemmaForCausalLM"}},
          {"attention_bias", false},
          {"attention_dropout", 0.0},
          {"attn_logit_softcapping", nullptr},
          {"bos_token_id", 2},
          {"dtype", "bfloat16"},
          {"eos_token_id", 1},
          {"final_logit_softcapping", nullptr},
          {"head_dim", 256},
          {"hidden_activation", "gelu_pytorch_tanh"},
          {"hidden_size", 1152},
          {"initializer_range", 0.02},
          {"intermediate_size", 13824},
          {"layer_types", layer_types},
          {"max_position_embeddings", 1024},
          {"model_type", "vaultgemma"},
          {"num_attention_heads", 4},
          {"num_hidden_layers", 26},
          {"num_key_value_heads", 4},
          {"pad_token_id", 0},
          {"query_pre_attn_scalar", 256},
          {"rms_norm_eps", 1e-06},
          {"rope_parameters", {{"rope_theta", 10000.0}, {"rope_type", "default"}}},
          {"sliding_window", 512},
          {"transformers_version", "5.0.0"},
          {"use_cache", true},
          {"vocab_size", 256000}};
}

absl::StatusOr<ModelConfig> Parse(const json& j) { return ParseModelConfig(j.dump()); }

// Parses `base` with `key` replaced by `value`.
absl::StatusOr<ModelConfig> With(const char* key, const json& value) {
  json j = test::TinyConfigJson();
  j[key] = value;
  return Parse(j);
}

absl::StatusOr<ModelConfig> Without(const char* key) {
  json j = test::TinyConfigJson();
  j.erase(key);
  return Parse(j);
}

void ExpectInvalid(const absl::StatusOr<ModelConfig>& result, const std::string& substring) {
  ASSERT_FALSE(result.ok()) << "expected an error mentioning " << substring;
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(result.status().message());
  EXPECT_THAT(message, HasSubstr(substring));
  EXPECT_THAT(message, ::testing::StartsWith("config.json: "));
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(ConfigTest, EmptyObjectTakesVaultGemmaConfigDefaults) {
  auto config = ParseModelConfig("{}");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model_type, "vaultgemma");
  EXPECT_EQ(config->vocab_size, 256000);
  EXPECT_EQ(config->hidden_size, 2304);
  EXPECT_EQ(config->intermediate_size, 9216);
  EXPECT_EQ(config->num_hidden_layers, 26);
  EXPECT_EQ(config->num_attention_heads, 8);
  EXPECT_EQ(config->num_key_value_heads, 4);
  EXPECT_EQ(config->QueriesPerKvHead(), 2);
  EXPECT_EQ(config->head_dim, 256);
  EXPECT_EQ(config->hidden_activation, "gelu_pytorch_tanh");
  EXPECT_EQ(config->max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(config->rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(config->rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(config->query_pre_attn_scalar, 256.0);
  EXPECT_EQ(config->sliding_window, 4096);
  EXPECT_EQ(config->attn_logit_softcapping, 50.0);
  EXPECT_EQ(config->final_logit_softcapping, 30.0);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_FALSE(config->attention_bias);
  EXPECT_EQ(config->bos_token_id, 2);
  EXPECT_EQ(config->eos_token_ids, std::vector<int64_t>{1});
  EXPECT_EQ(config->pad_token_id, 0);
  EXPECT_FALSE(config->torch_dtype.has_value());
  ASSERT_EQ(config->layer_types.size(), 26u);
  for (size_t i = 0; i < 26; ++i) {
    // Layer 0 sliding, then alternating: sliding when (i + 1) is odd.
    EXPECT_EQ(config->layer_types[i],
              i % 2 == 0 ? LayerType::kSlidingAttention : LayerType::kFullAttention)
        << i;
  }
}

TEST(ConfigTest, ReleasedModelConfig) {
  auto config = Parse(VaultGemma1bConfig());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->hidden_size, 1152);
  EXPECT_EQ(config->intermediate_size, 13824);
  EXPECT_EQ(config->num_attention_heads, 4);
  EXPECT_EQ(config->QueriesPerKvHead(), 1);
  EXPECT_EQ(config->max_position_embeddings, 1024);
  EXPECT_EQ(config->sliding_window, 512);
  EXPECT_FALSE(config->attn_logit_softcapping.has_value());
  EXPECT_FALSE(config->final_logit_softcapping.has_value());
  EXPECT_EQ(config->torch_dtype, DType::kBF16);
  EXPECT_EQ(config->layer_types, std::vector<LayerType>(26, LayerType::kFullAttention));
}

TEST(ConfigTest, TinyConfigParses) {
  auto config = Parse(test::TinyConfigJson());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vocab_size, 32);
  EXPECT_EQ(config->torch_dtype, DType::kF32);
}

TEST(ConfigTest, RopeThetaOldSpelling) {
  auto config = With("rope_theta", 5000);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_DOUBLE_EQ(config->rope_theta, 5000.0);
}

TEST(ConfigTest, RopeThetaNewSpelling) {
  json j = test::TinyConfigJson();
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 20000.0}};
  auto config = Parse(j);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_DOUBLE_EQ(config->rope_theta, 20000.0);
}

TEST(ConfigTest, RopeBothSpellingsMustAgree) {
  json j = test::TinyConfigJson();
  j["rope_theta"] = 10000.0;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000}};
  EXPECT_TRUE(Parse(j).ok());
  j["rope_parameters"]["rope_theta"] = 500000.0;
  ExpectInvalid(Parse(j), "rope_parameters.rope_theta");
}

TEST(ConfigTest, RopeParametersWithoutThetaKeepsDefault) {
  json j = test::TinyConfigJson();
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "default"}};
  auto config = Parse(j);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_DOUBLE_EQ(config->rope_theta, 10000.0);
}

TEST(ConfigTest, NonDefaultRopeIsUnsupported) {
  json j = test::TinyConfigJson();
  j["rope_parameters"] = {{"rope_type", "linear"}, {"rope_theta", 10000.0}, {"factor", 2.0}};
  ExpectInvalid(Parse(j), "rope_parameters.rope_type");
  j["rope_parameters"] = {{"rope_type", 3}};
  ExpectInvalid(Parse(j), "rope_parameters.rope_type");
  j["rope_parameters"] = "default";
  ExpectInvalid(Parse(j), "rope_parameters");
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}}}};
  ExpectInvalid(Parse(j), "rope_parameters.full_attention");
  j["rope_parameters"] = {{"rope_type", "default"}, {"partial_rotary_factor", 0.5}};
  ExpectInvalid(Parse(j), "rope_parameters.partial_rotary_factor");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", "big"}};
  ExpectInvalid(Parse(j), "rope_parameters.rope_theta");
}

TEST(ConfigTest, LegacyRopeScaling) {
  EXPECT_TRUE(With("rope_scaling", nullptr).ok());
  EXPECT_TRUE(With("rope_scaling", {{"rope_type", "default"}}).ok());
  ExpectInvalid(With("rope_scaling", {{"type", "linear"}, {"factor", 2.0}}), "rope_scaling.type");
  ExpectInvalid(With("rope_scaling", {{"rope_type", "yarn"}, {"factor", 2.0}}),
                "rope_scaling.rope_type");
  ExpectInvalid(With("rope_scaling", 2.0), "rope_scaling");
}

TEST(ConfigTest, EosTokenIdIntOrList) {
  auto single = With("eos_token_id", 7);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->eos_token_ids, std::vector<int64_t>{7});
  EXPECT_TRUE(single->IsEos(7));
  EXPECT_FALSE(single->IsEos(1));

  auto list = With("eos_token_id", {1, 31});
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->eos_token_ids, (std::vector<int64_t>{1, 31}));
  EXPECT_TRUE(list->IsEos(1));
  EXPECT_TRUE(list->IsEos(31));
  EXPECT_FALSE(list->IsEos(2));

  ExpectInvalid(With("eos_token_id", json::array()), "eos_token_id");
  ExpectInvalid(With("eos_token_id", "1"), "eos_token_id must be an integer or a list");
  ExpectInvalid(With("eos_token_id", {1, "x"}), "eos_token_id[1] must be an integer");
  ExpectInvalid(With("eos_token_id", 32), "eos_token_id (32) is outside [0, vocab_size=32)");
  ExpectInvalid(With("eos_token_id", {1, -1}), "eos_token_id (-1)");
}

TEST(ConfigTest, TokenIdsInRange) {
  ExpectInvalid(With("bos_token_id", 99), "bos_token_id (99)");
  ExpectInvalid(With("pad_token_id", -2), "pad_token_id (-2)");
  ExpectInvalid(With("bos_token_id", nullptr), "bos_token_id must be an integer, got null");
  auto no_pad = With("pad_token_id", nullptr);
  ASSERT_TRUE(no_pad.ok()) << no_pad.status();
  EXPECT_EQ(no_pad->pad_token_id, -1);
}

TEST(ConfigTest, SoftCapsMissingNullOrValue) {
  json j = test::TinyConfigJson();
  j.erase("attn_logit_softcapping");
  j.erase("final_logit_softcapping");
  auto missing = Parse(j);
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_EQ(missing->attn_logit_softcapping, 50.0);
  EXPECT_EQ(missing->final_logit_softcapping, 30.0);

  j["attn_logit_softcapping"] = nullptr;
  j["final_logit_softcapping"] = nullptr;
  auto nulls = Parse(j);
  ASSERT_TRUE(nulls.ok()) << nulls.status();
  EXPECT_FALSE(nulls->attn_logit_softcapping.has_value());
  EXPECT_FALSE(nulls->final_logit_softcapping.has_value());

  j["attn_logit_softcapping"] = 20;
  j["final_logit_softcapping"] = 15.5;
  auto values = Parse(j);
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(values->attn_logit_softcapping, 20.0);
  EXPECT_EQ(values->final_logit_softcapping, 15.5);

  ExpectInvalid(With("attn_logit_softcapping", 0.0), "attn_logit_softcapping");
  ExpectInvalid(With("final_logit_softcapping", -1), "final_logit_softcapping");
  ExpectInvalid(With("final_logit_softcapping", "30"), "final_logit_softcapping must be a number");
}

TEST(ConfigTest, LayerTypes) {
  auto missing = Without("layer_types");
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_EQ(missing->layer_types,
            (std::vector<LayerType>{LayerType::kSlidingAttention, LayerType::kFullAttention}));

  auto explicit_types = With("layer_types", {"full_attention", "sliding_attention"});
  ASSERT_TRUE(explicit_types.ok()) << explicit_types.status();
  EXPECT_EQ(explicit_types->layer_types,
            (std::vector<LayerType>{LayerType::kFullAttention, LayerType::kSlidingAttention}));

  ExpectInvalid(With("layer_types", {"full_attention"}), "layer_types has 1 entries");
  ExpectInvalid(With("layer_types", {"full_attention", "chunked_attention"}),
                "layer_types[1] \"chunked_attention\"");
  ExpectInvalid(With("layer_types", {"full_attention", 1}), "layer_types[1] must be a string");
  ExpectInvalid(With("layer_types", "full_attention"), "layer_types must be a list");
  EXPECT_EQ(LayerTypeName(LayerType::kFullAttention), "full_attention");
  EXPECT_EQ(LayerTypeName(LayerType::kSlidingAttention), "sliding_attention");
}

TEST(ConfigTest, WrongTypesNameTheField) {
  ExpectInvalid(With("hidden_size", "8"), "hidden_size must be an integer, got a string");
  ExpectInvalid(With("num_hidden_layers", 2.0),
                "num_hidden_layers must be an integer, got a float");
  ExpectInvalid(With("vocab_size", true), "vocab_size must be an integer, got a boolean");
  ExpectInvalid(With("head_dim", nullptr), "head_dim must be an integer, got null");
  ExpectInvalid(With("rms_norm_eps", "1e-6"), "rms_norm_eps must be a number");
  ExpectInvalid(With("query_pre_attn_scalar", {256}), "query_pre_attn_scalar must be a number");
  ExpectInvalid(With("tie_word_embeddings", 1), "tie_word_embeddings must be true or false");
  ExpectInvalid(With("attention_bias", "false"), "attention_bias must be true or false");
  ExpectInvalid(With("model_type", 3), "model_type must be a string");
  ExpectInvalid(With("hidden_size", json::parse("18446744073709551615")),
                "hidden_size (18446744073709551615) is out of range");
  // Integers are accepted where a float is expected.
  auto eps = With("rms_norm_eps", 1);
  ASSERT_TRUE(eps.ok()) << eps.status();
  EXPECT_EQ(eps->rms_norm_eps, 1.0);
}

TEST(ConfigTest, InconsistentSizes) {
  json j = test::TinyConfigJson();
  j["num_attention_heads"] = 8;
  j["num_key_value_heads"] = 3;
  auto result = Parse(j);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message(),
            "config.json: num_attention_heads (8) is not divisible by num_key_value_heads (3)");
  ExpectInvalid(With("head_dim", 5), "head_dim (5) must be even");
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "num_key_value_heads", "head_dim",
                          "max_position_embeddings", "sliding_window"}) {
    ExpectInvalid(With(key, 0), std::string(key) + " (0) must be positive");
    ExpectInvalid(With(key, -4), std::string(key) + " (-4) must be positive");
  }
  // Absurd sizes are refused before anything is allocated for them.
  ExpectInvalid(With("num_hidden_layers", int64_t{1} << 40), "num_hidden_layers");
  for (const char* key : {"rms_norm_eps", "rope_theta", "query_pre_attn_scalar"}) {
    ExpectInvalid(With(key, 0.0), key);
    ExpectInvalid(With(key, -1.0), key);
  }
}

TEST(ConfigTest, ModelTypeMustBeVaultGemma) {
  ExpectInvalid(With("model_type", "gemma2"), "model_type is \"gemma2\", expected \"vaultgemma\"");
  auto missing = Without("model_type");
  EXPECT_TRUE(missing.ok()) << missing.status();
}

TEST(ConfigTest, Activation) {
  ExpectInvalid(With("hidden_activation", "gelu"), "hidden_activation \"gelu\" is not supported");
  ExpectInvalid(With("hidden_activation", "gelu_new"), "hidden_activation");
  ExpectInvalid(With("hidden_activation", nullptr), "hidden_activation must be a string");
  // The Gemma-1 `hidden_act` key is ignored: VaultGemma reads hidden_activation.
  EXPECT_TRUE(With("hidden_act", "gelu").ok());
  EXPECT_TRUE(Without("hidden_activation").ok());
}

TEST(ConfigTest, DTypeFields) {
  EXPECT_EQ(With("torch_dtype", "bfloat16")->torch_dtype, DType::kBF16);
  EXPECT_EQ(With("torch_dtype", "torch.float16")->torch_dtype, DType::kF16);
  EXPECT_FALSE(With("torch_dtype", nullptr)->torch_dtype.has_value());
  ExpectInvalid(With("torch_dtype", "int8"), "torch_dtype \"int8\" is not a supported dtype");
  ExpectInvalid(With("dtype", 16), "dtype must be a string");
  json j = test::TinyConfigJson();
  j["dtype"] = "float16";  // the newer key wins over torch_dtype (float32)
  EXPECT_EQ(Parse(j)->torch_dtype, DType::kF16);
}

TEST(ConfigTest, UnknownKeysAndArchitecturesAreIgnored) {
  json j = test::TinyConfigJson();
  j["architectures"] = {"SomethingElse"};
  j["use_cache"] = true;
  j["quantization_config"] = {{"bits", 4}};
  EXPECT_TRUE(Parse(j).ok());
}

TEST(ConfigTest, MalformedDocuments) {
  for (const std::string& text :
       {std::string(""), std::string("{"), std::string("[1, 2]"), std::string("null"),
        std::string("\"vaultgemma\""), std::string("{\"a\": }"), std::string("{} {}"),
        std::string("{}\0junk", 6)}) {
    auto result = ParseModelConfig(text, "x/config.json");
    ASSERT_FALSE(result.ok()) << text;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(result.status().message()), HasSubstr("x/config.json: ")) << text;
  }
}

TEST(ConfigTest, SourceNamesTheFileInMessages) {
  json j = test::TinyConfigJson();
  j["hidden_size"] = "big";
  auto result = ParseModelConfig(j.dump(), "/models/v/config.json");
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(std::string(result.status().message()),
              ::testing::StartsWith("/models/v/config.json: hidden_size"));
}

// Random edits of a valid document must give a config or a clean error, never a crash.
TEST(ConfigTest, RandomMutationsNeverCrash) {
  const std::string base = VaultGemma1bConfig().dump();
  std::mt19937 rng(1234);
  const std::string alphabet = "{}[]\",:0123456789-.eE truenlfas";
  for (int i = 0; i < 2000; ++i) {
    std::string text = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % text.size();
      switch (rng() % 3) {
        case 0:
          text[pos] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          text.erase(pos, 1 + rng() % 8);
          break;
        default:
          text.insert(pos, 1, static_cast<char>(rng() % 256));
      }
      if (text.empty()) text = "{";
    }
    auto result = ParseModelConfig(text);
    if (!result.ok()) {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(std::string(result.status().message()).find('\n'), std::string::npos);
    }
  }
}

TEST(ConfigTest, LoadModelConfigFromDisk) {
  test::TempDir dir;
  auto missing = LoadModelConfig(dir.path() / "config.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), (dir.path() / "config.json").string() + ": no such file");

  auto directory = LoadModelConfig(dir.path());
  ASSERT_FALSE(directory.ok());
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(test::WriteFile(dir.path() / "config.json", test::TinyConfigJson().dump()).ok());
  auto loaded = LoadModelConfig(dir.path() / "config.json");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->hidden_size, 8);

  ASSERT_TRUE(test::WriteFile(dir.path() / "config.json", "{\"hidden_size\": \"x\"}").ok());
  auto bad = LoadModelConfig(dir.path() / "config.json");
  ASSERT_FALSE(bad.ok());
  // The whole path, so that an operator sees which model directory is wrong.
  EXPECT_THAT(std::string(bad.status().message()),
              ::testing::StartsWith((dir.path() / "config.json").string() + ": hidden_size"));
}

}  // namespace
}  // namespace vg::engine
