// The step flags of a sharded step (kernels/backend.h: WriteStepFlagsOf, FoldStepFlagsOf): every
// rank's values survive the all-reduce's sum exactly, and the fold's precedence (diverged
// epochs, this rank's failure, another rank's failure, marked sets) is the same on every rank.
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace normuon {
namespace {

StepControl Control(int64_t steps_taken, int32_t comm_error = 0, int32_t nonfinite = kNoParam) {
  return StepControl{nonfinite, comm_error, steps_taken, 0};
}

// The all-reduce: each rank writes its flags into its own zeroed vector; the sum in rank order.
std::vector<float> Summed(const std::vector<StepControl>& ranks, const std::vector<uint32_t>& hashes) {
  const int world = static_cast<int>(ranks.size());
  std::vector<float> total(static_cast<size_t>(kStepFlagsPerRank * world), 0.0f);
  for (int r = 0; r < world; ++r) {
    std::vector<float> mine(total.size(), 0.0f);
    WriteStepFlagsOf(mine.data(), r, world, hashes[r], ranks[r]);
    for (size_t i = 0; i < total.size(); ++i) total[i] += mine[i];
  }
  return total;
}

TEST(StepFlagsTest, EpochsTravelExactlyBeyondFloatIntegers) {
  // 2^24 + 1 is not a float; its 16-bit halves are. The epoch is steps_taken's low 32 bits.
  const std::vector<int64_t> counts = {0, 1, (int64_t{1} << 24) + 1, 0xffffffffll,
                                       (int64_t{1} << 32) + 7};
  for (int64_t count : counts) {
    const std::vector<float> f = Summed({Control(count), Control(count), Control(count)}, {5, 5, 5});
    for (int r = 0; r < 3; ++r) {
      EXPECT_EQ(StepFlagsEpochOf(f.data(), 3, r), static_cast<uint32_t>(count)) << count;
    }
    StepControl c = Control(count);
    FoldStepFlagsOf(f.data(), 3, &c);
    EXPECT_EQ(c.comm_error, 0) << count;
  }
  // One step apart, even across 2^24: detected.
  const int64_t big = int64_t{1} << 24;
  const std::vector<float> f = Summed({Control(big + 1), Control(big), Control(big + 1)}, {5, 5, 5});
  StepControl c = Control(big + 1);
  FoldStepFlagsOf(f.data(), 3, &c);
  EXPECT_EQ(c.comm_error, kEpochsDiffer);
}

TEST(StepFlagsTest, TheFoldsPrecedenceIsTheSameOnEveryRank) {
  // Diverged epochs win over everything, also over this rank's own failure.
  {
    const std::vector<float> f =
        Summed({Control(4), Control(3, kCommFailed), Control(4)}, {1, 2, 3});
    for (int r = 0; r < 3; ++r) {
      StepControl c = Control(r == 1 ? 3 : 4, r == 1 ? kCommFailed : 0);
      FoldStepFlagsOf(f.data(), 3, &c);
      EXPECT_EQ(c.comm_error, kEpochsDiffer) << "rank " << r;
    }
  }
  // A failure on rank 2 skips the step on every rank; rank 2 keeps its own reason.
  {
    const std::vector<float> f =
        Summed({Control(4), Control(4), Control(4, kCommFailed)}, {1, 2, 1});
    EXPECT_TRUE(StepFlagsFailedOf(f.data(), 3, 2));
    EXPECT_FALSE(StepFlagsFailedOf(f.data(), 3, 0));
    for (int r = 0; r < 3; ++r) {
      StepControl c = Control(4, r == 2 ? kCommFailed : 0);
      FoldStepFlagsOf(f.data(), 3, &c);
      EXPECT_EQ(c.comm_error, r == 2 ? kCommFailed : kPeerFailed) << "rank " << r;
      EXPECT_TRUE(StepSkipped(c)) << "rank " << r;
    }
  }
  // No failure: the first rank whose marked set differs from rank 0's; non-finite as before.
  {
    const std::vector<float> f =
        Summed({Control(4), Control(4, 0, 7), Control(4)}, {0x12345678u, 0x12345678u, 9});
    StepControl c = Control(4);
    FoldStepFlagsOf(f.data(), 3, &c);
    EXPECT_EQ(c.comm_error, kMarkedSetsDiffer + 2);
    EXPECT_EQ(c.nonfinite_param, 7);
  }
  // All agree: nothing set.
  {
    const std::vector<float> f = Summed({Control(9), Control(9)}, {3, 3});
    StepControl c = Control(9);
    FoldStepFlagsOf(f.data(), 2, &c);
    EXPECT_EQ(c.comm_error, 0);
    EXPECT_FALSE(StepSkipped(c));
  }
}

}  // namespace
}  // namespace normuon
