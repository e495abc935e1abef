// model_shapes.h: parser for model shape lists (tools/models/*.txt) and lookup by model name.
//
// Format, one parameter per line, '#' starts a comment (whole line or rest of a line):
//   NAME ROWSxCOLS matrix     a weight matrix for the NorMuon update
//   NAME ROWSxCOLS adamw      a 2-D parameter for AdamW (embeddings, heads)
//   NAME N adamw              a 1-D parameter for AdamW (biases, norm gains): rows = N, cols = 1
// Errors name the source and the line: bad sizes, unknown kinds, a 1-D `matrix`, duplicate names.
//
// Finding a model by name (`--model gpt2-124m` -> gpt2-124m.txt): the directories searched, in
// order, are
//   1. $NORMUON_MODELS_DIR, if set;
//   2. the Bazel runfiles of the running binary: $RUNFILES_DIR/normuon/tools/models,
//      $TEST_SRCDIR/normuon/tools/models, then <argv0>.runfiles/normuon/tools/models;
//   3. tools/models under the working directory (the repository root, or a runfiles root);
//   4. tools/models next to the binary's workspace (<dir of argv0>/../tools/models and
//      <dir of argv0>/../../tools/models, for bazel-bin/tools/<binary>).
// `bazel run //tools:normuon_run` and the tests find them through 2; a copied binary through 1.
#ifndef NORMUON_TOOLS_MODEL_SHAPES_H_
#define NORMUON_TOOLS_MODEL_SHAPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/param_kind.h"

namespace normuon_tools {

// An entry's kind is written as normuon::ParamKindName spells it ("matrix" or "adamw"); its
// element count is at most normuon::kMaxElements.
struct ModelShape {
  std::string name;
  int64_t rows = 0;
  int64_t cols = 0;  // 1 for a 1-D parameter
  normuon::ParamKind kind = normuon::ParamKind::kMatrix;
  bool one_dim = false;  // written as `NAME N` (1-D)
  int line = 0;

  int64_t elements() const { return rows * cols; }
};

struct ModelShapes {
  std::string source;  // file path (or "<input>")
  std::vector<ModelShape> entries;

  int64_t num_matrices() const;
  int64_t num_adamw() const;
  int64_t matrix_elements() const;
  int64_t total_elements() const;
};

// Parses a shape list. `source` names it in error messages. An empty list is an error.
absl::StatusOr<ModelShapes> ParseModelShapes(absl::string_view text,
                                             absl::string_view source = "<input>");

// Reads and parses a shape-list file.
absl::StatusOr<ModelShapes> ReadModelShapesFile(const std::string& path);

// The directories searched for model NAME, in order (see the header comment). argv0 may be
// empty. Directories that do not exist are included; FindModelFile skips them.
std::vector<std::string> ModelSearchDirs(absl::string_view argv0);

// The path of NAME.txt (NAME may already end in .txt) in the first search directory holding it;
// NotFound lists the directories tried. NAME must not contain '/'.
absl::StatusOr<std::string> FindModelFile(absl::string_view name, absl::string_view argv0);

// FindModelFile + ReadModelShapesFile.
absl::StatusOr<ModelShapes> LoadModel(absl::string_view name, absl::string_view argv0);

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_MODEL_SHAPES_H_
