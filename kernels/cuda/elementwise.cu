// The elementwise and per-row kernels of a step on CUDA: control block upkeep, the finite check,
// the momentum/Nesterov blend, row statistics, the norm completion and the two commit passes
// (docs/ARCHITECTURE.md sections 1 and 6). Each mirrors the CPU backend's loop of the same name
// (kernels/cpu_backend.cc) and calls the same formulas (kernels/elementwise_math.h), so the two
// agree to a few fp32 roundings (nvcc may fuse a multiply and an add into an FMA).
//
// Determinism: every output element is computed by one thread from its own inputs, and the
// only reductions (row sums, norm sums) run in an order that depends on the shape alone. The one
// atomic is an integer atomicMin, which is order independent.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels/backend.h"
#include "kernels/cuda/kernels.cuh"
#include "kernels/elementwise_math.h"

namespace normuon {
namespace gpu {
namespace {

constexpr int kThreads = 256;
// Grid-stride loops cover any size with at most this many blocks (enough to fill an H200).
constexpr int64_t kMaxBlocks = 4096;
constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

int FlatBlocks(int64_t count) {
  const int64_t blocks = std::min(kMaxBlocks, (count + kThreads - 1) / kThreads);
  return static_cast<int>(std::max<int64_t>(1, blocks));
}

// The launch shape of the row-by-column kernels (x: columns, y: rows): blocks of kThreads
// threads, x the smallest power of two >= cols (32..kThreads) so narrow rows do not leave most
// threads idle, y the rest; the kernels grid-stride in both.
struct RowsByCols {
  dim3 grid, block;
};
RowsByCols RowsByColsOf(int64_t rows, int64_t cols) {
  int bx = kWarp;
  while (bx < kThreads && bx < cols) bx *= 2;
  const int by = kThreads / bx;
  const int64_t gx = std::max<int64_t>(1, std::min<int64_t>(kMaxBlocks, (cols + bx - 1) / bx));
  const int64_t gy = std::max<int64_t>(1, std::min<int64_t>(65535, (rows + by - 1) / by));
  return {dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), dim3(bx, by)};
}

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ void StoreFloat(float* p, float x) { *p = x; }
__device__ __forceinline__ void StoreFloat(__nv_bfloat16* p, float x) {
  *p = __float2bfloat16_rn(x);
}
// fp16: only the Newton-Schulz dtype (U, O) can be fp16 (WithNsType).
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ void StoreFloat(__half* p, float x) { *p = __float2half_rn(x); }

// The gradient element, or 0 when the parameter has no gradient this step.
template <typename G>
__device__ __forceinline__ float GradAt(const G* g, int64_t i) {
  return g == nullptr ? 0.0f : ToFloat(g[i]);
}

__device__ __forceinline__ bool Skipped(const StepControl* c) { return StepSkipped(*c); }

__device__ __forceinline__ double WarpSum(double x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    x += __shfl_down_sync(kFullMask, x, offset);
  }
  return x;  // complete in lane 0
}

// ---------------------------------------------------------------------------------------------
// Control block.

__global__ void ResetControlKernel(StepControl* control) {
  control->nonfinite_param = kNoParam;
  control->comm_error = 0;
  control->ns_fallback_param = kNoParam;
  control->ns_fallback_reason = 0;
}

__global__ void WriteStepFlagsKernel(float* flags, int rank, int world, uint32_t marked_hash,
                                     const StepControl* control) {
  WriteStepFlagsOf(flags, rank, world, marked_hash, *control);
}

__global__ void FoldStepFlagsKernel(const float* flags, int world, StepControl* control) {
  FoldStepFlagsOf(flags, world, control);
}

__global__ void SetCommErrorKernel(StepControl* control) { control->comm_error = kCommFailed; }

__global__ void EndStepKernel(int64_t* adamw_steps, int64_t n, StepControl* control) {
  // Only steps_* are written below; the fields Skipped() reads stay constant in this kernel.
  const bool skipped = Skipped(control);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    if (skipped) {
      ++control->steps_skipped;
    } else {
      ++control->steps_taken;
    }
  }
  if (skipped) return;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    adamw_steps[i] += 1;
  }
}

