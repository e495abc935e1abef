// shard_fuzz: shard validation and planning (sharding/shard.h, sharding/plan.h) on arbitrary
// int64 values. Row ranges come from other ranks' registrations, so nothing here may overflow,
// crash or accept a layout that is not an exact cover.
//
// Input (fuzz_input.h): ShapeInt rows, ShapeInt cols, u8 world (1 + value % 8), world pairs of
// ShapeInt row_begin / row_count, ShapeInt split_rows, I32 split_world, ShapeInt a, ShapeInt b,
// then for the plan: u8 matrices (value % 4), per matrix u8 rows, u8 cols, u8 layout (0: FSDP2,
// 1: balanced, 2: the fuzzed shards above, 3: the fuzzed shards with rows/cols taken from the
// first shape), u8 owner (value % (world + 1); world means "out of range"), then u8 wire (1, 2,
// 4 or 9 bytes by value % 4), u8 policy (bit 0: cost-balanced).
// Checks against an independent model written here: ValidateShape, ValidateLocalShard and
// ValidateCover accept exactly what the model accepts; Fsdp2Split and BalancedSplit give exact
// covers of the documented layout; CheckedMul/CheckedAdd agree with 128-bit arithmetic; plans
// of every rank of a valid layout pair up (what p sends q is what q expects from p) and move
// every row exactly once; invalid plan inputs are rejected.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "sharding/owner_assignment.h"
#include "sharding/plan.h"
#include "sharding/shard.h"

