// The planner's model of one sharded optimizer step (issue 4, "Planner for scale"; issue 9, the
// planner's part of the overlap with the backward pass).
//
// Two layers, in files by job (this header includes them all):
//  1. BuildStepPlan (step_plan.h): what a step moves and computes, per rank and per bucket, for
//     a model's shape list at a world size. It does not reimplement the runtime's decisions:
//     rows come from sharding::Fsdp2Split (through tools/common/model_layout.h), buckets from
//     sharding::MakeBuckets (or the one bucket of the sequential schedule), owners from
//     sharding::AssignOwnersPerBucket and every message size from
//     sharding::MakeRankPlanForMatrices, exactly as Runtime::Finalize calls them.
//  2. SimulateStep (here; its event engine is event_engine.h): a discrete-event simulation of
//     that plan on a machine model, all ranks together. Per rank it follows
//     runtime/bucket_pipeline.h: a compute thread (blend, compute = unpack + Newton-Schulz +
//     pack, stats; blends first, then compute, then stats) and a comm thread issuing gather(0),
//     then gather(k+1), scatter(k) for k = 0..B-1; the sequential schedule runs the same stages
//     inline on the step's thread. Then the slot all-reduce, the norms, the matrix commit and
//     AdamW, as Runtime::Step orders them. A collective starts when the last rank arrives and
//     ends for all ranks together.
//
// Machine models (Machine::kind, transport_model.h):
//  - kCluster: one GPU per rank, gpus_per_node per node. Each rank's kernels run on its own GPU
//    (a processor-shared resource of capacity 1, shared with the simulated backward pass when
//    backward_shares_compute). An exchange takes, per rank, latency + max(bytes sent, bytes
//    received) / bandwidth on each link class it uses (NVLink-class inside a node,
//    InfiniBand-class across nodes; the two classes run concurrently), with the bytes summed
//    over the peers of a class (LinkModel::kPort: the GPU's port to the switch or NIC is the
//    bottleneck) or per peer (LinkModel::kPeer: point-to-point links); the exchange lasts as
//    long as its slowest rank. The slot all-reduce is modelled as NCCL's: 2 (P-1)/P bytes over
//    the slowest link class plus 2 ceil(log2 P) latencies.
//  - kCpuInprocess: the in-process group of comm/inprocess_group.cc on this machine's `cores`
//    cores. Every rank's threads share the cores (processor sharing: with more runnable work
//    than cores each job progresses at cores / demand of its speed). An exchange is each rank
//    copying what it receives once all ranks posted (memcpy at the copy rate), and ends when the
//    last copy ends; the all-reduce is one rank summing every rank's slots, then each copying
//    the sum.
//
// Kernel times (cost_model.h): Newton-Schulz = FLOPs (sharding::Ns5Flops) / the TFLOP/s of its
// shape (a table read from a Google Benchmark JSON, interpolated by FLOPs); every other kernel is
// memory bound: bytes read + bytes written (the *Bytes functions, fp32 parameters, gradients and
// state) / its GB/s. Plus, on kCluster, kernel_us per kernel launched. On kCpuInprocess the rates
// are per core (measure them with one BLAS thread).
//
// Not modelled (the README says so): NCCL's own SM use slowing compute, congestion inside the
// fabric beyond a GPU's port, the trainer's traffic, and the start skew of ranks (all start the
// step at time 0).
#ifndef NORMUON_TOOLS_PLAN_STEP_MODEL_H_
#define NORMUON_TOOLS_PLAN_STEP_MODEL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/plan/cost_model.h"
#include "tools/plan/step_plan.h"
#include "tools/plan/transport_model.h"

namespace normuon::plan {

// ---------------------------------------------------------------------------------------------
// Simulation.

struct SimOptions {
  Machine machine;
  KernelRates rates;
  // > 0: a backward pass runs first, one layer of this many ms at a time in `layers` order, and
  // each layer's matrices are marked ready as it ends (normuon_grad_ready); the step is called
  // after the last layer.
  double backward_ms_per_layer = 0.0;
  std::vector<std::vector<int>> layers;
};

// Per-phase wall times of one rank, in ms, with the runtime profile's meaning.
struct PhaseTimes {
  double blend = 0.0;      // momentum_ms
  double gather = 0.0;     // from entering the exchange to leaving it (waits included)
  double compute = 0.0;    // newton_schulz_ms: unpack + Newton-Schulz + pack
  double scatter = 0.0;
  double stats = 0.0;      // the per-bucket row statistics
  double reduce = 0.0;     // slot all-reduce + norms (the runtime adds these to row_stats_ms)
  double commit = 0.0;     // update_ms
  double adamw = 0.0;
  double exposed_comm = 0.0;  // pipelines: the compute thread idle with every bucket blended;
                              // sequential: gather + scatter
};

struct RankTiming {
  double step_ms = 0.0;      // from the step call (time 0, or the last gradient) to its end
  double end_ms = 0.0;       // absolute end of the step
  double last_grad_ms = 0.0; // with a backward pass: when its last layer ended (else 0)
  PhaseTimes phases;
};

struct SimResult {
  std::vector<RankTiming> ranks;
  double step_ms = 0.0;          // max over ranks (what normuon_run reports)
  double exposed_comm_ms = 0.0;  // max over ranks
  bool backward = false;
  double backward_ms = 0.0;      // with a backward pass: the slowest rank's backward duration
};

// Runs one step of plan on the machine. With a backward pass, step_ms is the time exposed after
// the last gradient (as normuon_run's exposed_after_last_grad_ms). Fails on invalid machine or
// rates (non-positive rates or bandwidths, cores < 1) or layers naming unknown matrices.
absl::StatusOr<SimResult> SimulateStep(const StepPlan& plan, const SimOptions& options);

}  // namespace normuon::plan

#endif  // NORMUON_TOOLS_PLAN_STEP_MODEL_H_
