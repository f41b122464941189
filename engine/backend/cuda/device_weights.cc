#include "engine/backend/cuda/device_weights.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model/dtype.h"
#include "engine/model/matrix_layout.h"

namespace vg::engine::cuda {

DeviceWeights::~DeviceWeights() {
  for (void* ptr : allocations_) cudaFree(ptr);
}

absl::Status DeviceWeights::UploadConcat(std::initializer_list<const TensorView*> tensors,
                                         bool as_bf16, const void** out) {
  int64_t n = 0;
  std::string names;
  for (const TensorView* t : tensors) {
    if (t->shape.size() == 2 && t->layout != MatrixLayout::kRowMajor) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", t->name, " is tiled; open the checkpoint row-major for CUDA"));
    }
    n += t->NumElements();
    absl::StrAppend(&names, names.empty() ? "" : "+", t->name);
  }
  // The host copy in the device's element type (one tensor of the right dtype is copied as is).
  std::vector<uint16_t> half;
  std::vector<float> wide;
  const void* src = nullptr;
  const TensorView& first = **tensors.begin();
  if (tensors.size() == 1 && first.dtype == (as_bf16 ? DType::kBF16 : DType::kF32)) {
    src = first.data;
  } else if (as_bf16) {
    half.reserve(n);
    for (const TensorView* t : tensors) {
      const int64_t count = t->NumElements();
      if (t->dtype == DType::kBF16) {
        const auto* bits = reinterpret_cast<const uint16_t*>(t->data);
        half.insert(half.end(), bits, bits + count);
      } else {
        for (int64_t i = 0; i < count; ++i) half.push_back(FloatToBF16(t->GetFloat(i)));
      }
    }
    src = half.data();
  } else {
    wide.reserve(n);
    for (const TensorView* t : tensors) {
      for (int64_t i = 0; i < t->NumElements(); ++i) wide.push_back(t->GetFloat(i));
    }
    src = wide.data();
  }
  const size_t bytes = static_cast<size_t>(n) * (as_bf16 ? 2 : 4);
  void* ptr = nullptr;
  if (cudaError_t error = cudaMalloc(&ptr, std::max<size_t>(bytes, 1)); error != cudaSuccess) {
    cudaGetLastError();  // an allocation failure is not sticky
    return absl::ResourceExhaustedError(
        absl::StrCat("no device memory for weight ", names, ": ", cudaGetErrorString(error)));
  }
  allocations_.push_back(ptr);
  bytes_ += static_cast<int64_t>(bytes);
  if (cudaError_t error = cudaMemcpy(ptr, src, bytes, cudaMemcpyHostToDevice);
      error != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("cudaMemcpy (weight ", names, "): ", cudaGetErrorString(error)));
  }
  *out = ptr;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DeviceWeights>> DeviceWeights::Upload(const Checkpoint& checkpoint) {
  const ModelConfig& c = checkpoint.config();
  const ModelWeights& w = checkpoint.weights();
  if (static_cast<int64_t>(w.layers.size()) != c.num_hidden_layers ||
      static_cast<int64_t>(c.layer_types.size()) != c.num_hidden_layers) {
    return absl::InvalidArgumentError("CUDA backend: weight table has the wrong number of layers");
  }
  std::unique_ptr<DeviceWeights> d(new DeviceWeights());
  auto matrix = [&](std::initializer_list<const TensorView*> tensors, const uint16_t** out) {
    const void* ptr = nullptr;
    absl::Status s = d->UploadConcat(tensors, /*as_bf16=*/true, &ptr);
    *out = static_cast<const uint16_t*>(ptr);
    return s;
  };
  auto vector = [&](std::initializer_list<const TensorView*> tensors, const float** out) {
    const void* ptr = nullptr;
    absl::Status s = d->UploadConcat(tensors, /*as_bf16=*/false, &ptr);
    *out = static_cast<const float*>(ptr);
    return s;
  };
  if (absl::Status s = matrix({&w.embed_tokens}, &d->embed_); !s.ok()) return s;
  d->lm_head_ = d->embed_;
  if (w.lm_head.data != w.embed_tokens.data) {
    if (absl::Status s = matrix({&w.lm_head}, &d->lm_head_); !s.ok()) return s;
  }
  if (absl::Status s = vector({&w.final_norm}, &d->final_norm_); !s.ok()) return s;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerWeights& lw = w.layers[i];
    DeviceLayer layer;
    for (absl::Status s :
         {matrix({&lw.q_proj, &lw.k_proj, &lw.v_proj}, &layer.qkv), matrix({&lw.o_proj}, &layer.o),
          matrix({&lw.gate_proj, &lw.up_proj}, &layer.gate_up),
          matrix({&lw.down_proj}, &layer.down), vector({&lw.input_layernorm}, &layer.input_norm),
          vector({&lw.pre_feedforward_layernorm}, &layer.ffw_norm)}) {
      if (!s.ok()) return s;
    }
    if (c.attention_bias) {
      if (!lw.q_bias || !lw.k_bias || !lw.v_bias || !lw.o_bias) {
        return absl::InvalidArgumentError(
            absl::StrCat("CUDA backend: attention_bias is set but layer ", i, " lacks biases"));
      }
      if (absl::Status s = vector({&*lw.q_bias, &*lw.k_bias, &*lw.v_bias}, &layer.qkv_bias);
          !s.ok()) {
        return s;
      }
      if (absl::Status s = vector({&*lw.o_bias}, &layer.o_bias); !s.ok()) return s;
    }
    layer.window =
        c.layer_types[i] == LayerType::kSlidingAttention ? static_cast<int>(c.sliding_window) : 0;
    d->layers_.push_back(layer);
  }
  return d;
}

}  // namespace vg::engine::cuda
