// Tests of tools/plan/step_model: the static plan against the sharding library it must agree
// with, the optimizer-state bytes, the rate tables, the link models, and the simulation on cases
// small enough to work out by hand (the expected times below are derived in the comments, event
// by event, from the byte conventions of step_model.h).
#include "tools/plan/step_model.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sharding/buckets.h"
#include "sharding/ns_cost.h"
#include "sharding/plan.h"
#include "tools/common/api_flags.h"
#include "tools/common/model_layout.h"
#include "tools/model_shapes.h"

namespace normuon::plan {
namespace {

normuon_tools::ModelShapes Parse(const std::string& text) {
  absl::StatusOr<normuon_tools::ModelShapes> m = normuon_tools::ParseModelShapes(text);
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

normuon_tools::ModelShapes Load(const std::string& name) {
  absl::StatusOr<normuon_tools::ModelShapes> m = normuon_tools::LoadModel(name, "");
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

// The hand-computable machine: 1 byte of any memory-bound kernel takes 1 us (1e6 B/s), 64 bytes
// cross a link in 1 us plus 1 us of latency, and a 4 x 8 Newton-Schulz (3200 FLOPs) takes
// 1000 us. No kernel overhead, so every time below is a sum of these.
SimOptions HandMachine(MachineKind kind = MachineKind::kCluster) {
  SimOptions o;
  o.machine.kind = kind;
  o.machine.gpus_per_node = 8;
  o.machine.intra = {0.064, 1.0};
  o.machine.inter = {0.064, 1.0};
  o.machine.kernel_us = 0.0;
  o.machine.backward_shares_compute = false;
  o.machine.cores = 1;
  o.machine.blas_threads = 1;
  o.rates.mem_gbps = 1e-3;
  o.rates.ns.set_default_tflops(3.2e-6);
  return o;
}

StepPlan MakePlan(const normuon_tools::ModelShapes& m, int world, normuon_schedule_t s,
                  int64_t wire = 4, int64_t bucket_bytes = int64_t{32} << 20,
                  sharding::OwnerPolicy policy = sharding::OwnerPolicy::kRoundRobin) {
  PlanOptions o;
  o.world = world;
  o.schedule = s;
  o.wire_bytes = wire;
  o.bucket_bytes = bucket_bytes;
  o.policy = policy;
  absl::StatusOr<StepPlan> p = BuildStepPlan(m, o);
  EXPECT_TRUE(p.ok()) << p.status();
  return *p;
}

double StepMs(const StepPlan& plan, const SimOptions& o) {
  absl::StatusOr<SimResult> r = SimulateStep(plan, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->step_ms : -1.0;
}

constexpr double kTol = 1e-9;  // ms

// ---------------------------------------------------------------------------------------------
// Hand-computed simulations.

// One 4 x 8 matrix on two ranks (rows 0-1 on rank 0, 2-3 on rank 1), fp32 wire; owner rank 0.
// Per rank: blend 16 elements * 12 B = 192 us; gather: rank 1's 64 B -> 1 + 1 = 2 us; compute on
// rank 0: unpack + pack 2 * 128 B = 256 us, NS 1000 us; scatter 2 us; stats 16 * 4 + 2 * 16 =
// 96 us; all-reduce of 2 * 4 + 6 * 2 = 20 floats (80 B): 2 * (1/2) * 80 B = 1.25 us + 2 * 1 *
// 1 us = 3.25 us; norms 4 rows * 8 B = 32 us; commit 16 * 24 + 2 * 8 = 400 us.
// Timeline: 192 -> gather 194 -> compute 1450 -> scatter 1452 -> stats 1548 -> all-reduce
// 1551.25 -> norms 1583.25 -> commit 1983.25 us, for every schedule (one bucket either way).
TEST(SimulateTest, OneMatrixTwoRanksCluster) {
  const auto m = Parse("w 4x8 matrix\n");
  const SimOptions o = HandMachine();
  for (normuon_schedule_t s :
       {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX, NORMUON_SCHEDULE_BUCKETED}) {
    SCOPED_TRACE(normuon_tools::ScheduleName(s));
    const StepPlan plan = MakePlan(m, 2, s);
    ASSERT_EQ(plan.buckets.size(), 1u);
    EXPECT_EQ(plan.matrices[0].owner, 0);
    absl::StatusOr<SimResult> r = SimulateStep(plan, o);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_NEAR(r->step_ms, 1.98325, kTol);
    ASSERT_EQ(r->ranks.size(), 2u);
    EXPECT_NEAR(r->ranks[0].step_ms, 1.98325, kTol);
    EXPECT_NEAR(r->ranks[1].step_ms, 1.98325, kTol);
    const PhaseTimes& p0 = r->ranks[0].phases;
    EXPECT_NEAR(p0.blend, 0.192, kTol);
    EXPECT_NEAR(p0.gather, 0.002, kTol);
    EXPECT_NEAR(p0.compute, 1.256, kTol);
    EXPECT_NEAR(p0.scatter, 0.002, kTol);
    EXPECT_NEAR(p0.stats, 0.096, kTol);
    EXPECT_NEAR(p0.reduce, 0.00325 + 0.032, kTol);
    EXPECT_NEAR(p0.commit, 0.400, kTol);
    EXPECT_NEAR(p0.adamw, 0.0, kTol);
    // Rank 0 waits 2 us for each exchange; rank 1 also waits for rank 0's Newton-Schulz inside
    // the scatter (from 194 to 1452 us).
    EXPECT_NEAR(p0.exposed_comm, 0.004, kTol);
    EXPECT_NEAR(r->ranks[1].phases.exposed_comm, 0.002 + 1.258, kTol);
    EXPECT_NEAR(r->ranks[1].phases.scatter, 1.258, kTol);
  }
}

// The same matrix on two in-process ranks sharing one core. Blends: 2 x 192 us of work on one
// core -> both end at 384. Gather: rank 0 copies 64 B (128 us), rank 1 nothing -> 512. Rank 0's
// compute 1256 us alone -> 1768. Scatter: rank 1 copies 128 us -> 1896. Stats: 2 x 96 shared ->
// 2088. All-reduce (20 floats, 80 B): one thread sums (2 + 1) * 80 B = 240 us -> 2328, both copy
// 160 us shared -> 2648. Norms 2 x 32 -> 2712. Commits 2 x 400 -> 3512 us.
TEST(SimulateTest, OneMatrixTwoRanksInProcessOneCore) {
  const auto m = Parse("w 4x8 matrix\n");
  const SimOptions o = HandMachine(MachineKind::kCpuInprocess);
  for (normuon_schedule_t s : {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX}) {
    SCOPED_TRACE(normuon_tools::ScheduleName(s));
    EXPECT_NEAR(StepMs(MakePlan(m, 2, s), o), 3.512, kTol);
  }
}

// The same with a fixed 50 us per collective (Machine::collective_us, ranks that are processes):
// the gather, the scatter and the all-reduce are each on the critical path: 3512 + 3 * 50 us.
TEST(SimulateTest, OneMatrixTwoRanksInProcessCollectiveTime) {
  const auto m = Parse("w 4x8 matrix\n");
  SimOptions o = HandMachine(MachineKind::kCpuInprocess);
  o.machine.collective_us = 50.0;
  for (normuon_schedule_t s : {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX}) {
    SCOPED_TRACE(normuon_tools::ScheduleName(s));
    EXPECT_NEAR(StepMs(MakePlan(m, 2, s), o), 3.662, kTol);
  }
}

// Two 4 x 8 matrices on two ranks.
// Sequential: one bucket, owners by round robin over (size, index): matrix 0 -> rank 0,
// matrix 1 -> rank 1. Blend 32 * 12 = 384 -> gather (each sends and receives 64 B) 386 ->
// compute 1256 on both -> 1642 -> scatter 1644 -> stats 32 * 4 + 4 * 16 = 192 -> 1836 ->
// all-reduce of 2 * 8 + 12 floats (112 B): 1.75 + 2 us -> 1839.75 -> norms 8 * 8 = 64 ->
// 1903.75 -> commit 32 * 24 + 4 * 8 = 800 -> 2703.75 us.
// Per matrix: bucket 0 = matrix 1 (owner rank 0), bucket 1 = matrix 0 (owner rank 1).
// Blends 0-192, 192-384; gather(0) 192-194; gather(1) 384-386; rank 0 computes bucket 0
// 384-1640, rank 1 bucket 1 386-1642 (idle 384-386); scatter(0) 1640-1642, scatter(1)
// 1642-1644; stats: rank 0 1642-1738, 1738-1834; rank 1 1642-1738, 1738-1834; all-reduce
// -> 1837.75; norms -> 1901.75; commit -> 2701.75 us.
TEST(SimulateTest, TwoMatricesTwoRanksPipelineBeatsSequential) {
  const auto m = Parse("a 4x8 matrix\nb 4x8 matrix\n");
  const SimOptions o = HandMachine();
  const StepPlan seq = MakePlan(m, 2, NORMUON_SCHEDULE_SEQUENTIAL);
  EXPECT_EQ(seq.matrices[0].owner, 0);
  EXPECT_EQ(seq.matrices[1].owner, 1);
  const StepPlan pm = MakePlan(m, 2, NORMUON_SCHEDULE_PER_MATRIX);
  ASSERT_EQ(pm.buckets.size(), 2u);
  EXPECT_EQ(pm.buckets[0].matrices, std::vector<int>{1});
  EXPECT_EQ(pm.matrices[1].owner, 0);
  EXPECT_EQ(pm.matrices[0].owner, 1);
  EXPECT_NEAR(StepMs(seq, o), 2.70375, kTol);
  EXPECT_NEAR(StepMs(pm, o), 2.70175, kTol);
}

// The backward pass of issue 9 on the per-matrix case above: layers h.1 (matrix 1, bucket 0)
// then h.0 (matrix 0, bucket 1), 5000 us each, not competing for the device.
// At 5000 bucket 0 is ready: blend 5192, gather(0) 5194, rank 0 computes it until 6450. The
// comm order puts gather(1) before scatter(0), so both wait for bucket 1. At 10000 (the last
// gradient) blend(1) -> 10192, gather(1) -> 10194, scatter(0) -> 10196; rank 1 computes bucket 1
// 10194-11450, then stats(0) and stats(1) -> 11642; rank 0: stats(0) 10196-10292, scatter(1)
// 11450-11452, stats(1) -> 11548. All-reduce (both in at 11642) -> 11645.75, norms 11709.75,
// commit 12509.75: 2509.75 us after the last gradient, against 2701.75 without a backward.
TEST(SimulateTest, BackwardOverlapPerMatrix) {
  const auto m = Parse("h.0.a 4x8 matrix\nh.1.b 4x8 matrix\n");
  SimOptions o = HandMachine();
  o.backward_ms_per_layer = 5.0;
  o.layers = normuon_tools::BackwardLayers(m);
  ASSERT_EQ(o.layers, (std::vector<std::vector<int>>{{1}, {0}}));
  const StepPlan pm = MakePlan(m, 2, NORMUON_SCHEDULE_PER_MATRIX);
  absl::StatusOr<SimResult> r = SimulateStep(pm, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->backward);
  EXPECT_NEAR(r->backward_ms, 10.0, kTol);
  EXPECT_NEAR(r->step_ms, 2.50975, kTol);
  EXPECT_NEAR(r->ranks[0].last_grad_ms, 10.0, kTol);
  EXPECT_NEAR(r->ranks[0].end_ms, 12.50975, kTol);
  // Sequential starts nothing before step: everything is exposed.
  const StepPlan seq = MakePlan(m, 2, NORMUON_SCHEDULE_SEQUENTIAL);
  absl::StatusOr<SimResult> rs = SimulateStep(seq, o);
  ASSERT_TRUE(rs.ok());
  EXPECT_NEAR(rs->step_ms, 2.70375, kTol);
}

// On a GPU the backward's kernels share the device with the optimizer's (processor sharing).
// One rank, per-matrix, layers h.1 (bucket 0) then h.0 (bucket 1), 1000 us each; per bucket:
// blend 32 * 12 = 384 us, Newton-Schulz 1000 us, stats 32 * 4 + 4 * 16 = 192 us.
// Shared: layer h.1 ends at 1000; blend(0) and layer h.0 then run at half speed: the blend ends
// at 1768 (layer: 616 us of work left), Newton-Schulz(0) shares with the layer until it ends at
// 3000 (the last gradient; 384 us of Newton-Schulz left) -> 3384. Then blend(1) 3768,
// compute(1) 4768, stats 4960 and 5152, norms 8 * 8 -> 5216, commit 64 * 24 + 8 * 8 -> 6816:
// 3816 us exposed. Not shared: the backward ends at 2000, Newton-Schulz(0) at 2384, and the same
// chain follows: 3816 us again, after a shorter backward.
TEST(SimulateTest, BackwardSharingTheDevice) {
  const auto m = Parse("h.0.w 4x8 matrix\nh.1.w 4x8 matrix\n");
  SimOptions o = HandMachine();
  o.machine.backward_shares_compute = true;
  o.backward_ms_per_layer = 1.0;
  o.layers = normuon_tools::BackwardLayers(m);
  const StepPlan pm = MakePlan(m, 1, NORMUON_SCHEDULE_PER_MATRIX);
  absl::StatusOr<SimResult> r = SimulateStep(pm, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->backward_ms, 3.0, kTol);
  EXPECT_NEAR(r->step_ms, 3.816, kTol);
  o.machine.backward_shares_compute = false;
  absl::StatusOr<SimResult> alone = SimulateStep(pm, o);
  ASSERT_TRUE(alone.ok());
  EXPECT_NEAR(alone->backward_ms, 2.0, kTol);
  EXPECT_NEAR(alone->step_ms, 3.816, kTol);
}

// ---------------------------------------------------------------------------------------------
// Properties.

// One rank, no communication: a pipeline does the same kernels as the sequential schedule, one
// after another, so every schedule takes the same time.
TEST(SimulateTest, OneRankAllSchedulesEqual) {
  const auto m = Load("tiny");
  SimOptions o;
  o.machine.kernel_us = 0.0;
  const double seq = StepMs(MakePlan(m, 1, NORMUON_SCHEDULE_SEQUENTIAL, 2), o);
  EXPECT_GT(seq, 0.0);
  EXPECT_NEAR(StepMs(MakePlan(m, 1, NORMUON_SCHEDULE_PER_MATRIX, 2), o), seq, 1e-9);
  EXPECT_NEAR(StepMs(MakePlan(m, 1, NORMUON_SCHEDULE_BUCKETED, 2, 1 << 16), o), seq, 1e-9);
}

// Where the pipeline has work to overlap (two ranks, equal matrices, two per bucket so both
// ranks compute in every bucket, communication comparable to compute), sequential >= pipelined.
// Not a theorem: per-matrix buckets pay the latency of 16 exchanges instead of 2, one after
// another on the comm thread, and here lose to sequential (checked as such below).
TEST(SimulateTest, SequentialNotFasterThanPipelinedWhenBalanced) {
  std::string text;
  for (int i = 0; i < 8; ++i) absl::StrAppend(&text, "m", i, " 256x256 matrix\n");
  const auto m = Parse(text);
  SimOptions o;
  o.machine.intra = {20.0, 5.0};
  o.rates.ns.set_default_tflops(50.0);
  const double seq = StepMs(MakePlan(m, 2, NORMUON_SCHEDULE_SEQUENTIAL, 2), o);
  const double bucketed =
      StepMs(MakePlan(m, 2, NORMUON_SCHEDULE_BUCKETED, 2, 2 * 256 * 256 * 2), o);
  const double per_matrix = StepMs(MakePlan(m, 2, NORMUON_SCHEDULE_PER_MATRIX, 2), o);
  EXPECT_LT(bucketed, seq);
  EXPECT_GT(per_matrix, seq);
  // And on the in-process machine, where only two cores exist anyway.
  SimOptions cpu = HandMachine(MachineKind::kCpuInprocess);
  cpu.machine.cores = 2;
  cpu.rates.ns.set_default_tflops(0.01);
  cpu.rates.mem_gbps = 2.0;
  const double cseq = StepMs(MakePlan(m, 2, NORMUON_SCHEDULE_SEQUENTIAL, 4), cpu);
  const double cbuck = StepMs(MakePlan(m, 2, NORMUON_SCHEDULE_BUCKETED, 4, 2 * 256 * 256 * 4), cpu);
  EXPECT_LE(cbuck, cseq * (1.0 + 1e-12));
}

// The pipelined schedules gather ahead until the buckets in flight hold at least `world`
// matrices (sharding/pipeline_order.h), so with one matrix per bucket and many ranks every rank
// still has a Newton-Schulz to run: with 8 equal matrices on 8 ranks and free communication,
// per-matrix takes one Newton-Schulz time, as sequential does (not 4 rounds, as a pipeline of
// depth two would).
TEST(SimulateTest, PerMatrixPipelineKeepsEveryRankBusy) {
  std::string text;
  for (int i = 0; i < 8; ++i) absl::StrAppend(&text, "m", i, " 512x512 matrix\n");
  const auto m = Parse(text);
  SimOptions o;
  o.machine.intra = {1e6, 0.0};
  o.machine.kernel_us = 0.0;
  o.rates.mem_gbps = 1e9;
  o.rates.ns.set_default_tflops(1.0);
  const double ns_ms = sharding::Ns5Flops(512, 512) / 1e12 * 1e3;
  const double seq = StepMs(MakePlan(m, 8, NORMUON_SCHEDULE_SEQUENTIAL, 2), o);
  const double pm = StepMs(MakePlan(m, 8, NORMUON_SCHEDULE_PER_MATRIX, 2), o);
  EXPECT_NEAR(seq, ns_ms, 0.01 * ns_ms);
  EXPECT_NEAR(pm, ns_ms, 0.01 * ns_ms);
}

// A rank's step time never exceeds the maximum, and the all-reduce keeps ranks within their
// local tails of each other.
TEST(SimulateTest, MaxOverRanks) {
  const auto m = Load("gpt2-124m");
  SimOptions o;
  for (normuon_schedule_t s : {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_BUCKETED}) {
    const StepPlan plan = MakePlan(m, 4, s, 2);
    absl::StatusOr<SimResult> r = SimulateStep(plan, o);
    ASSERT_TRUE(r.ok());
    double mx = 0.0;
    for (const RankTiming& t : r->ranks) mx = std::max(mx, t.step_ms);
    EXPECT_EQ(mx, r->step_ms);
  }
}

TEST(SimulateTest, RejectsBadMachineAndRates) {
  const auto m = Parse("w 4x8 matrix\n");
  const StepPlan plan = MakePlan(m, 2, NORMUON_SCHEDULE_SEQUENTIAL);
  SimOptions o;
  o.rates.mem_gbps = 0.0;
  EXPECT_NE(SimulateStep(plan, o).status().message().find("mem_gbps"), std::string::npos);
  o = SimOptions();
  o.rates.ns.set_default_tflops(-1.0);
  EXPECT_NE(SimulateStep(plan, o).status().message().find("ns_tflops"), std::string::npos);
  o = SimOptions();
  o.machine.inter.gbps = 0.0;
  EXPECT_NE(SimulateStep(plan, o).status().message().find("inter_gbps"), std::string::npos);
  o = SimOptions();
  o.machine.intra.latency_us = -1.0;
  EXPECT_NE(SimulateStep(plan, o).status().message().find("intra_latency_us"), std::string::npos);
  o = SimOptions();
  o.machine.kind = MachineKind::kCpuInprocess;
  o.machine.cores = 0;
  EXPECT_NE(SimulateStep(plan, o).status().message().find("cores"), std::string::npos);
  o = SimOptions();
  o.backward_ms_per_layer = 1.0;
  o.layers = {{7}};
  EXPECT_NE(SimulateStep(plan, o).status().message().find("layers"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Links.

TEST(LinkTest, PortAndPeerModels) {
  Machine m;
  m.gpus_per_node = 2;
  m.intra = {1.0, 1.0};   // 1 GB/s: 1000 bytes = 1 us
  m.inter = {0.5, 10.0};  // 1000 bytes = 2 us
  // Rank 0 receives 1000 B from rank 1 (same node) and 1000 B from ranks 2 and 3 (other node).
  const std::vector<Flow> flows{{1, 0, 1000}, {2, 0, 1000}, {3, 0, 1000}};
  m.link_model = LinkModel::kPort;
  // Rank 0: intra 1 + 1 = 2 us; inter 10 + 2000 B / 0.5 GB/s = 14 us; ranks 2, 3 send 1000 B: 12.
  EXPECT_NEAR(ClusterExchangeSeconds(flows, 4, m), 14e-6, 1e-15);
  m.link_model = LinkModel::kPeer;
  EXPECT_NEAR(ClusterExchangeSeconds(flows, 4, m), 12e-6, 1e-15);
  EXPECT_EQ(ClusterExchangeSeconds({}, 4, m), 0.0);
}

TEST(LinkTest, AllReduce) {
  Machine m;
  m.gpus_per_node = 8;
  m.intra = {1.0, 1.0};
  m.inter = {0.5, 10.0};
  EXPECT_EQ(ClusterAllReduceSeconds(1000, 1, m), 0.0);
  // 4 ranks in one node: 2 * 3/4 * 1000 B / 1 GB/s = 1.5 us + 2 * 2 * 1 us.
  EXPECT_NEAR(ClusterAllReduceSeconds(1000, 4, m), 5.5e-6, 1e-15);
  // 16 ranks over two nodes: 2 * 15/16 * 1000 / 0.5 GB/s = 3.75 us + 2 * 4 * 10 us.
  EXPECT_NEAR(ClusterAllReduceSeconds(1000, 16, m), 83.75e-6, 1e-15);
}

// ---------------------------------------------------------------------------------------------
// The static plan agrees with the sharding library.

// Every rank's per-bucket sends and receives, owned matrices and totals equal what
// MakeRankPlanForMatrices gives for that rank over the whole bucket, with the runtime's buckets
// and owners (sequential: one bucket in reverse order; otherwise MakeBuckets).
TEST(PlanTest, BytesEqualTheShardingPlan) {
  for (const char* name : {"tiny", "gpt2-124m"}) {
    const auto model = Load(name);
    std::vector<sharding::MatrixShape> shapes;
    for (const auto& e : model.entries) {
      if (e.kind == ParamKind::kMatrix) shapes.push_back({e.name, e.rows, e.cols});
    }
    for (int world : {1, 2, 3, 5, 8}) {
      for (normuon_schedule_t s :
           {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX, NORMUON_SCHEDULE_BUCKETED}) {
        for (auto policy :
             {sharding::OwnerPolicy::kRoundRobin, sharding::OwnerPolicy::kCostBalanced}) {
          for (int64_t wire : {2, 4}) {
            SCOPED_TRACE(absl::StrCat(name, " world ", world, " ", normuon_tools::ScheduleName(s),
                                      " ", sharding::OwnerPolicyName(policy), " wire ", wire));
            const int64_t bucket = 3 << 20;
            const StepPlan plan = MakePlan(model, world, s, wire, bucket, policy);
            const std::vector<std::vector<int>> members = *sharding::ScheduleBuckets(
                shapes, wire,
                s == NORMUON_SCHEDULE_SEQUENTIAL  ? sharding::BucketRule::kAll
                : s == NORMUON_SCHEDULE_PER_MATRIX ? sharding::BucketRule::kPerMatrix
                                            : sharding::BucketRule::kBytes,
                bucket, world);
            const std::vector<int> owners =
                *sharding::AssignOwnersPerBucket(shapes, members, world, policy);
            ASSERT_EQ(plan.buckets.size(), members.size());
            sharding::PlanInputs in;
            in.shapes = shapes;
            in.owners = owners;
            in.world = world;
            in.wire_bytes_per_element = wire;
            for (const auto& mi : plan.matrices) in.shards.push_back(mi.shards);
            std::vector<int64_t> sent(world, 0), received(world, 0);
            std::vector<std::vector<int>> owned(world);
            for (size_t b = 0; b < members.size(); ++b) {
              EXPECT_EQ(plan.buckets[b].matrices, members[b]);
              for (int r = 0; r < world; ++r) {
                in.rank = r;
                const sharding::RankPlan rp = *sharding::MakeRankPlanForMatrices(in, members[b]);
                int64_t send = 0, recv = 0;
                for (int p = 0; p < world; ++p) {
                  send += rp.gather_send_bytes[p];
                  recv += rp.gather_recv_bytes[p];
                  sent[r] += rp.gather_send_bytes[p] + rp.scatter_send_bytes[p];
                  received[r] += rp.gather_recv_bytes[p] + rp.scatter_recv_bytes[p];
                }
                EXPECT_EQ(plan.buckets[b].ranks[r].send_bytes, send) << "bucket " << b;
                EXPECT_EQ(plan.buckets[b].ranks[r].recv_bytes, recv) << "bucket " << b;
                owned[r].insert(owned[r].end(), rp.owned.begin(), rp.owned.end());
              }
              // Flows are the per-peer messages: each (src, dst) once, bytes as the plan's.
              for (const Flow& f : plan.buckets[b].gather) {
                in.rank = f.src;
                const sharding::RankPlan rp = *sharding::MakeRankPlanForMatrices(in, members[b]);
                EXPECT_EQ(rp.gather_send_bytes[f.dst], f.bytes);
              }
            }
            const int64_t slots = 4 * (2 * plan.total_rows + 6 * world);
            for (int r = 0; r < world; ++r) {
              const int64_t reduce = world > 1 ? slots : 0;
              EXPECT_EQ(plan.ranks[r].bytes_sent, sent[r] + reduce) << "rank " << r;
              EXPECT_EQ(plan.ranks[r].bytes_received, received[r] + reduce) << "rank " << r;
              EXPECT_EQ(plan.ranks[r].owned, owned[r]) << "rank " << r;
            }
            for (size_t k = 0; k < shapes.size(); ++k) EXPECT_EQ(plan.matrices[k].owner, owners[k]);
          }
        }
      }
    }
  }
}

// Optimizer state per rank: momentum (fp32, its rows x cols), v (fp32, its rows) per matrix,
// and two fp32 moments per AdamW element, on FSDP2's ceil(rows / world) split.
TEST(PlanTest, StateBytes) {
  const auto m = Parse(
      "a 10x4 matrix\n"    // world 4: 3, 3, 3, 1 rows
      "b 5x2 adamw\n"      // 2, 2, 1, 0
      "c 7 adamw\n"        // 2, 2, 2, 1
      "d 2x6 matrix\n");   // 1, 1, 0, 0
  const StepPlan plan = MakePlan(m, 4, NORMUON_SCHEDULE_BUCKETED);
  const int64_t a_rows[] = {3, 3, 3, 1}, b_rows[] = {2, 2, 1, 0}, c_rows[] = {2, 2, 2, 1},
                d_rows[] = {1, 1, 0, 0};
  for (int r = 0; r < 4; ++r) {
    SCOPED_TRACE(r);
    EXPECT_EQ(plan.ranks[r].momentum_bytes, 4 * (a_rows[r] * 4 + d_rows[r] * 6));
    EXPECT_EQ(plan.ranks[r].v_bytes, 4 * (a_rows[r] + d_rows[r]));
    EXPECT_EQ(plan.ranks[r].adam_bytes, 8 * (b_rows[r] * 2 + c_rows[r]));
    EXPECT_EQ(plan.ranks[r].state_bytes(), plan.ranks[r].momentum_bytes + plan.ranks[r].v_bytes +
                                               plan.ranks[r].adam_bytes);
  }
  EXPECT_EQ(plan.total_rows, 12);
  EXPECT_EQ(plan.slot_floats, 2 * 12 + 6 * 4);
}

TEST(PlanTest, NsFlopsAndOwnersCoverEveryMatrix) {
  const auto m = Load("gpt2-124m");
  const StepPlan plan = MakePlan(m, 5, NORMUON_SCHEDULE_BUCKETED, 2);
  double total = 0.0, want = 0.0;
  size_t owned = 0;
  for (const RankSummary& r : plan.ranks) {
    total += r.ns5_flops;
    owned += r.owned.size();
  }
  for (const MatrixInfo& mi : plan.matrices) want += sharding::Ns5Flops(mi.rows, mi.cols);
  EXPECT_EQ(owned, plan.matrices.size());
  EXPECT_NEAR(total, want, 1e-9 * want);
}

// Gram NS (sharding/ns_cost.h) on the hand machine's 4 x 8 matrix: 4 (1 + 1) 4^2 8 + 28 4^3 =
// 2816 FLOPs instead of 3200, so the compute phase is 120 us shorter and the plan's FLOPs are
// Gram's.
TEST(PlanTest, GramCostChargesGramFlops) {
  const auto m = Parse("w 4x8 matrix\n");
  PlanOptions o;
  o.world = 1;
  o.schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  o.wire_bytes = 4;
  absl::StatusOr<StepPlan> standard = BuildStepPlan(m, o);
  o.ns_cost = sharding::GramDefaultCost();
  absl::StatusOr<StepPlan> gram = BuildStepPlan(m, o);
  ASSERT_TRUE(standard.ok() && gram.ok());
  EXPECT_EQ(standard->ranks[0].ns5_flops, 3200.0);
  EXPECT_EQ(gram->ranks[0].ns5_flops, 2816.0);
  absl::StatusOr<SimResult> rs = SimulateStep(*standard, HandMachine());
  absl::StatusOr<SimResult> rg = SimulateStep(*gram, HandMachine());
  ASSERT_TRUE(rs.ok() && rg.ok());
  EXPECT_NEAR(rs->ranks[0].phases.compute - rg->ranks[0].phases.compute, 0.120, kTol);
}

TEST(PlanTest, RejectsBadOptions) {
  const auto m = Parse("w 4x8 matrix\n");
  PlanOptions o;
  o.world = 0;
  EXPECT_NE(BuildStepPlan(m, o).status().message().find("world"), std::string::npos);
  o = PlanOptions();
  o.wire_bytes = 3;
  EXPECT_NE(BuildStepPlan(m, o).status().message().find("wire_bytes"), std::string::npos);
  o = PlanOptions();
  o.bucket_bytes = 0;
  EXPECT_NE(BuildStepPlan(m, o).status().message().find("bucket_bytes"), std::string::npos);
  o = PlanOptions();
  o.ns_cost = sharding::GramDefaultCost();
  o.ns_cost.restarts = {5};
  EXPECT_NE(BuildStepPlan(m, o).status().message().find("ns restarts"), std::string::npos);
}

// A model too large for any machine here plans and simulates in reasonable time (the per-owner
// plan calls; about a second at -c opt for 1024 ranks, kept at 256 here for sanitizer builds).
TEST(PlanTest, Llama70bAt256Ranks) {
  const auto m = Load("llama-70b");
  EXPECT_EQ(m.num_matrices(), 560);
  EXPECT_EQ(m.total_elements(), 70553706496);
  const StepPlan plan = MakePlan(m, 256, NORMUON_SCHEDULE_BUCKETED, 2);
  EXPECT_EQ(plan.ranks.size(), 256u);
  SimOptions o;
  absl::StatusOr<SimResult> r = SimulateStep(plan, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->step_ms, 0.0);
}

TEST(LayersTest, AsNormuonRun) {
  EXPECT_EQ(normuon_tools::LayerOf("h.11.mlp.c_fc.weight"), 11);
  EXPECT_EQ(normuon_tools::LayerOf("model.layers.3.self_attn.q_proj.weight"), 3);
  EXPECT_EQ(normuon_tools::LayerOf("wte.weight"), -1);
  EXPECT_EQ(normuon_tools::LayerOf("xh.1.w"), -1);
  const auto m = Parse(
      "embed 10x4 matrix\n"
      "layers.0.a 4x4 matrix\n"
      "layers.0.n 4 adamw\n"
      "layers.2.b 4x4 matrix\n"
      "head 10x4 matrix\n");
  // Layers 2, 1 (empty), 0, then the rest.
  EXPECT_EQ(normuon_tools::BackwardLayers(m),
            (std::vector<std::vector<int>>{{2}, {}, {1}, {0, 3}}));
}

// ---------------------------------------------------------------------------------------------
// Rates.

TEST(RatesTest, ExactInterpolatedAndClamped) {
  NsRateTable t(7.0);
  EXPECT_EQ(t.TflopsFor(100, 100), 7.0);
  t.Add(64, 64, 1.0);
  t.Add(256, 256, 3.0);
  t.Add(256, 256, 2.0);  // the best entry of a shape wins
  EXPECT_EQ(t.TflopsFor(64, 64), 1.0);
  EXPECT_EQ(t.TflopsFor(256, 256), 3.0);
  EXPECT_EQ(t.TflopsFor(8, 8), 1.0);        // below the smallest: clamped
  EXPECT_EQ(t.TflopsFor(4096, 4096), 3.0);  // above the largest: clamped
  // 128 x 128 has 8x the FLOPs of 64 x 64, 256 x 256 64x: halfway in log(FLOPs).
  EXPECT_NEAR(t.TflopsFor(128, 128), 2.0, 1e-12);
  // Shapes of equal FLOPs: a measured one keeps its own rate, an unmeasured one the average.
  NsRateTable u;
  u.Add(3072, 768, 4.0);
  u.Add(768, 3072, 2.0);
  u.Add(64, 64, 1.0);
  EXPECT_EQ(u.TflopsFor(768, 3072), 2.0);
  EXPECT_NEAR(u.TflopsFor(4096, 8192), 3.0, 1e-12);
}

TEST(RatesTest, ReadsGoogleBenchmarkJson) {
  const std::string json = R"({
    "context": {"date": "x", "num_cpus": 2},
    "benchmarks": [
      {"name": "BM_NewtonSchulzCpu/768/768/real_time", "run_type": "iteration",
       "real_time": 100.0, "TFLOP/s": 0.05, "gemm_TFLOP/s": 0.06},
      {"name": "BM_NewtonSchulzCpu/768/768/real_time", "run_type": "iteration", "TFLOP/s": 0.07},
      {"name": "BM_NewtonSchulzCpu/768/768/real_time_mean", "run_type": "aggregate",
       "TFLOP/s": 9.0},
      {"name": "BM_NewtonSchulzCuda/4096/14336/real_time", "TFLOP/s": 500},
      {"name": "BM_Blend/1024/2048/real_time", "GB/s": 3.5},
      {"name": "BM_Copy/1024/2048/real_time", "bytes_per_second": 8.0e9},
      {"name": "BM_Other/1", "GB/s": 99},
      {"name": "BM_NewtonSchulzCpu/12/real_time", "TFLOP/s": 5}
    ]})";
  KernelRates r;
  ASSERT_TRUE(AddBenchmarkRates(json, "test.json", 0, &r).ok());
  EXPECT_EQ(r.ns.points().size(), 2u);
  EXPECT_EQ(r.ns.TflopsFor(768, 768), 0.07);
  EXPECT_EQ(r.ns.TflopsFor(4096, 14336), 500.0);
  EXPECT_EQ(r.Gbps(Kernel::kBlend), 3.5);
  EXPECT_EQ(r.Gbps(Kernel::kCopy), 8.0);
  EXPECT_EQ(r.Gbps(Kernel::kRowStats), r.mem_gbps);  // not measured
}

// The GPU benchmarks' names (bench/newton_schulz_gpu_bench, bench/elementwise_gpu_bench): only
// entries of the planner's dtype count.
TEST(RatesTest, ReadsGpuBenchmarkNamesOfOneDtype) {
  const std::string json = R"({"benchmarks": [
      {"name": "NS5/bf16/llama-8b/14336x4096/batch:2/manual_time", "TFLOP/s": 480},
      {"name": "NS5/fp32/llama-8b/14336x4096/batch:2/manual_time", "TFLOP/s": 45},
      {"name": "Blend/bf16/8192x2048/manual_time", "GB/s": 2900},
      {"name": "Blend/fp32/8192x2048/manual_time", "GB/s": 2700},
      {"name": "CommitAdamW/fp32/8192x2048/manual_time", "GB/s": 2500}]})";
  KernelRates bf16;
  ASSERT_TRUE(AddBenchmarkRates(json, "gpu.json", 2, &bf16).ok());
  EXPECT_EQ(bf16.ns.TflopsFor(14336, 4096), 480.0);
  EXPECT_EQ(bf16.Gbps(Kernel::kBlend), 2900.0);
  EXPECT_EQ(bf16.Gbps(Kernel::kCommitAdamw), 2500.0);  // AdamW has no wire dtype
  KernelRates fp32;
  ASSERT_TRUE(AddBenchmarkRates(json, "gpu.json", 4, &fp32).ok());
  EXPECT_EQ(fp32.ns.TflopsFor(14336, 4096), 45.0);
  EXPECT_EQ(fp32.Gbps(Kernel::kBlend), 2700.0);
}

TEST(RatesTest, RejectsUnusableFiles) {
  KernelRates r;
  absl::Status s = AddBenchmarkRates("{not json", "a.json", 0, &r);
  EXPECT_NE(s.message().find("a.json"), std::string::npos);
  s = AddBenchmarkRates("{\"x\": 1}", "b.json", 0, &r);
  EXPECT_NE(s.message().find("benchmarks"), std::string::npos);
  s = AddBenchmarkRates("{\"benchmarks\": [{\"name\": \"BM_X\"}]}", "c.json", 0, &r);
  EXPECT_NE(s.message().find("no usable benchmark"), std::string::npos);
}

TEST(BytesTest, Conventions) {
  EXPECT_EQ(BlendBytes(10, 2), 100);
  EXPECT_EQ(BlendBytes(10, 4), 120);
  EXPECT_EQ(RowStatsBytes(10, 2, 4), 40 + 32);
  EXPECT_EQ(FinishNormsBytes(3), 24);
  EXPECT_EQ(CommitMatrixBytes(10, 2, 2), 10 * 22 + 16);
  EXPECT_EQ(CommitAdamwBytes(10), 280);
  EXPECT_EQ(CopyBytes(5), 10);
}

}  // namespace
}  // namespace normuon::plan
