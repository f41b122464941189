#include "engine/backend/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/plan_validation.h"
#include "engine/backend/cuda/device_sampler.h"
#include "engine/backend/cuda/device_weights.h"
#include "engine/backend/cuda/kernels/gemm.h"
#include "engine/backend/cuda/kernels/kernels.h"
#include "engine/backend/cuda/step_inputs.h"

namespace vg::engine {

static_assert(cuda::kStepTileRows == cuda::kPrefillTileRows,
              "step_inputs tiles must match the tiled attention kernel");

namespace {

absl::Status CudaError(cudaError_t error, const char* what) {
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(error)));
}

// An error of one step of Forward: INTERNAL, naming the step (never an abort).
absl::Status StepError(cudaError_t error, const std::string& step) {
  return absl::InternalError(absl::StrCat(
      "CUDA forward pass: ", step, ": ", cudaGetErrorName(error), ": ", cudaGetErrorString(error)));
}

// OK for cudaSuccess, else StepError.
absl::Status CheckStep(cudaError_t error, const std::string& step) {
  return error == cudaSuccess ? absl::OkStatus() : StepError(error, step);
}

}  // namespace

// Numerics, and where they differ from the CPU backend (engine/backend/cpu/forward_pass.cc, which
// keeps every activation in float32 over the stored weights):
//   - weights live on the device in BF16 (device_weights.h); norm weights and biases float32;
//   - each GEMM input is rounded to BF16 (the normed hidden state before qkv and gate/up, the
//     attention output before o_proj, the GeGLU output before down_proj); cuBLASLt accumulates in
//     float32 in its own order; GEMM outputs, the residual stream, RMSNorm, RoPE, softmax and the
//     soft-caps are float32 as on the CPU;
//   - K and V are stored in BF16 (the CPU backend's --kv-cache-dtype bfloat16; its default is
//     float32);
//   - tanhf/expf/sincosf are CUDA's (within a few ulp of the CPU's).
// So the logits agree with the CPU backend to a few BF16 ulps of the logits' scale, not exactly:
// tests/gpu/forward_pass_test.cc allows |gpu - cpu| <= 3e-2 * max(1, max |cpu row|) and demands
// the same argmax wherever the CPU's top-two margin exceeds twice that.
// Batch invariance: every kernel here computes a row from that row alone, and attention splits a
// context at fixed positions, so only cuBLASLt's choice of algorithm per row count (split-K) can
// make a row depend on its batch; options.deterministic fixes one split-free algorithm per shape
// (kernels/gemm.h). Padding a decode batch to its graph bucket changes nothing else.
class CudaBackend::Impl {
 public:
  ~Impl() {
    cudaSetDevice(device_index_);  // the destroying thread may not be the creating one
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    DropGraphs();
    gemm_.reset();
    weights_.reset();
    for (DeviceBytes* buffer : ActivationBuffers()) cudaFree(buffer->ptr);
    cudaFree(step_dev_.ptr);
    if (staging_ != nullptr) cudaFreeHost(staging_);
    if (kv_pool_ != nullptr) cudaFree(kv_pool_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Init(const Checkpoint& checkpoint, const CudaBackendOptions& options) {
    config_ = checkpoint.config();
    const ModelConfig& c = config_;
    vocab_size_ = c.vocab_size;
    block_size_ = options.block_size;
    poison_ = options.poison_buffers;
    deterministic_ = options.deterministic;
    device_index_ = options.device_index;
    if (absl::Status s = CheckConfig(c); !s.ok()) return s;
    if (cudaError_t error = cudaSetDevice(options.device_index); error != cudaSuccess) {
      return CudaError(error, "cudaSetDevice");
    }
    if (cudaError_t error = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
        error != cudaSuccess) {
      return CudaError(error, "cudaStreamCreate");
    }
    std::string gemm_error;
    gemm_ = cuda::LtGemm::Create(32u << 20, options.deterministic, &gemm_error);
    if (gemm_ == nullptr) {
      return absl::InternalError(absl::StrCat("cuBLASLt: ", gemm_error));
    }
    absl::StatusOr<std::unique_ptr<cuda::DeviceWeights>> weights =
        cuda::DeviceWeights::Upload(checkpoint);
    if (!weights.ok()) return weights.status();
    weights_ = *std::move(weights);

    const int max_positions = static_cast<int>(c.max_position_embeddings);
    graph_max_blocks_ = (max_positions + block_size_ - 1) / block_size_;
    attention_shape_ = AttentionShape(graph_max_blocks_);
    // The largest step's activations first, then the KV pool from what is left.
    if (options.max_step_tokens > 0) {
      const int rows = std::max(
          1, std::min(options.max_num_seqs > 0 ? options.max_num_seqs : options.max_step_tokens,
                      options.max_step_tokens));
      if (absl::Status s = ReserveActivations(options.max_step_tokens, rows, max_positions);
          !s.ok()) {
        return s;
      }
      if (options.cuda_graphs && options.max_num_seqs > 0) max_graph_rows_ = rows;
      if (absl::Status s = sampler_.ReserveScratch(static_cast<int>(c.vocab_size)); !s.ok()) {
        return s;
      }
    }
    return AllocateKvPool(c, options);
  }

  absl::Status Forward(const BatchPlan& plan, Logits* logits);
  absl::Status ForwardAndSample(const BatchPlan& plan, std::span<const RowSampling> rows,
                                std::vector<RowSample>* samples);

  int32_t num_blocks_ = 0;
  int32_t block_size_ = 0;
  int64_t vocab_size_ = 0;

 private:
  struct DeviceBytes {
    void* ptr = nullptr;
    size_t bytes = 0;
  };
  // Device pointers to one step's uploaded index arrays (step_inputs.h).
  struct StepArrays {
    const int64_t* slots = nullptr;
    const int32_t* tokens = nullptr;
    const int32_t* positions = nullptr;
    const int32_t* query_seq = nullptr;
    const int32_t* context_lens = nullptr;
    const int32_t* selected = nullptr;
    const int32_t* block_tables = nullptr;
    const int32_t* tiles = nullptr;        // the prefill tiles' [first row, rows]
    const int32_t* decode_rows = nullptr;  // the rows PagedAttention computes
    int num_tiles = 0;
    int num_decode_rows = 0;
  };
  // A decode step of `layout.num_tokens` rows captured once and replayed: its own pinned and
  // device copies of the step arrays, at the addresses the graph's upload node was given.
  struct DecodeGraph {
    cudaGraphExec_t exec = nullptr;
    cuda::StepLayout layout;
    void* staging = nullptr;  // pinned host
    void* step_dev = nullptr;
  };

  static absl::Status CheckConfig(const ModelConfig& c) {
    if (c.num_attention_heads % c.num_key_value_heads != 0 || c.head_dim % 2 != 0 ||
        c.head_dim > 512 || c.num_attention_heads > 65535) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CUDA backend: needs num_attention_heads (", c.num_attention_heads,
          ") a multiple of num_key_value_heads (", c.num_key_value_heads, ") and at most 65535, ",
          "and an even head_dim (", c.head_dim, ") of at most 512"));
    }
    if (static_cast<int64_t>(c.layer_types.size()) != c.num_hidden_layers) {
      return absl::InvalidArgumentError(
          "CUDA backend: layer_types does not match num_hidden_layers");
    }
    if (c.hidden_activation != "gelu_pytorch_tanh" && c.hidden_activation != "gelu_new") {
      return absl::InvalidArgumentError(absl::StrCat("CUDA backend: hidden_activation ",
                                                     c.hidden_activation, " is not supported"));
    }
    for (LayerType type : c.layer_types) {
      if (type == LayerType::kSlidingAttention &&
          (c.sliding_window <= 0 || c.sliding_window > INT32_MAX)) {
        return absl::InvalidArgumentError("CUDA backend: sliding_window must be positive");
      }
    }
    if (c.max_position_embeddings > INT32_MAX / 2 || c.vocab_size > INT32_MAX) {
      return absl::InvalidArgumentError("CUDA backend: model sizes beyond int32");
    }
    return absl::OkStatus();
  }

