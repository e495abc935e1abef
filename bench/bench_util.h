// bench_util.h: small pieces shared by the benchmarks in bench/, CPU and GPU alike: the
// Newton-Schulz FLOP count, a fast reproducible random fill, and the check of whether the user
// asked for a --benchmark_filter (the heavy cases run only on request).
#ifndef NORMUON_BENCH_BENCH_UTIL_H_
#define NORMUON_BENCH_BENCH_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

namespace normuon_bench {

// FLOPs of Newton-Schulz on one rows x cols matrix: per iteration 4*s^2*l + 2*s^3 (A = X X^T,
// B = b A + c A A, X' = a X + B X), s = min(rows, cols), l = max. The normalization and the
// copies between GEMMs are not counted.
inline double NsFlops(int64_t rows, int64_t cols, int iterations = 5) {
  const double s = static_cast<double>(std::min(rows, cols));
  const double l = static_cast<double>(std::max(rows, cols));
  return iterations * (4.0 * s * s * l + 2.0 * s * s * s);
}

// splitmix64 (its state is a counter).
inline uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// out[0..n) = approximately N(mean, sigma^2): the sum of four 16-bit uniforms of one 64-bit
// draw (Irwin-Hall), centered and scaled; |x| when abs. Fast enough for hundreds of millions of
// elements; reproducible from seed.
inline void FillNormalHost(float* out, int64_t n, float mean, float sigma, uint64_t seed,
                           bool abs = false) {
  uint64_t state = seed * 0x2545F4914F6CDD1Dull + 1;
  constexpr double kCenter = 4 * 65535.0 / 2;
  const double inv_std = 1.0 / std::sqrt(4 * (65536.0 * 65536.0 - 1) / 12.0);
  const float scale = static_cast<float>(inv_std) * sigma;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = SplitMix64(&state);
    const uint32_t s = static_cast<uint32_t>(r & 0xFFFF) +
                       static_cast<uint32_t>((r >> 16) & 0xFFFF) +
                       static_cast<uint32_t>((r >> 32) & 0xFFFF) + static_cast<uint32_t>(r >> 48);
    const float x = static_cast<float>(s - kCenter) * scale;
    out[i] = mean + (abs ? std::fabs(x) : x);
  }
}

// True when argv holds --benchmark_filter=... (or "--benchmark_filter X"): the user chose which
// cases to run, so the expensive ones may be registered too.
inline bool FilterGiven(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--benchmark_filter", 0) == 0) return true;
  }
  return false;
}

}  // namespace normuon_bench

#endif  // NORMUON_BENCH_BENCH_UTIL_H_
