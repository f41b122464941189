// make_random_checkpoint: writes a random VaultGemma checkpoint (config.json, model.safetensors and
// a made-up tokenizer.model) for benchmarks. `--shape 1b` is the released model's shape (hidden
// 1152, intermediate 6912, 26 layers, 4 query and 4 KV heads of 256, vocab 256000, context 1024);
// BF16 by default, ~2 GB. The numbers are random (fixed seed), so the output is meaningless text;
// only speed is measured.
//
//   make_random_checkpoint --out DIR [--shape 1b|tiny] [--dtype bf16|f32|f16] [--seed N]
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "engine/model/dtype.h"
#include "engine/runner/command_line.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace vg::tools {
namespace {

using engine::DType;

struct Shape {
  int64_t vocab, hidden, intermediate, layers, heads, kv_heads, head_dim, context;
};

constexpr Shape k1B = {256000, 1152, 6912, 26, 4, 4, 256, 1024};
constexpr Shape kTiny = {512, 64, 128, 2, 4, 2, 16, 128};
// `make demo`: small enough to start at once, the released model's context; vocab from --tokenizer.
constexpr Shape kDemo = {512, 256, 768, 4, 4, 1, 64, 1024};

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

// Protobuf wire format, just enough to write a sentencepiece ModelProto.
void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void PutTag(std::string& out, int field, int wire_type) {
  PutVarint(out, static_cast<uint64_t>(field) << 3 | wire_type);
}
void PutBytes(std::string& out, int field, const std::string& bytes) {
  PutTag(out, field, 2);
  PutVarint(out, bytes.size());
  out += bytes;
}
void PutInt(std::string& out, int field, uint64_t v) {
  PutTag(out, field, 0);
  PutVarint(out, v);
}

// A Gemma-like BPE tokenizer.model with `vocab` pieces: <pad> <eos> <bos> <unk>, the 256 byte
// pieces, then made-up pieces (letters and digits, with and without a leading U+2581) scored by
// rank. Enough for the engine to load, encode and decode; its merges mean nothing.
std::string TokenizerModel(int64_t vocab) {
  enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kByte = 6 };
  std::string model;
  int64_t count = 0;
  auto add = [&](const std::string& piece, int type) {
    std::string message;
    PutBytes(message, 1, piece);
    const float score = -static_cast<float>(count);
    uint32_t bits;
    std::memcpy(&bits, &score, 4);
    PutTag(message, 2, 5);
    for (int i = 0; i < 4; ++i) message.push_back(static_cast<char>(bits >> (8 * i)));
    PutInt(message, 3, static_cast<uint64_t>(type));
    PutBytes(model, 1, message);
    ++count;
  };
  add("<pad>", kControl);
  add("<eos>", kControl);
  add("<bos>", kControl);
  add("<unk>", kUnknown);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    add(name, kByte);
  }
  add("\xE2\x96\x81", kNormal);
  static constexpr char kAlphabet[] =
      "etaoinshrdlucmfwypvbgkjqxzETAOINSHRDLUCMFWYPVBGKJQXZ0123456789.,;:!?'-()";
  const uint64_t base = sizeof(kAlphabet) - 1;
  for (uint64_t n = 1; count < vocab; ++n) {
    // Bijective base-k numeration: every n gives a different non-empty string.
    std::string piece;
    for (uint64_t m = n; m > 0; m = (m - 1) / base)
      piece.insert(piece.begin(), kAlphabet[(m - 1) % base]);
    add(piece, kNormal);
    if (count < vocab) add("\xE2\x96\x81" + piece, kNormal);
  }
  std::string trainer;
  PutInt(trainer, 3, 2);  // model_type BPE
  PutInt(trainer, 4, static_cast<uint64_t>(vocab));
  PutInt(trainer, 35, 1);  // byte_fallback
  PutInt(trainer, 40, 3);  // unk_id
  PutInt(trainer, 41, 2);  // bos_id
  PutInt(trainer, 42, 1);  // eos_id
  PutInt(trainer, 43, 0);  // pad_id
  PutBytes(trainer, 45, "<unk>");
  PutBytes(trainer, 46, "<bos>");
  PutBytes(trainer, 47, "<eos>");
  PutBytes(trainer, 48, "<pad>");
  PutBytes(model, 2, trainer);
  std::string normalizer;
  PutBytes(normalizer, 1, "identity");
  PutInt(normalizer, 3, 0);  // add_dummy_prefix
  PutInt(normalizer, 4, 0);  // remove_extra_whitespaces
  PutInt(normalizer, 5, 1);  // escape_whitespaces
  PutBytes(model, 3, normalizer);
  return model;
}

