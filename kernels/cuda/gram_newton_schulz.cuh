// Gram Newton-Schulz on CUDA (kernels/ns_method.h; docs/ARCHITECTURE.md section 1, "Gram
// Newton-Schulz"): the iteration on the s x s Gram matrix of a batch of same-shape matrices,
// batched cuBLAS GEMMs in the batch's dtype with fp32 compute, then the divergence check. Called
// by the CUDA backend (cuda_backend.cu) with its handle, stream and workspaces; queues work only
// (no allocation, no host sync), so it can be captured in a CUDA graph.
#ifndef NORMUON_CUDA_GRAM_NEWTON_SCHULZ_CUH_
#define NORMUON_CUDA_GRAM_NEWTON_SCHULZ_CUH_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/symmetric_plan.h"

namespace normuon {
namespace gpu {

// A symmetric-product plan (kernels/symmetric_plan.h) ready to run as one
// cublasGemmGroupedBatchedEx call: the tile offsets on the device, the per-group arguments on the
// host. Built by the backend's Prepare (DescribePlan), so a step allocates nothing.
struct DevicePlan {
  int64_t total = 0;                 // GEMMs over all groups
  const int64_t* offsets = nullptr;  // device: a[total], b[total], c[total] (elements), in group order
  int groups = 0;
  std::array<cublasOperation_t, 3> op_a{}, op_b{};
  std::array<int, 3> m{}, n{}, k{}, lda{}, ldb{}, ldc{}, size{};
  int64_t side = 0, count = 0;  // C: `count` side x side matrices, ld side, stride side*side
};

// The host half of `plan`, pointing at its offsets already on the device (3 * plan.gemms()
// int64 values laid out as OffsetsOf gives them).
DevicePlan DescribePlan(const SymmetricPlan& plan, const int64_t* device_offsets);
// The offsets of `plan` in DevicePlan's layout, to upload.
std::vector<int64_t> OffsetsOf(const SymmetricPlan& plan);

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
  // b.symmetric = kTiles: the batch's plans for R = X X^T and for the s x s products, and a
  // device array of 3 * max(total) pointers (filled before each grouped GEMM, in stream order).
  const DevicePlan* gram_tiles = nullptr;
  const DevicePlan* square_tiles = nullptr;
  void** pointers = nullptr;
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
