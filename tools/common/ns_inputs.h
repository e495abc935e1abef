// Test matrices and error measures for the orthogonalization's accuracy checks (Gram and standard
// Newton-Schulz): shared by tests/normuon/gram_ns_test and bench/gram_accuracy. Float64,
// row-major, deterministic from the seed.
#ifndef NORMUON_TOOLS_COMMON_NS_INPUTS_H_
#define NORMUON_TOOLS_COMMON_NS_INPUTS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace normuon_tools {

struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<double> v;
};

// Entries N(0, scale^2).
Matrix GaussianMatrix(int64_t rows, int64_t cols, uint32_t seed, double scale = 1.0);

// U diag(sigma) V^T with random orthonormal U (rows x s) and V (cols x s), s = min(rows, cols);
// sigma has s values.
Matrix WithSingularValues(int64_t rows, int64_t cols, const std::vector<double>& sigma,
                          uint32_t seed);

struct NamedMatrix {
  std::string name;
  Matrix m;
};

// Inputs built to break the naive Gram iteration: singular values spread from 1 to 1e-7, rank
// s/3, near-duplicate singular values, norms 1e-30 and 1e30, the zero matrix.
std::vector<NamedMatrix> AdversarialMatrices(int64_t rows, int64_t cols);

double FrobeniusNorm(const std::vector<double>& a);

// ||a - b||_F / ||b||_F, or ||a - b||_F when b is zero.
double RelativeError(const std::vector<double>& a, const std::vector<double>& b);

// The NorMuon update of a first step from zero state (docs/ARCHITECTURE.md section 1) from the
// orthogonalization O (rows x cols): each row divided by sqrt(v) + eps with v = (1 - 0.95) * its
// mean square, then rescaled to O's Frobenius norm.
std::vector<double> NorMuonUpdate(const std::vector<double>& o, int64_t rows, int64_t cols);

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_COMMON_NS_INPUTS_H_
