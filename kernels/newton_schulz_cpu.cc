#include "kernels/newton_schulz_cpu.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <type_traits>

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
void RoundRegion(double*, int64_t, const Region&) {}  // float64 runs keep every value

template <typename T>
void CopyRegion(const T* src, T* dst, int64_t ld, const Region& g) {
  for (int64_t r = g.r0; r < g.r1; ++r) {
    std::copy(src + r * ld + g.c0, src + r * ld + g.c1, dst + r * ld + g.c0);
  }
}

// One single-threaded BLAS call per tile (row-major): C = alpha A op(B) + beta C, and the lower
// triangle of C = alpha A A^T + beta C.
void Gemm(bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a,
              lda, b, ldb, beta, c, ldc);
}
void Gemm(bool trans_b, int m, int n, int k, double alpha, const double* a, int lda,
          const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a,
              lda, b, ldb, beta, c, ldc);
}
void SyrkLower(int n, int k, float alpha, const float* a, int lda, float beta, float* c, int ldc) {
  cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, n, k, alpha, a, lda, beta, c, ldc);
}
void SyrkLower(int n, int k, double alpha, const double* a, int lda, double beta, double* c,
               int ldc) {
  cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, n, k, alpha, a, lda, beta, c, ldc);
}

// One product of the iteration, cut into output tiles of kNsTile (set by the shape alone):
//   C (m x n) = alpha * A (m x k) * B (k x n) [+ beta * C0],
// with B = A^T when `gram` (then n = m). C0 (leading dimension ldc, may be C itself) is copied
// into the tile first, so the tile's bits depend on the tile alone. `lower_only`: C is known to
// be symmetric (a Gram product, or a product of two commuting symmetric matrices): only the tiles
// on and below the diagonal are computed (a Gram product's diagonal tiles through syrk), and each
// is mirrored into the upper triangle, so C is exactly symmetric.
template <typename T>
struct TiledProduct {
  int64_t m = 0, n = 0, k = 0;
  const T* a = nullptr;
  int64_t lda = 0;
  const T* b = nullptr;
  int64_t ldb = 0;
  bool gram = false;
  bool lower_only = false;
  T alpha = 1, beta = 0;
  const T* c0 = nullptr;  // null: no beta term
  T* c = nullptr;
  int64_t ldc = 0;
  bool round_bf16 = false;

  // Triangle-only products use smaller tiles (more of the upper triangle skipped).
  int64_t Tile() const { return lower_only ? kNsSymmetricTile : kNsTile; }
  int64_t RowTiles() const { return (m + Tile() - 1) / Tile(); }
  int64_t ColTiles() const { return (n + Tile() - 1) / Tile(); }
  int64_t Tasks() const {
    const int64_t rt = RowTiles();
    return lower_only ? rt * (rt + 1) / 2 : rt * ColTiles();
  }
  // Task t's tile (row block i, column block j): row-major order, or the lower triangle's
  // (i, j <= i) in row-major order.
  void TileOf(int64_t t, int64_t* i, int64_t* j) const {
    if (!lower_only) {
      *i = t / ColTiles();
      *j = t % ColTiles();
      return;
    }
    int64_t row = 0;
    while ((row + 1) * (row + 2) / 2 <= t) ++row;
    *i = row;
    *j = t - row * (row + 1) / 2;
  }
};

template <typename T>
void RunProductTile(void* context, int64_t t) {
  const TiledProduct<T>& p = *static_cast<const TiledProduct<T>*>(context);
  int64_t ti = 0, tj = 0;
  p.TileOf(t, &ti, &tj);
  const int64_t tile = p.Tile();
  const Region g{ti * tile, std::min(p.m, (ti + 1) * tile), tj * tile,
                 std::min(p.n, (tj + 1) * tile)};
  const int rows = static_cast<int>(g.r1 - g.r0), cols = static_cast<int>(g.c1 - g.c0);
  const int k = static_cast<int>(p.k), lda = static_cast<int>(p.lda),
            ldb = static_cast<int>(p.ldb), ldc = static_cast<int>(p.ldc);
  if (p.c0 != nullptr && p.c0 != p.c) CopyRegion(p.c0, p.c, p.ldc, g);
  const T beta = p.c0 != nullptr ? p.beta : T(0);
  T* c = p.c + g.r0 * p.ldc + g.c0;
  const T* a_rows = p.a + g.r0 * p.lda;
  if (p.gram && p.lower_only && ti == tj) {
    SyrkLower(rows, k, p.alpha, a_rows, lda, beta, c, ldc);
  } else if (p.gram) {
    Gemm(true, rows, cols, k, p.alpha, a_rows, lda, p.a + g.c0 * p.lda, lda, beta, c, ldc);
  } else {
    Gemm(false, rows, cols, k, p.alpha, a_rows, lda, p.b + g.c0, ldb, beta, c, ldc);
  }
  if (p.round_bf16) RoundRegion(p.c, p.ldc, g);
  if (!p.lower_only) return;
  for (int64_t r = g.r0; r < g.r1; ++r) {
    const int64_t last = ti == tj ? r : g.c1;  // the diagonal tile: its strict lower triangle
    for (int64_t col = g.c0; col < last; ++col) p.c[col * p.ldc + r] = p.c[r * p.ldc + col];
  }
}

