// The Communicator over NCCL: grouped point-to-point exchange (ncclGroupStart, one ncclSend or
// ncclRecv of bytes per transfer, ncclGroupEnd), float all-reduce sum (ncclAllReduce) and byte
// all-gather (ncclAllGather), each enqueued on the caller's cudaStream_t, on a communicator that
// is either created here (owned) or lent by the caller (borrowed).
//
// Non-blocking, with a timeout. An owned communicator is created with config.blocking = 0, so no
// NCCL call waits on peers: a call that cannot finish at once returns ncclInProgress and the
// work goes on inside NCCL. After issuing a collective (and after creating the communicator) the
// calling thread polls ncclCommGetAsyncError until NCCL reports ncclSuccess (issued), an error,
// or `timeout_seconds` have passed since the collective began. Outcomes:
//   - issued: OkStatus. The work is enqueued on `stream`; it has not necessarily run.
//   - an error returned by a call or reported by ncclCommGetAsyncError: Aborted, with
//     ncclGetErrorString and ncclGetLastError's text ("InvalidArgument" when NCCL rejected this
//     rank's arguments).
//   - the timeout: DeadlineExceeded, and the communicator is aborted (ncclCommAbort):
//     "NCCL rank 2: collective #5 (exchange) not issued after 30.0 s; communicator aborted — the
//     step's parameters must be restored from a checkpoint".
// Any failure is sticky, as for every Communicator: later collectives fail at once with Aborted
// naming the first failure. An owned communicator is aborted at the first failure; a borrowed one
// only on our timeout (its owner decides what to do about NCCL's own errors).
//
// What the polling detects, and what it does not:
//   + a peer that never joins the communicator (creation times out);
//   + NCCL's host-side issue of a collective stalling: connection setup to a dead or absent peer,
//     proxy or bootstrap failures (the collective times out);
//   + errors NCCL itself detects and reports through ncclCommGetAsyncError, including ones
//     raised by earlier, already enqueued work (network errors, a remote rank's failure): they
//     surface at the next collective or the next AsyncError() call.
//   - a kernel that waits forever on the device after it was enqueued (a peer that skipped the
//     matching collective, a peer that died with no network error): enqueuing returned, so no
//     host call here is still waiting. NCCL does not report this. The caller that waits for the
//     step's completion (normuon_step_result's event) must bound that wait and call Abort().
//   - byte counts that disagree between the sender and the receiver: NCCL does not check them
//     (the in-process group does); the result is undefined and may hang as above.
// A borrowed communicator created blocking (PyTorch's default) blocks inside NCCL calls, so the
// timeout cannot fire there, and Abort() waits for the call in flight; its owner's watchdog is
// responsible (TORCH_NCCL_ASYNC_ERROR_HANDLING).
//
// Only a multi-GPU machine can confirm: the real NCCL transport (NVLink, PCIe, InfiniBand),
// device buffers, ordering on the caller's stream, and real NCCL's non-blocking semantics
// (which calls return ncclInProgress, when finalize completes, that abort releases a hung
// kernel). CI drives this class against a stand-in libnccl on host memory
// (tests/comm/fake_nccl), which checks the logic: grouping, polling, errors, abort, timeout.
//
// Thread safety: one thread at a time issues collectives (Communicator's contract); Abort() and
// AsyncError() may be called from any thread. Every NCCL call on the communicator is made under
// one mutex (NCCL communicators are not thread-safe), held only for single non-waiting calls.
#ifndef NORMUON_COMM_NCCL_COMMUNICATOR_H_
#define NORMUON_COMM_NCCL_COMMUNICATOR_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "comm/device_binding.h"  // kCurrentDevice
#include "comm/nccl_library.h"
#include "comm/nccl_types.h"

namespace normuon {

// A new ncclUniqueId (ncclGetUniqueId), to be sent by the caller to every rank. Aborted with
// NCCL's message on failure.
absl::StatusOr<nccl::UniqueId> NcclGetUniqueId(const NcclLibrary& lib);

class NcclCommunicator final : public Communicator {
 public:
  // Creates this process's rank of a new NCCL communicator, non-blocking, on `device` (made
  // current for the call and restored after; kCurrentDevice = -1 uses the current device).
  // Collective: every rank calls it with the same `id` and `world_size`, each from its own
  // thread or process, and each returns once all have joined. Errors: InvalidArgument (rank,
  // world_size, device, timeout_seconds), Unknown (the device could not be made current),
  // Aborted (NCCL failed; its message), DeadlineExceeded (not every rank joined within
  // timeout_seconds; the half-made communicator is aborted). timeout_seconds is finite, > 0 and
  // <= 1e7, and also bounds every later collective and the finalize at destruction.
  // Destruction: ncclCommFinalize, polled up to timeout_seconds, then ncclCommDestroy; or
  // ncclCommAbort if the communicator failed or the finalize did not complete in time.
  static absl::StatusOr<std::shared_ptr<NcclCommunicator>> Create(
      std::shared_ptr<const NcclLibrary> lib, const nccl::UniqueId& id, int rank, int world_size,
      int device, double timeout_seconds);

