// golden_format.cc: the golden-file parser and writer declared in golden_format.h.
#include "tools/golden_format.h"

#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "tools/common/text_file.h"

namespace normuon_tools {
namespace {

// Largest array accepted (elements); guards ROWS*COLS against overflow and absurd sizes.
constexpr int64_t kMaxArrayElements = int64_t{1} << 34;

const char* const kScalarKeys[] = {"kind", "lr",       "beta1",    "beta2", "weight_decay",
                                   "eps",  "nesterov", "ns_steps", "steps"};

bool IsScalarKey(absl::string_view key) {
  for (const char* k : kScalarKeys) {
    if (key == k) return true;
  }
  return false;
}

bool IsStateKey(absl::string_view key) {
  return key == "momentum_final" || key == "second_moment_final" || key == "exp_avg_final" ||
         key == "exp_avg_sq_final";
}

bool StateBelongsTo(absl::string_view key, GoldenKind kind) {
  if (kind == GoldenKind::kNormuon) {
    return key == "momentum_final" || key == "second_moment_final";
  }
  return key == "exp_avg_final" || key == "exp_avg_sq_final";
}

// If key is PREFIX followed by decimal digits only, stores the number in *index.
bool ParseIndexedKey(absl::string_view key, absl::string_view prefix, int* index) {
  if (key.size() <= prefix.size() || key.substr(0, prefix.size()) != prefix) return false;
  absl::string_view digits = key.substr(prefix.size());
  if (digits.size() > 9) return false;
  int value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  *index = value;
  return true;
}

class Parser {
 public:
  explicit Parser(absl::string_view source) : source_(source) {}

  absl::StatusOr<std::vector<GoldenCase>> Run(absl::string_view text) {
    int line_no = 0;
    size_t pos = 0;
    while (pos < text.size()) {
      size_t eol = text.find('\n', pos);
      if (eol == absl::string_view::npos) eol = text.size();
      absl::string_view line = text.substr(pos, eol - pos);
      pos = eol + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      absl::Status status = HandleLine(line, line_no);
      if (!status.ok()) return status;
    }
    if (current_.has_value()) {
      return Error(line_no,
                   absl::StrCat("case '", current_->name, "' (started at line ", current_->line,
                                ") is truncated: the file ends before its 'end'"));
    }
    if (cases_.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source_, ": no case found (expected lines 'case NAME' ... 'end')"));
    }
    return std::move(cases_);
  }

