// The kernels of the Newton-Schulz pre-scaling on CUDA: X0 = U / (||U||_F + ns_eps) for each
// matrix of a batch (docs/ARCHITECTURE.md section 1). The GEMMs of the iteration itself are cuBLAS calls
// issued by the backend (cuda_backend.cu).
//
// The Frobenius norm is a two-stage reduction without atomics: stage one writes a fixed number
// of partial sums per matrix (the number depends on the matrix size only), stage two sums them
// in a fixed order inside every block of the scaling pass. Both stages accumulate in double, as
// the CPU backend does, so the scale is reproducible bit for bit and matches the CPU's to the
// last float bit in almost every case.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/backend.h"
#include "kernels/cuda/kernels.cuh"
#include "kernels/elementwise_math.h"

namespace normuon {
namespace gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
// At most this many partial sums per matrix; each covers at least kElemsPerPartial elements.
constexpr int64_t kMaxPartials = 256;
constexpr int64_t kElemsPerPartial = kThreads * 16;
// Scaling pass: blocks per matrix at most (grid-stride beyond), and matrices per grid row.
constexpr int64_t kMaxScaleBlocks = 1024;
constexpr int64_t kMaxGridY = 65535;

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void StoreFloat(float* p, float x) { *p = x; }
__device__ __forceinline__ void StoreFloat(__nv_bfloat16* p, float x) {
  *p = __float2bfloat16_rn(x);
}
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ void StoreFloat(__half* p, float x) { *p = __float2half_rn(x); }

// Calls fn with a typed null pointer of the Newton-Schulz dtype d (fp32, bf16 or fp16).
template <typename Fn>
cudaError_t WithNsType(DType d, Fn&& fn) {
  if (d == DType::kF32) return fn(static_cast<float*>(nullptr));
  if (d == DType::kF16) return fn(static_cast<__half*>(nullptr));
  return fn(static_cast<__nv_bfloat16*>(nullptr));
}

// The block's sum of squares of m[first + j * stride] (j = 0, 1, ... below n), in double: each
// thread's strided share, then a fixed shared-memory tree. The result is in part[0]; every
// thread must call it (it synchronizes the block).
template <typename T>
__device__ void BlockSumOfSquares(const T* m, int64_t first, int64_t stride, int64_t n,
                                  double* part) {
  double sq = 0.0;
  for (int64_t i = first + threadIdx.x; i < n; i += stride) {
    const double x = ToFloat(m[i]);
    sq += x * x;
  }
  part[threadIdx.x] = sq;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
}

// Stage one: block (p, k) sums the squares of elements p*kThreads + t + q*(partials*kThreads)
// of matrix k, then a shared-memory tree; writes partials[k*num_partials + p].
template <typename T>
__global__ void NormPartialsKernel(const T* u, int64_t per_matrix, int64_t count,
                                   double* partials) {
  __shared__ double part[kThreads];
  const int64_t num_partials = gridDim.x;
  for (int64_t k = blockIdx.y; k < count; k += gridDim.y) {
    BlockSumOfSquares(u + k * per_matrix, blockIdx.x * static_cast<int64_t>(kThreads),
                      num_partials * kThreads, per_matrix, part);
    if (threadIdx.x == 0) partials[k * num_partials + blockIdx.x] = part[0];
    __syncthreads();  // part[] is reused by the next matrix
  }
}

// Stage two: every block first completes its matrix's norm from the partials (warp 0: lane l
// sums partials l, l+32, ..., then a fixed shuffle tree), then scales its share of the elements:
// x = u * NsInputScale (kernels/elementwise_math.h), the CPU backend's formula.
template <typename T, typename TX>
__global__ void ScaleKernel(const T* u, TX* x, int64_t per_matrix, int64_t count, int num_partials,
                            float eps, float norm_scale, const double* partials) {
  __shared__ float inv_norm;
  for (int64_t k = blockIdx.y; k < count; k += gridDim.y) {
    if (threadIdx.x < kWarp) {
      double sq = 0.0;
      for (int p = threadIdx.x; p < num_partials; p += kWarp) sq += partials[k * num_partials + p];
      for (int offset = kWarp / 2; offset > 0; offset /= 2) {
        sq += __shfl_down_sync(kFullMask, sq, offset);
      }
      if (threadIdx.x == 0) {
        inv_norm = NsInputScale(sq, norm_scale, eps);
      }
    }
    __syncthreads();
    const float inv = inv_norm;
    const T* src = u + k * per_matrix;
    TX* dst = x + k * per_matrix;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < per_matrix;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      StoreFloat(dst + i, ToFloat(src[i]) * inv);
    }
    __syncthreads();  // inv_norm is rewritten for the next matrix
  }
}

