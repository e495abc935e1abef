// golden_format_test: the golden-file parser on good input (a small written case and the real
// reference file) and on each kind of bad input, whose error must name the line.
#include "tools/golden_format.h"

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"

namespace normuon_tools {
namespace {

// Expects haystack (a std::string) to contain needle.
#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "expected to find \"" << (needle) << "\" in: " << (haystack)

// A valid 2x3 normuon case with two steps; line numbers: 1 case, 2-10 scalars, 11 param_init,
// 12 grad_0, 13 param_0, 14 grad_1, 15 param_1, 16 momentum_final, 17 second_moment_final,
// 18 end.
std::string SmallCase(const std::string& name = "small") {
  return absl::StrCat("case ", name, "\n",
                      "kind normuon\n"
                      "lr 0.02\n"
                      "beta1 0.95\n"
                      "beta2 0.9\n"
                      "weight_decay 0.01\n"
                      "eps 1e-10\n"
                      "nesterov 0\n"
                      "ns_steps 4\n"
                      "steps 2\n"
                      "param_init 2 3 1 2 3 4 5 6\n"
                      "grad_0 2 3 0.1 0.2 0.3 0.4 0.5 0.6\n"
                      "param_0 2 3 1.5 2 3 4 5 6.25\n"
                      "grad_1 2 3 -1 -2 -3 -4 -5 -6\n"
                      "param_1 2 3 1 2 3 4 5 6e-1\n"
                      "momentum_final 2 3 1 1 1 1 1 1\n"
                      "second_moment_final 2 1 0.5 0.25\n"
                      "end\n");
}

std::string AdamwCase() {
  return "case adam\n"
         "kind adamw\n"
         "lr 3e-4\n"
         "beta1 0.9\n"
         "beta2 0.95\n"
         "weight_decay 0\n"
         "eps 1e-8\n"
         "steps 1\n"
         "param_init 1 4 1 2 3 4\n"
         "grad_0 1 4 1 1 1 1\n"
         "param_0 1 4 1 2 3 4\n"
         "exp_avg_final 1 4 0.1 0.1 0.1 0.1\n"
         "exp_avg_sq_final 1 4 0.05 0.05 0.05 0.05\n"
         "end\n";
}

// Parses text that must fail; returns the message.
std::string ParseError(const std::string& text) {
  absl::StatusOr<std::vector<GoldenCase>> cases = ParseGolden(text, "t.txt");
  EXPECT_FALSE(cases.ok()) << "parsed without error:\n" << text;
  if (cases.ok()) return "";
  return std::string(cases.status().message());
}

// SmallCase with one line replaced (1-based line number).
std::string WithLine(int line, const std::string& replacement) {
  std::string text = SmallCase();
  std::string out;
  int n = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    ++n;
    std::string current = text.substr(pos, eol - pos);
    if (n == line) {
      if (!replacement.empty()) absl::StrAppend(&out, replacement, "\n");
    } else {
      absl::StrAppend(&out, current, "\n");
    }
    pos = eol + 1;
  }
  return out;
}

TEST(GoldenFormatTest, ParsesSmallCase) {
  absl::StatusOr<std::vector<GoldenCase>> cases =
      ParseGolden(absl::StrCat("# comment\n\n", SmallCase(), AdamwCase()), "t.txt");
  ASSERT_TRUE(cases.ok()) << cases.status();
  ASSERT_EQ(cases->size(), 2u);
  const GoldenCase& c = (*cases)[0];
  EXPECT_EQ(c.name, "small");
  EXPECT_EQ(c.line, 3);
  EXPECT_EQ(c.kind, GoldenKind::kNormuon);
  EXPECT_DOUBLE_EQ(c.lr, 0.02);
  EXPECT_DOUBLE_EQ(c.beta1, 0.95);
  EXPECT_DOUBLE_EQ(c.beta2, 0.9);
  EXPECT_DOUBLE_EQ(c.weight_decay, 0.01);
  EXPECT_DOUBLE_EQ(c.eps, 1e-10);
  EXPECT_FALSE(c.nesterov);
  EXPECT_EQ(c.ns_steps, 4);
  EXPECT_EQ(c.steps, 2);
  EXPECT_EQ(c.rows(), 2);
  EXPECT_EQ(c.cols(), 3);
  ASSERT_EQ(c.grads.size(), 2u);
  ASSERT_EQ(c.params.size(), 2u);
  EXPECT_EQ(c.grads[1].name, "grad_1");
  EXPECT_DOUBLE_EQ(c.grads[1].values[5], -6.0);
  EXPECT_DOUBLE_EQ(c.params[0].values[5], 6.25);
  EXPECT_DOUBLE_EQ(c.params[1].values[5], 0.6);
  const GoldenArray* v = c.FindState("second_moment_final");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->rows, 2);
  EXPECT_EQ(v->cols, 1);
  EXPECT_DOUBLE_EQ(v->values[1], 0.25);
  EXPECT_EQ(c.FindState("exp_avg_final"), nullptr);

