// The planner's step model (step_model.h): the static plan built with the sharding library, the
// rate tables, and a discrete-event simulation of every rank's threads.
//
// The simulation is an event queue of jobs. A job either lasts a fixed time (a transfer on a
// cluster, a simulated backward layer that sleeps) or needs an amount of work on a shared
// resource (a GPU, or the cores of this machine), which it receives by processor sharing: while
// the jobs on a resource demand more than its capacity, each one progresses at its share. Each
// rank is a set of state machines (step thread, compute thread, comm thread, backward thread)
// that start jobs and wait on flags exactly where bucket_pipeline.cc and runtime.cc wait, and
// collectives wait for every rank before they start.
#include "tools/plan/step_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <queue>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "sharding/buckets.h"
#include "sharding/pipeline_order.h"
#include "sharding/plan.h"
#include "tools/plan/json.h"

namespace normuon::plan {

// ---------------------------------------------------------------------------------------------
// Names.

const char* ScheduleName(Schedule s) {
  switch (s) {
    case Schedule::kSequential: return "sequential";
    case Schedule::kPerMatrix: return "per_matrix";
    case Schedule::kBucketed: return "bucketed";
  }
  return "unknown";
}

absl::StatusOr<Schedule> ParseSchedule(absl::string_view name) {
  for (Schedule s : {Schedule::kSequential, Schedule::kPerMatrix, Schedule::kBucketed}) {
    if (name == ScheduleName(s)) return s;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown schedule '", name, "' (sequential, per_matrix or bucketed)"));
}

const char* KernelName(Kernel k) {
  switch (k) {
    case Kernel::kBlend: return "blend";
    case Kernel::kRowStats: return "row_stats";
    case Kernel::kCommitMatrix: return "commit_matrix";
    case Kernel::kCommitAdamw: return "commit_adamw";
    case Kernel::kCopy: return "copy";
  }
  return "unknown";
}

const char* MachineKindName(MachineKind k) {
  return k == MachineKind::kCluster ? "cluster" : "cpu_inprocess";
}

const char* LinkModelName(LinkModel m) { return m == LinkModel::kPort ? "port" : "peer"; }

// ---------------------------------------------------------------------------------------------
// Bytes of the memory-bound kernels (see the header; fp32 = 4 bytes).

int64_t BlendBytes(int64_t elements, int64_t wire) { return elements * (4 + 4 + wire); }

int64_t RowStatsBytes(int64_t elements, int64_t rows, int64_t wire) {
  return elements * wire + rows * (4 + 4 + 2 * 4);
}

int64_t FinishNormsBytes(int64_t global_rows) { return global_rows * 2 * 4; }

int64_t CommitMatrixBytes(int64_t elements, int64_t rows, int64_t wire) {
  return elements * (4 * 4 + wire + 2 * 4) + rows * (4 + 4);
}

int64_t CommitAdamwBytes(int64_t elements) { return elements * (4 * 4 + 3 * 4); }

int64_t CopyBytes(int64_t bytes) { return 2 * bytes; }

// ---------------------------------------------------------------------------------------------
// Rates.

void NsRateTable::Add(int64_t rows, int64_t cols, double tflops) {
  if (rows < 1 || cols < 1 || !(tflops > 0.0) || !std::isfinite(tflops)) return;
  for (Point& p : points_) {
    if (p.rows == rows && p.cols == cols) {
      p.tflops = std::max(p.tflops, tflops);
      return;
    }
  }
  points_.push_back(Point{rows, cols, sharding::Ns5Flops(rows, cols), tflops});
}

double NsRateTable::TflopsFor(int64_t rows, int64_t cols) const {
  if (points_.empty()) return default_tflops_;
  for (const Point& p : points_) {
    if (p.rows == rows && p.cols == cols) return p.tflops;
  }
  // Nodes: distinct FLOP counts, rates of equal counts averaged, ascending.
  std::vector<std::pair<double, double>> nodes;  // (flops, tflops)
  std::vector<Point> sorted = points_;
  std::sort(sorted.begin(), sorted.end(),
            [](const Point& a, const Point& b) { return a.flops < b.flops; });
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i;
    double sum = 0.0;
    while (j < sorted.size() && sorted[j].flops == sorted[i].flops) sum += sorted[j++].tflops;
    nodes.emplace_back(sorted[i].flops, sum / static_cast<double>(j - i));
    i = j;
  }
  const double f = sharding::Ns5Flops(rows, cols);
  if (f <= nodes.front().first) return nodes.front().second;
  if (f >= nodes.back().first) return nodes.back().second;
  for (size_t i = 0; i + 1 < nodes.size(); ++i) {
    const auto& [f0, t0] = nodes[i];
    const auto& [f1, t1] = nodes[i + 1];
    if (f >= f0 && f < f1) {
      const double a = (std::log(f) - std::log(f0)) / (std::log(f1) - std::log(f0));
      return t0 + a * (t1 - t0);
    }
  }
  return nodes.back().second;  // not reached
}

namespace {

// "RxC" -> rows, cols.
bool ParseShape(absl::string_view text, int64_t* rows, int64_t* cols) {
  const std::vector<absl::string_view> rc = absl::StrSplit(text, 'x');
  return rc.size() == 2 && absl::SimpleAtoi(rc[0], rows) && absl::SimpleAtoi(rc[1], cols) &&
         *rows > 0 && *cols > 0;
}

}  // namespace

absl::Status AddBenchmarkRates(absl::string_view json_text, absl::string_view source,
                               int64_t wire_bytes, KernelRates* rates) {
  absl::StatusOr<JsonValue> doc = ParseJson(json_text);
  if (!doc.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", doc.status().message()));
  }
  const JsonValue* list = doc->Find("benchmarks");
  if (list == nullptr || !list->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": no \"benchmarks\" array (expected Google Benchmark's JSON output)"));
  }
  // Kernel benchmarks by the first part of their name: this folder's CPU benchmark and
  // bench/elementwise_gpu_bench.
  static const std::pair<const char*, Kernel> kKernels[] = {
      {"BM_Blend", Kernel::kBlend},           {"Blend", Kernel::kBlend},
      {"BM_RowStats", Kernel::kRowStats},     {"RowStats", Kernel::kRowStats},
      {"BM_CommitMatrix", Kernel::kCommitMatrix}, {"CommitMatrix", Kernel::kCommitMatrix},
      {"BM_CommitAdamW", Kernel::kCommitAdamw}, {"CommitAdamW", Kernel::kCommitAdamw},
      {"BM_Copy", Kernel::kCopy},
  };
  const absl::string_view want = wire_bytes == 2 ? "bf16" : wire_bytes == 4 ? "fp32" : "";
  auto other_dtype = [&](absl::string_view part) {
    return !want.empty() && (part == "bf16" || part == "fp32") && part != want;
  };
  int used = 0;
  for (const JsonValue& b : list->items()) {
    const JsonValue* name = b.Find("name");
    if (name == nullptr || !name->is_string()) continue;
    const JsonValue* run_type = b.Find("run_type");
    if (run_type != nullptr && run_type->is_string() && run_type->string() == "aggregate") {
      continue;
    }
    const std::vector<absl::string_view> parts = absl::StrSplit(name->string(), '/');
    const JsonValue* tflops = b.Find("TFLOP/s");
    const bool tflops_ok = tflops != nullptr && tflops->is_number() && tflops->number() > 0.0 &&
                           std::isfinite(tflops->number());
    int64_t rows = 0, cols = 0;
    if (absl::StartsWith(parts[0], "BM_NewtonSchulz")) {
      if (parts.size() >= 3 && absl::SimpleAtoi(parts[1], &rows) &&
          absl::SimpleAtoi(parts[2], &cols) && rows > 0 && cols > 0 && tflops_ok) {
        rates->ns.Add(rows, cols, tflops->number());
        ++used;
      }
      continue;
    }
    if (parts[0] == "NS5") {
      if (parts.size() >= 4 && !other_dtype(parts[1]) && ParseShape(parts[3], &rows, &cols) &&
          tflops_ok) {
        rates->ns.Add(rows, cols, tflops->number());
        ++used;
      }
      continue;
    }
    for (const auto& [prefix, kernel] : kKernels) {
      if (parts[0] != prefix) continue;
      if (kernel != Kernel::kCommitAdamw && parts.size() >= 2 && other_dtype(parts[1])) break;
      double gbps = 0.0;
      const JsonValue* g = b.Find("GB/s");
      const JsonValue* bps = b.Find("bytes_per_second");
      if (g != nullptr && g->is_number()) {
        gbps = g->number();
      } else if (bps != nullptr && bps->is_number()) {
        gbps = bps->number() * 1e-9;
      }
      if (gbps > 0.0 && std::isfinite(gbps)) {
        double& slot = rates->gbps[static_cast<int>(kernel)];
        slot = std::max(slot, gbps);
        ++used;
      }
      break;
    }
  }
  if (used == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": no usable benchmark (Newton-Schulz: BM_NewtonSchulz*/ROWS/COLS or "
                "NS5/DTYPE/MODEL/ROWSxCOLS with a \"TFLOP/s\" counter; kernels: BM_Blend, "
                "BM_RowStats, BM_CommitMatrix, BM_CommitAdamW, BM_Copy, Blend/DTYPE, ... with "
                "\"GB/s\"; entries of the other dtype are skipped)"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// The static plan.

absl::StatusOr<StepPlan> BuildStepPlan(const normuon_tools::ModelShapes& model,
                                       const PlanOptions& options) {
  if (options.world < 1 || options.world > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("world = ", options.world, ", must be in [1, 1048576]"));
  }
  if (options.wire_bytes != 2 && options.wire_bytes != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("wire_bytes = ", options.wire_bytes, ", must be 2 (bf16) or 4 (fp32)"));
  }
  if (options.bucket_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("bucket_bytes = ", options.bucket_bytes, ", must be >= 1"));
  }
  if (model.entries.empty()) return absl::InvalidArgumentError("the model has no parameters");
  const int world = options.world;

  StepPlan plan;
  plan.options = options;
  plan.ranks.resize(world);
  std::vector<sharding::MatrixShape> shapes;
  for (size_t i = 0; i < model.entries.size(); ++i) {
    const normuon_tools::ModelShape& e = model.entries[i];
    NORMUON_ASSIGN_OR_RETURN(std::vector<sharding::RowShard> shards, sharding::Fsdp2Split(e.rows, world));
    if (e.kind == normuon_tools::ShapeKind::kMatrix) {
      MatrixInfo m;
      m.entry = static_cast<int>(i);
      m.name = e.name;
      m.rows = e.rows;
      m.cols = e.cols;
      m.shards = std::move(shards);
      shapes.push_back({e.name, e.rows, e.cols});
      plan.matrices.push_back(std::move(m));
    } else {
      for (int r = 0; r < world; ++r) {
        const int64_t n = shards[r].row_count * e.cols;
        RankSummary& rs = plan.ranks[r];
        rs.adamw_elements += n;
        rs.adamw_with_elements += n > 0;
        rs.adam_bytes += 2 * 4 * n;  // exp_avg and exp_avg_sq, fp32
      }
    }
  }
  NORMUON_ASSIGN_OR_RETURN(sharding::RowSlots slots, sharding::MatrixSlotOffsets(shapes));
  plan.total_rows = slots.total_rows;
  plan.slot_floats = 2 * slots.total_rows + 3 * static_cast<int64_t>(world);

  // Buckets and owners exactly as Runtime::Finalize makes them.
  NORMUON_ASSIGN_OR_RETURN(
      std::vector<std::vector<int>> members,
      sharding::ScheduleBuckets(shapes, options.wire_bytes,
                                options.schedule == Schedule::kSequential
                                    ? sharding::BucketRule::kAll
                                : options.schedule == Schedule::kPerMatrix
                                    ? sharding::BucketRule::kPerMatrix
                                    : sharding::BucketRule::kBytes,
                                options.bucket_bytes, world));
  std::vector<int> owners;
  if (!members.empty()) {
    NORMUON_ASSIGN_OR_RETURN(owners, sharding::AssignOwnersPerBucket(shapes, members, world,
                                                             options.policy));
  }

  for (size_t b = 0; b < members.size(); ++b) {
    BucketPlan bp;
    bp.matrices = members[b];
    bp.ranks.resize(world);
    std::vector<int> bucket_owners;
    for (int k : members[b]) {
      MatrixInfo& m = plan.matrices[k];
      m.owner = owners[k];
      m.bucket = static_cast<int>(b);
      bucket_owners.push_back(m.owner);
      for (int r = 0; r < world; ++r) {
        const int64_t rc = m.shards[r].row_count;
        if (rc == 0) continue;
        RankBucket& rb = bp.ranks[r];
        rb.elements += rc * m.cols;
        rb.rows += rc;
        rb.matrices_with_rows += 1;
      }
    }
    std::sort(bucket_owners.begin(), bucket_owners.end());
    bucket_owners.erase(std::unique(bucket_owners.begin(), bucket_owners.end()),
                        bucket_owners.end());
    // One sharding plan per owner, over the matrices it owns in this bucket (in bucket order):
    // its receive lists are those of the whole bucket's plan (only owned matrices are received,
    // laid out in plan order), and what peer p sends it is, by the plan's construction, what it
    // expects from p. So every rank's sends and receives come from the library without building
    // world plans over the whole bucket (which validates world x world shards per bucket).
    for (int q : bucket_owners) {
      sharding::PlanInputs in;
      in.world = world;
      in.rank = q;
      in.wire_bytes_per_element = options.wire_bytes;
      std::vector<int> local;
      for (int k : members[b]) {
        if (owners[k] != q) continue;
        local.push_back(static_cast<int>(in.shapes.size()));
        in.shapes.push_back(shapes[k]);
        in.shards.push_back(plan.matrices[k].shards);
        in.owners.push_back(q);
      }
      NORMUON_ASSIGN_OR_RETURN(sharding::RankPlan rp, sharding::MakeRankPlanForMatrices(in, local));
      for (int p = 0; p < world; ++p) {
        const int64_t bytes = rp.gather_recv_bytes[p];
        if (bytes == 0) continue;
        bp.gather.push_back(Flow{p, q, bytes});
        bp.ranks[p].send_bytes += bytes;
        bp.ranks[q].recv_bytes += bytes;
        bp.ranks[q].recv_segments += static_cast<int32_t>(rp.gather_recvs[p].size());
      }
      for (const sharding::ShapeBatch& sb : rp.batches) {
        bp.batches.push_back(OwnedBatch{q, sb.rows, sb.cols, static_cast<int>(sb.matrices.size())});
      }
      // Owned matrices in bucket order (rp.owned indexes `in`, which follows members[b]).
      RankSummary& rs = plan.ranks[q];
      for (int k : members[b]) {
        if (owners[k] != q) continue;
        rs.owned.push_back(k);
        rs.ns5_flops += sharding::Ns5Flops(shapes[k].rows, shapes[k].cols);
      }
    }
    for (int r = 0; r < world; ++r) {
      const RankBucket& rb = bp.ranks[r];
      RankSummary& rs = plan.ranks[r];
      // Gather out and scatter back, as Runtime::RunBuckets counts them.
      rs.bytes_sent += rb.send_bytes + rb.recv_bytes;
      rs.bytes_received += rb.recv_bytes + rb.send_bytes;
    }
    plan.buckets.push_back(std::move(bp));
  }

  for (const MatrixInfo& m : plan.matrices) {
    for (int r = 0; r < world; ++r) {
      const int64_t rc = m.shards[r].row_count;
      RankSummary& rs = plan.ranks[r];
      rs.momentum_bytes += 4 * rc * m.cols;
      rs.v_bytes += 4 * rc;
      rs.matrix_elements += rc * m.cols;
      rs.matrix_rows += rc;
      rs.matrices_with_rows += rc > 0;
    }
  }
  if (world > 1) {
    for (RankSummary& rs : plan.ranks) {
      rs.bytes_sent += 4 * plan.slot_floats;
      rs.bytes_received += 4 * plan.slot_floats;
    }
  }
  return plan;
}

