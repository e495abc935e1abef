// golden_reference_test: (1) the float64 re-implementation of the official step reproduces every
// case of the official reference file from its inputs; (2) cases it makes for shapes and
// hyper-parameters the file lacks (1-row, 1-column, tall, wide, odd sizes, no Nesterov, other
// NS step counts, betas, lr and wd; AdamW on 2-D and odd sizes) pass through the C API on the
// CPU backend at the fp32 tolerance, so golden_check works on files it has never seen.
#include "tools/golden_reference.h"

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
  absl::StatusOr<std::vector<GoldenCase>> cases = ReadGoldenFile(
      absl::StrCat(srcdir != nullptr ? srcdir : ".", "/normuon/tests/data/normuon_reference.txt"));
  EXPECT_TRUE(cases.ok()) << cases.status();
  return cases.ok() ? *cases : std::vector<GoldenCase>();
}

TEST(GoldenReferenceTest, ReproducesOfficialReference) {
  std::vector<GoldenCase> cases = LoadReference();
  ASSERT_FALSE(cases.empty());
  for (const GoldenCase& official : cases) {
    SCOPED_TRACE(official.name);
    GoldenCase ours = official;
    ASSERT_TRUE(ComputeReference(&ours).ok());
    for (int s = 0; s < official.steps; ++s) {
      const std::vector<double>& before =
          s == 0 ? official.param_init.values : official.params[s - 1].values;
      std::vector<double> ref_update(before.size()), our_update(before.size());
      for (size_t i = 0; i < before.size(); ++i) {
        ref_update[i] = official.params[s].values[i] - before[i];
        our_update[i] = ours.params[s].values[i] - before[i];
      }
      const double rel = DiffNorm(our_update, ref_update) / Norm(ref_update);
      EXPECT_LT(rel, 1e-10) << "step " << s;
    }
    for (const GoldenArray& state : official.final_state) {
      const GoldenArray* mine = ours.FindState(state.name);
      ASSERT_NE(mine, nullptr) << state.name;
      ASSERT_EQ(mine->rows, state.rows);
      ASSERT_EQ(mine->cols, state.cols);
      EXPECT_LT(DiffNorm(mine->values, state.values) / Norm(state.values), 1e-10) << state.name;
    }
  }
}

TEST(GoldenReferenceTest, RandomCasesAreReproducibleAndRoundTrip) {
  RandomCaseSpec spec;
  spec.name = "r";
  spec.rows = 5;
  spec.cols = 3;
  spec.seed = 7;
  absl::StatusOr<GoldenCase> a = MakeRandomCase(spec);
  absl::StatusOr<GoldenCase> b = MakeRandomCase(spec);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->grads[2].values, b->grads[2].values);
  EXPECT_EQ(a->params[2].values, b->params[2].values);
  absl::StatusOr<std::vector<GoldenCase>> parsed = ParseGolden(FormatGolden({*a}));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ((*parsed)[0].params[2].values, a->params[2].values);
  EXPECT_EQ((*parsed)[0].FindState("second_moment_final")->rows, 5);
  spec.seed = 8;
  absl::StatusOr<GoldenCase> c = MakeRandomCase(spec);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->grads[0].values, a->grads[0].values);
}

struct Unseen {
  const char* label;
  GoldenKind kind;
  int64_t rows, cols;
  int steps;
  double lr, beta1, beta2, wd;
  bool nesterov;
  int ns_steps;
};

