#include "engine/model/config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace vg::engine {
namespace {

using nlohmann::json;

// Sizes beyond this are certainly not a real model and would make products such as
// vocab * hidden overflow or default layer tables explode; reject them at load.
constexpr int64_t kMaxSize = int64_t{1} << 24;
constexpr size_t kMaxConfigBytes = 16 << 20;

const char* JsonTypeName(const json& value) {
  // nlohmann's type_name() says "number" for both; integers and floats matter here.
  if (value.is_number_integer()) return "an integer";
  if (value.is_number_float()) return "a float";
  if (value.is_null()) return "null";
  if (value.is_boolean()) return "a boolean";
  if (value.is_string()) return "a string";
  if (value.is_array()) return "an array";
  if (value.is_object()) return "an object";
  return "an unknown value";
}

// Reads typed fields out of the top-level object; every error names `source` and the field.
class FieldReader {
 public:
  FieldReader(const json& root, absl::string_view source) : root_(root), source_(source) {}

  absl::Status Error(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", field, " ", what));
  }

  absl::Status TypeError(absl::string_view field, const json& value, absl::string_view want) const {
    return Error(field, absl::StrCat("must be ", want, ", got ", JsonTypeName(value)));
  }

  // Null when the key is absent.
  const json* Find(const char* key) const {
    auto it = root_.find(key);
    return it == root_.end() ? nullptr : &*it;
  }

  absl::Status IntValue(absl::string_view field, const json& value, int64_t* out) const {
    if (value.is_number_unsigned()) {
      const uint64_t raw = value.get<uint64_t>();
      if (raw > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Error(field, absl::StrCat("(", raw, ") is out of range"));
      }
      *out = static_cast<int64_t>(raw);
      return absl::OkStatus();
    }
    if (value.is_number_integer()) {
      *out = value.get<int64_t>();
      return absl::OkStatus();
    }
    return TypeError(field, value, "an integer");
  }

  absl::Status Int(const char* key, int64_t* out) const {
    const json* value = Find(key);
    return value == nullptr ? absl::OkStatus() : IntValue(key, *value, out);
  }

  absl::Status NumberValue(absl::string_view field, const json& value, double* out) const {
    if (!value.is_number()) return TypeError(field, value, "a number");
    *out = value.get<double>();
    return absl::OkStatus();
  }

  absl::Status Double(const char* key, double* out) const {
    const json* value = Find(key);
    return value == nullptr ? absl::OkStatus() : NumberValue(key, *value, out);
  }

  absl::Status Bool(const char* key, bool* out) const {
    const json* value = Find(key);
    if (value == nullptr) return absl::OkStatus();
    if (!value->is_boolean()) return TypeError(key, *value, "true or false");
    *out = value->get<bool>();
    return absl::OkStatus();
  }

  absl::Status String(const char* key, std::string* out) const {
    const json* value = Find(key);
    if (value == nullptr) return absl::OkStatus();
    if (!value->is_string()) return TypeError(key, *value, "a string");
    *out = value->get<std::string>();
    return absl::OkStatus();
  }

  // Missing keeps the default; explicit null turns the cap off.
  absl::Status SoftCap(const char* key, std::optional<double>* out) const {
    const json* value = Find(key);
    if (value == nullptr) return absl::OkStatus();
    if (value->is_null()) {
      *out = std::nullopt;
      return absl::OkStatus();
    }
    double cap = 0;
    if (!value->is_number()) return TypeError(key, *value, "a number or null");
    cap = value->get<double>();
    if (!(cap > 0) || !std::isfinite(cap)) {
      return Error(key, absl::StrCat("(", cap, ") must be positive (or null to disable it)"));
    }
    *out = cap;
    return absl::OkStatus();
  }

