// The cost, in FLOPs, of orthogonalizing one matrix with Newton-Schulz: standard (the rectangular
// quintic iteration) or Gram (issue 14: the iteration on the small symmetric R = X X^T, with
// restarts), with dense products or with symmetric ones that compute one triangle of a product
// known to be symmetric. The cost-balanced owner assignment (owner_assignment.h) sorts and
// balances by these counts; the planner (tools/plan) divides them by measured rates.
//
// Notation: X is the matrix seen with its short side first, n x m, n = min(rows, cols),
// m = max(rows, cols), alpha = m / n; T iterations; a product of an a x b by a b x c matrix costs
// 2 a b c FLOPs dense, and half of that when only one triangle of a symmetric result is formed
// (a = c). Element-wise terms (a I, scalings, the initial normalization) are not counted.
//
// Standard, per iteration: A = X X^T (2 n^2 m, symmetric), B = b A + c A^2 (A A: 2 n^3,
// symmetric), X <- a X + B X (2 n^2 m, not symmetric). Dense: T (4 n^2 m + 2 n^3), which is
// sharding::Ns5FlopsExact, (20 alpha + 10) n^3 at T = 5. Symmetric: T (3 n^2 m + n^3).
//
// Gram (the published form: Z' = b R + c R^2; Q <- Q Z' + a Q; R <- Z' (R Z' + a R) +
// a (R Z' + a R); output Q X), with r restarts at distinct iterations i in [1, T): before
// iteration i, X <- Q X, R <- X X^T, Q <- I. Only the products the algorithm needs are counted:
//   R = X X^T           at the start and at every restart       (1 + r) x 2 n^2 m  (symmetric)
//   Q X                 at every restart and for the output      (1 + r) x 2 n^2 m  (not)
//   R R (for Z')        every iteration                          T x 2 n^3          (symmetric)
//   Q Z'                every iteration except the first after
//                       the start and after each restart, where
//                       Q = I and Q Z' + a Q is Z' + a I         (T - 1 - r) x 2 n^3 (symmetric)
//   R Z' and Z' (..)    after every iteration whose R is used:
//                       not after the last one, and not before a
//                       restart (R is recomputed from X there)   (T - 1 - r) x 4 n^3 (symmetric)
// Dense: 4 (1 + r) n^2 m + (8 T - 6 - 6 r) n^3; at T = 5, r = 1: (28 + 8 alpha) n^3.
// Symmetric: 3 (1 + r) n^2 m + (4 T - 3 - 3 r) n^3; at T = 5, r = 1: (14 + 6 alpha) n^3.
// (The products R R, Q Z', R Z' and Z' (R Z') are symmetric because all their factors are
// polynomials in the same R.) The count depends on how many restarts there are, not where.
//
// Square matrices (m == n) gain nothing from Gram and fall back to standard NS, so a Gram cost
// of a square matrix is the standard one (with the same dense/symmetric choice). With T = 0
// nothing is multiplied: the cost is 0.
#ifndef NORMUON_SHARDING_NS_COST_H_
#define NORMUON_SHARDING_NS_COST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/ns_method.h"

namespace normuon::sharding {

// The iteration (base/ns_method.h): kStandard, the runtime's default, or kGram (Gram
// Newton-Schulz with restarts; the matrices UsesGram excludes run the standard one).
using ::normuon::NsMethod;

// "standard" / "gram", and the inverse.
absl::string_view NsMethodName(NsMethod method);
absl::StatusOr<NsMethod> ParseNsMethod(absl::string_view name);

// How a step orthogonalizes, as far as its cost is concerned. The default is what the runtime
// does today (standard, 5 iterations, dense products), so NsCostExact(rows, cols, NsCost{})
// equals Ns5FlopsExact(rows, cols).
struct NsCost {
  NsMethod method = NsMethod::kStandard;
  int steps = 5;              // iterations, in [0, 2^20]
  std::vector<int> restarts;  // kGram: iterations restarted before, strictly increasing, in [1, steps)
  bool symmetric = false;     // symmetric products compute one triangle (half the FLOPs)
};

// The published default: Gram, 5 iterations, one restart before iteration 2 (0-based), dense.
NsCost GramDefaultCost();

// Checks steps in [0, 2^20] and, for kGram, restarts strictly increasing within [1, steps).
// Errors name the field ("ns steps", "ns restarts") and the value.
absl::Status ValidateNsCost(const NsCost& cost);

// "standard" or "gram, restarts {2}, symmetric products", for reports.
std::string NsCostDescription(const NsCost& cost);

// The FLOPs of orthogonalizing a rows x cols matrix (the header comment gives the counts). Exact
// for rows, cols in [1, 2^31) and a cost that passes ValidateNsCost; 0 when rows or cols <= 0 or
// the cost is invalid. The double version rounds it.
absl::uint128 NsFlopsExact(int64_t rows, int64_t cols, const NsCost& cost);
double NsFlops(int64_t rows, int64_t cols, const NsCost& cost);

}  // namespace normuon::sharding

#endif  // NORMUON_SHARDING_NS_COST_H_
