// golden_format.h: parser for the golden optimizer-case format (../shared/golden/README.md).
//
// A golden file holds cases computed by the official NorMuon implementation in float64. Each
// case is a run of `key value...` lines between `case NAME` and `end`:
//   scalars   kind (normuon | adamw), lr, beta1, beta2, weight_decay, eps, nesterov, ns_steps,
//             steps
//   arrays    NAME ROWS COLS v0 v1 ... (ROWS*COLS numbers, row-major, on one line):
//             param_init, grad_S and param_S for S in [0, steps) (param_S is the parameter
//             after step S), and the final state: momentum_final (ROWS x COLS) and
//             second_moment_final (ROWS x 1) for normuon, exp_avg_final and exp_avg_sq_final
//             (ROWS x COLS) for adamw.
// Blank lines and lines starting with '#' are ignored. Anything else is an error whose message
// names the source and the line: unknown keys, repeated keys, element counts that do not
// match ROWS*COLS, shapes that disagree with param_init, missing steps, a case without `end`.
#ifndef NORMUON_TOOLS_GOLDEN_FORMAT_H_
#define NORMUON_TOOLS_GOLDEN_FORMAT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace normuon_tools {

enum class GoldenKind { kNormuon, kAdamw };

// "normuon" or "adamw".
const char* GoldenKindName(GoldenKind kind);

// One array record: a ROWS x COLS row-major block of float64 values.
struct GoldenArray {
  std::string name;  // the key, e.g. "grad_1"
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<double> values;  // rows * cols
  int line = 0;                // where it was read (1-based)

  int64_t size() const { return rows * cols; }
};

struct GoldenCase {
  std::string name;
  int line = 0;  // line of `case NAME`
  GoldenKind kind = GoldenKind::kNormuon;

  // Hyper-parameters. beta1 is NorMuon's momentum or AdamW's beta1; eps is NorMuon's eps (in
  // sqrt(v) + eps and the norm restore) or AdamW's eps. nesterov and ns_steps apply to normuon
  // cases only (adamw cases may carry them; if absent they keep these defaults).
  double lr = 0.0;
  double beta1 = 0.0;
  double beta2 = 0.0;
  double weight_decay = 0.0;
  double eps = 0.0;
  bool nesterov = true;
  int ns_steps = 5;
  int steps = 0;

  GoldenArray param_init;
  std::vector<GoldenArray> grads;   // grads[s]: gradient given at step s
  std::vector<GoldenArray> params;  // params[s]: parameter after step s

  // Final state, in the order read. Names: momentum_final, second_moment_final (normuon);
  // exp_avg_final, exp_avg_sq_final (adamw). Each is optional; shapes are checked.
  std::vector<GoldenArray> final_state;

  int64_t rows() const { return param_init.rows; }
  int64_t cols() const { return param_init.cols; }

  // The final-state array of that name, or nullptr.
  const GoldenArray* FindState(absl::string_view state_name) const;
};

// Parses a whole golden file's text. `source` names it in error messages ("file.txt:12: ...").
// Fails on any malformed line; a file with no case is an error too.
absl::StatusOr<std::vector<GoldenCase>> ParseGolden(absl::string_view text,
                                                    absl::string_view source = "<input>");

// Reads and parses a golden file.
absl::StatusOr<std::vector<GoldenCase>> ReadGoldenFile(const std::string& path);

// Writes cases back in the golden format (full float64 precision); ParseGolden reads it back to
// the same values. Used by tests and tools that derive new golden files.
std::string FormatGolden(const std::vector<GoldenCase>& cases);

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_GOLDEN_FORMAT_H_
