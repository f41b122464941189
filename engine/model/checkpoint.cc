#include "engine/model/checkpoint.h"

#include <fstream>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace vg::engine {
namespace {

using nlohmann::json;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";
constexpr char kLayerPrefix[] = "model.layers.";
constexpr uintmax_t kMaxIndexBytes = 64 << 20;

#define VG_RETURN_IF_ERROR(expr)             \
  do {                                       \
    absl::Status vg_status_ = (expr);        \
    if (!vg_status_.ok()) return vg_status_; \
  } while (0)

#define VG_ASSIGN_OR_RETURN(lhs, expr)        \
  do {                                        \
    auto vg_or_ = (expr);                     \
    if (!vg_or_.ok()) return vg_or_.status(); \
    lhs = std::move(*vg_or_);                 \
  } while (0)

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Every tensor of the checkpoint by name, wherever it lives, and which names the model used.
class TensorTable {
 public:
  explicit TensorTable(std::string source) : source_(std::move(source)) {}

  void Add(const TensorView* view) { views_[view->name] = view; }
  bool Has(const std::string& name) const { return views_.count(name) != 0; }

  absl::StatusOr<TensorView> Get(const std::string& name, const std::vector<int64_t>& shape) {
    auto it = views_.find(name);
    if (it == views_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("missing tensor '", name, "' in ", source_));
    }
    const TensorView& view = *it->second;
    if (view.shape != shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' in ", view.file, " has shape ", ShapeString(view.shape),
                       ", expected ", ShapeString(shape), " (from config.json)"));
    }
    used_.insert(name);
    return view;
  }

  // Layer tensors the forward pass does not read mean the file is not what config.json says
  // (a Gemma 2 checkpoint with post-norms, more layers than num_hidden_layers, biases with
  // attention_bias false). Serving it would silently compute something else.
  absl::Status CheckNoUnexpectedLayerTensors() const {
    for (const auto& [name, view] : views_) {
      if (!absl::StartsWith(name, kLayerPrefix) || used_.count(name) != 0) continue;
      // Old exporters saved the RoPE frequency buffer; it is derived from the config anyway.
      if (absl::EndsWith(name, ".rotary_emb.inv_freq")) continue;
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected tensor '", name, "' in ", view->file,
                       ": VaultGemma has no such weight with this config.json (is this a "
                       "different model, e.g. Gemma 2, or a config.json that does not match?)"));
    }
    return absl::OkStatus();
  }

 private:
  std::string source_;
  std::map<std::string, const TensorView*> views_;
  std::set<std::string> used_;
};

absl::StatusOr<std::string> ReadSmallFile(const std::filesystem::path& path) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", ec.message()));
  if (size > kMaxIndexBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": larger than ", kMaxIndexBytes, " bytes"));
  }
  std::ifstream in(path, std::ios::binary);
  std::string text(static_cast<size_t>(size), '\0');
  if (!in || !in.read(text.data(), static_cast<std::streamsize>(size))) {
    return absl::DataLossError(absl::StrCat(path.string(), ": read error"));
  }
  return text;
}

bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos &&
         name.find("..") == std::string::npos && name != ".";
}

// Parses the shard index, opens each shard once and adds every listed tensor to `table`.
absl::Status OpenShards(const std::filesystem::path& dir,
                        std::vector<std::unique_ptr<SafetensorsFile>>* files, TensorTable* table) {
  std::string text;
  VG_ASSIGN_OR_RETURN(text, ReadSmallFile(dir / kIndexFile));
  const json index = json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto invalid = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(kIndexFile, ": ", parts...));
  };
  if (index.is_discarded()) return invalid("not valid JSON");
  if (!index.is_object()) return invalid("not a JSON object");
  auto weight_map = index.find("weight_map");
  if (weight_map == index.end() || !weight_map->is_object()) {
    return invalid("weight_map must be an object mapping tensor names to shard files");
  }
  std::map<std::string, const SafetensorsFile*> shards;
  for (const auto& [name, shard_value] : weight_map->items()) {
    if (!shard_value.is_string()) {
      return invalid("weight_map['", name, "'] must be a shard file name (a string)");
    }
    const std::string& shard = shard_value.get_ref<const std::string&>();
    if (!IsPlainFileName(shard)) {
      return invalid("weight_map['", name, "'] = '", shard,
                     "' is not a plain file name inside the checkpoint directory");
    }
    auto it = shards.find(shard);
    if (it == shards.end()) {
      std::unique_ptr<SafetensorsFile> file;
      VG_ASSIGN_OR_RETURN(file, SafetensorsFile::Open(dir / shard));
      it = shards.emplace(shard, file.get()).first;
      files->push_back(std::move(file));
    }
    auto view = it->second->tensors().find(name);
    if (view == it->second->tensors().end()) {
      return invalid("tensor '", name, "' is listed in weight_map but missing from ", shard);
    }
    table->Add(&view->second);
  }
  return absl::OkStatus();
}

