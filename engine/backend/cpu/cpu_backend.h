// CpuBackend: the VaultGemma forward pass on CPU threads.
//
// float32 arithmetic over weights kept in their stored dtype (BF16, F16 or F32) in the
// checkpoint's memory (safetensors.h: the file read into huge pages): no float32 copy of the
// weights is ever made. Matrices are read in the tile layout of engine/model/matrix_layout.h; open
// the checkpoint with MatrixLayout::kTiles and they are used in place, otherwise the backend
// makes a tiled copy of each (twice the weight memory: fine for tests, not for serving). The KV
// cache is paged: per layer, `num_blocks` blocks of `block_size` positions x num_key_value_heads x
// head_dim, for K and for V; a sequence's block table maps its positions to blocks. Each Forward
// reads every weight once for the whole batch (matrix products over all new tokens at once), so
// batching amortises the weights.
//
// Numerics follow ../shared/reference/vaultgemma-architecture.md exactly (RMSNorm with 1 + w in
// float32, rotate-half RoPE, query_pre_attn_scalar scaling, attention soft-cap before the mask,
// sliding windows as transformers masks them, gelu_pytorch_tanh GeGLU, final soft-cap).
//
// Thread-safety: not thread-safe; one caller (the engine loop). Uses its own thread pool.
#ifndef VG_ENGINE_BACKEND_CPU_CPU_BACKEND_H_
#define VG_ENGINE_BACKEND_CPU_CPU_BACKEND_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/checkpoint.h"

namespace vg::engine {

struct CpuBackendOptions {
  int num_threads = 0;      // 0 = one per hardware thread
  int32_t block_size = 16;  // positions per KV block
  int32_t num_blocks = 0;   // 0 = enough for one sequence of the full context
  // KV cache elements: kF32 (exact) or kBF16 (half the memory; kv_cache.h).
  DType kv_cache_dtype = DType::kF32;
};

class CpuBackend final : public Backend {
 public:
  // `checkpoint` must outlive the backend. INVALID_ARGUMENT for nonsensical options;
  // RESOURCE_EXHAUSTED when the KV cache cannot be allocated.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(const Checkpoint& checkpoint,
                                                            const CpuBackendOptions& options);
  ~CpuBackend() override;

  absl::Status Forward(const BatchPlan& plan, Logits* logits) override;
  int32_t num_blocks() const override;
  int32_t block_size() const override;
  int64_t vocab_size() const override;

  // Bytes held by the KV cache.
  size_t KvCacheBytes() const;

 private:
  class Impl;
  explicit CpuBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_BACKEND_CPU_CPU_BACKEND_H_
