// A thin cuBLASLt wrapper for the model's linear layers: C = A x W^T with BF16 operands and
// float32 accumulation, W in the checkpoint's nn.Linear layout [out_features][in_features].
//
// Each distinct problem (m, n, k, output type, beta) is planned once: its descriptors, layouts
// and the algorithm cuBLASLt's heuristic picks are kept, so the hot path is one cublasLtMatmul
// (decode asks the same few shapes every step; a CUDA graph may capture the call).
//
// Batch-invariant mode (Create's `batch_invariant`): the algorithm for (n, k, output type) is
// chosen once, for a representative row count, among algorithms without split-K reduction, and
// reused for every m. Each output element is then one dot product over k in the kernel's own
// fixed order whatever the number of rows, so a row's result does not depend on what else is in
// the batch (the property the engine's deterministic mode needs). It can be slower than the
// per-shape choice, most for single-row decode.
#ifndef VG_ENGINE_BACKEND_CUDA_KERNELS_GEMM_H_
#define VG_ENGINE_BACKEND_CUDA_KERNELS_GEMM_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>

namespace vg::engine::cuda {

// Owns a cuBLASLt handle, a device workspace and the plans. Not thread-safe: one owner (the
// backend's thread) issues all calls; distinct instances may be used concurrently on distinct
// streams.
class LtGemm {
 public:
  // Creates the handle and a workspace of workspace_bytes on the current device. On failure
  // returns nullptr and sets *error (if non-null) to a message.
  static std::unique_ptr<LtGemm> Create(size_t workspace_bytes = 32u << 20,
                                        bool batch_invariant = false, std::string* error = nullptr);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  enum class OutType { kFloat32, kBf16 };

  // Row-major C[m][n] = A[m][k] x W[n][k]^T (+ beta * C when beta != 0, float32 out only).
  // a: BF16 bits [m][k]; w: BF16 bits [n][k]; c: float32 or BF16 [m][n] per out_type.
  // Enqueued on stream. Returns false (and a message in *error) when cuBLASLt rejects the
  // problem or has no algorithm for it. Planning a new shape calls no CUDA stream function, so
  // it may happen while the stream is being captured into a graph.
  bool Matmul(const uint16_t* a, const uint16_t* w, void* c, OutType out_type, int m, int n, int k,
              float beta, cudaStream_t stream, std::string* error = nullptr);

  bool batch_invariant() const { return batch_invariant_; }

 private:
  struct Plan;
  using Key = std::tuple<int, int, int, int, bool>;  // m, n, k, output type, beta != 0

  LtGemm() = default;
  // The plan for a shape, made on first use; nullptr (and *error) when cuBLASLt refuses it.
  Plan* FindPlan(int m, int n, int k, OutType out_type, bool with_beta, std::string* error);

  void* handle_ = nullptr;  // cublasLtHandle_t
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  bool batch_invariant_ = false;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace vg::engine::cuda

#endif  // VG_ENGINE_BACKEND_CUDA_KERNELS_GEMM_H_