absl::StatusOr<LayerWeights> BuildLayer(const ModelConfig& config, int64_t layer,
                                        TensorTable* table) {
  const int64_t hidden = config.hidden_size;
  const int64_t q_dim = config.num_attention_heads * config.head_dim;
  const int64_t kv_dim = config.num_key_value_heads * config.head_dim;
  const int64_t inner = config.intermediate_size;
  const std::string prefix = absl::StrCat(kLayerPrefix, layer, ".");
  LayerWeights w;
  struct Entry {
    const char* suffix;
    std::vector<int64_t> shape;
    TensorView* out;
  };
  const Entry entries[] = {
      {"input_layernorm.weight", {hidden}, &w.input_layernorm},
      {"pre_feedforward_layernorm.weight", {hidden}, &w.pre_feedforward_layernorm},
      {"self_attn.q_proj.weight", {q_dim, hidden}, &w.q_proj},
      {"self_attn.k_proj.weight", {kv_dim, hidden}, &w.k_proj},
      {"self_attn.v_proj.weight", {kv_dim, hidden}, &w.v_proj},
      {"self_attn.o_proj.weight", {hidden, q_dim}, &w.o_proj},
      {"mlp.gate_proj.weight", {inner, hidden}, &w.gate_proj},
      {"mlp.up_proj.weight", {inner, hidden}, &w.up_proj},
      {"mlp.down_proj.weight", {hidden, inner}, &w.down_proj},
  };
  for (const Entry& e : entries) {
    VG_ASSIGN_OR_RETURN(*e.out, table->Get(prefix + e.suffix, e.shape));
  }
  if (config.attention_bias) {
    const std::pair<const char*, int64_t> biases[] = {
        {"self_attn.q_proj.bias", q_dim},
        {"self_attn.k_proj.bias", kv_dim},
        {"self_attn.v_proj.bias", kv_dim},
        {"self_attn.o_proj.bias", hidden},
    };
    std::optional<TensorView>* outs[] = {&w.q_bias, &w.k_bias, &w.v_bias, &w.o_bias};
    for (int i = 0; i < 4; ++i) {
      VG_ASSIGN_OR_RETURN(*outs[i], table->Get(prefix + biases[i].first, {biases[i].second}));
    }
  }
  return w;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::filesystem::path& dir,
                                                             MatrixLayout matrix_layout) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir.string(), ": no such directory"));
  }
  auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint());
  checkpoint->dir_ = dir;
  VG_ASSIGN_OR_RETURN(checkpoint->config_, LoadModelConfig(dir / "config.json"));
  const ModelConfig& config = checkpoint->config_;

  std::unique_ptr<TensorTable> table;
  if (std::filesystem::exists(dir / kIndexFile, ec)) {
    table = std::make_unique<TensorTable>(kIndexFile);
    VG_RETURN_IF_ERROR(OpenShards(dir, &checkpoint->files_, table.get()));
  } else if (std::filesystem::exists(dir / kSingleFile, ec)) {
    table = std::make_unique<TensorTable>(kSingleFile);
    std::unique_ptr<SafetensorsFile> file;
    VG_ASSIGN_OR_RETURN(file, SafetensorsFile::Open(dir / kSingleFile));
    for (const auto& [name, view] : file->tensors()) table->Add(&view);
    checkpoint->files_.push_back(std::move(file));
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir.string(), ": no ", kSingleFile, " or ", kIndexFile));
  }

  ModelWeights& weights = checkpoint->weights_;
  const std::vector<int64_t> vocab_by_hidden = {config.vocab_size, config.hidden_size};
  VG_ASSIGN_OR_RETURN(weights.embed_tokens,
                      table->Get("model.embed_tokens.weight", vocab_by_hidden));
  VG_ASSIGN_OR_RETURN(weights.final_norm, table->Get("model.norm.weight", {config.hidden_size}));
  if (table->Has("lm_head.weight")) {
    VG_ASSIGN_OR_RETURN(weights.lm_head, table->Get("lm_head.weight", vocab_by_hidden));
  } else if (config.tie_word_embeddings) {
    weights.lm_head = weights.embed_tokens;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        dir.string(), ": missing tensor lm_head.weight (tie_word_embeddings is false)"));
  }
  weights.layers.reserve(static_cast<size_t>(config.num_hidden_layers));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    LayerWeights layer;
    VG_ASSIGN_OR_RETURN(layer, BuildLayer(config, i, table.get()));
    weights.layers.push_back(std::move(layer));
  }
  VG_RETURN_IF_ERROR(table->CheckNoUnexpectedLayerTensors());
  if (matrix_layout == MatrixLayout::kTiles) VG_RETURN_IF_ERROR(checkpoint->RearrangeMatrices());
  return checkpoint;
}

