#include "sharding/ns_cost.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/numeric/int128.h"
#include "gtest/gtest.h"
#include "sharding/buckets.h"
#include "sharding/owner_assignment.h"
#include "tests/sharding/test_util.h"

namespace normuon::sharding {
namespace {

using ::normuon::sharding::testing::Gpt2SmallMatrices;
using ::normuon::sharding::testing::IsInvalidWith;

NsCost Gram(std::vector<int> restarts, bool symmetric = false, int steps = 5) {
  NsCost c;
  c.method = NsMethod::kGram;
  c.steps = steps;
  c.restarts = std::move(restarts);
  c.symmetric = symmetric;
  return c;
}

NsCost Standard(bool symmetric, int steps = 5) {
  NsCost c;
  c.steps = steps;
  c.symmetric = symmetric;
  return c;
}

// An independent count: walks Gram NS iteration by iteration, as the algorithm runs, and adds
// the cost of every product it needs (dense: 2 per multiply-add; symmetric results: 1).
absl::uint128 WalkGram(int64_t n, int64_t m, int steps, const std::vector<int>& restarts,
                       bool symmetric) {
  const absl::uint128 sym = symmetric ? 1 : 2;
  const absl::uint128 nnm = absl::uint128(n * n) * m, nnn = absl::uint128(n * n) * n;
  auto restarted_before = [&](int i) {
    return std::find(restarts.begin(), restarts.end(), i) != restarts.end();
  };
  absl::uint128 total = sym * nnm;  // R = X X^T
  bool q_is_identity = true;
  for (int i = 0; i < steps; ++i) {
    if (restarted_before(i)) {
      total += 2 * nnm;    // X <- Q X
      total += sym * nnm;  // R <- X X^T
      q_is_identity = true;
    }
    total += sym * nnn;                     // R R, for Z' = b R + c R^2
    if (!q_is_identity) total += sym * nnn;  // Q Z'
    q_is_identity = false;
    const bool r_needed = i + 1 < steps && !restarted_before(i + 1);
    if (r_needed) total += 2 * sym * nnn;  // R Z', then Z' (R Z' + a R)
  }
  return total + 2 * nnm;  // the output Q X
}

TEST(NsCostTest, DefaultCostIsTheExistingNs5Count) {
  for (auto [r, c] : {std::pair<int64_t, int64_t>{64, 48}, {48, 64}, {768, 3072}, {7, 7}}) {
    for (int steps : {0, 1, 5, 9}) {
      NsCost cost;
      cost.steps = steps;
      EXPECT_EQ(NsFlopsExact(r, c, cost), Ns5FlopsExact(r, c, steps)) << r << "x" << c;
    }
  }
}

TEST(NsCostTest, StandardDenseAndSymmetricFollowTheirFormulas) {
  const int64_t n = 64, m = 192;  // alpha = 3
  const absl::uint128 n3 = absl::uint128(n * n * n);
  EXPECT_EQ(NsFlopsExact(m, n, Standard(false)), (20 * 3 + 10) * n3);
  EXPECT_EQ(NsFlopsExact(m, n, Standard(true)), (15 * 3 + 5) * n3);
}

TEST(NsCostTest, GramWithOneRestartMatchesThePublishedCounts) {
  const int64_t n = 64, m = 256;  // alpha = 4
  const absl::uint128 n3 = absl::uint128(n * n * n);
  EXPECT_EQ(NsFlopsExact(n, m, Gram({2})), (28 + 8 * 4) * n3);
  EXPECT_EQ(NsFlopsExact(m, n, Gram({2}, true)), (14 + 6 * 4) * n3);
}

TEST(NsCostTest, GramCountEqualsAWalkOfTheAlgorithmForEveryRestartSet) {
  const int64_t n = 24, m = 80;
  for (int steps = 1; steps <= 7; ++steps) {
    // Every subset of [1, steps) as a bit mask.
    for (int mask = 0; mask < (1 << (steps - 1)); ++mask) {
      std::vector<int> restarts;
      for (int i = 1; i < steps; ++i) {
        if (mask & (1 << (i - 1))) restarts.push_back(i);
      }
      for (bool symmetric : {false, true}) {
        EXPECT_EQ(NsFlopsExact(n, m, Gram(restarts, symmetric, steps)),
                  WalkGram(n, m, steps, restarts, symmetric))
            << "steps " << steps << " mask " << mask << " symmetric " << symmetric;
      }
    }
  }
}

TEST(NsCostTest, GramCostDependsOnHowManyRestartsNotWhere) {
  EXPECT_EQ(NsFlopsExact(100, 300, Gram({1})), NsFlopsExact(100, 300, Gram({4})));
  EXPECT_LT(NsFlopsExact(100, 300, Gram({1})), NsFlopsExact(100, 300, Gram({1, 3})));
}

TEST(NsCostTest, SquareMatricesFallBackToStandard) {
  EXPECT_EQ(NsFlopsExact(96, 96, Gram({2})), NsFlopsExact(96, 96, Standard(false)));
  EXPECT_EQ(NsFlopsExact(96, 96, Gram({2}, true)), NsFlopsExact(96, 96, Standard(true)));
}

TEST(NsCostTest, ZeroIterationsCostNothing) {
  EXPECT_EQ(NsFlopsExact(10, 30, Gram({}, false, 0)), absl::uint128(0));
  EXPECT_EQ(NsFlopsExact(0, 30, Gram({2})), absl::uint128(0));
}

TEST(NsCostTest, Gpt2SmallTotalsAreTheIssuesFigures) {
  // Issue 14: 1.52 TFLOP (standard), 1.10 (dense Gram, one restart), 0.70 (symmetric Gram; the
  // square c_proj matrices run standard NS with symmetric products) per step.
  double standard = 0, gram = 0, gram_sym = 0;
  for (const MatrixShape& s : Gpt2SmallMatrices()) {
    standard += NsFlops(s.rows, s.cols, NsCost{});
    gram += NsFlops(s.rows, s.cols, GramDefaultCost());
    gram_sym += NsFlops(s.rows, s.cols, Gram({2}, true));
  }
  EXPECT_NEAR(standard / 1e12, 1.52, 0.005);
  EXPECT_NEAR(gram / 1e12, 1.10, 0.005);
  EXPECT_NEAR(gram_sym / 1e12, 0.70, 0.005);
}

TEST(NsCostTest, ValidationNamesTheField) {
  EXPECT_TRUE(IsInvalidWith(ValidateNsCost(Gram({0})), {"ns restarts", "0", "[1, 5)"}));
  EXPECT_TRUE(IsInvalidWith(ValidateNsCost(Gram({5})), {"ns restarts", "5"}));
  EXPECT_TRUE(IsInvalidWith(ValidateNsCost(Gram({3, 2})), {"ns restarts", "3,2", "increasing"}));
  EXPECT_TRUE(IsInvalidWith(ValidateNsCost(Gram({2, 2})), {"ns restarts", "increasing"}));
  EXPECT_TRUE(IsInvalidWith(ValidateNsCost(Standard(false, -1)), {"ns steps", "-1"}));
  EXPECT_TRUE(ValidateNsCost(GramDefaultCost()).ok());
  // Standard NS ignores restarts.
  NsCost s = Standard(false);
  s.restarts = {9};
  EXPECT_TRUE(ValidateNsCost(s).ok());
  // An invalid cost counts nothing rather than a wrong number.
  EXPECT_EQ(NsFlopsExact(10, 30, Gram({7})), absl::uint128(0));
}

TEST(NsCostTest, MethodNamesRoundTripAndUnknownNamesAreQuoted) {
  for (NsMethod m : {NsMethod::kStandard, NsMethod::kGram}) {
    auto parsed = ParseNsMethod(NsMethodName(m));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, m);
  }
  EXPECT_TRUE(IsInvalidWith(ParseNsMethod("polar").status(), {"'polar'"}));
  EXPECT_EQ(NsCostDescription(Gram({2}, true)), "gram, restarts {2}, symmetric products");
}

// A square matrix costs the same under both methods; a wide one costs much less under Gram, so
// the cost-balanced assignment places the fourth matrix differently.
std::vector<MatrixShape> SquareAndThreeWide() {
  return {{"square", 100, 100}, {"w1", 50, 400}, {"w2", 50, 400}, {"w3", 400, 50}};
}

TEST(OwnerAssignmentWithNsCostTest, CostBalancedUsesTheMethodsFlops) {
  // Standard: 30e6, 21.25e6 x 3 -> square on 0, w1 and w2 on 1 (42.5e6), w3 on 0.
  // Gram: 30e6, 11.5e6 x 3 -> square on 0, w1, w2 and w3 on 1 (34.5e6).
  const auto shapes = SquareAndThreeWide();
  auto standard = AssignOwners(shapes, 2, OwnerPolicy::kCostBalanced);
  auto gram = AssignOwners(shapes, 2, OwnerPolicy::kCostBalanced, GramDefaultCost());
  ASSERT_TRUE(standard.ok() && gram.ok());
  EXPECT_EQ(*standard, (std::vector<int>{0, 1, 1, 0}));
  EXPECT_EQ(*gram, (std::vector<int>{0, 1, 1, 1}));
  auto per_bucket =
      AssignOwnersPerBucket(shapes, {{0, 1, 2, 3}}, 2, OwnerPolicy::kCostBalanced, GramDefaultCost());
  ASSERT_TRUE(per_bucket.ok()) << per_bucket.status();
  EXPECT_EQ(*per_bucket, *gram);
}

TEST(OwnerAssignmentWithNsCostTest, LoadsSumTheMethodsFlops) {
  const auto shapes = SquareAndThreeWide();
  auto loads = OwnerLoads(shapes, {0, 1, 1, 1}, 2, GramDefaultCost());
  ASSERT_TRUE(loads.ok()) << loads.status();
  EXPECT_EQ((*loads)[0], NsFlopsExact(100, 100, NsCost{}));
  EXPECT_EQ((*loads)[1], 3 * NsFlopsExact(50, 400, GramDefaultCost()));
  EXPECT_EQ((*loads)[1], absl::uint128(3 * 11500000));
}

TEST(OwnerAssignmentWithNsCostTest, AnInvalidCostIsRejectedNamingTheField) {
  const auto shapes = SquareAndThreeWide();
  EXPECT_TRUE(IsInvalidWith(
      AssignOwners(shapes, 2, OwnerPolicy::kCostBalanced, Gram({6})).status(), {"ns restarts"}));
  EXPECT_TRUE(IsInvalidWith(OwnerLoads(shapes, {0, 0, 0, 0}, 1, Gram({0})).status(),
                            {"ns restarts"}));
}

}  // namespace
}  // namespace normuon::sharding
