// The execution of a step (docs/ARCHITECTURE.md section 3): grad_ready and the early start, the
// per-bucket stages run by the configured schedule, the slot all-reduce, the commit, cancel, and
// CUDA graph mode. The stage names are timing.h's vocabulary.
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "runtime/runtime.h"

namespace normuon {
namespace {

absl::Status Invalid(absl::string_view what) { return absl::InvalidArgumentError(what); }

// A failure in graph mode (config.cuda_graph), saying what was being done. The CUDA backend
// reports a failed CUDA call as Internal; here it becomes NORMUON_ERROR_CUDA (Unknown).
absl::Status CudaGraphError(const absl::Status& s, absl::string_view doing) {
  if (s.ok()) return s;
  const absl::StatusCode code =
      s.code() == absl::StatusCode::kInternal ? absl::StatusCode::kUnknown : s.code();
  return absl::Status(code, absl::StrCat("config.cuda_graph = 1: ", doing, ": ", s.message()));
}

}  // namespace

void* Runtime::CollectiveStream() { return two_streams_ ? backend_->CommStream() : stream_; }

// ---- The bucket stages ----

absl::Status Runtime::MomentumBucket(int b) {
  StepTiming::StageTimer timer(&timing_, kStageMomentum, b);
  // A cancelled step's buckets that never became ready: their gradients may be gone, and nothing
  // of the step is kept, so their rows of U are not computed.
  if (skip_momentum_[b]) return absl::OkStatus();
  for (int32_t k : buckets_[b].matrices) {
    NORMUON_RETURN_IF_ERROR(EachPart(k, [&](const MatrixWork& w) { return backend_->Blend(w); }));
  }
  return PackElementV(b);
}

absl::Status Runtime::GatherBucket(int b) {
  const Bucket& bucket = buckets_[b];
  if (world_ == 1) return absl::OkStatus();  // a single rank's rows are written in place
  StepTiming::StageTimer timer(&timing_, kStageGather, b);
  NORMUON_RETURN_IF_ERROR(
      comm_->Exchange(bucket.gather_sends, bucket.gather_recvs, CollectiveStream()));
  // AdaMuon's v of column-split blocks: on every rank when the bucket has such blocks (the same
  // verdict everywhere), so that every rank issues the same exchanges.
  if (bucket.vsend_offset.empty()) return absl::OkStatus();
  return comm_->Exchange(bucket.vgather_sends, bucket.vgather_recvs, CollectiveStream());
}

absl::Status Runtime::PackElementV(int b) {
  // v is only written at the commit: the value every piece holder and the owner read this step.
  for (int32_t k : buckets_[b].matrices) {
    if (!layout_.matrices[k].element_v_split) continue;
    const int64_t owner_ld = layout_.matrices[k].owner == rank_ ? matrices_[k].cols : -1;
    size_t j = 0;
    NORMUON_RETURN_IF_ERROR(EachPart(k, [&](const MatrixWork& w) -> absl::Status {
      float* out = v_out_[k][j++];
      if (out == nullptr) return absl::OkStatus();
      const int64_t pc = PieceCols(w);
      const int64_t ld = owner_ld > 0 ? owner_ld : pc;
      // One rectangle (a cudaMemcpy2DAsync on CUDA): the part's packed v rows, ld apart in out.
      const size_t row_bytes = static_cast<size_t>(pc) * 4;
      return backend_->CopyRectAsync(out, static_cast<size_t>(ld) * 4, w.v, row_bytes, row_bytes,
                                     w.row_count);
    }));
  }
  return absl::OkStatus();
}

absl::Status Runtime::UnpackElementV(int b) {
  const Bucket& bucket = buckets_[b];
  if (bucket.vsend_offset.empty()) return absl::OkStatus();
  for (int p = 0; p < world_; ++p) {
    for (const sharding::Segment& seg : bucket.vplan.gather_recvs[p]) {
      NORMUON_RETURN_IF_ERROR(CopySegment(seg, bucket.vrecv_buf + bucket.vrecv_offset[p] + seg.offset,
                                          owner_v_[seg.matrix], /*elem_bytes=*/4,
                                          /*to_owner=*/true));
    }
  }
  return absl::OkStatus();
}

absl::Status Runtime::CopySegment(const sharding::Segment& seg, char* message, void* full,
                                  int64_t elem_bytes, bool to_owner) {
  const size_t full_pitch = static_cast<size_t>(matrices_[seg.matrix].cols * elem_bytes);
  char* at = static_cast<char*>(full) + seg.row_begin * static_cast<int64_t>(full_pitch);
  if (seg.col_count == 0) {  // whole rows: one contiguous block
    return to_owner ? backend_->CopyAsync(at, message, static_cast<size_t>(seg.bytes))
                    : backend_->CopyAsync(message, at, static_cast<size_t>(seg.bytes));
  }
  // A column piece: packed in the message (pitch = the piece's row), its rows cols apart in the
  // full buffer; one rectangle copy.
  const size_t piece_row = static_cast<size_t>(seg.col_count * elem_bytes);
  char* full_at = at + seg.col_begin * elem_bytes;
  return to_owner ? backend_->CopyRectAsync(full_at, full_pitch, message, piece_row, piece_row,
                                            seg.row_count)
                  : backend_->CopyRectAsync(message, piece_row, full_at, full_pitch, piece_row,
                                            seg.row_count);
}

absl::Status Runtime::NewtonSchulzBucket(int b) {
  StepTiming::StageTimer timer(&timing_, kStageNewtonSchulz, b);
  const Bucket& bucket = buckets_[b];
  const int64_t ns_bytes = static_cast<int64_t>(SizeOf(ns_dtype_));
  // Unpack every peer's rows (or rectangles) into the owner's full U.
  for (int p = 0; p < world_; ++p) {
    for (const sharding::Segment& seg : bucket.plan.gather_recvs[p]) {
      NORMUON_RETURN_IF_ERROR(CopySegment(seg, bucket.recv_buf + bucket.recv_offset[p] + seg.offset,
                                          owner_u_[seg.matrix], ns_bytes, /*to_owner=*/true));
    }
  }
  NORMUON_RETURN_IF_ERROR(UnpackElementV(b));
  for (int32_t i : bucket.batches) NORMUON_RETURN_IF_ERROR(backend_->NewtonSchulz(batches_[i]));
  for (int32_t k : bucket.matrices) {
    if (owner_o_[k] == nullptr) continue;
    if (matrices_[k].column_axis) {
      // Neuron axis = columns: the owner, which holds O whole, makes the column statistics.
      NORMUON_RETURN_IF_ERROR(backend_->ColumnStats(matrices_[k], owner_o_[k]));
    } else if (layout_.matrices[k].column_split) {
      // Rows split across column pieces: the owner makes every row's statistics from the whole
      // O, with the arithmetic (and so the bits) of a rank holding the rows whole. v comes from
      // the step's v all-reduce; v_new goes to the slots, for the pieces to take after the slot
      // all-reduce.
      const MatrixUnit& u = layout_.matrices[k];
      MatrixWork ow = matrices_[k];
      ow.row_begin = 0;
      ow.row_count = u.rows;
      ow.o_rows = owner_o_[k];
      ow.col_begin = ow.col_count = ow.ld = ow.u_ld = 0;
      if (u.vsync_offset >= 0) {
        ow.v = vsync_total_ + u.vsync_offset;
        ow.v_new = slots_local_ + u.vnew_slot;
      } else if (u.element_v_split) {
        // AdaMuon: the whole v, gathered with U; v_new overwrites it element by element (each
        // read before its write), and each piece holder makes its own v_new (RowStatsBucket).
        ow.v = ow.v_new = owner_v_[k];
      }
      NORMUON_RETURN_IF_ERROR(backend_->RowStats(ow));
    }
  }
  // Pack each peer's rows of O into the gather's receive layout; the scatter sends them back,
  // landing where that peer's U rows left from (its MatrixWork::o_rows).
  for (int p = 0; p < world_; ++p) {
    for (const sharding::Segment& seg : bucket.plan.gather_recvs[p]) {
      NORMUON_RETURN_IF_ERROR(CopySegment(seg, bucket.recv_buf + bucket.recv_offset[p] + seg.offset,
                                          owner_o_[seg.matrix], ns_bytes, /*to_owner=*/false));
    }
  }
  return absl::OkStatus();
}

absl::Status Runtime::SyncSplitV() {
  if (layout_.vsync_floats == 0) return absl::OkStatus();
  // Each row's v from the piece holding its column 0 (exactly one, the pieces tiling the block);
  // the other entries stay 0 from allocation, so the sum is that value exactly.
  for (int32_t k = 0; k < static_cast<int32_t>(matrices_.size()); ++k) {
    const MatrixUnit& u = layout_.matrices[k];
    if (u.vsync_offset < 0) continue;
    NORMUON_RETURN_IF_ERROR(EachPart(k, [&](const MatrixWork& w) {
      if (w.row_count == 0 || w.col_begin != 0) return absl::OkStatus();
      return backend_->CopyAsync(vsync_local_ + u.vsync_offset + w.row_begin, w.v,
                                 static_cast<size_t>(w.row_count) * 4);
    }));
  }
  if (world_ == 1) {  // one rank holding a block as several column pieces: its own sum
    return backend_->CopyAsync(vsync_total_, vsync_local_,
                               static_cast<size_t>(layout_.vsync_floats) * 4);
  }
  timing_.AddBytes(static_cast<uint64_t>(layout_.vsync_floats) * 4,
                   static_cast<uint64_t>(layout_.vsync_floats) * 4);
  return comm_->AllReduceSum(vsync_local_, vsync_total_,
                             static_cast<size_t>(layout_.vsync_floats), stream_);
}

absl::Status Runtime::TakeSplitVNew() {
  for (int32_t k = 0; k < static_cast<int32_t>(matrices_.size()); ++k) {
    const MatrixUnit& u = layout_.matrices[k];
    if (u.vnew_slot < 0) continue;
    NORMUON_RETURN_IF_ERROR(EachPart(k, [&](const MatrixWork& w) {
      if (w.row_count == 0) return absl::OkStatus();
      return backend_->CopyAsync(w.v_new, slots_total_ + u.vnew_slot + w.row_begin,
                                 static_cast<size_t>(w.row_count) * 4);
    }));
  }
  return absl::OkStatus();
}

absl::Status Runtime::ScatterBucket(int b) {
  const Bucket& bucket = buckets_[b];
  if (world_ == 1) return absl::OkStatus();
  StepTiming::StageTimer timer(&timing_, kStageScatter, b);
  return comm_->Exchange(bucket.scatter_sends, bucket.scatter_recvs, CollectiveStream());
}

absl::Status Runtime::RowStatsBucket(int b) {
  StepTiming::StageTimer timer(&timing_, kStageRowStats, b);
  for (int32_t k : buckets_[b].matrices) {
    // Column-axis statistics, and those of rows split across column pieces, were made by the
    // owner (NewtonSchulzBucket); an AdaMuon piece still makes its own elements' v_new.
    if (!matrices_[k].column_axis && !layout_.matrices[k].column_split) {
      NORMUON_RETURN_IF_ERROR(
          EachPart(k, [&](const MatrixWork& w) { return backend_->RowStats(w); }));
    } else if (layout_.matrices[k].element_v_split) {
      // AdaMuon: each part's v_new from its O, with the owner's arithmetic (the same bits).
      NORMUON_RETURN_IF_ERROR(EachPart(k, [&](const MatrixWork& w) {
        return w.row_count > 0 ? backend_->ElementSecondMoment(w) : absl::OkStatus();
      }));
    }
  }
  return absl::OkStatus();
}

// Two streams: each stage waits for its input's hand-off event on its own stream, runs between a
// start and an end mark, and records its output's event: momentum -> gather -> Newton-Schulz ->
// scatter -> row statistics, hand-off slots 4b + 0..3 (the last slot, 4 * buckets, joins the
// streams at the end). Gather and scatter run on the communication stream.
absl::Status Runtime::TwoStreamStage(int stage, int b) {
  const bool on_comm = stage == kStageGather || stage == kStageScatter;
  if (stage > kStageMomentum) {
    // The step's stream waiting on communication: exposed communication (docs/ARCHITECTURE.md
    // section 6) is the time from this mark to the stage's start mark.
    if (!on_comm) NORMUON_RETURN_IF_ERROR(timing_.WaitMark(stage, b));
    NORMUON_RETURN_IF_ERROR(backend_->WaitHandoff(4 * b + stage - 1, on_comm));
  }
  NORMUON_RETURN_IF_ERROR(timing_.PipelineMark(stage, b, /*end=*/false));
  switch (stage) {
    case kStageMomentum: NORMUON_RETURN_IF_ERROR(MomentumBucket(b)); break;
    case kStageGather: NORMUON_RETURN_IF_ERROR(GatherBucket(b)); break;
    case kStageNewtonSchulz: NORMUON_RETURN_IF_ERROR(NewtonSchulzBucket(b)); break;
    case kStageScatter: NORMUON_RETURN_IF_ERROR(ScatterBucket(b)); break;
    default: NORMUON_RETURN_IF_ERROR(RowStatsBucket(b)); break;
  }
  NORMUON_RETURN_IF_ERROR(timing_.PipelineMark(stage, b, /*end=*/true));
  if (stage < kStageRowStats) NORMUON_RETURN_IF_ERROR(backend_->RecordHandoff(4 * b + stage, on_comm));
  return absl::OkStatus();
}

absl::Status Runtime::JoinCommStream() {
  const int32_t join = 4 * static_cast<int32_t>(buckets_.size());  // the last hand-off slot
  NORMUON_RETURN_IF_ERROR(backend_->RecordHandoff(join, /*on_comm=*/true));
  return backend_->WaitHandoff(join, /*on_comm=*/false);
}

absl::Status Runtime::RunBuckets() {
  timing_.SetBuckets(static_cast<int32_t>(buckets_.size()));
  for (const Bucket& b : buckets_) {
    for (int p = 0; p < world_; ++p) {
      timing_.AddBytes(static_cast<uint64_t>(b.plan.gather_send_bytes[p] + b.plan.scatter_send_bytes[p]),
                       static_cast<uint64_t>(b.plan.gather_recv_bytes[p] + b.plan.scatter_recv_bytes[p]));
    }
    for (size_t p = 0; p < b.vplan.gather_send_bytes.size(); ++p) {  // AdaMuon's v messages
      timing_.AddBytes(static_cast<uint64_t>(b.vplan.gather_send_bytes[p]),
                       static_cast<uint64_t>(b.vplan.gather_recv_bytes[p]));
    }
  }
  if (pipeline_ != nullptr) {
    double exposed_comm_ms = 0.0;
    absl::Status s = pipeline_->Wait(&exposed_comm_ms);
    if (two_streams_) {
      // The step's stream waits for everything queued on the communication stream, also after a
      // failure (a later step must not overwrite buffers a copy still reads).
      absl::Status joined = timing_.JoinBegin();
      if (joined.ok()) joined = JoinCommStream();
      timing_.JoinEnd();  // the next mark (the all-reduce's start) ends the wait
      if (s.ok()) s = joined;
      if (!s.ok()) timing_.ClearPipeline();
    }
    timing_.EndBuckets(exposed_comm_ms);
    return s;
  }
  // Sequential: every stage inline, bucket after bucket; all communication is exposed. After a
  // failure this rank still issues the step's remaining exchanges, without the compute between
  // them (DrainAfter), so that its peers' collectives complete and every rank reaches the
  // all-reduce, where the failure travels in the flags.
  for (int b = 0; b < static_cast<int>(buckets_.size()); ++b) {
    absl::Status s = MomentumBucket(b);
    if (s.ok()) s = timing_.Mark(kStageMomentum, b);
    if (!s.ok()) return DrainAfter(b, /*gather_done=*/false, s);
    s = GatherBucket(b);
    if (s.ok()) s = timing_.Mark(kStageGather, b);
    if (!s.ok()) return DrainAfter(b, /*gather_done=*/true, s);
    s = NewtonSchulzBucket(b);
    if (s.ok()) s = timing_.Mark(kStageNewtonSchulz, b);
    if (!s.ok()) return DrainAfter(b, /*gather_done=*/true, s);
    s = ScatterBucket(b);
    if (s.ok()) s = timing_.Mark(kStageScatter, b);
    if (!s.ok()) return DrainAfter(b + 1, /*gather_done=*/false, s);
    s = RowStatsBucket(b);
    if (s.ok()) s = timing_.Mark(kStageRowStats, b);
    if (!s.ok()) return DrainAfter(b + 1, /*gather_done=*/false, s);
  }
  timing_.EndBucketsSequential();
  return absl::OkStatus();
}

absl::Status Runtime::DrainAfter(int b, bool gather_done, const absl::Status& failure) {
  // The data these exchanges move is never committed (the step fails on every rank); their own
  // failures add nothing to the first one, and a failed communicator fails them at once.
  for (; b < static_cast<int>(buckets_.size()); ++b) {
    if (!gather_done) GatherBucket(b).IgnoreError();
    gather_done = false;
    ScatterBucket(b).IgnoreError();
  }
  return failure;
}

// ---- Starting a step ----

void Runtime::FillHostScalars() {
  for (size_t g = 0; g < groups_.size(); ++g) {
    const normuon_group_desc_t& d = groups_[g].desc;
    host_scalars_[g] = GroupScalars{d.lr, d.weight_decay, d.beta1, d.beta2, d.eps, {0, 0, 0}};
  }
}

absl::Status Runtime::CheckStepStream(void* stream, const char* call) const {
  if (!step_begun_ || stream == stream_) return absl::OkStatus();
  return Invalid(absl::StrCat(
      call, ": stream ", reinterpret_cast<uintptr_t>(stream),
      " differs from the stream this step began on (", reinterpret_cast<uintptr_t>(stream_),
      "); every normuon_grad_ready and the normuon_step of one step take the same stream"));
}

absl::Status Runtime::BeginStepWork(void* stream) {
  if (config_.cuda_graph && stream == nullptr) {
    return Invalid("stream is NULL, but config.cuda_graph = 1: the legacy default stream cannot be "
                   "captured into a CUDA graph; pass a stream (cudaStreamNonBlocking)");
  }
  step_begun_ = true;
  stream_ = stream;
  // Graph mode: nothing runs before step, which captures or launches the whole step (GraphStep).
  if (config_.cuda_graph) return absl::OkStatus();
  return StartStep(/*copy_scalars=*/true);
}

absl::Status Runtime::StartStep(bool copy_scalars) {
  FillHostScalars();
  stepped_ = true;
  NORMUON_RETURN_IF_ERROR(backend_->BeginStep(
      stream_, host_scalars_.data(), dev_scalars_,
      copy_scalars ? sizeof(GroupScalars) * host_scalars_.size() : 0, control_));
  NORMUON_RETURN_IF_ERROR(timing_.Begin());
  // Before any bucket can start: the owners of column-split blocks need their rows' v. A failed
  // all-reduce fails the step as any failed collective does: nothing is committed, and step
  // reports it.
  split_v_status_ = SyncSplitV();
  if (!split_v_status_.ok()) NORMUON_RETURN_IF_ERROR(backend_->SetCommError(control_));
  return absl::OkStatus();
}

uint32_t Runtime::ReadySetHash() const {
  uint32_t h = 2166136261u;  // FNV-1a over the indices of the parameters marked ready
  for (size_t i = 0; i < grad_ready_.size(); ++i) {
    if (!grad_ready_[i]) continue;
    for (int shift = 0; shift < 32; shift += 8) {
      h = (h ^ ((static_cast<uint32_t>(i) >> shift) & 0xffu)) * 16777619u;
    }
  }
  return h;
}

absl::Status Runtime::StepFlagsStatus(const StepControl& control, const float* flags) const {
  const int32_t e = control.comm_error;
  auto rank_list = [](const std::vector<int>& ranks) {
    return absl::StrCat(ranks.size() == 1 ? "rank " : "ranks ", absl::StrJoin(ranks, ", "));
  };
  if (e == kEpochsDiffer) {
    // Group the ranks by epoch; every rank below the highest did not commit the steps between.
    std::map<uint32_t, std::vector<int>> by_epoch;
    for (int r = 0; r < world_; ++r) by_epoch[StepFlagsEpochOf(flags, world_, r)].push_back(r);
    const uint32_t top = by_epoch.rbegin()->first;
    std::vector<std::string> lagging;
    for (const auto& [epoch, ranks] : by_epoch) {
      if (epoch == top) continue;
      const uint64_t first = static_cast<uint64_t>(epoch) + 1;
      lagging.push_back(absl::StrCat(
          rank_list(ranks), " did not commit ",
          first == top ? absl::StrCat("step ", first)
                       : absl::StrCat("steps ", first, " to ", top),
          " (", epoch, " committed)"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "the ranks' optimizer states have diverged: ", absl::StrJoin(lagging, "; "), ", which ",
        rank_list(by_epoch.rbegin()->second), " committed (", top,
        " committed); an earlier step failed on some ranks after the others had committed it "
        "(a one-sided failure of its last collective). Nothing was updated on any rank, and "
        "every step fails until the state is restored on every rank from a checkpoint "
        "(normuon_load_checkpoint), or the runtimes are created anew"));
  }
  if (e == kPeerFailed) {
    std::vector<int> failed;
    for (int r = 0; r < world_; ++r) {
      if (StepFlagsFailedOf(flags, world_, r)) failed.push_back(r);
    }
    return absl::AbortedError(absl::StrCat(
        rank_list(failed), " failed in this step (a collective or a stage returned an error "
        "there; its own error says which); every rank skipped the step and nothing was updated"));
  }
  if (e >= kMarkedSetsDiffer) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ranks disagree on which parameters were marked with normuon_grad_ready this step "
        "(rank ", e - kMarkedSetsDiffer, " differs from rank 0); every rank must mark the same "
        "parameters"));
  }
  return absl::OkStatus();
}

