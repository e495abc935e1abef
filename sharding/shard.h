// Shard metadata for FSDP-style dim-0 sharding: a matrix's global shape, the contiguous block of
// rows one rank holds, FSDP2's split as a helper, and the checks that a rank's block fits its
// matrix and that the blocks of all ranks tile the matrix exactly (docs/ARCHITECTURE.md section 2).
//
// Every function here is pure (no communication, no allocation beyond its result) and gives the
// same answer on every rank for the same arguments, so ranks can plan without talking.
#ifndef NORMUON_SHARDING_SHARD_H_
#define NORMUON_SHARDING_SHARD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace normuon::sharding {

// The rows [row_begin, row_begin + row_count) of a matrix that one rank holds. A rank with no
// rows has row_count == 0; its row_begin is then any value in [0, rows] and means nothing.
struct RowShard {
  int64_t row_begin = 0;
  int64_t row_count = 0;
};

inline bool operator==(const RowShard& a, const RowShard& b) {
  return a.row_begin == b.row_begin && a.row_count == b.row_count;
}
inline bool operator!=(const RowShard& a, const RowShard& b) { return !(a == b); }

// A matrix's global shape; name is only used in error messages.
struct MatrixShape {
  std::string name;
  int64_t rows = 0;
  int64_t cols = 0;
};

// The widest element anything in the runtime sizes a buffer for (fp32 state is 4 bytes; 8 leaves
// room for fp64 reference buffers). A shape is accepted only if rows * cols * kMaxElementBytes
// fits in int64_t, so byte counts of whole matrices, and of any shard of them, never overflow.
inline constexpr int64_t kMaxElementBytes = 8;

// rows > 0, cols > 0 and rows * cols * kMaxElementBytes representable in int64_t.
absl::Status ValidateShape(const MatrixShape& shape);

// ValidateShape, then 0 <= row_begin, row_count >= 0, row_begin + row_count <= rows (for a
// zero-row shard: row_begin <= rows). rank >= 0 is named in the message; pass -1 when unknown.
absl::Status ValidateLocalShard(const MatrixShape& shape, const RowShard& shard, int rank = -1);

// FSDP2's dim-0 layout for world ranks, as torch.chunk(world) makes it: chunks of
// ceil(rows / world) rows, in rank order. torch.chunk may return fewer than world chunks (rows 5,
// world 4 gives 2, 2, 1 and nothing for rank 3), so trailing ranks can be short or empty. An empty
// rank gets row_begin = rows. Requires rows >= 0, world >= 1.
absl::StatusOr<std::vector<RowShard>> Fsdp2Split(int64_t rows, int world);

// The balanced split: rows / world rows per rank, the first rows % world ranks one more. Differs
// from Fsdp2Split whenever world does not divide rows; tests use both. Requires rows >= 0,
// world >= 1.
absl::StatusOr<std::vector<RowShard>> BalancedSplit(int64_t rows, int world);

// Checks that shards (one per rank, indexed by rank) is a legal layout of the matrix: every shard
// passes ValidateLocalShard, and the non-empty shards are disjoint and together cover
// [0, rows) with no gap. The shards need not be in rank order (any contiguous, disjoint,
// complete cover is legal); zero-row ranks are allowed anywhere. On failure the message names the
// matrix, the first offending rank in row order and the rows involved. Requires a non-empty
// shards (world >= 1).
absl::Status ValidateCover(const MatrixShape& shape, const std::vector<RowShard>& shards);

// ---- Two-dimensional pieces (tensor parallel x FSDP; docs/ARCHITECTURE.md section 2) ----

// The rectangle of a matrix one piece holds: rows [row_begin, row_begin + row_count) x columns
// [col_begin, col_begin + col_count). A piece with no element (row_count == 0 or col_count == 0)
// is "no piece": it is checked for range but covers nothing.
struct PieceRect {
  int64_t row_begin = 0;
  int64_t row_count = 0;
  int64_t col_begin = 0;
  int64_t col_count = 0;
};

inline bool operator==(const PieceRect& a, const PieceRect& b) {
  return a.row_begin == b.row_begin && a.row_count == b.row_count && a.col_begin == b.col_begin &&
         a.col_count == b.col_count;
}
inline bool operator!=(const PieceRect& a, const PieceRect& b) { return !(a == b); }

// One piece and the rank that holds it (a rank may hold several pieces, or none). `piece` is
// the rank's own index of the piece (normuon_param_desc_t.pieces), named in messages; -1 when the
// rank registered one piece without a list.
struct RankPiece {
  int rank = 0;
  PieceRect rect;
  int piece = -1;
};

// "rows [0, 4) x cols [2, 6)"
std::string DescribeRect(const PieceRect& rect);
// "rank 1's piece rows [0, 4) x cols [2, 6)", or with a piece index "rank 1's piece 2 (rows
// [0, 4) x cols [2, 6))".
std::string DescribeRankPiece(const RankPiece& piece);

// ValidateShape, then every field in range: row_begin in [0, rows], row_count >= 0 and
// row_begin + row_count <= rows, the same for the columns against cols. The message names the
// field (row_begin, row_count, col_begin, col_count), the matrix and the rank (rank >= 0; -1 when
// unknown). Never overflows, whatever the values.
// `piece` >= 0 is named too ("rank 1, piece 2").
absl::Status ValidateLocalPiece(const MatrixShape& shape, const PieceRect& rect, int rank = -1,
                                int piece = -1);

// The tiling check of finalize: every piece passes ValidateLocalPiece, and the non-empty pieces
// tile the matrix exactly, with no element held twice and none held by nobody. Pure, the same
// verdict and message on every rank for the same pieces (in any order). Scans the matrix in
// row-major order (in bands between the pieces' row boundaries) and reports the first problem:
//   "matrix 'w': rank 1's piece rows [0, 4) x cols [2, 6) overlaps rank 3's piece rows [2, 8) x
//    cols [0, 4) (both hold element (2, 2))" (with piece indices: "rank 1's piece 0 (rows ...)
//    overlaps rank 1's piece 2 (rows ...)", also for two pieces of one rank), or
//   "matrix 'w': element (4, 2) (row 4, column 2) is held by no piece (a gap ...)".
// An empty `pieces` (or only empty pieces) reports element (0, 0). O(n log n + bands * a log a)
// for n pieces, a of them in one band.
absl::Status ValidateTiling(const MatrixShape& shape, const std::vector<RankPiece>& pieces);

// Arithmetic shared by the sharding targets: *out = a * b or a + b; false (and *out untouched)
// when the exact result does not fit in int64_t.
bool CheckedMul(int64_t a, int64_t b, int64_t* out);
bool CheckedAdd(int64_t a, int64_t b, int64_t* out);

}  // namespace normuon::sharding

#endif  // NORMUON_SHARDING_SHARD_H_