int LayerOf(absl::string_view name) {
  for (absl::string_view prefix : {absl::string_view("h."), absl::string_view("layers.")}) {
    const size_t at = name.find(prefix);
    if (at == absl::string_view::npos) continue;
    if (at != 0 && name[at - 1] != '.') continue;
    size_t i = at + prefix.size();
    int layer = 0;
    bool digits = false;
    while (i < name.size() && name[i] >= '0' && name[i] <= '9' && layer < 100000000) {
      layer = layer * 10 + (name[i++] - '0');
      digits = true;
    }
    if (digits) return layer;
  }
  return -1;
}

std::vector<std::vector<int>> BackwardLayers(const normuon_tools::ModelShapes& model) {
  int max_layer = -1;
  for (const auto& e : model.entries) max_layer = std::max(max_layer, LayerOf(e.name));
  std::vector<std::vector<int>> layers(static_cast<size_t>(max_layer + 2));
  int k = 0;
  for (const auto& e : model.entries) {
    if (e.kind != normuon_tools::ShapeKind::kMatrix) continue;
    const int l = LayerOf(e.name);
    layers[l < 0 ? layers.size() - 1 : static_cast<size_t>(max_layer - l)].push_back(k++);
  }
  if (layers.back().empty()) layers.pop_back();
  return layers;
}