namespace {

using normuon_fuzz::FuzzInput;
using namespace normuon::sharding;  // NOLINT: the whole header set is under test

using Int128 = __int128;

constexpr int kMaxSplitWorld = 4096;  // bounds the vectors Fsdp2Split / BalancedSplit return

bool ModelShapeOk(int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return false;
  const Int128 elements = static_cast<Int128>(rows) * cols;  // < 2^126: no overflow
  return elements <= static_cast<Int128>(INT64_MAX / kMaxElementBytes);
}

bool ModelLocalOk(int64_t rows, int64_t cols, const RowShard& s) {
  if (!ModelShapeOk(rows, cols)) return false;
  if (s.row_begin < 0 || s.row_count < 0 || s.row_begin > rows) return false;
  return static_cast<Int128>(s.row_begin) + s.row_count <= rows;
}

bool ModelCoverOk(int64_t rows, int64_t cols, const std::vector<RowShard>& shards) {
  if (shards.empty()) return false;
  for (const RowShard& s : shards) {
    if (!ModelLocalOk(rows, cols, s)) return false;
  }
  std::vector<RowShard> held;
  for (const RowShard& s : shards) {
    if (s.row_count > 0) held.push_back(s);
  }
  std::sort(held.begin(), held.end(),
            [](const RowShard& a, const RowShard& b) { return a.row_begin < b.row_begin; });
  int64_t next = 0;
  for (const RowShard& s : held) {
    if (s.row_begin != next) return false;
    next = s.row_begin + s.row_count;
  }
  return next == rows;
}

// A split of rows over world ranks in rank order, starting at 0, each shard valid.
void CheckSplitShape(const std::vector<RowShard>& shards, int64_t rows, int world) {
  FUZZ_CHECK(static_cast<int>(shards.size()) == world);
  int64_t next = 0;
  for (const RowShard& s : shards) {
    FUZZ_CHECK(s.row_count >= 0);
    FUZZ_CHECK(s.row_begin == next);
    FUZZ_CHECK(static_cast<Int128>(s.row_begin) + s.row_count <= rows);
    next = s.row_begin + s.row_count;
  }
  FUZZ_CHECK(next == rows);
}

void CheckSplits(int64_t rows, int world) {
  auto fsdp = Fsdp2Split(rows, world);
  auto balanced = BalancedSplit(rows, world);
  const bool valid_args = rows >= 0 && world >= 1;
  FUZZ_CHECK(fsdp.ok() == valid_args);
  FUZZ_CHECK(balanced.ok() == valid_args);
  if (!valid_args) return;
  CheckSplitShape(*fsdp, rows, world);
  CheckSplitShape(*balanced, rows, world);
  // torch.chunk: ceil(rows / world) rows per rank until they run out.
  const int64_t chunk = rows / world + (rows % world != 0 ? 1 : 0);
  int64_t left = rows;
  for (const RowShard& s : *fsdp) {
    FUZZ_CHECK(s.row_count == std::min(chunk, left));
    left -= s.row_count;
  }
  int64_t lo = INT64_MAX, hi = 0;
  for (const RowShard& s : *balanced) {
    lo = std::min(lo, s.row_count);
    hi = std::max(hi, s.row_count);
  }
  FUZZ_CHECK(hi - lo <= 1);
  if (ModelShapeOk(rows, 1)) {  // the split of any valid shape is a cover of it
    MatrixShape shape{"split", rows, 1};
    FUZZ_CHECK(ValidateCover(shape, *fsdp).ok());
    FUZZ_CHECK(ValidateCover(shape, *balanced).ok());
  }
}

void CheckArithmetic(int64_t a, int64_t b) {
  const Int128 product = static_cast<Int128>(a) * b;
  const Int128 sum = static_cast<Int128>(a) + b;
  int64_t out = 12345;
  const bool mul_fits = product >= INT64_MIN && product <= INT64_MAX;
  FUZZ_CHECK(CheckedMul(a, b, &out) == mul_fits);
  FUZZ_CHECK(mul_fits ? out == static_cast<int64_t>(product) : out == 12345);
  out = 12345;
  const bool add_fits = sum >= INT64_MIN && sum <= INT64_MAX;
  FUZZ_CHECK(CheckedAdd(a, b, &out) == add_fits);
  FUZZ_CHECK(add_fits ? out == static_cast<int64_t>(sum) : out == 12345);
}

// Plans of all ranks for one set of inputs: they pair up and move every row once.
void CheckPlans(PlanInputs in, bool inputs_valid) {
  const int world = in.world;
  std::vector<RankPlan> plans;
  for (int r = 0; r < world; ++r) {
    in.rank = r;
    auto plan = MakeRankPlan(in);
    FUZZ_CHECK(plan.ok() == ValidatePlanInputs(in).ok());
    if (!inputs_valid) {
      FUZZ_CHECK(!plan.ok());
      return;
    }
    // Valid small inputs (rows, cols < 256) never overflow: the plan must exist.
    FUZZ_CHECK(plan.ok());
    plans.push_back(*std::move(plan));
  }
  Int128 moved = 0;
  for (int p = 0; p < world; ++p) {
    const RankPlan& a = plans[p];
    FUZZ_CHECK(a.gather_send_bytes[p] == 0 && a.gather_recv_bytes[p] == 0);
    for (int q = 0; q < world; ++q) {
      const RankPlan& b = plans[q];
      FUZZ_CHECK(a.gather_send_bytes[q] == b.gather_recv_bytes[p]);
      FUZZ_CHECK(a.gather_sends[q] == b.gather_recvs[p]);
      FUZZ_CHECK(a.scatter_send_bytes[q] == a.gather_recv_bytes[q]);
      FUZZ_CHECK(a.scatter_recv_bytes[q] == a.gather_send_bytes[q]);
      int64_t packed = 0;
      for (const Segment& s : a.gather_sends[q]) {
        FUZZ_CHECK(s.offset == packed);
        FUZZ_CHECK(s.row_count > 0);
        FUZZ_CHECK(s.bytes == s.row_count * in.shapes[s.matrix].cols * in.wire_bytes_per_element);
        packed += s.bytes;
      }
      FUZZ_CHECK(packed == a.gather_send_bytes[q]);
      moved += packed;
    }
    moved += a.self_bytes;
  }
  Int128 total = 0;
  for (const MatrixShape& s : in.shapes) {
    total += static_cast<Int128>(s.rows) * s.cols * in.wire_bytes_per_element;
  }
  FUZZ_CHECK(moved == total);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const int64_t rows = in.ShapeInt();
  const int64_t cols = in.ShapeInt();
  const int world = 1 + in.U8() % 8;
  std::vector<RowShard> shards(world);
  for (RowShard& s : shards) {
    s.row_begin = in.ShapeInt();
    s.row_count = in.ShapeInt();
  }
  const MatrixShape shape{"m", rows, cols};

  FUZZ_CHECK(ValidateShape(shape).ok() == ModelShapeOk(rows, cols));
  for (int r = 0; r < world; ++r) {
    const absl::Status s = ValidateLocalShard(shape, shards[r], r);
    FUZZ_CHECK(s.ok() == ModelLocalOk(rows, cols, shards[r]));
    if (!s.ok()) FUZZ_CHECK(!s.message().empty());
  }
  const absl::Status cover = ValidateCover(shape, shards);
  FUZZ_CHECK(cover.ok() == ModelCoverOk(rows, cols, shards));
  FUZZ_CHECK(!ValidateCover(shape, {}).ok());

  const int64_t split_rows = in.ShapeInt();
  const int32_t split_world_raw = in.I32();
  // Large worlds are legal but each costs a vector of that many shards; keep them bounded.
  const int split_world = split_world_raw > kMaxSplitWorld ? kMaxSplitWorld : split_world_raw;
  CheckSplits(split_rows, split_world);
  CheckArithmetic(in.ShapeInt(), in.ShapeInt());

  // Plans over a few small matrices laid out in the ways the runtime can meet.
  PlanInputs plan_in;
  plan_in.world = world;
  const int matrices = in.U8() % 4;
  bool valid = true;
  for (int k = 0; k < matrices; ++k) {
    MatrixShape m{"k" + std::to_string(k), in.U8(), in.U8()};
    const int layout = in.U8() % 4;
    std::vector<RowShard> layout_shards;
    if (layout == 0 && m.rows >= 0) {
      layout_shards = *Fsdp2Split(m.rows, world);
    } else if (layout == 1 && m.rows >= 0) {
      layout_shards = *BalancedSplit(m.rows, world);
    } else {
      layout_shards = shards;
      if (layout == 3) m = MatrixShape{m.name, rows, cols};
    }
    valid = valid && ModelCoverOk(m.rows, m.cols, layout_shards);
    const int owner = in.U8() % (world + 1);
    valid = valid && owner < world;
    plan_in.shapes.push_back(m);
    plan_in.shards.push_back(layout_shards);
    plan_in.owners.push_back(owner);
  }
  static const int64_t kWire[] = {1, 2, 4, 9};
  plan_in.wire_bytes_per_element = kWire[in.U8() % 4];
  valid = valid && plan_in.wire_bytes_per_element <= kMaxElementBytes;
  // Valid layouts of small matrices cannot overflow; the layout 3 shapes can be huge, so only
  // their validity is compared.
  bool small = true;
  for (const MatrixShape& m : plan_in.shapes) small = small && m.rows < 256 && m.cols < 256;
  if (small || !valid) CheckPlans(plan_in, valid);

  const bool cost_balanced = in.Bool();
  auto owners = AssignOwners(plan_in.shapes, world,
                             cost_balanced ? OwnerPolicy::kCostBalanced : OwnerPolicy::kRoundRobin);
  if (owners.ok()) {
    FUZZ_CHECK(owners->size() == plan_in.shapes.size());
    for (int o : *owners) FUZZ_CHECK(o >= 0 && o < world);
  }
  return 0;
}
