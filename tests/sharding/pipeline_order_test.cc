#include "sharding/pipeline_order.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace normuon::sharding {
namespace {

std::string Render(const std::vector<PipelineCollective>& order) {
  std::string s;
  for (const PipelineCollective& c : order) {
    s += (c.gather ? "G" : "S") + std::to_string(c.bucket) + " ";
  }
  return s;
}

TEST(PipelineOrderTest, BucketsOfAtLeastWorldMatricesKeepOneGatherAhead) {
  EXPECT_EQ(Render(PipelineOrder({4, 4, 4}, 4)), "G0 G1 S0 G2 S1 S2 ");
  EXPECT_EQ(Render(PipelineOrder({1, 1, 1}, 1)), "G0 G1 S0 G2 S1 S2 ");
}

TEST(PipelineOrderTest, SmallBucketsGatherAheadUntilEveryRankCanOwnOne) {
  // One matrix per bucket on 4 ranks: four buckets' Newton-Schulz may run at once.
  EXPECT_EQ(Render(PipelineOrder({1, 1, 1, 1, 1, 1}, 4)),
            "G0 G1 G2 G3 S0 G4 S1 G5 S2 S3 S4 S5 ");
  // Uneven buckets: 1 + 2 >= 3 after bucket 1; 2 + 1 >= 3 after bucket 2; ...
  EXPECT_EQ(Render(PipelineOrder({1, 2, 1, 3}, 3)), "G0 G1 S0 G2 S1 G3 S2 S3 ");
}

TEST(PipelineOrderTest, EveryCollectiveOnceAndEachScatterAfterItsGather) {
  for (int world : {1, 2, 3, 8, 64}) {
    for (int buckets : {0, 1, 2, 5, 17}) {
      std::vector<int64_t> counts;
      for (int b = 0; b < buckets; ++b) counts.push_back(1 + (b * 7) % 5);
      const auto order = PipelineOrder(counts, world);
      ASSERT_EQ(order.size(), 2u * buckets);
      std::vector<int> gather_at(buckets, -1), scatter_at(buckets, -1);
      int next_gather = 0, next_scatter = 0;
      for (int i = 0; i < static_cast<int>(order.size()); ++i) {
        if (order[i].gather) {
          EXPECT_EQ(order[i].bucket, next_gather++);  // gathers in bucket order
          gather_at[order[i].bucket] = i;
        } else {
          EXPECT_EQ(order[i].bucket, next_scatter++);  // scatters in bucket order
          scatter_at[order[i].bucket] = i;
        }
      }
      for (int b = 0; b < buckets; ++b) {
        EXPECT_LT(gather_at[b], scatter_at[b]);
        if (b + 1 < buckets) EXPECT_LT(gather_at[b + 1], scatter_at[b]);  // overlap kept
      }
    }
  }
}

}  // namespace
}  // namespace normuon::sharding
