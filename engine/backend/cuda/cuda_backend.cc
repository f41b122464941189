#include "engine/backend/cuda/cuda_backend.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model/dtype.h"

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

struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
};

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

class CudaBackend::Impl {
 public:
  ~Impl() {
    for (DeviceBuffer& buffer : weights_) cudaFree(buffer.ptr);
    if (kv_pool_ != nullptr) cudaFree(kv_pool_);
    if (lt_ != nullptr) cublasLtDestroy(lt_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Init(const Checkpoint& checkpoint, const CudaBackendOptions& options) {
    const ModelConfig& config = checkpoint.config();
    vocab_size_ = config.vocab_size;
    block_size_ = options.block_size;
    if (cudaError_t error = cudaSetDevice(options.device_index); error != cudaSuccess) {
      return CudaError(error, "cudaSetDevice");
    }
    if (cudaError_t error = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
        error != cudaSuccess) {
      return CudaError(error, "cudaStreamCreate");
    }
    if (cublasStatus_t status = cublasLtCreate(&lt_); status != CUBLAS_STATUS_SUCCESS) {
      lt_ = nullptr;
      return absl::InternalError(
          absl::StrCat("cublasLtCreate failed: ", cublasLtGetStatusString(status)));
    }
    const ModelWeights& w = checkpoint.weights();
    std::vector<const TensorView*> tensors = {&w.embed_tokens, &w.final_norm};
    if (w.lm_head.data != w.embed_tokens.data) tensors.push_back(&w.lm_head);
    for (const LayerWeights& layer : w.layers) {
      for (const TensorView* t :
           {&layer.input_layernorm, &layer.pre_feedforward_layernorm, &layer.q_proj, &layer.k_proj,
            &layer.v_proj, &layer.o_proj, &layer.gate_proj, &layer.up_proj, &layer.down_proj}) {
        tensors.push_back(t);
      }
      for (const auto* bias : {&layer.q_bias, &layer.k_bias, &layer.v_bias, &layer.o_bias}) {
        if (bias->has_value()) tensors.push_back(&**bias);
      }
    }
    for (const TensorView* t : tensors) {
      if (absl::Status s = Upload(*t); !s.ok()) return s;
    }
    return AllocateKvPool(config, options);
  }

  absl::Status Upload(const TensorView& t) {
    if (t.layout != MatrixLayout::kRowMajor) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", t.name, " is tiled; open the checkpoint row-major for CUDA"));
    }
    const int64_t n = t.NumElements();
    std::vector<uint16_t> host;
    const void* src = t.data;
    if (t.dtype != DType::kBF16) {
      host.resize(n);
      for (int64_t i = 0; i < n; ++i) host[i] = FloatToBF16(t.GetFloat(i));
      src = host.data();
    }
    DeviceBuffer buffer{.bytes = static_cast<size_t>(n) * 2};
    if (cudaError_t error = cudaMalloc(&buffer.ptr, buffer.bytes); error != cudaSuccess) {
      return absl::ResourceExhaustedError(
          absl::StrCat("no device memory for weight ", t.name, ": ", cudaGetErrorString(error)));
    }
    weights_.push_back(buffer);
    if (cudaError_t error = cudaMemcpy(buffer.ptr, src, buffer.bytes, cudaMemcpyHostToDevice);
        error != cudaSuccess) {
      return CudaError(error, "cudaMemcpy (weights)");
    }
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
    num_blocks_ = static_cast<int32_t>(blocks);
    return absl::OkStatus();
  }

  int32_t num_blocks_ = 0;
  int32_t block_size_ = 0;
  int64_t vocab_size_ = 0;

 private:
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  std::vector<DeviceBuffer> weights_;
  void* kv_pool_ = nullptr;
};

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
  return absl::UnimplementedError("the CUDA forward pass is not written yet (issue 7)");
}
int32_t CudaBackend::num_blocks() const { return impl_->num_blocks_; }
int32_t CudaBackend::block_size() const { return impl_->block_size_; }
int64_t CudaBackend::vocab_size() const { return impl_->vocab_size_; }

}  // namespace vg::engine
