// Gram Newton-Schulz on CUDA (gram_newton_schulz.cuh). The layout is the standard iteration's
// (cuda_backend.cu, "Newton-Schulz without transposes"): X is s x l, read column-major from the
// row-major buffer (tall: X with ld s; wide: X^T with ld l); every s x s matrix is symmetric, so
// its layout is the same either way.
//
// Symmetric products (b.symmetric = kTiles): every product that is symmetric in exact arithmetic
// (all but Q X) runs as one cublasGemmGroupedBatchedEx over its lower-triangle tile pairs
// (kernels/symmetric_plan.h; the plan's offsets are on the device since Prepare): a small kernel
// turns the offsets and the product's base pointers into the pointer arrays, the grouped GEMM
// computes the tiles, a mirror kernel copies the lower triangle to the upper one. Graph-safe: no
// allocation, no host sync. Built; not yet measured or run on a GPU.
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
namespace {

constexpr int kThreads = 256;
constexpr int kMirrorTile = 32;

// pointers[i] = base[i / total] + offsets[i] * elem for i < 3 * total: the A, B and C pointer
// arrays of a grouped GEMM.
__global__ void FillPointersKernel(const int64_t* offsets, int64_t total, const char* a,
                                   const char* b, char* c, int64_t elem, void** pointers) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < 3 * total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t which = i / total;
    const char* base = which == 0 ? a : which == 1 ? b : c;
    pointers[i] = const_cast<char*>(base) + offsets[i] * elem;
  }
}

// Copies the strict lower triangle of `count` column-major n x n matrices (ld n) to the upper
// one, in 32 x 32 tiles through shared memory so that reads and writes are both coalesced. Block
// (bc, br, k) writes the upper tile (rows br*32.., columns bc*32..) of matrix k from the lower
// tile (rows bc*32.., columns br*32..); blocks below the diagonal do nothing. A diagonal tile
// reads its lower elements and writes its upper ones, after a barrier.
template <typename T>
__global__ void MirrorKernel(T* c, int64_t n, int64_t count) {
  __shared__ T tile[kMirrorTile][kMirrorTile + 1];
  const int64_t br = blockIdx.y, bc = blockIdx.x;
  if (bc < br) return;
  for (int64_t k = blockIdx.z; k < count; k += gridDim.z) {
    T* m = c + k * n * n;
    for (int ty = threadIdx.y; ty < kMirrorTile; ty += blockDim.y) {
      const int64_t row = bc * kMirrorTile + threadIdx.x, col = br * kMirrorTile + ty;
      if (row < n && col < n) tile[ty][threadIdx.x] = m[row + col * n];
    }
    __syncthreads();
    for (int ty = threadIdx.y; ty < kMirrorTile; ty += blockDim.y) {
      const int64_t row = br * kMirrorTile + threadIdx.x, col = bc * kMirrorTile + ty;
      if (row < col && col < n) m[row + col * n] = tile[threadIdx.x][ty];
    }
    __syncthreads();  // tile[] is reused by the next matrix
  }
}

cudaError_t LaunchMirror(void* c, size_t elem, int64_t n, int64_t count, cudaStream_t stream) {
  if (n <= 1 || count <= 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((n + kMirrorTile - 1) / kMirrorTile);
  const dim3 grid(blocks, blocks, static_cast<unsigned>(std::min<int64_t>(count, 65535)));
  const dim3 block(kMirrorTile, kThreads / kMirrorTile);
  // A pure copy: the element's bits are moved as an integer of its size.
  if (elem == 4) {
    MirrorKernel<uint32_t><<<grid, block, 0, stream>>>(static_cast<uint32_t*>(c), n, count);
  } else {
    MirrorKernel<uint16_t><<<grid, block, 0, stream>>>(static_cast<uint16_t*>(c), n, count);
  }
  return cudaGetLastError();
}

// C = alpha op(A) op(B) + beta C over the plan's lower-triangle tiles, then the mirror.
absl::Status TileProduct(const GramWorkspace& w, const DevicePlan& p, DType dtype, float alpha,
                         const void* a, const void* b, float beta, void* c) {
  const int64_t elem = static_cast<int64_t>(SizeOf(dtype));
  const unsigned blocks =
      static_cast<unsigned>(std::min<int64_t>(1024, (3 * p.total + kThreads - 1) / kThreads));
  FillPointersKernel<<<std::max(1u, blocks), kThreads, 0, w.stream>>>(
      p.offsets, p.total, static_cast<const char*>(a), static_cast<const char*>(b),
      static_cast<char*>(c), elem, w.pointers);
  RETURN_IF_CUDA_ERROR(cudaGetLastError());
  std::array<float, 3> alphas{alpha, alpha, alpha}, betas{beta, beta, beta};
  const cudaDataType type = CudaType(dtype);
  RETURN_IF_CUBLAS_ERROR(cublasGemmGroupedBatchedEx(
      w.cublas, p.op_a.data(), p.op_b.data(), p.m.data(), p.n.data(), p.k.data(), alphas.data(),
      const_cast<const void* const*>(w.pointers), type, p.lda.data(),
      const_cast<const void* const*>(w.pointers + p.total), type, p.ldb.data(), betas.data(),
      w.pointers + 2 * p.total, type, p.ldc.data(), p.groups, p.size.data(), CUBLAS_COMPUTE_32F));
  RETURN_IF_CUDA_ERROR(LaunchMirror(c, static_cast<size_t>(elem), p.side, p.count, w.stream));
  return absl::OkStatus();
}

}  // namespace

std::vector<int64_t> OffsetsOf(const SymmetricPlan& plan) {
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(3 * plan.gemms()));
  for (const TileGroup& g : plan.groups) out.insert(out.end(), g.a.begin(), g.a.end());
  for (const TileGroup& g : plan.groups) out.insert(out.end(), g.b.begin(), g.b.end());
  for (const TileGroup& g : plan.groups) out.insert(out.end(), g.c.begin(), g.c.end());
  return out;
}

DevicePlan DescribePlan(const SymmetricPlan& plan, const int64_t* device_offsets) {
  DevicePlan d;
  d.total = plan.gemms();
  d.offsets = device_offsets;
  d.groups = static_cast<int>(plan.groups.size());
  const SymmetricProduct& p = plan.product;
  for (int i = 0; i < d.groups; ++i) {
    const TileGroup& g = plan.groups[static_cast<size_t>(i)];
    d.op_a[i] = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    d.op_b[i] = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    d.m[i] = static_cast<int>(g.m);
    d.n[i] = static_cast<int>(g.n);
    d.k[i] = static_cast<int>(p.k);
    d.lda[i] = static_cast<int>(p.lda);
    d.ldb[i] = static_cast<int>(p.ldb);
    d.ldc[i] = static_cast<int>(p.ldc);
    d.size[i] = static_cast<int>(g.c.size());
  }
  d.side = p.n;
  d.count = p.count;
  return d;
}

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
  const bool tiles = w.gram_tiles != nullptr && w.square_tiles != nullptr && w.pointers != nullptr;
  auto gram_of = [&](const void* x, void* r) {  // R = X X^T
    if (tiles) return TileProduct(w, *w.gram_tiles, b.dtype, 1.0f, x, x, 0.0f, r);
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
    if (tiles) return TileProduct(w, *w.square_tiles, b.dtype, alpha, a_, b_, beta, c);
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
