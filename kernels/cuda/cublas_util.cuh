// Status helpers and the batched cuBLAS GEMM shared by the CUDA backend's files (cuda_backend.cu,
// gram_newton_schulz.cu). Host code only.
#ifndef NORMUON_CUDA_CUBLAS_UTIL_CUH_
#define NORMUON_CUDA_CUBLAS_UTIL_CUH_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"
#include "kernels/backend.h"

namespace normuon {
namespace gpu {

inline absl::Status CudaStatus(cudaError_t e, absl::string_view call) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(call, " failed: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e)));
}

inline absl::Status CublasStatus(cublasStatus_t s, absl::string_view call) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: ", cublasGetStatusString(s)));
}

#define RETURN_IF_CUDA_ERROR(call) NORMUON_RETURN_IF_ERROR(::normuon::gpu::CudaStatus((call), #call))
#define RETURN_IF_CUBLAS_ERROR(call) \
  NORMUON_RETURN_IF_ERROR(::normuon::gpu::CublasStatus((call), #call))

// The cuBLAS element type of a Newton-Schulz dtype.
inline cudaDataType CudaType(DType d) {
  switch (d) {
    case DType::kF32: return CUDA_R_32F;
    case DType::kF16: return CUDA_R_16F;
    default: return CUDA_R_16BF;
  }
}

// C = alpha op(A) op(B) + beta C for `batch` column-major matrices of `type`, fp32 compute (no
// TF32: the handle's math mode), host alpha/beta.
inline absl::Status BatchedGemm(cublasHandle_t handle, cublasOperation_t op_a,
                                cublasOperation_t op_b, int m, int n, int k, float alpha,
                                const void* a, int lda, long long stride_a, const void* b, int ldb,
                                long long stride_b, float beta, void* c, int ldc,
                                long long stride_c, int batch, cudaDataType type) {
  RETURN_IF_CUBLAS_ERROR(cublasGemmStridedBatchedEx(
      handle, op_a, op_b, m, n, k, &alpha, a, type, lda, stride_a, b, type, ldb, stride_b, &beta,
      c, type, ldc, stride_c, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

}  // namespace gpu
}  // namespace normuon

#endif  // NORMUON_CUDA_CUBLAS_UTIL_CUH_
