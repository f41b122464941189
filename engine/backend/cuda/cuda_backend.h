// CudaBackend: the VaultGemma backend on one CUDA device, inside libvaultgemma_cuda.so (issue 7).
//
// Create selects the device, creates the cuBLASLt handle and a stream, uploads every weight as
// BF16 with q/k/v and gate/up fused (device_weights.h; tiled matrices are refused: open the
// checkpoint row-major), reserves the activations of the largest step (options.max_step_tokens,
// max_num_seqs) and the sampling scratch, and then allocates a paged KV pool (K and V in BF16,
// per layer) taking `gpu_memory_utilization` of the device memory still free.
//
// Forward runs the whole model on one stream with the kernels of kernels/ and cuBLASLt GEMMs
// (BF16 operands, float32 accumulation and activations; where it rounds differently from the CPU
// backend is written at CudaBackend::Impl in the .cc): the step's ids, positions, KV slots and
// block tables go up in one copy from pinned host memory, the logits of the rows the plan asks
// for come down (or, with ForwardAndSample, only the tokens sampled on the device), and the host
// waits once per step. A decode step (every entry one token with logits) of up to max_num_seqs
// sequences replays a CUDA graph captured for its batch-size bucket, padded with rows that write
// nothing; other steps run eagerly. A step larger than the reservation grows the buffers (and
// drops the captured graphs; RESOURCE_EXHAUSTED when the device has no room left). The plan is
// validated as the CPU backend validates it (cpu/plan_validation.h: INVALID_ARGUMENT, the cache
// untouched); a CUDA or cuBLASLt failure is INTERNAL naming the step. Sliding-window layers and
// attention biases are supported (the test fixtures use both).
//
// Thread-safety: not thread-safe; one caller (the engine loop), like every Backend.
#ifndef VG_ENGINE_BACKEND_CUDA_CUDA_BACKEND_H_
#define VG_ENGINE_BACKEND_CUDA_CUDA_BACKEND_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/backend/cuda/plugin_api.h"
#include "engine/model/checkpoint.h"

namespace vg::engine {

// The devices present, or FAILED_PRECONDITION "no CUDA driver ..." / "no CUDA device ...".
absl::StatusOr<std::vector<CudaDeviceInfo>> ListCudaDevices();

class CudaBackend final : public Backend {
 public:
  // See plugin_api.h's create_backend for the error codes.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const Checkpoint& checkpoint,
                                                             const CudaBackendOptions& options);
  ~CudaBackend() override;

  absl::Status Forward(const BatchPlan& plan, Logits* logits) override;
  // Samples on the device (device_sampler.h): only tokens and log-probabilities come back.
  bool samples_on_device() const override { return true; }
  absl::Status ForwardAndSample(const BatchPlan& plan, std::span<const RowSampling> rows,
                                std::vector<RowSample>* samples) override;
  int32_t num_blocks() const override;
  int32_t block_size() const override;
  int64_t vocab_size() const override;

 private:
  class Impl;
  explicit CudaBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_BACKEND_CUDA_CUDA_BACKEND_H_
