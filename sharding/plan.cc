#include "sharding/plan.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace normuon::sharding {
namespace {

absl::Status Overflow(const char* what, int peer) {
  return absl::InvalidArgumentError(absl::StrCat("plan: the ", what, " message for peer ", peer,
                                                 " overflows a 64-bit byte count"));
}

// Appends the rectangle `piece` of matrix k to a message whose size so far is *bytes (whole
// rows when it holds every column: Segment::col_count 0); returns false on overflow.
bool Append(int k, const MatrixShape& shape, const PieceRect& piece, int64_t wire_bytes,
            std::vector<Segment>* segments, int64_t* bytes) {
  int64_t seg_bytes, end;
  // row_count * col_count * wire_bytes <= rows * cols * kMaxElementBytes (ValidateShape).
  if (!CheckedMul(piece.row_count * piece.col_count, wire_bytes, &seg_bytes) ||
      !CheckedAdd(*bytes, seg_bytes, &end)) {
    return false;
  }
  const bool whole = piece.col_begin == 0 && piece.col_count == shape.cols;
  segments->push_back(Segment{k, piece.row_begin, piece.row_count, *bytes, seg_bytes,
                              whole ? 0 : piece.col_begin, whole ? 0 : piece.col_count});
  *bytes = end;
  return true;
}

// Rank p's piece of matrix k: its rectangle, or its rows with every column.
PieceRect PieceOf(const PlanInputs& in, int k, int p) {
  if (!in.pieces.empty()) return in.pieces[k][p];
  const RowShard& s = in.shards[k][p];
  return PieceRect{s.row_begin, s.row_count, 0, in.shapes[k].cols};
}

bool EmptyPiece(const PieceRect& r) { return r.row_count == 0 || r.col_count == 0; }

// Every piece of rank p of matrix k, in message order: PieceOf, then its extra pieces.
std::vector<PieceRect> PiecesOf(const PlanInputs& in, int k, int p) {
  std::vector<PieceRect> out = {PieceOf(in, k, p)};
  if (!in.extra_pieces.empty()) {
    for (const RankPiece& x : in.extra_pieces[k]) {
      if (x.rank == p) out.push_back(x.rect);
    }
  }
  return out;
}

}  // namespace

