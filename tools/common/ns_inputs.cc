#include "tools/common/ns_inputs.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace normuon_tools {
namespace {

// n x k with orthonormal columns (modified Gram-Schmidt on a Gaussian matrix).
std::vector<double> Orthonormal(int64_t n, int64_t k, uint32_t seed) {
  Matrix g = GaussianMatrix(n, k, seed);
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t p = 0; p < j; ++p) {
      double dot = 0.0;
      for (int64_t i = 0; i < n; ++i) dot += g.v[i * k + j] * g.v[i * k + p];
      for (int64_t i = 0; i < n; ++i) g.v[i * k + j] -= dot * g.v[i * k + p];
    }
    double norm = 0.0;
    for (int64_t i = 0; i < n; ++i) norm += g.v[i * k + j] * g.v[i * k + j];
    norm = std::sqrt(norm);
    for (int64_t i = 0; i < n; ++i) g.v[i * k + j] /= norm;
  }
  return g.v;
}

}  // namespace

Matrix GaussianMatrix(int64_t rows, int64_t cols, uint32_t seed, double scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist(0.0, 1.0);
  Matrix m{rows, cols, std::vector<double>(static_cast<size_t>(rows * cols))};
  for (double& x : m.v) x = scale * dist(rng);
  return m;
}

Matrix WithSingularValues(int64_t rows, int64_t cols, const std::vector<double>& sigma,
                          uint32_t seed) {
  const int64_t s = std::min(rows, cols);
  const std::vector<double> u = Orthonormal(rows, s, seed), v = Orthonormal(cols, s, seed + 1);
  Matrix m{rows, cols, std::vector<double>(static_cast<size_t>(rows * cols), 0.0)};
  // U diag(sigma) first, then times V^T.
  std::vector<double> us(u);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t p = 0; p < s; ++p) us[i * s + p] *= sigma[p];
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t p = 0; p < s; ++p) {
      const double a = us[i * s + p];
      if (a == 0.0) continue;
      for (int64_t j = 0; j < cols; ++j) m.v[i * cols + j] += a * v[j * s + p];
    }
  return m;
}

std::vector<NamedMatrix> AdversarialMatrices(int64_t rows, int64_t cols) {
  const int64_t s = std::min(rows, cols);
  std::vector<double> spread(s), deficient(s, 0.0), duplicates(s);
  for (int64_t i = 0; i < s; ++i) {
    const double t = s > 1 ? static_cast<double>(i) / static_cast<double>(s - 1) : 0.0;
    spread[i] = std::pow(10.0, -7.0 * t);
    if (i < std::max<int64_t>(1, s / 3)) deficient[i] = 1.0 - 0.5 * t;
    duplicates[i] = 1.0 + 1e-6 * static_cast<double>(i % 3) - (2 * i < s ? 0.0 : 0.5);
  }
  std::vector<NamedMatrix> out;
  out.push_back({"singular values 1 .. 1e-7", WithSingularValues(rows, cols, spread, 11)});
  out.push_back({"rank s/3", WithSingularValues(rows, cols, deficient, 12)});
  out.push_back(
      {"near-duplicate singular values", WithSingularValues(rows, cols, duplicates, 13)});
  out.push_back({"norm 1e-30", GaussianMatrix(rows, cols, 14, 1e-30)});
  out.push_back({"norm 1e30", GaussianMatrix(rows, cols, 15, 1e30)});
  out.push_back({"zero", Matrix{rows, cols, std::vector<double>(static_cast<size_t>(rows * cols))}});
  return out;
}

double FrobeniusNorm(const std::vector<double>& a) {
  double s = 0.0;
  for (double x : a) s += x * x;
  return std::sqrt(s);
}

double RelativeError(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0.0;
  for (size_t i = 0; i < a.size(); ++i) d += (a[i] - b[i]) * (a[i] - b[i]);
  const double nb = FrobeniusNorm(b);
  return nb > 0.0 ? std::sqrt(d) / nb : std::sqrt(d);
}

std::vector<double> NorMuonUpdate(const std::vector<double>& o, int64_t rows, int64_t cols) {
  std::vector<double> u(o.size());
  for (int64_t i = 0; i < rows; ++i) {
    double mean = 0.0;
    for (int64_t j = 0; j < cols; ++j) mean += o[i * cols + j] * o[i * cols + j];
    mean /= static_cast<double>(cols);
    const double f = 1.0 / (std::sqrt(0.05 * mean) + 1e-10);
    for (int64_t j = 0; j < cols; ++j) u[i * cols + j] = o[i * cols + j] * f;
  }
  const double nu = FrobeniusNorm(u), no = FrobeniusNorm(o);
  if (nu > 0.0) {
    for (double& x : u) x *= no / nu;
  }
  return u;
}

}  // namespace normuon_tools
