// The random fill of random_fill.h.
#include "tools/common/random_fill.h"

#include <cmath>

namespace normuon_tools {

void FillNormal(float* out, int64_t n, float sigma, uint64_t seed, uint64_t stream, uint64_t sub,
                int64_t first) {
  uint64_t state = seed * 0x2545F4914F6CDD1Dull ^ (stream + 1) * 0x9E3779B97F4A7C15ull ^
                   (sub + 1) * 0xD1B54A32D192ED03ull;
  SplitMix64(&state);
  state += static_cast<uint64_t>(first) * 0x9E3779B97F4A7C15ull;
  constexpr double kMean = 4 * 65535.0 / 2;
  const double inv_std = 1.0 / std::sqrt(4 * (65536.0 * 65536.0 - 1) / 12.0);
  const float scale = static_cast<float>(inv_std) * sigma;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = SplitMix64(&state);
    const uint32_t s = static_cast<uint32_t>(r & 0xFFFF) +
                       static_cast<uint32_t>((r >> 16) & 0xFFFF) +
                       static_cast<uint32_t>((r >> 32) & 0xFFFF) + static_cast<uint32_t>(r >> 48);
    out[i] = static_cast<float>(s - kMean) * scale;
  }
}

}  // namespace normuon_tools