template <typename T>
void Run(WorkerPool* pool, TiledProduct<T>& p) {
  if (pool != nullptr) {
    pool->Run(p.Tasks(), RunProductTile<T>, &p);
  } else {
    for (int64_t t = 0; t < p.Tasks(); ++t) RunProductTile<T>(&p, t);
  }
}

// The buffers one orthogonalization of an s x l X uses.
template <typename T>
struct Buffers {
  T* x;       // s x l: X0 on entry
  T* x_next;  // s x l
  T* a;       // s x s: A (standard) or R (Gram)
  T* b;       // s x s: B (standard) or Z' (Gram)
  T* q;       // s x s: Gram only (the three below)
  T* q_next;
  T* rz;
};

// The s x s product C = alpha A B + beta C0 (C0 copied into C first; null: no beta term), or the
// Gram product alpha A A^T + beta C0 when b is null. symmetric: C is known to be symmetric (a
// Gram product, or two commuting symmetric factors): triangle-only tiles.
template <typename T>
void SquareProduct(WorkerPool* pool, int64_t s, const T* a, const T* b, T alpha, T beta,
                   const T* c0, T* c, bool symmetric, bool round) {
  TiledProduct<T> p;
  p.m = p.n = p.k = s;
  p.a = a;
  p.lda = s;
  p.b = b;
  p.ldb = s;
  p.gram = b == nullptr;
  p.lower_only = symmetric;
  p.alpha = alpha;
  p.beta = beta;
  p.c0 = c0;
  p.c = c;
  p.ldc = s;
  p.round_bf16 = round;
  Run(pool, p);
}

// out (s x l) = Q (s x s) X (s x l) + beta X0 (x0 null: no beta term).
template <typename T>
void ApplyLeft(WorkerPool* pool, int64_t s, int64_t l, const T* q, const T* x, T beta,
               const T* x0, T* out, bool round) {
  TiledProduct<T> p;
  p.m = s;
  p.n = l;
  p.k = s;
  p.a = q;
  p.lda = s;
  p.b = x;
  p.ldb = l;
  p.beta = beta;
  p.c0 = x0;
  p.c = out;
  p.ldc = l;
  p.round_bf16 = round;
  Run(pool, p);
}

// R = X X^T (s x s) from X (s x l).
template <typename T>
void GramOf(WorkerPool* pool, int64_t s, int64_t l, const T* x, T* r, bool symmetric, bool round) {
  TiledProduct<T> p;
  p.m = p.n = s;
  p.k = l;
  p.a = x;
  p.lda = l;
  p.gram = true;
  p.lower_only = symmetric;
  p.c = r;
  p.ldc = s;
  p.round_bf16 = round;
  Run(pool, p);
}

template <typename T>
void ApplyQ(WorkerPool* pool, int64_t s, int64_t l, const T* q, const T* x, T* out, bool round) {
  ApplyLeft<T>(pool, s, l, q, x, T(0), nullptr, out, round);
}

// X <- a X + (b A + c A A) X per coefficient triple, every tile through sgemm (the official
// numerics' tiles). Returns the buffer holding the result.
template <typename T>
T* StandardIterations(Buffers<T> m, int64_t s, int64_t l, const NsCpuOptions& opt,
                      WorkerPool* pool) {
  const bool round = opt.round_bf16;
  for (const auto& abc : opt.coefficients) {
    GramOf(pool, s, l, m.x, m.a, false, round);                                     // A = X X^T
    SquareProduct<T>(pool, s, m.a, m.a, abc[2], abc[1], m.a, m.b, false, round);    // B
    ApplyLeft<T>(pool, s, l, m.b, m.x, abc[0], m.x, m.x_next, round);             // B X + a X
    std::swap(m.x, m.x_next);
  }
  return m.x;
}

