#include "sharding/shard.h"

#include <cstdint>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "tests/sharding/test_util.h"

namespace normuon::sharding {
namespace {

using ::normuon::sharding::testing::IsInvalidWith;

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

std::vector<int64_t> Counts(const std::vector<RowShard>& shards) {
  std::vector<int64_t> counts;
  for (const RowShard& s : shards) counts.push_back(s.row_count);
  return counts;
}

TEST(ValidateShapeTest, AcceptsAnOrdinaryMatrix) {
  EXPECT_TRUE(ValidateShape({"w", 2304, 768}).ok());
}

TEST(ValidateShapeTest, RejectsZeroRowsNamingTheMatrixAndValue) {
  EXPECT_TRUE(IsInvalidWith(ValidateShape({"h.0.attn", 0, 768}), {"'h.0.attn'", "rows = 0"}));
}

TEST(ValidateShapeTest, RejectsNegativeCols) {
  EXPECT_TRUE(IsInvalidWith(ValidateShape({"w", 4, -3}), {"'w'", "cols = -3"}));
}

TEST(ValidateShapeTest, RejectsAShapeWhoseElementCountOverflows) {
  EXPECT_TRUE(IsInvalidWith(ValidateShape({"huge", int64_t{1} << 40, int64_t{1} << 30}),
                            {"'huge'", "too large"}));
}

TEST(ValidateShapeTest, RejectsAShapeWhoseByteCountOverflowsThoughItsElementCountFits) {
  // 2^61 elements fit in int64_t; 2^61 * 8 bytes do not.
  EXPECT_TRUE(IsInvalidWith(ValidateShape({"big", int64_t{1} << 31, int64_t{1} << 30}),
                            {"'big'", "too large"}));
}

TEST(ValidateShapeTest, AcceptsAShapeJustBelowTheByteLimit) {
  // 2^30 x 2^30 would be exactly 2^63 bytes; one column fewer fits.
  EXPECT_TRUE(ValidateShape({"edge", int64_t{1} << 30, (int64_t{1} << 30) - 1}).ok());
  EXPECT_FALSE(ValidateShape({"edge", int64_t{1} << 30, int64_t{1} << 30}).ok());
}

TEST(ValidateLocalShardTest, AcceptsAZeroRowShardAtTheEnd) {
  EXPECT_TRUE(ValidateLocalShard({"w", 10, 4}, RowShard{10, 0}, 3).ok());
}

TEST(ValidateLocalShardTest, RejectsANegativeRowBeginNamingTheRank) {
  EXPECT_TRUE(IsInvalidWith(ValidateLocalShard({"w", 10, 4}, RowShard{-1, 2}, 2),
                            {"'w'", "rank 2", "row_begin = -1"}));
}

TEST(ValidateLocalShardTest, RejectsANegativeRowCount) {
  EXPECT_TRUE(IsInvalidWith(ValidateLocalShard({"w", 10, 4}, RowShard{0, -5}, 1),
                            {"rank 1", "row_count = -5"}));
}

TEST(ValidateLocalShardTest, RejectsAShardRunningPastTheLastRow) {
  EXPECT_TRUE(IsInvalidWith(ValidateLocalShard({"w", 10, 4}, RowShard{8, 3}, 0),
                            {"rank 0", "8 + 3", "10 rows"}));
}

TEST(ValidateLocalShardTest, RejectsAZeroRowShardThatStartsPastTheEnd) {
  EXPECT_TRUE(IsInvalidWith(ValidateLocalShard({"w", 10, 4}, RowShard{11, 0}, 0),
                            {"row_begin = 11", "rows = 10"}));
}

TEST(ValidateLocalShardTest, RejectsAHugeRowCountWithoutOverflowing) {
  EXPECT_TRUE(
      IsInvalidWith(ValidateLocalShard({"w", 10, 4}, RowShard{5, kInt64Max}, 0), {"run past"}));
}

TEST(ValidateLocalShardTest, OmitsTheRankWhenItIsUnknown) {
  const absl::Status s = ValidateLocalShard({"w", 10, 4}, RowShard{-1, 2});
  EXPECT_TRUE(IsInvalidWith(s, {"'w'"}));
  EXPECT_EQ(s.message().find("rank"), absl::string_view::npos) << s;
}

TEST(Fsdp2SplitTest, DividesEvenlyWhenTheWorldDividesTheRows) {
  auto shards = Fsdp2Split(8, 4);
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_EQ(Counts(*shards), (std::vector<int64_t>{2, 2, 2, 2}));
  EXPECT_EQ((*shards)[3], (RowShard{6, 2}));
}

TEST(Fsdp2SplitTest, GivesCeilSizedChunksAndAShortLastRank) {
  auto shards = Fsdp2Split(10, 4);
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_EQ(Counts(*shards), (std::vector<int64_t>{3, 3, 3, 1}));
  EXPECT_EQ((*shards)[3], (RowShard{9, 1}));
}

TEST(Fsdp2SplitTest, LeavesTrailingRanksEmptyWhenTorchChunkReturnsFewerChunks) {
  // torch.chunk(5 rows, 4) -> 2, 2, 1 (three chunks); torch.chunk(4 rows, 3) -> 2, 2.
  auto five = Fsdp2Split(5, 4);
  ASSERT_TRUE(five.ok()) << five.status();
  EXPECT_EQ(Counts(*five), (std::vector<int64_t>{2, 2, 1, 0}));
  auto four = Fsdp2Split(4, 3);
  ASSERT_TRUE(four.ok()) << four.status();
  EXPECT_EQ(Counts(*four), (std::vector<int64_t>{2, 2, 0}));
  EXPECT_EQ((*four)[2], (RowShard{4, 0}));
}

TEST(Fsdp2SplitTest, GivesEmptyRanksAtTheEndWhenTheWorldExceedsTheRows) {
  auto shards = Fsdp2Split(3, 8);
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_EQ(Counts(*shards), (std::vector<int64_t>{1, 1, 1, 0, 0, 0, 0, 0}));
  for (int r = 3; r < 8; ++r) EXPECT_EQ((*shards)[r].row_begin, 3) << "rank " << r;
}

TEST(Fsdp2SplitTest, MatchesTorchChunkForEveryRowCountAndWorldUpToSixteen) {
  for (int64_t rows = 1; rows <= 64; ++rows) {
    for (int world = 1; world <= 16; ++world) {
      auto shards = Fsdp2Split(rows, world);
      ASSERT_TRUE(shards.ok()) << shards.status();
      const int64_t chunk = (rows + world - 1) / world;
      const int64_t chunks = (rows + chunk - 1) / chunk;  // what torch.chunk returns
      for (int r = 0; r < world; ++r) {
        const int64_t expected =
            r < chunks - 1 ? chunk : (r == chunks - 1 ? rows - chunk * (chunks - 1) : 0);
        EXPECT_EQ((*shards)[r].row_count, expected) << rows << " rows, world " << world;
      }
      EXPECT_TRUE(ValidateCover({"w", rows, 1}, *shards).ok());
    }
  }
}

TEST(Fsdp2SplitTest, RejectsAWorldBelowOne) {
  EXPECT_TRUE(IsInvalidWith(Fsdp2Split(8, 0).status(), {"world = 0"}));
}

TEST(Fsdp2SplitTest, RejectsNegativeRows) {
  EXPECT_TRUE(IsInvalidWith(Fsdp2Split(-1, 2).status(), {"rows = -1"}));
}

TEST(BalancedSplitTest, GivesTheRemainderToTheFirstRanks) {
  auto shards = BalancedSplit(10, 4);
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_EQ(Counts(*shards), (std::vector<int64_t>{3, 3, 2, 2}));
  EXPECT_TRUE(ValidateCover({"w", 10, 1}, *shards).ok());
}

TEST(ValidateCoverTest, AcceptsARaggedCoverWithZeroRowRanksAnywhere) {
  // Zero-row ranks sit at the start, in the middle (row_begin inside another rank's range) and
  // at the end.
  const std::vector<RowShard> shards = {{0, 0}, {0, 3}, {2, 0}, {3, 1}, {4, 6}, {10, 0}};
  EXPECT_TRUE(ValidateCover({"w", 10, 4}, shards).ok());
}

TEST(ValidateCoverTest, AcceptsACoverWhoseRanksAreNotInRowOrder) {
  EXPECT_TRUE(ValidateCover({"w", 10, 4}, {{6, 4}, {0, 6}}).ok());
}

TEST(ValidateCoverTest, AcceptsASingleRankHoldingEverything) {
  EXPECT_TRUE(ValidateCover({"w", 1, 7}, {{0, 1}}).ok());
}

TEST(ValidateCoverTest, RejectsOverlappingShardsNamingBothRanks) {
  EXPECT_TRUE(IsInvalidWith(ValidateCover({"w", 10, 4}, {{0, 5}, {4, 6}}),
                            {"'w'", "rank 1", "[4, 10)", "overlap rank 0", "[0, 5)"}));
}

TEST(ValidateCoverTest, RejectsAGapNamingTheRankAfterIt) {
  EXPECT_TRUE(IsInvalidWith(ValidateCover({"w", 10, 4}, {{0, 4}, {0, 0}, {5, 5}}),
                            {"rank 2", "[4, 5)", "no rank"}));
}

TEST(ValidateCoverTest, RejectsRowsMissingAtTheStart) {
  EXPECT_TRUE(IsInvalidWith(ValidateCover({"w", 10, 4}, {{2, 8}}), {"rank 0", "[0, 2)"}));
}

TEST(ValidateCoverTest, RejectsRowsMissingAtTheEnd) {
  EXPECT_TRUE(IsInvalidWith(ValidateCover({"w", 10, 4}, {{0, 4}, {4, 4}}),
                            {"[8, 10)", "held by no rank", "rank 1"}));
}

TEST(ValidateCoverTest, RejectsACoverInWhichNoRankHoldsAnyRow) {
  EXPECT_TRUE(IsInvalidWith(ValidateCover({"w", 3, 4}, {{0, 0}, {3, 0}}), {"[0, 3)"}));
}

TEST(ValidateCoverTest, RejectsAnEmptyShardList) {
  EXPECT_TRUE(IsInvalidWith(ValidateCover({"w", 3, 4}, {}), {"'w'", "no shards"}));
}

TEST(ValidateCoverTest, ReportsAnInvalidShardWithItsRank) {
  EXPECT_TRUE(IsInvalidWith(ValidateCover({"w", 10, 4}, {{0, 5}, {5, 5}, {0, -1}}),
                            {"rank 2", "row_count = -1"}));
}

TEST(CheckedArithmeticTest, ReportsOverflowAndLeavesTheOutputAlone) {
  int64_t out = 7;
  EXPECT_FALSE(CheckedMul(kInt64Max, 2, &out));
  EXPECT_FALSE(CheckedAdd(kInt64Max, 1, &out));
  EXPECT_EQ(out, 7);
  EXPECT_TRUE(CheckedMul(int64_t{1} << 31, int64_t{1} << 31, &out));
  EXPECT_EQ(out, int64_t{1} << 62);
}

// ---- Two-dimensional pieces ----

std::vector<RankPiece> Tp2Dp2() {  // a row-parallel 8x6: TP splits columns, DP the rows
  return {{0, {0, 4, 0, 3}}, {1, {4, 4, 0, 3}}, {2, {0, 4, 3, 3}}, {3, {4, 4, 3, 3}}};
}

TEST(ValidateTilingTest, AcceptsMeshesInAnyOrderWithEmptyPieces) {
  std::vector<RankPiece> p = Tp2Dp2();
  EXPECT_TRUE(ValidateTiling({"w", 8, 6}, p).ok());
  std::swap(p[0], p[3]);
  p.push_back({4, {0, 0, 0, 0}});
  p.push_back({5, {8, 0, 6, 0}});
  EXPECT_TRUE(ValidateTiling({"w", 8, 6}, p).ok());
}

TEST(ValidateTilingTest, NamesBothRanksAndRectanglesOfAnOverlap) {
  std::vector<RankPiece> p = Tp2Dp2();
  p[3].rect = {3, 5, 3, 3};  // rows 3 of columns 3-5 held by ranks 2 and 3
  EXPECT_TRUE(IsInvalidWith(ValidateTiling({"w", 8, 6}, p),
                            {"'w'", "rank 2's piece rows [0, 4) x cols [3, 6)",
                             "overlaps rank 3's piece rows [3, 8) x cols [3, 6)",
                             "both hold element (3, 3)"}));
}

TEST(ValidateTilingTest, NamesTheFirstUncoveredElement) {
  std::vector<RankPiece> p = Tp2Dp2();
  p[3].rect = {4, 4, 4, 2};  // column 3 of rows 4-7 held by nobody
  EXPECT_TRUE(IsInvalidWith(ValidateTiling({"w", 8, 6}, p),
                            {"element (4, 3)", "held by no piece"}));
  EXPECT_TRUE(IsInvalidWith(ValidateTiling({"w", 8, 6}, {}), {"element (0, 0)"}));
}

TEST(ValidateTilingTest, RefusesOutOfRangeAndHugeValuesNamingTheField) {
  const MatrixShape shape{"w", 8, 6};
  EXPECT_TRUE(IsInvalidWith(ValidateLocalPiece(shape, {-1, 2, 0, 6}, 3), {"rank 3", "row_begin = -1"}));
  EXPECT_TRUE(IsInvalidWith(ValidateLocalPiece(shape, {0, kInt64Max, 0, 6}, 1), {"row_count"}));
  EXPECT_TRUE(IsInvalidWith(ValidateLocalPiece(shape, {0, 8, 7, 0}, 1), {"col_begin = 7"}));
  EXPECT_TRUE(IsInvalidWith(ValidateLocalPiece(shape, {0, 8, 2, kInt64Max}, 1), {"col_count"}));
  EXPECT_TRUE(IsInvalidWith(ValidateLocalPiece(shape, {0, 8, 2, -5}, 1), {"col_count = -5"}));
  EXPECT_TRUE(IsInvalidWith(ValidateTiling(shape, {{2, {0, 8, 0, 7}}}), {"rank 2", "col_count"}));
  // A huge matrix tiled by two huge pieces: no overflow, no sweep over its rows.
  const int64_t big = int64_t{1} << 58;  // 2^58 x 2 x 8 bytes still fits in int64_t
  EXPECT_TRUE(ValidateTiling({"big", big, 2}, {{0, {0, big, 0, 1}}, {1, {0, big, 1, 1}}}).ok());
}

}  // namespace
}  // namespace normuon::sharding
