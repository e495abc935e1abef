#include "sharding/owner_assignment.h"

#include <algorithm>
#include <vector>

#include "absl/numeric/int128.h"
#include "gtest/gtest.h"
#include "tests/sharding/test_util.h"

namespace normuon::sharding {
namespace {

using ::normuon::sharding::testing::Gpt2SmallMatrices;
using ::normuon::sharding::testing::IsInvalidWith;

std::vector<int> Assign(const std::vector<MatrixShape>& shapes, int world, OwnerPolicy policy) {
  auto owners = AssignOwners(shapes, world, policy);
  EXPECT_TRUE(owners.ok()) << owners.status();
  return owners.ok() ? *owners : std::vector<int>();
}

absl::uint128 MaxLoad(const std::vector<MatrixShape>& shapes, const std::vector<int>& owners,
                      int world) {
  auto loads = OwnerLoads(shapes, owners, world);
  EXPECT_TRUE(loads.ok()) << loads.status();
  return loads.ok() ? *std::max_element(loads->begin(), loads->end()) : 0;
}

TEST(Ns5FlopsTest, FollowsTheFormulaWithTheShortSideAsS) {
  // s = 48, l = 64: 5 * (4 * 48^2 * 64 + 2 * 48^3).
  EXPECT_EQ(Ns5FlopsExact(64, 48), absl::uint128(4055040));
  EXPECT_EQ(Ns5FlopsExact(48, 64), absl::uint128(4055040));
  EXPECT_EQ(Ns5Flops(64, 48), 4055040.0);
}

TEST(Ns5FlopsTest, ScalesWithTheStepCount) {
  EXPECT_EQ(Ns5FlopsExact(64, 48, 1) * 5, Ns5FlopsExact(64, 48, 5));
  EXPECT_EQ(Ns5FlopsExact(64, 48, 0), absl::uint128(0));
  EXPECT_EQ(Ns5FlopsExact(64, 48, -3), absl::uint128(0));
}

TEST(Ns5FlopsTest, StaysExactBeyondTheRangeOfInt64) {
  // 2^20 x 2^20: 5 * 6 * 2^60 = 30 * 2^60, far above 2^63.
  EXPECT_EQ(Ns5FlopsExact(int64_t{1} << 20, int64_t{1} << 20), absl::uint128(30) << 60);
}

TEST(OwnerPolicyTest, NamesRoundTripThroughTheParser) {
  for (OwnerPolicy p : {OwnerPolicy::kRoundRobin, OwnerPolicy::kCostBalanced}) {
    auto parsed = ParseOwnerPolicy(OwnerPolicyName(p));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, p);
  }
}

TEST(OwnerPolicyTest, ParserRejectsAnUnknownNameQuotingIt) {
  EXPECT_TRUE(IsInvalidWith(ParseOwnerPolicy("random").status(), {"'random'"}));
}

TEST(RoundRobinTest, DealsMatricesLargestFirstToRanksInOrder) {
  // Sorted by elements: big (1), big2 (3), mid (2), small (0) -> ranks 0, 1, 0, 1.
  const std::vector<MatrixShape> shapes = {
      {"small", 2, 2}, {"big", 10, 10}, {"mid", 5, 5}, {"big2", 8, 8}};
  EXPECT_EQ(Assign(shapes, 2, OwnerPolicy::kRoundRobin), (std::vector<int>{1, 0, 0, 1}));
}

TEST(RoundRobinTest, BreaksSizeTiesByRegistrationIndex) {
  const std::vector<MatrixShape> shapes(4, MatrixShape{"w", 8, 8});
  EXPECT_EQ(Assign(shapes, 3, OwnerPolicy::kRoundRobin), (std::vector<int>{0, 1, 2, 0}));
}

TEST(RoundRobinTest, LeavesHighRanksIdleWhenRanksOutnumberMatrices) {
  const std::vector<MatrixShape> shapes = {{"a", 4, 4}, {"b", 8, 8}};
  EXPECT_EQ(Assign(shapes, 4, OwnerPolicy::kRoundRobin), (std::vector<int>{1, 0}));
}

TEST(OwnerPolicyTest, RoundRobinSortsByElementsWhileCostBalancedSortsByFlops) {
  // "column" has the most elements but, with s = 1, almost no NS5 cost.
  const std::vector<MatrixShape> shapes = {{"column", 1000, 1}, {"square", 30, 30}, {"c", 10, 10}};
  EXPECT_EQ(Assign(shapes, 2, OwnerPolicy::kRoundRobin), (std::vector<int>{0, 1, 0}));
  EXPECT_EQ(Assign(shapes, 2, OwnerPolicy::kCostBalanced), (std::vector<int>{1, 0, 1}));
}

TEST(CostBalancedTest, GivesEachMatrixToTheLeastLoadedRank) {
  // Costs 1.92M, 0.81M, 0.81M, 0.24M: after the first goes to rank 0, rank 1 stays lighter.
  const std::vector<MatrixShape> shapes = {
      {"a", 40, 40}, {"b", 30, 30}, {"c", 30, 30}, {"d", 20, 20}};
  EXPECT_EQ(Assign(shapes, 2, OwnerPolicy::kCostBalanced), (std::vector<int>{0, 1, 1, 1}));
}

TEST(CostBalancedTest, BreaksLoadTiesTowardTheLowestRank) {
  const std::vector<MatrixShape> shapes(5, MatrixShape{"w", 8, 8});
  EXPECT_EQ(Assign(shapes, 3, OwnerPolicy::kCostBalanced), (std::vector<int>{0, 1, 2, 0, 1}));
}

TEST(AssignOwnersTest, GivesEverythingToRankZeroInAWorldOfOne) {
  for (OwnerPolicy p : {OwnerPolicy::kRoundRobin, OwnerPolicy::kCostBalanced}) {
    const std::vector<int> owners = Assign(Gpt2SmallMatrices(), 1, p);
    EXPECT_EQ(owners, std::vector<int>(48, 0)) << OwnerPolicyName(p);
  }
}

TEST(AssignOwnersTest, GivesTheSameOwnersOnEveryCall) {
  for (OwnerPolicy p : {OwnerPolicy::kRoundRobin, OwnerPolicy::kCostBalanced}) {
    for (int world : {2, 3, 5, 8}) {
      EXPECT_EQ(Assign(Gpt2SmallMatrices(), world, p), Assign(Gpt2SmallMatrices(), world, p))
          << OwnerPolicyName(p) << " world " << world;
    }
  }
}

TEST(AssignOwnersTest, GivesEveryRankWorkWhenMatricesOutnumberRanks) {
  for (OwnerPolicy p : {OwnerPolicy::kRoundRobin, OwnerPolicy::kCostBalanced}) {
    for (int world : {2, 3, 7, 8, 16, 48}) {
      const std::vector<int> owners = Assign(Gpt2SmallMatrices(), world, p);
      for (int r = 0; r < world; ++r) {
        EXPECT_NE(std::find(owners.begin(), owners.end(), r), owners.end())
            << OwnerPolicyName(p) << " world " << world << " rank " << r;
      }
    }
  }
}

TEST(AssignOwnersTest, CostBalancedMaxLoadIsAtMostRoundRobinsOnGpt2Small) {
  const std::vector<MatrixShape> shapes = Gpt2SmallMatrices();
  for (int world : {2, 3, 4, 5, 6, 7, 8, 16, 32}) {
    const absl::uint128 balanced =
        MaxLoad(shapes, Assign(shapes, world, OwnerPolicy::kCostBalanced), world);
    const absl::uint128 round_robin =
        MaxLoad(shapes, Assign(shapes, world, OwnerPolicy::kRoundRobin), world);
    EXPECT_LE(balanced, round_robin) << "world " << world;
  }
}

TEST(AssignOwnersTest, CostBalancedBeatsRoundRobinOnGpt2SmallAtSevenRanks) {
  const std::vector<MatrixShape> shapes = Gpt2SmallMatrices();
  EXPECT_LT(MaxLoad(shapes, Assign(shapes, 7, OwnerPolicy::kCostBalanced), 7),
            MaxLoad(shapes, Assign(shapes, 7, OwnerPolicy::kRoundRobin), 7));
}

TEST(AssignOwnersTest, CostBalancedMaxLoadIsWithinTheGreedyBound) {
  // Greedy list scheduling: max load <= total / world + the largest single cost.
  const std::vector<MatrixShape> shapes = Gpt2SmallMatrices();
  absl::uint128 total = 0, largest = 0;
  for (const MatrixShape& s : shapes) {
    total += Ns5FlopsExact(s.rows, s.cols);
    largest = std::max(largest, Ns5FlopsExact(s.rows, s.cols));
  }
  for (int world : {2, 3, 5, 7, 16}) {
    EXPECT_LE(MaxLoad(shapes, Assign(shapes, world, OwnerPolicy::kCostBalanced), world),
              total / world + largest)
        << "world " << world;
  }
}

TEST(AssignOwnersTest, GivesAnEmptyListNoOwners) {
  EXPECT_TRUE(Assign({}, 4, OwnerPolicy::kCostBalanced).empty());
}

TEST(AssignOwnersTest, RejectsAWorldBelowOne) {
  EXPECT_TRUE(IsInvalidWith(AssignOwners({{"w", 2, 2}}, 0, OwnerPolicy::kRoundRobin).status(),
                            {"world = 0"}));
}

TEST(AssignOwnersTest, RejectsAnInvalidShapeNamingIt) {
  EXPECT_TRUE(IsInvalidWith(
      AssignOwners({{"ok", 2, 2}, {"bad", 0, 2}}, 2, OwnerPolicy::kCostBalanced).status(),
      {"'bad'", "rows = 0"}));
}

TEST(AssignOwnersOfSubsetTest, RejectsAMatrixListedTwiceAndChangesNothing) {
  const std::vector<MatrixShape> shapes = {{"a", 2, 2}, {"b", 3, 3}};
  std::vector<int> owners = {-1, -1};
  OwnerTally tally(2);
  EXPECT_TRUE(IsInvalidWith(
      AssignOwnersOfSubset(shapes, {1, 1}, 2, OwnerPolicy::kRoundRobin, &tally, &owners),
      {"matrix 1", "'b'", "twice"}));
  EXPECT_EQ(owners, (std::vector<int>{-1, -1}));
  EXPECT_EQ(tally.next_rank, 0);
}

TEST(AssignOwnersOfSubsetTest, RejectsATallyForAnotherWorldSize) {
  const std::vector<MatrixShape> shapes = {{"a", 2, 2}};
  std::vector<int> owners = {0};
  OwnerTally tally(3);
  EXPECT_TRUE(IsInvalidWith(
      AssignOwnersOfSubset(shapes, {0}, 2, OwnerPolicy::kCostBalanced, &tally, &owners),
      {"3 ranks", "world = 2"}));
}

TEST(OwnerLoadsTest, RejectsAnOwnerOutsideTheWorld) {
  EXPECT_TRUE(IsInvalidWith(OwnerLoads({{"w", 2, 2}}, {5}, 2).status(), {"'w'", "owner 5"}));
}

}  // namespace
}  // namespace normuon::sharding
