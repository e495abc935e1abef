#include "sharding/shard.h"

#include <algorithm>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace normuon::sharding {
namespace {

std::string Where(const MatrixShape& shape, int rank, int piece = -1) {
  if (rank < 0) return absl::StrCat("matrix '", shape.name, "'");
  if (piece >= 0) return absl::StrCat("matrix '", shape.name, "', rank ", rank, ", piece ", piece);
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

std::string DescribeRect(const PieceRect& r) {
  return absl::StrCat("rows [", r.row_begin, ", ", r.row_begin + r.row_count, ") x cols [",
                      r.col_begin, ", ", r.col_begin + r.col_count, ")");
}

std::string DescribeRankPiece(const RankPiece& p) {
  if (p.piece < 0) return absl::StrCat("rank ", p.rank, "'s piece ", DescribeRect(p.rect));
  return absl::StrCat("rank ", p.rank, "'s piece ", p.piece, " (", DescribeRect(p.rect), ")");
}

absl::Status ValidateLocalPiece(const MatrixShape& shape, const PieceRect& rect, int rank,
                                int piece) {
  absl::Status s = ValidateShape(shape);
  if (!s.ok()) {
    if (rank < 0) return s;
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, ": ", s.message()));
  }
  struct Axis {
    const char* begin_name;
    const char* count_name;
    int64_t begin, count, extent;
    const char* extent_name;
  };
  const Axis axes[2] = {
      {"row_begin", "row_count", rect.row_begin, rect.row_count, shape.rows, "rows"},
      {"col_begin", "col_count", rect.col_begin, rect.col_count, shape.cols, "cols"},
  };
  for (const Axis& a : axes) {
    if (a.begin < 0 || a.begin > a.extent) {
      return absl::InvalidArgumentError(absl::StrCat(Where(shape, rank, piece), ": ", a.begin_name,
                                                     " = ", a.begin, " is outside [0, ", a.extent,
                                                     "] (", a.extent_name, " = ", a.extent, ")"));
    }
    // begin <= extent here, so extent - begin cannot overflow.
    if (a.count < 0 || a.count > a.extent - a.begin) {
      return absl::InvalidArgumentError(absl::StrCat(
          Where(shape, rank, piece), ": ", a.count_name, " = ", a.count, " with ", a.begin_name, " = ",
          a.begin, " does not fit in ", a.extent_name, " = ", a.extent));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateTiling(const MatrixShape& shape, const std::vector<RankPiece>& pieces) {
  NORMUON_RETURN_IF_ERROR(ValidateShape(shape));
  // In a canonical order (rank, then the fields), so that the piece named does not depend on the
  // order the pieces came in.
  std::vector<int> checked(pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i) checked[i] = static_cast<int>(i);
  auto fields = [&](int i) {
    const PieceRect& r = pieces[i].rect;
    return std::make_tuple(pieces[i].rank, pieces[i].piece, r.row_begin, r.row_count, r.col_begin,
                           r.col_count);
  };
  std::sort(checked.begin(), checked.end(), [&](int a, int b) { return fields(a) < fields(b); });
  for (int i : checked) {
    NORMUON_RETURN_IF_ERROR(
        ValidateLocalPiece(shape, pieces[i].rect, pieces[i].rank, pieces[i].piece));
  }
  // The non-empty pieces, by first row (ties: rank, then position), so that everything below is
  // independent of the order the pieces came in.
  std::vector<int> order;
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (pieces[i].rect.row_count > 0 && pieces[i].rect.col_count > 0) {
      order.push_back(static_cast<int>(i));
    }
  }
  auto key = [&](int i) {
    const PieceRect& r = pieces[i].rect;
    return std::make_tuple(r.row_begin, r.col_begin, pieces[i].rank, pieces[i].piece, r.row_count,
                           r.col_count, i);
  };
  std::sort(order.begin(), order.end(), [&](int a, int b) { return key(a) < key(b); });
  // Band boundaries: 0, rows, and every piece's first and past-the-end row.
  std::vector<int64_t> cuts = {0, shape.rows};
  for (int i : order) {
    cuts.push_back(pieces[i].rect.row_begin);
    cuts.push_back(pieces[i].rect.row_begin + pieces[i].rect.row_count);
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  auto gap = [&](int64_t row, int64_t col) {
    return absl::InvalidArgumentError(absl::StrCat(
        "matrix '", shape.name, "' (", shape.rows, "x", shape.cols, "): element (", row, ", ",
        col, ") (row ", row, ", column ", col,
        ") is held by no piece: the pieces must tile the matrix exactly (a gap)"));
  };
  std::vector<int> active;  // pieces holding the current band's rows
  size_t next = 0;          // the next piece of `order` to enter a band
  for (size_t c = 0; c + 1 < cuts.size(); ++c) {
    const int64_t y = cuts[c];
    active.erase(std::remove_if(active.begin(), active.end(),
                                [&](int i) {
                                  return pieces[i].rect.row_begin + pieces[i].rect.row_count <= y;
                                }),
                 active.end());
    while (next < order.size() && pieces[order[next]].rect.row_begin <= y) {
      active.push_back(order[next++]);
    }
    std::sort(active.begin(), active.end(), [&](int a, int b) {
      return std::make_tuple(pieces[a].rect.col_begin, key(a)) <
             std::make_tuple(pieces[b].rect.col_begin, key(b));
    });
    int64_t covered = 0;  // columns [0, covered) of row y are held so far
    int reach = -1;       // the piece whose columns end at `covered`
    for (int i : active) {
      const PieceRect& r = pieces[i].rect;
      if (r.col_begin > covered) return gap(y, covered);
      if (r.col_begin < covered) {
        const RankPiece& a = pieces[reach];
        return absl::InvalidArgumentError(absl::StrCat(
            "matrix '", shape.name, "' (", shape.rows, "x", shape.cols, "): ",
            DescribeRankPiece(a), " overlaps ", DescribeRankPiece(pieces[i]),
            " (both hold element (", y, ", ", r.col_begin,
            ")): the pieces must tile the matrix exactly"));
      }
      covered = r.col_begin + r.col_count;
      reach = i;
    }
    if (covered < shape.cols) return gap(y, covered);
  }
  return absl::OkStatus();
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
