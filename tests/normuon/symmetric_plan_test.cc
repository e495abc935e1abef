// The symmetric-product plan (kernels/symmetric_plan.h), which the CUDA backend runs with
// cublasGemmGroupedBatchedEx: executed here with OpenBLAS, tile GEMM by tile GEMM, then mirrored,
// it must give the dense product, for every layout the Gram iteration uses (X X^T of a tall and
// of a wide matrix, the square products), ragged and exact tilings, batches; and its tiles must
// cover the lower triangle exactly once.
#include "kernels/symmetric_plan.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace normuon {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(gen);
  return v;
}

// Makes each of `count` column-major n x n matrices symmetric (lower copied to upper).
void Symmetrize(std::vector<float>* m, int64_t n, int64_t count) {
  MirrorLowerToUpper(m->data(), n, n, n * n, count);
}

// One OpenBLAS thread for the whole test: what it checks is the plan, and ThreadSanitizer cannot
// see OpenBLAS's own thread-pool hand-offs (uninstrumented), which it reported as races between
// a worker's sgemm and the mirror that reads the result after the call returned.
class OneBlasThread : public ::testing::Environment {
 public:
  void SetUp() override { openblas_set_num_threads(1); }
};
::testing::Environment* const kOneBlasThread =
    ::testing::AddGlobalTestEnvironment(new OneBlasThread);

// C = alpha op(A) op(B) + beta C, tile GEMM by tile GEMM as the plan says, then the mirror.
void RunPlan(const SymmetricPlan& plan, float alpha, const float* a, const float* b, float beta,
             float* c) {
  const SymmetricProduct& p = plan.product;
  for (const TileGroup& g : plan.groups) {
    for (size_t t = 0; t < g.c.size(); ++t) {
      cblas_sgemm(CblasColMajor, p.trans_a ? CblasTrans : CblasNoTrans,
                  p.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(g.m),
                  static_cast<int>(g.n), static_cast<int>(p.k), alpha, a + g.a[t],
                  static_cast<int>(p.lda), b + g.b[t], static_cast<int>(p.ldb), beta, c + g.c[t],
                  static_cast<int>(p.ldc));
    }
  }
  MirrorLowerToUpper(c, p.n, p.ldc, p.stride_c, p.count);
}

void RunDense(const SymmetricProduct& p, float alpha, const float* a, const float* b, float beta,
              float* c) {
  for (int64_t k = 0; k < p.count; ++k) {
    cblas_sgemm(CblasColMajor, p.trans_a ? CblasTrans : CblasNoTrans,
                p.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(p.n),
                static_cast<int>(p.n), static_cast<int>(p.k), alpha, a + k * p.stride_a,
                static_cast<int>(p.lda), b + k * p.stride_b, static_cast<int>(p.ldb), beta,
                c + k * p.stride_c, static_cast<int>(p.ldc));
  }
}

// The plan's result equals the dense product to fp32 rounding (a different summation blocking
// is allowed), and is exactly symmetric.
void ExpectMatchesDense(const SymmetricProduct& p, int64_t tile, const std::vector<float>& a,
                        const std::vector<float>& b, float alpha, float beta,
                        const std::vector<float>& c0) {
  const SymmetricPlan plan = PlanLowerTriangle(p, tile);
  std::vector<float> dense = c0, tiled = c0;
  RunDense(p, alpha, a.data(), b.data(), beta, dense.data());
  RunPlan(plan, alpha, a.data(), b.data(), beta, tiled.data());
  double scale = 0;
  for (float x : dense) scale = std::max(scale, std::fabs(static_cast<double>(x)));
  for (int64_t k = 0; k < p.count; ++k) {
    for (int64_t col = 0; col < p.n; ++col) {
      for (int64_t row = 0; row < p.n; ++row) {
        const int64_t at = k * p.stride_c + row + col * p.ldc;
        ASSERT_NEAR(tiled[at], dense[at], 1e-5 * scale)
            << "matrix " << k << " (" << row << ", " << col << "), n=" << p.n << " k=" << p.k
            << " tile=" << tile;
        ASSERT_EQ(tiled[at], tiled[k * p.stride_c + col + row * p.ldc]);
      }
    }
  }
}