// ---------------------------------------------------------------------------------------------
// Finite check.

template <typename T>
__global__ void CheckFiniteKernel(int32_t index, const T* grad, int64_t count,
                                  StepControl* control) {
  bool bad = false;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    bad |= !isfinite(ToFloat(grad[i]));
  }
  // One atomic per block at most; the minimum does not depend on the order of the atomics.
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicMin(&control->nonfinite_param, index);
}

// A rectangle (2-D piece): rows of `cols` elements, ld apart; every thread reaches the barrier.
template <typename T>
__global__ void CheckFiniteRowsKernel(int32_t index, const T* grad, int64_t rows, int64_t cols,
                                      int64_t ld, StepControl* control) {
  bool bad = false;
  for (int64_t r = blockIdx.y * static_cast<int64_t>(blockDim.y) + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.y) * blockDim.y) {
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < cols;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      bad |= !isfinite(ToFloat(grad[r * ld + j]));
    }
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0 && threadIdx.y == 0) {
    atomicMin(&control->nonfinite_param, index);
  }
}

// ---------------------------------------------------------------------------------------------
// Blend: U = nesterov ? lerp(G, M', b1) : M', M' = M + (1-b1)*(G - M). M is not written.
// Rows (y) by columns (x): G with row stride grad_ld, M packed (cols), U with row stride u_ld
// (the CPU backend's Blend loop); packed rows launch as one row of every element.

template <typename G, typename U>
__global__ void BlendKernel(const G* grad, int64_t grad_ld, const float* momentum, U* u,
                            int64_t u_ld, int64_t rows, int64_t cols, const GroupScalars* scalars,
                            bool nesterov) {
  const float b1 = scalars->beta1;
  for (int64_t r = blockIdx.y * static_cast<int64_t>(blockDim.y) + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.y) * blockDim.y) {
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < cols;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const float g = GradAt(grad, r * grad_ld + j);
      const float m = Ema(momentum[r * cols + j], g, b1);
      StoreFloat(u + r * u_ld + j, BlendedUpdate(g, m, b1, nesterov));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AdaMuon's per-element second moment, v_new = v + (1-b2)*(O^2 - v): one helper for RowStats
// (the owner's whole O, and unsplit rows) and ElementSecondMoment (a column piece's O), so both
// compile to the same arithmetic and the piece holder's v_new has the owner's bits.
__device__ __forceinline__ float ElementV(float v, float o, float b2) { return Ema(v, o * o, b2); }

// ---------------------------------------------------------------------------------------------
// RowStats: one warp per row. Each lane sums the columns lane, lane+32, ... in double, then a
// fixed shuffle tree completes the sum in lane 0, so the result depends on cols alone.

template <typename O>
__global__ void RowStatsKernel(const O* o, int64_t rows, int64_t cols, int64_t row_begin,
                               int64_t row_count, const float* v, float* v_new, float* row_slots,
                               const GroupScalars* scalars, Variant variant,
                               const StepControl* control) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_per_block = blockDim.x / kWarp;
  const float b2 = scalars->beta2;
  const float eps = scalars->eps;
  const float bc2 = VarianceBiasCorrection(variant, b2, control->steps_taken);
  const bool per_element = PerElementV(variant);
  // The loop bound is the same for all lanes of a warp, so the shuffles see a full warp.
  for (int64_t r = blockIdx.x * warps_per_block + threadIdx.x / kWarp; r < row_count;
       r += static_cast<int64_t>(gridDim.x) * warps_per_block) {
    const O* row = o + r * cols;
    double sq = 0.0;
    for (int64_t j = lane; j < cols; j += kWarp) {
      const double x = ToFloat(row[j]);
      sq += x * x;
    }
    sq = __shfl_sync(kFullMask, WarpSum(sq), 0);

    double sq_scaled = 0.0;
    if (per_element) {
      for (int64_t j = lane; j < cols; j += kWarp) {
        const int64_t i = r * cols + j;
        const float x = ToFloat(row[j]);
        // v[i] is read before v_new[i] is written, by this thread alone: v_new may be v.
        const float vn = ElementV(v[i], x, b2);
        v_new[i] = vn;
        const double y = x * NormFactor(variant, vn, eps, bc2);
        sq_scaled += y * y;
      }
      sq_scaled = WarpSum(sq_scaled);
    } else {
      float v_next = 0.0f;
      if (variant != Variant::kMuon) {
        v_next = Ema(v[r], MeanOf(sq, cols), b2);
        if (lane == 0) v_new[r] = v_next;
      }
      const float f = NormFactor(variant, v_next, eps, bc2);
      for (int64_t j = lane; j < cols; j += kWarp) {
        const double x = ToFloat(row[j]) * f;  // O' rounded to float, as the CPU backend does
        sq_scaled += x * x;
      }
      sq_scaled = WarpSum(sq_scaled);
    }
    if (lane == 0 && row_slots != nullptr) {
      row_slots[row_begin + r] = static_cast<float>(sq);
      row_slots[rows + row_begin + r] = static_cast<float>(sq_scaled);
    }
  }
}

