// The NCCL communicator: creation and wrapping, issuing each collective, polling it to its
// outcome, and what a failure does to the communicator; see nccl_communicator.h.
#include "comm/nccl_communicator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "comm/device_binding.h"
#include "comm/exchange_match.h"

namespace normuon {
namespace {

using Clock = std::chrono::steady_clock;

// Every failure after which the communicator is gone ends with this (docs/ARCHITECTURE.md section 6 and
// issue 6: on NCCL a failure may leave a step half-applied on the device).
constexpr char kRestore[] = " \u2014 the step's parameters must be restored from a checkpoint";

absl::Status CheckTimeout(double seconds) {
  if (!std::isfinite(seconds) || seconds <= 0 || seconds > 1e7) {
    return absl::InvalidArgumentError(absl::StrCat(
        "timeout_seconds is ", seconds, ", must be finite, > 0 and <= 1e7"));
  }
  return absl::OkStatus();
}

Clock::time_point Deadline(Clock::time_point start, double seconds) {
  return start + std::chrono::duration_cast<Clock::duration>(
                     std::chrono::duration<double>(seconds));
}

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The pause between two polls of ncclCommGetAsyncError: a few yields first, since a collective
// is usually issued within microseconds, then sleeps doubling from 2 us to 1 ms, so a slow
// connection setup costs little CPU and a fast one little latency.
class Backoff {
 public:
  void Wait() {
    if (yields_ < 64) {
      ++yields_;
      std::this_thread::yield();
      return;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_));
    sleep_us_ = std::min(sleep_us_ * 2, 1000);
  }

 private:
  int yields_ = 0;
  int sleep_us_ = 2;
};

// NCCL rejecting this rank's arguments is InvalidArgument; everything else is the communicator's
// failure (Aborted, NORMUON_ERROR_COMM at the C edge).
absl::StatusCode CodeFor(nccl::Result r) {
  return (r == nccl::kInvalidArgument || r == nccl::kInvalidUsage)
             ? absl::StatusCode::kInvalidArgument
             : absl::StatusCode::kAborted;
}

std::string LastErrorSuffix(const std::string& last) {
  return last.empty() ? std::string() : absl::StrCat("; last NCCL error: ", last);
}

// ncclCommGetAsyncError as one value: the state, or the call's own failure.
nccl::Result AsyncState(const NcclLibrary& lib, nccl::CommHandle comm) {
  nccl::Result state = nccl::kInProgress;
  const nccl::Result r = lib.comm_get_async_error(comm, &state);
  return r == nccl::kSuccess ? state : r;
}

// Polls a communicator that nobody else can reach yet (being created, or being wrapped) until it
// leaves ncclInProgress or the deadline passes; returns kInProgress on timeout.
nccl::Result PollPrivate(const NcclLibrary& lib, nccl::CommHandle comm,
                         Clock::time_point deadline) {
  Backoff backoff;
  for (;;) {
    const nccl::Result state = AsyncState(lib, comm);
    if (state != nccl::kInProgress || Clock::now() >= deadline) return state;
    backoff.Wait();
  }
}

}  // namespace

absl::StatusOr<nccl::UniqueId> NcclGetUniqueId(const NcclLibrary& lib) {
  nccl::UniqueId id;
  std::memset(&id, 0, sizeof(id));
  const nccl::Result r = lib.get_unique_id(&id);
  if (r != nccl::kSuccess) {
    return absl::Status(CodeFor(r),
                        absl::StrCat("ncclGetUniqueId returned ", lib.ResultText(r),
                                     LastErrorSuffix(lib.LastError(nullptr))));
  }
  return id;
}

