// The runtime behind one normuon_runtime_t handle (docs/ARCHITECTURE.md section 4, "The runtime
// in three parts"): the registered parameters and groups, the step layout, the buffers wired to it
// at finalize, and the execution of a step. It plans and orders; the Backend computes and the
// Communicator moves bytes. Not thread-safe: the C edge serializes calls on one handle.
//
// Files: config.cc (validation), step_layout.cc (what goes where), runtime.cc (creation,
// registration, Finalize = allocate + bind, the state API), step.cc (execution: stages,
// schedules, grad_ready, cancel, graph mode), timing.cc (profile and trace),
// runtime_checkpoint.cc (checkpoints).
#ifndef NORMUON_RUNTIME_RUNTIME_H_
#define NORMUON_RUNTIME_RUNTIME_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "kernels/backend.h"
#include "normuon/normuon.h"
#include "runtime/bucket_pipeline.h"
#include "runtime/config.h"
#include "runtime/step_layout.h"
#include "runtime/timing.h"
#include "sharding/plan.h"
#include "sharding/registration.h"

namespace normuon {

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
  // The step layout's total: exact after finalize (what was allocated), and before it the total
  // finalize will allocate for what is registered so far (0 if the layout cannot be made).
  uint64_t MemoryRequired() const;
  absl::Status Bind(int32_t param, void* param_ptr, const void* grad_ptr);
  // normuon_bind_piece: one piece of a parameter registered with pieces.
  absl::Status BindPiece(int32_t param, int32_t piece, void* param_ptr, const void* grad_ptr);
  absl::Status GradReady(const int32_t* params, int32_t count, void* stream);
  absl::Status Step(float lr, float weight_decay, void* stream);
  // Abandons a step that GradReady began, collectively: every rank runs the exchanges its peers
  // expect, nothing is committed or counted. OK and nothing done when no step was begun.
  absl::Status StepCancel();
  absl::Status StepResult(normuon_step_info_t* info);
  absl::Status LastStepProfile(normuon_step_profile_t* profile) const;
  // The last step's spans as Chrome trace events (JSON objects joined by commas, no brackets).
  absl::StatusOr<std::string> LastStepTrace() const;
  absl::StatusOr<uint64_t> StateSize(int32_t param, normuon_state_kind_t kind) const;
  absl::Status GetState(int32_t param, normuon_state_kind_t kind, void* dst, uint64_t bytes);
  absl::Status SetState(int32_t param, normuon_state_kind_t kind, const void* src,
                        uint64_t bytes);

  // Checkpoints (runtime_checkpoint.cc): collective over comm_, see normuon.h.
  absl::Status SaveCheckpoint(const std::string& dir);
  absl::Status LoadCheckpoint(const std::string& dir);

 private:
  using Kind = ParamKind;

  struct Group {
    normuon_group_desc_t desc;
  };

  // A registration and, after finalize, where its state lives.
  struct Param : ParamSpec {
    float* momentum = nullptr;  // matrix: momentum; adamw: exp_avg
    float* second = nullptr;    // matrix: v; adamw: exp_avg_sq
    float* v_new = nullptr;     // matrix only
    int32_t work = -1;          // index into adamw_ (AdamW); the first block's matrices_ index
    std::vector<int32_t> blocks;  // matrices: indices into matrices_, one per row block
  };

  // One bucket of matrices (docs/ARCHITECTURE.md section 6, "Order of work"): its message plan
  // and buffers.
  struct Bucket {
    std::vector<int32_t> matrices;  // matrix indices k, in work order
    sharding::RankPlan plan;
    std::vector<int64_t> send_offset, recv_offset;  // per peer, into send_buf / recv_buf
    char* send_buf = nullptr;  // gather: this rank's rows for other owners; scatter: rows back
    char* recv_buf = nullptr;  // gather: other ranks' rows of owned matrices; scatter: outgoing
    std::vector<P2p> gather_sends, gather_recvs, scatter_sends, scatter_recvs;  // built once
    std::vector<int32_t> batches;  // indices into batches_ of this bucket's owned matrices
    // AdaMuon's v of column-split blocks (StepLayout's element_v_split): its own plan over those
    // blocks (fp32 elements), buffers and exchange, run with the gather.
    sharding::RankPlan vplan;
    std::vector<int64_t> vsend_offset, vrecv_offset;
    char* vsend_buf = nullptr;
    char* vrecv_buf = nullptr;
    std::vector<P2p> vgather_sends, vgather_recvs;
  };

