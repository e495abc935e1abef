// The communicator as the runtime sees it: the collectives of one optimizer step (grouped
// point-to-point exchange, all-reduce sum, all-gather), the handle registry behind the C API's
// normuon_comm_t, the adapter that drives a caller's normuon_comm_ops_t, and the single-rank
// communicator that stands in when the handle is 0.
//
// Contract shared by every implementation (and stated for C callers in normuon/comm.h):
// - One thread at a time calls the collectives of one Communicator, and every rank issues the
//   same collectives in the same order. Abort() and AsyncError() may be called from any thread.
// - Host backends complete the collective before returning; device backends enqueue on
//   `stream` (a cudaStream_t) and return. Buffers stay valid until completion.
// - No call waits forever: a peer that does not arrive turns into DeadlineExceeded.
// - Failure is sticky: once a collective fails (or Abort is called) the communicator is done;
//   later collectives fail at once with Aborted and AsyncError() reports the first failure. The
//   runtime treats any non-OK collective as "skip the commit of this step on this rank".
// Status codes: DeadlineExceeded = a peer did not arrive in time; Aborted = the collective
// failed across ranks (transport failure, cross-rank mismatch, injected fault, abort, or an
// earlier failure); InvalidArgument = this rank's own arguments were wrong. Messages name the
// rank, the peer, the collective number and the values seen.
#ifndef NORMUON_COMM_COMMUNICATOR_H_
#define NORMUON_COMM_COMMUNICATOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "normuon/comm.h"

namespace normuon {

// One point-to-point transfer of an exchange (layout shared with the C API, so the adapter
// passes spans through without copying): {peer, buf, bytes}.
using P2p = normuon_p2p_t;

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // One grouped set of sends and receives (all-to-all with uneven counts). Send i to rank d
  // matches the receive on rank d that names this rank at the same position among its receives
  // from this rank; byte counts must agree. peer == rank() is a local copy. Receive buffers must
  // not overlap send buffers. The spans are read during the call only.
  virtual absl::Status Exchange(absl::Span<const P2p> sends, absl::Span<const P2p> recvs,
                                void* stream) = 0;

  // out[i] = sum over ranks of in[i]; in may equal out. Bitwise-same result on every rank.
  virtual absl::Status AllReduceSum(const float* in, float* out, size_t count, void* stream) = 0;

  // out[r*bytes_per_rank ...] = rank r's in; in may equal out + rank()*bytes_per_rank.
  virtual absl::Status AllGather(const void* in, void* out, size_t bytes_per_rank,
                                 void* stream) = 0;

  // Tears down without waiting on peers; any thread, any time, idempotent.
  virtual absl::Status Abort() = 0;

  // OkStatus while usable; otherwise the first failure (collective error or abort).
  virtual absl::Status AsyncError() const = 0;

  // "in-process rank 2 of 4", for messages.
  virtual std::string Describe() const = 0;

  // True when the buffers of the collectives must be device memory (NCCL, the in-process group in
  // device mode, custom ops with device_memory = 1); false for host
  // memory (the in-process group in host mode, single rank, custom ops by default).
  virtual bool UsesDeviceMemory() const { return false; }
};

// ---- Handle registry (behind normuon_comm_t) ----

// What the C edge keeps per live handle: the communicator and the message of the last failed
// C call on the handle (normuon_comm_last_error).
struct CommHandle {
  std::shared_ptr<Communicator> comm;
  std::mutex mu;  // guards error
  std::string error;
};

// Registers comm and returns its new handle: (tag 0xC0 << 56) | (generation << 32) | slot.
// A slot is reused only with a higher generation, so a stale handle never reaches a newer
// communicator; the tag keeps a runtime handle passed by mistake from matching.
normuon_comm_t RegisterComm(std::shared_ptr<Communicator> comm);

// The communicator behind a handle, for the runtime. handle 0 gives a new single-rank
// communicator (normuon.h: "0 = single rank"). Unknown or destroyed handles: NotFound.
absl::StatusOr<std::shared_ptr<Communicator>> LookupComm(normuon_comm_t handle);

// The registry entry of a live handle; 0, unknown or destroyed: NotFound.
absl::StatusOr<std::shared_ptr<CommHandle>> LookupCommHandle(normuon_comm_t handle);

// Removes a live handle and returns its entry (the communicator lives on while it is used).
absl::StatusOr<std::shared_ptr<CommHandle>> UnregisterComm(normuon_comm_t handle);

// ---- Status conversion between the C enum and absl::Status ----

// "NORMUON_ERROR_TIMEOUT"; never null.
const char* StatusName(normuon_status_t status);

// C status -> absl::Status with `message` (OkStatus for NORMUON_SUCCESS): TIMEOUT ->
// DeadlineExceeded, COMM -> Aborted, INVALID_ARGUMENT -> InvalidArgument, INVALID_HANDLE ->
// NotFound, INVALID_STATE -> FailedPrecondition, UNSUPPORTED -> Unimplemented, OUT_OF_MEMORY ->
// ResourceExhausted, CUDA -> Unknown, NONFINITE -> DataLoss, INTERNAL and unknown values ->
// Internal. The inverse of StatusToC on these codes.
absl::Status StatusFromC(normuon_status_t status, absl::string_view message);

// absl::Status -> C status, as the C API edge reports it.
normuon_status_t StatusToC(const absl::Status& status);

// ---- Implementations ----

// Wraps a caller's normuon_comm_ops_t (copied). Validates struct_size, rank, world_size and the
// required function pointers, naming the bad field (InvalidArgument; ops->ctx is not taken over
// then). On success the communicator owns ctx: ops->destroy(ctx), if set, runs when it is
// destroyed. Failed calls become statuses per StatusFromC, with ops->last_error(ctx) in the
// message.
absl::StatusOr<std::shared_ptr<Communicator>> MakeCustomOpsCommunicator(
    const normuon_comm_ops_t* ops);

// World size 1: Exchange matches sends to self with receives from self and copies host memory;
// AllReduceSum and AllGather copy in to out. Host buffers only: memcpy, stream ignored. The
// CUDA runtime at world size 1 must not route device buffers through it (it skips the
// collectives, or copies on its stream itself).
std::shared_ptr<Communicator> MakeSingleRankCommunicator();

}  // namespace normuon

#endif  // NORMUON_COMM_COMMUNICATOR_H_
