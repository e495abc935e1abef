// An independent float64 model of one optimizer step (docs/ARCHITECTURE.md section 1), written plainly for
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
  std::vector<double> v;  // one per row (NorMuon variants) or per element (AdaMuon)
  int steps = 0;          // steps taken (AdaMuon's bias correction)
};

enum class RefVariant { kNorMuon, kNorMuonPaper, kMuon, kAdaMuon };
enum class RefShape { kDefault, kNone, kSpectral, kRms };

struct RefHyper {
  double lr = 0.02, wd = 0.0, beta1 = 0.95, beta2 = 0.95, eps = 1e-10, ns_eps = 1e-7;
  double ns_norm_scale = 1.0;
  bool nesterov = true;
  int ns_steps = 5;
  RefVariant variant = RefVariant::kNorMuon;
  RefShape shape = RefShape::kDefault;
  bool cautious = false;
  bool columns = false;  // neuron axis = columns: one v per column
  // (a, b, c) per iteration; empty = the quintic (3.4445, -4.7750, 2.0315) every iteration.
  std::vector<std::vector<double>> coefficients;
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

inline Mat NewtonSchulz5(const Mat& g, int rows, int cols, int steps, double ns_eps,
                         const std::vector<std::vector<double>>& coefficients = {},
                         double norm_scale = 1.0) {
  const bool tall = rows > cols;
  Mat x = tall ? Transpose(g, rows, cols) : g;
  const int s = std::min(rows, cols), l = std::max(rows, cols);
  double sq = 0;
  for (double e : x) sq += e * e;
  for (double& e : x) e /= std::sqrt(sq) * norm_scale + ns_eps;
  for (int it = 0; it < steps; ++it) {
    const bool quintic = coefficients.empty();
    const double a = quintic ? 3.4445 : coefficients[it][0];
    const double b = quintic ? -4.7750 : coefficients[it][1];
    const double c = quintic ? 2.0315 : coefficients[it][2];
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
  Mat o = NewtonSchulz5(u, m, n, h.ns_steps, h.ns_eps, h.coefficients, h.ns_norm_scale);
  const double md = static_cast<double>(m), nd = static_cast<double>(n);
  const double spectral = std::sqrt(std::max(1.0, md / nd));
  const double rms = 0.2 * std::sqrt(std::max(md, nd));
  double shape = spectral;
  switch (h.shape) {
    case RefShape::kNone: shape = 1.0; break;
    case RefShape::kSpectral: shape = spectral; break;
    case RefShape::kRms: shape = rms; break;
    case RefShape::kDefault:
      shape = h.variant == RefVariant::kNorMuonPaper ? 0.2 * std::sqrt(md * nd)
              : h.variant == RefVariant::kAdaMuon    ? rms
                                                     : spectral;
  }
  ++st.steps;
  Mat d(count);
  if (h.variant == RefVariant::kMuon) {
    for (size_t i = 0; i < count; ++i) d[i] = o[i] * shape;
  } else {
    double norm_o = 0, norm_on = 0;
    Mat on(count);
    if (h.variant == RefVariant::kAdaMuon) {
      const double bc2 = 1 - std::pow(h.beta2, st.steps);
      for (size_t i = 0; i < count; ++i) {
        st.v[i] += (1 - h.beta2) * (o[i] * o[i] - st.v[i]);
        on[i] = o[i] / (std::sqrt(st.v[i] / bc2) + h.eps);
      }
    } else if (h.columns) {
      for (int j = 0; j < n; ++j) {
        double mean = 0;
        for (int r = 0; r < m; ++r) mean += o[r * n + j] * o[r * n + j];
        mean /= m;
        st.v[j] += (1 - h.beta2) * (mean - st.v[j]);
        for (int r = 0; r < m; ++r) on[r * n + j] = o[r * n + j] / (std::sqrt(st.v[j]) + h.eps);
      }
    } else {
      for (int r = 0; r < m; ++r) {
        double mean = 0;
        for (int j = 0; j < n; ++j) mean += o[r * n + j] * o[r * n + j];
        mean /= n;
        st.v[r] += (1 - h.beta2) * (mean - st.v[r]);
        for (int j = 0; j < n; ++j) on[r * n + j] = o[r * n + j] / (std::sqrt(st.v[r]) + h.eps);
      }
    }
    for (size_t i = 0; i < count; ++i) {
      norm_o += o[i] * o[i];
      norm_on += on[i] * on[i];
    }
    norm_o = std::sqrt(norm_o);
    norm_on = std::sqrt(norm_on);
    double norm_part = 0;
    switch (h.variant) {
      case RefVariant::kNorMuon: norm_part = norm_o / (norm_on + h.eps); break;
      case RefVariant::kNorMuonPaper: norm_part = 1.0 / (norm_on + h.eps); break;
      case RefVariant::kAdaMuon:
        norm_part = std::sqrt(std::min(md, nd)) / (norm_on + h.eps);
        break;
      case RefVariant::kMuon: break;
    }
    for (size_t i = 0; i < count; ++i) d[i] = on[i] * norm_part * shape;
  }
  const double decay = grad ? 1 - h.lr * h.wd : 1.0;
  for (size_t i = 0; i < count; ++i) {
    const bool agree = d[i] * st.param[i] > 0;  // cautious: decay only where signs agree
    const double k = h.cautious && !agree ? 1.0 : decay;
    st.param[i] = st.param[i] * k - h.lr * d[i];
  }
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
