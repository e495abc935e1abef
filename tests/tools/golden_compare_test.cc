// golden_compare_test: the arithmetic of the golden checks (relative errors, the floor term,
// the pass rule and the tolerances of each precision mode) on hand-computed numbers.
#include "tools/golden_compare.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace normuon_tools {
namespace {

TEST(GoldenCompareTest, ToleranceTable) {
  Tolerances fp32 = DefaultTolerances(Precision::kFp32);
  EXPECT_DOUBLE_EQ(fp32.update, 1e-5);
  EXPECT_DOUBLE_EQ(fp32.momentum, 1e-5);
  EXPECT_DOUBLE_EQ(fp32.second_moment, 1e-5);
  EXPECT_DOUBLE_EQ(fp32.adam_state, 1e-5);
  EXPECT_DOUBLE_EQ(fp32.floor_factor, 2.4e-7);
  Tolerances bf16 = DefaultTolerances(Precision::kBf16);
  EXPECT_DOUBLE_EQ(bf16.update, 7e-2);
  EXPECT_DOUBLE_EQ(bf16.momentum, 1e-6);
  EXPECT_DOUBLE_EQ(bf16.second_moment, 1.5e-1);
  EXPECT_DOUBLE_EQ(bf16.adam_state, 1e-6);
  EXPECT_STREQ(PrecisionName(Precision::kBf16), "bf16");
}

TEST(GoldenCompareTest, UpdateErrorNumbers) {
  // Reference update (3, 4): norm 5. Ours (3, 4.05): error 0.05, rel 1e-2.
  const std::vector<float> before = {1.0f, 2.0f};
  const std::vector<float> after = {4.0f, 6.05f};
  const std::vector<double> ref_before = {1.0, 2.0};
  const std::vector<double> ref_after = {4.0, 6.0};
  UpdateError e = CompareUpdate(before, after, ref_before, ref_after, 1e-2, 0.0);
  EXPECT_NEAR(e.ref_norm, 5.0, 1e-12);
  EXPECT_NEAR(e.abs_error, 0.05, 1e-6);  // 6.05f is not exact
  EXPECT_NEAR(e.rel_error, 0.01, 2e-7);
  EXPECT_DOUBLE_EQ(e.floor, 0.0);
  EXPECT_NEAR(e.bound, 0.05, 1e-15);
  // Tolerance 2e-2 passes, 5e-3 fails.
  EXPECT_TRUE(CompareUpdate(before, after, ref_before, ref_after, 2e-2, 0.0).pass);
  EXPECT_FALSE(CompareUpdate(before, after, ref_before, ref_after, 5e-3, 0.0).pass);
}

TEST(GoldenCompareTest, FloorUsesReferenceParameterAfterTheStep) {
  // A tiny update on a large parameter: the fp32 rounding of W hides it; the floor admits it.
  const std::vector<double> ref_before = {1000.0, 0.0};
  const std::vector<double> ref_after = {1000.0 + 1e-5, 0.0};
  const std::vector<float> before = {1000.0f, 0.0f};
  const std::vector<float> after = {1000.0f, 0.0f};  // 1e-5 is below half an ulp of 1000 in fp32
  UpdateError e = CompareUpdate(before, after, ref_before, ref_after, 1e-5);
  EXPECT_NEAR(e.rel_error, 1.0, 1e-6);
  EXPECT_NEAR(e.floor, 2.4e-7 * (1000.0 + 1e-5), 1e-15);
  EXPECT_TRUE(e.pass);
  EXPECT_LT(e.bound_use, 1.0);
  // Without the floor it fails.
  EXPECT_FALSE(CompareUpdate(before, after, ref_before, ref_after, 1e-5, 0.0).pass);
}

TEST(GoldenCompareTest, ZeroAndNonFinite) {
  const std::vector<double> zeros = {0.0, 0.0};
  const std::vector<float> fzeros = {0.0f, 0.0f};
  UpdateError e = CompareUpdate(fzeros, fzeros, zeros, zeros, 1e-5);
  EXPECT_TRUE(e.pass);
  EXPECT_EQ(e.rel_error, 0.0);
  const std::vector<float> moved = {0.0f, 1.0f};
  e = CompareUpdate(fzeros, moved, zeros, zeros, 1e-5);
  EXPECT_FALSE(e.pass);
  EXPECT_TRUE(std::isinf(e.rel_error));
  const std::vector<float> nan = {0.0f, std::numeric_limits<float>::quiet_NaN()};
  const std::vector<double> ref = {0.0, 1.0};
  e = CompareUpdate(fzeros, nan, zeros, ref, 1e-5);
  EXPECT_FALSE(e.pass);
  EXPECT_TRUE(std::isnan(e.rel_error));
  StateError s = CompareState(nan, ref, 1.0);
  EXPECT_FALSE(s.pass);
}

TEST(GoldenCompareTest, StateError) {
  const std::vector<float> ours = {1.0f, 2.0f, 2.0f};
  const std::vector<double> ref = {1.0, 2.0, 2.0 + 3e-5};  // norm 3, error 3e-5
  StateError s = CompareState(ours, ref, 2e-5);
  EXPECT_NEAR(s.ref_norm, 3.0, 1e-4);
  EXPECT_NEAR(s.rel_error, 1e-5, 1e-9);
  EXPECT_TRUE(s.pass);
  EXPECT_FALSE(CompareState(ours, ref, 5e-6).pass);
  EXPECT_NEAR(Norm(ref), s.ref_norm, 1e-15);
  const std::vector<double> ours_d = {1.0, 2.0, 2.0};
  EXPECT_NEAR(DiffNorm(ours_d, ref), 3e-5, 1e-12);
}

}  // namespace
}  // namespace normuon_tools
