#include "engine/backend/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/plan_validation.h"
#include "engine/backend/cuda/kernels/gemm.h"
#include "engine/backend/cuda/kernels/kernels.h"
#include "engine/backend/cuda/step_inputs.h"
#include "engine/model/dtype.h"
#include "engine/model/matrix_layout.h"

namespace vg::engine {
namespace {

absl::Status CudaError(cudaError_t error, const char* what) {
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(error)));
}

// cudaGetDeviceCount's failures, worded for an operator.
absl::Status DeviceCountError(cudaError_t error) {
  if (error == cudaErrorNoDevice) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: ", cudaGetErrorString(error)));
  }
  if (error == cudaErrorInsufficientDriver) {
    return absl::FailedPreconditionError(absl::StrCat("no CUDA driver (or one too old for CUDA ",
                                                      CUDART_VERSION / 1000,
                                                      "): ", cudaGetErrorString(error)));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no CUDA driver or device usable: ", cudaGetErrorName(error), ": ",
                   cudaGetErrorString(error)));
}

// An error of one step of Forward: INTERNAL, naming the step (never an abort).
absl::Status StepError(cudaError_t error, const std::string& step) {
  return absl::InternalError(absl::StrCat(
      "CUDA forward pass: ", step, ": ", cudaGetErrorName(error), ": ", cudaGetErrorString(error)));
}

}  // namespace

absl::StatusOr<std::vector<CudaDeviceInfo>> ListCudaDevices() {
  int count = 0;
  if (cudaError_t error = cudaGetDeviceCount(&count); error != cudaSuccess) {
    return DeviceCountError(error);
  }
  if (count == 0) return absl::FailedPreconditionError("no CUDA device: the driver reports none");
  std::vector<CudaDeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaError_t error = cudaGetDeviceProperties(&prop, i); error != cudaSuccess) {
      return CudaError(error, "cudaGetDeviceProperties");
    }
    CudaDeviceInfo info{.index = i,
                        .name = prop.name,
                        .total_memory_bytes = static_cast<int64_t>(prop.totalGlobalMem),
                        .compute_capability_major = prop.major,
                        .compute_capability_minor = prop.minor};
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaSetDevice(i) == cudaSuccess &&
        cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
      info.free_memory_bytes = static_cast<int64_t>(free_bytes);
    }
    devices.push_back(std::move(info));
  }
  return devices;
}

