// DeviceWeights: a checkpoint's weights on one CUDA device, laid out for the forward pass.
//
// Matrices are BF16 in the checkpoint's nn.Linear layout [out][in] (F32 and F16 checkpoints are
// rounded once on upload, relative error <= 2^-9 per weight). Projections that read the same
// input are fused into one matrix so that one GEMM computes them: q, k and v become qkv
// [q_dim + 2 kv_dim][hidden] (rows of q, then k, then v), gate and up become gate_up
// [2 intermediate][hidden] (gate rows first). Norm weights and biases stay float32 (the q, k and
// v biases concatenated in the same order). The tied LM head is the embedding itself.
//
// Upload runs on the calling thread's current device (cudaSetDevice first) and waits for its
// copies. Thread-safety: immutable after Upload; freed by the destructor (call it with the same
// current device).
#ifndef VG_ENGINE_BACKEND_CUDA_DEVICE_WEIGHTS_H_
#define VG_ENGINE_BACKEND_CUDA_DEVICE_WEIGHTS_H_

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/checkpoint.h"

namespace vg::engine::cuda {

struct DeviceLayer {
  const uint16_t* qkv = nullptr;      // BF16 [q_dim + 2 kv_dim][hidden]
  const uint16_t* o = nullptr;        // BF16 [hidden][q_dim]
  const uint16_t* gate_up = nullptr;  // BF16 [2 intermediate][hidden]
  const uint16_t* down = nullptr;     // BF16 [hidden][intermediate]
  const float* input_norm = nullptr;  // [hidden]
  const float* ffw_norm = nullptr;    // [hidden]
  const float* qkv_bias = nullptr;    // [q_dim + 2 kv_dim] when attention_bias, else null
  const float* o_bias = nullptr;      // [hidden] when attention_bias, else null
  int window = 0;                     // sliding window; 0 for full attention
};

class DeviceWeights {
 public:
  // Uploads every weight of `checkpoint` (its config already accepted by the backend).
  // INVALID_ARGUMENT for a tiled matrix (open the checkpoint row-major) or a missing bias;
  // RESOURCE_EXHAUSTED naming the tensor when device memory runs out; INTERNAL for a failed copy.
  static absl::StatusOr<std::unique_ptr<DeviceWeights>> Upload(const Checkpoint& checkpoint);
  ~DeviceWeights();
  DeviceWeights(const DeviceWeights&) = delete;
  DeviceWeights& operator=(const DeviceWeights&) = delete;

  const uint16_t* embed() const { return embed_; }      // BF16 [vocab][hidden]
  const uint16_t* lm_head() const { return lm_head_; }  // BF16 [vocab][hidden]
  const float* final_norm() const { return final_norm_; }
  const std::vector<DeviceLayer>& layers() const { return layers_; }
  int64_t bytes() const { return bytes_; }  // device memory held

 private:
  DeviceWeights() = default;
  // Allocates and fills one device array from the tensors' elements, concatenated, as BF16
  // (as_bf16) or float32.
  absl::Status UploadConcat(std::initializer_list<const TensorView*> tensors, bool as_bf16,
                            const void** out);

  std::vector<void*> allocations_;
  int64_t bytes_ = 0;
  const uint16_t* embed_ = nullptr;
  const uint16_t* lm_head_ = nullptr;
  const float* final_norm_ = nullptr;
  std::vector<DeviceLayer> layers_;
};

}  // namespace vg::engine::cuda

#endif  // VG_ENGINE_BACKEND_CUDA_DEVICE_WEIGHTS_H_