// The Gram iteration (ns_method.h): R = X X^T, Q = I; per triple Z' = b R + c R R,
// Q = Q Z' + a Q (Z' + a I while Q = I), and, when the next iteration uses it,
// R = Z' (R Z' + a R) + a (R Z' + a R); a restart before iteration i sets X = Q X, R = X X^T,
// Q = I; the output is Q X. Returns the buffer holding it.
template <typename T>
T* GramIterations(Buffers<T> m, int64_t s, int64_t l, const NsCpuOptions& opt, bool symmetric,
                  WorkerPool* pool) {
  const bool round = opt.round_bf16;
  const size_t iterations = opt.coefficients.size();
  size_t next_restart = 0;
  auto restarts_before = [&](size_t i) {
    return next_restart < opt.restarts.size() &&
           static_cast<size_t>(opt.restarts[next_restart]) == i;
  };
  GramOf(pool, s, l, m.x, m.a, symmetric, round);
  bool q_identity = true;
  for (size_t i = 0; i < iterations; ++i) {
    if (restarts_before(i)) {
      ++next_restart;
      if (!q_identity) {
        ApplyQ(pool, s, l, m.q, m.x, m.x_next, round);
        std::swap(m.x, m.x_next);
        GramOf(pool, s, l, m.x, m.a, symmetric, round);
        q_identity = true;
      }
    }
    const auto& abc = opt.coefficients[i];
    const T ca = abc[0], cb = abc[1], cc = abc[2];
    // Z' = c R R + b R
    SquareProduct<T>(pool, s, m.a, nullptr, cc, cb, m.a, m.b, symmetric, round);
    if (q_identity) {  // Q = Z' + a I
      std::copy(m.b, m.b + s * s, m.q);
      for (int64_t d = 0; d < s; ++d) m.q[d * s + d] += ca;
      if (round) RoundRegion(m.q, s, Region{0, s, 0, s});
      q_identity = false;
    } else {  // Q = Q Z' + a Q
      SquareProduct<T>(pool, s, m.q, m.b, T(1), ca, m.q, m.q_next, symmetric, round);
      std::swap(m.q, m.q_next);
    }
    if (i + 1 < iterations && !restarts_before(i + 1)) {
      // R Z' + a R, then R = Z' (R Z' + a R) + a (R Z' + a R)
      SquareProduct<T>(pool, s, m.a, m.b, T(1), ca, m.a, m.rz, symmetric, round);
      SquareProduct<T>(pool, s, m.b, m.rz, T(1), ca, m.rz, m.a, symmetric, round);
    }
  }
  ApplyQ(pool, s, l, m.q, m.x, m.x_next, round);
  return m.x_next;
}

// X = u (or u^T when rows > cols), rounded to the wire precision, scaled to unit Frobenius norm
// (times 1 / norm_scale). Returns the sum of squares it scaled by.
template <typename T>
double LoadScaled(const T* u, int64_t rows, int64_t cols, T* x, const NsCpuOptions& opt) {
  const int64_t l = std::max(rows, cols);
  const size_t xn = static_cast<size_t>(rows * cols);
  if (rows > cols) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) x[j * l + i] = u[i * cols + j];
  } else {
    std::copy(u, u + xn, x);
  }
  if constexpr (std::is_same_v<T, float>) {
    if (opt.round_bf16) RoundAll(x, xn);
  }
  double sq = 0.0;
  for (size_t i = 0; i < xn; ++i) sq += static_cast<double>(x[i]) * x[i];
  if constexpr (std::is_same_v<T, float>) {
    const float inv = NsInputScale(sq, opt.norm_scale, opt.ns_eps);
    for (size_t i = 0; i < xn; ++i) x[i] *= inv;
    if (opt.round_bf16) RoundAll(x, xn);
  } else {
    const double inv = 1.0 / (std::sqrt(sq) * opt.norm_scale + opt.ns_eps);
    for (size_t i = 0; i < xn; ++i) x[i] *= inv;
  }
  return sq;
}

template <typename T>
void Store(const T* x, int64_t rows, int64_t cols, T* o) {
  const int64_t l = std::max(rows, cols);
  if (rows > cols) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) o[i * cols + j] = x[j * l + i];
  } else {
    std::copy(x, x + rows * cols, o);
  }
}