  Runtime(ResolvedConfig resolved, std::unique_ptr<Backend> backend,
          std::shared_ptr<Communicator> comm);

  // ---- runtime.cc: registration, wiring, state ----
  absl::StatusOr<int32_t> Register(Kind kind, const normuon_param_desc_t& desc);
  absl::Status CheckParam(int32_t param) const;
  // Checks one piece's buffers (`rows` rows held; `what` names the piece in messages).
  absl::Status ValidatePointers(const Param& p, void* param_ptr, const void* grad_ptr,
                                int64_t rows, const std::string& what);
  absl::Status ValidatePointers(const Param& p, void* param_ptr, const void* grad_ptr) {
    return ValidatePointers(p, param_ptr, grad_ptr, p.row_count, "");
  }
  // Bind and BindPiece after their checks: piece -1 = the parameter's own buffers.
  absl::Status BindBuffers(int32_t param, int32_t piece, void* param_ptr, const void* grad_ptr);
  // The parameter and gradient pointers of part j of matrix k (its piece's, at its first row).
  void PointPart(int32_t k, size_t j, MatrixWork* w) const;
  // column_split: finalize's per-block verdict (MakeStepLayout's LayoutOptions::column_split).
  absl::StatusOr<StepLayout> Layout(std::vector<char> column_split = {}) const;
  // comm_->AllGather of host bytes at set-up; a device communicator's goes through scratch
  // device memory.
  absl::Status AllGatherHostBytes(const void* in, void* out, size_t bytes);
  // comm_->Exchange of host buffers (checkpoints); a device communicator's goes through one
  // scratch buffer of device memory, as AllGatherHostBytes.
  absl::Status ExchangeHostBytes(const std::vector<P2p>& sends, const std::vector<P2p>& recvs);
  // Finalize's collective part: checks every rank's registrations agree (same message on every
  // rank otherwise) and returns every rank's piece of each matrix block: pieces[k][r].
  // With several pieces on some rank, *extra gets every rank's further pieces of each block
  // (PlanInputs::extra_pieces), and *every each block's pieces of all ranks, rank by rank in
  // each rank's parts' order, with their piece indices (pieces_of_).
  absl::StatusOr<std::vector<std::vector<sharding::PieceRect>>> AgreeOnRegistrations(
      const StepLayout& layout, std::vector<std::vector<sharding::RankPiece>>* extra,
      std::vector<std::vector<sharding::RankPiece>>* every);
  // Finalize's work; Unwire undoes a partial Wire (frees, forgets), so that a failed finalize
  // changes nothing but the failure.
  absl::Status Wire();
  void Unwire();
  // The buffers finalize allocated, handed out in the layout's order (layout_.buffers). Each Take
  // names the role it expects, so the wiring cannot drift from the layout: a mismatch or a buffer
  // left over fails finalize (Done).
  class BufferCursor {
   public:
    BufferCursor(const StepLayout& layout, std::vector<void*> buffers)
        : layout_(&layout), buffers_(std::move(buffers)) {}
    template <typename T>
    T* Take(BufferRole role) {
      if (next_ >= buffers_.size() || layout_->buffers[next_].role != role) {
        ok_ = false;
        return nullptr;
      }
      return static_cast<T*>(buffers_[next_++]);
    }
    bool Done() const { return ok_ && next_ == buffers_.size(); }

