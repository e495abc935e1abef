// random_fill.h: the tools' and benchmarks' random parameters and gradients. Plain C++ (no
// Abseil): bench/gpu_ceilings.cu, compiled by nvcc, includes it too.
#ifndef NORMUON_TOOLS_COMMON_RANDOM_FILL_H_
#define NORMUON_TOOLS_COMMON_RANDOM_FILL_H_

#include <cstdint>

namespace normuon_tools {

// splitmix64: a tiny, fast, well-mixed generator; its state is a counter.
inline uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Fills out[0..n) with elements [first, first + n) of an approximately N(0, sigma^2) sequence:
// per element, the sum of the four 16-bit parts of one splitmix64 draw, centered and scaled to
// unit variance (Irwin-Hall, 4 terms). Fast enough for hundreds of millions of elements. The
// sequence is a pure function of (seed, stream, sub), so every parameter (stream) and step (sub)
// has its own reproducible values, and since splitmix64's state is a counter, a rank can generate
// just its rows of a matrix (first = row_begin * cols) and get what one rank holding all of them
// would.
void FillNormal(float* out, int64_t n, float sigma, uint64_t seed, uint64_t stream, uint64_t sub,
                int64_t first = 0);

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_COMMON_RANDOM_FILL_H_