  cuda::PagedAttentionShape AttentionShape(int max_blocks_per_seq) const {
    const ModelConfig& c = config_;
    cuda::PagedAttentionShape shape;
    shape.num_heads = static_cast<int>(c.num_attention_heads);
    shape.num_kv_heads = static_cast<int>(c.num_key_value_heads);
    shape.head_dim = static_cast<int>(c.head_dim);
    shape.block_size = block_size_;
    shape.max_blocks_per_seq = max_blocks_per_seq;
    shape.scale = static_cast<float>(std::pow(c.query_pre_attn_scalar, -0.5));
    shape.logit_softcap =
        c.attn_logit_softcapping ? static_cast<float>(*c.attn_logit_softcapping) : 0.f;
    return shape;
  }

  absl::Status AllocateKvPool(const ModelConfig& config, const CudaBackendOptions& options) {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaError_t error = cudaMemGetInfo(&free_bytes, &total_bytes); error != cudaSuccess) {
      return CudaError(error, "cudaMemGetInfo");
    }
    // K and V, BF16, every layer.
    const int64_t block_bytes = int64_t{2} * 2 * config.num_hidden_layers *
                                config.num_key_value_heads * config.head_dim * block_size_;
    int64_t blocks =
        static_cast<int64_t>(static_cast<double>(free_bytes) * options.gpu_memory_utilization) /
        block_bytes;
    if (options.max_num_blocks > 0) blocks = std::min<int64_t>(blocks, options.max_num_blocks);
    blocks = std::min<int64_t>(blocks, INT32_MAX);
    if (blocks < 1) {
      return absl::ResourceExhaustedError(
          absl::StrCat("no room for a KV block of ", block_bytes, " bytes in the ", free_bytes,
                       " bytes left after the weights and activations (gpu_memory_utilization ",
                       options.gpu_memory_utilization, ")"));
    }
    if (cudaError_t error = cudaMalloc(&kv_pool_, static_cast<size_t>(blocks * block_bytes));
        error != cudaSuccess) {
      kv_pool_ = nullptr;
      cudaGetLastError();
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate the KV pool: ", cudaGetErrorString(error)));
    }
    if (poison_) {
      if (cudaError_t error = cudaMemset(kv_pool_, 0xFF, static_cast<size_t>(blocks * block_bytes));
          error != cudaSuccess) {
        return CudaError(error, "cudaMemset (KV pool)");
      }
    }
    num_blocks_ = static_cast<int32_t>(blocks);
    layer_kv_elements_ = static_cast<int64_t>(num_blocks_) * block_size_ *
                         config.num_key_value_heads * config.head_dim;
    return absl::OkStatus();
  }
  uint16_t* KCache(int64_t layer) const {
    return static_cast<uint16_t*>(kv_pool_) + 2 * layer * layer_kv_elements_;
  }
  uint16_t* VCache(int64_t layer) const {
    return static_cast<uint16_t*>(kv_pool_) + (2 * layer + 1) * layer_kv_elements_;
  }

  std::vector<DeviceBytes*> ActivationBuffers() {
    return {&hidden_,     &proj_,         &normed_,  &qkv_,    &q_,
            &attn_,       &attn_bf16_,    &gate_up_, &act_,    &final_hidden_,
            &final_proj_, &final_normed_, &logits_,  &scratch_};
  }
  // Grows `buffer` to at least `bytes` (contents are not kept). Only between steps: the previous
  // step has been synchronised, so nothing on the stream still uses the old memory. Captured
  // graphs hold the old address: growing drops them (they are captured again when next used).
  absl::Status Reserve(DeviceBytes& buffer, size_t bytes, const char* what) {
    if (buffer.bytes >= bytes) return absl::OkStatus();
    DropGraphs();
    cudaFree(buffer.ptr);
    buffer = {};
    const size_t size = std::max<size_t>(bytes + bytes / 4, 256);
    if (cudaError_t error = cudaMalloc(&buffer.ptr, size); error != cudaSuccess) {
      buffer.ptr = nullptr;
      cudaGetLastError();  // an allocation failure is not sticky: clear it
      return absl::ResourceExhaustedError(absl::StrCat("CUDA forward pass: no device memory for ",
                                                       size, " bytes of ", what, ": ",
                                                       cudaGetErrorString(error)));
    }
    buffer.bytes = size;
    if (poison_) {
      if (cudaError_t error = cudaMemset(buffer.ptr, 0xFF, size); error != cudaSuccess) {
        return StepError(error, absl::StrCat("poisoning ", what));
      }
    }
    return absl::OkStatus();
  }
  // Room for a step of `tokens` rows, `rows` of them with logits, contexts up to max_context.
  absl::Status ReserveActivations(int tokens, int rows, int max_context) {
    const ModelConfig& c = config_;
    const size_t f32 = sizeof(float), bf16 = sizeof(uint16_t);
    const size_t t = static_cast<size_t>(tokens), r = static_cast<size_t>(std::max(rows, 1));
    const size_t hidden = c.hidden_size, q_dim = c.num_attention_heads * c.head_dim;
    const size_t qkv_dim = q_dim + 2 * c.num_key_value_heads * c.head_dim;
    const size_t inter = c.intermediate_size, vocab = c.vocab_size;
    const std::pair<DeviceBytes*, std::pair<size_t, const char*>> sizes[] = {
        {&hidden_, {t * hidden * f32, "hidden states"}},
        {&proj_, {t * hidden * f32, "projections"}},
        {&normed_, {t * hidden * bf16, "normed states"}},
        {&qkv_, {t * qkv_dim * f32, "q, k and v"}},
        {&q_, {t * q_dim * f32, "rotated queries"}},
        {&attn_, {t * q_dim * f32, "attention output"}},
        {&attn_bf16_, {t * q_dim * bf16, "attention output (BF16)"}},
        {&gate_up_, {t * 2 * inter * f32, "gate and up projections"}},
        {&act_, {t * inter * bf16, "GeGLU output"}},
        {&final_hidden_, {r * hidden * f32, "final hidden states"}},
        {&final_proj_, {r * hidden * f32, "final projections"}},
        {&final_normed_, {r * hidden * bf16, "final normed states"}},
        {&logits_, {r * vocab * f32, "logits"}},
        // Split-K partials for at most `tokens` decode rows; the tiled kernel needs none.
        {&scratch_,
         {static_cast<size_t>(
              cuda::PagedAttentionScratchFloats(attention_shape_, tokens, max_context)) *
              f32,
          "attention scratch"}},
    };
    for (const auto& [buffer, spec] : sizes) {
      if (absl::Status s = Reserve(*buffer, spec.first, spec.second); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  absl::Status ReserveStaging(size_t bytes) {
    if (staging_bytes_ >= bytes) return absl::OkStatus();
    if (staging_ != nullptr) cudaFreeHost(staging_);
    staging_ = nullptr;
    staging_bytes_ = 0;
    const size_t size = std::max<size_t>(bytes + bytes / 4, 4096);
    if (cudaError_t error = cudaHostAlloc(&staging_, size, cudaHostAllocDefault);
        error != cudaSuccess) {
      staging_ = nullptr;
      cudaGetLastError();
      return absl::ResourceExhaustedError(
          absl::StrCat("CUDA forward pass: no pinned host memory for ", size,
                       " bytes of step data: ", cudaGetErrorString(error)));
    }
    staging_bytes_ = size;
    return absl::OkStatus();
  }

  void DropGraphs() {
    for (auto& [rows, graph] : graphs_) {
      if (graph.exec != nullptr) cudaGraphExecDestroy(graph.exec);
      if (graph.staging != nullptr) cudaFreeHost(graph.staging);
      cudaFree(graph.step_dev);
    }
    graphs_.clear();
  }

  // The graph bucket for a decode batch of n: 1, 2, 4, then multiples of 8.
  static int Bucket(int n) { return n <= 4 ? (n <= 1 ? 1 : n <= 2 ? 2 : 4) : (n + 7) / 8 * 8; }

  static StepArrays Arrays(const void* step_dev, const cuda::StepLayout& l) {
    const auto* base = static_cast<const std::byte*>(step_dev);
    return {reinterpret_cast<const int64_t*>(base + l.slots),
            reinterpret_cast<const int32_t*>(base + l.tokens),
            reinterpret_cast<const int32_t*>(base + l.positions),
            reinterpret_cast<const int32_t*>(base + l.query_seq),
            reinterpret_cast<const int32_t*>(base + l.context_lens),
            reinterpret_cast<const int32_t*>(base + l.selected),
            reinterpret_cast<const int32_t*>(base + l.block_tables),
            reinterpret_cast<const int32_t*>(base + l.tiles),
            reinterpret_cast<const int32_t*>(base + l.decode_rows),
            l.num_tiles,
            l.num_decode_rows};
  }

  // C[m][n] = A[m][k] W[n][k]^T into float32, plus a float32 bias when given.
  absl::Status Gemm(const void* a, const uint16_t* w, const float* bias, void* c, int m, int n,
                    int k, const std::string& step) {
    std::string error;
    if (!gemm_->Matmul(static_cast<const uint16_t*>(a), w, c, cuda::LtGemm::OutType::kFloat32, m, n,
                       k, 0.f, stream_, &error)) {
      return absl::InternalError(absl::StrCat("CUDA forward pass: ", step, ": ", error));
    }
    if (bias != nullptr) {
      if (cudaError_t e = cuda::AddBias(static_cast<float*>(c), bias, m, n, stream_);
          e != cudaSuccess) {
        return StepError(e, step + " bias");
      }
    }
    return absl::OkStatus();
  }

  // Enqueues the model for a step whose arrays are uploaded at `a` (or, while capturing, will
  // be): t rows, `rows` of them selected for logits, which end in logits_ soft-capped. Nothing
  // here synchronises, allocates or copies to the host, so it can be captured into a graph.
  absl::Status EnqueueModel(const StepArrays& a, int t, int rows, int max_context,
                            int max_blocks_per_seq);

  // Runs the model for `plan` up to the logits (left in logits_) through a graph or eagerly,
  // enqueued only. Returns the number of logit rows and fills row_entry. On an error, waits for
  // what was enqueued.
  absl::StatusOr<int> RunModel(const BatchPlan& plan, std::vector<int32_t>* row_entry);
  absl::StatusOr<int> RunDecodeGraph(const BatchPlan& plan, int bucket,
                                     std::vector<int32_t>* row_entry);
  // Validates the plan as the CPU backend does and makes the backend's device current.
  absl::Status BeginStep(const BatchPlan& plan);

  ModelConfig config_;
  int device_index_ = 0;
  bool poison_ = false;
  bool deterministic_ = false;  // batch-invariant GEMMs, and attention split-K for every row
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::LtGemm> gemm_;
  std::unique_ptr<cuda::DeviceWeights> weights_;
  cuda::PagedAttentionShape attention_shape_;  // max_blocks_per_seq and window set per step
  void* kv_pool_ =
      nullptr;  // per layer: K then V, each [num_blocks][block_size][kv_heads][head_dim]
  int64_t layer_kv_elements_ = 0;
  int max_graph_rows_ = 0;    // largest decode batch replayed from a graph; 0 = no graphs
  int graph_max_blocks_ = 1;  // block-table width of graph steps: the model's whole context
  std::map<int, DecodeGraph> graphs_;  // by bucket
  cuda::DeviceSampler sampler_;

  // Activations, sized for the largest step so far (grown on demand).
  DeviceBytes hidden_;     // float32 [t][hidden]: the residual stream
  DeviceBytes proj_;       // float32 [t][hidden]: o_proj / down_proj output, added next
  DeviceBytes normed_;     // BF16 [t][hidden]
  DeviceBytes qkv_;        // float32 [t][q_dim + 2 kv_dim]: the fused projection
  DeviceBytes q_;          // float32 [t][heads][head_dim]: rotated queries
  DeviceBytes attn_;       // float32 [t][heads][head_dim]
  DeviceBytes attn_bf16_;  // BF16 [t][heads][head_dim]
  DeviceBytes gate_up_;    // float32 [t][2 intermediate]: the fused projection
  DeviceBytes act_;        // BF16 [t][intermediate]
  DeviceBytes final_hidden_, final_proj_;  // float32 [rows][hidden]: the rows with logits
  DeviceBytes final_normed_;               // BF16 [rows][hidden]
  DeviceBytes logits_;                     // float32 [rows][vocab]
  DeviceBytes scratch_;                    // PagedAttention's split-K partials
  DeviceBytes step_dev_;                   // an eager step's arrays (one upload)
  void* staging_ = nullptr;                // pinned host copy of step_dev_
  size_t staging_bytes_ = 0;
};

absl::Status CudaBackend::Impl::EnqueueModel(const StepArrays& a, int t, int rows, int max_context,
                                             int max_blocks_per_seq) {
  const ModelConfig& c = config_;
  const int hidden = static_cast<int>(c.hidden_size);
  const int heads = static_cast<int>(c.num_attention_heads);
  const int kv_heads = static_cast<int>(c.num_key_value_heads);
  const int head_dim = static_cast<int>(c.head_dim);
  const int q_dim = heads * head_dim;
  const int kv_dim = kv_heads * head_dim;
  const int qkv_dim = q_dim + 2 * kv_dim;
  const int inter = static_cast<int>(c.intermediate_size);
  const int vocab = static_cast<int>(c.vocab_size);
  const float eps = static_cast<float>(c.rms_norm_eps);
  cuda::PagedAttentionShape shape = attention_shape_;
  shape.max_blocks_per_seq = max_blocks_per_seq;

  float* hidden_f = static_cast<float*>(hidden_.ptr);
  float* proj_f = static_cast<float*>(proj_.ptr);
  auto* normed = static_cast<uint16_t*>(normed_.ptr);
  float* qkv = static_cast<float*>(qkv_.ptr);
  float* q = static_cast<float*>(q_.ptr);
  float* attn = static_cast<float*>(attn_.ptr);
  auto* attn_bf16 = static_cast<uint16_t*>(attn_bf16_.ptr);
  float* gate_up = static_cast<float*>(gate_up_.ptr);
  auto* act = static_cast<uint16_t*>(act_.ptr);
  const auto check = CheckStep;
#define VG_STEP(expr)                                  \
  do {                                                 \
    if (absl::Status s_ = (expr); !s_.ok()) return s_; \
  } while (0)

  // transformers multiplies by sqrt(hidden) cast to the activation dtype; the CPU backend's
  // activations are float32, and so are these.
  const float normalizer = static_cast<float>(std::sqrt(static_cast<double>(hidden)));
  VG_STEP(check(
      cuda::EmbedTokens(weights_->embed(), a.tokens, t, hidden, normalizer, hidden_f, stream_),
      "embedding"));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const cuda::DeviceLayer& layer = weights_->layers()[l];
    const std::string name = absl::StrCat("layer ", l, " ");
    // h += previous layer's down_proj output (none before layer 0); x = RMSNorm_in(h).
    VG_STEP(check(cuda::ResidualRmsNorm(hidden_f, l == 0 ? nullptr : proj_f, layer.input_norm, t,
                                        hidden, eps, normed, nullptr, stream_),
                  name + "input_layernorm"));
    VG_STEP(Gemm(normed, layer.qkv, layer.qkv_bias, qkv, t, qkv_dim, hidden, name + "qkv_proj"));
    // Every new token's K/V is in the cache before any row attends, so a prefill row sees the
    // rows before it in this step (causality comes from context_lens).
    VG_STEP(check(
        cuda::RopeAndWriteKv(qkv, qkv + q_dim, qkv + q_dim + kv_dim, qkv_dim, a.positions, a.slots,
                             t, heads, kv_heads, head_dim, static_cast<float>(c.rope_theta), q,
                             KCache(l), VCache(l), stream_),
        name + "RoPE and KV write"));
    shape.sliding_window = layer.window;
    // Decode rows: split-K over the context; prefill chunks: tiles that read K/V once per tile.
    // Together they write every row of attn. Deterministic mode runs every row split-K: how a
    // prompt is cut into chunks depends on the other requests, and the two kernels sum in
    // different orders.
    if (deterministic_) {
      VG_STEP(check(cuda::PagedAttention(shape, q, a.query_seq, a.context_lens, /*rows=*/nullptr, t,
                                         max_context, a.block_tables, KCache(l), VCache(l),
                                         static_cast<float*>(scratch_.ptr), attn, stream_),
                    name + "paged attention"));
    } else if (a.num_decode_rows > 0) {
      VG_STEP(
          check(cuda::PagedAttention(shape, q, a.query_seq, a.context_lens, a.decode_rows,
                                     a.num_decode_rows, max_context, a.block_tables, KCache(l),
                                     VCache(l), static_cast<float*>(scratch_.ptr), attn, stream_),
                name + "paged attention"));
    }
    if (a.num_tiles > 0 && !deterministic_) {
      VG_STEP(check(
          cuda::TiledPrefillAttention(shape, q, a.query_seq, a.context_lens, a.tiles, a.num_tiles,
                                      a.block_tables, KCache(l), VCache(l), attn, stream_),
          name + "tiled prefill attention"));
    }
    VG_STEP(check(cuda::FloatToBf16(attn, static_cast<int64_t>(t) * q_dim, attn_bf16, stream_),
                  name + "attention output to BF16"));
    VG_STEP(Gemm(attn_bf16, layer.o, layer.o_bias, proj_f, t, hidden, q_dim, name + "o_proj"));
    // h += attention output; x = RMSNorm_preffw(h).
    VG_STEP(check(cuda::ResidualRmsNorm(hidden_f, proj_f, layer.ffw_norm, t, hidden, eps, normed,
                                        nullptr, stream_),
                  name + "pre_feedforward_layernorm"));
    VG_STEP(
        Gemm(normed, layer.gate_up, nullptr, gate_up, t, 2 * inter, hidden, name + "gate_up_proj"));
    VG_STEP(check(cuda::GeGlu(gate_up, gate_up + inter, 2 * inter, t, inter, act, stream_),
                  name + "GeGLU"));
    VG_STEP(Gemm(act, layer.down, nullptr, proj_f, t, hidden, inter, name + "down_proj"));
  }
  if (rows == 0) return absl::OkStatus();
  // Only the rows with logits: gather h and the last down_proj output, add, final norm.
  float* final_h = static_cast<float*>(final_hidden_.ptr);
  float* final_x = static_cast<float*>(final_proj_.ptr);
  auto* final_normed = static_cast<uint16_t*>(final_normed_.ptr);
  float* logits = static_cast<float*>(logits_.ptr);
  VG_STEP(check(cuda::GatherRows(hidden_f, a.selected, rows, hidden, final_h, stream_),
                "gather of the logit rows"));
  VG_STEP(check(cuda::GatherRows(proj_f, a.selected, rows, hidden, final_x, stream_),
                "gather of the logit rows"));
  VG_STEP(check(cuda::ResidualRmsNorm(final_h, final_x, weights_->final_norm(), rows, hidden, eps,
                                      final_normed, nullptr, stream_),
                "final norm"));
  VG_STEP(Gemm(final_normed, weights_->lm_head(), nullptr, logits, rows, vocab, hidden, "LM head"));
  if (c.final_logit_softcapping) {
    VG_STEP(check(cuda::FinalSoftcapArgmax(logits, rows, vocab,
                                           static_cast<float>(*c.final_logit_softcapping),
                                           /*argmax=*/nullptr, stream_),
                  "final soft-cap"));
  }
#undef VG_STEP
  return absl::OkStatus();
}

absl::StatusOr<int> CudaBackend::Impl::RunDecodeGraph(const BatchPlan& plan, int bucket,
                                                      std::vector<int32_t>* row_entry) {
  const int max_context = static_cast<int>(config_.max_position_embeddings);
  if (absl::Status s = ReserveActivations(bucket, bucket, max_context); !s.ok()) return s;
  auto [it, inserted] = graphs_.try_emplace(bucket);
  DecodeGraph& graph = it->second;
  if (inserted) {
    graph.layout = cuda::LayoutPaddedDecode(bucket, graph_max_blocks_, max_context);
    const size_t bytes = graph.layout.bytes;
    if (cudaError_t e = cudaHostAlloc(&graph.staging, bytes, cudaHostAllocDefault);
        e != cudaSuccess) {
      graph.staging = nullptr;
      cudaGetLastError();
      graphs_.erase(it);
      return absl::ResourceExhaustedError(
          absl::StrCat("CUDA graph: no pinned host memory: ", cudaGetErrorString(e)));
    }
    if (cudaError_t e = cudaMalloc(&graph.step_dev, bytes); e != cudaSuccess) {
      graph.step_dev = nullptr;
      cudaGetLastError();
      cudaFreeHost(graph.staging);
      graphs_.erase(it);
      return absl::ResourceExhaustedError(
          absl::StrCat("CUDA graph: no device memory for step data: ", cudaGetErrorString(e)));
    }
  }
  const int rows = cuda::FillStep(plan, block_size_, graph.layout,
                                  static_cast<std::byte*>(graph.staging), row_entry);
  cuda::FillPadding(graph.layout, rows, static_cast<std::byte*>(graph.staging));
  if (graph.exec == nullptr) {
    // Capture: the upload, then the model over all `bucket` rows. ThreadLocal mode: CUDA calls
    // of other threads (another backend) are not affected.
    if (cudaError_t e = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
        e != cudaSuccess) {
      return StepError(e, "CUDA graph capture");
    }
    absl::Status enqueued =
        CheckStep(cudaMemcpyAsync(graph.step_dev, graph.staging, graph.layout.bytes,
                                  cudaMemcpyHostToDevice, stream_),
                  "upload of the step data");
    if (enqueued.ok()) {
      enqueued = EnqueueModel(Arrays(graph.step_dev, graph.layout), bucket, bucket, max_context,
                              graph_max_blocks_);
    }
    cudaGraph_t captured = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &captured);
    if (enqueued.ok() && ended != cudaSuccess) enqueued = StepError(ended, "CUDA graph capture");
    if (enqueued.ok()) {
      if (cudaError_t e = cudaGraphInstantiate(&graph.exec, captured, 0); e != cudaSuccess) {
        graph.exec = nullptr;
        enqueued = StepError(e, "CUDA graph instantiation");
      }
    }
    if (captured != nullptr) cudaGraphDestroy(captured);
    if (!enqueued.ok()) {
      cudaGetLastError();
      return enqueued;
    }
  }
  if (cudaError_t e = cudaGraphLaunch(graph.exec, stream_); e != cudaSuccess) {
    return StepError(e, absl::StrCat("CUDA graph launch (", bucket, " rows)"));
  }
  return rows;
}

