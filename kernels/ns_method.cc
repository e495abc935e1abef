#include "kernels/ns_method.h"

#include <algorithm>
#include <cmath>

namespace normuon {

std::vector<int32_t> DefaultGramRestarts(int32_t iterations, bool polar_express) {
  if (iterations < 3) return {};
  if (!polar_express) return {iterations - 2};
  std::vector<int32_t> r;
  for (int32_t i = std::max(1, iterations - 3); i < iterations; ++i) r.push_back(i);
  return r;
}

double NsOutputNormBound(const std::vector<std::array<float, 3>>& coefficients, float norm_scale,
                         int64_t short_side) {
  // Singular values of X0 = U / (||U||_F * norm_scale + eps) lie in [0, 1 / norm_scale].
  const double top = norm_scale > 0.0f ? std::max(1.0, 1.0 / norm_scale) : 1.0;
  constexpr int kSamples = 1 << 14;
  double gain = 0.0;
  for (int i = 0; i <= kSamples; ++i) {
    double x = top * static_cast<double>(i) / kSamples;
    for (const auto& abc : coefficients) {
      const double x2 = x * x;
      x = x * (abc[0] + x2 * (abc[1] + x2 * abc[2]));
    }
    gain = std::max(gain, std::fabs(x));
  }
  return 1.5 * std::max(gain, 1.0) * std::sqrt(static_cast<double>(std::max<int64_t>(short_side, 1)));
}

}  // namespace normuon
