#include "tiny_model.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace vg::engine::testing {
namespace {

// double -> IEEE half bits, round to nearest even (inputs stay well inside the finite range).
uint16_t DoubleToHalfBits(double v) {
  const uint16_t sign = std::signbit(v) ? 0x8000 : 0;
  const double a = std::fabs(v);
  if (a == 0.0) return sign;
  int e = static_cast<int>(std::floor(std::log2(a)));
  if (e < -14) {
    const double m = std::nearbyint(a / std::ldexp(1.0, -24));
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(m));
  }
  double m = std::nearbyint(a / std::ldexp(1.0, e) * 1024.0);
  if (m >= 2048.0) {
    m /= 2.0;
    ++e;
  }
  return static_cast<uint16_t>(sign | ((e + 15) << 10) | (static_cast<uint16_t>(m) - 1024));
}

double HalfBitsToDouble(uint16_t h) {
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  const double mag = exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
  return (h & 0x8000) ? -mag : mag;
}

using Vec = std::vector<double>;

// y[o] = sum_i x[i] * w[o * in + i] (+ b[o])
Vec Linear(const Vec& x, const Vec& w, int64_t out, const Vec* bias) {
  const int64_t in = static_cast<int64_t>(x.size());
  Vec y(out, 0.0);
  for (int64_t o = 0; o < out; ++o) {
    double s = 0.0;
    for (int64_t i = 0; i < in; ++i) s += x[i] * w[o * in + i];
    y[o] = s + (bias ? (*bias)[o] : 0.0);
  }
  return y;
}

Vec RmsNorm(const Vec& x, const Vec& w, double eps) {
  double ss = 0.0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * (1.0 + w[i]);
  return y;
}

}  // namespace

std::vector<int32_t> RandomTokens(int64_t count, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> tokens(count);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % vocab);
  return tokens;
}

std::filesystem::path MakeTempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path dir = base ? base : std::filesystem::temp_directory_path();
  dir /= absl::StrCat("vg_backend_", name, "_", ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TinyModel::TinyModel(const TinyModelSpec& spec) {
  ModelConfig& c = config_;
  c.vocab_size = spec.vocab_size;
  c.hidden_size = spec.hidden_size;
  c.intermediate_size = spec.intermediate_size;
  c.num_hidden_layers = spec.num_layers;
  c.num_attention_heads = spec.num_heads;
  c.num_key_value_heads = spec.num_kv_heads;
  c.head_dim = spec.head_dim;
  c.max_position_embeddings = spec.max_positions;
  c.sliding_window = spec.sliding_window;
  c.layer_types = spec.layer_types;
  if (c.layer_types.empty()) c.layer_types.assign(spec.num_layers, LayerType::kFullAttention);
  c.attn_logit_softcapping = spec.attn_softcap;
  c.final_logit_softcapping = spec.final_softcap;
  c.query_pre_attn_scalar = spec.query_pre_attn_scalar;
  c.rope_theta = spec.rope_theta;
  c.rms_norm_eps = spec.rms_norm_eps;
  c.attention_bias = spec.attention_bias;
  c.tie_word_embeddings = spec.tie_word_embeddings;
  c.torch_dtype = spec.dtype;
  c.bos_token_id = 2;
  c.eos_token_ids = {1};
  c.pad_token_id = 0;

  uint32_t state = spec.seed;
  const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim;
  const int64_t kv = c.num_key_value_heads * c.head_dim, inter = c.intermediate_size;
  auto dtype = spec.dtype;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, double scale) {
    tensors_[name].dtype = dtype;
    Add(name, std::move(shape), scale, state);
  };
  add("model.embed_tokens.weight", {c.vocab_size, h}, 1.0);
  add("model.norm.weight", {h}, 0.5);
  if (!spec.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, h}, 1.5 / std::sqrt(h));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    add(p + "input_layernorm.weight", {h}, 0.5);
    add(p + "pre_feedforward_layernorm.weight", {h}, 0.5);
    add(p + "self_attn.q_proj.weight", {q, h}, 2.0 / std::sqrt(h));
    add(p + "self_attn.k_proj.weight", {kv, h}, 2.0 / std::sqrt(h));
    add(p + "self_attn.v_proj.weight", {kv, h}, 1.5 / std::sqrt(h));
    add(p + "self_attn.o_proj.weight", {h, q}, 1.5 / std::sqrt(q));
    add(p + "mlp.gate_proj.weight", {inter, h}, 2.0 / std::sqrt(h));
    add(p + "mlp.up_proj.weight", {inter, h}, 1.5 / std::sqrt(h));
    add(p + "mlp.down_proj.weight", {h, inter}, 1.5 / std::sqrt(inter));
    if (spec.attention_bias) {
      add(p + "self_attn.q_proj.bias", {q}, 0.3);
      add(p + "self_attn.k_proj.bias", {kv}, 0.3);
      add(p + "self_attn.v_proj.bias", {kv}, 0.3);
      add(p + "self_attn.o_proj.bias", {h}, 0.3);
    }
  }
}