absl::StatusOr<int> CudaBackend::Impl::RunModel(const BatchPlan& plan,
                                                std::vector<int32_t>* row_entry) {
  const int bucket = Bucket(static_cast<int>(plan.entries.size()));
  bool decode = max_graph_rows_ > 0 && !plan.entries.empty() && bucket <= max_graph_rows_;
  for (const BatchEntry& entry : plan.entries) {
    decode = decode && entry.token_ids.size() == 1 && entry.logits == LogitsMode::kLast;
  }
  if (poison_) {  // tests: a read of anything this step did not write shows as NaN
    for (DeviceBytes* buffer : ActivationBuffers()) {
      if (cudaError_t e = cudaMemsetAsync(buffer->ptr, 0xFF, buffer->bytes, stream_);
          e != cudaSuccess) {
        cudaStreamSynchronize(stream_);
        return StepError(e, "poisoning");
      }
    }
  }
  if (decode) {
    absl::StatusOr<int> rows = RunDecodeGraph(plan, bucket, row_entry);
    if (!rows.ok()) cudaStreamSynchronize(stream_);
    return rows;
  }

  // Validation bounds positions by max_position_embeddings (<= INT32_MAX / 2).
  const cuda::StepLayout step = cuda::LayoutStep(plan, block_size_);
  if (static_cast<int64_t>(step.num_tokens) > INT32_MAX / 2) {
    return absl::InvalidArgumentError("CUDA forward pass: too many tokens in one step");
  }
  if (absl::Status s = ReserveStaging(step.bytes); !s.ok()) return s;
  const int rows =
      cuda::FillStep(plan, block_size_, step, static_cast<std::byte*>(staging_), row_entry);
  const int t = step.num_tokens;
  if (absl::Status s = ReserveActivations(t, rows, step.max_context_len); !s.ok()) return s;
  if (absl::Status s = Reserve(step_dev_, step.bytes, "step data"); !s.ok()) return s;
  absl::Status status = CheckStep(
      cudaMemcpyAsync(step_dev_.ptr, staging_, step.bytes, cudaMemcpyHostToDevice, stream_),
      "upload of the step data");
  if (status.ok()) {
    status = EnqueueModel(Arrays(step_dev_.ptr, step), t, rows, step.max_context_len,
                          step.max_blocks_per_seq);
  }
  if (!status.ok()) {
    cudaStreamSynchronize(stream_);  // enqueued work may still read staging and activations
    return status;
  }
  return rows;
}