int Run(int argc, char** argv) {
  static constexpr engine::FlagSpec kFlags[] = {
      {"out"}, {"shape"}, {"dtype"}, {"seed"}, {"tokenizer"}};
  auto cl = engine::CommandLine::Parse(argc, argv, kFlags);
  if (!cl.ok()) {
    std::cerr << "make_random_checkpoint: " << cl.status().message() << "\n";
    return 2;
  }
  const std::string out_dir = cl->GetString("out").value_or("");
  const std::string shape_name = cl->GetString("shape").value_or("1b");
  const std::string dtype_name = cl->GetString("dtype").value_or("bf16");
  auto seed = cl->GetUint64("seed", 1);
  if (out_dir.empty() || !seed.ok() ||
      (shape_name != "1b" && shape_name != "tiny" && shape_name != "demo") ||
      (dtype_name != "bf16" && dtype_name != "f32" && dtype_name != "f16")) {
    std::cerr << "usage: make_random_checkpoint --out DIR [--shape 1b|tiny|demo] "
                 "[--dtype bf16|f32|f16] [--seed N] [--tokenizer tokenizer.model]\n";
    return 2;
  }
  Shape shape = shape_name == "1b" ? k1B : shape_name == "demo" ? kDemo : kTiny;
  // With a real tokenizer (e.g. one spm_train made), the vocabulary is its size.
  std::string tokenizer_bytes;
  std::set<int64_t> silent_rows;  // byte, control and tag pieces of a given tokenizer
  if (auto path = cl->GetString("tokenizer"); path.has_value()) {
    auto tokenizer = engine::Tokenizer::Load(*path);
    if (!tokenizer.ok()) {
      std::cerr << "make_random_checkpoint: " << tokenizer.status().message() << "\n";
      return 2;
    }
    shape.vocab = (*tokenizer)->vocab_size();
    for (int32_t id = 0; id < shape.vocab; ++id) {
      const std::string_view piece = (*tokenizer)->IdToPiece(id);
      if (piece.substr(0, 3) == "<0x" || (piece.size() > 1 && piece.front() == '<')) {
        silent_rows.insert(id);
      }
    }
    std::ifstream in(*path, std::ios::binary);
    tokenizer_bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
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
    const bool embedding = t.name == "model.embed_tokens.weight";
    for (uint64_t i = 0; i < elements; ++i) {
      float v = noise.Next(t.stddev);
      // Silent rows (logit 0 under the tied head) for pieces that should not win: random
      // weights otherwise favour stray byte pieces, which print as U+FFFD.
      if (embedding && silent_rows.count(static_cast<int64_t>(i / shape.hidden)) > 0) v = 0.0f;
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
  std::ofstream(std::filesystem::path(out_dir) / "tokenizer.model", std::ios::binary)
      << (tokenizer_bytes.empty() ? TokenizerModel(shape.vocab) : tokenizer_bytes);
  std::cout << "wrote " << out_dir << " (" << (offset >> 20) << " MiB of " << dtype_name
            << " weights)\n";
  return 0;
}

}  // namespace
}  // namespace vg::tools

int main(int argc, char** argv) { return vg::tools::Run(argc, argv); }