  const GoldenCase& a = (*cases)[1];
  EXPECT_EQ(a.kind, GoldenKind::kAdamw);
  EXPECT_TRUE(a.nesterov);  // absent: default
  EXPECT_EQ(a.steps, 1);
  EXPECT_NE(a.FindState("exp_avg_sq_final"), nullptr);
}

TEST(GoldenFormatTest, AcceptsCrLfAndTabs) {
  std::string text = absl::StrReplaceAll(SmallCase(), {{"\n", "\r\n"}, {"lr ", "lr\t"}});
  absl::StatusOr<std::vector<GoldenCase>> cases = ParseGolden(text);
  ASSERT_TRUE(cases.ok()) << cases.status();
  EXPECT_DOUBLE_EQ((*cases)[0].lr, 0.02);
}

TEST(GoldenFormatTest, StateIsOptional) {
  absl::StatusOr<std::vector<GoldenCase>> cases = ParseGolden(WithLine(17, ""));
  ASSERT_TRUE(cases.ok()) << cases.status();
  EXPECT_EQ((*cases)[0].final_state.size(), 1u);
}

TEST(GoldenFormatTest, RoundTripsThroughFormat) {
  absl::StatusOr<std::vector<GoldenCase>> cases =
      ParseGolden(absl::StrCat(SmallCase(), AdamwCase()));
  ASSERT_TRUE(cases.ok()) << cases.status();
  (*cases)[0].params[1].values[0] = 0.1 + 0.2;  // not exactly representable in short decimal
  absl::StatusOr<std::vector<GoldenCase>> again = ParseGolden(FormatGolden(*cases));
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ(again->size(), 2u);
  EXPECT_EQ((*again)[0].params[1].values, (*cases)[0].params[1].values);
  EXPECT_EQ((*again)[0].final_state.size(), 2u);
  EXPECT_EQ((*again)[1].kind, GoldenKind::kAdamw);
  EXPECT_FALSE((*again)[0].nesterov);
  EXPECT_EQ((*again)[0].ns_steps, 4);
}

TEST(GoldenFormatTest, ReadsReferenceFile) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  ASSERT_NE(srcdir, nullptr);
  absl::StatusOr<std::vector<GoldenCase>> cases =
      ReadGoldenFile(absl::StrCat(srcdir, "/normuon/tests/data/normuon_reference.txt"));
  ASSERT_TRUE(cases.ok()) << cases.status();
  ASSERT_GE(cases->size(), 5u);
  const GoldenCase& c = (*cases)[0];
  EXPECT_EQ(c.name, "normuon_64x48_0");
  EXPECT_EQ(c.rows(), 64);
  EXPECT_EQ(c.cols(), 48);
  EXPECT_EQ(c.steps, 3);
  EXPECT_DOUBLE_EQ(c.param_init.values[0], -0.00883100793877292);
  EXPECT_EQ(c.FindState("momentum_final")->size(), 64 * 48);
  EXPECT_EQ(c.FindState("second_moment_final")->size(), 64);
  bool saw_adamw = false;
  for (const GoldenCase& k : *cases) {
    EXPECT_EQ(static_cast<int>(k.grads.size()), k.steps) << k.name;
    EXPECT_EQ(static_cast<int>(k.params.size()), k.steps) << k.name;
    EXPECT_EQ(k.final_state.size(), 2u) << k.name;
    saw_adamw = saw_adamw || k.kind == GoldenKind::kAdamw;
  }
  EXPECT_TRUE(saw_adamw);
}