void Runtime::ResetReady() {
  step_begun_ = false;
  std::fill(grad_ready_.begin(), grad_ready_.end(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    bucket_pending_[b] = static_cast<int32_t>(buckets_[b].matrices.size());
  }
}

absl::Status Runtime::GradReady(const int32_t* params, int32_t count, void* stream) {
  if (!finalized_) return absl::FailedPreconditionError("grad_ready before finalize");
  if (count < 0) return Invalid(absl::StrCat("count = ", count, " must be >= 0"));
  if (count > 0 && params == nullptr) return Invalid("params is null");
  NORMUON_RETURN_IF_ERROR(CheckStepStream(stream, "grad_ready"));
  // Check the whole list before marking anything.
  for (int32_t i = 0; i < count; ++i) {
    const int32_t p = params[i];
    NORMUON_RETURN_IF_ERROR(CheckParam(p));
    if (params_[p].kind != Kind::kMatrix) {
      return Invalid(absl::StrCat("params[", i, "] = ", p, " ('", params_[p].name,
                                  "') is an AdamW parameter; grad_ready takes matrices only"));
    }
    if (grad_ready_[p]) {
      return Invalid(absl::StrCat("params[", i, "] = ", p, " ('", params_[p].name,
                                  "') was already marked ready in this step"));
    }
    for (int32_t j = 0; j < i; ++j) {
      if (params[j] == p) {
        return Invalid(absl::StrCat("params[", i, "] = ", p, " ('", params_[p].name,
                                    "') is listed twice"));
      }
    }
  }
  if (!step_begun_) NORMUON_RETURN_IF_ERROR(BeginStepWork(stream));
  for (int32_t i = 0; i < count; ++i) {
    const int32_t p = params[i];
    grad_ready_[p] = 1;
    for (int32_t k : params_[p].blocks) {
      const int32_t b = layout_.matrices[k].bucket;
      if (--bucket_pending_[b] == 0 && pipeline_ != nullptr) pipeline_->MarkReady(b);
    }
  }
  return absl::OkStatus();
}

// ---- The step ----

absl::Status Runtime::Step(float lr, float weight_decay, void* stream) {
  if (!finalized_) return absl::FailedPreconditionError("step before finalize");
  if (std::isnan(lr) || std::isinf(lr)) return Invalid(absl::StrCat("lr = ", lr, " is not finite"));
  if (std::isnan(weight_decay) || std::isinf(weight_decay)) {
    return Invalid(absl::StrCat("weight_decay = ", weight_decay, " is not finite"));
  }
  NORMUON_RETURN_IF_ERROR(CheckStepStream(stream, "step"));
  if (lr >= 0.0f) groups_[NORMUON_GROUP_MATRIX_DEFAULT].desc.lr = lr;
  if (weight_decay >= 0.0f) groups_[NORMUON_GROUP_MATRIX_DEFAULT].desc.weight_decay = weight_decay;
  // The agreement check needs the set marked by grad_ready before step marks the rest.
  const uint32_t ready_hash = ReadySetHash();
  const bool begun_by_grad_ready = step_begun_;
  if (!step_begun_) NORMUON_RETURN_IF_ERROR(BeginStepWork(stream));
  ResetReady();
  if (config_.cuda_graph) return GraphStep(ready_hash);
  return StepWork(begun_by_grad_ready, ready_hash);
}

absl::Status Runtime::StepCancel() {
  if (!finalized_ || !step_begun_) return absl::OkStatus();
  // Graph mode runs nothing before step; a pipeline-less schedule ran nothing but the start.
  absl::Status s;
  if (!config_.cuda_graph && pipeline_ != nullptr) {
    // Drain: the ranks' exchanges must all happen, in the fixed order, for every rank to come
    // out of them; buckets that never became ready skip their momentum stage (their gradients
    // may be gone). Nothing after the buckets runs: no all-reduce, no commit, no count.
    // Only buckets not yet ready are flagged: no stage of theirs can have started, and Wait
    // makes them ready under the pipeline's lock, after these writes.
    for (size_t b = 0; b < buckets_.size(); ++b) {
      if (bucket_pending_[b] > 0) skip_momentum_[b] = 1;
    }
    double exposed_comm_ms = 0.0;
    s = pipeline_->Wait(&exposed_comm_ms);
    std::fill(skip_momentum_.begin(), skip_momentum_.end(), 0);
    if (two_streams_) {
      // Nothing may still read the step's buffers when the next step starts.
      const absl::Status joined = JoinCommStream();
      if (s.ok()) s = joined;
      timing_.ClearPipeline();
    }
  }
  ResetReady();
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("step_cancel on ", comm_->Describe(),
                                               ": a collective failed while the step was "
                                               "abandoned; nothing was updated: ",
                                               s.message()));
  }
  return absl::OkStatus();
}

