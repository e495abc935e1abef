#include "kernels/newton_schulz_cpu.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "base/bf16.h"
#include "kernels/elementwise_math.h"

namespace normuon {

void NsCpuWorkspace::Reserve(int64_t short_side, int64_t long_side) {
  const size_t xs = static_cast<size_t>(short_side * long_side);
  const size_t as = static_cast<size_t>(short_side * short_side);
  if (x.size() < xs) x.resize(xs);
  if (x_next.size() < xs) x_next.resize(xs);
  if (a.size() < as) a.resize(as);
  if (b.size() < as) b.resize(as);
}

namespace {

void RoundAll(float* p, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = RoundToBf16(p[i]);
}

}  // namespace

void NewtonSchulzCpu(const float* u, float* o, int64_t rows, int64_t cols,
                     const std::vector<std::array<float, 3>>& coefficients, float ns_eps,
                     float norm_scale, bool round_bf16, NsCpuWorkspace* ws) {
  const bool transposed = rows > cols;
  const int64_t s = std::min(rows, cols);  // X is s x l, s <= l
  const int64_t l = std::max(rows, cols);
  ws->Reserve(s, l);
  float* x = ws->x.data();
  float* x_next = ws->x_next.data();
  float* a = ws->a.data();
  float* b = ws->b.data();
  const size_t xn = static_cast<size_t>(s * l);

  // X = u (or u^T), rounded to the wire precision, then scaled to unit Frobenius norm.
  if (transposed) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) x[j * l + i] = u[i * cols + j];
  } else {
    std::copy(u, u + xn, x);
  }
  if (round_bf16) RoundAll(x, xn);
  double sq = 0.0;
  for (size_t i = 0; i < xn; ++i) sq += static_cast<double>(x[i]) * x[i];
  const float inv = NsInputScale(sq, norm_scale, ns_eps);
  for (size_t i = 0; i < xn; ++i) x[i] *= inv;
  if (round_bf16) RoundAll(x, xn);

  for (const auto& abc : coefficients) {
    // A = X X^T (s x s)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s, s, l, 1.0f, x, l, x, l, 0.0f, a, s);
    if (round_bf16) RoundAll(a, static_cast<size_t>(s * s));
    // B = b*A + c*(A A)
    std::copy(a, a + s * s, b);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s, s, s, abc[2], a, s, a, s, abc[1], b,
                s);
    if (round_bf16) RoundAll(b, static_cast<size_t>(s * s));
    // X = a*X + B X
    std::copy(x, x + xn, x_next);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s, l, s, 1.0f, b, s, x, l, abc[0],
                x_next, l);
    if (round_bf16) RoundAll(x_next, xn);
    std::swap(x, x_next);
  }

  if (transposed) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) o[i * cols + j] = x[j * l + i];
  } else {
    std::copy(x, x + xn, o);
  }
}

}  // namespace normuon