   private:
    const StepLayout* layout_;
    std::vector<void*> buffers_;
    size_t next_ = 0;
    bool ok_ = true;
  };
  // Allocates layout_.buffers in order.
  absl::StatusOr<BufferCursor> AllocateBuffers();
  absl::Status WireBuckets(const std::vector<std::vector<sharding::PieceRect>>& pieces,
                           const std::vector<std::vector<sharding::RankPiece>>& extra,
                           BufferCursor& buffers);
  void WireMatrices(BufferCursor& buffers);
  void WireAdamW(BufferCursor& buffers);
  // The v messages and the owners' whole v of AdaMuon's column-split blocks (after the v
  // all-reduce's buffers).
  absl::Status WireElementV(const std::vector<std::vector<sharding::PieceRect>>& pieces,
                            const std::vector<std::vector<sharding::RankPiece>>& extra,
                            BufferCursor& buffers);
  absl::Status MakePipeline();
  // Floats of param's second state buffer as the state API and checkpoints see it.
  uint64_t SecondStateCount(const Param& p) const;
  // The backend buffer of a state kind of param, after checking finalize, the kind, the byte
  // count and the caller's host pointer (named host_name in messages).
  absl::StatusOr<void*> StateBuffer(int32_t param, normuon_state_kind_t kind, uint64_t bytes,
                                    const void* host, absl::string_view host_name);

  // Checkpoints of parameters split into column pieces (runtime_checkpoint.cc): the holder of
  // element (0, 0) receives every piece's momentum and its rows' v, and saves the parameter as a
  // rank holding all its rows would. Collective; the same list of parameters on every rank.
  struct WholeState {
    int32_t param = 0;
    int holder = 0;
    std::vector<float> first, second;  // on the holder: momentum rows x cols, v
  };
  absl::Status GatherColumnSplitState(std::vector<WholeState>* out);

  // ---- step.cc: execution ----
  // The stages of bucket b (see bucket_pipeline.h); run inline by the sequential schedule and
  // on the pipeline's threads by the overlapping ones.
  absl::Status MomentumBucket(int b);
  absl::Status GatherBucket(int b);
  absl::Status NewtonSchulzBucket(int b);
  absl::Status ScatterBucket(int b);
  absl::Status RowStatsBucket(int b);
  // Column-split blocks (two-dimensional pieces): the v all-reduce at the start of a step, and
  // after the slot all-reduce each piece's v_new from the owner's.
  absl::Status SyncSplitV();
  absl::Status TakeSplitVNew();
  // AdaMuon's column-split blocks: this rank's v pieces of bucket b to where they travel from
  // (the v message, or the owner's whole v), and on the owner the received pieces into it.
  absl::Status PackElementV(int b);
  absl::Status UnpackElementV(int b);
  // Moves one segment between a message and the owner's full buffer of matrix seg.matrix (U or
  // O, elem_bytes = the Newton-Schulz dtype's size; AdaMuon's whole v, 4): one copy, a rectangle
  // for a column piece; to_owner: message -> full buffer.
  absl::Status CopySegment(const sharding::Segment& seg, char* message, void* full,
                           int64_t elem_bytes, bool to_owner);
  // A bucket stage on the two-stream pipeline: hand-off waits, marks, hand-off records.
  absl::Status TwoStreamStage(int stage, int b);
  // Two streams: the step's stream waits for everything queued on the communication stream.
  absl::Status JoinCommStream();
  // All buckets' stages of one step, by the configured schedule.
  absl::Status RunBuckets();
  // Sequential schedule after `failure`: issues the exchanges this rank has not issued yet,
  // from bucket b on (its gather too unless gather_done), ignoring their outcome, so that every
  // rank issues the same collectives; returns failure.
  absl::Status DrainAfter(int b, bool gather_done, const absl::Status& failure);
  // Checks a grad_ready/step/cancel stream against the step's (one stream per step).
  absl::Status CheckStepStream(void* stream, const char* call) const;
  // Starts a step (first grad_ready, or step itself) on `stream`: in graph mode only records the
  // stream (GraphStep does the rest), else StartStep.
  absl::Status BeginStepWork(void* stream);
  // Scalars (copied to the device unless copy_scalars is false), control block, timing.
  absl::Status StartStep(bool copy_scalars);
  // Everything of a step after it started, on stream_: finite check, buckets, norms, commits,
  // EndStep. The eager step runs it; graph mode captures it.
  absl::Status StepWork(bool begun_by_grad_ready, uint32_t ready_hash);
  // Graph mode (config.cuda_graph): captures the step into a CUDA graph when the backend holds
  // none (first step, or after a bind moved a buffer), then launches it with the current
  // scalars. A failed capture runs nothing and keeps no graph.
  absl::Status GraphStep(uint32_t ready_hash);
  // Clears the grad_ready bookkeeping of the step that just ended or was cancelled.
  void ResetReady();
  void FillHostScalars();
  uint32_t ReadySetHash() const;
  // After FoldStepFlags, from the control block and the summed flags (both host-readable: a
  // synchronous backend, or after WaitStep): the step's cross-rank outcome, OK or the error
  // every rank returns for it (the epochs differ: which ranks did not commit which steps; a
  // peer failed; the grad_ready sets differ). `control` is a host copy of the control block.
  absl::Status StepFlagsStatus(const StepControl& control, const float* flags) const;
  void* CollectiveStream();  // the stream the exchanges and the all-reduce are issued on