absl::Status Runtime::GraphStep(uint32_t ready_hash) {
  if (!backend_->HasGraph()) {
    // Capture: the step's calls as an eager step makes them (BeginStep without the scalar copy,
    // which each launch makes), recorded into a graph on the step's stream instead of run.
    NORMUON_RETURN_IF_ERROR(CudaGraphError(backend_->BeginCapture(stream_),
                                           "beginning the capture of the step (nothing ran)"));
    absl::Status s = StartStep(/*copy_scalars=*/false);
    if (s.ok()) s = StepWork(/*begun_by_grad_ready=*/false, ready_hash);
    const absl::Status end = backend_->EndCapture(/*instantiate=*/s.ok());
    if (!s.ok() || !end.ok()) {
      // Nothing of this step ran, and no graph is kept: the next step captures again.
      timing_.DropMarks();
      return CudaGraphError(s.ok() ? end : s,
                            "capturing the step into a CUDA graph failed; nothing of this step "
                            "ran, and the next step captures again");
    }
  } else {
    // Replay: the graph holds the step's work; the profile and the marks keep what the capture
    // recorded (the same every step).
    stepped_ = true;
  }
  timing_.BeginReplay();
  FillHostScalars();
  NORMUON_RETURN_IF_ERROR(CudaGraphError(
      backend_->LaunchGraph(stream_, host_scalars_.data(), dev_scalars_,
                            sizeof(GroupScalars) * host_scalars_.size()),
      "launching the step's graph"));
  timing_.EndStep();
  return absl::OkStatus();
}