// Why a Gram result (s x l) cannot be returned, or kNone.
NsFallback CheckGramResult(const float* x, int64_t s, int64_t l, const NsCpuOptions& opt) {
  double sq = 0.0;
  const size_t n = static_cast<size_t>(s * l);
  for (size_t i = 0; i < n; ++i) sq += static_cast<double>(x[i]) * x[i];
  if (!std::isfinite(sq)) return NsFallback::kNonFinite;
  const double bound = NsOutputNormBound(opt.coefficients, opt.norm_scale, s);
  return std::sqrt(sq) > bound ? NsFallback::kNormBound : NsFallback::kNone;
}

}  // namespace

NsCpuWorkspace::NsCpuWorkspace() = default;
NsCpuWorkspace::~NsCpuWorkspace() = default;

void NsCpuWorkspace::Reserve(int64_t short_side, int64_t long_side, bool gram) {
  const size_t xs = static_cast<size_t>(short_side * long_side);
  const size_t as = static_cast<size_t>(short_side * short_side);
  if (x.size() < xs) x.resize(xs);
  if (x_next.size() < xs) x_next.resize(xs);
  if (a.size() < as) a.resize(as);
  if (b.size() < as) b.resize(as);
  if (gram) {
    if (q.size() < as) q.resize(as);
    if (q_next.size() < as) q_next.resize(as);
    if (rz.size() < as) rz.resize(as);
  }
  if (pool == nullptr) {
    pool = std::make_unique<WorkerPool>(threads > 0 ? threads : CallerBlasThreads());
  }
}

uint64_t NsCpuWorkspace::Bytes() const {
  return sizeof(float) * (x.size() + x_next.size() + a.size() + b.size() + q.size() +
                          q_next.size() + rz.size());
}

NsFallback NewtonSchulzCpu(const float* u, float* o, int64_t rows, int64_t cols,
                           const NsCpuOptions& options, NsCpuWorkspace* ws) {
  const int64_t s = std::min(rows, cols);  // X is s x l, s <= l
  const int64_t l = std::max(rows, cols);
  bool gram = UsesGram(options.method, rows, cols);
  ws->Reserve(s, l, gram);
  const SingleThreadedBlas blas_scope;
  Buffers<float> m{ws->x.data(), ws->x_next.data(), ws->a.data(),     ws->b.data(),
                   ws->q.data(), ws->q_next.data(), ws->rz.data()};
  const double sq = LoadScaled(u, rows, cols, m.x, options);
  NsFallback why = NsFallback::kNone;
  const float* out = nullptr;
  if (gram && std::isfinite(sq)) {
    out = GramIterations(m, s, l, options, ws->symmetric_products, ws->pool.get());
    why = CheckGramResult(out, s, l, options);
    if (why != NsFallback::kNone) LoadScaled(u, rows, cols, m.x, options);  // X0 again
  }
  if (out == nullptr || why != NsFallback::kNone) {
    out = StandardIterations(m, s, l, options, ws->pool.get());
  }
  Store(out, rows, cols, o);
  return why;
}

void NewtonSchulzCpu(const float* u, float* o, int64_t rows, int64_t cols,
                     const std::vector<std::array<float, 3>>& coefficients, float ns_eps,
                     float norm_scale, bool round_bf16, NsCpuWorkspace* ws) {
  NsCpuOptions options;
  options.coefficients = coefficients;
  options.ns_eps = ns_eps;
  options.norm_scale = norm_scale;
  options.round_bf16 = round_bf16;
  NewtonSchulzCpu(u, o, rows, cols, options, ws);
}

void NewtonSchulzCpuF64(const double* u, double* o, int64_t rows, int64_t cols,
                        const NsCpuOptions& options, bool symmetric_products) {
  const int64_t s = std::min(rows, cols);
  const int64_t l = std::max(rows, cols);
  std::vector<double> x(s * l), x_next(s * l), a(s * s), b(s * s), q(s * s), q_next(s * s),
      rz(s * s);
  Buffers<double> m{x.data(), x_next.data(), a.data(), b.data(), q.data(), q_next.data(), rz.data()};
  const SingleThreadedBlas blas_scope;
  LoadScaled(u, rows, cols, m.x, options);
  const double* out = UsesGram(options.method, rows, cols)
                          ? GramIterations(m, s, l, options, symmetric_products, nullptr)
                          : StandardIterations(m, s, l, options, nullptr);
  Store(out, rows, cols, o);
}

}  // namespace normuon
