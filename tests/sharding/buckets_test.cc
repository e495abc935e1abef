#include "sharding/buckets.h"

#include <cstdint>
#include <limits>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "tests/sharding/test_util.h"

namespace normuon::sharding {
namespace {

using ::normuon::sharding::testing::Gpt2SmallMatrices;
using ::normuon::sharding::testing::IsInvalidWith;

using Buckets = std::vector<std::vector<int>>;

// Column vectors of the given row counts: with one byte per element, a matrix's size in bytes
// is its row count.
std::vector<MatrixShape> OfSizes(const std::vector<int64_t>& sizes) {
  std::vector<MatrixShape> shapes;
  for (int64_t s : sizes) shapes.push_back({"m", s, 1});
  return shapes;
}

int64_t Bytes(const std::vector<MatrixShape>& shapes, const std::vector<int>& bucket,
              int64_t bytes_per_element) {
  int64_t total = 0;
  for (int k : bucket) total += shapes[k].rows * shapes[k].cols * bytes_per_element;
  return total;
}

Buckets Make(const std::vector<MatrixShape>& shapes, int64_t bpe, int64_t limit) {
  auto buckets = MakeBuckets(shapes, bpe, limit);
  EXPECT_TRUE(buckets.ok()) << buckets.status();
  return buckets.ok() ? *buckets : Buckets();
}

TEST(MakeBucketsTest, FillsBucketsGreedilyFromTheLastMatrix) {
  EXPECT_EQ(Make(OfSizes({3, 4, 2, 5, 1}), 1, 6), (Buckets{{4, 3}, {2, 1}, {0}}));
}

TEST(MakeBucketsTest, ListsEveryMatrixOnceInReverseRegistrationOrder) {
  const std::vector<MatrixShape> shapes = Gpt2SmallMatrices();
  std::vector<int> flat;
  for (const auto& bucket : Make(shapes, 2, 8 << 20)) {
    flat.insert(flat.end(), bucket.begin(), bucket.end());
  }
  std::vector<int> expected;
  for (int k = 47; k >= 0; --k) expected.push_back(k);
  EXPECT_EQ(flat, expected);
}

TEST(MakeBucketsTest, KeepsEveryBucketWithinTheLimitUnlessItHoldsOneMatrix) {
  const std::vector<MatrixShape> shapes = Gpt2SmallMatrices();
  for (int64_t limit : {int64_t{1} << 20, int64_t{4} << 20, int64_t{8} << 20, int64_t{25} << 20}) {
    for (const auto& bucket : Make(shapes, 2, limit)) {
      if (bucket.size() > 1) {
        EXPECT_LE(Bytes(shapes, bucket, 2), limit) << "limit " << limit;
      }
    }
  }
}

TEST(MakeBucketsTest, ClosesABucketOnlyWhenTheNextMatrixWouldNotFit) {
  const std::vector<MatrixShape> shapes = Gpt2SmallMatrices();
  const int64_t limit = int64_t{10} << 20;
  const Buckets buckets = Make(shapes, 2, limit);
  for (size_t b = 0; b + 1 < buckets.size(); ++b) {
    std::vector<int> grown = buckets[b];
    grown.push_back(buckets[b + 1].front());
    EXPECT_GT(Bytes(shapes, grown, 2), limit) << "bucket " << b;
  }
}

TEST(MakeBucketsTest, GivesAMatrixLargerThanTheLimitABucketOfItsOwn) {
  EXPECT_EQ(Make(OfSizes({2, 10, 2}), 1, 5), (Buckets{{2}, {1}, {0}}));
}

TEST(MakeBucketsTest, CountsBytesPerElement) {
  // Four 4-element matrices: 16 bytes each in fp32, 8 in bf16; a 16-byte limit holds one or two.
  const std::vector<MatrixShape> shapes = OfSizes({4, 4, 4, 4});
  EXPECT_EQ(Make(shapes, 4, 16).size(), 4u);
  EXPECT_EQ(Make(shapes, 2, 16).size(), 2u);
}

TEST(MakeBucketsTest, PutsEverythingInOneBucketUnderAnUnboundedLimit) {
  EXPECT_EQ(Make(OfSizes({3, 4, 2}), 4, std::numeric_limits<int64_t>::max()), (Buckets{{2, 1, 0}}));
}

TEST(MakeBucketsTest, GivesAnEmptyListNoBuckets) { EXPECT_TRUE(Make({}, 2, 1024).empty()); }

TEST(MakeBucketsTest, RejectsANonPositiveLimit) {
  EXPECT_TRUE(IsInvalidWith(MakeBuckets(OfSizes({1}), 2, 0).status(), {"bucket_bytes = 0"}));
}

TEST(MakeBucketsTest, RejectsAnElementSizeOutsideOneToEight) {
  EXPECT_TRUE(
      IsInvalidWith(MakeBuckets(OfSizes({1}), 16, 64).status(), {"bytes_per_element = 16"}));
}

TEST(ValidateBucketsTest, RejectsAMatrixInTwoBucketsNamingBoth) {
  EXPECT_TRUE(IsInvalidWith(ValidateBuckets(OfSizes({1, 1}), {{1, 0}, {0}}),
                            {"matrix 0", "bucket 0", "bucket 1"}));
}

TEST(ValidateBucketsTest, RejectsAMatrixInNoBucket) {
  EXPECT_TRUE(IsInvalidWith(ValidateBuckets(OfSizes({1, 1}), {{1}}), {"matrix 0", "no bucket"}));
}

TEST(ValidateBucketsTest, RejectsAnEmptyBucket) {
  EXPECT_TRUE(IsInvalidWith(ValidateBuckets(OfSizes({1}), {{0}, {}}), {"bucket 1", "empty"}));
}

TEST(AssignOwnersPerBucketTest, NeverGivesOneRankAWholeBucketOfSeveralMatrices) {
  const std::vector<MatrixShape> shapes = Gpt2SmallMatrices();
  const Buckets buckets = Make(shapes, 2, int64_t{12} << 20);
  for (OwnerPolicy p : {OwnerPolicy::kRoundRobin, OwnerPolicy::kCostBalanced}) {
    for (int world : {2, 3, 4, 8}) {
      auto owners = AssignOwnersPerBucket(shapes, buckets, world, p);
      ASSERT_TRUE(owners.ok()) << owners.status();
      for (size_t b = 0; b < buckets.size(); ++b) {
        std::set<int> ranks;
        for (int k : buckets[b]) ranks.insert((*owners)[k]);
        if (buckets[b].size() >= 2) {
          EXPECT_GE(ranks.size(), 2u)
              << OwnerPolicyName(p) << " world " << world << " bucket " << b;
        }
        if (buckets[b].size() >= static_cast<size_t>(world)) {
          EXPECT_EQ(ranks.size(), static_cast<size_t>(world))
              << OwnerPolicyName(p) << " world " << world << " bucket " << b;
        }
      }
    }
  }
}

TEST(AssignOwnersPerBucketTest, RoundRobinContinuesDealingWhereThePreviousBucketStopped) {
  const std::vector<MatrixShape> shapes(6, MatrixShape{"w", 4, 4});
  auto owners = AssignOwnersPerBucket(shapes, {{5, 4, 3}, {2, 1, 0}}, 2, OwnerPolicy::kRoundRobin);
  ASSERT_TRUE(owners.ok()) << owners.status();
  // Bucket 0 by index (ties): 3, 4, 5 -> 0, 1, 0; bucket 1 goes on from rank 1: 0, 1, 2 -> 1, 0, 1.
  EXPECT_EQ(*owners, (std::vector<int>{1, 0, 1, 0, 1, 0}));
}

TEST(AssignOwnersPerBucketTest, CostBalancedBreaksBucketTiesByTheTotalSoFar) {
  const std::vector<MatrixShape> shapes(3, MatrixShape{"w", 4, 4});
  auto owners = AssignOwnersPerBucket(shapes, {{2}, {1}, {0}}, 2, OwnerPolicy::kCostBalanced);
  ASSERT_TRUE(owners.ok()) << owners.status();
  EXPECT_EQ(*owners, (std::vector<int>{0, 1, 0}));
}

TEST(AssignOwnersPerBucketTest, MatchesAssignOwnersWhenThereIsOneBucket) {
  const std::vector<MatrixShape> shapes = Gpt2SmallMatrices();
  const Buckets one = Make(shapes, 2, std::numeric_limits<int64_t>::max());
  for (OwnerPolicy p : {OwnerPolicy::kRoundRobin, OwnerPolicy::kCostBalanced}) {
    auto per_bucket = AssignOwnersPerBucket(shapes, one, 5, p);
    auto plain = AssignOwners(shapes, 5, p);
    ASSERT_TRUE(per_bucket.ok() && plain.ok());
    EXPECT_EQ(*per_bucket, *plain) << OwnerPolicyName(p);
  }
}

TEST(AssignOwnersPerBucketTest, GivesTheSameOwnersOnEveryCall) {
  const std::vector<MatrixShape> shapes = Gpt2SmallMatrices();
  const Buckets buckets = Make(shapes, 2, int64_t{8} << 20);
  for (OwnerPolicy p : {OwnerPolicy::kRoundRobin, OwnerPolicy::kCostBalanced}) {
    auto a = AssignOwnersPerBucket(shapes, buckets, 3, p);
    auto b = AssignOwnersPerBucket(shapes, buckets, 3, p);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(*a, *b) << OwnerPolicyName(p);
  }
}

TEST(AssignOwnersPerBucketTest, RejectsBucketsThatDoNotPartitionTheMatrices) {
  EXPECT_TRUE(IsInvalidWith(
      AssignOwnersPerBucket(OfSizes({1, 1}), {{1}}, 2, OwnerPolicy::kRoundRobin).status(),
      {"matrix 0", "no bucket"}));
}

}  // namespace
}  // namespace normuon::sharding