 private:
  const json& root_;
  absl::string_view source_;
};

#define VG_RETURN_IF_ERROR(expr)             \
  do {                                       \
    absl::Status vg_status_ = (expr);        \
    if (!vg_status_.ok()) return vg_status_; \
  } while (0)

absl::Status ParseRope(const FieldReader& reader, ModelConfig* config) {
  std::optional<double> top_level_theta;
  if (const json* theta = reader.Find("rope_theta"); theta != nullptr) {
    double value = 0;
    VG_RETURN_IF_ERROR(reader.NumberValue("rope_theta", *theta, &value));
    top_level_theta = value;
    config->rope_theta = value;
  }
  // Newer transformers nest the theta as rope_parameters; older files may carry a legacy
  // rope_scaling, which must be null or the default (no scaling).
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    const json* params = reader.Find(key);
    if (params == nullptr || params->is_null()) continue;
    if (!params->is_object()) return reader.TypeError(key, *params, "an object or null");
    for (const char* type_key : {"rope_type", "type"}) {
      auto type = params->find(type_key);
      if (type == params->end()) continue;
      const std::string field = absl::StrCat(key, ".", type_key);
      if (!type->is_string()) return reader.TypeError(field, *type, "a string");
      if (type->get<std::string>() != "default") {
        return reader.Error(field, absl::StrCat("\"", type->get<std::string>(),
                                                "\" is not supported (only \"default\" RoPE)"));
      }
    }
    for (const auto& [name, value] : params->items()) {
      if (name == "rope_type" || name == "type") continue;
      const std::string field = absl::StrCat(key, ".", name);
      if (value.is_object()) {
        // A per-layer-type table (Gemma 3 style) would give layers different thetas.
        return reader.Error(field, "is not supported (only one default RoPE for all layers)");
      }
      if (name == "partial_rotary_factor" && !(value.is_number() && value.get<double>() == 1.0)) {
        return reader.Error(field, "must be 1 (partial rotary embeddings are not supported)");
      }
      // Other scalars (e.g. a leftover `factor`) mean nothing to default RoPE, as in transformers.
      if (name != "rope_theta") continue;
      double theta = 0;
      VG_RETURN_IF_ERROR(reader.NumberValue(field, value, &theta));
      if (top_level_theta.has_value() && *top_level_theta != theta) {
        return reader.Error(field, absl::StrCat("(", theta, ") disagrees with rope_theta (",
                                                *top_level_theta, ")"));
      }
      config->rope_theta = theta;
    }
  }
  return absl::OkStatus();
}

absl::Status ParseTokenIds(const FieldReader& reader, ModelConfig* config) {
  VG_RETURN_IF_ERROR(reader.Int("bos_token_id", &config->bos_token_id));
  if (const json* pad = reader.Find("pad_token_id"); pad != nullptr) {
    if (pad->is_null()) {
      config->pad_token_id = -1;  // no padding token
    } else {
      VG_RETURN_IF_ERROR(reader.IntValue("pad_token_id", *pad, &config->pad_token_id));
    }
  }
  if (const json* eos = reader.Find("eos_token_id"); eos != nullptr) {
    config->eos_token_ids.clear();
    if (eos->is_array()) {
      if (eos->empty()) return reader.Error("eos_token_id", "must not be an empty list");
      for (size_t i = 0; i < eos->size(); ++i) {
        int64_t id = 0;
        VG_RETURN_IF_ERROR(reader.IntValue(absl::StrCat("eos_token_id[", i, "]"), (*eos)[i], &id));
        config->eos_token_ids.push_back(id);
      }
    } else if (eos->is_number_integer()) {
      int64_t id = 0;
      VG_RETURN_IF_ERROR(reader.IntValue("eos_token_id", *eos, &id));
      config->eos_token_ids.push_back(id);
    } else {
      return reader.TypeError("eos_token_id", *eos, "an integer or a list of integers");
    }
  }
  auto check_id = [&](absl::string_view field, int64_t id) -> absl::Status {
    if (id < 0 || id >= config->vocab_size) {
      return reader.Error(
          field, absl::StrCat("(", id, ") is outside [0, vocab_size=", config->vocab_size, ")"));
    }
    return absl::OkStatus();
  };
  VG_RETURN_IF_ERROR(check_id("bos_token_id", config->bos_token_id));
  if (config->pad_token_id != -1) {
    VG_RETURN_IF_ERROR(check_id("pad_token_id", config->pad_token_id));
  }
  for (int64_t id : config->eos_token_ids) VG_RETURN_IF_ERROR(check_id("eos_token_id", id));
  return absl::OkStatus();
}