absl::Status CudaBackend::Impl::BeginStep(const BatchPlan& plan) {
  cpu::PlanLimits limits;
  limits.vocab_size = config_.vocab_size;
  limits.max_positions = config_.max_position_embeddings;
  limits.block_size = block_size_;
  limits.num_blocks = num_blocks_;
  if (absl::Status s = cpu::ValidatePlan(plan, limits); !s.ok()) return s;
  // The current device is per host thread, and the engine loop thread is not the one that
  // created the backend.
  if (cudaError_t error = cudaSetDevice(device_index_); error != cudaSuccess) {
    return StepError(error, "cudaSetDevice");
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::Forward(const BatchPlan& plan, Logits* logits) {
  if (absl::Status s = BeginStep(plan); !s.ok()) return s;
  logits->vocab_size = vocab_size_;
  logits->values.clear();
  logits->row_entry.clear();
  if (plan.entries.empty()) return absl::OkStatus();

  absl::StatusOr<int> rows = RunModel(plan, &logits->row_entry);
  if (!rows.ok()) {
    logits->row_entry.clear();
    return rows.status();
  }
  if (*rows > 0) {
    logits->values.resize(static_cast<size_t>(*rows) * vocab_size_);
    if (cudaError_t error =
            cudaMemcpyAsync(logits->values.data(), logits_.ptr,
                            logits->values.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_);
        error != cudaSuccess) {
      cudaStreamSynchronize(stream_);
      logits->values.clear();
      logits->row_entry.clear();
      return StepError(error, "download of the logits");
    }
  }
  if (cudaError_t error = cudaStreamSynchronize(stream_); error != cudaSuccess) {
    logits->values.clear();
    logits->row_entry.clear();
    return StepError(error, "the step (reported at cudaStreamSynchronize)");
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::ForwardAndSample(const BatchPlan& plan,
                                                 std::span<const RowSampling> rows,
                                                 std::vector<RowSample>* samples) {
  samples->clear();
  size_t last = 0;
  for (const BatchEntry& entry : plan.entries) {
    if (entry.logits == LogitsMode::kAll) {
      return absl::InvalidArgumentError(
          "ForwardAndSample: an entry asks for the logits of every token (kAll); use Forward");
    }
    if (entry.logits == LogitsMode::kLast) ++last;
  }
  if (last != rows.size()) {
    return absl::InvalidArgumentError(absl::StrCat("ForwardAndSample: ", rows.size(),
                                                   " sampling rows for ", last, " logits rows"));
  }
  if (absl::Status s = BeginStep(plan); !s.ok()) return s;
  if (plan.entries.empty()) return absl::OkStatus();
  std::vector<int32_t> row_entry;
  absl::StatusOr<int> logit_rows = RunModel(plan, &row_entry);
  if (!logit_rows.ok()) return logit_rows.status();
  if (*logit_rows > 0) {
    if (absl::Status s = sampler_.Enqueue(static_cast<const float*>(logits_.ptr),
                                          static_cast<int>(vocab_size_), rows, stream_);
        !s.ok()) {
      cudaStreamSynchronize(stream_);
      return s;
    }
  }
  if (cudaError_t error = cudaStreamSynchronize(stream_); error != cudaSuccess) {
    return StepError(error, "the step (reported at cudaStreamSynchronize)");
  }
  if (*logit_rows > 0) sampler_.Collect(samples);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    const Checkpoint& checkpoint, const CudaBackendOptions& options) {
  if (options.block_size < 1) return absl::InvalidArgumentError("block_size must be positive");
  if (!(options.gpu_memory_utilization > 0 && options.gpu_memory_utilization <= 1)) {
    return absl::InvalidArgumentError("gpu_memory_utilization must be in (0, 1]");
  }
  absl::StatusOr<std::vector<CudaDeviceInfo>> devices = ListCudaDevices();
  if (!devices.ok()) return devices.status();
  if (options.device_index < 0 || options.device_index >= static_cast<int>(devices->size())) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", options.device_index,
                                                   " does not exist; this machine has ",
                                                   devices->size()));
  }
  auto impl = std::make_unique<Impl>();
  if (absl::Status s = impl->Init(checkpoint, options); !s.ok()) return s;
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(impl)));
}

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaBackend::~CudaBackend() = default;

absl::Status CudaBackend::Forward(const BatchPlan& plan, Logits* logits) {
  return impl_->Forward(plan, logits);
}
absl::Status CudaBackend::ForwardAndSample(const BatchPlan& plan, std::span<const RowSampling> rows,
                                           std::vector<RowSample>* samples) {
  return impl_->ForwardAndSample(plan, rows, samples);
}
int32_t CudaBackend::num_blocks() const { return impl_->num_blocks_; }
int32_t CudaBackend::block_size() const { return impl_->block_size_; }
int64_t CudaBackend::vocab_size() const { return impl_->vocab_size_; }

}  // namespace vg::engine
