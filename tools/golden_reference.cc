// golden_reference.cc: the float64 reference step and random cases; see golden_reference.h.
#include "tools/golden_reference.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tools/common/random_fill.h"

namespace normuon_tools {
namespace {

using Matrix = std::vector<double>;  // row-major

// C (r x c) = A (r x k) * B (k x c).
Matrix MatMul(const Matrix& a, const Matrix& b, int64_t r, int64_t k, int64_t c) {
  Matrix out(r * c, 0.0);
  for (int64_t i = 0; i < r; ++i) {
    for (int64_t p = 0; p < k; ++p) {
      const double aip = a[i * k + p];
      for (int64_t j = 0; j < c; ++j) out[i * c + j] += aip * b[p * c + j];
    }
  }
  return out;
}

Matrix Transpose(const Matrix& a, int64_t r, int64_t c) {
  Matrix out(r * c);
  for (int64_t i = 0; i < r; ++i) {
    for (int64_t j = 0; j < c; ++j) out[j * r + i] = a[i * c + j];
  }
  return out;
}

double FrobeniusNorm(const Matrix& a) {
  double s = 0.0;
  for (double v : a) s += v * v;
  return std::sqrt(s);
}

// zeropower_via_newtonschulz5 in float64: g is rows x cols; returns rows x cols.
Matrix NewtonSchulz(const Matrix& g, int64_t rows, int64_t cols, int steps) {
  const double a = 3.4445, b = -4.7750, c = 2.0315;
  const bool tall = rows > cols;
  Matrix x = tall ? Transpose(g, rows, cols) : g;
  const int64_t s = tall ? cols : rows;  // X is s x l, s <= l
  const int64_t l = tall ? rows : cols;
  const double norm = FrobeniusNorm(x) + 1e-7;
  for (double& v : x) v /= norm;
  for (int it = 0; it < steps; ++it) {
    const Matrix xt = Transpose(x, s, l);
    const Matrix am = MatMul(x, xt, s, l, s);  // A = X X^T
    Matrix bm = MatMul(am, am, s, s, s);       // A A
    for (int64_t i = 0; i < s * s; ++i) bm[i] = b * am[i] + c * bm[i];
    const Matrix bx = MatMul(bm, x, s, s, l);  // B X
    for (int64_t i = 0; i < s * l; ++i) x[i] = a * x[i] + bx[i];
  }
  return tall ? Transpose(x, s, l) : x;
}

double Lerp(double start, double end, double weight) { return start + weight * (end - start); }

void ReferenceNormuon(GoldenCase* c) {
  const int64_t m = c->rows(), n = c->cols();
  Matrix w = c->param_init.values;
  Matrix momentum(m * n, 0.0);
  std::vector<double> v(m, 0.0);
  for (int s = 0; s < c->steps; ++s) {
    const Matrix& grad = c->grads[s].values;
    Matrix u(m * n);
    for (int64_t i = 0; i < m * n; ++i) {
      momentum[i] = Lerp(momentum[i], grad[i], 1.0 - c->beta1);
      u[i] = c->nesterov ? Lerp(grad[i], momentum[i], c->beta1) : momentum[i];
    }
    Matrix o = NewtonSchulz(u, m, n, c->ns_steps);
    const double vnorm = FrobeniusNorm(o);
    for (int64_t i = 0; i < m; ++i) {
      double mean = 0.0;
      for (int64_t j = 0; j < n; ++j) mean += o[i * n + j] * o[i * n + j];
      mean /= static_cast<double>(n);
      v[i] = Lerp(v[i], mean, 1.0 - c->beta2);
      const double step_size = 1.0 / (std::sqrt(v[i]) + c->eps);
      for (int64_t j = 0; j < n; ++j) o[i * n + j] *= step_size;
    }
    const double vnorm_new = FrobeniusNorm(o);
    const double scale = vnorm / (vnorm_new + c->eps) *
                         std::sqrt(std::max(1.0, static_cast<double>(m) / static_cast<double>(n)));
    for (int64_t i = 0; i < m * n; ++i) {
      w[i] = w[i] * (1.0 - c->lr * c->weight_decay) - c->lr * (o[i] * scale);
    }
    c->params[s].values = w;
  }
  GoldenArray mom{"momentum_final", m, n, momentum, 0};
  GoldenArray sec{"second_moment_final", m, 1, v, 0};
  c->final_state = {std::move(mom), std::move(sec)};
}

void ReferenceAdamw(GoldenCase* c) {
  const int64_t size = c->param_init.size();
  Matrix w = c->param_init.values;
  Matrix buf1(size, 0.0), buf2(size, 0.0);
  for (int s = 0; s < c->steps; ++s) {
    const Matrix& grad = c->grads[s].values;
    const double step = s + 1;
    const double bc1 = 1.0 - std::pow(c->beta1, step);
    const double bc2 = 1.0 - std::pow(c->beta2, step);
    for (int64_t i = 0; i < size; ++i) {
      buf1[i] = Lerp(buf1[i], grad[i], 1.0 - c->beta1);
      buf2[i] = Lerp(buf2[i], grad[i] * grad[i], 1.0 - c->beta2);
      const double update = (buf1[i] / bc1) / (std::sqrt(buf2[i] / bc2) + c->eps);
      w[i] = w[i] * (1.0 - c->lr * c->weight_decay) - c->lr * update;
    }
    c->params[s].values = w;
  }
  GoldenArray m1{"exp_avg_final", c->rows(), c->cols(), buf1, 0};
  GoldenArray m2{"exp_avg_sq_final", c->rows(), c->cols(), buf2, 0};
  c->final_state = {std::move(m1), std::move(m2)};
}

// A fixed generator (splitmix64 + Box-Muller), identical on every platform, unlike
// std::normal_distribution.
class Normal {
 public:
  explicit Normal(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
  double Next() {
    if (have_spare_) {
      have_spare_ = false;
      return spare_;
    }
    double u1 = 0.0;
    do {
      u1 = Uniform();
    } while (u1 <= 0.0);
    const double u2 = Uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double t = 2.0 * 3.14159265358979323846 * u2;
    spare_ = r * std::sin(t);
    have_spare_ = true;
    return r * std::cos(t);
  }

 private:
  double Uniform() {  // [0, 1), 53 bits
    return static_cast<double>(SplitMix64(&state_) >> 11) * (1.0 / 9007199254740992.0);
  }
  uint64_t state_;
  double spare_ = 0.0;
  bool have_spare_ = false;
};

GoldenArray RandomArray(const std::string& name, int64_t rows, int64_t cols, double std_dev,
                        Normal* rng) {
  GoldenArray a;
  a.name = name;
  a.rows = rows;
  a.cols = cols;
  a.values.resize(rows * cols);
  for (double& v : a.values) v = std_dev * rng->Next();
  return a;
}

}  // namespace

absl::Status ComputeReference(GoldenCase* c) {
  const int64_t size = c->param_init.size();
  if (size <= 0 || static_cast<int64_t>(c->param_init.values.size()) != size || c->steps < 1 ||
      static_cast<int>(c->grads.size()) < c->steps) {
    return absl::InvalidArgumentError(
        absl::StrCat("case '", c->name, "': needs param_init and ", c->steps, " gradients"));
  }
  for (int s = 0; s < c->steps; ++s) {
    if (static_cast<int64_t>(c->grads[s].values.size()) != size) {
      return absl::InvalidArgumentError(
          absl::StrCat("case '", c->name, "': grad_", s, " has the wrong size"));
    }
  }
  c->params.resize(c->steps);
  for (int s = 0; s < c->steps; ++s) {
    c->params[s].name = absl::StrCat("param_", s);
    c->params[s].rows = c->rows();
    c->params[s].cols = c->cols();
  }
  if (c->kind == GoldenKind::kNormuon) {
    ReferenceNormuon(c);
  } else {
    ReferenceAdamw(c);
  }
  return absl::OkStatus();
}

absl::StatusOr<GoldenCase> MakeRandomCase(const RandomCaseSpec& spec) {
  if (spec.rows <= 0 || spec.cols <= 0 || spec.steps < 1 || spec.ns_steps < 1) {
    return absl::InvalidArgumentError(absl::StrCat("case '", spec.name, "': bad shape or steps"));
  }
  GoldenCase c;
  c.name = spec.name;
  c.kind = spec.kind;
  c.lr = spec.lr;
  c.beta1 = spec.beta1;
  c.beta2 = spec.beta2;
  c.weight_decay = spec.weight_decay;
  c.eps = spec.eps;
  c.nesterov = spec.nesterov;
  c.ns_steps = spec.ns_steps;
  c.steps = spec.steps;
  Normal rng(spec.seed);
  c.param_init = RandomArray("param_init", spec.rows, spec.cols, spec.init_std, &rng);
  for (int s = 0; s < spec.steps; ++s) {
    c.grads.push_back(
        RandomArray(absl::StrCat("grad_", s), spec.rows, spec.cols, spec.grad_std, &rng));
  }
  absl::Status status = ComputeReference(&c);
  if (!status.ok()) return status;
  return c;
}

}  // namespace normuon_tools