absl::Status ValidatePlanInputs(const PlanInputs& in) {
  if (in.world < 1) {
    return absl::InvalidArgumentError(absl::StrCat("plan: world = ", in.world, " < 1"));
  }
  if (in.rank < 0 || in.rank >= in.world) {
    return absl::InvalidArgumentError(
        absl::StrCat("plan: rank = ", in.rank, ", outside [0, ", in.world, ")"));
  }
  if (in.wire_bytes_per_element < 1 || in.wire_bytes_per_element > kMaxElementBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("plan: wire_bytes_per_element = ", in.wire_bytes_per_element,
                     ", must be in [1, ", kMaxElementBytes, "]"));
  }
  const size_t n = in.shapes.size();
  if (!in.extra_pieces.empty() && (in.pieces.empty() || in.extra_pieces.size() != n)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "plan: extra piece lists for ", in.extra_pieces.size(), " matrices, but ", n,
        " shapes", in.pieces.empty() ? " and no piece lists" : ""));
  }
  if (!in.pieces.empty()) {
    if (in.pieces.size() != n) {
      return absl::InvalidArgumentError(absl::StrCat("plan: piece lists for ", in.pieces.size(),
                                                     " matrices, but ", n, " shapes"));
    }
    if (in.owners.size() != n) {
      return absl::InvalidArgumentError(
          absl::StrCat("plan: ", in.owners.size(), " owners, but ", n, " shapes"));
    }
    for (size_t k = 0; k < n; ++k) {
      const MatrixShape& shape = in.shapes[k];
      if (in.pieces[k].size() != static_cast<size_t>(in.world)) {
        return absl::InvalidArgumentError(absl::StrCat("plan: matrix ", k, " ('", shape.name,
                                                       "') has ", in.pieces[k].size(),
                                                       " pieces, but world = ", in.world));
      }
      if (in.owners[k] < 0 || in.owners[k] >= in.world) {
        return absl::InvalidArgumentError(absl::StrCat("plan: matrix ", k, " ('", shape.name,
                                                       "') has owner ", in.owners[k],
                                                       ", outside [0, ", in.world, ")"));
      }
      std::vector<RankPiece> pieces;
      for (int r = 0; r < in.world; ++r) pieces.push_back(RankPiece{r, in.pieces[k][r]});
      if (!in.extra_pieces.empty()) {
        for (const RankPiece& x : in.extra_pieces[k]) {
          if (x.rank < 0 || x.rank >= in.world) {
            return absl::InvalidArgumentError(absl::StrCat("plan: matrix ", k, " ('", shape.name,
                                                           "') has an extra piece of rank ",
                                                           x.rank, ", outside [0, ", in.world,
                                                           ")"));
          }
          pieces.push_back(x);
        }
      }
      absl::Status s = ValidateTiling(shape, pieces);
      if (!s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("plan: matrix ", k, ": ", s.message()));
      }
    }
    return absl::OkStatus();
  }
  if (in.shards.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("plan: shard lists for ", in.shards.size(), " matrices, but ", n, " shapes"));
  }
  if (in.owners.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("plan: ", in.owners.size(), " owners, but ", n, " shapes"));
  }
  for (size_t k = 0; k < n; ++k) {
    const MatrixShape& shape = in.shapes[k];
    if (in.shards[k].size() != static_cast<size_t>(in.world)) {
      return absl::InvalidArgumentError(absl::StrCat("plan: matrix ", k, " ('", shape.name,
                                                     "') has ", in.shards[k].size(),
                                                     " shards, but world = ", in.world));
    }
    if (in.owners[k] < 0 || in.owners[k] >= in.world) {
      return absl::InvalidArgumentError(absl::StrCat("plan: matrix ", k, " ('", shape.name,
                                                     "') has owner ", in.owners[k],
                                                     ", outside [0, ", in.world, ")"));
    }
    absl::Status s = ValidateCover(shape, in.shards[k]);
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("plan: matrix ", k, ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RankPlan> MakeRankPlanForMatrices(const PlanInputs& in,
                                                 const std::vector<int>& matrices) {
  NORMUON_RETURN_IF_ERROR(ValidatePlanInputs(in));
  std::vector<bool> listed(in.shapes.size(), false);
  for (int k : matrices) {
    if (k < 0 || k >= static_cast<int>(in.shapes.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("plan: matrix index ", k, " is outside [0, ", in.shapes.size(), ")"));
    }
    if (listed[k]) {
      return absl::InvalidArgumentError(
          absl::StrCat("plan: matrix ", k, " ('", in.shapes[k].name, "') is listed twice"));
    }
    listed[k] = true;
  }

  const int me = in.rank;
  const int64_t wire = in.wire_bytes_per_element;
  RankPlan plan;
  plan.rank = me;
  plan.world = in.world;
  plan.gather_send_bytes.assign(in.world, 0);
  plan.gather_recv_bytes.assign(in.world, 0);
  plan.gather_sends.resize(in.world);
  plan.gather_recvs.resize(in.world);

  for (int k : matrices) {
    const MatrixShape& shape = in.shapes[k];
    const int owner = in.owners[k];
    if (owner == me) {
      plan.owned.push_back(k);
      // Receive every other rank's rows; this rank's own rows are the local copy.
      for (int p = 0; p < in.world; ++p) {
        for (const PieceRect& shard : PiecesOf(in, k, p)) {
          if (EmptyPiece(shard)) continue;
          if (p == me) {
            if (!Append(k, shape, shard, wire, &plan.self_segments, &plan.self_bytes)) {
              return Overflow("local copy", p);
            }
          } else if (!Append(k, shape, shard, wire, &plan.gather_recvs[p],
                             &plan.gather_recv_bytes[p])) {
            return Overflow("gather receive", p);
          }
        }
      }
    } else {
      for (const PieceRect& mine : PiecesOf(in, k, me)) {
        if (EmptyPiece(mine)) continue;
        if (!Append(k, shape, mine, wire, &plan.gather_sends[owner],
                    &plan.gather_send_bytes[owner])) {
          return Overflow("gather send", owner);
        }
      }
    }
  }
  plan.scatter_send_bytes = plan.gather_recv_bytes;
  plan.scatter_recv_bytes = plan.gather_send_bytes;

  plan.batches = BatchByShape(in.shapes, plan.owned);
  return plan;
}

std::vector<ShapeBatch> BatchByShape(const std::vector<MatrixShape>& shapes,
                                     const std::vector<int>& matrices) {
  std::vector<ShapeBatch> batches;
  for (int k : matrices) {
    const MatrixShape& shape = shapes[k];
    ShapeBatch* batch = nullptr;
    for (ShapeBatch& b : batches) {
      if (b.rows == shape.rows && b.cols == shape.cols) {
        batch = &b;
        break;
      }
    }
    if (batch == nullptr) {
      batches.push_back(ShapeBatch{shape.rows, shape.cols, {}});
      batch = &batches.back();
    }
    batch->matrices.push_back(k);
  }
  return batches;
}

absl::StatusOr<RankPlan> MakeRankPlan(const PlanInputs& in) {
  std::vector<int> all(in.shapes.size());
  for (size_t k = 0; k < all.size(); ++k) all[k] = static_cast<int>(k);
  return MakeRankPlanForMatrices(in, all);
}

absl::StatusOr<RowSlots> MatrixSlotOffsets(const std::vector<MatrixShape>& shapes) {
  RowSlots slots;
  slots.offsets.reserve(shapes.size());
  for (size_t k = 0; k < shapes.size(); ++k) {
    NORMUON_RETURN_IF_ERROR(ValidateShape(shapes[k]));
    slots.offsets.push_back(slots.total_rows);
    if (!CheckedAdd(slots.total_rows, shapes[k].rows, &slots.total_rows)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "row slots: the total row count overflows at matrix ", k, " ('", shapes[k].name, "')"));
    }
  }
  return slots;
}

}  // namespace normuon::sharding
