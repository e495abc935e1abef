#include "sharding/shard.h"

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace normuon::sharding {
namespace {

std::string Where(const MatrixShape& shape, int rank) {
  if (rank < 0) return absl::StrCat("matrix '", shape.name, "'");
  return absl::StrCat("matrix '", shape.name, "', rank ", rank);
}

std::string Rows(int64_t begin, int64_t count) {
  return absl::StrCat("[", begin, ", ", begin + count, ")");
}

absl::Status ValidateSplitArgs(int64_t rows, int world) {
  if (rows < 0) return absl::InvalidArgumentError(absl::StrCat("split: rows = ", rows, " < 0"));
  if (world < 1) {
    return absl::InvalidArgumentError(absl::StrCat("split: world = ", world, " < 1"));
  }
  return absl::OkStatus();
}

}  // namespace

bool CheckedMul(int64_t a, int64_t b, int64_t* out) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return false;
  *out = r;
  return true;
}

bool CheckedAdd(int64_t a, int64_t b, int64_t* out) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return false;
  *out = r;
  return true;
}

absl::Status ValidateShape(const MatrixShape& shape) {
  if (shape.rows <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("matrix '", shape.name, "': rows = ", shape.rows, ", must be > 0"));
  }
  if (shape.cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("matrix '", shape.name, "': cols = ", shape.cols, ", must be > 0"));
  }
  int64_t elements, bytes;
  if (!CheckedMul(shape.rows, shape.cols, &elements) ||
      !CheckedMul(elements, kMaxElementBytes, &bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("matrix '", shape.name, "': shape ", shape.rows, "x", shape.cols,
                     " is too large: its size in bytes (", kMaxElementBytes,
                     " per element) does not fit in a 64-bit integer"));
  }
  return absl::OkStatus();
}

absl::Status ValidateLocalShard(const MatrixShape& shape, const RowShard& shard, int rank) {
  absl::Status s = ValidateShape(shape);
  if (!s.ok()) {
    if (rank < 0) return s;
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, ": ", s.message()));
  }
  if (shard.row_begin < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(shape, rank), ": row_begin = ", shard.row_begin, ", must be >= 0"));
  }
  if (shard.row_count < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(shape, rank), ": row_count = ", shard.row_count, ", must be >= 0"));
  }
  if (shard.row_begin > shape.rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        Where(shape, rank), ": row_begin = ", shard.row_begin, " exceeds rows = ", shape.rows));
  }
  // row_begin <= rows here, so rows - row_begin cannot overflow; comparing against it avoids
  // computing row_begin + row_count, which can.
  if (shard.row_count > shape.rows - shard.row_begin) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(shape, rank), ": rows [", shard.row_begin, ", ", shard.row_begin, " + ",
                     shard.row_count, ") run past the matrix's ", shape.rows, " rows"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RowShard>> Fsdp2Split(int64_t rows, int world) {
  NORMUON_RETURN_IF_ERROR(ValidateSplitArgs(rows, world));
  // ceil(rows / world) without overflow for rows near INT64_MAX.
  const int64_t chunk = rows / world + (rows % world != 0 ? 1 : 0);
  std::vector<RowShard> shards(world);
  int64_t begin = 0;
  for (int r = 0; r < world; ++r) {
    const int64_t count = std::min(chunk, rows - begin);
    shards[r] = RowShard{begin, count};
    begin += count;
  }
  return shards;
}

absl::StatusOr<std::vector<RowShard>> BalancedSplit(int64_t rows, int world) {
  NORMUON_RETURN_IF_ERROR(ValidateSplitArgs(rows, world));
  const int64_t base = rows / world;
  const int64_t extra = rows % world;
  std::vector<RowShard> shards(world);
  int64_t begin = 0;
  for (int r = 0; r < world; ++r) {
    const int64_t count = base + (r < extra ? 1 : 0);
    shards[r] = RowShard{begin, count};
    begin += count;
  }
  return shards;
}

absl::Status ValidateCover(const MatrixShape& shape, const std::vector<RowShard>& shards) {
  if (shards.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("matrix '", shape.name, "': no shards given (world size 0)"));
  }
  for (size_t r = 0; r < shards.size(); ++r) {
    NORMUON_RETURN_IF_ERROR(ValidateLocalShard(shape, shards[r], static_cast<int>(r)));
  }
  // Non-empty shards in row order; ties (only possible for overlapping shards) by rank, so the
  // rank named in an error does not depend on the sort implementation.
  std::vector<int> order;
  for (size_t r = 0; r < shards.size(); ++r) {
    if (shards[r].row_count > 0) order.push_back(static_cast<int>(r));
  }
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    if (shards[a].row_begin != shards[b].row_begin) {
      return shards[a].row_begin < shards[b].row_begin;
    }
    return a < b;
  });
  int64_t covered = 0;  // rows [0, covered) are held by exactly one rank so far
  int prev = -1;
  for (int r : order) {
    const RowShard& sh = shards[r];
    if (sh.row_begin > covered) {
      return absl::InvalidArgumentError(absl::StrCat(
          Where(shape, r), ": holds rows ", Rows(sh.row_begin, sh.row_count), ", leaving rows ",
          Rows(covered, sh.row_begin - covered), " held by no rank (gap)"));
    }
    if (sh.row_begin < covered) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(shape, r), ": holds rows ", Rows(sh.row_begin, sh.row_count),
                       ", which overlap rank ", prev, "'s rows ",
                       Rows(shards[prev].row_begin, shards[prev].row_count)));
    }
    covered = sh.row_begin + sh.row_count;
    prev = r;
  }
  if (covered != shape.rows) {
    const std::string after =
        prev < 0 ? std::string("no rank holds any row")
                 : absl::StrCat("the last shard is rank ", prev, "'s, ending at row ", covered);
    return absl::InvalidArgumentError(absl::StrCat("matrix '", shape.name, "': rows ",
                                                   Rows(covered, shape.rows - covered),
                                                   " are held by no rank (", after, ")"));
  }
  return absl::OkStatus();
}

}  // namespace normuon::sharding
