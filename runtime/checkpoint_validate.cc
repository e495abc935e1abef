// Validation of decoded checkpoints (checkpoint_format.h: ValidateIndex, ValidateRankFile) and
// the checks the decoder shares (checkpoint_checks.h). Every failure is InvalidArgument naming the
// file, the section and, where there is one, the parameter and the values seen.
#include <algorithm>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "runtime/checkpoint_checks.h"
#include "runtime/checkpoint_format.h"
#include "runtime/step_layout.h"

namespace normuon::checkpoint {
namespace internal {

std::string WhereSection(absl::string_view file, absl::string_view tag) {
  return absl::StrCat("checkpoint file '", file, "', section '", tag, "'");
}

std::string ParamWho(uint32_t p, const std::string& name) {
  return absl::StrCat("parameter ", p, " '", name, "'");
}

std::string RangeText(int64_t begin, int64_t count) {
  return absl::StrCat("rows [", begin, ", ", begin + count, ")");
}

// rows and cols of a parameter or a shard: both > 0, product within kMaxElements.
bool ShapeOk(int64_t rows, int64_t cols) {
  return rows > 0 && cols > 0 && rows <= kMaxElements / cols;
}

// Whether a shard's second array has a length of its own (a matrix's replicated v per column
// of each row block) rather than one derived from its rows (SecondCount).
bool SecondIsPerColumn(ParamKind kind, uint32_t matrix_second_moment) {
  return kind == ParamKind::kMatrix && matrix_second_moment == kSecondMomentPerColumn;
}

// Element count of a shard's second array, where SecondIsPerColumn is false.
uint64_t SecondCount(ParamKind kind, uint32_t matrix_second_moment, int64_t row_count,
                     int64_t cols) {
  // The runtime's one state-size rule (StateFloatsOf), with a variant of the file's layout.
  const normuon_variant_t variant = matrix_second_moment == kSecondMomentPerElement
                                        ? NORMUON_VARIANT_ADAMUON
                                    : matrix_second_moment == kSecondMomentPerRow
                                        ? NORMUON_VARIANT_NORMUON
                                        : NORMUON_VARIANT_MUON;
  return StateFloatsOf(kind, variant, NORMUON_NEURON_ROWS, row_count, cols, 1).state_second;
}

// A replicated per-column v of n values for a matrix of `cols` columns: n a positive multiple of
// cols, at most kMaxElements. Returns the problem, or "" when n is fine.
std::string PerColumnProblem(uint64_t n, int64_t cols) {
  const uint64_t c = static_cast<uint64_t>(cols);
  if (n == 0) {
    return absl::StrCat("holds no v (matrix_second_moment = ", kSecondMomentPerColumn,
                        " keeps cols = ", cols, " values of v per row block)");
  }
  if (n % c != 0) {
    return absl::StrCat("holds ", n, " values of v, not a multiple of cols = ", cols,
                        " (matrix_second_moment = ", kSecondMomentPerColumn,
                        " keeps cols values per row block)");
  }
  if (n > static_cast<uint64_t>(kMaxElements)) {
    return absl::StrCat("holds ", n, " values of v, more than the limit of 2^40");
  }
  return "";
}

std::string SecondMomentRangeProblem(uint32_t value) {
  return absl::StrCat("matrix_second_moment = ", value,
                      " is not 0, 1, 2 or 3: unknown to this build");
}

}  // namespace internal

using namespace internal;  // NOLINT

absl::Status ValidateIndex(const Index& x, absl::string_view file) {
  const std::string conf = WhereSection(file, kConfTag);
  const std::string parm = WhereSection(file, kParmTag);
  const std::string shrd = WhereSection(file, kShrdTag);
  if (x.world_size < 1 || x.world_size > kMaxWorldSize) {
    return Bad(absl::StrCat(conf, ": world_size = ", x.world_size, " is outside [1, ",
                            kMaxWorldSize, "]"));
  }
  if (x.nesterov > 1) return Bad(absl::StrCat(conf, ": nesterov = ", x.nesterov, " is not 0 or 1"));
  if (x.matrix_second_moment > kMaxSecondMoment) {
    return Bad(absl::StrCat(conf, ": ", SecondMomentRangeProblem(x.matrix_second_moment)));
  }
  if (x.steps_taken < 0 || x.steps_skipped < 0) {
    return Bad(absl::StrCat(conf, ": steps_taken = ", x.steps_taken, ", steps_skipped = ",
                            x.steps_skipped, ": step counts must be >= 0"));
  }
  if (x.groups.size() > kMaxGroups) {
    return Bad(absl::StrCat(conf, ": ", x.groups.size(), " groups exceed the limit of ",
                            kMaxGroups));
  }
  for (size_t g = 0; g < x.groups.size(); ++g) {
    const uint32_t kind = static_cast<uint32_t>(x.groups[g].kind);
    if (kind > 1) {
      return Bad(absl::StrCat(conf, ": group ", g, " has kind ", kind,
                              ", not 0 (NorMuon) or 1 (AdamW)"));
    }
  }
  if (x.params.size() > kMaxParams) {
    return Bad(absl::StrCat(parm, ": ", x.params.size(), " parameters exceed the limit of ",
                            kMaxParams));
  }
  std::unordered_map<std::string, uint32_t> seen;
  for (uint32_t p = 0; p < x.params.size(); ++p) {
    const ParamInfo& q = x.params[p];
    const std::string who = absl::StrCat(parm, ": ", ParamWho(p, q.name));
    if (q.name.empty() || q.name.size() > kMaxNameBytes) {
      return Bad(absl::StrCat(who, ": the name is ", q.name.size(), " bytes long, must be 1 to ",
                              kMaxNameBytes));
    }
    const auto [it, inserted] = seen.emplace(q.name, p);
    if (!inserted) {
      return Bad(absl::StrCat(who, ": the name is already used by parameter ", it->second));
    }
    if (q.kind != ParamKind::kMatrix && q.kind != ParamKind::kAdamW) {
      return Bad(absl::StrCat(who, ": kind = ", static_cast<uint32_t>(q.kind),
                              " is not 0 (matrix) or 1 (adamw)"));
    }
    if (q.group >= x.groups.size()) {
      return Bad(absl::StrCat(who, ": group = ", q.group, " but the index has ", x.groups.size(),
                              " groups"));
    }
    const GroupKind want = q.kind == ParamKind::kMatrix ? GroupKind::kNorMuon : GroupKind::kAdamW;
    if (x.groups[q.group].kind != want) {
      const uint32_t gk = static_cast<uint32_t>(x.groups[q.group].kind);
      return Bad(absl::StrCat(who, ": kind ", KindName(q.kind), " but its group ", q.group,
                              " is of kind ", gk, gk == 0 ? " (NorMuon)" : " (AdamW)"));
    }
    if (!ShapeOk(q.rows, q.cols)) {
      return Bad(absl::StrCat(who, ": rows x cols = ", q.rows, " x ", q.cols,
                              ": both must be > 0 and the product at most 2^40"));
    }
    if (q.adamw_step < 0 || (q.kind == ParamKind::kMatrix && q.adamw_step != 0)) {
      return Bad(absl::StrCat(who, ": adamw_step = ", q.adamw_step,
                              " (must be >= 0, and 0 for a matrix)"));
    }
  }
  if (x.ranges.size() != x.world_size) {
    return Bad(absl::StrCat(shrd, ": row ranges for ", x.ranges.size(), " ranks, world_size is ",
                            x.world_size));
  }
  for (uint32_t r = 0; r < x.world_size; ++r) {
    if (x.ranges[r].size() != x.params.size()) {
      return Bad(absl::StrCat(shrd, ": saved rank ", r, " has row ranges for ",
                              x.ranges[r].size(), " parameters, the index has ",
                              x.params.size()));
    }
  }
  struct Held {
    int64_t begin, count;
    uint32_t rank;
  };
  std::vector<Held> held;
  for (uint32_t p = 0; p < x.params.size(); ++p) {
    const ParamInfo& q = x.params[p];
    const std::string who = absl::StrCat(shrd, ": ", ParamWho(p, q.name));
    held.clear();
    for (uint32_t r = 0; r < x.world_size; ++r) {
      const RowRange& g = x.ranges[r][p];
      if (g.begin < 0 || g.begin > q.rows || g.count < 0 || g.count > q.rows - g.begin) {
        return Bad(absl::StrCat(who, ": saved rank ", r, " has row_begin = ", g.begin,
                                ", row_count = ", g.count, ", outside the parameter's ", q.rows,
                                " rows"));
      }
      if (g.count > 0) held.push_back({g.begin, g.count, r});
    }
    std::sort(held.begin(), held.end(),
              [](const Held& a, const Held& b) { return a.begin < b.begin; });
    int64_t next = 0;
    for (size_t i = 0; i < held.size(); ++i) {
      if (held[i].begin < next) {
        return Bad(absl::StrCat(who, ": saved rank ", held[i - 1].rank, " holds ",
                                RangeText(held[i - 1].begin, held[i - 1].count), " and rank ",
                                held[i].rank, " holds ", RangeText(held[i].begin, held[i].count),
                                ": they overlap"));
      }
      if (held[i].begin > next) {
        return Bad(absl::StrCat(who, ": ", RangeText(next, held[i].begin - next),
                                " are held by no saved rank"));
      }
      next = held[i].begin + held[i].count;
    }
    if (next != q.rows) {
      return Bad(absl::StrCat(who, ": ", RangeText(next, q.rows - next),
                              " are held by no saved rank"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateRankFile(const RankFile& f, absl::string_view file) {
  const std::string head = WhereSection(file, kRankTag);
  if (f.world_size < 1 || f.world_size > kMaxWorldSize || f.rank >= f.world_size) {
    return Bad(absl::StrCat(head, ": rank = ", f.rank, ", world_size = ", f.world_size,
                            ": needs 0 <= rank < world_size <= ", kMaxWorldSize));
  }
  if (f.param_count > kMaxParams) {
    return Bad(absl::StrCat(head, ": param_count = ", f.param_count, " exceeds the limit of ",
                            kMaxParams));
  }
  if (f.matrix_second_moment > kMaxSecondMoment) {
    return Bad(absl::StrCat(head, ": ", SecondMomentRangeProblem(f.matrix_second_moment)));
  }
  if (f.shards.size() > f.param_count) {
    return Bad(absl::StrCat(head, ": ", f.shards.size(), " entries for ", f.param_count,
                            " parameters"));
  }
  for (size_t i = 0; i < f.shards.size(); ++i) {
    const ShardState& s = f.shards[i];
    const std::string who =
        absl::StrCat("checkpoint file '", file, "', entry ", i, ": ", ParamWho(s.param, s.name));
    if (s.param >= f.param_count) {
      return Bad(absl::StrCat(who, ": param = ", s.param, " but param_count = ", f.param_count));
    }
    if (i > 0 && s.param <= f.shards[i - 1].param) {
      return Bad(absl::StrCat(who, ": entries must be in increasing parameter order (previous "
                                   "entry is parameter ",
                              f.shards[i - 1].param, ")"));
    }
    if (s.kind != ParamKind::kMatrix && s.kind != ParamKind::kAdamW) {
      return Bad(absl::StrCat(who, ": kind = ", static_cast<uint32_t>(s.kind), " is unknown"));
    }
    if (s.name.empty() || s.name.size() > kMaxNameBytes) {
      return Bad(absl::StrCat(who, ": the name is ", s.name.size(), " bytes long, must be 1 to ",
                              kMaxNameBytes));
    }
    if (s.row_begin < 0 || !ShapeOk(s.row_count, s.cols)) {
      return Bad(absl::StrCat(who, ": row_begin = ", s.row_begin, ", row_count x cols = ",
                              s.row_count, " x ", s.cols,
                              ": needs row_begin >= 0, both counts > 0, product at most 2^40"));
    }
    if (s.step < 0 || (s.kind == ParamKind::kMatrix && s.step != 0)) {
      return Bad(absl::StrCat(who, ": step = ", s.step, " (must be >= 0, and 0 for a matrix)"));
    }
    const uint64_t first = static_cast<uint64_t>(s.row_count * s.cols);
    if (SecondIsPerColumn(s.kind, f.matrix_second_moment)) {
      if (s.first.size() != first) {
        return Bad(absl::StrCat(who, ": holds ", s.first.size(), " momentum values, ",
                                s.row_count, " rows x ", s.cols, " cols need ", first));
      }
      const std::string problem = PerColumnProblem(s.second.size(), s.cols);
      if (!problem.empty()) return Bad(absl::StrCat(who, ": ", problem));
      continue;
    }
    const uint64_t second = SecondCount(s.kind, f.matrix_second_moment, s.row_count, s.cols);
    if (s.first.size() != first || s.second.size() != second) {
      return Bad(absl::StrCat(who, ": holds ", s.first.size(), " + ", s.second.size(),
                              " state values, ", s.row_count, " rows x ", s.cols,
                              " cols need ", first, " + ", second));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckRankFileMatchesIndex(const RankFile& f, const Index& x, uint32_t expected_rank,
                                       absl::string_view file) {
  const std::string who = absl::StrCat("checkpoint file '", file, "'");
  if (f.save_id != x.save_id) {
    return Bad(absl::StrFormat("%s belongs to another save (save id 0x%016x; the index has "
                               "0x%016x): a file left from an earlier checkpoint, or an "
                               "incomplete save",
                               who, f.save_id, x.save_id));
  }
  if (f.rank != expected_rank || f.world_size != x.world_size) {
    return Bad(absl::StrCat(who, " holds rank ", f.rank, " of ", f.world_size,
                            ", expected rank ", expected_rank, " of ", x.world_size));
  }
  if (f.param_count != x.params.size()) {
    return Bad(absl::StrCat(who, ": param_count = ", f.param_count, ", the index has ",
                            x.params.size(), " parameters"));
  }
  if (f.matrix_second_moment != x.matrix_second_moment) {
    return Bad(absl::StrCat(who, ": matrix_second_moment = ", f.matrix_second_moment,
                            ", the index has ", x.matrix_second_moment));
  }
  size_t next = 0;  // next entry of f.shards to match
  for (uint32_t p = 0; p < x.params.size(); ++p) {
    const RowRange& g = x.ranges[expected_rank][p];
    const ParamInfo& q = x.params[p];
    const bool in_file = next < f.shards.size() && f.shards[next].param == p;
    if (g.count == 0) {
      if (in_file) {
        return Bad(absl::StrCat(who, " has an entry for ", ParamWho(p, q.name),
                                " but the index says rank ", expected_rank, " held no rows of it"));
      }
      continue;
    }
    if (!in_file) {
      return Bad(absl::StrCat(who, " has no entry for ", ParamWho(p, q.name),
                              "; the index says rank ", expected_rank, " held ",
                              RangeText(g.begin, g.count)));
    }
    const ShardState& s = f.shards[next++];
    if (s.name != q.name || s.kind != q.kind || s.cols != q.cols || s.row_begin != g.begin ||
        s.row_count != g.count) {
      return Bad(absl::StrCat(who, ": the entry of ", ParamWho(p, q.name), " is '", s.name, "' (",
                              KindName(s.kind), ", ", RangeText(s.row_begin, s.row_count),
                              " x ", s.cols, " cols); the index says '", q.name, "' (",
                              KindName(q.kind), ", ", RangeText(g.begin, g.count), " x ",
                              q.cols, " cols)"));
    }
    // A replicated v per column of each row block: a block has at least one row.
    if (SecondIsPerColumn(s.kind, x.matrix_second_moment) && s.cols > 0 &&
        s.second.size() / static_cast<uint64_t>(s.cols) > static_cast<uint64_t>(q.rows)) {
      return Bad(absl::StrCat(who, ": the entry of ", ParamWho(p, q.name), " holds v for ",
                              s.second.size() / static_cast<uint64_t>(s.cols),
                              " row blocks of ", s.cols, " columns, but the parameter has ",
                              q.rows, " rows: the file is inconsistent"));
    }
  }
  if (next != f.shards.size()) {
    return Bad(absl::StrCat(who, ": entry for parameter ", f.shards[next].param, " '",
                            f.shards[next].name, "' is not in the index's list for rank ",
                            expected_rank));
  }
  return absl::OkStatus();
}

}  // namespace normuon::checkpoint