 private:
  absl::Status Error(int line, absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ":", line, ": ", message));
  }

  absl::Status HandleLine(absl::string_view line, int line_no) {
    std::vector<absl::string_view> tokens =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r\v\f"), absl::SkipEmpty());
    if (tokens.empty() || tokens[0][0] == '#') return absl::OkStatus();
    const absl::string_view key = tokens[0];

    if (!current_.has_value()) {
      if (key != "case") {
        return Error(line_no, absl::StrCat("'", key, "' outside a case (expected 'case NAME')"));
      }
      if (tokens.size() != 2) {
        return Error(line_no, "'case' takes exactly one name");
      }
      if (case_names_.count(std::string(tokens[1])) != 0) {
        return Error(line_no, absl::StrCat("duplicate case name '", tokens[1], "'"));
      }
      current_.emplace();
      current_->name = std::string(tokens[1]);
      current_->line = line_no;
      seen_scalars_.clear();
      grads_.clear();
      params_.clear();
      have_param_init_ = false;
      return absl::OkStatus();
    }

    if (key == "case") {
      return Error(line_no,
                   absl::StrCat("'case' inside case '", current_->name, "' (started at line ",
                                current_->line, "): the previous case has no 'end'"));
    }
    if (key == "end") {
      if (tokens.size() != 1) return Error(line_no, "'end' takes no value");
      return FinishCase(line_no);
    }
    if (IsScalarKey(key)) return HandleScalar(tokens, line_no);

    int index = 0;
    if (key == "param_init" || IsStateKey(key) || ParseIndexedKey(key, "grad_", &index) ||
        ParseIndexedKey(key, "param_", &index)) {
      return HandleArray(tokens, line_no);
    }
    return Error(line_no, absl::StrCat("unknown key '", key, "' in case '", current_->name, "'"));
  }

  absl::StatusOr<double> ParseDouble(absl::string_view token, absl::string_view what,
                                     int line_no) const {
    double value = 0.0;
    if (!absl::SimpleAtod(token, &value) || !std::isfinite(value)) {
      return Error(line_no, absl::StrCat(what, ": '", token, "' is not a finite number"));
    }
    return value;
  }

  absl::StatusOr<int64_t> ParseInt(absl::string_view token, absl::string_view what,
                                   int line_no) const {
    int64_t value = 0;
    if (!absl::SimpleAtoi(token, &value)) {
      return Error(line_no, absl::StrCat(what, ": '", token, "' is not an integer"));
    }
    return value;
  }

  absl::Status HandleScalar(const std::vector<absl::string_view>& tokens, int line_no) {
    const std::string key(tokens[0]);
    if (tokens.size() != 2) {
      return Error(line_no,
                   absl::StrCat("'", key, "' takes exactly one value, got ", tokens.size() - 1));
    }
    if (!seen_scalars_.insert(key).second) {
      return Error(line_no, absl::StrCat("'", key, "' given twice in case '", current_->name, "'"));
    }
    const absl::string_view value = tokens[1];
    GoldenCase& c = *current_;
    if (key == "kind") {
      for (GoldenKind kind : {GoldenKind::kNormuon, GoldenKind::kAdamw}) {
        if (value == GoldenKindName(kind)) {
          c.kind = kind;
          return absl::OkStatus();
        }
      }
      return Error(line_no, absl::StrCat("kind: '", value, "' is not normuon or adamw"));
    }
    if (key == "nesterov" || key == "ns_steps" || key == "steps") {
      absl::StatusOr<int64_t> v = ParseInt(value, key, line_no);
      if (!v.ok()) return v.status();
      if (key == "nesterov") {
        if (*v != 0 && *v != 1) return Error(line_no, "nesterov: must be 0 or 1");
        c.nesterov = *v == 1;
      } else if (key == "ns_steps") {
        if (*v < 1 || *v > 1000) return Error(line_no, "ns_steps: must be in [1, 1000]");
        c.ns_steps = static_cast<int>(*v);
      } else {
        if (*v < 1 || *v > 1000000) return Error(line_no, "steps: must be in [1, 1000000]");
        c.steps = static_cast<int>(*v);
      }
      return absl::OkStatus();
    }
    absl::StatusOr<double> v = ParseDouble(value, key, line_no);
    if (!v.ok()) return v.status();
    if (key == "lr") {
      c.lr = *v;
    } else if (key == "beta1" || key == "beta2") {
      if (*v < 0.0 || *v >= 1.0) return Error(line_no, absl::StrCat(key, ": must be in [0, 1)"));
      (key == "beta1" ? c.beta1 : c.beta2) = *v;
    } else if (key == "weight_decay") {
      c.weight_decay = *v;
    } else {  // eps
      if (*v < 0.0) return Error(line_no, "eps: must not be negative");
      c.eps = *v;
    }
    return absl::OkStatus();
  }

  absl::Status HandleArray(const std::vector<absl::string_view>& tokens, int line_no) {
    const std::string key(tokens[0]);
    if (tokens.size() < 3) {
      return Error(line_no, absl::StrCat("'", key, "' needs ROWS COLS and the values"));
    }
    absl::StatusOr<int64_t> rows = ParseInt(tokens[1], absl::StrCat(key, " ROWS"), line_no);
    if (!rows.ok()) return rows.status();
    absl::StatusOr<int64_t> cols = ParseInt(tokens[2], absl::StrCat(key, " COLS"), line_no);
    if (!cols.ok()) return cols.status();
    if (*rows <= 0 || *cols <= 0) {
      return Error(line_no, absl::StrCat(key, ": shape ", *rows, "x", *cols, " must be positive"));
    }
    if (*rows > kMaxArrayElements / *cols) {
      return Error(line_no, absl::StrCat(key, ": shape ", *rows, "x", *cols, " is too large"));
    }
    const int64_t expected = *rows * *cols;
    const int64_t given = static_cast<int64_t>(tokens.size()) - 3;
    if (given != expected) {
      return Error(line_no, absl::StrCat(key, ": shape ", *rows, "x", *cols, " needs ", expected,
                                         " values, the line has ", given));
    }
    GoldenArray array;
    array.name = key;
    array.rows = *rows;
    array.cols = *cols;
    array.line = line_no;
    array.values.resize(expected);
    for (int64_t i = 0; i < expected; ++i) {
      double v = 0.0;
      const absl::string_view token = tokens[i + 3];
      if (!absl::SimpleAtod(token, &v) || !std::isfinite(v)) {
        return Error(line_no,
                     absl::StrCat(key, ": value ", i, " ('", token, "') is not a finite number"));
      }
      array.values[i] = v;
    }

    GoldenCase& c = *current_;
    int index = 0;
    if (key == "param_init") {
      if (have_param_init_) return Error(line_no, "'param_init' given twice");
      have_param_init_ = true;
      c.param_init = std::move(array);
    } else if (IsStateKey(key)) {
      if (c.FindState(key) != nullptr) {
        return Error(line_no, absl::StrCat("'", key, "' given twice"));
      }
      c.final_state.push_back(std::move(array));
    } else if (ParseIndexedKey(key, "grad_", &index)) {
      if (!grads_.emplace(index, std::move(array)).second) {
        return Error(line_no, absl::StrCat("'", key, "' given twice"));
      }
    } else if (ParseIndexedKey(key, "param_", &index)) {
      if (!params_.emplace(index, std::move(array)).second) {
        return Error(line_no, absl::StrCat("'", key, "' given twice"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckShape(const GoldenArray& a, int64_t rows, int64_t cols) const {
    if (a.rows != rows || a.cols != cols) {
      return Error(a.line, absl::StrCat(a.name, ": shape ", a.rows, "x", a.cols, " but case '",
                                        current_->name, "' needs ", rows, "x", cols));
    }
    return absl::OkStatus();
  }

  absl::Status FinishCase(int line_no) {
    GoldenCase& c = *current_;
    const std::string where = absl::StrCat("case '", c.name, "' (line ", c.line, ") ");
    std::vector<std::string> required = {"kind",         "lr",  "beta1", "beta2",
                                         "weight_decay", "eps", "steps"};
    if (seen_scalars_.count("kind") != 0 && c.kind == GoldenKind::kNormuon) {
      required.push_back("nesterov");
      required.push_back("ns_steps");
    }
    for (const std::string& key : required) {
      if (seen_scalars_.count(key) == 0) {
        return Error(line_no, absl::StrCat(where, "has no '", key, "'"));
      }
    }
    if (!have_param_init_) return Error(line_no, absl::StrCat(where, "has no 'param_init'"));
    const int64_t rows = c.param_init.rows;
    const int64_t cols = c.param_init.cols;

    for (const auto* table : {&grads_, &params_}) {
      const char* prefix = table == &grads_ ? "grad_" : "param_";
      for (const auto& [index, array] : *table) {
        if (index >= c.steps) {
          return Error(array.line, absl::StrCat(array.name, ": step ", index,
                                                " but the case has steps ", c.steps));
        }
        absl::Status s = CheckShape(array, rows, cols);
        if (!s.ok()) return s;
      }
      for (int s = 0; s < c.steps; ++s) {
        if (table->count(s) == 0) {
          return Error(line_no,
                       absl::StrCat(where, "has no '", prefix, s, "' (steps ", c.steps, ")"));
        }
      }
    }
    for (const GoldenArray& state : c.final_state) {
      if (!StateBelongsTo(state.name, c.kind)) {
        return Error(state.line, absl::StrCat("'", state.name, "' does not belong to a ",
                                              GoldenKindName(c.kind), " case"));
      }
      absl::Status s = CheckShape(state, rows, state.name == "second_moment_final" ? 1 : cols);
      if (!s.ok()) return s;
    }
    c.grads.clear();
    c.params.clear();
    for (auto& [index, array] : grads_) c.grads.push_back(std::move(array));
    for (auto& [index, array] : params_) c.params.push_back(std::move(array));
    case_names_.insert(c.name);
    cases_.push_back(std::move(c));
    current_.reset();
    return absl::OkStatus();
  }

  std::string source_;
  std::vector<GoldenCase> cases_;
  std::set<std::string> case_names_;
  std::optional<GoldenCase> current_;
  std::set<std::string> seen_scalars_;
  std::map<int, GoldenArray> grads_;
  std::map<int, GoldenArray> params_;
  bool have_param_init_ = false;
};

void AppendArray(const GoldenArray& a, std::string* out) {
  absl::StrAppend(out, a.name, " ", a.rows, " ", a.cols);
  for (double v : a.values) absl::StrAppend(out, " ", absl::StrFormat("%.17g", v));
  absl::StrAppend(out, "\n");
}

}  // namespace

const char* GoldenKindName(GoldenKind kind) {
  return kind == GoldenKind::kNormuon ? "normuon" : "adamw";
}

const GoldenArray* GoldenCase::FindState(absl::string_view state_name) const {
  for (const GoldenArray& a : final_state) {
    if (a.name == state_name) return &a;
  }
  return nullptr;
}

absl::StatusOr<std::vector<GoldenCase>> ParseGolden(absl::string_view text,
                                                    absl::string_view source) {
  Parser parser(source);
  return parser.Run(text);
}

absl::StatusOr<std::vector<GoldenCase>> ReadGoldenFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadTextFile(path, "golden file");
  if (!text.ok()) return text.status();
  return ParseGolden(*text, path);
}

std::string FormatGolden(const std::vector<GoldenCase>& cases) {
  std::string out = "# golden optimizer cases\n";
  for (const GoldenCase& c : cases) {
    absl::StrAppend(&out, "case ", c.name, "\n");
    absl::StrAppend(&out, "kind ", GoldenKindName(c.kind), "\n");
    absl::StrAppend(&out, "lr ", absl::StrFormat("%.17g", c.lr), "\n");
    absl::StrAppend(&out, "beta1 ", absl::StrFormat("%.17g", c.beta1), "\n");
    absl::StrAppend(&out, "beta2 ", absl::StrFormat("%.17g", c.beta2), "\n");
    absl::StrAppend(&out, "weight_decay ", absl::StrFormat("%.17g", c.weight_decay), "\n");
    absl::StrAppend(&out, "eps ", absl::StrFormat("%.17g", c.eps), "\n");
    absl::StrAppend(&out, "nesterov ", c.nesterov ? 1 : 0, "\n");
    absl::StrAppend(&out, "ns_steps ", c.ns_steps, "\n");
    absl::StrAppend(&out, "steps ", c.steps, "\n");
    AppendArray(c.param_init, &out);
    for (size_t s = 0; s < c.grads.size() && s < c.params.size(); ++s) {
      AppendArray(c.grads[s], &out);
      AppendArray(c.params[s], &out);
    }
    for (const GoldenArray& a : c.final_state) AppendArray(a, &out);
    absl::StrAppend(&out, "end\n");
  }
  return out;
}

}  // namespace normuon_tools