// U in T, X in TX (kernels/backend.h NsInputDType: bf16 U for fp16 X).
template <typename T, typename TX>
cudaError_t Normalize(const void* u, void* x, int64_t per_matrix, int64_t count, float eps,
                      float norm_scale, double* partials, cudaStream_t stream) {
  const int num_partials = NormPartialBlocks(per_matrix);
  const unsigned gy = static_cast<unsigned>(std::min(count, kMaxGridY));
  NormPartialsKernel<T><<<dim3(num_partials, gy), kThreads, 0, stream>>>(
      static_cast<const T*>(u), per_matrix, count, partials);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  const unsigned gx =
      static_cast<unsigned>(std::min(kMaxScaleBlocks, (per_matrix + kThreads - 1) / kThreads));
  ScaleKernel<T, TX><<<dim3(gx, gy), kThreads, 0, stream>>>(
      static_cast<const T*>(u), static_cast<TX*>(x), per_matrix, count, num_partials, eps,
      norm_scale, partials);
  return cudaGetLastError();
}

template <typename T>
__global__ void AddDiagonalKernel(T* q, int64_t s, int64_t count, float a) {
  const int64_t n = s * count;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = i / s, d = i % s;
    T* e = q + k * s * s + d * s + d;
    StoreFloat(e, ToFloat(*e) + a);
  }
}

// One block per matrix (grid-stride over matrices): the sum of squares in double, a fixed tree.
template <typename T>
__global__ void GramCheckKernel(const T* o, int64_t per_matrix, int64_t count, double bound_sq,
                                const int32_t* params, StepControl* control) {
  __shared__ double part[kThreads];
  for (int64_t k = blockIdx.x; k < count; k += gridDim.x) {
    BlockSumOfSquares(o + k * per_matrix, 0, kThreads, per_matrix, part);
    if (threadIdx.x == 0 && !(part[0] <= bound_sq)) {  // NaN compares false: also caught
      const int32_t p = params[k];
      atomicMin(&control->ns_fallback_param, p);
      atomicMin(&control->nonfinite_param, p);
      control->ns_fallback_reason = isfinite(part[0]) ? 2 : 1;
      atomicAdd(reinterpret_cast<unsigned long long*>(&control->ns_fallbacks), 1ull);
    }
    __syncthreads();  // part[] is reused by the next matrix
  }
}

}  // namespace

cudaError_t LaunchAddDiagonal(void* q, DType dtype, int64_t s, int64_t count, float a,
                              cudaStream_t stream) {
  if (s <= 0 || count <= 0) return cudaSuccess;
  const unsigned blocks =
      static_cast<unsigned>(std::min<int64_t>(kMaxScaleBlocks, (s * count + kThreads - 1) / kThreads));
  return WithNsType(dtype, [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    AddDiagonalKernel<T><<<blocks, kThreads, 0, stream>>>(static_cast<T*>(q), s, count, a);
    return cudaGetLastError();
  });
}

cudaError_t LaunchGramCheck(const void* o, DType dtype, int64_t per_matrix, int64_t count,
                            double bound_sq, const int32_t* params, StepControl* control,
                            cudaStream_t stream) {
  if (per_matrix <= 0 || count <= 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(count, kMaxGridY));
  return WithNsType(dtype, [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    GramCheckKernel<T><<<blocks, kThreads, 0, stream>>>(static_cast<const T*>(o), per_matrix,
                                                         count, bound_sq, params, control);
    return cudaGetLastError();
  });
}

int NormPartialBlocks(int64_t per_matrix) {
  const int64_t n = (per_matrix + kElemsPerPartial - 1) / kElemsPerPartial;
  return static_cast<int>(std::max<int64_t>(1, std::min(kMaxPartials, n)));
}

cudaError_t LaunchNormalize(const void* u, void* x, DType dtype, int64_t per_matrix, int64_t count,
                            float eps, float norm_scale, double* partials, cudaStream_t stream) {
  if (per_matrix <= 0 || count <= 0) return cudaSuccess;
  if (dtype == DType::kF16) {  // U is bf16 (NsInputDType)
    return Normalize<__nv_bfloat16, __half>(u, x, per_matrix, count, eps, norm_scale, partials,
                                            stream);
  }
  return WithNsType(dtype, [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    return Normalize<T, T>(u, x, per_matrix, count, eps, norm_scale, partials, stream);
  });
}

}  // namespace gpu
}  // namespace normuon
