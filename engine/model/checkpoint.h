// Checkpoint: a Hugging Face VaultGemma directory opened for inference.
//
// Reads config.json (ModelConfig), maps model.safetensors or the shards listed in
// model.safetensors.index.json, and builds the weight table: every tensor the forward pass needs,
// with its shape checked against the config. Tensors stay in their stored dtype in the file's
// memory (safetensors.h); nothing is copied, though matrices may be reordered in place (Open).
// Errors name the tensor and the file.
#ifndef VG_ENGINE_MODEL_CHECKPOINT_H_
#define VG_ENGINE_MODEL_CHECKPOINT_H_

#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/model/safetensors.h"

namespace vg::engine {

struct LayerWeights {
  TensorView input_layernorm;            // [hidden]
  TensorView pre_feedforward_layernorm;  // [hidden]
  TensorView q_proj;                     // [heads * head_dim, hidden]
  TensorView k_proj;                     // [kv_heads * head_dim, hidden]
  TensorView v_proj;                     // [kv_heads * head_dim, hidden]
  TensorView o_proj;                     // [hidden, heads * head_dim]
  TensorView gate_proj;                  // [intermediate, hidden]
  TensorView up_proj;                    // [intermediate, hidden]
  TensorView down_proj;                  // [hidden, intermediate]
  // Present exactly when config.attention_bias.
  std::optional<TensorView> q_bias, k_bias, v_bias, o_bias;
};

struct ModelWeights {
  TensorView embed_tokens;  // [vocab, hidden]
  TensorView final_norm;    // [hidden]
  TensorView lm_head;       // [vocab, hidden]; the embedding itself when tied and no lm_head.weight
  std::vector<LayerWeights> layers;
};

class Checkpoint {
 public:
  // Opens a checkpoint directory. NOT_FOUND when the directory, config.json or the weights are
  // missing; INVALID_ARGUMENT for a malformed config, index or safetensors file, a missing tensor
  // or a tensor whose shape disagrees with the config. Also INVALID_ARGUMENT: a shard name in the
  // index that is not a plain file name in `dir`, a tensor the index lists but its shard lacks, and
  // any `model.layers.*` tensor the forward pass would not read (Gemma 2 post-norms, biases with
  // attention_bias false, layers beyond num_hidden_layers): such a file is not what config.json
  // describes. Other extra tensors are ignored.
  //
  // `matrix_layout` kTiles rearranges every matrix a matrix product reads (the projections and
  // lm_head, hence a tied embedding too) in memory into the tile layout of matrix_layout.h, which
  // the CPU backend reads directly; their views say so in `layout`. Other tensors stay as stored.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(
      const std::filesystem::path& dir, MatrixLayout matrix_layout = MatrixLayout::kRowMajor);

  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  // Total bytes of all mapped tensor data the weight table refers to (a tied lm_head counted once).
  size_t WeightBytes() const;

 private:
  Checkpoint() = default;
  // Rearranges the product matrices into tiles (see Open).
  absl::Status RearrangeMatrices();

  std::filesystem::path dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  ModelWeights weights_;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_MODEL_CHECKPOINT_H_
