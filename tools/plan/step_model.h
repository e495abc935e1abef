// The planner's model of one sharded optimizer step (issue 4, "Planner for scale"; issue 9, the
// planner's part of the overlap with the backward pass).
//
// Two layers:
//  1. BuildStepPlan: what a step moves and computes, per rank and per bucket, for a model's shape
//     list at a world size. It does not reimplement the runtime's decisions: rows come from
//     sharding::Fsdp2Split, buckets from sharding::MakeBuckets (or the one bucket of the
//     sequential schedule), owners from sharding::AssignOwnersPerBucket and every message size
//     from sharding::MakeRankPlanForMatrices, exactly as Runtime::Finalize calls them.
//  2. SimulateStep: a discrete-event simulation of that plan on a machine model, all ranks
//     together. Per rank it follows runtime/bucket_pipeline.h: a compute thread (blend, compute =
//     unpack + Newton-Schulz + pack, stats; blends first, then compute, then stats) and a comm
//     thread issuing gather(0), then gather(k+1), scatter(k) for k = 0..B-1; the sequential
//     schedule runs the same stages inline on the step's thread. Then the slot all-reduce, the
//     norms, the matrix commit and AdamW, as Runtime::Step orders them. A collective starts when
//     the last rank arrives and ends for all ranks together.
//
// Machine models (Machine::kind):
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
// Kernel times: Newton-Schulz = FLOPs (sharding::Ns5Flops) / the TFLOP/s of its shape (a table
// read from a Google Benchmark JSON, interpolated by FLOPs); every other kernel is memory bound:
// bytes read + bytes written (the *Bytes functions below, fp32 parameters, gradients and state)
// / its GB/s. Plus, on kCluster, kernel_us per kernel launched. On kCpuInprocess the rates are
// per core (measure them with one BLAS thread).
//
// Not modelled (the README says so): NCCL's own SM use slowing compute, congestion inside the
// fabric beyond a GPU's port, the trainer's traffic, and the start skew of ranks (all start the
// step at time 0).
#ifndef NORMUON_TOOLS_PLAN_STEP_MODEL_H_
#define NORMUON_TOOLS_PLAN_STEP_MODEL_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sharding/owner_assignment.h"
#include "sharding/shard.h"
#include "tools/model_shapes.h"

namespace normuon::plan {

// ---------------------------------------------------------------------------------------------
// Schedules, as normuon_config_t.schedule.

enum class Schedule { kSequential, kPerMatrix, kBucketed };

const char* ScheduleName(Schedule s);  // "sequential", "per_matrix", "bucketed"
absl::StatusOr<Schedule> ParseSchedule(absl::string_view name);

// ---------------------------------------------------------------------------------------------
// Bytes each memory-bound kernel reads plus writes. Parameters, gradients, momentum, v and Adam
// moments are fp32 (4 bytes); U and O are in the wire dtype (wire = 2 for bf16, 4 for fp32).
// The rate benchmark (cpu_kernel_rates_bench) divides these same counts by its time, so a GB/s
// it reports means exactly what the simulation divides by.

// Blend: G and M read, U written.
int64_t BlendBytes(int64_t elements, int64_t wire);
// Row statistics: O read; per row v read, v_new written, two slots written.
int64_t RowStatsBytes(int64_t elements, int64_t rows, int64_t wire);
// Norms from the summed slots: two floats read per global row.
int64_t FinishNormsBytes(int64_t global_rows);
// Matrix commit: G, M, O and W read, M and W written; per row v_new read and v written.
int64_t CommitMatrixBytes(int64_t elements, int64_t rows, int64_t wire);
// AdamW commit: G, m, v and W read, m, v and W written.
int64_t CommitAdamwBytes(int64_t elements);
// A copy of `bytes` (message packing, in-process exchanges): read once, written once.
int64_t CopyBytes(int64_t bytes);

// ---------------------------------------------------------------------------------------------
// Kernel rates.

enum class Kernel { kBlend = 0, kRowStats, kCommitMatrix, kCommitAdamw, kCopy };
inline constexpr int kKernelCount = 5;
// "blend", "row_stats", "commit_matrix", "commit_adamw", "copy".
const char* KernelName(Kernel k);

// Newton-Schulz TFLOP/s by shape. A shape that was measured gets its own rate (the best of its
// entries); any other shape gets the rate interpolated linearly in log(FLOPs) between the
// nearest measured FLOP counts below and above (shapes of equal FLOPs averaged), clamped to the
// smallest or largest measured one outside that range; with nothing measured, the default.
class NsRateTable {
 public:
  explicit NsRateTable(double default_tflops = 600.0) : default_tflops_(default_tflops) {}
  void set_default_tflops(double t) { default_tflops_ = t; }
  double default_tflops() const { return default_tflops_; }
  // rows, cols >= 1, tflops > 0 (others are ignored). Keeps the largest rate per shape.
  void Add(int64_t rows, int64_t cols, double tflops);
  double TflopsFor(int64_t rows, int64_t cols) const;
  bool empty() const { return points_.empty(); }

