#include "sharding/plan.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "sharding/owner_assignment.h"
#include "tests/sharding/test_util.h"

namespace normuon::sharding {
namespace {

using ::normuon::sharding::testing::Gpt2SmallMatrices;
using ::normuon::sharding::testing::IsInvalidWith;

int64_t Sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

// Inputs for rank 0 with every matrix split FSDP2-style and owners by the given policy.
PlanInputs Fsdp2Inputs(const std::vector<MatrixShape>& shapes, int world, OwnerPolicy policy,
                       int64_t wire_bytes) {
  PlanInputs in;
  in.shapes = shapes;
  in.world = world;
  in.wire_bytes_per_element = wire_bytes;
  for (const MatrixShape& s : shapes) in.shards.push_back(*Fsdp2Split(s.rows, world));
  in.owners = *AssignOwners(shapes, world, policy);
  return in;
}

// Small shapes with ragged covers: a rank with no rows of one matrix, a 1-row matrix, a cover
// out of rank order, tall and wide matrices.
PlanInputs RaggedInputs(int64_t wire_bytes) {
  PlanInputs in;
  in.world = 3;
  in.wire_bytes_per_element = wire_bytes;
  in.shapes = {{"tall", 10, 4}, {"wide", 3, 16}, {"one_row", 1, 8}, {"square", 6, 6}};
  in.shards = {
      {{0, 5}, {5, 0}, {5, 5}},
      {{1, 2}, {0, 1}, {3, 0}},
      {{0, 0}, {0, 1}, {1, 0}},
      {{0, 2}, {2, 2}, {4, 2}},
  };
  in.owners = {1, 0, 2, 1};
  return in;
}

std::vector<RankPlan> AllPlans(PlanInputs in) {
  std::vector<RankPlan> plans;
  for (int r = 0; r < in.world; ++r) {
    in.rank = r;
    auto plan = MakeRankPlan(in);
    EXPECT_TRUE(plan.ok()) << plan.status();
    if (plan.ok()) plans.push_back(*plan);
  }
  return plans;
}

TEST(RankPlanTest, CountsTheBytesOfAKnownLayout) {
  // 10 x 4 matrix in bf16, FSDP2 over 3 ranks (4, 4, 2 rows), owned by rank 1.
  PlanInputs in;
  in.shapes = {{"w", 10, 4}};
  in.shards = {*Fsdp2Split(10, 3)};
  in.owners = {1};
  in.world = 3;
  in.wire_bytes_per_element = 2;
  const std::vector<RankPlan> plans = AllPlans(in);
  ASSERT_EQ(plans.size(), 3u);
  EXPECT_EQ(plans[0].gather_send_bytes, (std::vector<int64_t>{0, 32, 0}));
  EXPECT_EQ(plans[2].gather_send_bytes, (std::vector<int64_t>{0, 16, 0}));
  EXPECT_EQ(plans[1].gather_recv_bytes, (std::vector<int64_t>{32, 0, 16}));
  EXPECT_EQ(plans[1].self_bytes, 32);
  EXPECT_EQ(plans[1].scatter_send_bytes, (std::vector<int64_t>{32, 0, 16}));
  EXPECT_EQ(plans[0].scatter_recv_bytes, (std::vector<int64_t>{0, 32, 0}));
}

TEST(RankPlanTest, ListsOwnedMatricesInRegistrationOrder) {
  PlanInputs in = RaggedInputs(4);
  in.rank = 1;
  auto plan = MakeRankPlan(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->owned, (std::vector<int>{0, 3}));
}

TEST(RankPlanTest, BatchesOwnedMatricesByShapeInOrderOfFirstAppearance) {
  PlanInputs in;
  in.shapes = {{"a", 64, 48}, {"b", 32, 32}, {"c", 64, 48},
               {"d", 48, 64}, {"e", 32, 32}, {"f", 64, 48}};
  in.world = 2;
  for (const MatrixShape& s : in.shapes) in.shards.push_back(*Fsdp2Split(s.rows, 2));
  in.owners = {0, 0, 0, 0, 0, 1};
  auto plan = MakeRankPlan(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->batches.size(), 3u);
  EXPECT_EQ(plan->batches[0].rows, 64);
  EXPECT_EQ(plan->batches[0].cols, 48);
  EXPECT_EQ(plan->batches[0].matrices, (std::vector<int>{0, 2}));
  EXPECT_EQ(plan->batches[1].matrices, (std::vector<int>{1, 4}));
  // The transpose is another shape.
  EXPECT_EQ(plan->batches[2].rows, 48);
  EXPECT_EQ(plan->batches[2].matrices, (std::vector<int>{3}));
}

TEST(RankPlanTest, SendsNothingToItselfOverTheWire) {
  for (const RankPlan& plan : AllPlans(RaggedInputs(2))) {
    EXPECT_EQ(plan.gather_send_bytes[plan.rank], 0) << "rank " << plan.rank;
    EXPECT_EQ(plan.gather_recv_bytes[plan.rank], 0) << "rank " << plan.rank;
    EXPECT_EQ(plan.scatter_send_bytes[plan.rank], 0) << "rank " << plan.rank;
    EXPECT_TRUE(plan.gather_sends[plan.rank].empty()) << "rank " << plan.rank;
    EXPECT_TRUE(plan.gather_recvs[plan.rank].empty()) << "rank " << plan.rank;
  }
}

TEST(RankPlanTest, WireSendsSumToWireReceivesOverAllRanks) {
  for (int world : {2, 3, 5, 8}) {
    for (OwnerPolicy p : {OwnerPolicy::kRoundRobin, OwnerPolicy::kCostBalanced}) {
      int64_t sent = 0, received = 0, scattered = 0, scatter_received = 0;
      for (const RankPlan& plan : AllPlans(Fsdp2Inputs(Gpt2SmallMatrices(), world, p, 2))) {
        sent += Sum(plan.gather_send_bytes);
        received += Sum(plan.gather_recv_bytes);
        scattered += Sum(plan.scatter_send_bytes);
        scatter_received += Sum(plan.scatter_recv_bytes);
      }
      EXPECT_EQ(sent, received) << "world " << world;
      EXPECT_EQ(scattered, scatter_received) << "world " << world;
      EXPECT_EQ(sent, scattered) << "world " << world;
      EXPECT_GT(sent, 0) << "world " << world;
    }
  }
}

TEST(RankPlanTest, EachSendMatchesItsPeersReceiveSegmentForSegment) {
  const std::vector<RankPlan> plans = AllPlans(RaggedInputs(4));
  ASSERT_EQ(plans.size(), 3u);
  for (int p = 0; p < 3; ++p) {
    for (int q = 0; q < 3; ++q) {
      EXPECT_EQ(plans[p].gather_send_bytes[q], plans[q].gather_recv_bytes[p]) << p << "->" << q;
      EXPECT_TRUE(plans[p].gather_sends[q] == plans[q].gather_recvs[p]) << p << "->" << q;
    }
  }
}

TEST(RankPlanTest, MovesEveryRowOfEveryMatrixExactlyOnce) {
  for (int64_t wire : {2, 4}) {
    PlanInputs in = RaggedInputs(wire);
    int64_t matrix_bytes = 0;
    for (const MatrixShape& s : in.shapes) matrix_bytes += s.rows * s.cols * wire;
    int64_t moved = 0;
    for (const RankPlan& plan : AllPlans(in))
      moved += Sum(plan.gather_recv_bytes) + plan.self_bytes;
    EXPECT_EQ(moved, matrix_bytes) << "wire bytes " << wire;
  }
}

TEST(RankPlanTest, ListsNoSegmentForARankWithoutRows) {
  // Rank 1 holds no rows of "tall" (owned by rank 1 itself) and rank 2 none of "wide" (owned by
  // rank 0): rank 0 receives "wide" only from rank 1.
  const std::vector<RankPlan> plans = AllPlans(RaggedInputs(4));
  ASSERT_EQ(plans.size(), 3u);
  EXPECT_TRUE(plans[0].gather_recvs[2].empty());
  ASSERT_EQ(plans[0].gather_recvs[1].size(), 1u);
  EXPECT_EQ(plans[0].gather_recvs[1][0].matrix, 1);
  EXPECT_TRUE(plans[1].self_segments.size() == 1 && plans[1].self_segments[0].matrix == 3);
}

TEST(RankPlanTest, PacksSegmentsBackToBack) {
  const PlanInputs in = Fsdp2Inputs(Gpt2SmallMatrices(), 3, OwnerPolicy::kRoundRobin, 2);
  for (const RankPlan& plan : AllPlans(in)) {
    for (int peer = 0; peer < plan.world; ++peer) {
      int64_t offset = 0;
      for (const Segment& s : plan.gather_sends[peer]) {
        EXPECT_EQ(s.offset, offset);
        offset += s.bytes;
      }
      EXPECT_EQ(offset, plan.gather_send_bytes[peer]);
    }
  }
}

TEST(RankPlanTest, HalvesEveryByteCountOnABf16Wire) {
  const std::vector<RankPlan> fp32 = AllPlans(RaggedInputs(4));
  const std::vector<RankPlan> bf16 = AllPlans(RaggedInputs(2));
  ASSERT_EQ(fp32.size(), bf16.size());
  for (size_t r = 0; r < fp32.size(); ++r) {
    for (size_t p = 0; p < fp32.size(); ++p) {
      EXPECT_EQ(fp32[r].gather_send_bytes[p], 2 * bf16[r].gather_send_bytes[p]);
    }
    EXPECT_EQ(fp32[r].self_bytes, 2 * bf16[r].self_bytes);
  }
}

TEST(RankPlanTest, PlansABucketInTheBucketsOrder) {
  PlanInputs in = RaggedInputs(4);
  in.owners = {1, 1, 1, 1};
  in.rank = 1;
  auto plan = MakeRankPlanForMatrices(in, {3, 0});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->owned, (std::vector<int>{3, 0}));
  ASSERT_EQ(plan->gather_recvs[0].size(), 2u);
  EXPECT_EQ(plan->gather_recvs[0][0].matrix, 3);
  EXPECT_EQ(plan->gather_recvs[0][1].matrix, 0);
  EXPECT_EQ(plan->gather_recvs[0][1].offset, plan->gather_recvs[0][0].bytes);
}

TEST(RankPlanTest, RejectsAMatrixListedTwiceInABucket) {
  PlanInputs in = RaggedInputs(4);
  EXPECT_TRUE(
      IsInvalidWith(MakeRankPlanForMatrices(in, {1, 1}).status(), {"matrix 1", "'wide'", "twice"}));
}

TEST(ValidatePlanInputsTest, AcceptsTheRaggedInputs) {
  EXPECT_TRUE(ValidatePlanInputs(RaggedInputs(2)).ok());
}

TEST(ValidatePlanInputsTest, RejectsAShardListOfTheWrongLengthNamingTheMatrix) {
  PlanInputs in = RaggedInputs(4);
  in.shards[2].pop_back();
  EXPECT_TRUE(IsInvalidWith(ValidatePlanInputs(in), {"matrix 2", "'one_row'", "2 shards"}));
}

TEST(ValidatePlanInputsTest, RejectsAnOwnerOutsideTheWorld) {
  PlanInputs in = RaggedInputs(4);
  in.owners[3] = 3;
  EXPECT_TRUE(IsInvalidWith(ValidatePlanInputs(in), {"matrix 3", "owner 3"}));
}

TEST(ValidatePlanInputsTest, RejectsAMissingOwner) {
  PlanInputs in = RaggedInputs(4);
  in.owners.pop_back();
  EXPECT_TRUE(IsInvalidWith(ValidatePlanInputs(in), {"3 owners", "4 shapes"}));
}

TEST(ValidatePlanInputsTest, RejectsABrokenCoverNamingTheMatrixAndRank) {
  PlanInputs in = RaggedInputs(4);
  in.shards[3][2] = RowShard{3, 3};
  EXPECT_TRUE(IsInvalidWith(ValidatePlanInputs(in), {"matrix 3", "'square'", "rank 2"}));
}

TEST(ValidatePlanInputsTest, RejectsARankOutsideTheWorld) {
  PlanInputs in = RaggedInputs(4);
  in.rank = 3;
  EXPECT_TRUE(IsInvalidWith(ValidatePlanInputs(in), {"rank = 3"}));
}

TEST(ValidatePlanInputsTest, RejectsAWireElementOfZeroBytes) {
  PlanInputs in = RaggedInputs(0);
  EXPECT_TRUE(IsInvalidWith(ValidatePlanInputs(in), {"wire_bytes_per_element = 0"}));
}

TEST(MatrixSlotOffsetsTest, StartsEachMatrixAfterTheRowsOfTheEarlierOnes) {
  auto slots = MatrixSlotOffsets({{"a", 10, 4}, {"b", 3, 16}, {"c", 1, 8}});
  ASSERT_TRUE(slots.ok()) << slots.status();
  EXPECT_EQ(slots->offsets, (std::vector<int64_t>{0, 10, 13}));
  EXPECT_EQ(slots->total_rows, 14);
}

TEST(MatrixSlotOffsetsTest, GivesAnEmptyListZeroSlots) {
  auto slots = MatrixSlotOffsets({});
  ASSERT_TRUE(slots.ok()) << slots.status();
  EXPECT_EQ(slots->total_rows, 0);
}

TEST(MatrixSlotOffsetsTest, RejectsATotalThatOverflows) {
  // Each 2^59 x 1 shape is valid (2^62 bytes); sixteen of them hold 2^63 rows.
  const std::vector<MatrixShape> shapes(16, MatrixShape{"long", int64_t{1} << 59, 1});
  EXPECT_TRUE(IsInvalidWith(MatrixSlotOffsets(shapes).status(), {"overflows", "matrix 15"}));
}

TEST(RankPlanTest, MovesRectanglesOfColumnPiecesPacked) {
  // An 8x6 matrix owned by rank 0; rank 1 holds columns [3, 6) of rows [0, 8), rank 0 the rest,
  // rank 2 nothing.
  PlanInputs in;
  in.world = 3;
  in.wire_bytes_per_element = 2;
  in.shapes = {{"w", 8, 6}};
  in.owners = {0};
  in.pieces = {{{0, 8, 0, 3}, {0, 8, 3, 3}, {0, 0, 0, 0}}};
  in.rank = 0;
  absl::StatusOr<RankPlan> owner = MakeRankPlan(in);
  ASSERT_TRUE(owner.ok()) << owner.status();
  ASSERT_EQ(owner->gather_recvs[1].size(), 1u);
  EXPECT_EQ(owner->gather_recvs[1][0], (Segment{0, 0, 8, 0, 8 * 3 * 2, 3, 3}));
  EXPECT_EQ(owner->self_segments[0], (Segment{0, 0, 8, 0, 8 * 3 * 2, 0, 3}));
  EXPECT_EQ(owner->gather_recv_bytes[2], 0);
  in.rank = 1;
  absl::StatusOr<RankPlan> peer = MakeRankPlan(in);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->gather_sends[0], owner->gather_recvs[1]);
  // A whole-row piece travels as whole rows (col_count 0), as without pieces.
  in.pieces = {{{0, 4, 0, 6}, {4, 4, 0, 6}, {0, 0, 0, 0}}};
  in.rank = 0;
  owner = MakeRankPlan(in);
  ASSERT_TRUE(owner.ok());
  EXPECT_EQ(owner->gather_recvs[1][0], (Segment{0, 4, 4, 0, 4 * 6 * 2, 0, 0}));
  // Pieces that do not tile are refused.
  in.pieces = {{{0, 8, 0, 3}, {0, 8, 2, 4}, {0, 0, 0, 0}}};
  EXPECT_TRUE(IsInvalidWith(MakeRankPlan(in).status(), {"matrix 0", "overlaps"}));
}

}  // namespace
}  // namespace normuon::sharding
