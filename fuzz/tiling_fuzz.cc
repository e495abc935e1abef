// tiling_fuzz: the two-dimensional tiling check of finalize (sharding/shard.h, ValidateTiling and
// ValidateLocalPiece). Pieces come from other ranks' registrations, so any values must give a
// verdict (no crash, no overflow), and every bad tiling must get the documented message.
//
// Input (fuzz_input.h): u8 mode, then
//   mode bit 0 clear: ShapeInt rows, ShapeInt cols, u8 n (value % 9) pieces, each u8 rank (value % 8) and ShapeInt row_begin,
//     row_count, col_begin, col_count; with mode bit 1 set each piece carries its index among its
//     rank's pieces (a rank listing several pieces: normuon_param_desc_t.pieces), which the
//     messages must name;
//   mode bit 0 set: u64 rows, u64 cols, and a TP x DP mesh (Megatron, FSDP2 rows inside each TP
//     piece) built here on rows % 64 + 1 x cols % 64 + 1: u8 tp (1 + value % 4), u8 dp (1 + value % 4), u8 axis (bit
//     0: TP splits columns, else rows), u8 ragged (bit 0: uneven TP cuts), u8 cut seed, then u8
//     edit (value % 7: 0 none; 1-4 one field of one piece +-1; 5 a piece dropped; 6 a piece
//     duplicated on another rank), u8 which piece, u8 sign.
// Checks against a model written here (128-bit arithmetic, brute force on small matrices):
//   - every field out of range is refused by ValidateLocalPiece, naming the field;
//   - a valid set of pieces passes exactly when the non-empty pieces are pairwise disjoint and
//     their areas sum to rows * cols;
//   - on matrices of at most 4096 elements, a failing tiling names the first element (row-major)
//     held by no piece ("element (r, c)", "held by no piece") or held twice ("overlaps", "both
//     hold element (r, c)") and the two ranks that hold it;
//   - the verdict and the message do not depend on the order of the pieces;
//   - every unedited mesh passes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_input.h"
#include "sharding/shard.h"