void TinyModel::Add(const std::string& name, std::vector<int64_t> shape, double scale,
                    uint32_t& state) {
  HostTensor& t = tensors_[name];
  t.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  std::mt19937 rng(state++ * 7919u + 17u);
  std::uniform_real_distribution<double> dist(-scale, scale);
  t.values.resize(n);
  t.bytes.resize(n * DTypeSize(t.dtype));
  for (int64_t i = 0; i < n; ++i) {
    const double v = dist(rng);
    if (t.dtype == DType::kF32) {
      const float f = static_cast<float>(v);
      std::memcpy(&t.bytes[i * 4], &f, 4);
      t.values[i] = f;
    } else if (t.dtype == DType::kBF16) {
      const uint16_t bits = FloatToBF16(static_cast<float>(v));
      std::memcpy(&t.bytes[i * 2], &bits, 2);
      t.values[i] = BF16ToFloat(bits);
    } else {
      const uint16_t bits = DoubleToHalfBits(v);
      std::memcpy(&t.bytes[i * 2], &bits, 2);
      t.values[i] = HalfBitsToDouble(bits);
    }
  }
}

ModelWeights TinyModel::Views() const {
  auto view = [&](const std::string& name) {
    const HostTensor& t = tensors_.at(name);
    TensorView v;
    v.name = name;
    v.dtype = t.dtype;
    v.shape = t.shape;
    v.data = t.bytes.data();
    v.num_bytes = t.bytes.size();
    v.file = "memory";
    return v;
  };
  ModelWeights w;
  w.embed_tokens = view("model.embed_tokens.weight");
  w.final_norm = view("model.norm.weight");
  w.lm_head = tensors_.count("lm_head.weight") ? view("lm_head.weight") : w.embed_tokens;
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    LayerWeights l;
    l.input_layernorm = view(p + "input_layernorm.weight");
    l.pre_feedforward_layernorm = view(p + "pre_feedforward_layernorm.weight");
    l.q_proj = view(p + "self_attn.q_proj.weight");
    l.k_proj = view(p + "self_attn.k_proj.weight");
    l.v_proj = view(p + "self_attn.v_proj.weight");
    l.o_proj = view(p + "self_attn.o_proj.weight");
    l.gate_proj = view(p + "mlp.gate_proj.weight");
    l.up_proj = view(p + "mlp.up_proj.weight");
    l.down_proj = view(p + "mlp.down_proj.weight");
    if (config_.attention_bias) {
      l.q_bias = view(p + "self_attn.q_proj.bias");
      l.k_bias = view(p + "self_attn.k_proj.bias");
      l.v_bias = view(p + "self_attn.v_proj.bias");
      l.o_bias = view(p + "self_attn.o_proj.bias");
    }
    w.layers.push_back(std::move(l));
  }
  return w;
}

absl::Status TinyModel::WriteCheckpoint(const std::filesystem::path& dir) const {
  std::filesystem::create_directories(dir);
  const ModelConfig& c = config_;
  nlohmann::json cfg = {
      {"architectures", {"VaultGemmaForCausalLM"}},
      {"model_type", "vaultgemma"},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"hidden_activation", "gelu_pytorch_tanh"},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"query_pre_attn_scalar", c.query_pre_attn_scalar},
      {"sliding_window", c.sliding_window},
      {"attention_bias", c.attention_bias},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"bos_token_id", 2},
      {"eos_token_id", 1},
      {"pad_token_id", 0},
  };
  cfg["attn_logit_softcapping"] =
      c.attn_logit_softcapping ? nlohmann::json(*c.attn_logit_softcapping) : nlohmann::json();
  cfg["final_logit_softcapping"] =
      c.final_logit_softcapping ? nlohmann::json(*c.final_logit_softcapping) : nlohmann::json();
  nlohmann::json types = nlohmann::json::array();
  for (LayerType t : c.layer_types) {
    types.push_back(t == LayerType::kSlidingAttention ? "sliding_attention" : "full_attention");
  }
  cfg["layer_types"] = types;
  {
    std::ofstream out(dir / "config.json");
    out << cfg.dump(2);
    if (!out) return absl::InternalError("cannot write config.json");
  }

  nlohmann::json header = {{"__metadata__", {{"format", "pt"}}}};
  size_t offset = 0;
  for (const auto& [name, t] : tensors_) {
    header[name] = {{"dtype", std::string(DTypeName(t.dtype))},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');
  std::ofstream out(dir / "model.safetensors", std::ios::binary);
  const uint64_t len = text.size();
  char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  out.write(len_bytes, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, t] : tensors_) {
    out.write(reinterpret_cast<const char*>(t.bytes.data()),
              static_cast<std::streamsize>(t.bytes.size()));
  }
  if (!out) return absl::InternalError("cannot write model.safetensors");
  return absl::OkStatus();
}