TEST(GoldenFormatTest, MissingFileIsNotFound) {
  absl::StatusOr<std::vector<GoldenCase>> cases = ReadGoldenFile("/nonexistent/golden.txt");
  ASSERT_FALSE(cases.ok());
  EXPECT_EQ(cases.status().code(), absl::StatusCode::kNotFound);
  EXPECT_CONTAINS(std::string(cases.status().message()), "/nonexistent/golden.txt");
}

TEST(GoldenFormatTest, UnknownKeyNamesLine) {
  std::string msg = ParseError(WithLine(5, "momentum 0.9"));
  EXPECT_CONTAINS(msg, "t.txt:5:");
  EXPECT_CONTAINS(msg, "unknown key 'momentum'");
  msg = ParseError(WithLine(12, "gradient_0 2 3 1 2 3 4 5 6"));
  EXPECT_CONTAINS(msg, "t.txt:12:");
  EXPECT_CONTAINS(msg, "gradient_0");
  msg = ParseError(WithLine(12, "grad_x 2 3 1 2 3 4 5 6"));
  EXPECT_CONTAINS(msg, "unknown key 'grad_x'");
}

TEST(GoldenFormatTest, ElementCountMustMatchShape) {
  std::string msg = ParseError(WithLine(12, "grad_0 2 3 0.1 0.2 0.3 0.4 0.5"));
  EXPECT_CONTAINS(msg, "t.txt:12:");
  EXPECT_CONTAINS(msg, "needs 6 values, the line has 5");
  msg = ParseError(WithLine(11, "param_init 2 3 1 2 3 4 5 6 7"));
  EXPECT_CONTAINS(msg, "t.txt:11:");
  msg = ParseError(WithLine(11, "param_init 2 3"));
  EXPECT_CONTAINS(msg, "t.txt:11:");
}

TEST(GoldenFormatTest, TruncatedFileIsAnError) {
  std::string text = SmallCase();
  text.resize(text.size() - 4);  // drop "end\n"
  std::string msg = ParseError(text);
  EXPECT_CONTAINS(msg, "truncated");
  EXPECT_CONTAINS(msg, "'small'");
  EXPECT_CONTAINS(msg, "t.txt:17:");
  // Cut in the middle of an array line: the count check catches it first.
  text = SmallCase();
  msg = ParseError(text.substr(0, text.find("grad_1") + 12));
  EXPECT_CONTAINS(msg, "t.txt:14:");
}

TEST(GoldenFormatTest, CaseWithoutEndBeforeNextCase) {
  std::string msg = ParseError(absl::StrCat(WithLine(18, ""), SmallCase("second")));
  EXPECT_CONTAINS(msg, "t.txt:18:");
  EXPECT_CONTAINS(msg, "no 'end'");
}

TEST(GoldenFormatTest, KeyOutsideCase) {
  std::string msg = ParseError(absl::StrCat("lr 0.1\n", SmallCase()));
  EXPECT_CONTAINS(msg, "t.txt:1:");
  EXPECT_CONTAINS(msg, "outside a case");
}

TEST(GoldenFormatTest, MissingScalar) {
  std::string msg = ParseError(WithLine(4, ""));  // beta1
  EXPECT_CONTAINS(msg, "has no 'beta1'");
  EXPECT_CONTAINS(msg, "t.txt:17:");  // the end line, one line earlier now
  msg = ParseError(WithLine(9, ""));  // ns_steps: required for normuon
  EXPECT_CONTAINS(msg, "has no 'ns_steps'");
}