// ElementSecondMoment: rows (y) by columns (x) of a column piece, O with row stride o_ld, v and
// v_new packed (cols per row); the CPU backend's loop, element for element.
template <typename O>
__global__ void ElementSecondMomentKernel(const O* o, int64_t o_ld, const float* v, float* v_new,
                                          int64_t rows, int64_t cols,
                                          const GroupScalars* scalars) {
  const float b2 = scalars->beta2;
  for (int64_t r = blockIdx.y * static_cast<int64_t>(blockDim.y) + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.y) * blockDim.y) {
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < cols;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      v_new[r * cols + j] = ElementV(v[r * cols + j], ToFloat(o[r * o_ld + j]), b2);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Neuron axis = columns. ColumnMeans: one thread per column sums its rows in order (adjacent
// threads read adjacent columns). ColumnRowSums: one warp per row, as RowStats, with the column
// factors recomputed from the means and v (the CPU backend's arithmetic).

template <typename O>
__global__ void ColumnMeansKernel(const O* o, int64_t rows, int64_t cols, float* means) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < cols;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double sq = 0.0;
    for (int64_t i = 0; i < rows; ++i) {
      const double x = ToFloat(o[i * cols + j]);
      sq += x * x;
    }
    means[j] = MeanOf(sq, rows);
  }
}

__device__ __forceinline__ float ColumnFactor(const float* v, const float* means, int64_t j,
                                              float b2, float eps) {
  return InverseRootPlusEps(Ema(v[j], means[j], b2), eps);
}

template <typename O>
__global__ void ColumnRowSumsKernel(const O* o, int64_t rows, int64_t cols, const float* v,
                                    float* row_slots, const GroupScalars* scalars) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_per_block = blockDim.x / kWarp;
  const float b2 = scalars->beta2, eps = scalars->eps;
  const float* means = row_slots + 2 * rows;
  for (int64_t r = blockIdx.x * warps_per_block + threadIdx.x / kWarp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * warps_per_block) {
    double sq = 0.0, sq_scaled = 0.0;
    for (int64_t j = lane; j < cols; j += kWarp) {
      const float x = ToFloat(o[r * cols + j]);
      sq += static_cast<double>(x) * x;
      const double y = x * ColumnFactor(v, means, j, b2, eps);
      sq_scaled += y * y;
    }
    sq = WarpSum(sq);
    sq_scaled = WarpSum(sq_scaled);
    if (lane == 0) {
      row_slots[r] = static_cast<float>(sq);
      row_slots[rows + r] = static_cast<float>(sq_scaled);
    }
  }
}