absl::Status Runtime::StepWork(bool begun_by_grad_ready, uint32_t ready_hash) {
  // The trainer's backward pass between grad_ready and step: in total_ms, in no stage.
  if (begun_by_grad_ready) timing_.Lap(-1);
  NORMUON_RETURN_IF_ERROR(timing_.Mark(-1, -1));  // the finite check's start
  if (config_.check_finite) {
    for (int32_t k = 0; k < static_cast<int32_t>(matrices_.size()); ++k) {
      // a piece's rows, ld elements apart
      NORMUON_RETURN_IF_ERROR(EachPart(k, [&](const MatrixWork& w) {
        return backend_->CheckFiniteRows(w.index, w.grad, w.grad_dtype, w.row_count, PieceCols(w),
                                         ParamLd(w), control_);
      }));
    }
    for (const AdamWWork& w : adamw_) {
      NORMUON_RETURN_IF_ERROR(backend_->CheckFinite(w.index, w.grad, w.grad_dtype, w.count, control_));
    }
  }
  // Alone, a synchronous backend knows at once that the step is lost; with peers every rank
  // still takes part in every collective, and the flags travel with the row slots.
  const bool skip_work = world_ == 1 && backend_->IsSynchronous() && StepSkipped(*control_) &&
                         pipeline_ == nullptr;
  timing_.Lap(kStageFiniteCheck);
  NORMUON_RETURN_IF_ERROR(timing_.Mark(kStageFiniteCheck, -1));
  absl::Status comm_status;
  bool last_collective_failed = false;  // this rank's all-reduce failed, after every exchange
  bool across_ranks = false;            // the flags say the step is lost (another rank, epochs)
  bool marked_failed = false;           // SetCommError ran before the flags were written
  if (!skip_work) {
    comm_status = RunBuckets();
    if (comm_status.ok()) comm_status = split_v_status_;
    if (comm_status.ok()) NORMUON_RETURN_IF_ERROR(timing_.Mark(-1, -1));  // the all-reduce's start
    timing_.Lap(-1);
    if (begun_by_grad_ready && comm_status.ok()) {
      // grad_ready began the step with the scalars of that moment; lr and weight decay may have
      // changed since, and the commit reads them: copied in the step's stream order, after
      // every stage that reads the old ones (the buckets' work is all issued by now).
      FillHostScalars();
      NORMUON_RETURN_IF_ERROR(backend_->RefreshScalars(
          host_scalars_.data(), dev_scalars_, sizeof(GroupScalars) * host_scalars_.size()));
    }
    if (world_ > 1) {
      // This rank's non-finite flag, the hash of the set it marked with grad_ready, its epoch
      // (committed steps) and whether the step failed here ride after the row slots; written and
      // folded on the backend (the device, for CUDA), so every rank skips the same steps without
      // the host waiting. A rank whose collective or stage failed still takes part (it issued
      // every exchange: DrainAfter, BucketPipeline's drain) and says so, so that no rank commits
      // a step that failed anywhere; only a failure of this all-reduce itself can be one-sided,
      // and the next step's epochs show it (docs/ARCHITECTURE.md section 6, "One-sided failures").
      if (!comm_status.ok()) {
        NORMUON_RETURN_IF_ERROR(backend_->SetCommError(control_));
        marked_failed = true;
      }
      NORMUON_RETURN_IF_ERROR(backend_->WriteStepFlags(slots_local_ + layout_.flag_base, rank_,
                                                       world_, ready_hash, control_));
      const absl::Status reduced = comm_->AllReduceSum(
          slots_local_, slots_total_, static_cast<size_t>(layout_.slot_floats), stream_);
      timing_.AddBytes(static_cast<uint64_t>(layout_.slot_floats) * 4,
                       static_cast<uint64_t>(layout_.slot_floats) * 4);
      if (!reduced.ok()) {
        if (comm_status.ok()) {
          comm_status = reduced;
          last_collective_failed = true;
        }
      } else {
        NORMUON_RETURN_IF_ERROR(
            backend_->FoldStepFlags(slots_total_ + layout_.flag_base, world_, control_));
        // A synchronous backend can say so now; on CUDA the step shows as skipped in
        // normuon_step_result (which reports diverged epochs as an error).
        if (comm_status.ok() && backend_->IsSynchronous()) {
          comm_status = StepFlagsStatus(*control_, slots_total_ + layout_.flag_base);
          across_ranks = !comm_status.ok();
        }
      }
    }
    if (comm_status.ok()) {
      NORMUON_RETURN_IF_ERROR(TakeSplitVNew());
      for (const MatrixWork& w : matrices_) {
        if (w.column_axis) NORMUON_RETURN_IF_ERROR(backend_->ColumnUpdate(w));
      }
      for (const MatrixWork& w : matrices_) NORMUON_RETURN_IF_ERROR(backend_->FinishNorms(w));
      timing_.Lap(kStageAllReduce);
      NORMUON_RETURN_IF_ERROR(timing_.Mark(kStageAllReduce, -1));
      for (int32_t k = 0; k < static_cast<int32_t>(matrices_.size()); ++k) {
        NORMUON_RETURN_IF_ERROR(EachPart(
            k, [&](const MatrixWork& w) { return backend_->CommitMatrix(w, control_); }));
      }
      timing_.Lap(kStageUpdate);
      NORMUON_RETURN_IF_ERROR(timing_.Mark(kStageUpdate, -1));
      for (const AdamWWork& w : adamw_) NORMUON_RETURN_IF_ERROR(backend_->CommitAdamW(w, control_));
      timing_.Lap(kStageAdamW);
      NORMUON_RETURN_IF_ERROR(timing_.Mark(kStageAdamW, -1));
    } else if (!marked_failed && !across_ranks) {
      // A failed collective: nothing was committed; count the step as skipped. (The step's flags
      // may have said why already: kept for normuon_step_result.)
      NORMUON_RETURN_IF_ERROR(backend_->SetCommError(control_));
    }
  }
  NORMUON_RETURN_IF_ERROR(
      backend_->EndStep(adamw_steps_, static_cast<int64_t>(adamw_.size()), control_));
  timing_.EndStep();
  if (across_ranks) {
    return absl::Status(comm_status.code(), absl::StrCat("step skipped on ", comm_->Describe(),
                                                         ": ", comm_status.message()));
  }
  if (!comm_status.ok()) {
    // The step's last collective: the other ranks' may have succeeded, and they commit.
    const absl::string_view one_sided =
        last_collective_failed
            ? "; it was the step's last collective, so ranks where it succeeded may have "
              "committed the step: then the next step fails on every rank, naming this rank, "
              "and the state must be restored from a checkpoint"
            : "";
    return absl::Status(comm_status.code(),
                        absl::StrCat("step skipped on ", comm_->Describe(),
                                     ": a collective or a stage failed, nothing was updated: ",
                                     comm_status.message(), one_sided));
  }
  if (backend_->IsSynchronous() && control_->nonfinite_param != kNoParam) {
    const Param& bad = params_[control_->nonfinite_param];
    return absl::DataLossError(absl::StrCat("step skipped: the gradient of parameter '", bad.name,
                                            "' (param ", control_->nonfinite_param,
                                            ") holds NaN or Inf; nothing was updated"));
  }
  return absl::OkStatus();
}

