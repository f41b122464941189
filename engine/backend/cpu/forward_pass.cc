#include "engine/backend/cpu/forward_pass.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/backend/cpu/paged_attention.h"
#include "engine/backend/cpu/plan_validation.h"
#include "engine/model/matrix_layout.h"

namespace vg::engine::cpu {
namespace {

template <typename T>
void EnsureSize(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

absl::Status CheckShape(const TensorView& view, std::vector<int64_t> expected) {
  int64_t elements = 1;
  for (int64_t d : expected) elements *= d;
  if (view.data == nullptr || view.shape != expected ||
      view.num_bytes != static_cast<size_t>(elements) * DTypeSize(view.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CPU backend: tensor ", view.name, " has shape [", absl::StrJoin(view.shape, ", "),
        "], expected [", absl::StrJoin(expected, ", "), "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckConfig(const ModelConfig& c) {
  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.intermediate_size <= 0 ||
      c.num_hidden_layers <= 0 || c.num_attention_heads <= 0 || c.num_key_value_heads <= 0 ||
      c.head_dim <= 0 || c.max_position_embeddings <= 0) {
    return absl::InvalidArgumentError("CPU backend: model sizes must be positive");
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CPU backend: num_attention_heads (", c.num_attention_heads,
                     ") is not a multiple of num_key_value_heads (", c.num_key_value_heads, ")"));
  }
  if (c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CPU backend: head_dim (", c.head_dim, ") must be even for RoPE"));
  }
  if (static_cast<int64_t>(c.layer_types.size()) != c.num_hidden_layers) {
    return absl::InvalidArgumentError("CPU backend: layer_types does not match num_hidden_layers");
  }
  if (c.hidden_activation != "gelu_pytorch_tanh" && c.hidden_activation != "gelu_new") {
    return absl::InvalidArgumentError(
        absl::StrCat("CPU backend: hidden_activation ", c.hidden_activation, " is not supported"));
  }
  if (c.query_pre_attn_scalar <= 0 || c.rope_theta <= 0 ||
      (c.attn_logit_softcapping && *c.attn_logit_softcapping <= 0) ||
      (c.final_logit_softcapping && *c.final_logit_softcapping <= 0)) {
    return absl::InvalidArgumentError(
        "CPU backend: query_pre_attn_scalar, rope_theta and soft caps must be positive");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<WeightMatrix> ForwardPass::Matrix(const TensorView& view, int64_t rows,
                                                 int64_t cols) {
  if (absl::Status s = CheckShape(view, {rows, cols}); !s.ok()) return s;
  if (view.layout == MatrixLayout::kTiles) return WeightMatrix{view.dtype, view.data, rows, cols};
  for (size_t i = 0; i < owned_.size(); ++i) {
    // A tied lm_head is the embedding: one copy.
    if (owned_sources_[i] == view.data) {
      return WeightMatrix{view.dtype, owned_[i].get(), rows, cols};
    }
  }
  auto copy = std::make_unique<std::byte[]>(view.num_bytes);
  std::memcpy(copy.get(), view.data, view.num_bytes);
  RearrangeToTiles(view.dtype, rows, cols, copy.get());
  owned_sources_.push_back(view.data);
  owned_.push_back(std::move(copy));
  return WeightMatrix{view.dtype, owned_.back().get(), rows, cols};
}

ForwardPass::ForwardPass(const ModelConfig& config, const ModelWeights& weights, int num_threads)
    : config_(config), weights_(weights), pool_(num_threads) {}

absl::StatusOr<std::unique_ptr<ForwardPass>> ForwardPass::Create(const ModelConfig& config,
                                                                 const ModelWeights& weights,
                                                                 const CpuBackendOptions& options) {
  if (options.block_size <= 0 || options.num_blocks < 0 || options.num_threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CPU backend: block_size (", options.block_size, ") must be positive, num_blocks (",
        options.num_blocks, ") and num_threads (", options.num_threads, ") non-negative"));
  }
  if (absl::Status s = CheckConfig(config); !s.ok()) return s;
  if (static_cast<int64_t>(weights.layers.size()) != config.num_hidden_layers) {
    return absl::InvalidArgumentError("CPU backend: weight table has the wrong number of layers");
  }
  std::unique_ptr<ForwardPass> pass(new ForwardPass(config, weights, options.num_threads));
  const ModelConfig& c = pass->config_;
  const ModelWeights& w = pass->weights_;
  const int64_t hidden = c.hidden_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
  const int64_t inter = c.intermediate_size;

  if (absl::Status s = CheckShape(w.embed_tokens, {c.vocab_size, hidden}); !s.ok()) return s;
  if (absl::Status s = CheckShape(w.final_norm, {hidden}); !s.ok()) return s;
  absl::StatusOr<WeightMatrix> lm_head = pass->Matrix(w.lm_head, c.vocab_size, hidden);
  if (!lm_head.ok()) return lm_head.status();
  pass->lm_head_ = *lm_head;
  // The embedding rows come from the tiled lm_head when tied (the same tensor), else from the
  // embedding as stored.
  if (w.embed_tokens.data == w.lm_head.data) {
    pass->embed_ = pass->lm_head_;
    pass->embed_layout_ = MatrixLayout::kTiles;
  } else {
    pass->embed_ = WeightMatrix{w.embed_tokens.dtype, w.embed_tokens.data, c.vocab_size, hidden};
    pass->embed_layout_ = w.embed_tokens.layout;
  }

  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerWeights& lw = w.layers[i];
    Layer layer;
    layer.input_norm = &lw.input_layernorm;
    layer.ffw_norm = &lw.pre_feedforward_layernorm;
    if (absl::Status s = CheckShape(lw.input_layernorm, {hidden}); !s.ok()) return s;
    if (absl::Status s = CheckShape(lw.pre_feedforward_layernorm, {hidden}); !s.ok()) return s;
    const std::pair<WeightMatrix*, std::tuple<const TensorView*, int64_t, int64_t>> matrices[] = {
        {&layer.q, {&lw.q_proj, q_dim, hidden}},       {&layer.k, {&lw.k_proj, kv_dim, hidden}},
        {&layer.v, {&lw.v_proj, kv_dim, hidden}},      {&layer.o, {&lw.o_proj, hidden, q_dim}},
        {&layer.gate, {&lw.gate_proj, inter, hidden}}, {&layer.up, {&lw.up_proj, inter, hidden}},
        {&layer.down, {&lw.down_proj, hidden, inter}},
    };
    for (const auto& [dst, spec] : matrices) {
      absl::StatusOr<WeightMatrix> m =
          pass->Matrix(*std::get<0>(spec), std::get<1>(spec), std::get<2>(spec));
      if (!m.ok()) return m.status();
      *dst = *m;
    }
    if (c.attention_bias) {
      if (!lw.q_bias || !lw.k_bias || !lw.v_bias || !lw.o_bias) {
        return absl::InvalidArgumentError(
            absl::StrCat("CPU backend: attention_bias is set but layer ", i, " lacks biases"));
      }
      if (absl::Status s = CheckShape(*lw.q_bias, {q_dim}); !s.ok()) return s;
      if (absl::Status s = CheckShape(*lw.k_bias, {kv_dim}); !s.ok()) return s;
      if (absl::Status s = CheckShape(*lw.v_bias, {kv_dim}); !s.ok()) return s;
      if (absl::Status s = CheckShape(*lw.o_bias, {hidden}); !s.ok()) return s;
      layer.q_bias = &*lw.q_bias;
      layer.k_bias = &*lw.k_bias;
      layer.v_bias = &*lw.v_bias;
      layer.o_bias = &*lw.o_bias;
    }
    layer.window = c.layer_types[i] == LayerType::kSlidingAttention ? c.sliding_window : 0;
    if (c.layer_types[i] == LayerType::kSlidingAttention && c.sliding_window <= 0) {
      return absl::InvalidArgumentError("CPU backend: sliding_window must be positive");
    }
    pass->layers_.push_back(layer);
  }

  KvCacheShape shape;
  shape.num_layers = c.num_hidden_layers;
  shape.block_size = options.block_size;
  shape.num_blocks = options.num_blocks;
  if (shape.num_blocks == 0) {
    const int64_t blocks =
        (c.max_position_embeddings + options.block_size - 1) / options.block_size;
    if (blocks > INT32_MAX) return absl::InvalidArgumentError("CPU backend: too many KV blocks");
    shape.num_blocks = static_cast<int32_t>(blocks);
  }
  shape.kv_heads = c.num_key_value_heads;
  shape.head_dim = c.head_dim;
  shape.dtype = options.kv_cache_dtype;
  absl::StatusOr<std::unique_ptr<KvCache>> cache = KvCache::Create(shape);
  if (!cache.ok()) return cache.status();
  pass->cache_ = std::move(*cache);

  pass->inv_freq_.resize(c.head_dim / 2);
  RopeInverseFrequencies(c.head_dim, c.rope_theta, pass->inv_freq_.data());
  pass->scaling_ = static_cast<float>(std::pow(c.query_pre_attn_scalar, -0.5));
  pass->attn_softcap_ =
      c.attn_logit_softcapping ? static_cast<float>(*c.attn_logit_softcapping) : 0.0f;
  return pass;
}

const float* ForwardPass::WidenVector(const TensorView* view, std::vector<float>& dst) {
  if (view == nullptr) return nullptr;
  const int64_t n = view->shape[0];
  EnsureSize(dst, n);
  WidenToFloat(view->dtype, view->data, 0, n, dst.data());
  return dst.data();
}

absl::Status ForwardPass::Forward(const BatchPlan& plan, Logits* logits) {
  PlanLimits limits;
  limits.vocab_size = config_.vocab_size;
  limits.max_positions = config_.max_position_embeddings;
  limits.block_size = block_size();
  limits.num_blocks = num_blocks();
  if (absl::Status s = ValidatePlan(plan, limits); !s.ok()) return s;

  rows_.clear();
  for (size_t e = 0; e < plan.entries.size(); ++e) {
    const BatchEntry& entry = plan.entries[e];
    for (size_t i = 0; i < entry.token_ids.size(); ++i) {
      rows_.push_back(Row{static_cast<int32_t>(e), entry.token_ids[i],
                          static_cast<int64_t>(entry.start_position) + static_cast<int64_t>(i)});
    }
  }
  logits->vocab_size = config_.vocab_size;
  logits->values.clear();
  logits->row_entry.clear();
  if (rows_.empty()) return absl::OkStatus();

  const size_t t = rows_.size();
  const size_t half = config_.head_dim / 2;
  EnsureSize(hidden_, t * config_.hidden_size);
  EnsureSize(normed_, t * config_.hidden_size);
  EnsureSize(proj_, t * config_.hidden_size);
  EnsureSize(q_, t * config_.num_attention_heads * config_.head_dim);
  EnsureSize(attn_, t * config_.num_attention_heads * config_.head_dim);
  EnsureSize(k_, t * config_.num_key_value_heads * config_.head_dim);
  EnsureSize(v_, t * config_.num_key_value_heads * config_.head_dim);
  EnsureSize(gate_, t * config_.intermediate_size);
  EnsureSize(up_, t * config_.intermediate_size);
  EnsureSize(rope_cos_, t * half);
  EnsureSize(rope_sin_, t * half);
  for (size_t r = 0; r < t; ++r) {
    RopeCosSin(rows_[r].position, inv_freq_.data(), half, &rope_cos_[r * half],
               &rope_sin_[r * half]);
  }

  Embed();
  for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) RunLayer(layer, plan);
  ComputeLogits(plan, logits);
  return absl::OkStatus();
}

void ForwardPass::Embed() {
  const int64_t hidden = config_.hidden_size;
  // transformers multiplies by sqrt(hidden) cast to the activation dtype (float32 here).
  const float normalizer = static_cast<float>(std::sqrt(static_cast<double>(hidden)));
  pool_.ParallelFor(static_cast<int64_t>(rows_.size()), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* dst = &hidden_[r * hidden];
      ReadRow(embed_layout_, embed_.dtype, embed_.data, embed_.rows, hidden, rows_[r].token, dst);
      for (int64_t i = 0; i < hidden; ++i) dst[i] *= normalizer;
    }
  });
}

void ForwardPass::RunLayer(int64_t index, const BatchPlan& plan) {
  const Layer& layer = layers_[index];
  const int64_t t = static_cast<int64_t>(rows_.size());
  const int64_t hidden = config_.hidden_size;
  const float eps = static_cast<float>(config_.rms_norm_eps);

  // Attention block: h = h + o_proj(attention(rope(q), rope(k), v)).
  RmsNorm(hidden_.data(), t, hidden, WidenVector(layer.input_norm, norm_weight_), eps,
          normed_.data());
  const MatMulTarget qkv[] = {
      {&layer.q, WidenVector(layer.q_bias, q_bias_), q_.data()},
      {&layer.k, WidenVector(layer.k_bias, k_bias_), k_.data()},
      {&layer.v, WidenVector(layer.v_bias, v_bias_), v_.data()},
  };
  MatMuls(pool_, normed_.data(), t, qkv);
  Attend(index, plan);
  MatMul(pool_, attn_.data(), t, layer.o, WidenVector(layer.o_bias, o_bias_), proj_.data());
  for (int64_t i = 0; i < t * hidden; ++i) hidden_[i] += proj_[i];

  // MLP block: h = h + down(gelu_tanh(gate(x)) * up(x)).
  RmsNorm(hidden_.data(), t, hidden, WidenVector(layer.ffw_norm, norm_weight_), eps,
          normed_.data());
  const MatMulTarget gate_up[] = {{&layer.gate, nullptr, gate_.data()},
                                  {&layer.up, nullptr, up_.data()}};
  MatMuls(pool_, normed_.data(), t, gate_up);
  const int64_t inter_total = t * config_.intermediate_size;
  pool_.ParallelFor(inter_total, [&](int64_t begin, int64_t end) {
    GeGlu(&gate_[begin], &up_[begin], end - begin, &gate_[begin]);
  });
  MatMul(pool_, gate_.data(), t, layer.down, nullptr, proj_.data());
  for (int64_t i = 0; i < t * hidden; ++i) hidden_[i] += proj_[i];
}

void ForwardPass::Attend(int64_t index, const BatchPlan& plan) {
  const Layer& layer = layers_[index];
  const int64_t t = static_cast<int64_t>(rows_.size());
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv_heads = config_.num_key_value_heads;
  const int64_t head_dim = config_.head_dim;
  const int64_t half = head_dim / 2;
  const int32_t block_size = this->block_size();

  // RoPE on q and k at each row's position, then K/V into the row's cache slot. Every slot is
  // written before any row attends, so a prefill row sees the rows before it in this call.
  pool_.ParallelFor(t, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const Row& row = rows_[r];
      float* q = &q_[r * heads * head_dim];
      float* k = &k_[r * kv_heads * head_dim];
      ApplyRope(q, heads, half, &rope_cos_[r * half], &rope_sin_[r * half]);
      ApplyRope(k, kv_heads, half, &rope_cos_[r * half], &rope_sin_[r * half]);
      const int32_t block = plan.entries[row.entry].block_table[row.position / block_size];
      cache_->Write(index, block, row.position % block_size, k, &v_[r * kv_heads * head_dim]);
    }
  });

  const LayerKv kv = cache_->Layer(index);
  AttentionParams params;
  params.scaling = scaling_;
  params.softcap = attn_softcap_;
  const int64_t group = heads / kv_heads;
  // Work items: up to kMaxAttentionRows consecutive rows of one sequence (a prefill's rows see
  // nearly the same positions, whose K and V are then read once for all of them) x one head.
  row_groups_.clear();
  for (int64_t r = 0; r < t;) {
    int64_t end = r + 1;
    while (end < t && end - r < kMaxAttentionRows && rows_[end].entry == rows_[r].entry) ++end;
    row_groups_.push_back(r);
    r = end;
  }
  row_groups_.push_back(t);
  const int64_t groups = static_cast<int64_t>(row_groups_.size()) - 1;
  pool_.ParallelFor(groups * heads, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / heads;
      const int64_t head = item % heads;
      const int64_t first = row_groups_[g];
      const int64_t count = row_groups_[g + 1] - first;
      int64_t positions[kMaxAttentionRows];
      int64_t total = 0;
      for (int64_t i = 0; i < count; ++i) {
        const Row& row = rows_[first + i];
        positions[i] = row.position - FirstVisiblePosition(row.position, layer.window) + 1;
        total += positions[i];
      }
      EnsureSize(scores, static_cast<size_t>(total));
      AttentionQuery queries[kMaxAttentionRows];
      int64_t offset = 0;
      for (int64_t i = 0; i < count; ++i) {
        const int64_t r = first + i;
        const Row& row = rows_[r];
        queries[i].q = &q_[(r * heads + head) * head_dim];
        queries[i].lo = FirstVisiblePosition(row.position, layer.window);
        queries[i].hi = row.position;
        queries[i].scores = scores.data() + offset;
        queries[i].out = &attn_[(r * heads + head) * head_dim];
        offset += positions[i];
      }
      AttendHeads(std::span<const AttentionQuery>(queries, count), kv,
                  plan.entries[rows_[first].entry].block_table, head / group, params);
    }
  });
}

