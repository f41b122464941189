// make_random_checkpoint: writes a random VaultGemma checkpoint (config.json + model.safetensors)
// for benchmarks. `--shape 1b` is the released model's shape (hidden 1152, intermediate 6912,
// 26 layers, 4 query and 4 KV heads of 256, vocab 256000, context 1024); BF16 by default, ~2 GB.
// The numbers are random (fixed seed), so the output is meaningless text; only speed is measured.
//
//   make_random_checkpoint --out DIR [--shape 1b|tiny] [--dtype bf16|f32|f16] [--seed N]
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "engine/model/dtype.h"
#include "engine/runner/command_line.h"
#include "nlohmann/json.hpp"

namespace vg::tools {
namespace {

using engine::DType;

struct Shape {
  int64_t vocab, hidden, intermediate, layers, heads, kv_heads, head_dim, context;
};

constexpr Shape k1B = {256000, 1152, 6912, 26, 4, 4, 256, 1024};
constexpr Shape kTiny = {512, 64, 128, 2, 4, 2, 16, 128};

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  float stddev;  // normal-ish noise scale; norms are centred on 0 like real checkpoints
};

std::vector<Tensor> TensorsOf(const Shape& s) {
  const float proj = 1.0f / std::sqrt(static_cast<float>(s.hidden));
  std::vector<Tensor> out = {{"model.embed_tokens.weight", {s.vocab, s.hidden}, 0.03f},
                             {"model.norm.weight", {s.hidden}, 0.1f}};
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.push_back({p + "input_layernorm.weight", {s.hidden}, 0.1f});
    out.push_back({p + "pre_feedforward_layernorm.weight", {s.hidden}, 0.1f});
    out.push_back({p + "self_attn.q_proj.weight", {s.heads * s.head_dim, s.hidden}, proj});
    out.push_back({p + "self_attn.k_proj.weight", {s.kv_heads * s.head_dim, s.hidden}, proj});
    out.push_back({p + "self_attn.v_proj.weight", {s.kv_heads * s.head_dim, s.hidden}, proj});
    out.push_back({p + "self_attn.o_proj.weight", {s.hidden, s.heads * s.head_dim}, proj});
    out.push_back({p + "mlp.gate_proj.weight", {s.intermediate, s.hidden}, proj});
    out.push_back({p + "mlp.up_proj.weight", {s.intermediate, s.hidden}, proj});
    out.push_back({p + "mlp.down_proj.weight", {s.hidden, s.intermediate}, proj});
  }
  return out;
}

// Cheap deterministic noise: the sum of four uniforms, roughly normal, scaled to `stddev`.
class Noise {
 public:
  explicit Noise(uint64_t seed) : state_(seed * 0x9e3779b97f4a7c15ull + 1) {}
  float Next(float stddev) {
    float sum = 0;
    for (int i = 0; i < 4; ++i) {
      state_ ^= state_ << 13;
      state_ ^= state_ >> 7;
      state_ ^= state_ << 17;
      sum += static_cast<float>(state_ >> 40) * (1.0f / 16777216.0f) - 0.5f;
    }
    return sum * stddev * 1.7320508f;  // var of the sum of 4 U(-.5,.5) is 1/3
  }

 private:
  uint64_t state_;
};