__global__ void ColumnUpdateKernel(const float* v, float* v_new, const float* means, int64_t cols,
                                   const GroupScalars* scalars) {
  const float b2 = scalars->beta2;
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < cols;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    v_new[j] = Ema(v[j], means[j], b2);
  }
}

// v = v_new unless the step is skipped (the replicated column v of every rank).
__global__ void CopyUnlessSkippedKernel(float* v, const float* v_new, int64_t n,
                                        const StepControl* control) {
  if (Skipped(control)) return;
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    v[j] = v_new[j];
  }
}

// ---------------------------------------------------------------------------------------------
// FinishNorms: one block of kThreads. Thread t sums rows t, t+kThreads, ... in order, then a
// shared-memory tree; both depend on `rows` only, never on how the rows were split across ranks.

__global__ void FinishNormsKernel(const float* row_slots, int64_t rows, int64_t cols,
                                  Variant variant, float shape_factor,
                                  const GroupScalars* scalars, float* scale) {
  __shared__ double sq_part[kThreads];
  __shared__ double scaled_part[kThreads];
  double sq = 0.0, sq_scaled = 0.0;
  if (variant != Variant::kMuon) {
    for (int64_t r = threadIdx.x; r < rows; r += kThreads) {
      sq += row_slots[r];
      sq_scaled += row_slots[rows + r];
    }
  }
  sq_part[threadIdx.x] = sq;
  scaled_part[threadIdx.x] = sq_scaled;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      sq_part[threadIdx.x] += sq_part[threadIdx.x + half];
      scaled_part[threadIdx.x] += scaled_part[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  *scale = UpdateScale(variant, sq_part[0], scaled_part[0], scalars->eps, rows, cols,
                       shape_factor);
}

// ---------------------------------------------------------------------------------------------
// CommitMatrix: rows (y) by columns (x) of the piece (RowsByColsOf). Element (r, j): momentum
// and per-element v at r * cols + j (packed), param and grad at r * ld + j, O at r * o_ld + j,
// the column factor from v_new[col_begin + j] (the CPU backend's CommitMatrix loop).

template <typename W, typename G, typename O>
__global__ void CommitMatrixKernel(W* param, const G* grad, float* momentum, float* v,
                                   const float* v_new, const O* o, int64_t row_count, int64_t cols,
                                   int64_t ld, int64_t o_ld, int64_t col_begin,
                                   const GroupScalars* scalars, const float* scale,
                                   const StepControl* control, Variant variant, bool cautious,
                                   bool column_axis) {
  if (Skipped(control)) return;
  const float b1 = scalars->beta1;
  const float lr = scalars->lr;
  const float eps = scalars->eps;
  const float decay = DecayMultiplier(grad != nullptr, lr, scalars->weight_decay);
  const float step = MatrixStepSize(lr, *scale);
  const float bc2 = VarianceBiasCorrection(variant, scalars->beta2, control->steps_taken);
  const bool per_element = PerElementV(variant);
  const bool muon = variant == Variant::kMuon;
  for (int64_t r = blockIdx.y * static_cast<int64_t>(blockDim.y) + threadIdx.y; r < row_count;
       r += static_cast<int64_t>(gridDim.y) * blockDim.y) {
    const float vn = muon || per_element || column_axis ? 0.0f : v_new[r];
    const float row_f = NormFactor(variant, vn, eps, bc2);
    // v_new is not written by this kernel, so copying it to v here races with nothing. The
    // column v is copied by its own kernel (every rank, rows or not).
    if (!muon && !per_element && !column_axis && blockIdx.x == 0 && threadIdx.x == 0) v[r] = vn;
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < cols;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const int64_t i = r * cols + j;  // packed state
      const int64_t gi = r * ld + j;   // param and grad
      const float g = GradAt(grad, gi);
      momentum[i] = Ema(momentum[i], g, b1);
      const float f = per_element   ? NormFactor(variant, v_new[i], eps, bc2)
                      : column_axis ? InverseRootPlusEps(v_new[col_begin + j], eps)
                                    : row_f;
      if (per_element) v[i] = v_new[i];
      const float d = MatrixDelta(step, ToFloat(o[r * o_ld + j]), f);
      const float p = ToFloat(param[gi]);
      StoreFloat(param + gi, DecayedStep(p, decay, cautious, d));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// CommitAdamW, as the reference adam_update plus decoupled weight decay.

template <typename W, typename G>
__global__ void CommitAdamWKernel(W* param, const G* grad, float* exp_avg, float* exp_avg_sq,
                                  int64_t count, const int64_t* step, const GroupScalars* scalars,
                                  const StepControl* control, bool cautious) {
  if (Skipped(control)) return;
  const float b1 = scalars->beta1, b2 = scalars->beta2;
  const float lr = scalars->lr, eps = scalars->eps;
  const float bc1 = BiasCorrection(b1, *step + 1);
  const float bc2 = BiasCorrection(b2, *step + 1);
  const float decay = DecayMultiplier(grad != nullptr, lr, scalars->weight_decay);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = GradAt(grad, i);
    const float m = Ema(exp_avg[i], g, b1);
    const float v = Ema(exp_avg_sq[i], g * g, b2);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    const float d = AdamWDelta(lr, m, v, bc1, bc2, eps);
    const float p = ToFloat(param[i]);
    StoreFloat(param + i, DecayedStep(p, decay, cautious, d));
  }
}

// ---------------------------------------------------------------------------------------------
// dtype dispatch: calls fn with a typed null pointer for each DType argument, so one generic
// lambda instantiates the kernel for the dtypes at hand.

template <typename Fn>
cudaError_t WithType(DType d, Fn&& fn) {
  if (d == DType::kF32) return fn(static_cast<float*>(nullptr));
  return fn(static_cast<__nv_bfloat16*>(nullptr));
}

// As WithType, for the Newton-Schulz dtype (U and O), which may also be fp16.
template <typename Fn>
cudaError_t WithNsType(DType d, Fn&& fn) {
  if (d == DType::kF16) return fn(static_cast<__half*>(nullptr));
  return WithType(d, std::forward<Fn>(fn));
}

template <typename T>
const T* As(const void* p) {
  return static_cast<const T*>(p);
}
template <typename T>
T* AsMutable(void* p) {
  return static_cast<T*>(p);
}

}  // namespace

cudaError_t LaunchResetControl(StepControl* control, cudaStream_t stream) {
  ResetControlKernel<<<1, 1, 0, stream>>>(control);
  return cudaGetLastError();
}

cudaError_t LaunchCheckFinite(int32_t index, const void* grad, DType dtype, int64_t count,
                              StepControl* control, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  return WithType(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    CheckFiniteKernel<<<FlatBlocks(count), kThreads, 0, stream>>>(index, As<T>(grad), count,
                                                                  control);
    return cudaGetLastError();
  });
}