std::vector<std::vector<double>> TinyModel::ReferenceLogits(
    const std::vector<int32_t>& tokens) const {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t hd = c.head_dim, half = hd / 2, nh = c.num_attention_heads;
  const int64_t nkv = c.num_key_value_heads, hidden = c.hidden_size;
  // inv_freq exactly as transformers builds it: float32 tensor arithmetic.
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(c.rope_theta),
                                  static_cast<float>(2 * i) / static_cast<float>(hd));
  }
  auto rope = [&](Vec& x, int64_t heads, int64_t pos) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<float>(inv_freq[i] * static_cast<float>(pos));
        const double a = x[h * hd + i], b = x[h * hd + half + i];
        x[h * hd + i] = a * std::cos(angle) - b * std::sin(angle);
        x[h * hd + half + i] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  };

  std::vector<Vec> hs(n);
  for (int64_t p = 0; p < n; ++p) {
    const Vec& emb = W("model.embed_tokens.weight");
    hs[p].assign(emb.begin() + tokens[p] * hidden, emb.begin() + (tokens[p] + 1) * hidden);
    for (double& v : hs[p]) v *= std::sqrt(static_cast<double>(hidden));
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string pre = absl::StrCat("model.layers.", l, ".");
    auto bias = [&](const char* name) -> const Vec* {
      return c.attention_bias ? &W(pre + name) : nullptr;
    };
    std::vector<Vec> qs(n), ks(n), vs(n);
    for (int64_t p = 0; p < n; ++p) {
      const Vec x = RmsNorm(hs[p], W(pre + "input_layernorm.weight"), c.rms_norm_eps);
      qs[p] = Linear(x, W(pre + "self_attn.q_proj.weight"), nh * hd, bias("self_attn.q_proj.bias"));
      ks[p] =
          Linear(x, W(pre + "self_attn.k_proj.weight"), nkv * hd, bias("self_attn.k_proj.bias"));
      vs[p] =
          Linear(x, W(pre + "self_attn.v_proj.weight"), nkv * hd, bias("self_attn.v_proj.bias"));
      rope(qs[p], nh, p);
      rope(ks[p], nkv, p);
    }
    const bool sliding = c.layer_types[l] == LayerType::kSlidingAttention;
    const double scaling = std::pow(c.query_pre_attn_scalar, -0.5);
    for (int64_t p = 0; p < n; ++p) {
      Vec attn(nh * hd, 0.0);
      for (int64_t h = 0; h < nh; ++h) {
        const int64_t g = h / (nh / nkv);
        // Full score row, then the mask as transformers applies it: after the soft-cap.
        std::vector<double> scores(n, -INFINITY);
        double mx = -INFINITY;
        for (int64_t k = 0; k < n; ++k) {
          double s = 0.0;
          for (int64_t d = 0; d < hd; ++d) s += qs[p][h * hd + d] * ks[k][g * hd + d];
          s *= scaling;
          if (c.attn_logit_softcapping) {
            s = std::tanh(s / *c.attn_logit_softcapping) * *c.attn_logit_softcapping;
          }
          const bool causal = k <= p;
          const bool in_window = !sliding || k > p - c.sliding_window;
          if (causal && in_window) {
            scores[k] = s;
            mx = std::max(mx, s);
          }
        }
        double sum = 0.0;
        for (double& s : scores) {
          s = std::exp(s - mx);
          sum += s;
        }
        for (int64_t k = 0; k < n; ++k) {
          for (int64_t d = 0; d < hd; ++d) attn[h * hd + d] += scores[k] / sum * vs[k][g * hd + d];
        }
      }
      const Vec o =
          Linear(attn, W(pre + "self_attn.o_proj.weight"), hidden, bias("self_attn.o_proj.bias"));
      for (int64_t i = 0; i < hidden; ++i) hs[p][i] += o[i];
      const Vec x = RmsNorm(hs[p], W(pre + "pre_feedforward_layernorm.weight"), c.rms_norm_eps);
      Vec gate = Linear(x, W(pre + "mlp.gate_proj.weight"), c.intermediate_size, nullptr);
      const Vec up = Linear(x, W(pre + "mlp.up_proj.weight"), c.intermediate_size, nullptr);
      for (int64_t i = 0; i < c.intermediate_size; ++i) {
        const double g = gate[i];
        const double gelu =
            0.5 * g * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (g + 0.044715 * g * g * g)));
        gate[i] = gelu * up[i];
      }
      const Vec down = Linear(gate, W(pre + "mlp.down_proj.weight"), hidden, nullptr);
      for (int64_t i = 0; i < hidden; ++i) hs[p][i] += down[i];
    }
  }
  const Vec& head =
      tensors_.count("lm_head.weight") ? W("lm_head.weight") : W("model.embed_tokens.weight");
  std::vector<Vec> logits(n);
  for (int64_t p = 0; p < n; ++p) {
    logits[p] =
        Linear(RmsNorm(hs[p], W("model.norm.weight"), c.rms_norm_eps), head, c.vocab_size, nullptr);
    if (c.final_logit_softcapping) {
      for (double& v : logits[p]) {
        v = std::tanh(v / *c.final_logit_softcapping) * *c.final_logit_softcapping;
      }
    }
  }
  return logits;
}

}  // namespace vg::engine::testing
