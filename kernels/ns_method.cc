#include "kernels/ns_method.h"

#include <algorithm>
#include <cmath>

namespace normuon {

namespace {

constexpr std::array<float, 3> kQuintic = {3.4445f, -4.7750f, 2.0315f};
constexpr std::array<std::array<float, 3>, 5> kPolarExpress = {{
    {8.156554524902461f, -22.48329292557795f, 15.878769915207462f},
    {4.042929935166739f, -2.808917465908714f, 0.5000178451051316f},
    {3.8916678022926607f, -2.772484153217685f, 0.5060648178503393f},
    {3.285753657755655f, -2.3681294933425376f, 0.46449024233003106f},
    {2.3465413258596377f, -1.7097828382687081f, 0.42323551169305323f},
}};

}  // namespace

std::vector<std::array<float, 3>> QuinticCoefficients(int32_t iterations) {
  return std::vector<std::array<float, 3>>(static_cast<size_t>(std::max(0, iterations)), kQuintic);
}

std::vector<std::array<float, 3>> PolarExpressCoefficients(int32_t iterations) {
  std::vector<std::array<float, 3>> out;
  for (int32_t i = 0; i < iterations; ++i) {
    out.push_back(kPolarExpress[std::min<size_t>(i, kPolarExpress.size() - 1)]);
  }
  return out;
}

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