  struct Point {
    int64_t rows, cols;
    double flops, tflops;
  };
  const std::vector<Point>& points() const { return points_; }

 private:
  double default_tflops_;
  std::vector<Point> points_;
};

struct KernelRates {
  NsRateTable ns;
  double mem_gbps = 3000.0;                 // any memory-bound kernel without its own rate
  std::array<double, kKernelCount> gbps{};  // per kernel; 0 = mem_gbps
  std::string source = "defaults";          // where the rates came from, for the report

  double Gbps(Kernel k) const {
    const double g = gbps[static_cast<int>(k)];
    return g > 0.0 ? g : mem_gbps;
  }
};

// Reads a Google Benchmark JSON document (`--benchmark_format=json` or `--benchmark_out`) into
// rates. Newton-Schulz points: "BM_NewtonSchulz*/ROWS/COLS..." (the CPU benchmark) or
// "NS5/DTYPE/MODEL/ROWSxCOLS/..." (bench/newton_schulz_gpu_bench) with a "TFLOP/s" counter.
// Kernel rates: "BM_Blend", "BM_RowStats", "BM_CommitMatrix", "BM_CommitAdamW", "BM_Copy"
// (tools/plan/cpu_kernel_rates_bench) or "Blend/DTYPE/...", "RowStats/...", "CommitMatrix/...",
// "CommitAdamW/..." (bench/elementwise_gpu_bench, whose byte counts are the *Bytes above) with a
// "GB/s" counter (or Google Benchmark's bytes_per_second). Entries naming a dtype ("bf16",
// "fp32") other than wire_bytes' are skipped (AdamW has no wire dtype; wire_bytes 0 takes all).
// The best entry per shape or kernel wins (repeated runs on a loaded machine only get slower);
// aggregate rows (mean, median, stddev) are skipped. Fails on malformed JSON, a document without
// a "benchmarks" array, or one with no usable entry; source names the file in messages.
absl::Status AddBenchmarkRates(absl::string_view json_text, absl::string_view source,
                               int64_t wire_bytes, KernelRates* rates);

// ---------------------------------------------------------------------------------------------
// Machines.

struct Link {
  double gbps = 0.0;        // per direction, GB/s (1e9 bytes/s)
  double latency_us = 0.0;  // per message exchange
};

enum class MachineKind { kCluster, kCpuInprocess };
enum class LinkModel { kPort, kPeer };

const char* MachineKindName(MachineKind k);  // "cluster", "cpu_inprocess"
const char* LinkModelName(LinkModel m);      // "port", "peer"

struct Machine {
  MachineKind kind = MachineKind::kCluster;
  // kCluster:
  int gpus_per_node = 8;
  Link intra{300.0, 3.0};  // NVLink-class
  Link inter{50.0, 10.0};  // InfiniBand-class, per GPU
  LinkModel link_model = LinkModel::kPort;
  double kernel_us = 0.0;               // added per kernel launched
  bool backward_shares_compute = true;  // the simulated backward competes for the GPU
  // kCpuInprocess:
  int cores = 2;
  int blas_threads = 1;  // cores one Newton-Schulz call may use (OpenBLAS threads)
};

// ---------------------------------------------------------------------------------------------
// The static plan.

struct PlanOptions {
  int world = 1;
  Schedule schedule = Schedule::kBucketed;
  int64_t bucket_bytes = int64_t{32} << 20;  // bucketed only, as normuon_config_t.bucket_bytes
  sharding::OwnerPolicy policy = sharding::OwnerPolicy::kRoundRobin;
  int64_t wire_bytes = 2;  // 2: bf16, 4: fp32
};

// A message of the gather: rank src's rows of matrices dst owns, in one bucket. The scatter
// sends the same bytes from dst back to src. One flow per (src, dst) pair and bucket.
struct Flow {
  int src = 0, dst = 0;
  int64_t bytes = 0;
};

// What one rank does in one bucket.
struct RankBucket {
  int64_t elements = 0;           // its rows of the bucket's matrices: rows * cols summed
  int64_t rows = 0;               // its rows, summed over the bucket's matrices
  int32_t matrices_with_rows = 0;
  int64_t send_bytes = 0;         // gather: sent (the scatter receives as much back)
  int64_t recv_bytes = 0;         // gather: received (the scatter sends as much)
  int32_t recv_segments = 0;      // segments unpacked and packed again
};

// Owned matrices of one shape in one bucket: one batched Newton-Schulz call.
struct OwnedBatch {
  int rank = 0;
  int64_t rows = 0, cols = 0;
  int count = 0;
};

struct BucketPlan {
  std::vector<int> matrices;  // matrix indices (StepPlan::matrices), in work order
  std::vector<RankBucket> ranks;  // one per rank
  std::vector<Flow> gather;
  std::vector<OwnedBatch> batches;
};

struct MatrixInfo {
  int entry = 0;  // index into the model's entries
  std::string name;
  int64_t rows = 0, cols = 0;
  std::vector<sharding::RowShard> shards;  // one per rank (FSDP2)
  int owner = 0;
  int bucket = 0;
};

// Everything about one rank that does not depend on time.
struct RankSummary {
  std::vector<int> owned;  // matrix indices, in bucket work order
  double ns5_flops = 0.0;  // of its owned matrices (sharding::Ns5Flops)
  int64_t momentum_bytes = 0, v_bytes = 0, adam_bytes = 0;
  int64_t state_bytes() const { return momentum_bytes + v_bytes + adam_bytes; }
  // The runtime's profile accounting: every bucket's gather and scatter messages to and from
  // other ranks, plus the slot all-reduce's 4 * slot_floats each way when world > 1.
  int64_t bytes_sent = 0, bytes_received = 0;
  int64_t matrix_elements = 0, matrix_rows = 0;
  int32_t matrices_with_rows = 0;
  int64_t adamw_elements = 0;
  int32_t adamw_with_elements = 0;
};

struct StepPlan {
  PlanOptions options;
  std::vector<MatrixInfo> matrices;  // the model's `matrix` entries, registration order
  std::vector<BucketPlan> buckets;   // in the order the step works on them
  std::vector<RankSummary> ranks;
  int64_t total_rows = 0;    // rows of all matrices
  int64_t slot_floats = 0;   // the all-reduce's length: 2 per global row + 3 per rank
};

// Validates options (world in [1, 1 << 20], wire 2 or 4, bucket_bytes >= 1) and the model (at
// least one parameter), then plans as Runtime::Finalize does. Errors name the field.
absl::StatusOr<StepPlan> BuildStepPlan(const normuon_tools::ModelShapes& model,
                                       const PlanOptions& options);

// The layer of a parameter name, as normuon_run's simulated backward finds it: the number after
// "h." or "layers." at the start of the name or after a '.', else -1.
int LayerOf(absl::string_view name);

// Matrix indices (StepPlan::matrices order) per layer in backward order, as normuon_run's
// --overlap_backward releases them: the last numbered layer first, matrices outside numbered
// layers last; numbered layers without matrices stay (their backward still takes time).
std::vector<std::vector<int>> BackwardLayers(const normuon_tools::ModelShapes& model);

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
  int64_t events = 0;            // jobs simulated (for the curious)
};

// Runs one step of plan on the machine. With a backward pass, step_ms is the time exposed after
// the last gradient (as normuon_run's exposed_after_last_grad_ms). Fails on invalid machine or
// rates (non-positive rates or bandwidths, cores < 1) or layers naming unknown matrices.
absl::StatusOr<SimResult> SimulateStep(const StepPlan& plan, const SimOptions& options);

// The building blocks, exposed for tests: the duration in seconds of bucket b's gather on a
// kCluster machine (the scatter moves the same bytes the other way and takes as long), and of
// the slot all-reduce of `bytes` per rank.
double ClusterExchangeSeconds(const std::vector<Flow>& flows, int world, const Machine& machine);
double ClusterAllReduceSeconds(int64_t bytes, int world, const Machine& machine);

}  // namespace normuon::plan

#endif  // NORMUON_TOOLS_PLAN_STEP_MODEL_H_