absl::Status ParseLayerTypes(const FieldReader& reader, ModelConfig* config) {
  const json* types = reader.Find("layer_types");
  config->layer_types.clear();
  if (types == nullptr || types->is_null()) {
    // VaultGemmaConfig's default: layer 0 sliding, then alternating.
    for (int64_t i = 0; i < config->num_hidden_layers; ++i) {
      config->layer_types.push_back((i + 1) % 2 == 1 ? LayerType::kSlidingAttention
                                                     : LayerType::kFullAttention);
    }
    return absl::OkStatus();
  }
  if (!types->is_array()) return reader.TypeError("layer_types", *types, "a list of strings");
  if (static_cast<int64_t>(types->size()) != config->num_hidden_layers) {
    return reader.Error("layer_types",
                        absl::StrCat("has ", types->size(), " entries, num_hidden_layers is ",
                                     config->num_hidden_layers));
  }
  for (size_t i = 0; i < types->size(); ++i) {
    const json& entry = (*types)[i];
    const std::string field = absl::StrCat("layer_types[", i, "]");
    if (!entry.is_string()) return reader.TypeError(field, entry, "a string");
    const std::string& name = entry.get_ref<const std::string&>();
    if (name == "full_attention") {
      config->layer_types.push_back(LayerType::kFullAttention);
    } else if (name == "sliding_attention") {
      config->layer_types.push_back(LayerType::kSlidingAttention);
    } else {
      return reader.Error(field, absl::StrCat("\"", name,
                                              "\" is not \"full_attention\" or "
                                              "\"sliding_attention\""));
    }
  }
  return absl::OkStatus();
}