absl::Status Runtime::StepResult(normuon_step_info_t* info) {
  if (!finalized_) return absl::FailedPreconditionError("step_result before finalize");
  NORMUON_RETURN_IF_ERROR(backend_->WaitStep());
  StepControl c;
  NORMUON_RETURN_IF_ERROR(backend_->CopyToHost(&c, control_, sizeof(c)));
  if (stepped_ && world_ > 1 && c.comm_error == kEpochsDiffer) {
    // The ranks' states diverged: an error, not only a skipped step (a synchronous backend's
    // step returned it already; an asynchronous one's step could not).
    std::vector<float> flags(static_cast<size_t>(kStepFlagsPerRank * world_));
    NORMUON_RETURN_IF_ERROR(backend_->CopyToHost(flags.data(), slots_total_ + layout_.flag_base,
                                                 flags.size() * sizeof(float)));
    return StepFlagsStatus(c, flags.data());
  }
  info->steps_taken = c.steps_taken;
  info->steps_skipped = c.steps_skipped;
  info->last_skipped = stepped_ && StepSkipped(c) ? 1 : 0;
  info->nonfinite_param = c.nonfinite_param == kNoParam ? -1 : c.nonfinite_param;
  info->ns_fallbacks = c.ns_fallbacks;
  info->ns_fallback_param = !stepped_ || c.ns_fallback_param == kNoParam ? -1 : c.ns_fallback_param;
  info->ns_fallback_reason = info->ns_fallback_param == -1 ? 0 : c.ns_fallback_reason;
  return absl::OkStatus();
}

absl::Status Runtime::LastStepProfile(normuon_step_profile_t* profile) const {
  if (!stepped_) return absl::FailedPreconditionError("no step has run yet");
  NORMUON_ASSIGN_OR_RETURN(*profile, timing_.Profile());
  return absl::OkStatus();
}

absl::StatusOr<std::string> Runtime::LastStepTrace() const {
  if (!stepped_) return absl::FailedPreconditionError("no step has run yet");
  return timing_.Trace(rank_);
}

}  // namespace normuon