// Numerics, and where they differ from the CPU backend (engine/backend/cpu/forward_pass.cc, which
// keeps every activation in float32 over the stored weights):
//   - weights live on the device in BF16: F32 and F16 checkpoints are rounded once on upload
//     (relative error <= 2^-9 per weight); norm weights and biases stay float32;
//   - each GEMM input is rounded to BF16 (the normed hidden state before q/k/v and gate/up, the
//     attention output before o_proj, the GeGLU output before down_proj); cuBLASLt accumulates in
//     float32 in its own order; GEMM outputs, the residual stream, RMSNorm, RoPE, softmax and the
//     soft-caps are float32 as on the CPU;
//   - K and V are stored in BF16 (the CPU backend's --kv-cache-dtype bfloat16; its default is
//     float32);
//   - tanhf/expf/sincosf are CUDA's (within a few ulp of the CPU's).
// So the logits agree with the CPU backend to a few BF16 ulps of the logits' scale, not exactly:
// tests/gpu/forward_pass_test.cc allows |gpu - cpu| <= 3e-2 * max(1, max |cpu row|) and demands
// the same argmax wherever the CPU's top-two margin exceeds twice that.
// Not batch invariant: cuBLASLt may pick different algorithms (split-K) for different row counts.
class CudaBackend::Impl {
 public:
  ~Impl() {
    cudaSetDevice(device_index_);  // the destroying thread may not be the creating one
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    gemm_.reset();
    for (void* ptr : weights_) cudaFree(ptr);
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
    gemm_ = cuda::LtGemm::Create(32u << 20, &gemm_error);
    if (gemm_ == nullptr) {
      return absl::InternalError(absl::StrCat("cuBLASLt: ", gemm_error));
    }
    const ModelWeights& w = checkpoint.weights();
    if (static_cast<int64_t>(w.layers.size()) != c.num_hidden_layers) {
      return absl::InvalidArgumentError(
          "CUDA backend: weight table has the wrong number of layers");
    }
    if (absl::Status s = UploadMatrix(w.embed_tokens, &embed_); !s.ok()) return s;
    lm_head_ = embed_;
    if (w.lm_head.data != w.embed_tokens.data) {
      if (absl::Status s = UploadMatrix(w.lm_head, &lm_head_); !s.ok()) return s;
    }
    if (absl::Status s = UploadVector(w.final_norm, &final_norm_); !s.ok()) return s;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      const LayerWeights& lw = w.layers[i];
      Layer layer;
      for (const auto& [view, dst] : {std::pair{&lw.q_proj, &layer.q},
                                      {&lw.k_proj, &layer.k},
                                      {&lw.v_proj, &layer.v},
                                      {&lw.o_proj, &layer.o},
                                      {&lw.gate_proj, &layer.gate},
                                      {&lw.up_proj, &layer.up},
                                      {&lw.down_proj, &layer.down}}) {
        if (absl::Status s = UploadMatrix(*view, dst); !s.ok()) return s;
      }
      if (absl::Status s = UploadVector(lw.input_layernorm, &layer.input_norm); !s.ok()) return s;
      if (absl::Status s = UploadVector(lw.pre_feedforward_layernorm, &layer.ffw_norm); !s.ok()) {
        return s;
      }
      if (c.attention_bias) {
        if (!lw.q_bias || !lw.k_bias || !lw.v_bias || !lw.o_bias) {
          return absl::InvalidArgumentError(
              absl::StrCat("CUDA backend: attention_bias is set but layer ", i, " lacks biases"));
        }
        for (const auto& [view, dst] : {std::pair{&*lw.q_bias, &layer.q_bias},
                                        {&*lw.k_bias, &layer.k_bias},
                                        {&*lw.v_bias, &layer.v_bias},
                                        {&*lw.o_bias, &layer.o_bias}}) {
          if (absl::Status s = UploadVector(*view, dst); !s.ok()) return s;
        }
      }
      layer.window =
          c.layer_types[i] == LayerType::kSlidingAttention ? static_cast<int>(c.sliding_window) : 0;
      layers_.push_back(layer);
    }
    return AllocateKvPool(c, options);
  }

  absl::Status Forward(const BatchPlan& plan, Logits* logits);

  int32_t num_blocks_ = 0;
  int32_t block_size_ = 0;
  int64_t vocab_size_ = 0;

 private:
  struct Layer {
    const uint16_t *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
    const uint16_t *gate = nullptr, *up = nullptr, *down = nullptr;
    const float *input_norm = nullptr, *ffw_norm = nullptr;
    const float *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr, *o_bias = nullptr;
    int window = 0;  // sliding window; 0 for full attention
  };
  struct DeviceBytes {
    void* ptr = nullptr;
    size_t bytes = 0;
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
    if (c.max_position_embeddings > INT32_MAX || c.vocab_size > INT32_MAX) {
      return absl::InvalidArgumentError("CUDA backend: model sizes beyond int32");
    }
    return absl::OkStatus();
  }

  absl::Status Upload(const TensorView& t, bool as_bf16, void** out) {
    if (t.shape.size() == 2 && t.layout != MatrixLayout::kRowMajor) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", t.name, " is tiled; open the checkpoint row-major for CUDA"));
    }
    const int64_t n = t.NumElements();
    std::vector<uint16_t> half;
    std::vector<float> wide;
    const void* src = t.data;
    if (as_bf16 && t.dtype != DType::kBF16) {
      half.resize(n);
      for (int64_t i = 0; i < n; ++i) half[i] = FloatToBF16(t.GetFloat(i));
      src = half.data();
    } else if (!as_bf16 && t.dtype != DType::kF32) {
      wide.resize(n);
      for (int64_t i = 0; i < n; ++i) wide[i] = t.GetFloat(i);
      src = wide.data();
    }
    const size_t bytes = static_cast<size_t>(n) * (as_bf16 ? 2 : 4);
    void* ptr = nullptr;
    if (cudaError_t error = cudaMalloc(&ptr, std::max<size_t>(bytes, 1)); error != cudaSuccess) {
      return absl::ResourceExhaustedError(
          absl::StrCat("no device memory for weight ", t.name, ": ", cudaGetErrorString(error)));
    }
    weights_.push_back(ptr);
    if (cudaError_t error = cudaMemcpy(ptr, src, bytes, cudaMemcpyHostToDevice);
        error != cudaSuccess) {
      return CudaError(error, "cudaMemcpy (weights)");
    }
    *out = ptr;
    return absl::OkStatus();
  }
  absl::Status UploadMatrix(const TensorView& t, const uint16_t** out) {
    void* ptr = nullptr;
    if (absl::Status s = Upload(t, /*as_bf16=*/true, &ptr); !s.ok()) return s;
    *out = static_cast<const uint16_t*>(ptr);
    return absl::OkStatus();
  }
  absl::Status UploadVector(const TensorView& t, const float** out) {
    void* ptr = nullptr;
    if (absl::Status s = Upload(t, /*as_bf16=*/false, &ptr); !s.ok()) return s;
    *out = static_cast<const float*>(ptr);
    return absl::OkStatus();
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
                       " bytes left after the weights (gpu_memory_utilization ",
                       options.gpu_memory_utilization, ")"));
    }
    if (cudaError_t error = cudaMalloc(&kv_pool_, static_cast<size_t>(blocks * block_bytes));
        error != cudaSuccess) {
      kv_pool_ = nullptr;
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
    return {&hidden_,     &proj_,         &normed_, &q_,      &k_,   &v_,
            &attn_,       &attn_bf16_,    &gate_,   &up_,     &act_, &final_hidden_,
            &final_proj_, &final_normed_, &logits_, &scratch_};
  }
  // Grows `buffer` to at least `bytes` (contents are not kept). Only between steps: the previous
  // step has been synchronised, so nothing on the stream still uses the old memory.
  absl::Status Reserve(DeviceBytes& buffer, size_t bytes, const char* what) {
    if (buffer.bytes >= bytes) return absl::OkStatus();
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

  ModelConfig config_;
  int device_index_ = 0;
  bool poison_ = false;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::LtGemm> gemm_;
  std::vector<void*> weights_;  // every weight allocation, freed by the destructor
  const uint16_t* embed_ = nullptr;
  const uint16_t* lm_head_ = nullptr;  // embed_ when tied
  const float* final_norm_ = nullptr;
  std::vector<Layer> layers_;
  void* kv_pool_ =
      nullptr;  // per layer: K then V, each [num_blocks][block_size][kv_heads][head_dim]
  int64_t layer_kv_elements_ = 0;

  // Activations, sized for the largest step so far (grown on demand).
  DeviceBytes hidden_;     // float32 [t][hidden]: the residual stream
  DeviceBytes proj_;       // float32 [t][hidden]: o_proj / down_proj output, added next
  DeviceBytes normed_;     // BF16 [t][hidden]
  DeviceBytes q_, k_, v_;  // float32 [t][heads|kv_heads][head_dim]
  DeviceBytes attn_;       // float32 [t][heads][head_dim]
  DeviceBytes attn_bf16_;  // BF16 [t][heads][head_dim]
  DeviceBytes gate_, up_;  // float32 [t][intermediate]
  DeviceBytes act_;        // BF16 [t][intermediate]
  DeviceBytes final_hidden_, final_proj_;  // float32 [rows][hidden]: the rows with logits
  DeviceBytes final_normed_;               // BF16 [rows][hidden]
  DeviceBytes logits_;                     // float32 [rows][vocab]
  DeviceBytes scratch_;                    // PagedAttention's split-K partials
  DeviceBytes step_dev_;                   // the step's ids, positions, slots, tables (one upload)
  void* staging_ = nullptr;                // pinned host copy of step_dev_
  size_t staging_bytes_ = 0;
};