cudaError_t LaunchCheckFiniteRows(int32_t index, const void* grad, DType dtype, int64_t rows,
                                  int64_t cols, int64_t ld, StepControl* control,
                                  cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  if (ld == cols) return LaunchCheckFinite(index, grad, dtype, rows * cols, control, stream);
  const RowsByCols shape = RowsByColsOf(rows, cols);
  return WithType(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    CheckFiniteRowsKernel<<<shape.grid, shape.block, 0, stream>>>(index, As<T>(grad), rows, cols,
                                                                  ld, control);
    return cudaGetLastError();
  });
}

cudaError_t LaunchBlend(const void* grad, DType grad_dtype, int64_t grad_ld, const float* momentum,
                        void* u, DType u_dtype, int64_t u_ld, int64_t rows, int64_t cols,
                        const GroupScalars* scalars, bool nesterov, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  if (grad_ld == cols && u_ld == cols) {  // packed: one run of every element
    cols *= rows;
    rows = 1;
    grad_ld = u_ld = cols;
  }
  const RowsByCols shape = RowsByColsOf(rows, cols);
  return WithType(grad_dtype, [&](auto* gtag) {
    using G = std::remove_pointer_t<decltype(gtag)>;
    return WithNsType(u_dtype, [&](auto* utag) {
      using U = std::remove_pointer_t<decltype(utag)>;
      BlendKernel<<<shape.grid, shape.block, 0, stream>>>(As<G>(grad), grad_ld, momentum,
                                                          AsMutable<U>(u), u_ld, rows, cols,
                                                          scalars, nesterov);
      return cudaGetLastError();
    });
  });
}

