// The planner's simulation of a step (step_model.h): a discrete-event simulation of every rank's
// threads over the static plan (step_plan.h).
//
// The simulation is an event queue of jobs (event_engine.h). A job either lasts a fixed time (a
// transfer on a cluster, a simulated backward layer that sleeps) or needs an amount of work on a
// shared resource (a GPU, or the cores of this machine), which it receives by processor sharing:
// while the jobs on a resource demand more than its capacity, each one progresses at its share.
// Each rank is a set of state machines (step thread, compute thread, comm thread, backward thread)
// that start jobs and wait on flags exactly where bucket_pipeline.cc and runtime.cc wait, and
// collectives wait for every rank before they start.
#include "tools/plan/step_model.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "sharding/owner_assignment.h"
#include "sharding/pipeline_order.h"
#include "tools/plan/event_engine.h"

namespace normuon::plan {
namespace {

// ---------------------------------------------------------------------------------------------
// The ranks.

// What the step's own thread does, in order (Runtime::Step; the inline stages are the
// sequential schedule's RunBuckets).
enum class OpKind {
  kBlend,
  kGather,
  kCompute,
  kScatter,
  kStats,
  kWaitPipeline,
  kAllReduce,
  kFinish,
  kCommit,
  kAdamw
};

struct Op {
  OpKind kind;
  int bucket;
};

struct RankState {
  // Pipeline flags per bucket, as BucketPipeline keeps them.
  std::vector<char> ready, blended, gathered, computed, scattered;
  std::vector<int> pending;  // matrices of each bucket not yet marked ready
  int next_blend = 0, next_compute = 0, next_stats = 0;
  bool compute_busy = false;
  bool idle_on_comm = false;
  double idle_since = 0.0;
  int comm_pos = 0;
  bool comm_busy = false;
  // The step's thread.
  bool step_called = false;
  bool all_marked = false;
  size_t main_pos = 0;
  bool main_busy = false;
  bool ended = false;
  double step_start = 0.0, end = 0.0, last_grad = 0.0;
  // The backward thread.
  int layer = 0;
  bool backward_busy = false;
  // Entry times into the current exchange and all-reduce.
  double arrive_exchange = 0.0, arrive_reduce = 0.0;
  PhaseTimes phases;  // seconds while simulating; ms in the result
};

class Simulator {
 public:
  Simulator(const StepPlan& plan, const SimOptions& options)
      : plan_(plan),
        opt_(options),
        m_(options.machine),
        world_(plan.options.world),
        nb_(static_cast<int>(plan.buckets.size())),
        pipelined_(plan.options.schedule != NORMUON_SCHEDULE_SEQUENTIAL),
        backward_(options.backward_ms_per_layer > 0.0) {}

  absl::StatusOr<SimResult> Run() {
    NORMUON_RETURN_IF_ERROR(Validate());
    Setup();
    for (int r = 0; r < world_; ++r) Poll(r);
    while (engine_.Next()) {
    }
    SimResult result;
    result.backward = backward_;
    for (int r = 0; r < world_; ++r) {
      const RankState& rs = ranks_[r];
      if (!rs.ended) {
        return absl::InternalError(absl::StrCat("simulation stalled: rank ", r,
                                                " did not finish its step (op ", rs.main_pos,
                                                ")"));
      }
      RankTiming t;
      t.step_ms = (rs.end - rs.step_start) * 1e3;
      t.end_ms = rs.end * 1e3;
      t.last_grad_ms = rs.last_grad * 1e3;
      t.phases = rs.phases;
      for (double* p : {&t.phases.blend, &t.phases.gather, &t.phases.compute, &t.phases.scatter,
                        &t.phases.stats, &t.phases.reduce, &t.phases.commit, &t.phases.adamw,
                        &t.phases.exposed_comm}) {
        *p *= 1e3;
      }
      result.step_ms = std::max(result.step_ms, t.step_ms);
      result.exposed_comm_ms = std::max(result.exposed_comm_ms, t.phases.exposed_comm);
      result.backward_ms = std::max(result.backward_ms, t.last_grad_ms);
      result.ranks.push_back(t);
    }
    return result;
  }

