// The step layout alone (runtime/step_layout.h): a pure function of registrations, this rank's
// place and the config. Checked here without a runtime: units, owners, buckets, batches, slot and
// state offsets, and that the buffers' sizes add up to the memory the step needs.
#include "runtime/step_layout.h"

#include <cstdint>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "sharding/plan.h"

namespace normuon {
namespace {

LayoutParam Matrix(const char* name, int64_t rows, int64_t cols, int64_t begin, int64_t count,
                   std::vector<int64_t> splits = {}) {
  LayoutParam p;
  p.kind = ParamKind::kMatrix;
  p.name = name;
  p.rows = rows;
  p.cols = cols;
  p.row_begin = begin;
  p.row_count = count;
  p.splits = splits.empty() ? std::vector<int64_t>{rows} : splits;
  return p;
}

LayoutParam Vector(const char* name, int64_t rows, int64_t begin, int64_t count) {
  LayoutParam p = Matrix(name, rows, 1, begin, count);
  p.kind = ParamKind::kAdamW;
  return p;
}

uint64_t Sum(const StepLayout& l) {
  uint64_t total = 0;
  for (const BufferLayout& b : l.buffers) total += b.bytes;
  return total;
}

TEST(StepLayoutTest, SingleRankOwnsEverythingAndSendsNothing) {
  LayoutOptions o;
  const std::vector<LayoutParam> params = {Matrix("a", 8, 4, 0, 8), Vector("b", 5, 0, 5),
                                           Matrix("c", 4, 8, 0, 4)};
  absl::StatusOr<StepLayout> l = MakeStepLayout(params, o);
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_EQ(l->matrices.size(), 2u);
  EXPECT_EQ(l->adamw_params, std::vector<int32_t>({1}));
  for (const MatrixUnit& u : l->matrices) EXPECT_EQ(u.owner, 0);
  ASSERT_EQ(l->buckets.size(), 1u);  // sequential: one bucket
  EXPECT_EQ(l->buckets[0].send_bytes, 0);
  EXPECT_EQ(l->buckets[0].recv_bytes, 0);
  // Two shapes: two batches; slots 2 per row, then 6 flags (kStepFlagsPerRank at world 1).
  EXPECT_EQ(l->batches.size(), 2u);
  EXPECT_EQ(l->matrices[1].slot_offset, 16);
  EXPECT_EQ(l->flag_base, 24);
  EXPECT_EQ(l->slot_floats, 24 + kStepFlagsPerRank);
  EXPECT_EQ(kStepFlagsPerRank, 6);
  EXPECT_EQ(l->total_bytes, Sum(*l));
  // No all-reduced copy of the slots at one rank.
  for (const BufferLayout& b : l->buffers) EXPECT_NE(b.role, BufferRole::kSlotsTotal);
}

TEST(StepLayoutTest, MessagesAreSizedFromThisRanksRowsAlone) {
  // Two ranks, FSDP2 rows; rank 1 holds rows 4..7 of an 8 x 4 matrix and rows 2..3 of a 4 x 8
  // one. Round robin by size gives one matrix to each rank.
  LayoutOptions o;
  o.world = 2;
  o.rank = 1;
  const std::vector<LayoutParam> params = {Matrix("a", 8, 4, 4, 4), Matrix("c", 4, 8, 2, 2)};
  absl::StatusOr<StepLayout> l = MakeStepLayout(params, o);
  ASSERT_TRUE(l.ok()) << l.status();
  std::set<int> owners;
  for (const MatrixUnit& u : l->matrices) owners.insert(u.owner);
  EXPECT_EQ(owners, std::set<int>({0, 1}));
  // The plan built from both ranks' rows (what finalize does) sends and receives as much.
  sharding::PlanInputs in;
  in.shapes = l->shapes;
  in.shards = {{{0, 4}, {4, 4}}, {{0, 2}, {2, 2}}};
  in.world = 2;
  in.rank = 1;
  for (const MatrixUnit& u : l->matrices) in.owners.push_back(u.owner);
  absl::StatusOr<sharding::RankPlan> plan = sharding::MakeRankPlanForMatrices(
      in, std::vector<int>(l->buckets[0].matrices.begin(), l->buckets[0].matrices.end()));
  ASSERT_TRUE(plan.ok()) << plan.status();
  int64_t send = 0, recv = 0;
  for (int p = 0; p < 2; ++p) {
    send += plan->gather_send_bytes[p];
    recv += plan->gather_recv_bytes[p];
  }
  ASSERT_EQ(l->buckets.size(), 1u);
  EXPECT_EQ(l->buckets[0].send_bytes, send);
  EXPECT_EQ(l->buckets[0].recv_bytes, recv);
  ASSERT_EQ(plan->batches.size(), l->buckets[0].batches.size());
  EXPECT_GT(send, 0);
  EXPECT_GT(recv, 0);
  EXPECT_EQ(l->total_bytes, Sum(*l));
}

TEST(StepLayoutTest, RowBlocksAreUnitsWithTheirOwnRowsAndStateOffsets) {
  // A fused 12 x 4 QKV in three blocks; this rank holds rows 2..9 (it crosses two block edges).
  LayoutOptions o;
  o.world = 2;
  o.rank = 0;
  const std::vector<LayoutParam> params = {Matrix("qkv", 12, 4, 2, 8, {4, 4, 4})};
  absl::StatusOr<StepLayout> l = MakeStepLayout(params, o);
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_EQ(l->matrices.size(), 3u);
  EXPECT_EQ(l->matrices[0].mine.row_begin, 2);
  EXPECT_EQ(l->matrices[0].mine.row_count, 2);
  EXPECT_EQ(l->matrices[0].local_row, 0);
  EXPECT_EQ(l->matrices[1].mine.row_count, 4);
  EXPECT_EQ(l->matrices[1].local_row, 2);
  EXPECT_EQ(l->matrices[2].mine.row_begin, 0);
  EXPECT_EQ(l->matrices[2].mine.row_count, 2);
  EXPECT_EQ(l->matrices[2].local_row, 6);
  // v per local row: the block's offset is its first local row.
  EXPECT_EQ(l->matrices[2].v_offset, 6);
  EXPECT_EQ(l->state[0].second, 8u);
  EXPECT_EQ(l->matrices[1].name, "qkv[rows 4+4]");
}

TEST(StepLayoutTest, TheStateRuleFollowsTheVariantAndTheNeuronAxis) {
  // 6 local rows of 10 columns, 3 row blocks.
  const StateFloats rows = StateFloatsOf(ParamKind::kMatrix, NORMUON_VARIANT_NORMUON,
                                         NORMUON_NEURON_ROWS, 6, 10, 3);
  EXPECT_EQ(rows.momentum, 60u);
  EXPECT_EQ(rows.second, 6u);
  EXPECT_EQ(rows.state_second, 6u);
  const StateFloats cols = StateFloatsOf(ParamKind::kMatrix, NORMUON_VARIANT_NORMUON,
                                         NORMUON_NEURON_COLUMNS, 6, 10, 3);
  EXPECT_EQ(cols.second, 30u);  // per column of each block, replicated
  const StateFloats ada = StateFloatsOf(ParamKind::kMatrix, NORMUON_VARIANT_ADAMUON,
                                        NORMUON_NEURON_ROWS, 6, 10, 1);
  EXPECT_EQ(ada.second, 60u);
  const StateFloats muon = StateFloatsOf(ParamKind::kMatrix, NORMUON_VARIANT_MUON,
                                         NORMUON_NEURON_ROWS, 6, 10, 1);
  EXPECT_EQ(muon.state_second, 0u);  // the state API shows no v for Muon
  const StateFloats adamw = StateFloatsOf(ParamKind::kAdamW, NORMUON_VARIANT_MUON,
                                          NORMUON_NEURON_ROWS, 6, 10, 1);
  EXPECT_EQ(adamw.second, 60u);
  EXPECT_EQ(adamw.state_second, 60u);
  EXPECT_EQ(adamw.v_new, 0u);
}

TEST(StepLayoutTest, SchedulesChangeBucketsNotTheWorkOrAnyStateSize) {
  std::vector<LayoutParam> params;
  for (int i = 0; i < 6; ++i) {
    params.push_back(Matrix(i % 2 ? "odd" : "even", 16 + i, 8, 0, 16 + i));
    params.back().name += std::to_string(i);
  }
  LayoutOptions o;
  std::vector<size_t> bucket_counts;
  for (normuon_schedule_t s : {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX,
                               NORMUON_SCHEDULE_BUCKETED}) {
    o.schedule = s;
    o.bucket_bytes = 1100;  // two of these matrices (516-672 bytes each) per bucket
    absl::StatusOr<StepLayout> l = MakeStepLayout(params, o);
    ASSERT_TRUE(l.ok()) << l.status();
    bucket_counts.push_back(l->buckets.size());
    // Every matrix in exactly one bucket, buckets in reverse registration order.
    std::vector<int32_t> seen;
    for (const BucketLayout& b : l->buckets) seen.insert(seen.end(), b.matrices.begin(), b.matrices.end());
    ASSERT_EQ(seen.size(), 6u);
    for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], static_cast<int32_t>(5 - i));
    EXPECT_EQ(l->total_bytes, Sum(*l));
  }
  EXPECT_EQ(bucket_counts[0], 1u);
  EXPECT_EQ(bucket_counts[1], 6u);
  EXPECT_GT(bucket_counts[2], 1u);
  EXPECT_LT(bucket_counts[2], 6u);
}

