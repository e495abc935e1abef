// The timing of a step (docs/ARCHITECTURE.md section 3, "Profiles and traces"): the stage
// vocabulary shared by the profile, the trace and the code, host clocks and span logs on a
// synchronous backend, device marks on an asynchronous one, and the two outputs
// (normuon_last_step_profile and the Chrome trace). Sized at finalize; recording never
// allocates.
#ifndef NORMUON_RUNTIME_TIMING_H_
#define NORMUON_RUNTIME_TIMING_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "normuon/normuon.h"

namespace normuon {

// The stages of a step, one vocabulary: the first five run per bucket (in this order), the rest
// once per step. The profile's fields and the trace's event names follow it (StageName).
enum Stage : int32_t {
  kStageMomentum = 0,   // momentum + Nesterov + cast into the send buffer ("blend")
  kStageGather,         // the exchange of U rows to the owners
  kStageNewtonSchulz,   // unpack, Newton-Schulz of the owned matrices, pack
  kStageScatter,        // the exchange of O rows back
  kStageRowStats,       // row statistics of this rank's rows
  kStageFiniteCheck,
  kStageAllReduce,      // the slot all-reduce and the norms
  kStageUpdate,         // the matrices' commit
  kStageAdamW,
  kStageCount
};
inline constexpr int kBucketStages = 5;

// The trace's name of a stage: "momentum", "gather", "newton_schulz", ...
const char* StageName(int32_t stage);

// One timed span of a step (steady-clock nanoseconds).
struct TraceSpan {
  int32_t stage;
  int32_t bucket;  // -1 for whole-step stages
  int64_t begin_ns, end_ns;
};

// A fixed-capacity log of spans written by one thread; spans beyond the capacity are not kept.
class SpanLog {
 public:
  void Reserve(size_t capacity) { spans_.resize(capacity); }
  void Reset() { size_ = 0; }
  void Add(const TraceSpan& span) {
    if (size_ < spans_.size()) spans_[size_++] = span;
  }
  size_t size() const { return size_; }
  const TraceSpan& operator[](size_t i) const { return spans_[i]; }

 private:
  std::vector<TraceSpan> spans_;
  size_t size_ = 0;
};

int64_t SteadyNs(std::chrono::steady_clock::time_point t);

class StepTiming {
 public:
  // Finalize: `backend` outlives this object. An asynchronous backend gets its device marks
  // prepared (PrepareMarks); `two_streams`: the pipelined CUDA schedule, whose stages record
  // marks in fixed slots from two threads.
  absl::Status Prepare(Backend* backend, int buckets, bool two_streams);

  // The start of a step: the profile, stage times, clock and logs are reset, and on an
  // asynchronous backend mark 0 is recorded.
  absl::Status Begin();
  // Graph-mode replay: the graph records the marks; only the host clock and origin restart.
  void BeginReplay();
  // A failed capture recorded nothing.
  void DropMarks() { marks_used_ = 0; }

  // A device mark ending a span of `stage` (-1: a start mark, no span) on an asynchronous
  // backend; nothing on a synchronous one.
  absl::Status Mark(int32_t stage, int32_t bucket);
  // Two streams: a bucket stage's start or end mark, in its fixed slot (stage 1 and 3 on the
  // communication stream).
  absl::Status PipelineMark(int stage, int bucket, bool end);
  // Two streams: the mark before the step's stream waits on communication for `stage` (2 or 4).
  absl::Status WaitMark(int stage, int bucket);
  // Two streams: around the final join of the streams; ClearPipeline after a failure (some
  // stage marks were not recorded: no spans from them).
  absl::Status JoinBegin();
  void JoinEnd() { join_marks_[1] = marks_used_; }
  void ClearPipeline();

  // Times a bucket stage on the host (the calling thread's log: each stage runs on one thread).
  class StageTimer {
   public:
    StageTimer(StepTiming* t, int stage, int bucket);
    ~StageTimer();

   private:
    StepTiming* t_;
    int stage_, bucket_;
    std::chrono::steady_clock::time_point start_;
  };

  // Host time since the last lap (or Begin) to a whole-step stage (-1: no stage, e.g. the
  // trainer's backward pass between grad_ready and step).
  void Lap(int32_t stage);
  // After the buckets: the stage times into the profile; exposed communication as measured.
  void EndBuckets(double exposed_comm_ms);
  void EndBucketsSequential() { EndBuckets(stage_ms_[kStageGather] + stage_ms_[kStageScatter]); }
  void AddBytes(uint64_t sent, uint64_t received) {
    profile_.bytes_sent += sent;
    profile_.bytes_received += received;
  }
  void SetBuckets(int32_t buckets) { profile_.buckets = buckets; }
  void EndStep();  // total_ms

  // The last step's profile and trace events (pid = rank; tid 0 step, 1 compute,
  // 2 communication). An asynchronous backend's come from its device marks (waits for the
  // step).
  absl::StatusOr<normuon_step_profile_t> Profile() const;
  absl::StatusOr<std::string> Trace(int rank) const;

 private:
  // Two streams: per bucket, a start and an end mark for each of the five stages (10) and a
  // mark before each of the two waits of the step's stream on communication (before
  // Newton-Schulz and before row statistics): 12 slots from 1; the step thread's marks follow.
  static constexpr int32_t kSlotsPerBucket = 12;
  int32_t PipelineSlots() const { return two_streams_ ? kSlotsPerBucket * buckets_ : 0; }
  static int32_t StageSlot(int stage, int bucket, bool end) {
    return 1 + kSlotsPerBucket * bucket + 2 * stage + (end ? 1 : 0);
  }
  static int32_t WaitSlot(int stage, int bucket) {
    return 1 + kSlotsPerBucket * bucket + 2 * kBucketStages + (stage == kStageNewtonSchulz ? 0 : 1);
  }
  absl::Status DeviceSpans(std::vector<TraceSpan>* spans) const;

  Backend* backend_ = nullptr;
  bool synchronous_ = true;
  bool two_streams_ = false;
  int32_t buckets_ = 0;
  normuon_step_profile_t profile_{};
  double stage_ms_[kBucketStages] = {0, 0, 0, 0, 0};  // each written by one thread only
  std::chrono::steady_clock::time_point start_, last_;
  // Host spans: the caller's thread, the compute stages, the communication stages.
  SpanLog main_, compute_, comm_;
  // Device marks of the step: mark_stage_[i] is the stage (mark_bucket_[i] the bucket) of the
  // span that ends at mark i; mark 0 starts the step; mark_from_[i] >= 0: the span starts at
  // that mark instead of mark i - 1; a stage < 0 at i >= 1 is a start mark.
  int32_t marks_used_ = 0;
  std::vector<int32_t> mark_stage_, mark_bucket_, mark_from_;
  std::chrono::steady_clock::time_point mark_base_;  // host time of mark 0 (trace origin)
  int32_t join_marks_[2] = {-1, -1};
};

}  // namespace normuon

#endif  // NORMUON_RUNTIME_TIMING_H_