absl::StatusOr<std::shared_ptr<NcclCommunicator>> NcclCommunicator::Create(
    std::shared_ptr<const NcclLibrary> lib, const nccl::UniqueId& id, int rank, int world_size,
    int device, double timeout_seconds) {
  if (lib == nullptr) return absl::InvalidArgumentError("no NCCL library given");
  if (world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("world_size is ", world_size, ", must be >= 1"));
  }
  if (rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank is ", rank, ", must be in [0, world_size = ", world_size, ")"));
  }
  absl::Status s = CheckTimeout(timeout_seconds);
  if (!s.ok()) return s;
  const std::string who = absl::StrCat("NCCL rank ", rank, " of ", world_size);

  const Clock::time_point start = Clock::now();
  nccl::CommHandle comm = nullptr;
  nccl::Result r = nccl::kSuccess;
  s = RunWithCurrentDevice(device, [&]() -> absl::Status {
    nccl::Config config = nccl::DefaultConfig();
    config.blocking = 0;  // no call waits on peers; we poll, with our timeout
    r = lib->comm_init_rank_config(&comm, world_size, id, rank, &config);
    return absl::OkStatus();
  });
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(who, ": ", s.message()));
  if (r != nccl::kSuccess && r != nccl::kInProgress) {
    const std::string last = lib->LastError(comm);
    if (comm != nullptr) lib->comm_abort(comm);
    return absl::Status(CodeFor(r), absl::StrCat(who, ": ncclCommInitRankConfig returned ",
                                                 lib->ResultText(r), LastErrorSuffix(last)));
  }
  if (comm == nullptr) {
    return absl::InternalError(absl::StrCat(who, ": ncclCommInitRankConfig returned ",
                                            NcclResultName(r), " but no communicator"));
  }
  const nccl::Result state = PollPrivate(*lib, comm, Deadline(start, timeout_seconds));
  if (state == nccl::kInProgress) {
    lib->comm_abort(comm);
    return absl::DeadlineExceededError(absl::StrFormat(
        "%s: communicator not initialized after %.1f s (did every rank call it with the same "
        "unique id and world size %d?); communicator aborted",
        who, SecondsSince(start), world_size));
  }
  if (state != nccl::kSuccess) {
    const std::string last = lib->LastError(comm);
    lib->comm_abort(comm);
    return absl::Status(CodeFor(state),
                        absl::StrCat(who, ": initialization failed: ", lib->ResultText(state),
                                     LastErrorSuffix(last), "; communicator aborted"));
  }
  return std::shared_ptr<NcclCommunicator>(new NcclCommunicator(
      std::move(lib), comm, rank, world_size, /*owned=*/true, timeout_seconds));
}

absl::StatusOr<std::shared_ptr<NcclCommunicator>> NcclCommunicator::Wrap(
    std::shared_ptr<const NcclLibrary> lib, void* nccl_comm, double timeout_seconds) {
  if (lib == nullptr) return absl::InvalidArgumentError("no NCCL library given");
  if (nccl_comm == nullptr) return absl::InvalidArgumentError("nccl_comm is NULL");
  absl::Status s = CheckTimeout(timeout_seconds);
  if (!s.ok()) return s;
  auto* comm = static_cast<nccl::CommHandle>(nccl_comm);
  const std::string check =
      absl::StrCat(" (is it a live ncclComm_t created by ", lib->Describe(), "?)");

  // NCCL's calls validate the communicator they are given, as far as they can: a pointer that is
  // not a live communicator of this library usually fails here rather than later.
  nccl::Result state = nccl::kInProgress;
  const nccl::Result r0 = lib->comm_get_async_error(comm, &state);
  if (r0 != nccl::kSuccess) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ncclCommGetAsyncError on the borrowed NCCL communicator returned ", lib->ResultText(r0),
        check));
  }
  // A non-blocking communicator may still be initializing; its rank and size are known after.
  const Clock::time_point start = Clock::now();
  if (state == nccl::kInProgress) {
    state = PollPrivate(*lib, comm, Deadline(start, timeout_seconds));
  }
  if (state == nccl::kInProgress) {
    return absl::DeadlineExceededError(absl::StrFormat(
        "the borrowed NCCL communicator was still initializing after %.1f s (not aborted: it "
        "is still the caller's)",
        SecondsSince(start)));
  }
  if (state != nccl::kSuccess) {
    return absl::FailedPreconditionError(
        absl::StrCat("the borrowed NCCL communicator has already failed: ",
                     lib->ResultText(state), LastErrorSuffix(lib->LastError(comm))));
  }
  int count = 0;
  int rank = -1;
  nccl::Result r = lib->comm_count(comm, &count);
  const char* call = "ncclCommCount";
  if (r == nccl::kSuccess) {
    r = lib->comm_user_rank(comm, &rank);
    call = "ncclCommUserRank";
  }
  if (r != nccl::kSuccess) {
    return absl::InvalidArgumentError(absl::StrCat(
        call, " on the borrowed NCCL communicator returned ", lib->ResultText(r), check));
  }
  if (count < 1 || rank < 0 || rank >= count) {
    return absl::InternalError(absl::StrCat("the borrowed NCCL communicator reports rank ", rank,
                                            " of ", count, " ranks"));
  }
  return std::shared_ptr<NcclCommunicator>(new NcclCommunicator(
      std::move(lib), comm, rank, count, /*owned=*/false, timeout_seconds));
}