void ForwardPass::ComputeLogits(const BatchPlan& plan, Logits* logits) {
  const int64_t hidden = config_.hidden_size;
  const int64_t vocab = config_.vocab_size;
  // Rows whose logits the plan asks for, in plan order.
  std::vector<int64_t> selected;
  for (size_t r = 0; r < rows_.size(); ++r) {
    const BatchEntry& entry = plan.entries[rows_[r].entry];
    const bool last = r + 1 == rows_.size() || rows_[r + 1].entry != rows_[r].entry;
    if (entry.logits == LogitsMode::kAll || (entry.logits == LogitsMode::kLast && last)) {
      selected.push_back(static_cast<int64_t>(r));
      logits->row_entry.push_back(rows_[r].entry);
    }
  }
  if (selected.empty()) return;
  const int64_t n = static_cast<int64_t>(selected.size());
  for (int64_t i = 0; i < n; ++i) {
    std::copy(&hidden_[selected[i] * hidden], &hidden_[(selected[i] + 1) * hidden],
              &proj_[i * hidden]);
  }
  RmsNorm(proj_.data(), n, hidden, WidenVector(&weights_.final_norm, norm_weight_),
          static_cast<float>(config_.rms_norm_eps), normed_.data());
  logits->values.resize(static_cast<size_t>(n * vocab));
  MatMul(pool_, normed_.data(), n, lm_head_, nullptr, logits->values.data());
  if (config_.final_logit_softcapping) {
    const float cap = static_cast<float>(*config_.final_logit_softcapping);
    float* values = logits->values.data();
    pool_.ParallelFor(
        n * vocab, [&](int64_t begin, int64_t end) { SoftCap(values + begin, end - begin, cap); });
  }
}

}  // namespace vg::engine::cpu
