#include "kernels/symmetric_plan.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace normuon {

int64_t SymmetricPlan::gemms() const {
  int64_t n = 0;
  for (const TileGroup& g : groups) n += static_cast<int64_t>(g.c.size());
  return n;
}

double SymmetricPlan::work_fraction() const {
  const double dense = static_cast<double>(product.n) * product.n * product.count;
  if (dense <= 0) return 1.0;
  double done = 0;
  for (const TileGroup& g : groups) done += static_cast<double>(g.m) * g.n * g.c.size();
  return done / dense;
}

int64_t SymmetricTile(int64_t n) {
  if (n < 256) return std::max<int64_t>(n, 1);
  // About n / 6, rounded up to a multiple of 64, at least 128.
  const int64_t t = ((n / 6 + 63) / 64) * 64;
  return std::max<int64_t>(128, t);
}

SymmetricPlan PlanLowerTriangle(const SymmetricProduct& p, int64_t tile) {
  SymmetricPlan plan;
  plan.product = p;
  plan.tile = tile;
  if (p.n <= 0 || p.count <= 0 || tile <= 0) return plan;
  const int64_t tiles = (p.n + tile - 1) / tile;
  const int64_t last = p.n - (tiles - 1) * tile;  // side of the last tile row/column
  // Groups by tile shape: interior (tile x tile), the last row below the diagonal (last x tile),
  // the corner (last x last). With last == tile all are full tiles: one group.
  auto group_of = [&](int64_t m, int64_t n) -> TileGroup& {
    for (TileGroup& g : plan.groups) {
      if (g.m == m && g.n == n) return g;
    }
    plan.groups.push_back(TileGroup{m, n, {}, {}, {}});
    return plan.groups.back();
  };
  for (int64_t k = 0; k < p.count; ++k) {
    for (int64_t i = 0; i < tiles; ++i) {
      for (int64_t j = 0; j <= i; ++j) {
        const int64_t r0 = i * tile, c0 = j * tile;
        const int64_t m = i == tiles - 1 ? last : tile;
        const int64_t n = j == tiles - 1 ? last : tile;
        TileGroup& g = group_of(m, n);
        // op(A)'s rows r0..: A's rows (no transpose) or A's columns (transposed).
        g.a.push_back(k * p.stride_a + (p.trans_a ? r0 * p.lda : r0));
        // op(B)'s columns c0..: B's columns (no transpose) or B's rows (transposed).
        g.b.push_back(k * p.stride_b + (p.trans_b ? c0 : c0 * p.ldb));
        g.c.push_back(k * p.stride_c + r0 + c0 * p.ldc);
      }
    }
  }
  return plan;
}

GramProductPlans PlanGramProducts(int64_t rows, int64_t cols, int64_t count, int64_t tile) {
  const bool tall = rows > cols;
  const int64_t s = std::min(rows, cols), l = std::max(rows, cols);
  SymmetricProduct g;
  g.n = s;
  g.k = l;
  g.trans_a = !tall;
  g.trans_b = tall;
  g.lda = g.ldb = tall ? s : l;
  g.ldc = s;
  g.stride_a = g.stride_b = rows * cols;
  g.stride_c = s * s;
  g.count = count;
  SymmetricProduct q;
  q.n = q.k = s;
  q.lda = q.ldb = q.ldc = s;
  q.stride_a = q.stride_b = q.stride_c = s * s;
  q.count = count;
  return GramProductPlans{PlanLowerTriangle(g, tile), PlanLowerTriangle(q, tile)};
}

void MirrorLowerToUpper(float* c, int64_t n, int64_t ld, int64_t stride, int64_t count) {
  for (int64_t k = 0; k < count; ++k) {
    float* m = c + k * stride;
    for (int64_t col = 1; col < n; ++col) {
      for (int64_t row = 0; row < col; ++row) m[row + col * ld] = m[col + row * ld];
    }
  }
}

}  // namespace normuon