NcclCommunicator::NcclCommunicator(std::shared_ptr<const NcclLibrary> lib, nccl::CommHandle comm,
                                   int rank, int world_size, bool owned, double timeout_seconds)
    : lib_(std::move(lib)),
      rank_(rank),
      world_(world_size),
      owned_(owned),
      timeout_seconds_(timeout_seconds),
      comm_(comm) {}

NcclCommunicator::~NcclCommunicator() {
  std::lock_guard<std::mutex> lock(comm_mu_);
  if (comm_ == nullptr || !owned_) return;  // aborted already, or the caller's to destroy
  bool failed;
  {
    std::lock_guard<std::mutex> failure_lock(failure_mu_);
    failed = !failure_.ok();
  }
  // A healthy communicator is finalized (its enqueued work flushed) and then destroyed, which
  // frees only local resources. A failed one, or one whose finalize does not complete in time
  // (a peer gone mid-collective), is aborted: ncclCommDestroy would wait for it without limit.
  bool finalized = false;
  if (!failed) {
    const nccl::Result r = lib_->comm_finalize(comm_);
    if (r == nccl::kSuccess || r == nccl::kInProgress) {
      finalized = PollPrivate(*lib_, comm_, Deadline(Clock::now(), timeout_seconds_)) ==
                  nccl::kSuccess;
    }
  }
  if (finalized) {
    lib_->comm_destroy(comm_);
  } else {
    lib_->comm_abort(comm_);
  }
  comm_ = nullptr;
}

std::string NcclCommunicator::Describe() const {
  return absl::StrCat("NCCL rank ", rank_, " of ", world_, " (", owned_ ? "owned" : "borrowed",
                      "; ", lib_->Describe(), ")");
}

void* NcclCommunicator::nccl_comm_for_testing() const {
  std::lock_guard<std::mutex> lock(comm_mu_);
  return comm_;
}

bool NcclCommunicator::Failed() const {
  std::lock_guard<std::mutex> lock(failure_mu_);
  return !failure_.ok();
}

absl::Status NcclCommunicator::Refusal(int64_t collective, const char* kind,
                                       bool in_flight) const {
  absl::Status first;
  {
    std::lock_guard<std::mutex> lock(failure_mu_);
    first = failure_;
  }
  if (first.ok()) first = absl::AbortedError("the communicator is gone");  // not reached
  return absl::AbortedError(absl::StrCat(
      "NCCL rank ", rank_, ": collective #", collective, " (", kind, ") ",
      in_flight ? "was abandoned: the communicator was aborted while it was in flight: "
                : "refused: the communicator failed earlier: ",
      first.message()));
}

std::string NcclCommunicator::DropComm(bool call_nccl) const {
  std::lock_guard<std::mutex> lock(comm_mu_);
  if (comm_ == nullptr) return "";
  nccl::Result r = nccl::kSuccess;
  if (call_nccl) r = lib_->comm_abort(comm_);
  comm_ = nullptr;
  if (r == nccl::kSuccess) return "";
  return absl::StrCat("ncclCommAbort returned ", lib_->ResultText(r));
}

absl::Status NcclCommunicator::Fail(const absl::Status& status, bool timed_out) const {
  // Owned communicators go at their first failure; a borrowed one only on our own timeout,
  // since its owner decides what NCCL's own errors mean for it.
  const bool abort = owned_ || timed_out;
  bool was_live;
  {
    std::lock_guard<std::mutex> lock(comm_mu_);
    was_live = comm_ != nullptr;
  }
  std::string ending;
  if (!was_live) {
    ending = "; communicator already aborted";
  } else if (abort) {
    ending = owned_ ? "; communicator aborted"
                    : "; communicator aborted (borrowed: NCCL has freed that ncclComm_t, so its "
                      "owner must neither use nor destroy it)";
  } else {
    ending = "; the borrowed communicator was not aborted (its owner must abort it)";
  }
  absl::Status full(status.code(), absl::StrCat(status.message(), ending, kRestore));
  // The failure is recorded before the communicator is dropped, so a collective in flight on
  // another thread that finds it gone can name it.
  {
    std::lock_guard<std::mutex> lock(failure_mu_);
    if (failure_.ok()) failure_ = full;
  }
  if (was_live && abort) {
    const std::string note = DropComm(/*call_nccl=*/true);
    if (!note.empty()) full = absl::Status(full.code(), absl::StrCat(full.message(), " (", note, ")"));
  }
  return full;
}