// ---------------------------------------------------------------------------------------------
// Link models.

namespace {

bool SameNode(int a, int b, const Machine& m) {
  return a / m.gpus_per_node == b / m.gpus_per_node;
}

double TransferSeconds(int64_t bytes, const Link& link) {
  return link.latency_us * 1e-6 + static_cast<double>(bytes) / (link.gbps * 1e9);
}

}  // namespace

double ClusterExchangeSeconds(const std::vector<Flow>& flows, int world, const Machine& machine) {
  if (flows.empty()) return 0.0;
  double longest = 0.0;
  if (machine.link_model == LinkModel::kPeer) {
    // Every pair has its own full-duplex link: the busiest one decides.
    for (const Flow& f : flows) {
      const Link& link = SameNode(f.src, f.dst, machine) ? machine.intra : machine.inter;
      longest = std::max(longest, TransferSeconds(f.bytes, link));
    }
    return longest;
  }
  // kPort: per rank and link class, the bytes sent and received over all peers of that class.
  std::vector<int64_t> intra_out(world, 0), intra_in(world, 0), inter_out(world, 0),
      inter_in(world, 0);
  for (const Flow& f : flows) {
    if (SameNode(f.src, f.dst, machine)) {
      intra_out[f.src] += f.bytes;
      intra_in[f.dst] += f.bytes;
    } else {
      inter_out[f.src] += f.bytes;
      inter_in[f.dst] += f.bytes;
    }
  }
  for (int r = 0; r < world; ++r) {
    const int64_t intra = std::max(intra_out[r], intra_in[r]);
    const int64_t inter = std::max(inter_out[r], inter_in[r]);
    if (intra > 0) longest = std::max(longest, TransferSeconds(intra, machine.intra));
    if (inter > 0) longest = std::max(longest, TransferSeconds(inter, machine.inter));
  }
  return longest;
}