cudaError_t LaunchRowStats(const void* o, DType o_dtype, int64_t rows, int64_t cols,
                           int64_t row_begin, int64_t row_count, const float* v, float* v_new,
                           float* row_slots, const GroupScalars* scalars, Variant variant,
                           const StepControl* control, cudaStream_t stream) {
  if (row_count <= 0 || cols <= 0) return cudaSuccess;
  constexpr int64_t kWarpsPerBlock = kThreads / kWarp;
  const int blocks =
      static_cast<int>(std::min(kMaxBlocks, (row_count + kWarpsPerBlock - 1) / kWarpsPerBlock));
  return WithNsType(o_dtype, [&](auto* tag) {
    using O = std::remove_pointer_t<decltype(tag)>;
    RowStatsKernel<<<blocks, kThreads, 0, stream>>>(As<O>(o), rows, cols, row_begin, row_count, v,
                                                    v_new, row_slots, scalars, variant, control);
    return cudaGetLastError();
  });
}

cudaError_t LaunchElementSecondMoment(const void* o, DType o_dtype, int64_t o_ld, const float* v,
                                      float* v_new, int64_t rows, int64_t cols,
                                      const GroupScalars* scalars, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const RowsByCols shape = RowsByColsOf(rows, cols);
  return WithNsType(o_dtype, [&](auto* tag) {
    using O = std::remove_pointer_t<decltype(tag)>;
    ElementSecondMomentKernel<<<shape.grid, shape.block, 0, stream>>>(As<O>(o), o_ld, v, v_new,
                                                                      rows, cols, scalars);
    return cudaGetLastError();
  });
}

cudaError_t LaunchFinishNorms(const float* row_slots, int64_t rows, int64_t cols, Variant variant,
                              float shape_factor, const GroupScalars* scalars, float* scale,
                              cudaStream_t stream) {
  FinishNormsKernel<<<1, kThreads, 0, stream>>>(row_slots, rows, cols, variant, shape_factor,
                                                scalars, scale);
  return cudaGetLastError();
}

cudaError_t LaunchCommitMatrix(const CommitMatrixArgs& a, cudaStream_t stream) {
  if (a.row_count <= 0 || a.cols <= 0) return cudaSuccess;
  const RowsByCols shape = RowsByColsOf(a.row_count, a.cols);
  const int64_t ld = a.ld > 0 ? a.ld : a.cols;      // 0: packed
  const int64_t o_ld = a.o_ld > 0 ? a.o_ld : a.cols;
  return WithType(a.param_dtype, [&](auto* wtag) {
    using W = std::remove_pointer_t<decltype(wtag)>;
    return WithType(a.grad_dtype, [&](auto* gtag) {
      using G = std::remove_pointer_t<decltype(gtag)>;
      return WithNsType(a.o_dtype, [&](auto* otag) {
        using O = std::remove_pointer_t<decltype(otag)>;
        CommitMatrixKernel<<<shape.grid, shape.block, 0, stream>>>(
            AsMutable<W>(a.param), As<G>(a.grad), a.momentum, a.v, a.v_new, As<O>(a.o), a.row_count,
            a.cols, ld, o_ld, a.col_begin, a.scalars, a.scale, a.control, a.variant, a.cautious_wd,
            a.column_axis);
        return cudaGetLastError();
      });
    });
  });
}