template <typename Issue>
absl::Status NcclCommunicator::Run(int64_t collective, const char* kind, Issue issue) {
  const Clock::time_point start = Clock::now();
  const std::string what =
      absl::StrCat("NCCL rank ", rank_, ": collective #", collective, " (", kind, ")");
  absl::Status issue_error;
  {
    std::lock_guard<std::mutex> lock(comm_mu_);
    if (comm_ == nullptr) return Refusal(collective, kind, /*in_flight=*/false);
    std::string failed_call;
    const nccl::Result r = issue(comm_, &failed_call);
    if (r != nccl::kSuccess && r != nccl::kInProgress) {
      issue_error = absl::Status(CodeFor(r), absl::StrCat(what, ": ", failed_call, " returned ",
                                                          lib_->ResultText(r),
                                                          LastErrorSuffix(lib_->LastError(comm_))));
    }
  }
  if (!issue_error.ok()) return Fail(issue_error, /*timed_out=*/false);

  // Even a call that returned ncclSuccess is followed by one poll: it surfaces errors NCCL
  // found in earlier, already enqueued work.
  const Clock::time_point deadline = Deadline(start, timeout_seconds_);
  Backoff backoff;
  for (;;) {
    nccl::Result state;
    std::string last;
    {
      std::lock_guard<std::mutex> lock(comm_mu_);
      if (comm_ == nullptr) return Refusal(collective, kind, /*in_flight=*/true);
      state = AsyncState(*lib_, comm_);
      if (state != nccl::kSuccess && state != nccl::kInProgress) last = lib_->LastError(comm_);
    }
    if (state == nccl::kSuccess) return absl::OkStatus();
    if (state != nccl::kInProgress) {
      return Fail(absl::AbortedError(absl::StrCat(what, " failed: ", lib_->ResultText(state),
                                                  LastErrorSuffix(last))),
                  /*timed_out=*/false);
    }
    if (Clock::now() >= deadline) {
      return Fail(absl::DeadlineExceededError(
                      absl::StrFormat("%s not issued after %.1f s", what, SecondsSince(start))),
                  /*timed_out=*/true);
    }
    backoff.Wait();
  }
}

absl::Status NcclCommunicator::Exchange(absl::Span<const P2p> sends, absl::Span<const P2p> recvs,
                                        void* stream) {
  std::lock_guard<std::mutex> call(call_mu_);
  const int64_t collective = next_collective_++;
  if (Failed()) return Refusal(collective, "exchange", /*in_flight=*/false);
  const absl::Status args = CheckExchangeArgs(rank_, world_, collective, sends, recvs);
  if (!args.ok()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("NCCL ", args.message(),
                                                        "; nothing was issued")),
                /*timed_out=*/false);
  }
  return Run(collective, "exchange", [&](nccl::CommHandle comm, std::string* failed_call) {
    nccl::Result r = lib_->group_start();
    if (r != nccl::kSuccess) {
      *failed_call = "ncclGroupStart";
      return r;
    }
    // One group for the whole exchange: NCCL progresses its sends and receives together, so the
    // order of the lists cannot deadlock. The first failing call is reported, but the group is
    // always closed: an open group would capture this thread's next NCCL calls, the trainer's
    // included.
    nccl::Result first = nccl::kSuccess;
    for (size_t i = 0; i < sends.size(); ++i) {
      const P2p& p = sends[i];
      if (p.bytes == 0) continue;
      r = lib_->send(p.buf, static_cast<size_t>(p.bytes), nccl::kUint8, p.peer, comm, stream);
      if (r != nccl::kSuccess && r != nccl::kInProgress && first == nccl::kSuccess) {
        first = r;
        *failed_call = absl::StrCat("ncclSend of sends[", i, "] (", p.bytes, " bytes to rank ",
                                    p.peer, ")");
      }
    }
    for (size_t i = 0; i < recvs.size(); ++i) {
      const P2p& p = recvs[i];
      if (p.bytes == 0) continue;
      r = lib_->recv(p.buf, static_cast<size_t>(p.bytes), nccl::kUint8, p.peer, comm, stream);
      if (r != nccl::kSuccess && r != nccl::kInProgress && first == nccl::kSuccess) {
        first = r;
        *failed_call = absl::StrCat("ncclRecv of recvs[", i, "] (", p.bytes, " bytes from rank ",
                                    p.peer, ")");
      }
    }
    r = lib_->group_end();
    if (first != nccl::kSuccess) return first;
    if (r != nccl::kSuccess && r != nccl::kInProgress) *failed_call = "ncclGroupEnd";
    return r;
  });
}