TEST(SymmetricPlanTest, TilesCoverTheLowerTriangleOnce) {
  for (int64_t n : {1, 5, 128, 130, 300, 768}) {
    for (int64_t tile : {1, 7, 64, 128, 256, 1000}) {
      SymmetricProduct p;
      p.n = n;
      p.k = 3;
      p.lda = p.ldb = p.ldc = n;
      p.stride_c = n * n;
      p.count = 2;
      const SymmetricPlan plan = PlanLowerTriangle(p, tile);
      EXPECT_LE(plan.groups.size(), 3u);
      std::vector<int> covered(static_cast<size_t>(2 * n * n), 0);
      for (const TileGroup& g : plan.groups) {
        ASSERT_EQ(g.a.size(), g.c.size());
        ASSERT_EQ(g.b.size(), g.c.size());
        for (int64_t off : g.c) {
          const int64_t k = off / (n * n), r0 = off % (n * n) % n, c0 = off % (n * n) / n;
          ASSERT_GE(r0, c0) << "a tile above the diagonal";
          for (int64_t col = c0; col < c0 + g.n; ++col) {
            for (int64_t row = r0; row < r0 + g.m; ++row) {
              ASSERT_LT(row, n);
              ASSERT_LT(col, n);
              ++covered[static_cast<size_t>(k * n * n + row + col * n)];
            }
          }
        }
      }
      for (int64_t k = 0; k < 2; ++k) {
        for (int64_t col = 0; col < n; ++col) {
          for (int64_t row = col; row < n; ++row) {
            ASSERT_EQ(covered[static_cast<size_t>(k * n * n + row + col * n)], 1)
                << "n=" << n << " tile=" << tile << " (" << row << ", " << col << ")";
          }
        }
      }
      const int64_t t = (n + tile - 1) / tile;
      EXPECT_EQ(plan.gemms(), 2 * t * (t + 1) / 2);
      EXPECT_LE(plan.work_fraction(), 1.0);
    }
  }
}

// R = X X^T as the CUDA backend reads X (cuda_backend.cu, "Newton-Schulz without transposes"):
// tall, X (s x l) with ld s: op N, T; wide, Y = X^T (l x s) with ld l: op T, N.
TEST(SymmetricPlanTest, GramProductOfTallAndWideMatrices) {
  for (const auto& [s, l] : std::vector<std::pair<int64_t, int64_t>>{{64, 200}, {300, 700}}) {
    for (bool tall : {true, false}) {
      const int64_t count = 3;
      SymmetricProduct p;
      p.n = s;
      p.k = l;
      p.trans_a = !tall;
      p.trans_b = tall;
      p.lda = p.ldb = tall ? s : l;
      p.ldc = s;
      p.stride_a = p.stride_b = s * l;
      p.stride_c = s * s;
      p.count = count;
      const std::vector<float> x = Random(count * s * l, 3);
      const std::vector<float> c0(static_cast<size_t>(count * s * s), 0.0f);
      for (int64_t tile : {SymmetricTile(s), int64_t{64}, int64_t{96}}) {
        ExpectMatchesDense(p, tile, x, x, 1.0f, 0.0f, c0);
        // The CUDA backend's planner gives this very layout (rows x cols row-major).
        const GramProductPlans plans =
            PlanGramProducts(tall ? l : s, tall ? s : l, count, tile);
        std::vector<float> via(c0.size(), 0.0f), dense(c0.size(), 0.0f);
        RunPlan(plans.gram, 1.0f, x.data(), x.data(), 0.0f, via.data());
        RunDense(p, 1.0f, x.data(), x.data(), 0.0f, dense.data());
        for (size_t i = 0; i < via.size(); ++i) ASSERT_NEAR(via[i], dense[i], 1e-3) << i;
        EXPECT_EQ(plans.square.product.n, s);
        EXPECT_EQ(plans.square.product.k, s);
        EXPECT_EQ(plans.square.gemms(), plans.gram.gemms());
      }
    }
  }
}

// The square products of the iteration, C = alpha A B + beta C0 with A, B symmetric polynomials
// of the same R (so A B is symmetric) and C0 symmetric.
TEST(SymmetricPlanTest, SquareProductsWithBeta) {
  for (int64_t s : {130, 384}) {
    const int64_t count = 2;
    std::vector<float> r = Random(count * s * s, 5);
    Symmetrize(&r, s, count);
    // Z = b R + c R R, computed densely (commutes with R).
    SymmetricProduct p;
    p.n = p.k = s;
    p.lda = p.ldb = p.ldc = s;
    p.stride_a = p.stride_b = p.stride_c = s * s;
    p.count = count;
    std::vector<float> z = r;
    RunDense(p, 0.5f, r.data(), r.data(), -1.5f, z.data());
    ExpectMatchesDense(p, SymmetricTile(s), r, r, 0.5f, -1.5f, r);  // R R + beta R
    ExpectMatchesDense(p, 128, r, z, 1.0f, 2.0f, r);                 // R Z + a R
    ExpectMatchesDense(p, 100, z, r, 1.0f, 0.0f, z);                 // Z R
  }
}

TEST(SymmetricPlanTest, DefaultTile) {
  EXPECT_EQ(SymmetricTile(64), 64);  // small: one dense tile
  EXPECT_EQ(SymmetricTile(255), 255);
  for (int64_t n : {256, 768, 1024, 2048, 4096, 8192}) {
    const int64_t t = SymmetricTile(n);
    EXPECT_EQ(t % 64, 0) << n;
    EXPECT_GE(t, 128) << n;
    const int64_t tiles = (n + t - 1) / t;
    EXPECT_GE(tiles, 2) << n;
    EXPECT_LE(tiles, 8) << n;
  }
}

}  // namespace
}  // namespace normuon
