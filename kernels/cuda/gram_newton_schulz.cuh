// Gram Newton-Schulz on CUDA (kernels/ns_method.h; docs/ARCHITECTURE.md section 1, "Gram
// Newton-Schulz"): the iteration on the s x s Gram matrix of a batch of same-shape matrices,
// batched cuBLAS GEMMs in the batch's dtype with fp32 compute, then the divergence check. Called
// by the CUDA backend (cuda_backend.cu) with its handle, stream and workspaces; queues work only
// (no allocation, no host sync), so it can be captured in a CUDA graph.
#ifndef NORMUON_CUDA_GRAM_NEWTON_SCHULZ_CUH_
#define NORMUON_CUDA_GRAM_NEWTON_SCHULZ_CUH_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/backend.h"

namespace normuon {
namespace gpu {

// What one Gram batch runs on. The workspaces are sized by the backend's Prepare: x holds one
// copy of the batch's X; r, z, q, qn and rz one s x s matrix per batch matrix each (r and z are
// the standard iteration's A and B buffers); partials the norm's partial sums.
struct GramWorkspace {
  cublasHandle_t cublas = nullptr;  // bound to `stream`, with its fixed workspace
  cudaStream_t stream = nullptr;
  void* x = nullptr;
  void* r = nullptr;
  void* z = nullptr;
  void* q = nullptr;
  void* qn = nullptr;
  void* rz = nullptr;
  double* partials = nullptr;
  const int32_t* params = nullptr;  // the batch's parameter indices on the device (b.count)
};

// Orthogonalizes b.u into b.o with the Gram iteration (b.method = kGram, UsesGram true). A
// diverged matrix skips the step on every rank (its parameter goes to nonfinite_param, folded
// across ranks by the step's all-reduce) and is reported in the ns_fallback fields. A device-side
// redo with the standard iteration would need a host sync or running both; the CPU backend
// redoes it instead.
absl::Status GramNewtonSchulz(const NsBatch& b, const GramWorkspace& w);

}  // namespace gpu
}  // namespace normuon

#endif  // NORMUON_CUDA_GRAM_NEWTON_SCHULZ_CUH_
