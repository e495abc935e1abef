// Row layouts of the multi-rank tests: FSDP2's even chunks and random ragged covers (ranks with
// no rows, ranks out of row order), and the deterministic random values they fill.
#ifndef NORMUON_TESTS_TESTING_ROW_LAYOUTS_H_
#define NORMUON_TESTS_TESTING_ROW_LAYOUTS_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace normuon::testing {

struct Range {
  int64_t begin, count;
};

// split(rows, world) -> one contiguous range per rank covering [0, rows).
using Split = std::function<std::vector<Range>(int64_t rows, int world)>;

// FSDP2's dim-0 layout: ceil(rows / world) rows per rank, the last ranks short or empty.
inline std::vector<Range> Fsdp2(int64_t rows, int world) {
  const int64_t chunk = (rows + world - 1) / world;
  std::vector<Range> out;
  for (int r = 0; r < world; ++r) {
    const int64_t b = std::min(rows, r * chunk), e = std::min(rows, (r + 1) * chunk);
    out.push_back({b, e - b});
  }
  return out;
}

// Random cuts (repeats allowed: ranks with no rows), ranks in reverse row order (rank 0 holds
// the last rows); `seed` picks another split of the same shape.
inline Split Ragged(uint32_t seed = 0) {
  return [seed](int64_t rows, int world) {
    std::mt19937 gen(static_cast<uint32_t>(rows * 131 + world) + seed);
    std::uniform_int_distribution<int64_t> cut(0, rows);
    std::vector<int64_t> cuts{0, rows};
    for (int i = 1; i < world; ++i) cuts.push_back(cut(gen));
    std::sort(cuts.begin(), cuts.end());
    std::vector<Range> out(world);
    for (int r = 0; r < world; ++r) {
      const int slot = world - 1 - r;
      out[r] = {cuts[slot], cuts[slot + 1] - cuts[slot]};
    }
    return out;
  };
}

inline std::vector<float> Random(size_t n, uint32_t seed, float scale) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

}  // namespace normuon::testing

#endif  // NORMUON_TESTS_TESTING_ROW_LAYOUTS_H_