namespace {

using normuon_fuzz::FuzzInput;
using normuon::sharding::DescribeRect;
using normuon::sharding::kMaxElementBytes;
using normuon::sharding::MatrixShape;
using normuon::sharding::PieceRect;
using normuon::sharding::RankPiece;
using normuon::sharding::ValidateLocalPiece;
using normuon::sharding::ValidateTiling;

using Int128 = __int128;

bool ModelShapeOk(int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return false;
  return static_cast<Int128>(rows) * cols <= static_cast<Int128>(INT64_MAX / kMaxElementBytes);
}

bool ModelAxisOk(int64_t begin, int64_t count, int64_t extent) {
  return begin >= 0 && begin <= extent && count >= 0 &&
         static_cast<Int128>(begin) + count <= extent;
}

bool Empty(const PieceRect& r) { return r.row_count == 0 || r.col_count == 0; }

bool Intersect(const PieceRect& a, const PieceRect& b) {
  if (Empty(a) || Empty(b)) return false;
  return a.row_begin < b.row_begin + b.row_count && b.row_begin < a.row_begin + a.row_count &&
         a.col_begin < b.col_begin + b.col_count && b.col_begin < a.col_begin + a.col_count;
}

bool Holds(const PieceRect& r, int64_t i, int64_t j) {
  return !Empty(r) && i >= r.row_begin && i < r.row_begin + r.row_count && j >= r.col_begin &&
         j < r.col_begin + r.col_count;
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

void Check(const MatrixShape& shape, const std::vector<RankPiece>& pieces, bool must_pass) {
  const absl::Status got = ValidateTiling(shape, pieces);
  std::vector<RankPiece> reversed(pieces.rbegin(), pieces.rend());
  const absl::Status again = ValidateTiling(shape, reversed);
  FUZZ_CHECK(got.ok() == again.ok());
  FUZZ_CHECK(got.message() == again.message());
  if (!ModelShapeOk(shape.rows, shape.cols)) {
    FUZZ_CHECK(!got.ok());
    return;
  }
  bool fields_ok = true;
  for (const RankPiece& p : pieces) {
    const PieceRect& r = p.rect;
    const bool rows_ok = ModelAxisOk(r.row_begin, r.row_count, shape.rows);
    const bool cols_ok = ModelAxisOk(r.col_begin, r.col_count, shape.cols);
    const absl::Status local = ValidateLocalPiece(shape, r, p.rank, p.piece);
    FUZZ_CHECK(local.ok() == (rows_ok && cols_ok));
    if (!local.ok()) {
      const std::string m(local.message());
      FUZZ_CHECK(Contains(m, "row_begin") || Contains(m, "row_count") ||
                 Contains(m, "col_begin") || Contains(m, "col_count"));
      FUZZ_CHECK(Contains(m, absl::StrCat("rank ", p.rank)));
      if (p.piece >= 0) FUZZ_CHECK(Contains(m, absl::StrCat("piece ", p.piece)));
    }
    fields_ok = fields_ok && rows_ok && cols_ok;
  }
  if (!fields_ok) {
    FUZZ_CHECK(!got.ok());
    return;
  }
  Int128 area = 0;
  bool disjoint = true;
  for (size_t a = 0; a < pieces.size(); ++a) {
    if (!Empty(pieces[a].rect)) {
      area += static_cast<Int128>(pieces[a].rect.row_count) * pieces[a].rect.col_count;
    }
    for (size_t b = a + 1; b < pieces.size(); ++b) {
      if (Intersect(pieces[a].rect, pieces[b].rect)) disjoint = false;
    }
  }
  const bool exact = disjoint && area == static_cast<Int128>(shape.rows) * shape.cols;
  FUZZ_CHECK(got.ok() == exact);
  if (must_pass) FUZZ_CHECK(got.ok());
  if (got.ok() || static_cast<Int128>(shape.rows) * shape.cols > 4096) return;
  // Brute force: the first element, row-major, held by a number of pieces other than one.
  const std::string m(got.message());
  for (int64_t i = 0; i < shape.rows; ++i) {
    for (int64_t j = 0; j < shape.cols; ++j) {
      std::vector<int> holders;
      for (size_t p = 0; p < pieces.size(); ++p) {
        if (Holds(pieces[p].rect, i, j)) holders.push_back(static_cast<int>(p));
      }
      if (holders.size() == 1) continue;
      const std::string element = absl::StrCat("element (", i, ", ", j, ")");
      if (holders.empty()) {
        FUZZ_CHECK(Contains(m, element) && Contains(m, "held by no piece"));
      } else {
        FUZZ_CHECK(Contains(m, "overlaps") && Contains(m, "both hold " + element));
        // The two pieces named both hold the element.
        int named = 0;
        for (int p : holders) {
          const std::string who = DescribeRankPiece(pieces[p]);
          if (Contains(m, who)) ++named;
        }
        FUZZ_CHECK(named >= 1);
      }
      return;
    }
  }
  FUZZ_CHECK(false);  // a failing tiling of valid pieces has an element held != once
}

// Cuts [0, n) into k parts, evenly or at seeded points; parts may be empty.
std::vector<int64_t> Cuts(int64_t n, int k, bool ragged, uint8_t seed) {
  std::vector<int64_t> cuts = {0};
  for (int i = 1; i < k; ++i) {
    int64_t c = ragged ? (seed * (i + 3) + i * 7) % (n + 1) : n * i / k;
    cuts.push_back(std::max(c, cuts.back()));
  }
  cuts.push_back(n);
  return cuts;
}

void MeshMode(FuzzInput& in) {
  const uint64_t rows = in.U64(), cols = in.U64();
  MatrixShape shape{"mesh", static_cast<int64_t>(rows % 64) + 1, static_cast<int64_t>(cols % 64) + 1};
  const int tp = 1 + in.U8() % 4;
  const int dp = 1 + in.U8() % 4;
  const bool split_cols = in.Bool();
  const bool ragged = in.Bool();
  const uint8_t seed = in.U8();
  std::vector<RankPiece> pieces;
  const std::vector<int64_t> t = Cuts(split_cols ? shape.cols : shape.rows, tp, ragged, seed);
  for (int a = 0; a < tp; ++a) {
    PieceRect tp_piece = split_cols ? PieceRect{0, shape.rows, t[a], t[a + 1] - t[a]}
                                    : PieceRect{t[a], t[a + 1] - t[a], 0, shape.cols};
    // FSDP2 inside the TP piece: torch.chunk of its rows over dp ranks.
    const int64_t chunk = (tp_piece.row_count + dp - 1) / dp;
    for (int d = 0; d < dp; ++d) {
      const int64_t begin = std::min(tp_piece.row_count, d * chunk);
      const int64_t count = std::min(chunk, tp_piece.row_count - begin);
      pieces.push_back({a * dp + d, PieceRect{tp_piece.row_begin + begin, count,
                                              tp_piece.col_begin, tp_piece.col_count}});
    }
  }
  Check(shape, pieces, /*must_pass=*/true);
  const int edit = in.U8() % 7;
  const size_t which = in.U8() % pieces.size();
  const int64_t delta = in.Bool() ? 1 : -1;
  PieceRect& r = pieces[which].rect;
  switch (edit) {
    case 0: return;
    case 1: r.row_begin += delta; break;
    case 2: r.row_count += delta; break;
    case 3: r.col_begin += delta; break;
    case 4: r.col_count += delta; break;
    case 5: pieces.erase(pieces.begin() + static_cast<std::ptrdiff_t>(which)); break;
    default: pieces.push_back({static_cast<int>(pieces.size()), r}); break;
  }
  Check(shape, pieces, /*must_pass=*/false);
}

void FreeMode(FuzzInput& in, bool indexed) {
  MatrixShape shape{"w", in.ShapeInt(), in.ShapeInt()};
  const int n = in.U8() % 9;
  std::vector<RankPiece> pieces;
  int listed[8] = {0};  // pieces per rank so far
  for (int i = 0; i < n; ++i) {
    RankPiece p;
    p.rank = in.U8() % 8;
    if (indexed) p.piece = listed[p.rank]++;
    p.rect.row_begin = in.ShapeInt();
    p.rect.row_count = in.ShapeInt();
    p.rect.col_begin = in.ShapeInt();
    p.rect.col_count = in.ShapeInt();
    pieces.push_back(p);
  }
  Check(shape, pieces, /*must_pass=*/false);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t mode = in.U8();
  if (mode & 1) {
    MeshMode(in);
  } else {
    FreeMode(in, (mode & 2) != 0);
  }
  return 0;
}
