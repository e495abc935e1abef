// model_shapes.cc: the shape-list parser and model lookup declared in model_shapes.h.
#include "tools/model_shapes.h"

#include <sys/stat.h>

#include <cstdlib>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tools/common/text_file.h"

namespace normuon_tools {
namespace {

absl::Status LineError(absl::string_view source, int line, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(source, ":", line, ": ", message));
}

// A positive decimal integer (digits only).
bool ParseDim(absl::string_view s, int64_t* out) {
  if (s.empty() || s.size() > 15) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v <= 0) return false;
  *out = v;
  return true;
}

bool IsFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string DirName(absl::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == absl::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

constexpr char kWorkspace[] = "normuon";
constexpr char kModelsSubdir[] = "tools/models";

}  // namespace

int64_t ModelShapes::num_matrices() const {
  int64_t n = 0;
  for (const ModelShape& e : entries) n += e.kind == normuon::ParamKind::kMatrix;
  return n;
}

int64_t ModelShapes::num_adamw() const {
  return static_cast<int64_t>(entries.size()) - num_matrices();
}

int64_t ModelShapes::matrix_elements() const {
  int64_t n = 0;
  for (const ModelShape& e : entries) {
    if (e.kind == normuon::ParamKind::kMatrix) n += e.elements();
  }
  return n;
}

int64_t ModelShapes::total_elements() const {
  int64_t n = 0;
  for (const ModelShape& e : entries) n += e.elements();
  return n;
}

absl::StatusOr<ModelShapes> ParseModelShapes(absl::string_view text, absl::string_view source) {
  ModelShapes shapes;
  shapes.source = std::string(source);
  std::set<std::string> names;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    size_t hash = line.find('#');
    if (hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> tokens =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (tokens.empty()) continue;
    if (tokens.size() != 3) {
      return LineError(source, line_no,
                       absl::StrCat("expected 'NAME ROWSxCOLS matrix|adamw' or 'NAME N adamw', "
                                    "got ",
                                    tokens.size(), " fields"));
    }
    ModelShape e;
    e.name = std::string(tokens[0]);
    e.line = line_no;
    bool known_kind = false;
    for (normuon::ParamKind kind : {normuon::ParamKind::kMatrix, normuon::ParamKind::kAdamW}) {
      if (tokens[2] == normuon::ParamKindName(kind)) {
        e.kind = kind;
        known_kind = true;
      }
    }
    if (!known_kind) {
      return LineError(source, line_no,
                       absl::StrCat("kind '", tokens[2], "' is not matrix or adamw"));
    }
    std::vector<absl::string_view> dims = absl::StrSplit(tokens[1], 'x');
    if (dims.size() == 1) {
      if (!ParseDim(dims[0], &e.rows)) {
        return LineError(source, line_no,
                         absl::StrCat("size '", tokens[1], "' is not a positive integer"));
      }
      e.cols = 1;
      e.one_dim = true;
      if (e.kind == normuon::ParamKind::kMatrix) {
        return LineError(source, line_no,
                         absl::StrCat("'", e.name, "' is 1-D (", tokens[1],
                                      "): only 2-D parameters can be 'matrix'"));
      }
    } else if (dims.size() == 2) {
      if (!ParseDim(dims[0], &e.rows) || !ParseDim(dims[1], &e.cols)) {
        return LineError(
            source, line_no,
            absl::StrCat("shape '", tokens[1], "' is not ROWSxCOLS with positive integers"));
      }
    } else {
      return LineError(source, line_no, absl::StrCat("shape '", tokens[1], "' is not ROWSxCOLS"));
    }
    if (e.rows > normuon::kMaxElements / e.cols) {
      return LineError(source, line_no, absl::StrCat("shape '", tokens[1], "' is too large"));
    }
    if (!names.insert(e.name).second) {
      return LineError(source, line_no, absl::StrCat("duplicate parameter name '", e.name, "'"));
    }
    shapes.entries.push_back(std::move(e));
  }
  if (shapes.entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": no parameters listed"));
  }
  return shapes;
}

absl::StatusOr<ModelShapes> ReadModelShapesFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadTextFile(path, "shape list");
  if (!text.ok()) return text.status();
  return ParseModelShapes(*text, path);
}

std::vector<std::string> ModelSearchDirs(absl::string_view argv0) {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("NORMUON_MODELS_DIR"); env != nullptr && *env != '\0') {
    dirs.push_back(env);
  }
  for (const char* var : {"RUNFILES_DIR", "TEST_SRCDIR"}) {
    if (const char* env = std::getenv(var); env != nullptr && *env != '\0') {
      dirs.push_back(absl::StrCat(env, "/", kWorkspace, "/", kModelsSubdir));
    }
  }
  if (!argv0.empty()) {
    dirs.push_back(absl::StrCat(argv0, ".runfiles/", kWorkspace, "/", kModelsSubdir));
  }
  dirs.push_back(kModelsSubdir);
  if (!argv0.empty()) {
    const std::string bin_dir = DirName(argv0);
    dirs.push_back(absl::StrCat(bin_dir, "/../", kModelsSubdir));
    dirs.push_back(absl::StrCat(bin_dir, "/../../", kModelsSubdir));
  }
  return dirs;
}

absl::StatusOr<std::string> FindModelFile(absl::string_view name, absl::string_view argv0) {
  if (name.empty() || absl::StrContains(name, '/')) {
    return absl::InvalidArgumentError(absl::StrCat("model name '", name,
                                                   "' must be a plain name such as gpt2-124m "
                                                   "(use a shapes file path for other lists)"));
  }
  const std::string file =
      absl::EndsWith(name, ".txt") ? std::string(name) : absl::StrCat(name, ".txt");
  const std::vector<std::string> dirs = ModelSearchDirs(argv0);
  for (const std::string& dir : dirs) {
    const std::string path = absl::StrCat(dir, "/", file);
    if (IsFile(path)) return path;
  }
  return absl::NotFoundError(absl::StrCat("model '", name, "': no ", file, " in ",
                                          absl::StrJoin(dirs, ", "),
                                          " (set NORMUON_MODELS_DIR to the models directory)"));
}

absl::StatusOr<ModelShapes> LoadModel(absl::string_view name, absl::string_view argv0) {
  absl::StatusOr<std::string> path = FindModelFile(name, argv0);
  if (!path.ok()) return path.status();
  return ReadModelShapesFile(*path);
}

}  // namespace normuon_tools
