// The in-process group: N ranks as N threads of one process, exchanging host buffers. It is
// what the tests, the demo and the CPU benchmarks use to run a whole multi-rank step on one
// machine, and it can inject the faults of a real cluster (an erroring rank, a dead peer, a
// message of the wrong size).
//
// Two kinds of memory (fixed when the group is created):
// - host (InProcessMemory::kHost): every buffer is host memory; `stream` is ignored.
// - device (InProcessMemory::kDevice): every buffer is CUDA device memory (UsesDeviceMemory()),
//   for the CUDA backend's sharded step with ranks as threads sharing one machine's GPU(s). On
//   entry a rank waits for the work queued on its `stream` (so its send buffers are written),
//   copies run on the receiving rank's stream with unified addressing, and a collective returns
//   when its copies are complete. It is the NCCL contract, made synchronous: the runtime's code
//   path for device communicators runs on one GPU without NCCL. Unimplemented in the CPU-only
//   build.
//
// Every collective is a rendezvous. A rank's call blocks until all ranks have posted their part
// of the same collective (collectives are numbered per rank from 0; every rank must call the
// same sequence), or until the group's timeout, which becomes DeadlineExceeded naming the ranks
// that did not arrive ("rank 2 waited 1.00 s for ranks {0,3} in collective #7 (exchange)").
// Once all have posted, the last rank to arrive checks the collective across ranks (same kind;
// same count or bytes per rank; every send matched by a receive of the same byte count) and,
// only if all agree, each rank copies what it receives. So a mismatch copies nothing on any rank.
//
// Failure is sticky for the whole group: a timeout, a mismatch, a rank's bad arguments, an
// injected fault, Abort() on any rank, or the destruction of any rank's communicator fails the
// group; every rank then gets an error for the collective in flight and Aborted at once for
// every later one. A real cluster behaves the same way (a NCCL communicator that failed must be
// aborted), and it keeps a rank from waiting for a peer that has already given up.
//
// Deterministic: exchange copies follow each receiver's receive list; AllReduceSum adds in rank
// order 0, 1, ..., N-1 into one buffer that every rank copies (bitwise-same result everywhere);
// AllGather concatenates in rank order.
//
// Synchronization uses std::mutex and std::condition_variable only (docs/ARCHITECTURE.md section 6:
// Debian's Abseil is not built for ThreadSanitizer, which then reports races in absl::Mutex).
#ifndef NORMUON_COMM_INPROCESS_GROUP_H_
#define NORMUON_COMM_INPROCESS_GROUP_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"

namespace normuon {

class InProcessGroupState;  // shared by the ranks of one group

// One rank of an in-process group. Drive each rank from its own thread; collectives on one rank
// must not be called concurrently.
class InProcessRank final : public Communicator {
 public:
  InProcessRank(std::shared_ptr<InProcessGroupState> group, int rank);
  // Fails the group for the other ranks (as a dead peer would), unless it already failed.
  ~InProcessRank() override;

  int rank() const override { return rank_; }
  int world_size() const override;
  std::string Describe() const override;

  absl::Status Exchange(absl::Span<const P2p> sends, absl::Span<const P2p> recvs,
                        void* stream) override;
  absl::Status AllReduceSum(const float* in, float* out, size_t count, void* stream) override;
  absl::Status AllGather(const void* in, void* out, size_t bytes_per_rank,
                         void* stream) override;
  // Fails the group: pending and later collectives of every rank return at once.
  absl::Status Abort() override;
  absl::Status AsyncError() const override;
  bool UsesDeviceMemory() const override;

  // Arms `fault` (normuon/comm.h) for this rank's collective #at_call, replacing a pending one;
  // NORMUON_FAULT_NONE disarms. at_call must not be before next_collective().
  absl::Status InjectFault(normuon_fault_t fault, int64_t at_call);

  // The number this rank's next collective will have.
  int64_t next_collective() const;

 private:
  std::shared_ptr<InProcessGroupState> group_;
  const int rank_;
};

enum class InProcessMemory { kHost, kDevice };

// Creates the world_size ranks of a new group; element r is rank r. 1 <= world_size <= 4096;
// timeout_seconds finite, > 0 and <= 1e7. Every rank's wait is bounded by timeout_seconds from
// the moment it enters a collective. kDevice: Unimplemented in a build without CUDA, Unknown
// without a usable CUDA device.
absl::StatusOr<std::vector<std::shared_ptr<InProcessRank>>> CreateInProcessGroup(
    int world_size, double timeout_seconds, InProcessMemory memory = InProcessMemory::kHost);

}  // namespace normuon

#endif  // NORMUON_COMM_INPROCESS_GROUP_H_
