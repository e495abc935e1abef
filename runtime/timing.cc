#include "runtime/timing.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace normuon {

const char* StageName(int32_t stage) {
  static const char* const kNames[kStageCount] = {
      "momentum",     "gather",           "newton_schulz", "scatter", "row_stats",
      "finite_check", "all_reduce+norms", "update",        "adamw"};
  return stage >= 0 && stage < kStageCount ? kNames[stage] : "unknown";
}

int64_t SteadyNs(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

namespace {

double MsBetween(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

bool IsComm(int32_t stage) { return stage == kStageGather || stage == kStageScatter; }

}  // namespace

absl::Status StepTiming::Prepare(Backend* backend, int buckets, bool two_streams) {
  backend_ = backend;
  synchronous_ = backend->IsSynchronous();
  two_streams_ = two_streams;
  buckets_ = buckets;
  main_.Reserve(16);
  compute_.Reserve(3 * static_cast<size_t>(buckets) + 4);
  comm_.Reserve(2 * static_cast<size_t>(buckets) + 4);
  if (synchronous_) return absl::OkStatus();
  // Step start, finite check (start and end), the buckets' stages (five ends, or with two streams
  // the pipeline's slots), the join's start, the all-reduce's start, norms, update, AdamW.
  const int32_t marks = 3 + (two_streams ? kSlotsPerBucket : kBucketStages) * buckets + 5;
  mark_stage_.assign(marks, -1);
  mark_bucket_.assign(marks, -1);
  mark_from_.assign(marks, -1);
  return backend->PrepareMarks(marks);
}

absl::Status StepTiming::Begin() {
  normuon_step_profile_init(&profile_);
  std::fill(std::begin(stage_ms_), std::end(stage_ms_), 0.0);
  start_ = last_ = std::chrono::steady_clock::now();
  main_.Reset();
  compute_.Reset();
  comm_.Reset();
  marks_used_ = 0;
  mark_base_ = std::chrono::steady_clock::now();
  NORMUON_RETURN_IF_ERROR(Mark(-1, -1));
  join_marks_[0] = join_marks_[1] = -1;
  if (two_streams_ && !mark_stage_.empty()) {
    // The pipeline's fixed slots come next; the step thread's marks follow them.
    std::fill(mark_stage_.begin() + 1, mark_stage_.begin() + 1 + PipelineSlots(), -1);
    marks_used_ = 1 + PipelineSlots();
  }
  return absl::OkStatus();
}

void StepTiming::BeginReplay() {
  start_ = last_ = std::chrono::steady_clock::now();
  mark_base_ = start_;  // mark 0 runs at the launch, in the graph
}

absl::Status StepTiming::Mark(int32_t stage, int32_t bucket) {
  if (synchronous_ || marks_used_ >= static_cast<int32_t>(mark_stage_.size())) {
    return absl::OkStatus();
  }
  mark_stage_[marks_used_] = stage;
  mark_bucket_[marks_used_] = bucket;
  mark_from_[marks_used_] = -1;  // the span starts at the previous mark
  return backend_->Mark(marks_used_++);
}

absl::Status StepTiming::PipelineMark(int stage, int bucket, bool end) {
  // Fixed slots: the two threads record concurrently, each on its own stream and slots.
  const int32_t slot = StageSlot(stage, bucket, end);
  mark_stage_[slot] = end ? stage : -1;
  mark_bucket_[slot] = bucket;
  mark_from_[slot] = end ? slot - 1 : -1;
  return IsComm(stage) ? backend_->MarkComm(slot) : backend_->Mark(slot);
}

absl::Status StepTiming::WaitMark(int stage, int bucket) {
  return backend_->Mark(WaitSlot(stage, bucket));
}

absl::Status StepTiming::JoinBegin() {
  join_marks_[0] = marks_used_;
  return Mark(-1, -1);
}

void StepTiming::ClearPipeline() {
  join_marks_[0] = join_marks_[1] = -1;
  if (!mark_stage_.empty()) {
    std::fill(mark_stage_.begin() + 1, mark_stage_.begin() + 1 + PipelineSlots(), -1);
  }
}

StepTiming::StageTimer::StageTimer(StepTiming* t, int stage, int bucket)
    : t_(t), stage_(stage), bucket_(bucket), start_(std::chrono::steady_clock::now()) {}

StepTiming::StageTimer::~StageTimer() {
  const auto end = std::chrono::steady_clock::now();
  t_->stage_ms_[stage_] += MsBetween(start_, end);
  SpanLog& log = IsComm(stage_) ? t_->comm_ : t_->compute_;
  log.Add(TraceSpan{stage_, bucket_, SteadyNs(start_), SteadyNs(end)});
}

void StepTiming::Lap(int32_t stage) {
  const auto now = std::chrono::steady_clock::now();
  const double ms = MsBetween(last_, now);
  switch (stage) {
    case kStageFiniteCheck: profile_.finite_check_ms += ms; break;
    case kStageAllReduce: profile_.row_stats_ms += ms; break;
    case kStageUpdate: profile_.update_ms += ms; break;
    case kStageAdamW: profile_.adamw_ms += ms; break;
    default: break;
  }
  if (stage >= 0) main_.Add(TraceSpan{stage, -1, SteadyNs(last_), SteadyNs(now)});
  last_ = now;
}

void StepTiming::EndBuckets(double exposed_comm_ms) {
  profile_.exposed_comm_ms = exposed_comm_ms;
  profile_.momentum_ms = stage_ms_[kStageMomentum];
  profile_.gather_ms = stage_ms_[kStageGather];
  profile_.newton_schulz_ms = stage_ms_[kStageNewtonSchulz];
  profile_.scatter_ms = stage_ms_[kStageScatter];
  profile_.row_stats_ms = stage_ms_[kStageRowStats];
}

void StepTiming::EndStep() { profile_.total_ms = MsBetween(start_, std::chrono::steady_clock::now()); }

absl::Status StepTiming::DeviceSpans(std::vector<TraceSpan>* spans) const {
  NORMUON_RETURN_IF_ERROR(backend_->WaitStep());
  const int64_t base = SteadyNs(mark_base_);
  for (int32_t i = 1; i < marks_used_; ++i) {
    if (mark_stage_[i] < 0) continue;  // a start mark
    const int32_t start = mark_from_[i] >= 0 ? mark_from_[i] : i - 1;
    NORMUON_ASSIGN_OR_RETURN(const double from, backend_->MarkElapsedMs(0, start));
    NORMUON_ASSIGN_OR_RETURN(const double to, backend_->MarkElapsedMs(0, i));
    spans->push_back(TraceSpan{mark_stage_[i], mark_bucket_[i],
                               base + static_cast<int64_t>(from * 1e6),
                               base + static_cast<int64_t>(to * 1e6)});
  }
  return absl::OkStatus();
}

absl::StatusOr<normuon_step_profile_t> StepTiming::Profile() const {
  if (synchronous_) return profile_;
  // Device time between the marks of the last step (CUDA events), stage by stage.
  std::vector<TraceSpan> spans;
  NORMUON_RETURN_IF_ERROR(DeviceSpans(&spans));
  normuon_step_profile_t p = profile_;  // bytes and bucket count; times are replaced
  p.total_ms = p.finite_check_ms = p.momentum_ms = p.gather_ms = p.newton_schulz_ms = 0.0;
  p.scatter_ms = p.row_stats_ms = p.update_ms = p.adamw_ms = p.exposed_comm_ms = 0.0;
  // The step's device time: from mark 0 to the last mark (the stages of two streams overlap, so
  // their sum would count the overlap twice).
  if (marks_used_ > 1) {
    NORMUON_ASSIGN_OR_RETURN(p.total_ms, backend_->MarkElapsedMs(0, marks_used_ - 1));
  }
  // Exposed communication (docs/ARCHITECTURE.md section 6): the time the step's stream waited
  // on communication. One stream: every exchange. Two streams: from the mark before each wait of
  // the step's stream to the mark after it (before Newton-Schulz and row statistics of every
  // bucket, and the final join), when the pipeline's marks are all there.
  if (!two_streams_) {
    for (const TraceSpan& e : spans) {
      if (IsComm(e.stage)) p.exposed_comm_ms += (e.end_ns - e.begin_ns) / 1e6;
    }
  } else if (join_marks_[0] >= 0 && join_marks_[1] < marks_used_) {
    for (int32_t b = 0; b < buckets_; ++b) {
      for (int stage : {kStageNewtonSchulz, kStageRowStats}) {
        NORMUON_ASSIGN_OR_RETURN(const double ms, backend_->MarkElapsedMs(
                                                      WaitSlot(stage, b), StageSlot(stage, b, false)));
        p.exposed_comm_ms += std::max(0.0, ms);
      }
    }
    NORMUON_ASSIGN_OR_RETURN(const double join_ms,
                             backend_->MarkElapsedMs(join_marks_[0], join_marks_[1]));
    p.exposed_comm_ms += std::max(0.0, join_ms);
  }
  for (const TraceSpan& e : spans) {
    const double ms = (e.end_ns - e.begin_ns) / 1e6;
    switch (e.stage) {
      case kStageFiniteCheck: p.finite_check_ms += ms; break;
      case kStageMomentum: p.momentum_ms += ms; break;
      case kStageGather: p.gather_ms += ms; break;
      case kStageNewtonSchulz: p.newton_schulz_ms += ms; break;
      case kStageScatter: p.scatter_ms += ms; break;
      case kStageRowStats:
      case kStageAllReduce: p.row_stats_ms += ms; break;
      case kStageUpdate: p.update_ms += ms; break;
      case kStageAdamW: p.adamw_ms += ms; break;
      default: break;
    }
  }
  return p;
}

absl::StatusOr<std::string> StepTiming::Trace(int rank) const {
  // Asynchronous backends: the device spans between marks, on the track of their stage.
  SpanLog device_main, device_compute, device_comm;
  if (!synchronous_) {
    std::vector<TraceSpan> spans;
    NORMUON_RETURN_IF_ERROR(DeviceSpans(&spans));
    device_main.Reserve(spans.size());
    device_compute.Reserve(spans.size());
    device_comm.Reserve(spans.size());
    for (const TraceSpan& e : spans) {
      SpanLog& log = IsComm(e.stage) ? device_comm : e.bucket >= 0 ? device_compute : device_main;
      log.Add(e);
    }
  }
  static const char* const kTracks[3] = {"step", "compute", "communication"};
  std::string out;
  const SpanLog* logs[3] = {synchronous_ ? &main_ : &device_main,
                            synchronous_ ? &compute_ : &device_compute,
                            synchronous_ ? &comm_ : &device_comm};
  for (int tid = 0; tid < 3; ++tid) {
    const SpanLog& log = *logs[tid];
    for (size_t i = 0; i < log.size(); ++i) {
      const TraceSpan& e = log[i];
      absl::StrAppend(&out, out.empty() ? "" : ",\n", "{\"name\":\"", StageName(e.stage),
                      "\",\"cat\":\"normuon\",\"ph\":\"X\",\"pid\":", rank, ",\"tid\":", tid,
                      absl::StrFormat(",\"ts\":%.3f,\"dur\":%.3f", e.begin_ns / 1e3,
                                      (e.end_ns - e.begin_ns) / 1e3));
      if (e.bucket >= 0) absl::StrAppend(&out, ",\"args\":{\"bucket\":", e.bucket, "}");
      out += "}";
    }
    // Track names, so Perfetto shows "rank 2 / compute" rather than bare numbers.
    absl::StrAppend(&out, out.empty() ? "" : ",\n",
                    "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":", rank, ",\"tid\":", tid,
                    ",\"args\":{\"name\":\"", kTracks[tid], "\"}}");
  }
  absl::StrAppend(&out, ",\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":", rank,
                  ",\"args\":{\"name\":\"rank ", rank, "\"}}");
  return out;
}

}  // namespace normuon
