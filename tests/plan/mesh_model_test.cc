// The TP x DP strategy comparison (tools/plan/mesh_model.h): invariants that hold by
// construction of each strategy (duplicated NS does tp times the FLOPs, the bytes formulas,
// idle ranks), the degenerate cases (tp = 1, k = 1), and the Gram FLOP totals of a real shape
// list.
#include "tools/plan/mesh_model.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "sharding/ns_cost.h"
#include "tools/model_shapes.h"

namespace normuon::plan {
namespace {

using sharding::NsCost;

normuon_tools::ModelShapes Model(const std::vector<normuon_tools::ModelShape>& entries) {
  normuon_tools::ModelShapes m;
  m.source = "<test>";
  m.entries = entries;
  return m;
}

normuon_tools::ModelShape Matrix(const std::string& name, int64_t rows, int64_t cols) {
  normuon_tools::ModelShape s;
  s.name = name;
  s.rows = rows;
  s.cols = cols;
  return s;
}

// Two layers of a small transformer whose sides divide by tp x dp = 4 x 4 = 16 everywhere:
// column-parallel q (256x256) and up (1024x256), row-parallel o_proj (256x256) and down_proj
// (256x1024), plus a norm gain (AdamW, ignored).
normuon_tools::ModelShapes SmallModel() {
  std::vector<normuon_tools::ModelShape> e;
  for (int l = 0; l < 2; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    e.push_back(Matrix(p + "q_proj", 256, 256));
    e.push_back(Matrix(p + "o_proj", 256, 256));
    e.push_back(Matrix(p + "up_proj", 1024, 256));
    e.push_back(Matrix(p + "down_proj", 256, 1024));
    normuon_tools::ModelShape g = Matrix(p + "norm", 256, 1);
    g.kind = normuon::ParamKind::kAdamW;
    g.one_dim = true;
    e.push_back(g);
  }
  return Model(e);
}

std::vector<MeshStrategyResult> Compare(const normuon_tools::ModelShapes& model,
                                        const MeshOptions& o) {
  Machine machine;
  machine.kernel_us = 4.0;
  KernelRates rates;
  absl::StatusOr<std::vector<MeshStrategyResult>> r =
      CompareMeshStrategies(model, o, machine, rates);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok() || r->size() != 4) return std::vector<MeshStrategyResult>(4);
  return *r;
}

MeshOptions Options(int world, int tp) {
  MeshOptions o;
  o.world = world;
  o.tp = tp;
  return o;
}

int64_t MatrixElements(const normuon_tools::ModelShapes& m) { return m.matrix_elements(); }

TEST(MeshModelTest, StrategiesComeInTheirDocumentedOrder) {
  const auto r = Compare(SmallModel(), Options(16, 4));
  EXPECT_EQ(r[0].strategy, MeshStrategy::kGatherToOwner);
  EXPECT_EQ(r[1].strategy, MeshStrategy::kDuplicatedTp);
  EXPECT_EQ(r[2].strategy, MeshStrategy::kGramAllReduceTp);
  EXPECT_EQ(r[3].strategy, MeshStrategy::kSplitGram);
}

TEST(MeshModelTest, DuplicatedNsDoesTpTimesTheFlopsOfGatherToOwner) {
  for (int tp : {1, 2, 4}) {
    const auto r = Compare(SmallModel(), Options(16, tp));
    EXPECT_NEAR(r[1].total_flops, tp * r[0].total_flops, 1e-9 * r[0].total_flops) << tp;
  }
}

TEST(MeshModelTest, GatherToOwnerMovesEveryPieceNotOnTheOwnerThereAndBack) {
  // Every rank holds elements / 16 of every matrix; the owner already has one piece.
  const auto model = SmallModel();
  const auto r = Compare(model, Options(16, 4));
  EXPECT_EQ(r[0].total_bytes, 2 * MatrixElements(model) * 15 / 16 * 2);
}

TEST(MeshModelTest, DuplicatedMovesTheDpGatherTwiceAndTheTpAllGatherOnce) {
  const auto model = SmallModel();
  const int tp = 4, dp = 4;
  const auto r = Compare(model, Options(tp * dp, tp));
  const int64_t e = MatrixElements(model), wire = 2;
  EXPECT_EQ(r[1].total_bytes, 2 * e * (dp - 1) / dp * wire + e * (tp - 1) * wire);
}

TEST(MeshModelTest, GramAllReduceAddsStepsRingAllReducesOfTheGramMatrixPerMatrix) {
  // Each matrix's TP split is along its long side (or both sides are equal), so g = 256 for all.
  const auto model = SmallModel();
  const int tp = 4, dp = 4;
  const auto r = Compare(model, Options(tp * dp, tp));
  const int64_t e = MatrixElements(model), wire = 2, g = 256;
  const int64_t per_allreduce = tp * (2 * (tp - 1) * g * g * wire / tp);
  EXPECT_EQ(r[2].total_bytes, 2 * e * (dp - 1) / dp * wire + 8 * 5 * per_allreduce);
  EXPECT_GT(r[2].allreduce_ms, 0.0);
  EXPECT_DOUBLE_EQ(r[2].exposed_comm_ms, r[2].before_ms + r[2].allreduce_ms + r[2].after_ms);
}

TEST(MeshModelTest, WithOneTpRankDuplicationIsGatherToOwner) {
  const auto r = Compare(SmallModel(), Options(8, 1));
  EXPECT_EQ(r[1].total_bytes, r[0].total_bytes);
  EXPECT_DOUBLE_EQ(r[1].total_flops, r[0].total_flops);
  EXPECT_DOUBLE_EQ(r[1].step_ms, r[0].step_ms);
  EXPECT_EQ(r[1].busy_ranks, r[0].busy_ranks);
}

TEST(MeshModelTest, IdleRanksAreThoseWithoutMatrices) {
  // 8 matrices on 16 ranks: gather-to-owner keeps 8 busy; duplicated NS keeps tp ranks busy per
  // data-parallel index that holds a matrix (4 indices x 4).
  const auto r = Compare(SmallModel(), Options(16, 4));
  EXPECT_EQ(r[0].busy_ranks, 8);
  EXPECT_EQ(r[0].idle_ranks, 8);
  EXPECT_EQ(r[1].busy_ranks, 16);
  EXPECT_EQ(r[1].idle_ranks, 0);
  for (const auto& s : r) EXPECT_EQ(s.busy_ranks + s.idle_ranks, 16);
}

TEST(MeshModelTest, SplitGramWithOneRankPerMatrixIsGramOnTheOwner) {
  MeshOptions o = Options(16, 4);
  o.split_k = 1;
  o.ns_cost = sharding::GramDefaultCost();
  const auto r = Compare(SmallModel(), o);
  EXPECT_EQ(r[3].split_k, 1);
  EXPECT_NEAR(r[3].total_flops, r[0].total_flops, 1e-9 * r[0].total_flops);
  EXPECT_EQ(r[3].total_bytes, r[0].total_bytes);
  EXPECT_EQ(r[3].allreduce_ms, 0.0);
}

TEST(MeshModelTest, SplitGramPicksTheFastestGroupSize) {
  MeshOptions o = Options(16, 4);
  const auto best = Compare(SmallModel(), o);
  for (int k : {1, 2, 4, 8, 16}) {
    o.split_k = k;
    const auto fixed = Compare(SmallModel(), o);
    EXPECT_EQ(fixed[3].split_k, k);
    EXPECT_LE(best[3].step_ms, fixed[3].step_ms) << k;
  }
}

TEST(MeshModelTest, SplitGramRankFlopsSumToTheGramCountAndSplitTheBlockWork) {
  const NsCost gram = sharding::GramDefaultCost();
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{256, 1024}, {4096, 1024}}) {
    const SplitGramFlops one = SplitGramRankFlops(rows, cols, 1, gram);
    EXPECT_DOUBLE_EQ(one.block + one.replicated, sharding::NsFlops(rows, cols, gram));
    const SplitGramFlops four = SplitGramRankFlops(rows, cols, 4, gram);
    EXPECT_DOUBLE_EQ(four.block * 4, one.block);
    EXPECT_DOUBLE_EQ(four.replicated, one.replicated);
    EXPECT_EQ(four.allreduces, 2);  // the start and one restart
  }
}

