// Checks and message pieces shared by the checkpoint format's decoder (checkpoint_format.cc) and
// its validation (checkpoint_validate.cc). Internal to runtime/.
#ifndef NORMUON_RUNTIME_CHECKPOINT_CHECKS_H_
#define NORMUON_RUNTIME_CHECKPOINT_CHECKS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "runtime/checkpoint_format.h"

namespace normuon::checkpoint::internal {

// Index sections, in file order.
inline constexpr char kConfTag[] = "CONF";
inline constexpr char kParmTag[] = "PARM";
inline constexpr char kShrdTag[] = "SHRD";
// Rank file sections.
inline constexpr char kRankTag[] = "RANK";
inline constexpr char kMatrixTag[] = "MATX";
inline constexpr char kAdamWTag[] = "ADMW";

// Fixed bytes of one PARM entry besides the name: name_length, kind, group, rows, cols, step.
inline constexpr uint64_t kParamEntryFixedBytes = 4 + 4 + 4 + 8 + 8 + 8;
inline constexpr uint64_t kGroupEntryBytes = 16;
inline constexpr uint64_t kRangeBytes = 16;

inline absl::Status Bad(absl::string_view message) { return absl::InvalidArgumentError(message); }

// "checkpoint file 'f', section 'CONF'".
std::string WhereSection(absl::string_view file, absl::string_view tag);
std::string ParamWho(uint32_t p, const std::string& name);
std::string RangeText(int64_t begin, int64_t count);
// rows and cols of a parameter or a shard: both > 0, product within kMaxElements.
bool ShapeOk(int64_t rows, int64_t cols);
// Whether a shard's second array has a length of its own (a matrix's replicated v per column
// of each row block) rather than one derived from its rows (SecondCount).
bool SecondIsPerColumn(ParamKind kind, uint32_t matrix_second_moment);
// Element count of a shard's second array, where SecondIsPerColumn is false.
uint64_t SecondCount(ParamKind kind, uint32_t matrix_second_moment, int64_t row_count,
                     int64_t cols);
// A replicated per-column v of n values for a matrix of `cols` columns: "" when fine, else the
// problem.
std::string PerColumnProblem(uint64_t n, int64_t cols);
std::string SecondMomentRangeProblem(uint32_t value);

}  // namespace normuon::checkpoint::internal

#endif  // NORMUON_RUNTIME_CHECKPOINT_CHECKS_H_