int Run(int argc, char** argv) {
  static constexpr engine::FlagSpec kFlags[] = {{"out"}, {"shape"}, {"dtype"}, {"seed"}};
  auto cl = engine::CommandLine::Parse(argc, argv, kFlags);
  if (!cl.ok()) {
    std::cerr << "make_random_checkpoint: " << cl.status().message() << "\n";
    return 2;
  }
  const std::string out_dir = cl->GetString("out").value_or("");
  const std::string shape_name = cl->GetString("shape").value_or("1b");
  const std::string dtype_name = cl->GetString("dtype").value_or("bf16");
  auto seed = cl->GetUint64("seed", 1);
  if (out_dir.empty() || !seed.ok() || (shape_name != "1b" && shape_name != "tiny") ||
      (dtype_name != "bf16" && dtype_name != "f32" && dtype_name != "f16")) {
    std::cerr << "usage: make_random_checkpoint --out DIR [--shape 1b|tiny] "
                 "[--dtype bf16|f32|f16] [--seed N]\n";
    return 2;
  }
  const Shape shape = shape_name == "1b" ? k1B : kTiny;
  const DType dtype = dtype_name == "bf16"  ? DType::kBF16
                      : dtype_name == "f16" ? DType::kF16
                                            : DType::kF32;
  std::filesystem::create_directories(out_dir);

  nlohmann::json config = {
      {"architectures", {"VaultGemmaForCausalLM"}},
      {"model_type", "vaultgemma"},
      {"vocab_size", shape.vocab},
      {"hidden_size", shape.hidden},
      {"intermediate_size", shape.intermediate},
      {"num_hidden_layers", shape.layers},
      {"num_attention_heads", shape.heads},
      {"num_key_value_heads", shape.kv_heads},
      {"head_dim", shape.head_dim},
      {"hidden_activation", "gelu_pytorch_tanh"},
      {"max_position_embeddings", shape.context},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},
      {"query_pre_attn_scalar", shape.head_dim},
      {"sliding_window", shape.context},
      {"layer_types", std::vector<std::string>(shape.layers, "full_attention")},
      {"attn_logit_softcapping", 50.0},
      {"final_logit_softcapping", 30.0},
      {"tie_word_embeddings", true},
      {"bos_token_id", 2},
      {"eos_token_id", 1},
      {"pad_token_id", 0},
      {"torch_dtype", dtype == DType::kBF16  ? "bfloat16"
                      : dtype == DType::kF16 ? "float16"
                                             : "float32"}};
  std::ofstream(std::filesystem::path(out_dir) / "config.json") << config.dump(2) << "\n";

  const std::vector<Tensor> tensors = TensorsOf(shape);
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const Tensor& t : tensors) {
    uint64_t elements = 1;
    for (int64_t d : t.shape) elements *= static_cast<uint64_t>(d);
    const uint64_t bytes = elements * engine::DTypeSize(dtype);
    header[t.name] = {{"dtype", std::string(engine::DTypeName(dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header_text = header.dump();
  while (header_text.size() % 8 != 0) header_text.push_back(' ');

  const std::filesystem::path weights = std::filesystem::path(out_dir) / "model.safetensors";
  std::ofstream file(weights, std::ios::binary);
  const uint64_t header_size = header_text.size();
  file.write(reinterpret_cast<const char*>(&header_size), 8);  // little-endian hosts only
  file.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
  Noise noise(*seed);
  std::vector<char> buffer;
  for (const Tensor& t : tensors) {
    uint64_t elements = 1;
    for (int64_t d : t.shape) elements *= static_cast<uint64_t>(d);
    buffer.resize(elements * engine::DTypeSize(dtype));
    for (uint64_t i = 0; i < elements; ++i) {
      const float v = noise.Next(t.stddev);
      if (dtype == DType::kF32) {
        std::memcpy(buffer.data() + 4 * i, &v, 4);
      } else {
        const uint16_t h = dtype == DType::kBF16 ? engine::FloatToBF16(v) : engine::FloatToF16(v);
        std::memcpy(buffer.data() + 2 * i, &h, 2);
      }
    }
    file.write(buffer.data(), static_cast<std::streamsize>(buffer.size()));
  }
  file.close();
  if (!file) {
    std::cerr << "make_random_checkpoint: writing " << weights << " failed\n";
    return 1;
  }
  std::cout << "wrote " << out_dir << " (" << (offset >> 20) << " MiB of " << dtype_name
            << " weights)\n";
  return 0;
}

}  // namespace
}  // namespace vg::tools

int main(int argc, char** argv) { return vg::tools::Run(argc, argv); }
