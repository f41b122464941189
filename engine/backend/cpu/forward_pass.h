// ForwardPass: the VaultGemma forward over a paged KV cache, from a config and a weight table.
//
// The machinery behind CpuBackend, separated from Checkpoint so that it depends only on plain
// data (ModelConfig + ModelWeights views). It owns the thread pool, the KV cache and the scratch
// buffers (sized per Forward, reused across calls). Matrices are read in their stored dtype and in
// the tile layout (matrix_layout.h): views already tiled (a Checkpoint opened with
// MatrixLayout::kTiles) are used where they are; row-major ones are copied into tiles the pass
// owns (small models in tests; a real server opens its checkpoint tiled, so nothing is copied).
// Norm weights and biases (vectors) are widened into scratch per call.
//
// Thread-safety: none; one caller.
#ifndef VG_ENGINE_BACKEND_CPU_FORWARD_PASS_H_
#define VG_ENGINE_BACKEND_CPU_FORWARD_PASS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/batch_plan.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/kv_cache.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/model/checkpoint.h"
#include "engine/model/config.h"

namespace vg::engine::cpu {

class ForwardPass {
 public:
  // Copies `config` and the views in `weights`; the memory the views point into must outlive the
  // ForwardPass. INVALID_ARGUMENT
  // for bad options, an inconsistent config or a weight whose shape disagrees with it;
  // RESOURCE_EXHAUSTED when the KV cache cannot be allocated.
  static absl::StatusOr<std::unique_ptr<ForwardPass>> Create(const ModelConfig& config,
                                                             const ModelWeights& weights,
                                                             const CpuBackendOptions& options);

  // See Backend::Forward.
  absl::Status Forward(const BatchPlan& plan, Logits* logits);

  int32_t num_blocks() const { return cache_->shape().num_blocks; }
  int32_t block_size() const { return cache_->shape().block_size; }
  int64_t vocab_size() const { return config_.vocab_size; }
  size_t KvCacheBytes() const { return cache_->bytes(); }
  int num_threads() const { return pool_.num_threads(); }

 private:
  struct Layer {
    const TensorView* input_norm;
    const TensorView* ffw_norm;
    WeightMatrix q, k, v, o, gate, up, down;
    const TensorView* q_bias = nullptr;
    const TensorView* k_bias = nullptr;
    const TensorView* v_bias = nullptr;
    const TensorView* o_bias = nullptr;
    int64_t window = 0;  // sliding window; 0 for full attention
  };
  // One new token of the plan.
  struct Row {
    int32_t entry;
    int32_t token;
    int64_t position;
  };

  ForwardPass(const ModelConfig& config, const ModelWeights& weights, int num_threads);

  void Embed();
  void RunLayer(int64_t index, const BatchPlan& plan);
  void Attend(int64_t index, const BatchPlan& plan);
  void ComputeLogits(const BatchPlan& plan, Logits* logits);
  // Widens a vector weight (norm or bias) into `dst`; returns dst.data(), or nullptr for none.
  const float* WidenVector(const TensorView* view, std::vector<float>& dst);

  const ModelConfig config_;
  const ModelWeights weights_;  // views; the tensor memory is not owned
  ThreadPool pool_;
  std::unique_ptr<KvCache> cache_;
  std::vector<Layer> layers_;
  // A tile-layout WeightMatrix for `view` (checked against [rows, cols]), copied into owned_
  // when the view is row-major.
  absl::StatusOr<WeightMatrix> Matrix(const TensorView& view, int64_t rows, int64_t cols);

  WeightMatrix lm_head_;
  WeightMatrix embed_;  // rows read by ReadRow in embed_layout_
  MatrixLayout embed_layout_ = MatrixLayout::kRowMajor;
  std::vector<std::unique_ptr<std::byte[]>> owned_;  // matrices rearranged by the pass itself
  std::vector<const std::byte*> owned_sources_;      // the view each of owned_ was copied from
  std::vector<float> inv_freq_;
  float scaling_ = 1.0f;
  float attn_softcap_ = 0.0f;

  // Per-Forward state and scratch (capacity reused across calls).
  std::vector<Row> rows_;
  std::vector<int64_t> row_groups_;  // Attend's groups of rows: [row_groups_[g], row_groups_[g+1])
  std::vector<float> hidden_, normed_, q_, k_, v_, attn_, proj_, gate_, up_;
  std::vector<float> rope_cos_, rope_sin_;
  std::vector<float> norm_weight_, q_bias_, k_bias_, v_bias_, o_bias_;
};

}  // namespace vg::engine::cpu

#endif  // VG_ENGINE_BACKEND_CPU_FORWARD_PASS_H_
