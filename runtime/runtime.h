// The runtime behind one normuon_runtime_t handle: the registered parameters and groups, the
// state allocated at finalize, and the order of a step (DESIGN.md section 3). It plans and
// orders; the Backend executes. Not thread-safe: the C API serializes calls on one handle.
#ifndef NORMUON_RUNTIME_H_
#define NORMUON_RUNTIME_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "kernels/backend.h"
#include "runtime/bucket_pipeline.h"
#include "sharding/registration.h"
#include "normuon/normuon.h"
#include "sharding/plan.h"

namespace normuon {

// The phases of a step as the Chrome trace names them.
enum TracePhase : int32_t {
  kTraceBlend = 0,
  kTraceGather,
  kTraceCompute,
  kTraceScatter,
  kTraceStats,
  kTraceFiniteCheck,
  kTraceReduce,
  kTraceCommit,
  kTraceAdamW,
  kTracePhaseCount
};

// One timed span of a step (steady-clock nanoseconds), for the Chrome trace.
struct TraceSpan {
  int32_t phase;
  int32_t bucket;  // -1 for whole-step phases
  int64_t begin_ns, end_ns;
};

// A fixed-capacity log of spans, written by one thread during a step; sized at finalize, so
// recording never allocates (spans beyond the capacity are counted, not kept).
class SpanLog {
 public:
  void Reserve(size_t capacity) { spans_.resize(capacity); }
  void Reset() { size_ = 0; dropped_ = 0; }
  void Add(int32_t phase, int32_t bucket, std::chrono::steady_clock::time_point begin,
           std::chrono::steady_clock::time_point end) {
    if (size_ == spans_.size()) {
      ++dropped_;
      return;
    }
    spans_[size_++] = TraceSpan{phase, bucket, Ns(begin), Ns(end)};
  }
  void AddNs(const TraceSpan& span) {
    if (size_ == spans_.size()) {
      ++dropped_;
      return;
    }
    spans_[size_++] = span;
  }
  size_t size() const { return size_; }
  size_t dropped() const { return dropped_; }
  const TraceSpan& operator[](size_t i) const { return spans_[i]; }
  static int64_t Ns(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }

 private:
  std::vector<TraceSpan> spans_;
  size_t size_ = 0, dropped_ = 0;
};

// Adds the time since the last Lap (or construction) to a phase's total, and logs the span.
// On an asynchronous backend these are only the host's issue times, so the runtime does not
// report them.
class PhaseClock {
 public:
  PhaseClock() : last_(std::chrono::steady_clock::now()), start_(last_) {}
  void Lap(double* phase_ms, SpanLog* log = nullptr, int32_t phase = -1) {
    const auto now = std::chrono::steady_clock::now();
    *phase_ms += std::chrono::duration<double, std::milli>(now - last_).count();
    if (log != nullptr) log->Add(phase, -1, last_, now);
    last_ = now;
  }
  double TotalMs() const {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_)
        .count();
  }

 private:
  std::chrono::steady_clock::time_point last_, start_;
};

class Runtime {
 public:
  // Validates config (each bad field is named) and creates the backend it asks for. comm is this
  // rank's communicator (world size 1 for a single rank). `backend`, when given, is used instead
  // of the one config.backend names (tests: an asynchronous stand-in over host memory, so that
  // the asynchronous code paths run on CPU); config.backend still decides the memory checks.
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(const normuon_config_t& config,
                                                         std::shared_ptr<Communicator> comm,
                                                         std::unique_ptr<Backend> backend = nullptr);
  ~Runtime();

  absl::StatusOr<int32_t> AddGroup(const normuon_group_desc_t& desc);
  absl::Status SetGroupLr(int32_t group, float lr, float weight_decay);
  absl::StatusOr<int32_t> RegisterMatrix(const normuon_param_desc_t& desc);
  absl::StatusOr<int32_t> RegisterAdamW(const normuon_param_desc_t& desc);
  absl::Status Finalize();
  uint64_t MemoryRequired() const;
  absl::Status Bind(int32_t param, void* param_ptr, const void* grad_ptr);
  absl::Status GradReady(const int32_t* params, int32_t count, void* stream);
  absl::Status Step(float lr, float weight_decay, void* stream);
  absl::Status StepCancel();  // normuon_step_cancel (normuon.h)
  absl::Status StepResult(normuon_step_info_t* info);
  absl::Status LastStepProfile(normuon_step_profile_t* profile) const;
  // The last step's spans as Chrome trace events (JSON objects joined by commas, no brackets):
  // pid = rank, tid = 0 step / 1 compute / 2 communication, ts/dur in microseconds of the
  // steady clock.
  absl::StatusOr<std::string> LastStepTrace() const;
  absl::StatusOr<uint64_t> StateSize(int32_t param, normuon_state_kind_t kind) const;
  absl::Status GetState(int32_t param, normuon_state_kind_t kind, void* dst, uint64_t bytes);
  absl::Status SetState(int32_t param, normuon_state_kind_t kind, const void* src,
                        uint64_t bytes);

