// golden_fuzz: the golden-file parser (tools/golden_format.h) on arbitrary text.
//
// Input: the bytes of a golden file. Checks, beyond "no crash, no sanitizer report":
// - a parse that fails carries a message naming the source ("<fuzz>: ..." or "<fuzz>:LINE: ...");
// - a parse that succeeds gives cases whose arrays have rows * cols values, `steps` gradients and
//   parameters of param_init's shape, and final-state arrays of the right shapes;
// - FormatGolden of those cases parses back to the same cases, every value bit for bit.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "fuzz/fuzz_input.h"
#include "tools/golden_format.h"

namespace {

using normuon_tools::GoldenArray;
using normuon_tools::GoldenCase;

bool SameBits(double a, double b) { return std::memcmp(&a, &b, sizeof(a)) == 0; }

bool SameArray(const GoldenArray& a, const GoldenArray& b) {
  if (a.name != b.name || a.rows != b.rows || a.cols != b.cols) return false;
  if (a.values.size() != b.values.size()) return false;
  for (size_t i = 0; i < a.values.size(); ++i) {
    if (!SameBits(a.values[i], b.values[i])) return false;
  }
  return true;
}

void CheckShapes(const GoldenCase& c) {
  FUZZ_CHECK(c.rows() > 0 && c.cols() > 0);
  FUZZ_CHECK(c.param_init.values.size() == static_cast<size_t>(c.param_init.size()));
  FUZZ_CHECK(c.steps >= 1);
  FUZZ_CHECK(c.grads.size() == static_cast<size_t>(c.steps));
  FUZZ_CHECK(c.params.size() == static_cast<size_t>(c.steps));
  for (const auto* list : {&c.grads, &c.params}) {
    for (const GoldenArray& a : *list) {
      FUZZ_CHECK(a.rows == c.rows() && a.cols == c.cols());
      FUZZ_CHECK(a.values.size() == static_cast<size_t>(a.size()));
    }
  }
  for (const GoldenArray& a : c.final_state) {
    FUZZ_CHECK(a.rows == c.rows());
    FUZZ_CHECK(a.cols == (a.name == "second_moment_final" ? 1 : c.cols()));
    FUZZ_CHECK(a.values.size() == static_cast<size_t>(a.size()));
  }
}

bool SameCase(const GoldenCase& a, const GoldenCase& b) {
  if (a.name != b.name || a.kind != b.kind || a.nesterov != b.nesterov ||
      a.ns_steps != b.ns_steps || a.steps != b.steps) {
    return false;
  }
  if (!SameBits(a.lr, b.lr) || !SameBits(a.beta1, b.beta1) || !SameBits(a.beta2, b.beta2) ||
      !SameBits(a.weight_decay, b.weight_decay) || !SameBits(a.eps, b.eps)) {
    return false;
  }
  if (!SameArray(a.param_init, b.param_init)) return false;
  if (a.grads.size() != b.grads.size() || a.params.size() != b.params.size() ||
      a.final_state.size() != b.final_state.size()) {
    return false;
  }
  for (size_t i = 0; i < a.grads.size(); ++i) {
    if (!SameArray(a.grads[i], b.grads[i]) || !SameArray(a.params[i], b.params[i])) return false;
  }
  for (size_t i = 0; i < a.final_state.size(); ++i) {
    if (!SameArray(a.final_state[i], b.final_state[i])) return false;
  }
  return true;
}

// The writer emits a case name as one token on its own line, so a name the reader accepted but
// the writer cannot reproduce (a name ending in '\r', which the reader strips from a line's end)
// is excluded from the round trip; the parser keeps such names (reported in RELIABILITY.md).
bool NameSurvivesWriting(const std::string& name) {
  return !name.empty() && name.back() != '\r';
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = normuon_tools::ParseGolden(text, "<fuzz>");
  if (!parsed.ok()) {
    FUZZ_CHECK(absl::StartsWith(parsed.status().message(), "<fuzz>"));
    return 0;
  }
  FUZZ_CHECK(!parsed->empty());
  for (const GoldenCase& c : *parsed) {
    CheckShapes(c);
    if (!NameSurvivesWriting(c.name)) return 0;
  }
  const std::string written = normuon_tools::FormatGolden(*parsed);
  auto again = normuon_tools::ParseGolden(written, "<written>");
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->size() == parsed->size());
  for (size_t i = 0; i < parsed->size(); ++i) {
    FUZZ_CHECK(SameCase((*parsed)[i], (*again)[i]));
  }
  return 0;
}