 private:
  bool cluster() const { return m_.kind == MachineKind::kCluster; }

  absl::Status Validate() const {
    const KernelRates& rt = opt_.rates;
    if (!(rt.mem_gbps > 0.0) || !std::isfinite(rt.mem_gbps)) {
      return absl::InvalidArgumentError(absl::StrCat("mem_gbps = ", rt.mem_gbps, ", must be > 0"));
    }
    for (int k = 0; k < kKernelCount; ++k) {
      if (!(rt.gbps[k] >= 0.0) || !std::isfinite(rt.gbps[k])) {
        return absl::InvalidArgumentError(absl::StrCat(KernelName(static_cast<Kernel>(k)),
                                                       " GB/s = ", rt.gbps[k], ", must be >= 0"));
      }
    }
    if (!(rt.ns.default_tflops() > 0.0) || !std::isfinite(rt.ns.default_tflops())) {
      return absl::InvalidArgumentError(
          absl::StrCat("ns_tflops = ", rt.ns.default_tflops(), ", must be > 0"));
    }
    if (cluster()) {
      if (m_.gpus_per_node < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("gpus_per_node = ", m_.gpus_per_node, ", must be >= 1"));
      }
      for (const auto& [name, link] : {std::pair<const char*, Link>{"intra", m_.intra},
                                       {"inter", m_.inter}}) {
        if (!(link.gbps > 0.0) || !std::isfinite(link.gbps)) {
          return absl::InvalidArgumentError(
              absl::StrCat(name, "_gbps = ", link.gbps, ", must be > 0"));
        }
        if (!(link.latency_us >= 0.0) || !std::isfinite(link.latency_us)) {
          return absl::InvalidArgumentError(
              absl::StrCat(name, "_latency_us = ", link.latency_us, ", must be >= 0"));
        }
      }
      if (!(m_.kernel_us >= 0.0) || !std::isfinite(m_.kernel_us)) {
        return absl::InvalidArgumentError(
            absl::StrCat("kernel_us = ", m_.kernel_us, ", must be >= 0"));
      }
    } else {
      if (m_.cores < 1) {
        return absl::InvalidArgumentError(absl::StrCat("cores = ", m_.cores, ", must be >= 1"));
      }
      if (m_.blas_threads < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("blas_threads = ", m_.blas_threads, ", must be >= 1"));
      }
    }
    if (!(opt_.backward_ms_per_layer >= 0.0) || !std::isfinite(opt_.backward_ms_per_layer)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "backward_ms_per_layer = ", opt_.backward_ms_per_layer, ", must be >= 0"));
    }
    if (backward_) {
      for (const std::vector<int>& layer : opt_.layers) {
        for (int k : layer) {
          if (k < 0 || k >= static_cast<int>(plan_.matrices.size())) {
            return absl::InvalidArgumentError(
                absl::StrCat("layers: matrix index ", k, " is not a matrix of the plan"));
          }
        }
      }
    }
    return absl::OkStatus();
  }

  // Seconds of a memory-bound kernel, or of kernel launches.
  double Mem(Kernel k, int64_t bytes) const {
    return static_cast<double>(bytes) / (opt_.rates.Gbps(k) * 1e9);
  }
  double Launch(int64_t kernels) const {
    return cluster() ? m_.kernel_us * 1e-6 * static_cast<double>(kernels) : 0.0;
  }

  void Setup() {
    const int64_t wire = plan_.options.wire_bytes;
    if (cluster()) {
      for (int r = 0; r < world_; ++r) compute_res_.push_back(engine_.AddResource(1.0));
    } else {
      const int cores = engine_.AddResource(static_cast<double>(m_.cores));
      compute_res_.assign(world_, cores);
    }
    blend_s_.assign(static_cast<size_t>(nb_) * world_, 0.0);
    compute_s_.assign(static_cast<size_t>(nb_) * world_, 0.0);
    stats_s_.assign(static_cast<size_t>(nb_) * world_, 0.0);
    exchange_s_.assign(nb_, 0.0);
    for (int b = 0; b < nb_; ++b) {
      const BucketPlan& bp = plan_.buckets[b];
      std::vector<int32_t> batches(world_, 0);
      for (const OwnedBatch& ob : bp.batches) {
        const double flops =
            sharding::NsFlops(ob.rows, ob.cols, plan_.options.ns_cost) * ob.count;
        At(compute_s_, b, ob.rank) += flops / (opt_.rates.ns.TflopsFor(ob.rows, ob.cols) * 1e12);
        ++batches[ob.rank];
      }
      for (int r = 0; r < world_; ++r) {
        const RankBucket& rb = bp.ranks[r];
        At(blend_s_, b, r) = Mem(Kernel::kBlend, BlendBytes(rb.elements, wire)) +
                             Launch(rb.matrices_with_rows);
        // Unpack the received rows into the owner's U, pack O's rows back (one copy each way);
        // 5 iterations x 3 GEMMs + normalization and the final cast per batch.
        At(compute_s_, b, r) += Mem(Kernel::kCopy, 2 * CopyBytes(rb.recv_bytes)) +
                                Launch(2 * int64_t{rb.recv_segments} + 17 * int64_t{batches[r]});
        At(stats_s_, b, r) = Mem(Kernel::kRowStats, RowStatsBytes(rb.elements, rb.rows, wire)) +
                             Launch(rb.matrices_with_rows);
      }
      if (cluster()) exchange_s_[b] = ClusterExchangeSeconds(bp.gather, world_, m_);
    }
    reduce_s_ = cluster() ? ClusterAllReduceSeconds(4 * plan_.slot_floats, world_, m_) : 0.0;
    const int nmat = static_cast<int>(plan_.matrices.size());
    for (int r = 0; r < world_; ++r) {
      const RankSummary& rs = plan_.ranks[r];
      finish_s_.push_back(Mem(Kernel::kRowStats, FinishNormsBytes(plan_.total_rows)) +
                          Launch(nmat));
      commit_s_.push_back(
          Mem(Kernel::kCommitMatrix, CommitMatrixBytes(rs.matrix_elements, rs.matrix_rows, wire)) +
          Launch(rs.matrices_with_rows));
      adamw_s_.push_back(Mem(Kernel::kCommitAdamw, CommitAdamwBytes(rs.adamw_elements)) +
                         Launch(rs.adamw_with_elements));
    }

    // The step thread's program.
    if (!pipelined_) {
      for (int b = 0; b < nb_; ++b) {
        for (OpKind k : {OpKind::kBlend, OpKind::kGather, OpKind::kCompute, OpKind::kScatter,
                         OpKind::kStats}) {
          ops_.push_back(Op{k, b});
        }
      }
    } else {
      ops_.push_back(Op{OpKind::kWaitPipeline, -1});
      // BucketPipeline's fixed collective order: the runtime's own rule.
      std::vector<int64_t> counts;
      for (const BucketPlan& bp : plan_.buckets) {
        counts.push_back(static_cast<int64_t>(bp.matrices.size()));
      }
      for (const sharding::PipelineCollective& c : sharding::PipelineOrder(counts, world_)) {
        comm_order_.emplace_back(c.gather, c.bucket);
      }
    }
    for (OpKind k : {OpKind::kAllReduce, OpKind::kFinish, OpKind::kCommit, OpKind::kAdamw}) {
      ops_.push_back(Op{k, -1});
    }

    collective_arrivals_.assign(2 * nb_ + 1, 0);
    copies_left_.assign(2 * nb_ + 1, 0);
    bucket_of_.assign(plan_.matrices.size(), 0);
    for (size_t k = 0; k < plan_.matrices.size(); ++k) bucket_of_[k] = plan_.matrices[k].bucket;
    ranks_.resize(world_);
    for (RankState& rs : ranks_) {
      for (std::vector<char>* v : {&rs.ready, &rs.blended, &rs.gathered, &rs.computed,
                                   &rs.scattered}) {
        v->assign(nb_, 0);
      }
      rs.pending.assign(nb_, 0);
      for (int b = 0; b < nb_; ++b) {
        rs.pending[b] = static_cast<int>(plan_.buckets[b].matrices.size());
      }
      rs.step_called = !backward_ || opt_.layers.empty();
    }
  }

  double& At(std::vector<double>& v, int b, int r) {
    return v[static_cast<size_t>(b) * world_ + r];
  }

  // A job of rank r's kernels; its wall time is added to *phase (seconds).
  void RunKernel(int r, double seconds, double width, double PhaseTimes::*phase,
                 std::function<void()> after) {
    const double start = engine_.now();
    engine_.Start(compute_res_[r], seconds, width,
                  [this, r, start, phase, after = std::move(after)] {
                    ranks_[r].phases.*phase += engine_.now() - start;
                    after();
                    Poll(r);
                  });
  }

  double NsWidth() const { return cluster() ? 1.0 : static_cast<double>(m_.blas_threads); }

  // ---- collectives: id 2b = gather b, 2b + 1 = scatter b, 2 nb = the slot all-reduce ----

  void Arrive(int r, int id) {
    RankState& rs = ranks_[r];
    (id == 2 * nb_ ? rs.arrive_reduce : rs.arrive_exchange) = engine_.now();
    if (++collective_arrivals_[id] < world_) return;
    if (cluster()) {
      const double d = id == 2 * nb_ ? reduce_s_ : exchange_s_[id / 2];
      engine_.Start(-1, d, 1.0, [this, id] { FinishCollective(id); });
      return;
    }
    // On this machine: a fixed hand-off time (Machine::collective_us), then the copies.
    if (m_.collective_us > 0.0) {
      engine_.Start(-1, m_.collective_us * 1e-6, 1.0, [this, id] { StartCopies(id); });
      return;
    }
    StartCopies(id);
  }

  // In process: once all posted, each rank copies what it receives; the all-reduce first sums
  // every rank's slots on one thread.
  void StartCopies(int id) {
    if (id == 2 * nb_) {
      const int64_t n = 4 * plan_.slot_floats;
      engine_.Start(compute_res_[0], Mem(Kernel::kCopy, (world_ + 1) * n), 1.0, [this, id, n] {
        CopyPhase(id, std::vector<int64_t>(world_, n));
      });
      return;
    }
    std::vector<int64_t> bytes(world_);
    const BucketPlan& bp = plan_.buckets[id / 2];
    for (int q = 0; q < world_; ++q) {
      bytes[q] = id % 2 == 0 ? bp.ranks[q].recv_bytes : bp.ranks[q].send_bytes;
    }
    CopyPhase(id, bytes);
  }

  void CopyPhase(int id, const std::vector<int64_t>& bytes) {
    copies_left_[id] = world_;
    for (int q = 0; q < world_; ++q) {
      engine_.Start(compute_res_[q], Mem(Kernel::kCopy, CopyBytes(bytes[q])), 1.0, [this, id] {
        if (--copies_left_[id] == 0) FinishCollective(id);
      });
    }
  }

  void FinishCollective(int id) {
    const double now = engine_.now();
    for (int r = 0; r < world_; ++r) {
      RankState& rs = ranks_[r];
      if (id == 2 * nb_) {
        rs.phases.reduce += now - rs.arrive_reduce;
        rs.main_busy = false;
        ++rs.main_pos;
        continue;
      }
      const int b = id / 2;
      const bool gather = id % 2 == 0;
      (gather ? rs.gathered : rs.scattered)[b] = 1;
      (gather ? rs.phases.gather : rs.phases.scatter) += now - rs.arrive_exchange;
      if (!pipelined_) rs.phases.exposed_comm += now - rs.arrive_exchange;
      if (pipelined_) {
        rs.comm_busy = false;
        ++rs.comm_pos;
      } else {
        rs.main_busy = false;
        ++rs.main_pos;
      }
    }
    for (int r = 0; r < world_; ++r) Poll(r);
  }

  // ---- the threads of a rank ----

  void Poll(int r) {
    bool progress = true;
    while (progress) {
      progress = TryBackward(r);
      progress = TryMain(r) || progress;
      if (pipelined_) {
        progress = TryCompute(r) || progress;
        progress = TryComm(r) || progress;
      }
    }
  }

  bool TryBackward(int r) {
    RankState& rs = ranks_[r];
    if (!backward_ || rs.backward_busy || rs.layer >= static_cast<int>(opt_.layers.size())) {
      return false;
    }
    rs.backward_busy = true;
    const double seconds = opt_.backward_ms_per_layer * 1e-3;
    // On a GPU the backward's kernels compete with the optimizer's; on CPU it is a timed wait.
    const int resource = cluster() && m_.backward_shares_compute ? compute_res_[r] : -1;
    engine_.Start(resource, seconds, 1.0, [this, r] {
      RankState& s = ranks_[r];
      for (int k : opt_.layers[s.layer]) {
        const int b = bucket_of_[k];
        if (--s.pending[b] == 0 && pipelined_) s.ready[b] = 1;
      }
      ++s.layer;
      s.backward_busy = false;
      if (s.layer == static_cast<int>(opt_.layers.size())) {
        s.last_grad = engine_.now();
        s.step_start = s.last_grad;
        s.step_called = true;
      }
      Poll(r);
    });
    return true;
  }

  bool TryMain(int r) {
    RankState& rs = ranks_[r];
    if (!rs.step_called || rs.main_busy || rs.ended) return false;
    if (rs.main_pos == ops_.size()) {
      rs.ended = true;
      rs.end = engine_.now();
      return false;
    }
    const Op op = ops_[rs.main_pos];
    auto next = [this, r] {
      ranks_[r].main_busy = false;
      ++ranks_[r].main_pos;
    };
    switch (op.kind) {
      case OpKind::kBlend:
        rs.main_busy = true;
        RunKernel(r, At(blend_s_, op.bucket, r), 1.0, &PhaseTimes::blend, next);
        return true;
      case OpKind::kCompute:
        rs.main_busy = true;
        RunKernel(r, At(compute_s_, op.bucket, r), NsWidth(), &PhaseTimes::compute, next);
        return true;
      case OpKind::kStats:
        rs.main_busy = true;
        RunKernel(r, At(stats_s_, op.bucket, r), 1.0, &PhaseTimes::stats, next);
        return true;
      case OpKind::kGather:
      case OpKind::kScatter:
        if (world_ == 1) {  // a single rank's rows are in place
          ++rs.main_pos;
          return true;
        }
        rs.main_busy = true;
        Arrive(r, 2 * op.bucket + (op.kind == OpKind::kScatter ? 1 : 0));
        return true;
      case OpKind::kWaitPipeline: {
        bool changed = false;
        if (!rs.all_marked) {  // BucketPipeline::Wait marks every bucket ready
          rs.all_marked = true;
          std::fill(rs.ready.begin(), rs.ready.end(), 1);
          changed = true;
        }
        if (rs.next_stats == nb_ && rs.comm_pos == static_cast<int>(comm_order_.size())) {
          ++rs.main_pos;
          return true;
        }
        return changed;
      }
      case OpKind::kAllReduce:
        if (world_ == 1) {
          ++rs.main_pos;
          return true;
        }
        rs.main_busy = true;
        Arrive(r, 2 * nb_);
        return true;
      case OpKind::kFinish:
        rs.main_busy = true;
        RunKernel(r, finish_s_[r], 1.0, &PhaseTimes::reduce, next);
        return true;
      case OpKind::kCommit:
        rs.main_busy = true;
        RunKernel(r, commit_s_[r], 1.0, &PhaseTimes::commit, next);
        return true;
      case OpKind::kAdamw:
        rs.main_busy = true;
        RunKernel(r, adamw_s_[r], 1.0, &PhaseTimes::adamw, next);
        return true;
    }
    return false;
  }

  // BucketPipeline::ComputeLoop: blends first, then Newton-Schulz, then row statistics.
  bool TryCompute(int r) {
    RankState& rs = ranks_[r];
    if (rs.compute_busy || rs.next_stats == nb_) return false;
    int action = 0;
    if (rs.next_blend < nb_ && rs.ready[rs.next_blend]) {
      action = 1;
    } else if (rs.next_compute < rs.next_blend && rs.gathered[rs.next_compute]) {
      action = 2;
    } else if (rs.next_stats < rs.next_compute && rs.scattered[rs.next_stats]) {
      action = 3;
    }
    if (action == 0) {
      if (rs.next_blend == nb_ && !rs.idle_on_comm) {
        rs.idle_on_comm = true;
        rs.idle_since = engine_.now();
      }
      return false;
    }
    if (rs.idle_on_comm) {
      rs.phases.exposed_comm += engine_.now() - rs.idle_since;
      rs.idle_on_comm = false;
    }
    rs.compute_busy = true;
    if (action == 1) {
      const int b = rs.next_blend;
      RunKernel(r, At(blend_s_, b, r), 1.0, &PhaseTimes::blend, [this, r, b] {
        ranks_[r].blended[b] = 1;
        ++ranks_[r].next_blend;
        ranks_[r].compute_busy = false;
      });
    } else if (action == 2) {
      const int b = rs.next_compute;
      RunKernel(r, At(compute_s_, b, r), NsWidth(), &PhaseTimes::compute, [this, r, b] {
        ranks_[r].computed[b] = 1;
        ++ranks_[r].next_compute;
        ranks_[r].compute_busy = false;
      });
    } else {
      const int b = rs.next_stats;
      RunKernel(r, At(stats_s_, b, r), 1.0, &PhaseTimes::stats, [this, r] {
        ++ranks_[r].next_stats;
        ranks_[r].compute_busy = false;
      });
    }
    return true;
  }

  // BucketPipeline::CommLoop: the fixed order, each collective once its input is there.
  bool TryComm(int r) {
    RankState& rs = ranks_[r];
    if (rs.comm_busy || rs.comm_pos == static_cast<int>(comm_order_.size())) return false;
    const auto [gather, b] = comm_order_[rs.comm_pos];
    if (!(gather ? rs.blended[b] : rs.computed[b])) return false;
    if (world_ == 1) {
      (gather ? rs.gathered : rs.scattered)[b] = 1;
      ++rs.comm_pos;
      return true;
    }
    rs.comm_busy = true;
    Arrive(r, 2 * b + (gather ? 0 : 1));
    return true;
  }

  const StepPlan& plan_;
  const SimOptions& opt_;
  const Machine& m_;
  const int world_;
  const int nb_;
  const bool pipelined_;
  const bool backward_;
  EventEngine engine_;
  std::vector<int> compute_res_;
  std::vector<double> blend_s_, compute_s_, stats_s_;  // [bucket * world + rank], seconds
  std::vector<double> exchange_s_;                     // cluster: per bucket
  double reduce_s_ = 0.0;
  std::vector<double> finish_s_, commit_s_, adamw_s_;  // per rank
  std::vector<Op> ops_;
  std::vector<std::pair<bool, int>> comm_order_;
  std::vector<int> collective_arrivals_;
  std::vector<int> copies_left_;  // per collective, in-process: copies still running
  std::vector<int> bucket_of_;
  std::vector<RankState> ranks_;
};

}  // namespace

absl::StatusOr<SimResult> SimulateStep(const StepPlan& plan, const SimOptions& options) {
  Simulator sim(plan, options);
  return sim.Run();
}

}  // namespace normuon::plan