double ClusterAllReduceSeconds(int64_t bytes, int world, const Machine& machine) {
  if (world <= 1) return 0.0;
  const bool multi_node = world > machine.gpus_per_node;
  const Link& link = multi_node ? machine.inter : machine.intra;
  const double p = world;
  const double steps = std::ceil(std::log2(p));
  return 2.0 * (p - 1.0) / p * static_cast<double>(bytes) / (link.gbps * 1e9) +
         2.0 * steps * link.latency_us * 1e-6;
}

// ---------------------------------------------------------------------------------------------
// The event engine.

namespace {

class Engine {
 public:
  using Callback = std::function<void()>;

  int AddResource(double capacity) {
    resources_.push_back(Resource{capacity, {}});
    return static_cast<int>(resources_.size()) - 1;
  }

  // resource < 0: done after `work` seconds. Otherwise the job needs `work` seconds of one unit
  // of the resource and can use up to `width` units at once. `done` runs at its completion, from
  // Next(), never from Start.
  void Start(int resource, double work, double width, Callback done) {
    int id;
    if (!free_.empty()) {
      id = free_.back();
      free_.pop_back();
    } else {
      id = static_cast<int>(jobs_.size());
      jobs_.emplace_back();
    }
    Job& j = jobs_[id];
    j.resource = resource;
    j.remaining = std::max(0.0, work);
    j.width = width;
    j.rate = 0.0;
    j.updated = now_;
    j.done = std::move(done);
    j.live = true;
    ++started_;
    if (resource < 0) {
      Push(now_ + j.remaining, id);
      return;
    }
    Settle(resource);
    resources_[resource].jobs.push_back(id);
    Rebalance(resource);
  }