// Betas are chosen so that their float32 rounding (the C API's config fields are float) stays
// well inside the fp32 tolerance: beta2 = 0.999 becomes 0.99900001, so 1 - beta2 is off by
// 1.3e-5 relative and so is every second moment, more than the 1e-5 state tolerance.
std::vector<RandomCaseSpec> UnseenSpecs() {
  const Unseen table[] = {
      {"row", GoldenKind::kNormuon, 1, 64, 3, 0.02, 0.95, 0.95, 0.01, true, 5},
      {"column", GoldenKind::kNormuon, 64, 1, 3, 0.02, 0.95, 0.95, 0.01, true, 5},
      {"tall", GoldenKind::kNormuon, 128, 8, 3, 0.02, 0.95, 0.95, 0.01, true, 5},
      {"wide", GoldenKind::kNormuon, 8, 128, 3, 0.02, 0.95, 0.95, 0.01, true, 5},
      {"odd", GoldenKind::kNormuon, 33, 17, 4, 0.03, 0.9, 0.99, 0.1, true, 5},
      {"odd_t", GoldenKind::kNormuon, 17, 33, 4, 0.03, 0.9, 0.99, 0.1, true, 5},
      {"no_nesterov", GoldenKind::kNormuon, 24, 40, 3, 0.02, 0.95, 0.95, 0.0, false, 5},
      {"ns3", GoldenKind::kNormuon, 40, 24, 3, 0.05, 0.8, 0.9, 0.05, true, 3},
      {"ns7", GoldenKind::kNormuon, 31, 31, 2, 0.01, 0.95, 0.95, 0.01, true, 7},
      {"square", GoldenKind::kNormuon, 128, 128, 2, 0.02, 0.95, 0.95, 0.01, true, 5},
      {"adamw_2d", GoldenKind::kAdamw, 12, 7, 4, 1e-3, 0.8, 0.99, 0.1, true, 5},
      {"adamw_odd", GoldenKind::kAdamw, 1, 37, 3, 3e-4, 0.9, 0.95, 0.0, true, 5},
  };
  std::vector<RandomCaseSpec> specs;
  uint64_t seed = 100;
  for (const Unseen& u : table) {
    RandomCaseSpec s;
    s.name = absl::StrCat("unseen_", u.label, "_", u.rows, "x", u.cols);
    s.kind = u.kind;
    s.rows = u.rows;
    s.cols = u.cols;
    s.steps = u.steps;
    s.lr = u.lr;
    s.beta1 = u.beta1;
    s.beta2 = u.beta2;
    s.weight_decay = u.wd;
    s.nesterov = u.nesterov;
    s.ns_steps = u.ns_steps;
    s.seed = seed++;
    specs.push_back(s);
  }
  return specs;
}

TEST(GoldenReferenceTest, UnseenCasesPassOnCpu) {
  for (const RandomCaseSpec& spec : UnseenSpecs()) {
    SCOPED_TRACE(spec.name);
    absl::StatusOr<GoldenCase> c = MakeRandomCase(spec);
    ASSERT_TRUE(c.ok()) << c.status();
    // Through the text format, as golden_check would read it.
    absl::StatusOr<std::vector<GoldenCase>> parsed = ParseGolden(FormatGolden({*c}), spec.name);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    absl::StatusOr<CaseResult> result = RunGoldenCase((*parsed)[0], RunOptions());
    ASSERT_TRUE(result.ok()) << result.status();
    std::printf("%s\n", result->Summary().c_str());
    for (const StepCheck& s : result->steps) {
      EXPECT_TRUE(s.error.pass) << "step " << s.step << ": update rel error " << s.error.rel_error
                                << ", |ours-ref| " << s.error.abs_error << " > bound "
                                << s.error.bound;
    }
    for (const StateCheck& s : result->states) {
      EXPECT_TRUE(s.error.pass) << s.name << ": rel error " << s.error.rel_error;
    }
  }
}

// A 1x1 "matrix" is legal in the API (rows, cols > 0); its NS5 is a scalar iteration.
TEST(GoldenReferenceTest, OneByOneMatrix) {
  RandomCaseSpec spec;
  spec.name = "unseen_1x1";
  spec.rows = 1;
  spec.cols = 1;
  spec.seed = 5;
  absl::StatusOr<GoldenCase> c = MakeRandomCase(spec);
  ASSERT_TRUE(c.ok());
  absl::StatusOr<CaseResult> result = RunGoldenCase(*c, RunOptions());
  ASSERT_TRUE(result.ok()) << result.status();
  std::printf("%s\n", result->Summary().c_str());
  EXPECT_TRUE(result->pass);
}

}  // namespace
}  // namespace normuon_tools
