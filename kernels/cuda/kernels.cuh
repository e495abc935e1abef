// Launchers of the CUDA kernels of one optimizer step (docs/ARCHITECTURE.md section 3), shared by the
// CUDA backend (cuda_backend.cu) and the files that hold the kernels (elementwise.cu,
// newton_schulz.cu).
//
// Every launcher only queues work on `stream`: it never allocates, never synchronizes with the
// host and returns the launch's error (cudaGetLastError) so the backend can turn it into a
// status. Pointers are device memory. No kernel uses floating-point atomics, and every
// reduction runs in an order fixed by the shape alone, so results are bitwise reproducible run
// to run (docs/ARCHITECTURE.md section 6, Determinism).
#ifndef NORMUON_CUDA_KERNELS_CUH_
#define NORMUON_CUDA_KERNELS_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/backend.h"

namespace normuon {
namespace gpu {

// Sets control->nonfinite_param = kNoParam and control->comm_error = 0; the step counters are
// kept.
cudaError_t LaunchResetControl(StepControl* control, cudaStream_t stream);

// atomicMin(&control->nonfinite_param, index) if any of the `count` elements of grad is NaN or
// Inf. grad must not be null.
cudaError_t LaunchCheckFinite(int32_t index, const void* grad, DType dtype, int64_t count,
                              StepControl* control, cudaStream_t stream);
// The same over a rectangle: `rows` rows of `cols` elements, row r starting at grad + r * ld
// (a 2-D piece's gradient; ld >= cols).
cudaError_t LaunchCheckFiniteRows(int32_t index, const void* grad, DType dtype, int64_t rows,
                                  int64_t cols, int64_t ld, StepControl* control,
                                  cudaStream_t stream);

// u = nesterov ? g + b1*(m' - g) : m', m' = m + (1-b1)*(g - m), over `rows` rows of `cols`
// elements: element (r, j) of g at r * grad_ld + j, of m at r * cols + j (packed), of u at
// r * u_ld + j (a 2-D piece: the strides of backend.h's MatrixWork); g null means zero.
// momentum is read, not written. b1 is scalars->beta1 (device memory).
cudaError_t LaunchBlend(const void* grad, DType grad_dtype, int64_t grad_ld, const float* momentum,
                        void* u, DType u_dtype, int64_t u_ld, int64_t rows, int64_t cols,
                        const GroupScalars* scalars, bool nesterov, cudaStream_t stream);

// One warp per row of o (row_count x cols, o_dtype): r = sum_j O_ij^2; unless muon,
// v_new_i = v_i + (1-b2)*(r/cols - v_i) and f_i = 1/(sqrt(v_new_i) + eps), else f_i = 1;
// row_slots[row_begin+i] = r, row_slots[rows+row_begin+i] = sum_j (O_ij*f_i)^2.
cudaError_t LaunchRowStats(const void* o, DType o_dtype, int64_t rows, int64_t cols,
                           int64_t row_begin, int64_t row_count, const float* v, float* v_new,
                           float* row_slots, const GroupScalars* scalars, Variant variant,
                           const StepControl* control, cudaStream_t stream);

// AdaMuon on a column piece: v_new_ij = v_ij + (1-b2)*(O_ij^2 - v_ij) over rows x cols, O with
// row stride o_ld, v and v_new packed; RowStats's per-element arithmetic (the same bits).
cudaError_t LaunchElementSecondMoment(const void* o, DType o_dtype, int64_t o_ld, const float* v,
                                      float* v_new, int64_t rows, int64_t cols,
                                      const GroupScalars* scalars, cudaStream_t stream);

// One block: sums the 2*rows slots in global row order (tree fixed by `rows`), in double, and
// writes the update multiplier of the variant to *scale.
cudaError_t LaunchFinishNorms(const float* row_slots, int64_t rows, int64_t cols, Variant variant,
                              float shape_factor, const GroupScalars* scalars, float* scale,
                              cudaStream_t stream);

// Everything CommitMatrix needs, in device memory except the sizes and dtypes.
struct CommitMatrixArgs {
  void* param = nullptr;
  DType param_dtype = DType::kF32;
  const void* grad = nullptr;  // null: zero gradient, no weight decay
  DType grad_dtype = DType::kF32;
  float* momentum = nullptr;
  float* v = nullptr;
  const float* v_new = nullptr;
  const void* o = nullptr;
  DType o_dtype = DType::kF32;
  // A piece of row_count rows x `cols` columns (the piece's; the matrix's for whole rows),
  // starting at global column col_begin: param and grad rows ld elements apart, o's o_ld,
  // momentum and per-element v packed (cols).
  int64_t row_count = 0, cols = 0;
  int64_t ld = 0, o_ld = 0, col_begin = 0;
  const GroupScalars* scalars = nullptr;
  const float* scale = nullptr;
  const StepControl* control = nullptr;  // the skip test, and AdaMuon's step count
  Variant variant = Variant::kNorMuon;
  bool cautious_wd = false;
  bool column_axis = false;  // f_j from v_new[col_begin + j] (per global column); v copied by
                             // LaunchCopyUnlessSkipped
};

// Neuron axis = columns on the owner (backend.h ColumnStats): column means into
// row_slots[2*rows ...], then every row's two sums.
cudaError_t LaunchColumnStats(const void* o, DType o_dtype, int64_t rows, int64_t cols,
                              const float* v, float* row_slots, const GroupScalars* scalars,
                              cudaStream_t stream);
// v_new_j = v_j + (1-b2)*(means_j - v_j).
cudaError_t LaunchColumnUpdate(const float* v, float* v_new, const float* means, int64_t cols,
                               const GroupScalars* scalars, cudaStream_t stream);
// v = v_new (n floats) unless the control block says the step is skipped.
cudaError_t LaunchCopyUnlessSkipped(float* v, const float* v_new, int64_t n,
                                    const StepControl* control, cudaStream_t stream);

// Unless the control block says the step is skipped: M += (1-b1)*(G - M); v = v_new (not for
// Muon); W = W*(1 - lr*wd) - (lr*scale) * (O_ij * f_ij), the decay only where update and W
// agree in sign when cautious_wd.
cudaError_t LaunchCommitMatrix(const CommitMatrixArgs& a, cudaStream_t stream);

// Unless skipped: bias-corrected AdamW with decoupled weight decay (no decay when grad is null),
// t = *step + 1.
cudaError_t LaunchCommitAdamW(void* param, DType param_dtype, const void* grad, DType grad_dtype,
                              float* exp_avg, float* exp_avg_sq, int64_t count, const int64_t* step,
                              const GroupScalars* scalars, const StepControl* control,
                              bool cautious_wd, cudaStream_t stream);

// One thread: WriteStepFlagsOf / FoldStepFlagsOf (backend.h) on the device; SetCommError sets
// control->comm_error = kCommFailed.
cudaError_t LaunchWriteStepFlags(float* flags, int rank, int world, uint32_t marked_hash,
                                 const StepControl* control, cudaStream_t stream);
cudaError_t LaunchFoldStepFlags(const float* flags, int world, StepControl* control,
                                cudaStream_t stream);
cudaError_t LaunchSetCommError(StepControl* control, cudaStream_t stream);

// Counts the step in the control block (taken or skipped) and, if taken, adds 1 to each of the n
// AdamW step counters.
cudaError_t LaunchEndStep(int64_t* adamw_steps, int64_t n, StepControl* control,
                          cudaStream_t stream);

// Newton-Schulz pre-scaling. The Frobenius norm of each of `count` matrices of `per_matrix`
// elements is reduced in two fixed stages: NormPartialBlocks(per_matrix) partial sums per matrix
// (double) into `partials`, then each block of the scaling pass sums those partials in a fixed
// order. x = u * (float)(1 / (||u||_F * norm_scale + eps)), stored in `dtype`; u is in
// NsInputDType(dtype) (bf16 for fp16). x may alias u.
int NormPartialBlocks(int64_t per_matrix);
cudaError_t LaunchNormalize(const void* u, void* x, DType dtype, int64_t per_matrix, int64_t count,
                            float eps, float norm_scale, double* partials, cudaStream_t stream);

// Gram Newton-Schulz (kernels/ns_method.h). q[k] += a * I for each of `count` s x s matrices
// (stored in `dtype`), the a I term of Q = Z' + a I.
cudaError_t LaunchAddDiagonal(void* q, DType dtype, int64_t s, int64_t count, float a,
                              cudaStream_t stream);
// The divergence check of `count` Gram results of `per_matrix` elements each: a result whose sum
// of squares (double) is non-finite or above bound_sq records params[k] in the control block
// (ns_fallback_param and nonfinite_param: the minimum over such matrices, so that the step is
// skipped on every rank; ns_fallback_reason; ns_fallbacks counts them). No host sync.
cudaError_t LaunchGramCheck(const void* o, DType dtype, int64_t per_matrix, int64_t count,
                            double bound_sq, const int32_t* params, StepControl* control,
                            cudaStream_t stream);

}  // namespace gpu
}  // namespace normuon

#endif  // NORMUON_CUDA_KERNELS_CUH_