absl::Status NcclCommunicator::AllReduceSum(const float* in, float* out, size_t count,
                                            void* stream) {
  std::lock_guard<std::mutex> call(call_mu_);
  const int64_t collective = next_collective_++;
  if (Failed()) return Refusal(collective, "all_reduce_sum", /*in_flight=*/false);
  if (count > 0 && (in == nullptr || out == nullptr)) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
                    "NCCL rank ", rank_, ", collective #", collective,
                    " (all_reduce_sum): null buffer with count ", count, "; nothing was issued")),
                /*timed_out=*/false);
  }
  if (count == 0) return absl::OkStatus();  // the same count on every rank: all skip it
  return Run(collective, "all_reduce_sum", [&](nccl::CommHandle comm, std::string* failed_call) {
    *failed_call = "ncclAllReduce";
    return lib_->all_reduce(in, out, count, nccl::kFloat32, nccl::kSum, comm, stream);
  });
}

absl::Status NcclCommunicator::AllGather(const void* in, void* out, size_t bytes_per_rank,
                                         void* stream) {
  std::lock_guard<std::mutex> call(call_mu_);
  const int64_t collective = next_collective_++;
  if (Failed()) return Refusal(collective, "all_gather", /*in_flight=*/false);
  if (bytes_per_rank > 0 && (in == nullptr || out == nullptr)) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
                    "NCCL rank ", rank_, ", collective #", collective,
                    " (all_gather): null buffer with ", bytes_per_rank,
                    " bytes per rank; nothing was issued")),
                /*timed_out=*/false);
  }
  if (bytes_per_rank == 0) return absl::OkStatus();
  return Run(collective, "all_gather", [&](nccl::CommHandle comm, std::string* failed_call) {
    *failed_call = "ncclAllGather";
    return lib_->all_gather(in, out, bytes_per_rank, nccl::kUint8, comm, stream);
  });
}

absl::Status NcclCommunicator::Abort() {
  {
    std::lock_guard<std::mutex> lock(failure_mu_);
    if (failure_.ok()) {
      failure_ = absl::AbortedError(absl::StrCat("NCCL rank ", rank_, " was aborted by its caller",
                                                 owned_ ? "" : " (borrowed: not ncclCommAbort'ed; "
                                                               "its owner must abort it)",
                                                 kRestore));
    }
  }
  // A borrowed communicator is only let go: aborting it is its owner's call.
  const std::string note = DropComm(/*call_nccl=*/owned_);
  if (!note.empty()) return absl::InternalError(absl::StrCat(Describe(), ": ", note));
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AsyncError() const {
  {
    std::lock_guard<std::mutex> lock(failure_mu_);
    if (!failure_.ok()) return failure_;
  }
  nccl::Result state;
  std::string last;
  {
    std::lock_guard<std::mutex> lock(comm_mu_);
    if (comm_ == nullptr) return absl::OkStatus();  // not reached: dropping sets the failure first
    state = AsyncState(*lib_, comm_);
    if (state == nccl::kSuccess || state == nccl::kInProgress) return absl::OkStatus();
    last = lib_->LastError(comm_);
  }
  return Fail(absl::AbortedError(absl::StrCat("NCCL rank ", rank_, ": asynchronous error: ",
                                              lib_->ResultText(state), LastErrorSuffix(last))),
              /*timed_out=*/false);
}

}  // namespace normuon
