// The communicator as the runtime sees it: the collectives of one optimizer step (grouped
// point-to-point exchange, all-reduce sum, all-gather), the adapter that drives a caller's
// normuon_comm_ops_t, and the single-rank communicator that stands in when the handle is 0. The
// handles of normuon_comm_t belong to the C edge (capi/comm_handles.h).
//
// Contract shared by every implementation (and stated for C callers in normuon/comm.h):
// - One thread at a time calls the collectives of one Communicator, and every rank issues the
//   same collectives in the same order. Abort() and AsyncError() may be called from any thread.
// - Host backends complete the collective before returning; device backends enqueue on
//   `stream` (a cudaStream_t) and return. Buffers stay valid until completion.
// - No call waits forever: a peer that does not arrive turns into DeadlineExceeded.
// - Failure is sticky for the library's own transports: once a collective fails (or Abort is
//   called) the communicator is done; later collectives fail at once with Aborted and
//   AsyncError() reports the first failure. The adapter over a caller's ops is sticky after an
//   abort or a timeout only: other errors are the caller's transport's to judge (normuon/comm.h,
//   "After a failure"). The runtime treats any non-OK collective as "skip the commit of this
//   step on this rank", still issues the rest of the step's collectives, and says so to the
//   other ranks in the step's flags (docs/ARCHITECTURE.md section 6, "One-sided failures").
// Status codes: DeadlineExceeded = a peer did not arrive in time; Aborted = the collective
// failed across ranks (transport failure, cross-rank mismatch, injected fault, abort, or an
// earlier failure); InvalidArgument = this rank's own arguments were wrong. Messages name the
// rank, the peer, the collective number and the values seen.
#ifndef NORMUON_COMM_COMMUNICATOR_H_
#define NORMUON_COMM_COMMUNICATOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
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

// ---- Implementations ----

// Wraps a caller's normuon_comm_ops_t (copied). ops is a complete struct of this library's
// version: the C edge's versioned copy (base/versioned_struct.h) made it one, so struct_size is
// not read here. Validates rank, world_size, device_memory and the required function pointers,
// naming the bad field (InvalidArgument; ops.ctx is not taken over then). On success the
// communicator owns ctx: ops.destroy(ctx), if set, runs when it is destroyed. Failed calls become
// statuses per StatusFromC (base/c_status.h), with ops.last_error(ctx) in the message.
absl::StatusOr<std::shared_ptr<Communicator>> MakeCustomOpsCommunicator(
    const normuon_comm_ops_t& ops);

// Gives ctx back to the caller: when comm (made by MakeCustomOpsCommunicator) is destroyed,
// ops.destroy(ctx) is not called. For a create that fails after the communicator was made
// (normuon_comm_create_custom promises that a failed create takes nothing over). Other
// communicators: no effect.
void ReleaseCustomOpsContext(Communicator& comm);

// World size 1: Exchange matches sends to self with receives from self and copies host memory;
// AllReduceSum and AllGather copy in to out. Host buffers only: memcpy, stream ignored. The
// CUDA runtime at world size 1 must not route device buffers through it (it skips the
// collectives, or copies on its stream itself).
std::shared_ptr<Communicator> MakeSingleRankCommunicator();

}  // namespace normuon

#endif  // NORMUON_COMM_COMMUNICATOR_H_