absl::Status Validate(const FieldReader& reader, const ModelConfig& config) {
  const std::pair<const char*, int64_t> sizes[] = {
      {"vocab_size", config.vocab_size},
      {"hidden_size", config.hidden_size},
      {"intermediate_size", config.intermediate_size},
      {"num_hidden_layers", config.num_hidden_layers},
      {"num_attention_heads", config.num_attention_heads},
      {"num_key_value_heads", config.num_key_value_heads},
      {"head_dim", config.head_dim},
      {"max_position_embeddings", config.max_position_embeddings},
      {"sliding_window", config.sliding_window},
  };
  for (const auto& [name, value] : sizes) {
    if (value <= 0) return reader.Error(name, absl::StrCat("(", value, ") must be positive"));
    if (value > kMaxSize) {
      return reader.Error(name, absl::StrCat("(", value, ") is larger than ", kMaxSize));
    }
  }
  if (config.num_attention_heads % config.num_key_value_heads != 0) {
    return reader.Error(
        "num_attention_heads",
        absl::StrCat("(", config.num_attention_heads, ") is not divisible by num_key_value_heads (",
                     config.num_key_value_heads, ")"));
  }
  if (config.head_dim % 2 != 0) {
    return reader.Error("head_dim",
                        absl::StrCat("(", config.head_dim, ") must be even (RoPE rotates halves)"));
  }
  const std::pair<const char*, double> positives[] = {
      {"rms_norm_eps", config.rms_norm_eps},
      {"rope_theta", config.rope_theta},
      {"query_pre_attn_scalar", config.query_pre_attn_scalar},
  };
  for (const auto& [name, value] : positives) {
    if (!(value > 0) || !std::isfinite(value)) {
      return reader.Error(name, absl::StrCat("(", value, ") must be positive and finite"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view LayerTypeName(LayerType type) {
  switch (type) {
    case LayerType::kFullAttention:
      return "full_attention";
    case LayerType::kSlidingAttention:
      return "sliding_attention";
  }
  return "?";
}

bool ModelConfig::IsEos(int64_t token_id) const {
  return std::find(eos_token_ids.begin(), eos_token_ids.end(), token_id) != eos_token_ids.end();
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             std::string_view source_name) {
  const absl::string_view source(source_name.data(), source_name.size());
  const json root = json::parse(json_text.begin(), json_text.end(), nullptr,
                                /*allow_exceptions=*/false);
  // nlohmann stops at a NUL byte as if the text ended; valid JSON never holds a raw NUL.
  if (root.is_discarded() || json_text.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": must be a JSON object, got ", JsonTypeName(root)));
  }
  FieldReader reader(root, source);
  ModelConfig config;

  VG_RETURN_IF_ERROR(reader.String("model_type", &config.model_type));
  if (config.model_type != "vaultgemma") {
    return reader.Error("model_type",
                        absl::StrCat("is \"", config.model_type, "\", expected \"vaultgemma\""));
  }
  VG_RETURN_IF_ERROR(reader.Int("vocab_size", &config.vocab_size));
  VG_RETURN_IF_ERROR(reader.Int("hidden_size", &config.hidden_size));
  VG_RETURN_IF_ERROR(reader.Int("intermediate_size", &config.intermediate_size));
  VG_RETURN_IF_ERROR(reader.Int("num_hidden_layers", &config.num_hidden_layers));
  VG_RETURN_IF_ERROR(reader.Int("num_attention_heads", &config.num_attention_heads));
  VG_RETURN_IF_ERROR(reader.Int("num_key_value_heads", &config.num_key_value_heads));
  VG_RETURN_IF_ERROR(reader.Int("head_dim", &config.head_dim));
  VG_RETURN_IF_ERROR(reader.Int("max_position_embeddings", &config.max_position_embeddings));
  VG_RETURN_IF_ERROR(reader.Int("sliding_window", &config.sliding_window));
  VG_RETURN_IF_ERROR(reader.Double("rms_norm_eps", &config.rms_norm_eps));
  VG_RETURN_IF_ERROR(reader.Double("query_pre_attn_scalar", &config.query_pre_attn_scalar));
  VG_RETURN_IF_ERROR(ParseRope(reader, &config));
  VG_RETURN_IF_ERROR(reader.SoftCap("attn_logit_softcapping", &config.attn_logit_softcapping));
  VG_RETURN_IF_ERROR(reader.SoftCap("final_logit_softcapping", &config.final_logit_softcapping));
  VG_RETURN_IF_ERROR(reader.Bool("attention_bias", &config.attention_bias));
  VG_RETURN_IF_ERROR(reader.Bool("tie_word_embeddings", &config.tie_word_embeddings));

  // VaultGemma reads hidden_activation; the Gemma-1 era `hidden_act` key is ignored.
  VG_RETURN_IF_ERROR(reader.String("hidden_activation", &config.hidden_activation));
  if (config.hidden_activation != "gelu_pytorch_tanh") {
    return reader.Error("hidden_activation", absl::StrCat("\"", config.hidden_activation,
                                                          "\" is not supported (only "
                                                          "\"gelu_pytorch_tanh\")"));
  }

  for (const char* key : {"dtype", "torch_dtype"}) {
    const json* value = reader.Find(key);
    if (value == nullptr || value->is_null()) continue;
    if (!value->is_string()) return reader.TypeError(key, *value, "a string");
    const std::string& name = value->get_ref<const std::string&>();
    std::optional<DType> dtype = ParseTorchDType(name);
    if (!dtype.has_value()) {
      return reader.Error(key, absl::StrCat("\"", name,
                                            "\" is not a supported dtype (float32, bfloat16, "
                                            "float16)"));
    }
    // `dtype` is the current spelling and wins when both are present.
    if (!config.torch_dtype.has_value()) config.torch_dtype = dtype;
  }

  VG_RETURN_IF_ERROR(Validate(reader, config));
  VG_RETURN_IF_ERROR(ParseTokenIds(reader, &config));
  VG_RETURN_IF_ERROR(ParseLayerTypes(reader, &config));
  return config;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::filesystem::path& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) {
    return absl::NotFoundError(absl::StrCat(path.string(), ": no such file"));
  }
  if (!std::filesystem::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a regular file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::PermissionDeniedError(
        absl::StrCat(path.string(), ": cannot open: ", std::strerror(errno)));
  }
  std::string text;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof(buffer)) || in.gcount() > 0) {
    text.append(buffer, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxConfigBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(path.string(), ": larger than ", kMaxConfigBytes, " bytes"));
    }
  }
  if (in.bad()) {
    return absl::DataLossError(absl::StrCat(path.string(), ": read error"));
  }
  return ParseModelConfig(text, path.string());  // errors name the whole path
}

}  // namespace vg::engine