  // Checkpoints (runtime_checkpoint.cc): collective over comm_, see normuon.h.
  absl::Status SaveCheckpoint(const std::string& dir);
  absl::Status LoadCheckpoint(const std::string& dir);

  bool finalized() const { return finalized_; }

 private:
  enum class Kind { kMatrix, kAdamW };

  struct Group {
    normuon_group_desc_t desc;
  };

  struct Param {
    Kind kind;
    std::string name;
    int64_t rows, cols, row_begin, row_count;
    void* param;
    DType param_dtype;
    const void* grad;
    DType grad_dtype;
    int32_t group;
    std::vector<int64_t> splits;  // row blocks (matrices); one block of `rows` when not split
    // State (backend memory), set at finalize.
    float* momentum = nullptr;  // matrix: momentum; adamw: exp_avg
    float* second = nullptr;    // matrix: v (row_count); adamw: exp_avg_sq
    float* v_new = nullptr;     // matrix only
    int32_t work = -1;          // index into adamw_ (AdamW); the first block's matrices_ index
    std::vector<int32_t> blocks;  // matrices: indices into matrices_, one per row block
  };

  Runtime(const normuon_config_t& config, std::unique_ptr<Backend> backend,
          std::shared_ptr<Communicator> comm);
  // Finalize's collective part: checks every rank's registrations agree (same message on every
  // rank otherwise) and returns each matrix's shards on every rank: shards[k][r].
  // `records` are this rank's units (every matrix row block, then... in registration order) and
  // `matrix_units` the indices of the matrix blocks among them.
  // comm_->AllGather of host bytes at set-up; a device communicator's goes through scratch
  // device memory.
  absl::Status AllGatherHostBytes(const void* in, void* out, size_t bytes);
  absl::StatusOr<std::vector<std::vector<sharding::RowShard>>> AgreeOnRegistrations(
      const std::vector<sharding::RegistrationRecord>& records,
      const std::vector<int32_t>& matrix_units);
  // The stages of bucket b (see bucket_pipeline.h); run inline by the sequential schedule and
  // on the pipeline's threads by the overlapping ones.
  absl::Status BlendBucket(int b);
  absl::Status GatherBucket(int b);   // the exchange of U rows to the owners
  absl::Status ComputeBucket(int b);  // unpack, Newton-Schulz of owned matrices, pack
  absl::Status ScatterBucket(int b);  // the exchange of O rows back
  absl::Status StatsBucket(int b);
  // All buckets' stages of one step, by the configured schedule.
  absl::Status RunBuckets();
  // Starts a step (first grad_ready, or step itself) on `stream`: in graph mode only records the
  // stream (GraphStep does the rest), else StartStep.
  absl::Status BeginStepWork(void* stream);
  // Scalars (copied to the device unless copy_scalars is false), control block, profile, clock,
  // the first device mark.
  absl::Status StartStep(bool copy_scalars);
  // Everything of a step after it started, on stream_: finite check, buckets, norms, commits,
  // EndStep. The eager step runs it; graph mode captures it.
  absl::Status StepWork(bool begun_by_grad_ready, uint32_t marked_hash);
  // Graph mode (config.cuda_graph): captures the step into a CUDA graph when the backend holds
  // none (first step, or after a bind moved a buffer), then launches the graph with the current
  // scalars. A failed capture runs nothing and keeps no graph.
  absl::Status GraphStep(uint32_t marked_hash);
  void FillHostScalars();
  uint32_t MarkedSetHash() const;
  // After FoldStepFlags on a synchronous backend: FailedPrecondition naming the first rank whose
  // grad_ready set differs from rank 0's, else OK.
  absl::Status MarkedSetsStatus() const;
  // The byte address of matrix k's row `row` in its owner's full buffer (U or O).
  char* OwnerRows(void* base, int32_t k, int64_t row) const;
  absl::StatusOr<int32_t> Register(Kind kind, const normuon_param_desc_t& desc);
  absl::Status CheckParam(int32_t param) const;
  // Floats of a matrix parameter's v held here: one per local element (AdaMuon), one per
  // column of each row block (neuron axis = columns), else one per local row.
  uint64_t SecondMomentCount(const Param& p) const;
  // Floats of param's second state buffer as the state API and checkpoints see it: exp_avg_sq
  // (AdamW, one per local element) or v (matrices, SecondMomentCount; none for Muon).
  uint64_t SecondStateCount(const Param& p) const;
  // The backend buffer of a state kind of param, after checking finalize, the kind, the byte
  // count and the caller's host pointer (named host_name in messages).
  absl::StatusOr<void*> StateBuffer(int32_t param, normuon_state_kind_t kind, uint64_t bytes,
                                    const void* host, absl::string_view host_name);
  absl::StatusOr<void*> Allocate(size_t bytes);
  absl::Status ValidatePointers(const Param& p, void* param_ptr, const void* grad_ptr);