absl::Status CudaBackend::Impl::Forward(const BatchPlan& plan, Logits* logits) {
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
  logits->vocab_size = vocab_size_;
  logits->values.clear();
  logits->row_entry.clear();

  // Validation bounds positions by max_position_embeddings (<= INT32_MAX).
  const cuda::StepLayout step = cuda::LayoutStep(plan, block_size_);
  if (step.num_tokens == 0) return absl::OkStatus();
  if (static_cast<int64_t>(step.num_tokens) > INT32_MAX / 2) {
    return absl::InvalidArgumentError("CUDA forward pass: too many tokens in one step");
  }
  const int t = step.num_tokens;
  const int max_context = step.max_context_len;
  if (absl::Status s = ReserveStaging(step.bytes); !s.ok()) return s;
  const int rows = cuda::FillStep(plan, block_size_, step, static_cast<std::byte*>(staging_),
                                  &logits->row_entry);

  const ModelConfig& c = config_;
  const int hidden = static_cast<int>(c.hidden_size);
  const int heads = static_cast<int>(c.num_attention_heads);
  const int kv_heads = static_cast<int>(c.num_key_value_heads);
  const int head_dim = static_cast<int>(c.head_dim);
  const int q_dim = heads * head_dim;
  const int kv_dim = kv_heads * head_dim;
  const int inter = static_cast<int>(c.intermediate_size);
  const int vocab = static_cast<int>(c.vocab_size);
  const float eps = static_cast<float>(c.rms_norm_eps);
  cuda::PagedAttentionShape shape;
  shape.num_heads = heads;
  shape.num_kv_heads = kv_heads;
  shape.head_dim = head_dim;
  shape.block_size = block_size_;
  shape.max_blocks_per_seq = step.max_blocks_per_seq;
  shape.scale = static_cast<float>(std::pow(c.query_pre_attn_scalar, -0.5));
  shape.logit_softcap =
      c.attn_logit_softcapping ? static_cast<float>(*c.attn_logit_softcapping) : 0.f;

  const size_t f32 = sizeof(float), bf16 = sizeof(uint16_t);
  const size_t tt = static_cast<size_t>(t);
  const size_t rr = static_cast<size_t>(std::max(rows, 1));
  const std::pair<DeviceBytes*, std::pair<size_t, const char*>> sizes[] = {
      {&hidden_, {tt * hidden * f32, "hidden states"}},
      {&proj_, {tt * hidden * f32, "projections"}},
      {&normed_, {tt * hidden * bf16, "normed states"}},
      {&q_, {tt * q_dim * f32, "queries"}},
      {&k_, {tt * kv_dim * f32, "keys"}},
      {&v_, {tt * kv_dim * f32, "values"}},
      {&attn_, {tt * q_dim * f32, "attention output"}},
      {&attn_bf16_, {tt * q_dim * bf16, "attention output (BF16)"}},
      {&gate_, {tt * inter * f32, "gate projections"}},
      {&up_, {tt * inter * f32, "up projections"}},
      {&act_, {tt * inter * bf16, "GeGLU output"}},
      {&final_hidden_, {rr * hidden * f32, "final hidden states"}},
      {&final_proj_, {rr * hidden * f32, "final projections"}},
      {&final_normed_, {rr * hidden * bf16, "final normed states"}},
      {&logits_, {rr * vocab * f32, "logits"}},
      {&scratch_,
       {static_cast<size_t>(cuda::PagedAttentionScratchFloats(shape, t, max_context)) * f32,
        "attention scratch"}},
      {&step_dev_, {step.bytes, "step data"}},
  };
  for (const auto& [buffer, spec] : sizes) {
    if (absl::Status s = Reserve(*buffer, spec.first, spec.second); !s.ok()) {
      logits->row_entry.clear();
      return s;
    }
  }

  auto* dev = static_cast<std::byte*>(step_dev_.ptr);
  const auto* d_slots = reinterpret_cast<const int64_t*>(dev + step.slots);
  const auto* d_tokens = reinterpret_cast<const int32_t*>(dev + step.tokens);
  const auto* d_positions = reinterpret_cast<const int32_t*>(dev + step.positions);
  const auto* d_query_seq = reinterpret_cast<const int32_t*>(dev + step.query_seq);
  const auto* d_context = reinterpret_cast<const int32_t*>(dev + step.context_lens);
  const auto* d_selected = reinterpret_cast<const int32_t*>(dev + step.selected);
  const auto* d_tables = reinterpret_cast<const int32_t*>(dev + step.block_tables);
  float* hidden_f = static_cast<float*>(hidden_.ptr);
  float* proj_f = static_cast<float*>(proj_.ptr);
  auto* normed = static_cast<uint16_t*>(normed_.ptr);
  float* q = static_cast<float*>(q_.ptr);
  float* k = static_cast<float*>(k_.ptr);
  float* v = static_cast<float*>(v_.ptr);
  float* attn = static_cast<float*>(attn_.ptr);
  auto* attn_bf16 = static_cast<uint16_t*>(attn_bf16_.ptr);
  float* gate = static_cast<float*>(gate_.ptr);
  float* up = static_cast<float*>(up_.ptr);
  auto* act = static_cast<uint16_t*>(act_.ptr);

  // Everything below is enqueued on stream_; on an error, wait for what was enqueued (it may
  // still read the staging buffer and the activations) before returning.
  auto fail = [this, logits](absl::Status status) {
    cudaStreamSynchronize(stream_);
    logits->values.clear();
    logits->row_entry.clear();
    return status;
  };
  auto check = [](cudaError_t error, const std::string& what) -> absl::Status {
    return error == cudaSuccess ? absl::OkStatus() : StepError(error, what);
  };
#define VG_STEP(expr)                                        \
  do {                                                       \
    if (absl::Status s_ = (expr); !s_.ok()) return fail(s_); \
  } while (0)

  if (poison_) {  // tests: a read of anything this step did not write shows as NaN
    for (DeviceBytes* buffer : ActivationBuffers()) {
      VG_STEP(check(cudaMemsetAsync(buffer->ptr, 0xFF, buffer->bytes, stream_), "poisoning"));
    }
  }
  VG_STEP(
      check(cudaMemcpyAsync(step_dev_.ptr, staging_, step.bytes, cudaMemcpyHostToDevice, stream_),
            "upload of the step data"));
  // transformers multiplies by sqrt(hidden) cast to the activation dtype; the CPU backend's
  // activations are float32, and so are these.
  const float normalizer = static_cast<float>(std::sqrt(static_cast<double>(hidden)));
  VG_STEP(check(cuda::EmbedTokens(embed_, d_tokens, t, hidden, normalizer, hidden_f, stream_),
                "embedding"));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const Layer& layer = layers_[l];
    const std::string name = absl::StrCat("layer ", l, " ");
    // h += previous layer's down_proj output (none before layer 0); x = RMSNorm_in(h).
    VG_STEP(check(cuda::ResidualRmsNorm(hidden_f, l == 0 ? nullptr : proj_f, layer.input_norm, t,
                                        hidden, eps, normed, nullptr, stream_),
                  name + "input_layernorm"));
    VG_STEP(Gemm(normed, layer.q, layer.q_bias, q, t, q_dim, hidden, name + "q_proj"));
    VG_STEP(Gemm(normed, layer.k, layer.k_bias, k, t, kv_dim, hidden, name + "k_proj"));
    VG_STEP(Gemm(normed, layer.v, layer.v_bias, v, t, kv_dim, hidden, name + "v_proj"));
    // Every new token's K/V is in the cache before any row attends, so a prefill row sees the
    // rows before it in this step (causality comes from context_lens).
    VG_STEP(
        check(cuda::RopeAndWriteKv(q, k, v, d_positions, d_slots, t, heads, kv_heads, head_dim,
                                   static_cast<float>(c.rope_theta), KCache(l), VCache(l), stream_),
              name + "RoPE and KV write"));
    shape.sliding_window = layer.window;
    VG_STEP(check(
        cuda::PagedAttention(shape, q, d_query_seq, d_context, t, max_context, d_tables, KCache(l),
                             VCache(l), static_cast<float*>(scratch_.ptr), attn, stream_),
        name + "paged attention"));
    VG_STEP(check(cuda::FloatToBf16(attn, static_cast<int64_t>(t) * q_dim, attn_bf16, stream_),
                  name + "attention output to BF16"));
    VG_STEP(Gemm(attn_bf16, layer.o, layer.o_bias, proj_f, t, hidden, q_dim, name + "o_proj"));
    // h += attention output; x = RMSNorm_preffw(h).
    VG_STEP(check(cuda::ResidualRmsNorm(hidden_f, proj_f, layer.ffw_norm, t, hidden, eps, normed,
                                        nullptr, stream_),
                  name + "pre_feedforward_layernorm"));
    VG_STEP(Gemm(normed, layer.gate, nullptr, gate, t, inter, hidden, name + "gate_proj"));
    VG_STEP(Gemm(normed, layer.up, nullptr, up, t, inter, hidden, name + "up_proj"));
    VG_STEP(check(cuda::GeGlu(gate, up, static_cast<int64_t>(t) * inter, act, stream_),
                  name + "GeGLU"));
    VG_STEP(Gemm(act, layer.down, nullptr, proj_f, t, hidden, inter, name + "down_proj"));
  }
  if (rows > 0) {
    // Only the rows with logits: gather h and the last down_proj output, add, final norm.
    float* final_h = static_cast<float*>(final_hidden_.ptr);
    float* final_x = static_cast<float*>(final_proj_.ptr);
    auto* final_normed = static_cast<uint16_t*>(final_normed_.ptr);
    float* d_logits = static_cast<float*>(logits_.ptr);
    VG_STEP(check(cuda::GatherRows(hidden_f, d_selected, rows, hidden, final_h, stream_),
                  "gather of the logit rows"));
    VG_STEP(check(cuda::GatherRows(proj_f, d_selected, rows, hidden, final_x, stream_),
                  "gather of the logit rows"));
    VG_STEP(check(cuda::ResidualRmsNorm(final_h, final_x, final_norm_, rows, hidden, eps,
                                        final_normed, nullptr, stream_),
                  "final norm"));
    VG_STEP(Gemm(final_normed, lm_head_, nullptr, d_logits, rows, vocab, hidden, "LM head"));
    if (c.final_logit_softcapping) {
      VG_STEP(check(cuda::FinalSoftcapArgmax(d_logits, rows, vocab,
                                             static_cast<float>(*c.final_logit_softcapping),
                                             /*argmax=*/nullptr, stream_),
                    "final soft-cap"));
    }
    logits->values.resize(static_cast<size_t>(rows) * vocab);
    VG_STEP(check(
        cudaMemcpyAsync(logits->values.data(), d_logits, logits->values.size() * sizeof(float),
                        cudaMemcpyDeviceToHost, stream_),
        "download of the logits"));
  }
#undef VG_STEP
  if (cudaError_t error = cudaStreamSynchronize(stream_); error != cudaSuccess) {
    logits->values.clear();
    logits->row_entry.clear();
    return StepError(error, "the step (reported at cudaStreamSynchronize)");
  }
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
int32_t CudaBackend::num_blocks() const { return impl_->num_blocks_; }
int32_t CudaBackend::block_size() const { return impl_->block_size_; }
int64_t CudaBackend::vocab_size() const { return impl_->vocab_size_; }

}  // namespace vg::engine
