// cuBLASLt is column-major. A row-major [rows][cols] matrix is a column-major [cols][rows] one,
// so row-major C = A W^T is column-major C^T (n x m) = W (n x k) A^T (k x m): cuBLASLt's "A" is
// our W (stored k x n col-major, op T) and its "B" is our A (k x m col-major, op N).
#include "engine/backend/cuda/kernels/gemm.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

namespace vg::engine::cuda {
namespace {

bool Fail(std::string* error, const std::string& what, int code) {
  if (error != nullptr) *error = what + " failed with status " + std::to_string(code);
  return false;
}

}  // namespace

std::unique_ptr<LtGemm> LtGemm::Create(size_t workspace_bytes, std::string* error) {
  std::unique_ptr<LtGemm> gemm(new LtGemm());
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
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (handle_ != nullptr) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

bool LtGemm::Matmul(const uint16_t* a, const uint16_t* w, void* c, OutType out_type, int m, int n,
                    int k, float beta, cudaStream_t stream, std::string* error) {
  if (m <= 0 || n <= 0 || k <= 0) return true;
  if (out_type == OutType::kBf16 && beta != 0.f) return Fail(error, "beta with BF16 output", -1);
  const cudaDataType_t c_type = out_type == OutType::kFloat32 ? CUDA_R_32F : CUDA_R_16BF;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w_layout = nullptr, a_layout = nullptr, c_layout = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  bool ok = false;
  cublasStatus_t st;
  do {
    if ((st = cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F)) != 0) {
      Fail(error, "cublasLtMatmulDescCreate", st);
      break;
    }
    const cublasOperation_t trans = CUBLAS_OP_T, no_trans = CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof(trans));
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &no_trans, sizeof(no_trans));
    if ((st = cublasLtMatrixLayoutCreate(&w_layout, CUDA_R_16BF, k, n, k)) != 0 ||
        (st = cublasLtMatrixLayoutCreate(&a_layout, CUDA_R_16BF, k, m, k)) != 0 ||
        (st = cublasLtMatrixLayoutCreate(&c_layout, c_type, n, m, n)) != 0) {
      Fail(error, "cublasLtMatrixLayoutCreate", st);
      break;
    }
    if ((st = cublasLtMatmulPreferenceCreate(&pref)) != 0) {
      Fail(error, "cublasLtMatmulPreferenceCreate", st);
      break;
    }
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                         &workspace_bytes_, sizeof(workspace_bytes_));
    cublasLtMatmulHeuristicResult_t heuristic = {};
    int found = 0;
    st = cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(handle_), op, w_layout,
                                        a_layout, c_layout, c_layout, pref, 1, &heuristic, &found);
    if (st != 0 || found == 0) {
      Fail(error, "cublasLtMatmulAlgoGetHeuristic", st);
      break;
    }
    const float alpha = 1.f;
    st = cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), op, &alpha, w, w_layout, a,
                        a_layout, &beta, c, c_layout, c, c_layout, &heuristic.algo, workspace_,
                        workspace_bytes_, stream);
    if (st != 0) {
      Fail(error, "cublasLtMatmul", st);
      break;
    }
    ok = true;
  } while (false);
  if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
  if (c_layout != nullptr) cublasLtMatrixLayoutDestroy(c_layout);
  if (a_layout != nullptr) cublasLtMatrixLayoutDestroy(a_layout);
  if (w_layout != nullptr) cublasLtMatrixLayoutDestroy(w_layout);
  if (op != nullptr) cublasLtMatmulDescDestroy(op);
  return ok;
}

}  // namespace vg::engine::cuda