cudaError_t LaunchCommitAdamW(void* param, DType param_dtype, const void* grad, DType grad_dtype,
                              float* exp_avg, float* exp_avg_sq, int64_t count, const int64_t* step,
                              const GroupScalars* scalars, const StepControl* control,
                              bool cautious_wd, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  return WithType(param_dtype, [&](auto* wtag) {
    using W = std::remove_pointer_t<decltype(wtag)>;
    return WithType(grad_dtype, [&](auto* gtag) {
      using G = std::remove_pointer_t<decltype(gtag)>;
      CommitAdamWKernel<<<FlatBlocks(count), kThreads, 0, stream>>>(
          AsMutable<W>(param), As<G>(grad), exp_avg, exp_avg_sq, count, step, scalars, control,
          cautious_wd);
      return cudaGetLastError();
    });
  });
}

cudaError_t LaunchColumnStats(const void* o, DType o_dtype, int64_t rows, int64_t cols,
                              const float* v, float* row_slots, const GroupScalars* scalars,
                              cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  return WithNsType(o_dtype, [&](auto* tag) {
    using O = std::remove_pointer_t<decltype(tag)>;
    ColumnMeansKernel<<<FlatBlocks(cols), kThreads, 0, stream>>>(As<O>(o), rows, cols,
                                                                 row_slots + 2 * rows);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    constexpr int64_t kWarpsPerBlock = kThreads / kWarp;
    const int blocks =
        static_cast<int>(std::min(kMaxBlocks, (rows + kWarpsPerBlock - 1) / kWarpsPerBlock));
    ColumnRowSumsKernel<<<blocks, kThreads, 0, stream>>>(As<O>(o), rows, cols, v, row_slots,
                                                         scalars);
    return cudaGetLastError();
  });
}

cudaError_t LaunchColumnUpdate(const float* v, float* v_new, const float* means, int64_t cols,
                               const GroupScalars* scalars, cudaStream_t stream) {
  if (cols <= 0) return cudaSuccess;
  ColumnUpdateKernel<<<FlatBlocks(cols), kThreads, 0, stream>>>(v, v_new, means, cols, scalars);
  return cudaGetLastError();
}

cudaError_t LaunchCopyUnlessSkipped(float* v, const float* v_new, int64_t n,
                                    const StepControl* control, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  CopyUnlessSkippedKernel<<<FlatBlocks(n), kThreads, 0, stream>>>(v, v_new, n, control);
  return cudaGetLastError();
}

cudaError_t LaunchWriteStepFlags(float* flags, int rank, int world, uint32_t marked_hash,
                                 const StepControl* control, cudaStream_t stream) {
  WriteStepFlagsKernel<<<1, 1, 0, stream>>>(flags, rank, world, marked_hash, control);
  return cudaGetLastError();
}

cudaError_t LaunchFoldStepFlags(const float* flags, int world, StepControl* control,
                                cudaStream_t stream) {
  FoldStepFlagsKernel<<<1, 1, 0, stream>>>(flags, world, control);
  return cudaGetLastError();
}

cudaError_t LaunchSetCommError(StepControl* control, cudaStream_t stream) {
  SetCommErrorKernel<<<1, 1, 0, stream>>>(control);
  return cudaGetLastError();
}

cudaError_t LaunchEndStep(int64_t* adamw_steps, int64_t n, StepControl* control,
                          cudaStream_t stream) {
  EndStepKernel<<<FlatBlocks(n), kThreads, 0, stream>>>(adamw_steps, n, control);
  return cudaGetLastError();
}

}  // namespace gpu
}  // namespace normuon