  // Wraps a caller's live ncclComm_t, which must have been created by `lib` (the same library:
  // see nccl_library.h). Rank and world size come from ncclCommUserRank and ncclCommCount. A
  // communicator still initializing (non-blocking) is waited for up to timeout_seconds
  // (DeadlineExceeded, not aborted). One that has already failed is FailedPrecondition.
  // The communicator stays the caller's: never finalized or destroyed here, and aborted only when
  // one of our collectives times out. Then NCCL has freed it: the caller must neither use nor
  // destroy that ncclComm_t again (the DeadlineExceeded message says so). Abort() on a borrowed
  // communicator only stops our use of it; NCCL's own async errors are reported, not acted on.
  static absl::StatusOr<std::shared_ptr<NcclCommunicator>> Wrap(
      std::shared_ptr<const NcclLibrary> lib, void* nccl_comm, double timeout_seconds);

  ~NcclCommunicator() override;

  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  // "NCCL rank 2 of 8 (owned; NCCL 2.28.9 at /usr/lib/libnccl.so.2 (found by the dynamic loader))"
  std::string Describe() const override;
  bool UsesDeviceMemory() const override { return true; }

  // Buffers are device memory (NCCL's rule); `stream` is a cudaStream_t. Zero-byte transfers are
  // skipped on every rank alike (comm.h allows it); a self-transfer goes through NCCL too. The
  // arguments are checked first (peers, null buffers): InvalidArgument, nothing issued.
  absl::Status Exchange(absl::Span<const P2p> sends, absl::Span<const P2p> recvs,
                        void* stream) override;
  // ncclAllReduce of floats with ncclSum: every rank gets the same bits; summation order is
  // NCCL's (fixed for one topology and configuration). count 0 issues nothing.
  absl::Status AllReduceSum(const float* in, float* out, size_t count, void* stream) override;
  // ncclAllGather of bytes; in place when in == out + rank()*bytes_per_rank. 0 issues nothing.
  absl::Status AllGather(const void* in, void* out, size_t bytes_per_rank, void* stream) override;

  // Ends the communicator: the collective in flight on another thread returns Aborted at its next
  // poll, later ones are refused. Owned: ncclCommAbort now. Borrowed: only stops using it.
  absl::Status Abort() override;
  // The first failure, or NCCL's async error state if it reports one now: that is recorded as
  // the failure (Aborted, with NCCL's text) and, on an owned communicator, aborts it at once, as
  // a failed collective would. Does not wait.
  absl::Status AsyncError() const override;

  bool owned() const { return owned_; }
  // The ncclComm_t; nullptr once aborted. For tests.
  void* nccl_comm_for_testing() const;

 private:
  NcclCommunicator(std::shared_ptr<const NcclLibrary> lib, nccl::CommHandle comm, int rank,
                   int world_size, bool owned, double timeout_seconds);

  // Issues one collective under comm_mu_ (issue(comm, &failed_call) returns NCCL's result and
  // names the call that failed) and polls until it is issued, failed or timed out.
  template <typename Issue>
  absl::Status Run(int64_t collective, const char* kind, Issue issue);

  bool Failed() const;
  // Aborted for a collective that cannot run: refused at its start, or abandoned in flight
  // because another thread aborted the communicator. Names the first failure.
  absl::Status Refusal(int64_t collective, const char* kind, bool in_flight) const;
  // Records `status` as the first failure (if none yet), aborts as the rules above say, and
  // returns status with the ending that says what happened to the communicator. Const because
  // AsyncError() may discover a failure; the state it changes is the mutable part below.
  absl::Status Fail(const absl::Status& status, bool timed_out) const;
  // ncclCommAbort (if `call_nccl`) and forget the communicator; "" or a note on a failed abort.
  std::string DropComm(bool call_nccl) const;

  const std::shared_ptr<const NcclLibrary> lib_;
  const int rank_;
  const int world_;
  const bool owned_;
  const double timeout_seconds_;

  std::mutex call_mu_;  // serializes collectives; guards next_collective_
  int64_t next_collective_ = 0;

  mutable std::mutex comm_mu_;     // every NCCL call on comm_; guards comm_
  mutable nccl::CommHandle comm_;  // nullptr once aborted (or let go, if borrowed)

  mutable std::mutex failure_mu_;  // may be taken under comm_mu_, never the other way round
  mutable absl::Status failure_;   // the first failure
};

}  // namespace normuon

#endif  // NORMUON_COMM_NCCL_COMMUNICATOR_H_
