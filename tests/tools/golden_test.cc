// golden_test: every case of tests/data/normuon_reference.txt through the C API on the CPU
// backend, each step's update and the final state within the fp32 tolerance (docs/ARCHITECTURE.md section
// 6); and proof that the check can fail: altered references must be reported as FAIL.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tools/golden_compare.h"
#include "tools/golden_format.h"
#include "tools/golden_runner.h"

namespace normuon_tools {
namespace {

std::vector<GoldenCase> LoadReference() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const std::string path =
      absl::StrCat(srcdir != nullptr ? srcdir : ".", "/normuon/tests/data/normuon_reference.txt");
  absl::StatusOr<std::vector<GoldenCase>> cases = ReadGoldenFile(path);
  EXPECT_TRUE(cases.ok()) << cases.status();
  return cases.ok() ? *cases : std::vector<GoldenCase>();
}

const GoldenCase* FindKind(const std::vector<GoldenCase>& cases, GoldenKind kind) {
  for (const GoldenCase& c : cases) {
    if (c.kind == kind) return &c;
  }
  return nullptr;
}

void ExpectCasePasses(const GoldenCase& c, const RunOptions& options) {
  SCOPED_TRACE(c.name);
  absl::StatusOr<CaseResult> result = RunGoldenCase(c, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->precision, Precision::kFp32);
  EXPECT_DOUBLE_EQ(result->tolerances.update, 1e-5);
  ASSERT_EQ(static_cast<int>(result->steps.size()), c.steps);
  for (const StepCheck& s : result->steps) {
    EXPECT_TRUE(s.error.pass) << "step " << s.step << ": update rel error " << s.error.rel_error
                              << ", |ours-ref| " << s.error.abs_error << " > bound "
                              << s.error.bound << " (|ref| " << s.error.ref_norm << ", floor "
                              << s.error.floor << ")";
  }
  EXPECT_EQ(result->states.size(), c.final_state.size());
  for (const StateCheck& s : result->states) {
    EXPECT_TRUE(s.error.pass) << s.name << ": rel error " << s.error.rel_error << " > "
                              << s.error.tol;
  }
  EXPECT_TRUE(result->pass);
  std::printf("%s\n", result->Summary().c_str());
}

TEST(GoldenTest, EveryCasePassesOnCpu) {
  std::vector<GoldenCase> cases = LoadReference();
  ASSERT_FALSE(cases.empty());
  ASSERT_NE(FindKind(cases, GoldenKind::kNormuon), nullptr);
  ASSERT_NE(FindKind(cases, GoldenKind::kAdamw), nullptr);
  RunOptions options;  // CPU, default ns_dtype = fp32
  for (const GoldenCase& c : cases) ExpectCasePasses(c, options);
}

TEST(GoldenTest, EveryCasePassesOnCpuWithExplicitFp32) {
  RunOptions options;
  options.ns_dtype = NORMUON_NS_FP32;
  for (const GoldenCase& c : LoadReference()) ExpectCasePasses(c, options);
}

// The reference update of step 1 grows by 0.1%: step 1 must fail (so must step 2, whose
// reference update starts from the altered param_1), step 0 must still pass.
TEST(GoldenTest, AlteredParameterFails) {
  std::vector<GoldenCase> cases = LoadReference();
  const GoldenCase* found = FindKind(cases, GoldenKind::kNormuon);
  ASSERT_NE(found, nullptr);
  GoldenCase c = *found;
  ASSERT_GE(c.steps, 2);
  for (size_t i = 0; i < c.params[1].values.size(); ++i) {
    const double update = c.params[1].values[i] - c.params[0].values[i];
    c.params[1].values[i] = c.params[0].values[i] + 1.001 * update;
  }
  absl::StatusOr<CaseResult> result = RunGoldenCase(c, RunOptions());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->pass);
  EXPECT_TRUE(result->steps[0].error.pass);
  EXPECT_FALSE(result->steps[1].error.pass);
  EXPECT_NEAR(result->steps[1].error.rel_error, 1e-3, 1e-4);
  EXPECT_NE(result->Summary().find("FAIL"), std::string::npos);
}

// A gradient the runtime never saw: one element of grad_0 changes sign; the reference's
// parameters no longer follow from the gradients given, so step 0 must fail.
TEST(GoldenTest, AlteredGradientFails) {
  std::vector<GoldenCase> cases = LoadReference();
  const GoldenCase* found = FindKind(cases, GoldenKind::kNormuon);
  ASSERT_NE(found, nullptr);
  GoldenCase c = *found;
  size_t largest = 0;
  for (size_t i = 0; i < c.grads[0].values.size(); ++i) {
    if (std::abs(c.grads[0].values[i]) > std::abs(c.grads[0].values[largest])) largest = i;
  }
  c.grads[0].values[largest] = -c.grads[0].values[largest];
  absl::StatusOr<CaseResult> result = RunGoldenCase(c, RunOptions());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->pass);
  EXPECT_FALSE(result->steps[0].error.pass);
}

// AdamW updates are tiny next to the parameter (the floor matters there): a 1% change of one
// step's reference update must still fail.
TEST(GoldenTest, AlteredAdamwUpdateFails) {
  std::vector<GoldenCase> cases = LoadReference();
  const GoldenCase* found = FindKind(cases, GoldenKind::kAdamw);
  ASSERT_NE(found, nullptr);
  GoldenCase c = *found;
  const int last = c.steps - 1;
  const std::vector<double>& prev = last == 0 ? c.param_init.values : c.params[last - 1].values;
  for (size_t i = 0; i < prev.size(); ++i) {
    c.params[last].values[i] = prev[i] + 1.01 * (c.params[last].values[i] - prev[i]);
  }
  absl::StatusOr<CaseResult> result = RunGoldenCase(c, RunOptions());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->pass);
  EXPECT_FALSE(result->steps[last].error.pass);
}

// Final state off by 1e-4 relative: the updates pass, the state check fails.
TEST(GoldenTest, AlteredStateFails) {
  std::vector<GoldenCase> cases = LoadReference();
  for (GoldenKind kind : {GoldenKind::kNormuon, GoldenKind::kAdamw}) {
    const GoldenCase* found = FindKind(cases, kind);
    ASSERT_NE(found, nullptr);
    GoldenCase c = *found;
    ASSERT_FALSE(c.final_state.empty());
    for (double& v : c.final_state[0].values) v *= 1.0001;
    absl::StatusOr<CaseResult> result = RunGoldenCase(c, RunOptions());
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_FALSE(result->pass) << c.name;
    for (const StepCheck& s : result->steps) EXPECT_TRUE(s.error.pass) << c.name;
    ASSERT_FALSE(result->states.empty());
    EXPECT_FALSE(result->states[0].error.pass) << c.name;
  }
}

TEST(GoldenTest, OtherHyperParametersChangeTheResult) {
  // Same data, another learning rate: the check must notice.
  std::vector<GoldenCase> cases = LoadReference();
  const GoldenCase* found = FindKind(cases, GoldenKind::kNormuon);
  ASSERT_NE(found, nullptr);
  GoldenCase c = *found;
  c.lr *= 1.01;
  absl::StatusOr<CaseResult> result = RunGoldenCase(c, RunOptions());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->pass);
}

}  // namespace
}  // namespace normuon_tools
