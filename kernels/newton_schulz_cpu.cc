#include "kernels/newton_schulz_cpu.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <mutex>

#include "base/bf16.h"
#include "kernels/elementwise_math.h"
#include "kernels/worker_pool.h"

namespace normuon {
namespace {

// OpenBLAS's thread setting is process-wide: how many NewtonSchulzCpu calls are running in the
// process (in-process ranks run theirs at once), and the setting found before the first of them.
std::mutex g_blas_mu;
int g_blas_users = 0;
int g_blas_saved = 1;

// While alive, OpenBLAS runs every call on the calling thread (see NsCpuWorkspace).
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() {
    std::lock_guard<std::mutex> lock(g_blas_mu);
    if (g_blas_users++ == 0) {
      g_blas_saved = openblas_get_num_threads();
      if (g_blas_saved != 1) openblas_set_num_threads(1);
    }
  }
  ~SingleThreadedBlas() {
    std::lock_guard<std::mutex> lock(g_blas_mu);
    if (--g_blas_users == 0 && g_blas_saved != 1) openblas_set_num_threads(g_blas_saved);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;
};

// OpenBLAS's thread setting as the program made it: the value found before the running calls
// set it to one thread, or the current value when none runs.
int CallerBlasThreads() {
  std::lock_guard<std::mutex> lock(g_blas_mu);
  return g_blas_users > 0 ? g_blas_saved : openblas_get_num_threads();
}

void RoundAll(float* p, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = RoundToBf16(p[i]);
}

// Rows [r0, r1) x columns [c0, c1) of a row-major matrix with leading dimension ld.
struct Region {
  int64_t r0, r1, c0, c1;
};

void RoundRegion(float* p, int64_t ld, const Region& g) {
  for (int64_t r = g.r0; r < g.r1; ++r) {
    RoundAll(p + r * ld + g.c0, static_cast<size_t>(g.c1 - g.c0));
  }
}

void CopyRegion(const float* src, float* dst, int64_t ld, const Region& g) {
  for (int64_t r = g.r0; r < g.r1; ++r) {
    std::copy(src + r * ld + g.c0, src + r * ld + g.c1, dst + r * ld + g.c0);
  }
}

// The output tiles of an m x n product: kNsTile x kNsTile squares in row-major order, the last
// row and column of tiles cut short by the matrix's edge. Set by (m, n) alone.
struct TileGrid {
  int64_t m = 0, n = 0, col_tiles = 0, count = 0;
  TileGrid(int64_t rows, int64_t cols)
      : m(rows), n(cols), col_tiles((cols + kNsTile - 1) / kNsTile),
        count(((rows + kNsTile - 1) / kNsTile) * col_tiles) {}
  Region Tile(int64_t t) const {
    const int64_t r0 = (t / col_tiles) * kNsTile, c0 = (t % col_tiles) * kNsTile;
    return {r0, std::min(m, r0 + kNsTile), c0, std::min(n, c0 + kNsTile)};
  }
};

// One Newton-Schulz iteration's three products on X (s x l), A and B (s x s):
//   kGram    A = X X^T
//   kPoly    B = b A + c A A
//   kUpdate  X_next = a X + B X
// each computed tile by tile: a tile of the output is one single-threaded sgemm of its rows of
// the left factor by its columns of the right one, so its bits depend on the tile alone.
enum class Product { kGram, kPoly, kUpdate };

struct Iteration {
  int64_t s = 0, l = 0;
  const float* x = nullptr;
  float* x_next = nullptr;
  float* a = nullptr;
  float* b = nullptr;
  std::array<float, 3> abc{};
  bool round_bf16 = false;
  Product product = Product::kGram;
  TileGrid grid{0, 0};
};

void RunTile(void* context, int64_t t) {
  const Iteration& it = *static_cast<const Iteration*>(context);
  const Region g = it.grid.Tile(t);
  const int rows = static_cast<int>(g.r1 - g.r0), cols = static_cast<int>(g.c1 - g.c0);
  const int s = static_cast<int>(it.s), l = static_cast<int>(it.l);
  switch (it.product) {
    case Product::kGram:
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, l, 1.0f, it.x + g.r0 * l, l,
                  it.x + g.c0 * l, l, 0.0f, it.a + g.r0 * s + g.c0, s);
      if (it.round_bf16) RoundRegion(it.a, s, g);
      break;
    case Product::kPoly:
      CopyRegion(it.a, it.b, s, g);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols, s, it.abc[2],
                  it.a + g.r0 * s, s, it.a + g.c0, s, it.abc[1], it.b + g.r0 * s + g.c0, s);
      if (it.round_bf16) RoundRegion(it.b, s, g);
      break;
    case Product::kUpdate:
      CopyRegion(it.x, it.x_next, l, g);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols, s, 1.0f, it.b + g.r0 * s,
                  s, it.x + g.c0, l, it.abc[0], it.x_next + g.r0 * l + g.c0, l);
      if (it.round_bf16) RoundRegion(it.x_next, l, g);
      break;
  }
}

}  // namespace

NsCpuWorkspace::NsCpuWorkspace() = default;
NsCpuWorkspace::~NsCpuWorkspace() = default;

void NsCpuWorkspace::Reserve(int64_t short_side, int64_t long_side) {
  const size_t xs = static_cast<size_t>(short_side * long_side);
  const size_t as = static_cast<size_t>(short_side * short_side);
  if (x.size() < xs) x.resize(xs);
  if (x_next.size() < xs) x_next.resize(xs);
  if (a.size() < as) a.resize(as);
  if (b.size() < as) b.resize(as);
  if (pool == nullptr) {
    pool = std::make_unique<WorkerPool>(threads > 0 ? threads : CallerBlasThreads());
  }
}

void NewtonSchulzCpu(const float* u, float* o, int64_t rows, int64_t cols,
                     const std::vector<std::array<float, 3>>& coefficients, float ns_eps,
                     float norm_scale, bool round_bf16, NsCpuWorkspace* ws) {
  const bool transposed = rows > cols;
  const int64_t s = std::min(rows, cols);  // X is s x l, s <= l
  const int64_t l = std::max(rows, cols);
  ws->Reserve(s, l);
  const SingleThreadedBlas blas_scope;
  float* x = ws->x.data();
  float* x_next = ws->x_next.data();
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

  Iteration it;
  it.s = s;
  it.l = l;
  it.a = ws->a.data();
  it.b = ws->b.data();
  it.round_bf16 = round_bf16;
  const TileGrid square(s, s), wide(s, l);
  for (const auto& abc : coefficients) {
    it.x = x;
    it.x_next = x_next;
    it.abc = abc;
    it.product = Product::kGram;
    it.grid = square;
    ws->pool->Run(it.grid.count, RunTile, &it);
    it.product = Product::kPoly;
    ws->pool->Run(it.grid.count, RunTile, &it);
    it.product = Product::kUpdate;
    it.grid = wide;
    ws->pool->Run(it.grid.count, RunTile, &it);
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