namespace normuon::sharding {
namespace {

std::vector<MatrixShape> EqualShapes(int n) {
  std::vector<MatrixShape> shapes;
  for (int i = 0; i < n; ++i) shapes.push_back({"m" + std::to_string(i), 16, 16});
  return shapes;
}

TEST(ScheduleBucketsTest, AllIsOneBucketInReverseOrder) {
  auto b = ScheduleBuckets(EqualShapes(3), 4, BucketRule::kAll, 1, 8);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->size(), 1u);
  EXPECT_EQ((*b)[0], (std::vector<int>{2, 1, 0}));
}

TEST(ScheduleBucketsTest, PerMatrixIsOneBucketEachWhateverTheWorld) {
  auto b = ScheduleBuckets(EqualShapes(3), 4, BucketRule::kPerMatrix, 1 << 20, 8);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->size(), 3u);
}

TEST(ScheduleBucketsTest, ByteBucketsAreMergedUntilEachHoldsWorldMatrices) {
  // 16x16 fp32 = 1 KiB: 1 KiB buckets are one matrix each; on 3 ranks they merge by threes and
  // the short tail (10 = 3 + 3 + 4) joins the last full bucket.
  auto b = ScheduleBuckets(EqualShapes(10), 4, BucketRule::kBytes, 1024, 3);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->size(), 3u);
  EXPECT_EQ((*b)[0], (std::vector<int>{9, 8, 7}));
  EXPECT_EQ((*b)[1], (std::vector<int>{6, 5, 4}));
  EXPECT_EQ((*b)[2], (std::vector<int>{3, 2, 1, 0}));
  // More ranks than matrices: one bucket.
  b = ScheduleBuckets(EqualShapes(10), 4, BucketRule::kBytes, 1024, 64);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->size(), 1u);
  // Large buckets are left alone.
  b = ScheduleBuckets(EqualShapes(10), 4, BucketRule::kBytes, 4096, 2);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->size(), 3u);  // 4 + 4 + 2 matrices: every bucket has >= 2
  EXPECT_EQ(ScheduleBuckets(EqualShapes(2), 4, BucketRule::kBytes, 1024, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace normuon::sharding
