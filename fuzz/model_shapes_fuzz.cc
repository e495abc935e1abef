// model_shapes_fuzz: the model shape-list parser (tools/model_shapes.h) on arbitrary text.
//
// Input: the bytes of a shape-list file. Checks, beyond "no crash, no sanitizer report":
// - a failed parse names the source;
// - a successful parse lists at least one parameter; every entry has rows > 0, cols > 0 and
//   rows * cols <= 2^40 (no overflow in the element counts the demo sizes buffers from); a
//   `matrix` is never 1-D; names are unique, non-empty and free of separators and '#';
// - the totals equal the sums over the entries;
// - writing the entries back in the documented format and parsing that gives the same list.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/param_kind.h"
#include "fuzz/fuzz_input.h"
#include "tools/model_shapes.h"

namespace {

using normuon_tools::ModelShape;
using normuon_tools::ModelShapes;
using normuon::kMaxElements;  // the parser's documented bound
using normuon::ParamKind;
using normuon::ParamKindName;

std::string Write(const ModelShapes& shapes) {
  std::string out;
  for (const ModelShape& e : shapes.entries) {
    if (e.one_dim) {
      absl::StrAppend(&out, e.name, " ", e.rows, " ", ParamKindName(e.kind), "\n");
    } else {
      absl::StrAppend(&out, e.name, " ", e.rows, "x", e.cols, " ", ParamKindName(e.kind), "\n");
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = normuon_tools::ParseModelShapes(text, "<fuzz>");
  if (!parsed.ok()) {
    FUZZ_CHECK(absl::StartsWith(parsed.status().message(), "<fuzz>"));
    return 0;
  }
  FUZZ_CHECK(!parsed->entries.empty());
  std::set<std::string> names;
  int64_t matrices = 0, matrix_elements = 0, total = 0;
  for (const ModelShape& e : parsed->entries) {
    FUZZ_CHECK(!e.name.empty());
    FUZZ_CHECK(e.name.find_first_of(" \t\r\n#") == std::string::npos);
    FUZZ_CHECK(names.insert(e.name).second);
    FUZZ_CHECK(e.rows > 0 && e.cols > 0);
    FUZZ_CHECK(e.rows <= kMaxElements / e.cols);
    FUZZ_CHECK(!e.one_dim || e.cols == 1);
    FUZZ_CHECK(!(e.one_dim && e.kind == ParamKind::kMatrix));
    FUZZ_CHECK(e.elements() == e.rows * e.cols);
    // Inputs are bounded (libFuzzer's -max_len), so these sums stay far below 2^63.
    if (e.kind == ParamKind::kMatrix) {
      ++matrices;
      matrix_elements += e.elements();
    }
    total += e.elements();
  }
  FUZZ_CHECK(parsed->num_matrices() == matrices);
  FUZZ_CHECK(parsed->num_adamw() == static_cast<int64_t>(parsed->entries.size()) - matrices);
  FUZZ_CHECK(parsed->matrix_elements() == matrix_elements);
  FUZZ_CHECK(parsed->total_elements() == total);

  auto again = normuon_tools::ParseModelShapes(Write(*parsed), "<written>");
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->entries.size() == parsed->entries.size());
  for (size_t i = 0; i < parsed->entries.size(); ++i) {
    const ModelShape& a = parsed->entries[i];
    const ModelShape& b = again->entries[i];
    FUZZ_CHECK(a.name == b.name && a.rows == b.rows && a.cols == b.cols && a.kind == b.kind &&
               a.one_dim == b.one_dim);
  }
  return 0;
}
