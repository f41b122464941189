#include "tests/engine/model/safetensors_writer.h"

#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <random>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "engine/model/config.h"

namespace vg::test {

using engine::DType;

std::string EncodeFloats(const std::vector<float>& values, DType dtype) {
  std::string out;
  out.reserve(values.size() * engine::DTypeSize(dtype));
  for (float v : values) {
    char buf[4];
    if (dtype == DType::kF32) {
      std::memcpy(buf, &v, 4);
      out.append(buf, 4);
    } else {
      const uint16_t bits = dtype == DType::kBF16 ? engine::FloatToBF16(v) : engine::FloatToF16(v);
      std::memcpy(buf, &bits, 2);
      out.append(buf, 2);
    }
  }
  return out;
}

TestTensor MakeTensor(std::string name, DType dtype, std::vector<int64_t> shape,
                      const std::vector<float>& values) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> filled(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    filled[i] = values.empty() ? 0.0f : values[static_cast<size_t>(i) % values.size()];
  }
  return TestTensor{std::move(name), std::string(engine::DTypeName(dtype)), std::move(shape),
                    EncodeFloats(filled, dtype)};
}

nlohmann::json SafetensorsHeader(const std::vector<TestTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const TestTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  return header;
}

std::string SafetensorsData(const std::vector<TestTensor>& tensors) {
  std::string data;
  for (const TestTensor& t : tensors) data += t.bytes;
  return data;
}

std::string SafetensorsBytes(std::string_view header_text, std::string_view data) {
  std::string out(8, '\0');
  uint64_t n = header_text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out.append(header_text);
  out.append(data);
  return out;
}

std::string SafetensorsBytes(const std::vector<TestTensor>& tensors) {
  return SafetensorsBytes(SafetensorsHeader(tensors).dump(), SafetensorsData(tensors));
}

absl::Status WriteFile(const std::filesystem::path& path, std::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

absl::Status WriteSafetensors(const std::filesystem::path& path,
                              const std::vector<TestTensor>& tensors) {
  return WriteFile(path, SafetensorsBytes(tensors));
}

TempDir::TempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      (std::filesystem::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") / "vg_test_XXXXXX")
          .string();
  if (mkdtemp(pattern.data()) == nullptr) {
    std::abort();  // a test environment without a writable temp dir cannot run these tests
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

nlohmann::json TinyConfigJson() {
  return {
      {"architectures", {"VaultGemmaForCausalLM"}},
      {"model_type", "vaultgemma"},
      {"vocab_size", 32},
      {"hidden_size", 8},
      {"intermediate_size", 16},
      {"num_hidden_layers", 2},
      {"num_attention_heads", 2},
      {"num_key_value_heads", 1},
      {"head_dim", 4},
      {"hidden_activation", "gelu_pytorch_tanh"},
      {"max_position_embeddings", 64},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},
      {"query_pre_attn_scalar", 4},
      {"sliding_window", 16},
      {"layer_types", {"full_attention", "full_attention"}},
      {"attn_logit_softcapping", 50.0},
      {"final_logit_softcapping", 30.0},
      {"attention_bias", false},
      {"tie_word_embeddings", true},
      {"bos_token_id", 2},
      {"eos_token_id", 1},
      {"pad_token_id", 0},
      {"torch_dtype", "float32"},
  };
}

std::vector<TestTensor> TinyCheckpointTensors(const nlohmann::json& config_json, DType dtype,
                                              uint32_t seed) {
  auto parsed = engine::ParseModelConfig(config_json.dump());
  if (!parsed.ok()) return {};
  const engine::ModelConfig& c = *parsed;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-0.5f, 0.5f);
  std::vector<TestTensor> tensors;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> values(static_cast<size_t>(n));
    for (float& v : values) v = dist(rng);
    tensors.push_back(MakeTensor(std::move(name), dtype, std::move(shape), values));
  };
  const int64_t q = c.num_attention_heads * c.head_dim;
  const int64_t kv = c.num_key_value_heads * c.head_dim;
  add("model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    add(p + "input_layernorm.weight", {c.hidden_size});
    add(p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size});
    add(p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size});
    add(p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size});
    add(p + "pre_feedforward_layernorm.weight", {c.hidden_size});
    add(p + "self_attn.k_proj.weight", {kv, c.hidden_size});
    add(p + "self_attn.o_proj.weight", {c.hidden_size, q});
    add(p + "self_attn.q_proj.weight", {q, c.hidden_size});
    add(p + "self_attn.v_proj.weight", {kv, c.hidden_size});
    if (c.attention_bias) {
      add(p + "self_attn.k_proj.bias", {kv});
      add(p + "self_attn.o_proj.bias", {c.hidden_size});
      add(p + "self_attn.q_proj.bias", {q});
      add(p + "self_attn.v_proj.bias", {kv});
    }
  }
  add("model.norm.weight", {c.hidden_size});
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, c.hidden_size});
  std::sort(tensors.begin(), tensors.end(),
            [](const TestTensor& a, const TestTensor& b) { return a.name < b.name; });
  return tensors;
}

absl::Status WriteTinyCheckpoint(const std::filesystem::path& dir, const nlohmann::json& config,
                                 const std::vector<TestTensor>& tensors) {
  if (absl::Status s = WriteFile(dir / "config.json", config.dump(2)); !s.ok()) return s;
  return WriteSafetensors(dir / "model.safetensors", tensors);
}

}  // namespace vg::test
