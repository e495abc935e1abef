// An independent float64 model of one optimizer step (DESIGN.md section 1), written plainly for
// the tests: naive loops, no BLAS, no shared code with the library.
#ifndef NORMUON_TESTS_NORMUON_REFERENCE_MATH_H_
#define NORMUON_TESTS_NORMUON_REFERENCE_MATH_H_

#include <algorithm>
#include <cmath>
#include <vector>

namespace normuon::testing {

using Mat = std::vector<double>;  // row-major

struct RefMatrixState {
  int rows = 0, cols = 0;
  Mat param, momentum;
  std::vector<double> v;  // one per row
};

enum class RefVariant { kNorMuon, kNorMuonPaper, kMuon };

struct RefHyper {
  double lr = 0.02, wd = 0.0, beta1 = 0.95, beta2 = 0.95, eps = 1e-10, ns_eps = 1e-7;
  bool nesterov = true;
  int ns_steps = 5;
  RefVariant variant = RefVariant::kNorMuon;
};

inline Mat MatMul(const Mat& a, const Mat& b, int n, int k, int m) {  // (n x k)(k x m)
  Mat c(static_cast<size_t>(n) * m, 0.0);
  for (int i = 0; i < n; ++i)
    for (int p = 0; p < k; ++p)
      for (int j = 0; j < m; ++j) c[i * m + j] += a[i * k + p] * b[p * m + j];
  return c;
}

inline Mat Transpose(const Mat& a, int n, int m) {
  Mat t(a.size());
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < m; ++j) t[j * n + i] = a[i * m + j];
  return t;
}

inline Mat NewtonSchulz5(const Mat& g, int rows, int cols, int steps, double ns_eps) {
  const bool tall = rows > cols;
  Mat x = tall ? Transpose(g, rows, cols) : g;
  const int s = std::min(rows, cols), l = std::max(rows, cols);
  double sq = 0;
  for (double e : x) sq += e * e;
  for (double& e : x) e /= std::sqrt(sq) + ns_eps;
  const double a = 3.4445, b = -4.7750, c = 2.0315;
  for (int it = 0; it < steps; ++it) {
    Mat A = MatMul(x, Transpose(x, s, l), s, l, s);
    Mat AA = MatMul(A, A, s, s, s);
    Mat B(A.size());
    for (size_t i = 0; i < A.size(); ++i) B[i] = b * A[i] + c * AA[i];
    Mat BX = MatMul(B, x, s, s, l);
    for (size_t i = 0; i < x.size(); ++i) x[i] = a * x[i] + BX[i];
  }
  return tall ? Transpose(x, s, l) : x;
}

// One step on the whole matrix; grad == nullptr means "no gradient" (zero, no weight decay).
inline void RefStep(RefMatrixState& st, const Mat* grad, const RefHyper& h) {
  const int m = st.rows, n = st.cols;
  const size_t count = static_cast<size_t>(m) * n;
  Mat g = grad ? *grad : Mat(count, 0.0);
  Mat u(count);
  for (size_t i = 0; i < count; ++i) {
    st.momentum[i] += (1 - h.beta1) * (g[i] - st.momentum[i]);
    u[i] = h.nesterov ? g[i] + h.beta1 * (st.momentum[i] - g[i]) : st.momentum[i];
  }
  Mat o = NewtonSchulz5(u, m, n, h.ns_steps, h.ns_eps);
  const double shape = std::sqrt(std::max(1.0, static_cast<double>(m) / n));
  Mat d(count);
  if (h.variant == RefVariant::kMuon) {
    for (size_t i = 0; i < count; ++i) d[i] = o[i] * shape;
  } else {
    double norm_o = 0, norm_on = 0;
    Mat on(count);
    for (int r = 0; r < m; ++r) {
      double mean = 0;
      for (int j = 0; j < n; ++j) mean += o[r * n + j] * o[r * n + j];
      mean /= n;
      st.v[r] += (1 - h.beta2) * (mean - st.v[r]);
      for (int j = 0; j < n; ++j) on[r * n + j] = o[r * n + j] / (std::sqrt(st.v[r]) + h.eps);
    }
    for (size_t i = 0; i < count; ++i) {
      norm_o += o[i] * o[i];
      norm_on += on[i] * on[i];
    }
    norm_o = std::sqrt(norm_o);
    norm_on = std::sqrt(norm_on);
    const double scale = h.variant == RefVariant::kNorMuon
                             ? norm_o / (norm_on + h.eps) * shape
                             : 0.2 * std::sqrt(static_cast<double>(m) * n) / (norm_on + h.eps);
    for (size_t i = 0; i < count; ++i) d[i] = on[i] * scale;
  }
  const double decay = grad ? 1 - h.lr * h.wd : 1.0;
  for (size_t i = 0; i < count; ++i) st.param[i] = st.param[i] * decay - h.lr * d[i];
}

inline double RelErr(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

}  // namespace normuon::testing

#endif  // NORMUON_TESTS_NORMUON_REFERENCE_MATH_H_