TEST(StepLayoutTest, AdaMuonColumnPiecesSendTheirVToTheOwner) {
  // An 8 x 6 matrix in two column pieces (cols [0, 4) and [4, 6), all rows): under AdaMuon each
  // piece's v travels to the owner, which holds the whole v; NorMuon's per-row v needs none of it.
  const int64_t widths[2] = {4, 2};
  for (int rank = 0; rank < 2; ++rank) {
    LayoutParam p = Matrix("w", 8, 6, 0, 8);
    p.col_begin = rank == 0 ? 0 : 4;
    p.col_count = widths[rank];
    p.columns_given = true;
    LayoutOptions o;
    o.world = 2;
    o.rank = rank;
    o.variant = NORMUON_VARIANT_ADAMUON;
    o.column_split = {1};
    absl::StatusOr<StepLayout> l = MakeStepLayout({p}, o);
    ASSERT_TRUE(l.ok()) << l.status();
    const MatrixUnit& u = l->matrices[0];
    EXPECT_TRUE(u.element_v_split);
    EXPECT_EQ(u.vsync_offset, -1);
    EXPECT_EQ(l->vsync_floats, 0);
    const bool owner = u.owner == rank;
    const BucketLayout& b = l->buckets[0];
    EXPECT_EQ(b.v_send_bytes, owner ? 0 : 8 * widths[rank] * 4);
    EXPECT_EQ(b.v_recv_bytes, owner ? 8 * widths[1 - rank] * 4 : 0);
    // The plan over both pieces with fp32 elements moves as much.
    sharding::PlanInputs in;
    in.shapes = l->shapes;
    in.pieces = {{{0, 8, 0, 4}, {0, 8, 4, 2}}};
    in.world = 2;
    in.rank = rank;
    in.owners = {u.owner};
    in.wire_bytes_per_element = 4;
    absl::StatusOr<sharding::RankPlan> plan = sharding::MakeRankPlanForMatrices(in, {0});
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->gather_send_bytes[1 - rank], b.v_send_bytes);
    EXPECT_EQ(plan->gather_recv_bytes[1 - rank], b.v_recv_bytes);
    uint64_t full = 0, messages = 0;
    for (const BufferLayout& buf : l->buffers) {
      if (buf.role == BufferRole::kVFull) full += buf.bytes;
      if (buf.role == BufferRole::kVSend || buf.role == BufferRole::kVRecv) messages += buf.bytes;
    }
    EXPECT_EQ(full, owner ? 8u * 6 * 4 : 0u);
    EXPECT_EQ(messages, static_cast<uint64_t>(b.v_send_bytes + b.v_recv_bytes));
    EXPECT_EQ(l->total_bytes, Sum(*l));
    // NorMuon: the per-row v all-reduce instead, no v messages.
    o.variant = NORMUON_VARIANT_NORMUON;
    l = MakeStepLayout({p}, o);
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_FALSE(l->matrices[0].element_v_split);
    EXPECT_EQ(l->vsync_floats, 8);
    for (const BufferLayout& buf : l->buffers) {
      EXPECT_NE(buf.role, BufferRole::kVFull);
      EXPECT_NE(buf.role, BufferRole::kVSend);
    }
  }
}

TEST(StepLayoutTest, ABadRankIsRefused) {
  LayoutOptions o;
  o.world = 2;
  o.rank = 2;
  EXPECT_FALSE(MakeStepLayout({Matrix("a", 4, 4, 0, 4)}, o).ok());
}

}  // namespace
}  // namespace normuon