  // Completes the next job (running its callback); false when none is left.
  bool Next() {
    while (!events_.empty()) {
      const Event e = events_.top();
      events_.pop();
      Job& j = jobs_[e.job];
      if (!j.live || j.version != e.version) continue;  // superseded by a rebalance
      now_ = std::max(now_, e.time);
      if (j.resource >= 0) {
        Settle(j.resource);
        std::vector<int>& list = resources_[j.resource].jobs;
        list.erase(std::find(list.begin(), list.end(), e.job));
        Rebalance(j.resource);
      }
      j.live = false;
      Callback done = std::move(j.done);
      j.done = nullptr;
      free_.push_back(e.job);
      done();
      return true;
    }
    return false;
  }

  double now() const { return now_; }
  int64_t started() const { return started_; }

 private:
  struct Job {
    int resource = -1;
    double remaining = 0.0, width = 1.0, rate = 0.0, updated = 0.0;
    uint64_t version = 0;
    Callback done;
    bool live = false;
  };
  struct Resource {
    double capacity;
    std::vector<int> jobs;
  };
  struct Event {
    double time;
    uint64_t seq;
    int job;
    uint64_t version;
    bool operator>(const Event& o) const {
      return time != o.time ? time > o.time : seq > o.seq;
    }
  };

  void Push(double time, int id) {
    Job& j = jobs_[id];
    ++j.version;
    events_.push(Event{time, seq_++, id, j.version});
  }