absl::Status Checkpoint::RearrangeMatrices() {
  std::vector<TensorView*> matrices = {&weights_.lm_head, &weights_.embed_tokens};
  for (LayerWeights& layer : weights_.layers) {
    for (TensorView* view : {&layer.q_proj, &layer.k_proj, &layer.v_proj, &layer.o_proj,
                             &layer.gate_proj, &layer.up_proj, &layer.down_proj}) {
      matrices.push_back(view);
    }
  }
  for (const auto& file : files_) VG_RETURN_IF_ERROR(file->SetWritable(true));
  // The embedding is a product matrix only as the tied lm_head: rearranged once, through lm_head,
  // and both views then say so. An untied embedding stays row-major.
  std::set<const std::byte*> done;
  for (TensorView* view : matrices) {
    if (view == &weights_.embed_tokens) {
      if (view->data == weights_.lm_head.data) view->layout = MatrixLayout::kTiles;
      continue;
    }
    if (view->num_bytes != 0 && done.insert(view->data).second) {
      // The memory is the checkpoint's own private copy, writable until SetWritable(false).
      RearrangeToTiles(view->dtype, view->shape[0], view->shape[1],
                       const_cast<std::byte*>(view->data));
    }
    view->layout = MatrixLayout::kTiles;
  }
  for (const auto& file : files_) VG_RETURN_IF_ERROR(file->SetWritable(false));
  return absl::OkStatus();
}

size_t Checkpoint::WeightBytes() const {
  // Count each mapped region once: a tied lm_head is the embedding itself.
  std::set<const std::byte*> seen;
  size_t total = 0;
  auto add = [&](const TensorView& view) {
    if (view.num_bytes != 0 && seen.insert(view.data).second) total += view.num_bytes;
  };
  add(weights_.embed_tokens);
  add(weights_.final_norm);
  add(weights_.lm_head);
  for (const LayerWeights& layer : weights_.layers) {
    for (const TensorView* view :
         {&layer.input_layernorm, &layer.pre_feedforward_layernorm, &layer.q_proj, &layer.k_proj,
          &layer.v_proj, &layer.o_proj, &layer.gate_proj, &layer.up_proj, &layer.down_proj}) {
      add(*view);
    }
    for (const auto* bias : {&layer.q_bias, &layer.k_bias, &layer.v_bias, &layer.o_bias}) {
      if (bias->has_value()) add(**bias);
    }
  }
  return total;
}

}  // namespace vg::engine
