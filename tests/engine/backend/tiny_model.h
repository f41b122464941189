// Test support: a tiny random VaultGemma held in memory, its weight views, a writer that saves it
// as a Hugging Face checkpoint directory, and a naive double-precision reference forward pass
// written straight from ../shared/reference/vaultgemma-architecture.md.
#ifndef VG_TESTS_ENGINE_BACKEND_TINY_MODEL_H_
#define VG_TESTS_ENGINE_BACKEND_TINY_MODEL_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/checkpoint.h"
#include "engine/model/config.h"

namespace vg::engine::testing {

struct TinyModelSpec {
  int64_t vocab_size = 37;
  int64_t hidden_size = 20;
  int64_t intermediate_size = 27;
  int64_t num_layers = 2;
  int64_t num_heads = 4;
  int64_t num_kv_heads = 2;
  int64_t head_dim = 6;
  int64_t max_positions = 64;
  int64_t sliding_window = 4096;
  std::vector<LayerType> layer_types;  // empty = all full attention
  std::optional<double> attn_softcap = 3.0;
  std::optional<double> final_softcap = 5.0;
  double query_pre_attn_scalar = 8.0;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  bool attention_bias = false;
  bool tie_word_embeddings = true;
  DType dtype = DType::kBF16;
  uint32_t seed = 1;
};

struct HostTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
  std::vector<double> values;  // the stored values, exactly widened
};

class TinyModel {
 public:
  explicit TinyModel(const TinyModelSpec& spec);

  const ModelConfig& config() const { return config_; }
  const std::map<std::string, HostTensor>& tensors() const { return tensors_; }
  // Views into this object's tensors (valid while it lives), as Checkpoint would build them.
  ModelWeights Views() const;
  // config.json + model.safetensors in `dir` (created).
  absl::Status WriteCheckpoint(const std::filesystem::path& dir) const;

  // Reference logits (after the final soft-cap) of every position of `tokens` run as one
  // sequence from position 0: result[position][vocab].
  std::vector<std::vector<double>> ReferenceLogits(const std::vector<int32_t>& tokens) const;

 private:
  void Add(const std::string& name, std::vector<int64_t> shape, double scale, uint32_t& state);
  const std::vector<double>& W(const std::string& name) const { return tensors_.at(name).values; }

  ModelConfig config_;
  std::map<std::string, HostTensor> tensors_;
};

// Random tokens in [0, vocab).
std::vector<int32_t> RandomTokens(int64_t count, int64_t vocab, uint32_t seed);

// A fresh empty directory under the test temp dir.
std::filesystem::path MakeTempDir(const std::string& name);

}  // namespace vg::engine::testing

#endif  // VG_TESTS_ENGINE_BACKEND_TINY_MODEL_H_
