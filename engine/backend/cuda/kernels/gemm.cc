// cuBLASLt is column-major. A row-major [rows][cols] matrix is a column-major [cols][rows] one,
// so row-major C = A W^T is column-major C^T (n x m) = W (n x k) A^T (k x m): cuBLASLt's "A" is
// our W (stored k x n col-major, op T) and its "B" is our A (k x m col-major, op N).
#include "engine/backend/cuda/kernels/gemm.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <utility>

namespace vg::engine::cuda {
namespace {

bool Fail(std::string* error, const std::string& what, int code) {
  if (error != nullptr) *error = what + " failed with status " + std::to_string(code);
  return false;
}

// The row count a batch-invariant algorithm is chosen for: a mid-sized decode batch.
constexpr int kInvariantRows = 64;

}  // namespace

struct LtGemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w_layout = nullptr, a_layout = nullptr, c_layout = nullptr;
  cublasLtMatmulAlgo_t algo = {};

  ~Plan() {
    if (c_layout != nullptr) cublasLtMatrixLayoutDestroy(c_layout);
    if (a_layout != nullptr) cublasLtMatrixLayoutDestroy(a_layout);
    if (w_layout != nullptr) cublasLtMatrixLayoutDestroy(w_layout);
    if (op != nullptr) cublasLtMatmulDescDestroy(op);
  }

  // Descriptors for C[m][n] = A[m][k] W[n][k]^T; false (and *error) on failure.
  bool Describe(int m, int n, int k, cudaDataType_t c_type, std::string* error) {
    cublasStatus_t st = cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st != CUBLAS_STATUS_SUCCESS) return Fail(error, "cublasLtMatmulDescCreate", st);
    const cublasOperation_t trans = CUBLAS_OP_T, no_trans = CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof(trans));
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &no_trans, sizeof(no_trans));
    if ((st = cublasLtMatrixLayoutCreate(&w_layout, CUDA_R_16BF, k, n, k)) != 0 ||
        (st = cublasLtMatrixLayoutCreate(&a_layout, CUDA_R_16BF, k, m, k)) != 0 ||
        (st = cublasLtMatrixLayoutCreate(&c_layout, c_type, n, m, n)) != 0) {
      return Fail(error, "cublasLtMatrixLayoutCreate", st);
    }
    return true;
  }
};

std::unique_ptr<LtGemm> LtGemm::Create(size_t workspace_bytes, bool batch_invariant,
                                       std::string* error) {
  std::unique_ptr<LtGemm> gemm(new LtGemm());
  gemm->batch_invariant_ = batch_invariant;
  cublasLtHandle_t handle = nullptr;
  const cublasStatus_t status = cublasLtCreate(&handle);
  if (status != CUBLAS_STATUS_SUCCESS) {
    Fail(error, "cublasLtCreate", status);
    return nullptr;
  }
  gemm->handle_ = handle;
  if (workspace_bytes > 0) {
    const cudaError_t err = cudaMalloc(&gemm->workspace_, workspace_bytes);
    if (err != cudaSuccess) {
      if (error != nullptr)
        *error = std::string("cudaMalloc workspace: ") + cudaGetErrorString(err);
      return nullptr;  // the destructor releases the handle
    }
    gemm->workspace_bytes_ = workspace_bytes;
  }
  return gemm;
}

LtGemm::~LtGemm() {
  plans_.clear();
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (handle_ != nullptr) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

LtGemm::Plan* LtGemm::FindPlan(int m, int n, int k, OutType out_type, bool with_beta,
                               std::string* error) {
  const Key key{m, n, k, static_cast<int>(out_type), with_beta};
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  const cudaDataType_t c_type = out_type == OutType::kFloat32 ? CUDA_R_32F : CUDA_R_16BF;
  auto handle = static_cast<cublasLtHandle_t>(handle_);
  auto plan = std::make_unique<Plan>();
  if (!plan->Describe(m, n, k, c_type, error)) return nullptr;

  cublasLtMatmulPreference_t pref = nullptr;
  cublasStatus_t st = cublasLtMatmulPreferenceCreate(&pref);
  if (st != CUBLAS_STATUS_SUCCESS) {
    Fail(error, "cublasLtMatmulPreferenceCreate", st);
    return nullptr;
  }
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                       &workspace_bytes_, sizeof(workspace_bytes_));
  if (batch_invariant_) {
    // No split-K: a reduction split across blocks sums in an order that depends on the shape.
    const uint32_t none = CUBLASLT_REDUCTION_SCHEME_NONE;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &none,
                                         sizeof(none));
  }
  cublasLtMatmulHeuristicResult_t heuristic = {};
  int found = 0;
  if (!batch_invariant_ || m == kInvariantRows) {
    st =
        cublasLtMatmulAlgoGetHeuristic(handle, plan->op, plan->w_layout, plan->a_layout,
                                       plan->c_layout, plan->c_layout, pref, 1, &heuristic, &found);
  } else {
    // The algorithm chosen for the representative row count, checked against this m.
    Plan* reference = FindPlan(kInvariantRows, n, k, out_type, with_beta, error);
    if (reference == nullptr) {
      cublasLtMatmulPreferenceDestroy(pref);
      return nullptr;
    }
    st = cublasLtMatmulAlgoCheck(handle, plan->op, plan->w_layout, plan->a_layout, plan->c_layout,
                                 plan->c_layout, &reference->algo, &heuristic);
    if (st == CUBLAS_STATUS_SUCCESS) {
      heuristic.algo = reference->algo;
      found = 1;
    }
  }
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    Fail(error,
         batch_invariant_ && m != kInvariantRows
             ? "cublasLtMatmulAlgoCheck (batch-invariant algorithm for m=" + std::to_string(m) + ")"
             : "cublasLtMatmulAlgoGetHeuristic",
         st);
    return nullptr;
  }
  if (batch_invariant_) {
    int32_t split_k = 1;
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&heuristic.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
                                             &split_k, sizeof(split_k),
                                             &written) == CUBLAS_STATUS_SUCCESS &&
        split_k > 1) {
      Fail(error, "batch-invariant GEMM: cuBLASLt offered only a split-K algorithm", -1);
      return nullptr;
    }
  }
  plan->algo = heuristic.algo;
  Plan* raw = plan.get();
  plans_.emplace(key, std::move(plan));
  return raw;
}

bool LtGemm::Matmul(const uint16_t* a, const uint16_t* w, void* c, OutType out_type, int m, int n,
                    int k, float beta, cudaStream_t stream, std::string* error) {
  if (m <= 0 || n <= 0 || k <= 0) return true;
  if (out_type == OutType::kBf16 && beta != 0.f) return Fail(error, "beta with BF16 output", -1);
  Plan* plan = FindPlan(m, n, k, out_type, beta != 0.f, error);
  if (plan == nullptr) return false;
  const float alpha = 1.f;
  const cublasStatus_t st =
      cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), plan->op, &alpha, w, plan->w_layout, a,
                     plan->a_layout, &beta, c, plan->c_layout, c, plan->c_layout, &plan->algo,
                     workspace_, workspace_bytes_, stream);
  if (st != CUBLAS_STATUS_SUCCESS) return Fail(error, "cublasLtMatmul", st);
  return true;
}

}  // namespace vg::engine::cuda