  normuon_config_t config_;
  std::unique_ptr<Backend> backend_;
  std::shared_ptr<Communicator> comm_;
  int rank_ = 0, world_ = 1;
  DType ns_dtype_;
  std::vector<std::array<float, 3>> coefficients_;
  std::vector<Group> groups_;
  std::vector<Param> params_;
  bool finalized_ = false;

  // One bucket of matrices (DESIGN.md section 6, "Order of work"): its message plan and buffers.
  struct Bucket {
    std::vector<int32_t> matrices;  // matrix indices k, in work order
    sharding::RankPlan plan;
    std::vector<int64_t> send_offset, recv_offset;  // per peer, into send_buf / recv_buf
    char* send_buf = nullptr;  // gather: this rank's rows for other owners; scatter: rows back
    char* recv_buf = nullptr;  // gather: other ranks' rows of owned matrices; scatter: outgoing
    std::vector<P2p> gather_sends, gather_recvs, scatter_sends, scatter_recvs;  // built once
    std::vector<int32_t> batches;  // indices into batches_ of this bucket's owned matrices
  };

  // Built at finalize.
  std::vector<Bucket> buckets_;
  std::unique_ptr<BucketPipeline> pipeline_;  // overlapping schedules on a synchronous backend
  void* stream_ = nullptr;                    // the current step's stream
  // Time per stage in the current step: blend, gather, compute, scatter, stats. Each entry is
  // written by one thread only (see bucket_pipeline.h).
  double stage_ms_[5] = {0, 0, 0, 0, 0};
  // grad_ready bookkeeping of the current step.
  bool step_begun_ = false;
  std::vector<char> grad_marked_;         // per param
  std::vector<int32_t> bucket_of_matrix_;  // per matrix k
  std::vector<int32_t> bucket_pending_;    // per bucket: matrices not marked yet
  PhaseClock step_clock_;                 // from the start of the step
  // Spans of the current step: caller's thread, compute stages, communication stages.
  SpanLog trace_main_, trace_compute_, trace_comm_;
  // Asynchronous backends: device marks of the current step. mark_phase_[i] is the phase (and
  // mark_bucket_[i] the bucket) of the span that ends at mark i; mark 0 starts the step.
  // mark_from_[i] >= 0: the span starts at that mark instead of mark i - 1. A phase < 0 at
  // i >= 1 is a start mark, no span.
  int32_t marks_used_ = 0;
  std::vector<int32_t> mark_phase_, mark_bucket_, mark_from_;
  // Two-stream pipelining (asynchronous backend, world > 1, pipelined schedule): the stages'
  // marks have fixed slots [1, 1 + 12 * buckets), per bucket a start and an end mark per stage
  // (10) and a mark before each wait of the step's stream on communication (2: before
  // Newton-Schulz and before row statistics), recorded by the pipeline's two threads; the step
  // thread's marks follow them. join_marks_: the marks around the step's stream's final wait for
  // the communication stream (-1: none this step).
  bool two_streams_ = false;
  int32_t PipelineSlots() const { return two_streams_ ? 12 * static_cast<int32_t>(buckets_.size()) : 0; }
  static int32_t StageSlot(int stage, int bucket, bool end) {
    return 1 + 12 * bucket + 2 * stage + (end ? 1 : 0);
  }
  static int32_t WaitSlot(int stage, int bucket) {  // stage 2 (Newton-Schulz) or 4 (row stats)
    return 1 + 12 * bucket + 10 + (stage == 2 ? 0 : 1);
  }
  int32_t join_marks_[2] = {-1, -1};
  absl::Status PipelineMark(int stage, int bucket, bool end);
  void* CollectiveStream();  // the stream the exchanges and the all-reduce are issued on
  std::chrono::steady_clock::time_point mark_base_;  // host time of mark 0 (trace origin)
  absl::Status DeviceMark(int32_t phase, int32_t bucket);
  // The last step's spans from the device marks (waits for the step).
  absl::Status DeviceSpans(std::vector<TraceSpan>* spans) const;
  std::vector<char*> owner_u_, owner_o_;  // per matrix k: full U / O on its owner, else null
  float* slots_local_ = nullptr;  // per global row of every matrix (2 floats), + world flags
  float* slots_total_ = nullptr;  // the all-reduce of slots_local_
  int64_t slot_count_ = 0;        // floats in each slot vector
  int64_t flag_base_ = 0;         // index of rank 0's non-finite flag in the slot vectors
  std::vector<MatrixWork> matrices_;       // one per matrix row block ("matrix k")
  std::vector<int64_t> block_local_row_;  // per k: the block's first local row in its parameter
  std::vector<AdamWWork> adamw_;
  std::vector<NsBatch> batches_;
  std::vector<void*> allocations_;
  uint64_t allocated_bytes_ = 0;
  GroupScalars* dev_scalars_ = nullptr;
  std::vector<GroupScalars> host_scalars_;
  StepControl* control_ = nullptr;
  int64_t* adamw_steps_ = nullptr;
  bool stepped_ = false;
  normuon_step_profile_t profile_{};  // phase times of the last step (synchronous backends)
};

}  // namespace normuon

#endif  // NORMUON_RUNTIME_H_
