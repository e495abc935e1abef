// Gram Newton-Schulz on CUDA (gram_newton_schulz.cuh). The layout is the standard iteration's
// (cuda_backend.cu, "Newton-Schulz without transposes"): X is s x l, read column-major from the
// row-major buffer (tall: X with ld s; wide: X^T with ld l); every s x s matrix is symmetric, so
// its layout is the same either way.
#include "kernels/cuda/gram_newton_schulz.cuh"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "base/status_macros.h"
#include "kernels/backend.h"
#include "kernels/cuda/cublas_util.cuh"
#include "kernels/cuda/kernels.cuh"
#include "kernels/ns_method.h"

namespace normuon {
namespace gpu {

absl::Status GramNewtonSchulz(const NsBatch& b, const GramWorkspace& w) {
  const bool tall = b.rows > b.cols;
  const int s = static_cast<int>(std::min(b.rows, b.cols));
  const int l = static_cast<int>(std::max(b.rows, b.cols));
  const int count = static_cast<int>(b.count);
  const long long xs = static_cast<long long>(b.rows) * b.cols;  // X stride
  const long long ss = static_cast<long long>(s) * s;            // square stride
  const size_t elem = SizeOf(b.dtype);
  const size_t x_bytes = static_cast<size_t>(count) * xs * elem;
  const size_t sq_bytes = static_cast<size_t>(count) * ss * elem;
  const cudaDataType type = CudaType(b.dtype);
  cudaStream_t stream = w.stream;
  auto gram_of = [&](const void* x, void* r) {  // R = X X^T
    return tall ? BatchedGemm(w.cublas, CUBLAS_OP_N, CUBLAS_OP_T, s, s, l, 1.0f, x, s, xs, x, s,
                              xs, 0.0f, r, s, ss, count, type)
                : BatchedGemm(w.cublas, CUBLAS_OP_T, CUBLAS_OP_N, s, s, l, 1.0f, x, l, xs, x, l,
                              xs, 0.0f, r, s, ss, count, type);
  };
  auto apply_q = [&](const void* q, const void* x, void* out) {  // out = Q X
    return tall ? BatchedGemm(w.cublas, CUBLAS_OP_N, CUBLAS_OP_N, s, l, s, 1.0f, q, s, ss, x, s,
                              xs, 0.0f, out, s, xs, count, type)
                : BatchedGemm(w.cublas, CUBLAS_OP_N, CUBLAS_OP_N, l, s, s, 1.0f, x, l, xs, q, s,
                              ss, 0.0f, out, l, xs, count, type);
  };
  // c = a_ * b_ + beta * c0 for s x s batches (c0 copied into c first).
  auto square = [&](const void* a_, const void* b_, float alpha, float beta, const void* c0,
                    void* c) -> absl::Status {
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(c, c0, sq_bytes, cudaMemcpyDeviceToDevice, stream));
    return BatchedGemm(w.cublas, CUBLAS_OP_N, CUBLAS_OP_N, s, s, s, alpha, a_, s, ss, b_, s, ss,
                       beta, c, s, ss, count, type);
  };
  void* x = w.x;  // X0 here; restarts ping-pong it with b.o
  void* x_next = b.o;
  void *r = w.r, *z = w.z, *q = w.q, *qn = w.qn, *rz = w.rz;
  RETURN_IF_CUDA_ERROR(LaunchNormalize(b.u, x, b.dtype, xs, b.count, b.ns_eps, b.ns_norm_scale,
                                       w.partials, stream));
  NORMUON_RETURN_IF_ERROR(gram_of(x, r));
  const size_t iterations = b.coefficients.size();
  size_t next_restart = 0;
  auto restarts_before = [&](size_t i) {
    return next_restart < b.restarts.size() && static_cast<size_t>(b.restarts[next_restart]) == i;
  };
  bool q_identity = true;
  for (size_t i = 0; i < iterations; ++i) {
    if (restarts_before(i)) {
      ++next_restart;
      if (!q_identity) {
        NORMUON_RETURN_IF_ERROR(apply_q(q, x, x_next));
        std::swap(x, x_next);
        NORMUON_RETURN_IF_ERROR(gram_of(x, r));
        q_identity = true;
      }
    }
    const float ca = b.coefficients[i][0], cb = b.coefficients[i][1], cc = b.coefficients[i][2];
    NORMUON_RETURN_IF_ERROR(square(r, r, cc, cb, r, z));  // Z' = c R R + b R
    if (q_identity) {                                     // Q = Z' + a I
      RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(q, z, sq_bytes, cudaMemcpyDeviceToDevice, stream));
      RETURN_IF_CUDA_ERROR(LaunchAddDiagonal(q, b.dtype, s, b.count, ca, stream));
      q_identity = false;
    } else {  // Q = Q Z' + a Q
      NORMUON_RETURN_IF_ERROR(square(q, z, 1.0f, ca, q, qn));
      std::swap(q, qn);
    }
    if (i + 1 < iterations && !restarts_before(i + 1)) {
      NORMUON_RETURN_IF_ERROR(square(r, z, 1.0f, ca, r, rz));   // R Z' + a R
      NORMUON_RETURN_IF_ERROR(square(z, rz, 1.0f, ca, rz, r));  // Z' (R Z') + a (R Z')
    }
  }
  if (x == b.o) {  // the output goes to b.o: move X out of the way first
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(w.x, x, x_bytes, cudaMemcpyDeviceToDevice, stream));
    x = w.x;
  }
  NORMUON_RETURN_IF_ERROR(apply_q(q, x, b.o));
  if (b.control != nullptr) {
    const double bound = NsOutputNormBound(b.coefficients, b.ns_norm_scale, s);
    RETURN_IF_CUDA_ERROR(LaunchGramCheck(b.o, b.dtype, xs, b.count, bound * bound, w.params,
                                         b.control, stream));
  }
  return absl::OkStatus();
}

}  // namespace gpu
}  // namespace normuon