  // Brings every job of the resource's remaining work up to now at its current rate.
  void Settle(int resource) {
    for (int id : resources_[resource].jobs) {
      Job& j = jobs_[id];
      j.remaining = std::max(0.0, j.remaining - j.rate * (now_ - j.updated));
      j.updated = now_;
    }
  }

  // New shares after the set of jobs changed, and new completion times.
  void Rebalance(int resource) {
    Resource& res = resources_[resource];
    double demand = 0.0;
    for (int id : res.jobs) demand += jobs_[id].width;
    const double scale = demand > res.capacity ? res.capacity / demand : 1.0;
    for (int id : res.jobs) {
      Job& j = jobs_[id];
      j.rate = j.width * scale;
      Push(now_ + j.remaining / j.rate, id);
    }
  }

  double now_ = 0.0;
  uint64_t seq_ = 0;
  int64_t started_ = 0;
  std::vector<Job> jobs_;
  std::vector<int> free_;
  std::vector<Resource> resources_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
};

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
        pipelined_(plan.options.schedule != Schedule::kSequential),
        backward_(options.backward_ms_per_layer > 0.0) {}

  absl::StatusOr<SimResult> Run() {
    NORMUON_RETURN_IF_ERROR(Validate());
    Setup();
    for (int r = 0; r < world_; ++r) Poll(r);
    while (engine_.Next()) {
    }
    SimResult result;
    result.backward = backward_;
    result.events = engine_.started();
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
        const double flops = sharding::Ns5Flops(ob.rows, ob.cols) * ob.count;
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
    // In process: once all posted, each rank copies what it receives; the all-reduce first sums
    // every rank's slots on one thread.
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
  Engine engine_;
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
