// Symmetric products (issue #14, docs/ARCHITECTURE.md section 1, "Gram Newton-Schulz"): every
// product of the Gram iteration (X X^T, R R, Q Z', R Z', Z' (R Z')) is symmetric in exact
// arithmetic, so only its lower triangle needs computing; a mirror copies it to the upper one.
// This is the plan of that computation as independent GEMMs over the lower-triangle tile pairs,
// grouped by tile shape, for a batch of same-layout products: plain host C++, so that it is
// tested on CPU (tests/normuon/symmetric_plan_test.cc executes it with OpenBLAS) although the
// CUDA backend runs it (cublasGemmGroupedBatchedEx, kernels/cuda/gram_newton_schulz.cu).
#ifndef NORMUON_KERNELS_SYMMETRIC_PLAN_H_
#define NORMUON_KERNELS_SYMMETRIC_PLAN_H_

#include <cstdint>
#include <vector>

#include "kernels/ns_method.h"

namespace normuon {

// A batch of `count` products C = op(A) op(B), each C n x n and known to be symmetric, op(A)
// n x k, op(B) k x n; column-major (BLAS) layout with leading dimensions lda, ldb, ldc and
// element strides between the batch's matrices.
struct SymmetricProduct {
  int64_t n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  int64_t count = 1;
};

// The GEMMs of one tile shape: every one is m x n (of C) with the product's k, trans and leading
// dimensions; a, b, c are the element offsets of its op(A) row block, op(B) column block and C
// tile from the batch's base pointers.
struct TileGroup {
  int64_t m = 0, n = 0;
  std::vector<int64_t> a, b, c;
};

struct SymmetricPlan {
  SymmetricProduct product;
  int64_t tile = 0;
  std::vector<TileGroup> groups;  // at most 3: full tiles, the last tile row, the corner tile
  int64_t gemms() const;          // over all groups
  // Multiply-adds of the plan over the dense product's (n*n*k per matrix): about
  // (T + 1) / (2 T) for T tiles per side.
  double work_fraction() const;
};

// The default tile side for an n x n symmetric product: n split into about 4 to 8 tiles of a
// multiple of 64 (128 at least), so that each GEMM stays large enough to run near peak; n itself
// (one dense tile) when n < 256.
int64_t SymmetricTile(int64_t n);

// The plan of `p` with tiles of side `tile` (> 0): tile (i, j) for i >= j covers C rows
// [i T, i T + m) and columns [j T, j T + n'); the diagonal tiles are computed in full.
SymmetricPlan PlanLowerTriangle(const SymmetricProduct& p, int64_t tile);

// The two plans of the Gram iteration on a batch of `count` row-major rows x cols matrices, in the
// CUDA backend's layout (cuda_backend.cu, "Newton-Schulz without transposes": with s the short
// side and l the long one, X is s x l column-major with ld s when tall, its transpose l x s with
// ld l when wide; every s x s matrix has ld s and stride s*s):
//   gram:   R = X X^T, k = l (op N, T when tall; op T, N when wide), X stride rows*cols;
//   square: C = A B of two s x s matrices, k = s (op N, N).
struct GramProductPlans {
  SymmetricPlan gram, square;
};
GramProductPlans PlanGramProducts(int64_t rows, int64_t cols, int64_t count, int64_t tile);

// Copies the strict lower triangle of each of `count` column-major n x n matrices (leading
// dimension ld, element stride `stride`) to the upper one: the CPU reference of the CUDA mirror.
void MirrorLowerToUpper(float* c, int64_t n, int64_t ld, int64_t stride, int64_t count);

}  // namespace normuon

#endif  // NORMUON_KERNELS_SYMMETRIC_PLAN_H_
