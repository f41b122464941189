// ModelConfig: a VaultGemma `config.json`, parsed and validated once at load.
//
// Every field transformers' VaultGemmaConfig reads is here. Keys missing from the file take
// VaultGemmaConfig's defaults (../shared/reference/vaultgemma-architecture.md): a missing soft cap
// is ON, only an explicit `null` turns it off; missing `layer_types` alternate with layer 0
// sliding. Everything downstream takes sizes from this struct, never from a model name.
#ifndef VG_ENGINE_MODEL_CONFIG_H_
#define VG_ENGINE_MODEL_CONFIG_H_

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/dtype.h"

namespace vg::engine {

enum class LayerType : uint8_t { kFullAttention, kSlidingAttention };

std::string_view LayerTypeName(LayerType type);

struct ModelConfig {
  std::string model_type = "vaultgemma";
  int64_t vocab_size = 256000;
  int64_t hidden_size = 2304;
  int64_t intermediate_size = 9216;
  int64_t num_hidden_layers = 26;
  int64_t num_attention_heads = 8;
  int64_t num_key_value_heads = 4;
  int64_t head_dim = 256;
  std::string hidden_activation = "gelu_pytorch_tanh";
  int64_t max_position_embeddings = 8192;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  double query_pre_attn_scalar = 256.0;
  int64_t sliding_window = 4096;
  std::vector<LayerType> layer_types;  // size == num_hidden_layers after parsing
  std::optional<double> attn_logit_softcapping = 50.0;
  std::optional<double> final_logit_softcapping = 30.0;
  bool attention_bias = false;
  bool tie_word_embeddings = true;
  int64_t bos_token_id = 2;
  std::vector<int64_t> eos_token_ids = {1};  // `eos_token_id` may be an int or a list
  int64_t pad_token_id = 0;                  // -1 when config.json says null (no padding token)
  std::optional<DType> torch_dtype;          // `dtype` or `torch_dtype`, when present

  // Query heads per KV head (grouped-query attention).
  int64_t QueriesPerKvHead() const { return num_attention_heads / num_key_value_heads; }
  bool IsEos(int64_t token_id) const;
};

// Parses config.json text. Errors are INVALID_ARGUMENT and name the offending field, e.g.
// "config.json: num_attention_heads (8) is not divisible by num_key_value_heads (3)".
// `source` names the file in messages. Strict where the numerics would change: integers must be
// JSON integers, RoPE must be "default" (rope_theta top-level or in rope_parameters; they must
// agree when both are given), hidden_activation must be gelu_pytorch_tanh, soft caps > 0 or null,
// sizes positive and at most 2^24. Unknown keys (architectures, hidden_act, ...) are ignored.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             std::string_view source = "config.json");

// Reads and parses a file. NOT_FOUND when it does not exist; INVALID_ARGUMENT when malformed.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::filesystem::path& path);

}  // namespace vg::engine

#endif  // VG_ENGINE_MODEL_CONFIG_H_
