// Which iteration orthogonalizes a matrix (docs/ARCHITECTURE.md section 1, "Gram Newton-Schulz"):
// one definition for the kernels that run it, the sharding layer that weighs its cost and the
// runtime that configures both.
#ifndef NORMUON_BASE_NS_METHOD_H_
#define NORMUON_BASE_NS_METHOD_H_

#include <cstdint>

namespace normuon {

// kStandard iterates on X (s x l, s <= l): A = X X^T, X = a X + (b A + c A A) X.
// kGram iterates on the s x s Gram matrix R = X X^T and a polynomial Q of it:
//   Z' = b R + c R R;  Q = Q Z' + a Q;  R = Z' (R Z' + a R) + a (R Z' + a R);
// output Q X0. A restart before iteration i sets X = Q X, R = X X^T, Q = I. Same map as kStandard
// in exact arithmetic. The values match normuon_ns_method_t.
enum class NsMethod : int32_t { kStandard = 0, kGram = 1 };

// Whether a rows x cols matrix runs the Gram iteration under `method`: square matrices gain
// nothing from it (R is as large as X), nor does a single row or column (the standard iteration
// is O(l) there; measured, Gram's fp32 error on it was up to 10x the standard's): they run the
// standard one.
inline bool UsesGram(NsMethod method, int64_t rows, int64_t cols) {
  return method == NsMethod::kGram && rows != cols && rows > 1 && cols > 1;
}

}  // namespace normuon

#endif  // NORMUON_BASE_NS_METHOD_H_
