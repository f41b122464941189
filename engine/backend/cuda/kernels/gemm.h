// A thin cuBLASLt wrapper for the model's linear layers: C = A x W^T with BF16 operands and
// float32 accumulation, W in the checkpoint's nn.Linear layout [out_features][in_features].
#ifndef VG_ENGINE_BACKEND_CUDA_KERNELS_GEMM_H_
#define VG_ENGINE_BACKEND_CUDA_KERNELS_GEMM_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace vg::engine::cuda {

// Owns a cuBLASLt handle and a device workspace. Not thread-safe: one owner (the backend's
// thread) issues all calls; distinct instances may be used concurrently on distinct streams.
class LtGemm {
 public:
  // Creates the handle and a workspace of workspace_bytes on the current device. On failure
  // returns nullptr and sets *error (if non-null) to a message.
  static std::unique_ptr<LtGemm> Create(size_t workspace_bytes = 32u << 20,
                                        std::string* error = nullptr);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  enum class OutType { kFloat32, kBf16 };

  // Row-major C[m][n] = A[m][k] x W[n][k]^T (+ beta * C when beta != 0, float32 out only).
  // a: BF16 bits [m][k]; w: BF16 bits [n][k]; c: float32 or BF16 [m][n] per out_type.
  // Enqueued on stream. Returns false (and a message in *error) when cuBLASLt rejects the
  // problem or has no algorithm for it.
  bool Matmul(const uint16_t* a, const uint16_t* w, void* c, OutType out_type, int m, int n, int k,
              float beta, cudaStream_t stream, std::string* error = nullptr);

 private:
  LtGemm() = default;
  void* handle_ = nullptr;  // cublasLtHandle_t
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

}  // namespace vg::engine::cuda

#endif  // VG_ENGINE_BACKEND_CUDA_KERNELS_GEMM_H_