TEST(GoldenFormatTest, MissingOrExtraStep) {
  std::string msg = ParseError(WithLine(14, ""));
  EXPECT_CONTAINS(msg, "has no 'grad_1'");
  msg = ParseError(WithLine(10, "steps 3"));
  EXPECT_CONTAINS(msg, "has no 'grad_2'");
  msg = ParseError(WithLine(10, "steps 1"));
  EXPECT_CONTAINS(msg, "t.txt:14:");
  EXPECT_CONTAINS(msg, "step 1 but the case has steps 1");
}

TEST(GoldenFormatTest, ShapesMustAgree) {
  std::string msg = ParseError(WithLine(13, "param_0 3 2 1 2 3 4 5 6"));
  EXPECT_CONTAINS(msg, "t.txt:13:");
  EXPECT_CONTAINS(msg, "shape 3x2");
  msg = ParseError(WithLine(17, "second_moment_final 1 2 0.5 0.25"));
  EXPECT_CONTAINS(msg, "t.txt:17:");
  EXPECT_CONTAINS(msg, "needs 2x1");
  msg = ParseError(WithLine(16, "momentum_final 2 1 1 1"));
  EXPECT_CONTAINS(msg, "t.txt:16:");
}

TEST(GoldenFormatTest, StateMustMatchKind) {
  std::string msg = ParseError(WithLine(16, "exp_avg_final 2 3 1 1 1 1 1 1"));
  EXPECT_CONTAINS(msg, "t.txt:16:");
  EXPECT_CONTAINS(msg, "does not belong to a normuon case");
}

TEST(GoldenFormatTest, BadValues) {
  EXPECT_CONTAINS(ParseError(WithLine(2, "kind sgd")), "t.txt:2:");
  EXPECT_CONTAINS(ParseError(WithLine(3, "lr fast")), "t.txt:3:");
  EXPECT_CONTAINS(ParseError(WithLine(3, "lr nan")), "not a finite number");
  EXPECT_CONTAINS(ParseError(WithLine(3, "lr 0.1 0.2")), "exactly one value");
  EXPECT_CONTAINS(ParseError(WithLine(4, "beta1 1.5")), "t.txt:4:");
  EXPECT_CONTAINS(ParseError(WithLine(8, "nesterov 2")), "t.txt:8:");
  EXPECT_CONTAINS(ParseError(WithLine(9, "ns_steps 0")), "t.txt:9:");
  EXPECT_CONTAINS(ParseError(WithLine(10, "steps -1")), "t.txt:10:");
  EXPECT_CONTAINS(ParseError(WithLine(11, "param_init 0 3")), "must be positive");
  EXPECT_CONTAINS(ParseError(WithLine(11, "param_init -2 3 1 2 3 4 5 6")), "t.txt:11:");
  std::string msg = ParseError(WithLine(12, "grad_0 2 3 0.1 0.2 x 0.4 0.5 0.6"));
  EXPECT_CONTAINS(msg, "t.txt:12:");
  EXPECT_CONTAINS(msg, "value 2 ('x')");
  EXPECT_CONTAINS(ParseError(WithLine(12, "grad_0 2 3 0.1 0.2 inf 0.4 0.5 0.6")), "t.txt:12:");
  EXPECT_CONTAINS(ParseError(WithLine(18, "end now")), "t.txt:18:");
  EXPECT_CONTAINS(ParseError(WithLine(1, "case")), "t.txt:1:");
}

TEST(GoldenFormatTest, Duplicates) {
  EXPECT_CONTAINS(ParseError(WithLine(3, "lr 0.1\nlr 0.2")), "'lr' given twice");
  EXPECT_CONTAINS(ParseError(WithLine(12, "grad_0 2 3 1 2 3 4 5 6\ngrad_0 2 3 1 2 3 4 5 6")),
                  "t.txt:13:");
  EXPECT_CONTAINS(ParseError(absl::StrCat(SmallCase(), SmallCase())),
                  "duplicate case name 'small'");
}

TEST(GoldenFormatTest, EmptyInput) {
  EXPECT_CONTAINS(ParseError(""), "no case");
  EXPECT_CONTAINS(ParseError("# only a comment\n"), "no case");
}

}  // namespace
}  // namespace normuon_tools