TEST(ClusterExchangeTest, AccumulatedMessagesTakeAsLongAsTheSameFlows) {
  // Ranks 0-3 on node 0, 4-7 on node 1: intra- and inter-node messages, one pair split in two.
  const std::vector<Flow> flows = {{0, 1, 4000000}, {2, 5, 1000000}, {6, 1, 3000000},
                                   {3, 0, 500000}};
  for (LinkModel lm : {LinkModel::kPort, LinkModel::kPeer}) {
    Machine m;
    m.gpus_per_node = 4;
    m.link_model = lm;
    ClusterExchange x(8, m);
    for (const Flow& f : flows) {
      if (f.src == 6) {
        x.Add(f.src, f.dst, f.bytes / 3);
        x.Add(f.src, f.dst, f.bytes - f.bytes / 3);
      } else {
        x.Add(f.src, f.dst, f.bytes);
      }
    }
    x.Add(2, 2, 1000000000);  // to itself: nothing moves
    EXPECT_DOUBLE_EQ(x.Seconds(), ClusterExchangeSeconds(flows, 8, m)) << LinkModelName(lm);
    EXPECT_EQ(x.total_bytes(), 8500000);
    EXPECT_EQ(x.received(1), 7000000);
    EXPECT_EQ(x.sent(2), 1000000);
  }
}

