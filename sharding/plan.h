// The per-rank plan of a sharded step: which matrices this rank orthogonalizes, how its owned
// matrices batch by shape, and the exact layout and size of every message of the gather (each
// rank's rows of U -> the matrix's owner) and the scatter (the owner's rows of O -> each rank).
// Also the per-global-row slot layout of the exact cross-rank reductions (docs/ARCHITECTURE.md section 6,
// "Exactness").
//
// Every rank builds its plan from the same global inputs (all ranks' shards, the owners), so the
// plans of two ranks agree by construction: what rank p sends to rank q is what q expects from p,
// segment for segment. The runtime sizes its buffers from the plan at finalize.
#ifndef NORMUON_SHARDING_PLAN_H_
#define NORMUON_SHARDING_PLAN_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sharding/shard.h"

namespace normuon::sharding {

struct PlanInputs {
  std::vector<MatrixShape> shapes;            // global shapes, registration order
  std::vector<std::vector<RowShard>> shards;  // shards[k][r]: rank r's rows of matrix k
  std::vector<int> owners;                    // owners[k]: the rank that orthogonalizes k
  int world = 1;
  int rank = 0;                        // the rank this plan is for
  int64_t wire_bytes_per_element = 4;  // 4 for the fp32 mode, 2 for bf16
  // Optional, two-dimensional pieces: when not empty, pieces[k][r] is rank r's rectangle of
  // matrix k and replaces shards[k][r] (which may then be empty); the pieces of each matrix must
  // tile it (ValidateTiling). A segment then moves the rectangle, packed row-major.
  std::vector<std::vector<PieceRect>> pieces;
  // Optional, with `pieces`: a rank holding several pieces of a matrix. extra_pieces[k] lists the
  // pieces of matrix k beyond pieces[k][r] (any ranks, in each rank's order); empty or one list
  // per matrix. The tiling is checked over all of them. A rank's segments of a matrix in a
  // message are its pieces[k][r], then its extra pieces in list order.
  std::vector<std::vector<RankPiece>> extra_pieces;
};

// Sizes agree (one shard per rank for every matrix, one owner per matrix), world >= 1,
// 0 <= rank < world, wire bytes in [1, kMaxElementBytes], owners in [0, world), and every
// matrix's shards form a cover (ValidateCover). The message names the matrix index and what is
// wrong.
absl::Status ValidatePlanInputs(const PlanInputs& in);

// Owned matrices of one shape, orthogonalized as one batched call.
struct ShapeBatch {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<int> matrices;
};

// The given matrices grouped by (rows, cols): batches in order of their first matrix, matrices in
// the given order. RankPlan::batches is this over the owned matrices; the runtime's step layout
// uses it to size the owner's buffers before the other ranks' rows are known.
std::vector<ShapeBatch> BatchByShape(const std::vector<MatrixShape>& shapes,
                                     const std::vector<int>& matrices);

// A block of one matrix's rows inside a message: rows [row_begin, row_begin + row_count) of
// matrix, bytes = row_count * cols * wire bytes, starting at byte offset within the message.
// With pieces (PlanInputs::pieces) the block is the rectangle of columns [col_begin, col_begin +
// col_count) of those rows, packed row-major: bytes = row_count * col_count * wire bytes.
// col_count 0 means every column (whole rows, contiguous in the full matrix).
struct Segment {
  int matrix = 0;
  int64_t row_begin = 0;
  int64_t row_count = 0;
  int64_t offset = 0;
  int64_t bytes = 0;
  int64_t col_begin = 0;
  int64_t col_count = 0;
};

inline bool operator==(const Segment& a, const Segment& b) {
  return a.matrix == b.matrix && a.row_begin == b.row_begin && a.row_count == b.row_count &&
         a.offset == b.offset && a.bytes == b.bytes && a.col_begin == b.col_begin &&
         a.col_count == b.col_count;
}
inline bool operator!=(const Segment& a, const Segment& b) { return !(a == b); }

struct RankPlan {
  int rank = 0;
  int world = 1;
  // Matrices this rank owns, in plan order (registration order for MakeRankPlan).
  std::vector<int> owned;
  // owned grouped by (rows, cols): batches in order of their first matrix, matrices in plan order.
  std::vector<ShapeBatch> batches;

  // Gather, indexed by peer. gather_sends[p]: this rank's rows of every matrix p owns, in plan
  // order, packed back to back; gather_recvs[p]: p's rows of every matrix this rank owns. Only
  // segments with rows are listed. The entries for peer == rank are always 0 / empty: this
  // rank's own rows of its own matrices never touch the wire and are listed in self_segments.
  std::vector<int64_t> gather_send_bytes;
  std::vector<int64_t> gather_recv_bytes;
  std::vector<std::vector<Segment>> gather_sends;
  std::vector<std::vector<Segment>> gather_recvs;

  // Scatter: the gather reversed, with the same layouts (the message to peer p is laid out as
  // gather_recvs[p], the one from p as gather_sends[p]). Kept as counts for the communicator.
  std::vector<int64_t> scatter_send_bytes;  // == gather_recv_bytes
  std::vector<int64_t> scatter_recv_bytes;  // == gather_send_bytes

  // This rank's rows of the matrices it owns: copied locally in both directions, packed back to
  // back in plan order.
  std::vector<Segment> self_segments;
  int64_t self_bytes = 0;
};

// The plan over every matrix, in registration order. Fails as ValidatePlanInputs does, or if a
// message's size overflows int64_t.
absl::StatusOr<RankPlan> MakeRankPlan(const PlanInputs& in);

// The plan over the given matrices only (a bucket), laid out in the given order. Every rank must
// pass the same list. Each index must be in range and listed once.
absl::StatusOr<RankPlan> MakeRankPlanForMatrices(const PlanInputs& in,
                                                 const std::vector<int>& matrices);

// The per-global-row slot vector of an exact cross-rank reduction: matrix k's row i lives at
// offsets[k] + i; total_rows is the vector's length (the sum of all rows).
struct RowSlots {
  std::vector<int64_t> offsets;
  int64_t total_rows = 0;
};

// Fails on an invalid shape or a total that overflows int64_t.
absl::StatusOr<RowSlots> MatrixSlotOffsets(const std::vector<MatrixShape>& shapes);

}  // namespace normuon::sharding

#endif  // NORMUON_SHARDING_PLAN_H_