  normuon_config_t config_;
  std::unique_ptr<Backend> backend_;
  std::shared_ptr<Communicator> comm_;
  int rank_ = 0, world_ = 1;
  DType ns_dtype_;
  std::vector<std::array<float, 3>> coefficients_;
  NsMethod ns_method_ = NsMethod::kStandard;
  std::vector<int32_t> ns_restarts_;
  SymmetricProducts ns_symmetric_ = SymmetricProducts::kDense;
  std::vector<Group> groups_;
  std::vector<Param> params_;
  bool finalized_ = false;

  // Built at finalize.
  StepLayout layout_;
  std::vector<Bucket> buckets_;
  std::vector<MatrixWork> matrices_;  // one per matrix row block ("matrix k"): its first part
  // Per matrix k: this rank's further parts (several pieces: layout_.matrices[k].parts[1...]),
  // which share the first part's scale; usually empty.
  std::vector<std::vector<MatrixWork>> more_parts_;
  // Runs fn on every part of matrix k, the first one first.
  template <typename Fn>
  absl::Status EachPart(int32_t k, Fn fn) const {
    absl::Status s = fn(matrices_[k]);
    for (size_t j = 0; s.ok() && j < more_parts_[k].size(); ++j) s = fn(more_parts_[k][j]);
    return s;
  }
  // Every rank's pieces of each block, as finalize agreed on them (checkpoints of parameters
  // saved whole): pieces_of_[k] = (rank, rectangle relative to the block), each rank's in its
  // parts' order.
  std::vector<std::vector<sharding::RankPiece>> pieces_of_;
  std::vector<AdamWWork> adamw_;
  std::vector<NsBatch> batches_;
  std::vector<char*> owner_u_, owner_o_;  // per matrix k: full U / O on its owner, else null
  // Per matrix k with element_v_split: the owner's whole v (else null), and, per part of this
  // rank (EachPart's order), where its v piece goes (the v message, or its place in the owner's
  // whole v; null for a part with no rows).
  std::vector<float*> owner_v_;
  std::vector<std::vector<float*>> v_out_;
  float* slots_local_ = nullptr;  // per global row of every matrix (2 floats), + world flags
  float* slots_total_ = nullptr;  // the all-reduce of slots_local_
  float* vsync_local_ = nullptr;  // column-split blocks' v rows (layout_.vsync_floats), or null
  float* vsync_total_ = nullptr;  // their all-reduce
  std::vector<void*> allocations_;
  uint64_t allocated_bytes_ = 0;
  GroupScalars* dev_scalars_ = nullptr;
  std::vector<GroupScalars> host_scalars_;
  StepControl* control_ = nullptr;
  int64_t* adamw_steps_ = nullptr;
  std::unique_ptr<BucketPipeline> pipeline_;  // overlapping schedules
  bool two_streams_ = false;  // asynchronous backend, world > 1, pipelined schedule
  StepTiming timing_;

  // The current step.
  void* stream_ = nullptr;
  bool step_begun_ = false;                // grad_ready began it; step or cancel ends it
  std::vector<char> grad_ready_;           // per param: marked by grad_ready this step
  std::vector<int32_t> bucket_pending_;    // per bucket: matrices not marked yet
  std::vector<char> skip_momentum_;        // per bucket: cancelled before it became ready
  bool stepped_ = false;                   // a step ran (profile, trace, step_result)
  absl::Status split_v_status_;            // the v all-reduce of this step's start (SyncSplitV)
};

}  // namespace normuon

#endif  // NORMUON_RUNTIME_RUNTIME_H_