TEST(MeshModelTest, OwnerTimeIsItsNsPlusUnpackingWhatTheGatherBrought) {
  // One 256 x 1024 matrix on 4 ranks (tp 1): rank 0 owns it and receives 3 segments of
  // 256 x 256 bf16. Default rates: 600 TFLOP/s, copies at 3000 GB/s; 4 us per kernel.
  const auto r = Compare(Model({Matrix("w", 256, 1024)}), Options(4, 1));
  const double ns_flops = 5.0 * (4.0 * 256 * 256 * 1024 + 2.0 * 256 * 256 * 256);
  const double received = 3.0 * 256 * 256 * 2;
  const double want_s = ns_flops / 600e12 + 15 * 4e-6  // 5 iterations x 3 products
                        + 2 * 3 * 4e-6                  // unpack and pack per segment
                        + 2 * (2 * received) / 3000e9;  // copy in and out (read + write)
  EXPECT_NEAR(r[0].ns_ms, want_s * 1e3, 1e-9);
  EXPECT_DOUBLE_EQ(r[0].step_ms, r[0].before_ms + r[0].ns_ms + r[0].after_ms);
}

TEST(MeshModelTest, RowParallelNamesFollowMegatron) {
  EXPECT_TRUE(IsRowParallel("layers.3.self_attn.o_proj.weight"));
  EXPECT_TRUE(IsRowParallel("layers.3.mlp.down_proj.weight"));
  EXPECT_TRUE(IsRowParallel("h.0.mlp.c_proj.weight"));
  EXPECT_FALSE(IsRowParallel("layers.3.mlp.up_proj.weight"));
  EXPECT_FALSE(IsRowParallel("h.0.attn.c_attn.weight"));
}

TEST(MeshModelTest, BadOptionsAreRejectedNamingTheField) {
  Machine machine;
  KernelRates rates;
  auto error = [&](MeshOptions o) {
    auto r = CompareMeshStrategies(SmallModel(), o, machine, rates);
    return r.ok() ? std::string("ok") : std::string(r.status().message());
  };
  EXPECT_NE(error(Options(12, 8)).find("tp = 8"), std::string::npos);
  MeshOptions o = Options(16, 4);
  o.split_k = 3;
  EXPECT_NE(error(o).find("split_k = 3"), std::string::npos);
  o.split_k = 32;
  EXPECT_NE(error(o).find("split_k = 32"), std::string::npos);
  o = Options(16, 4);
  o.gram_cost = NsCost{};
  EXPECT_NE(error(o).find("gram"), std::string::npos);
  o = Options(16, 4);
  o.gram_cost.restarts = {9};
  EXPECT_NE(error(o).find("ns restarts"), std::string::npos);
  o = Options(16, 4);
  o.wire_bytes = 3;
  EXPECT_NE(error(o).find("wire_bytes"), std::string::npos);
  auto empty = CompareMeshStrategies(Model({}), Options(16, 4), machine, rates);
  EXPECT_FALSE(empty.ok());
}

TEST(MeshModelTest, Gpt2SmallShapeListGivesTheIssuesFlopTotals) {
  absl::StatusOr<normuon_tools::ModelShapes> m = normuon_tools::LoadModel("gpt2-124m", "");
  ASSERT_TRUE(m.ok()) << m.status();
  NsCost sym = sharding::GramDefaultCost();
  sym.symmetric = true;
  double standard = 0, gram = 0, gram_sym = 0;
  for (const auto& e : m->entries) {
    if (e.kind != normuon::ParamKind::kMatrix) continue;
    standard += sharding::NsFlops(e.rows, e.cols, NsCost{});
    gram += sharding::NsFlops(e.rows, e.cols, sharding::GramDefaultCost());
    gram_sym += sharding::NsFlops(e.rows, e.cols, sym);
  }
  EXPECT_NEAR(standard * 1e-12, 1.52, 0.005);
  EXPECT_NEAR(gram * 1e-12, 1.10, 0.005);
  EXPECT_NEAR(gram_sym * 1e-12, 0.70, 0.005);
}

}  // namespace
}  // namespace normuon::plan
