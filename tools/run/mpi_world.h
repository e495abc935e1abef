// mpi_world.h: normuon_run's ranks as MPI processes (--comm=mpi), in the MPI build of the tool
// only (//tools:normuon_run_mpi; the plain //tools:normuon_run links no MPI, as libnormuon
// links none). Every process started by mpirun is one rank: it makes the MPI communicator of
// include/normuon/mpi.h over MPI_COMM_WORLD, runs RunRank on its FSDP2 rows, and sends what it
// measured (and, for --check, its parameter rows) to rank 0, which prints the one report.
#ifndef NORMUON_TOOLS_RUN_MPI_WORLD_H_
#define NORMUON_TOOLS_RUN_MPI_WORLD_H_

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/run/rank_run.h"
#include "tools/run/run_config.h"

namespace normuon_tools::run {

// MPI for the life of the object: MPI_Init_thread(MPI_THREAD_MULTIPLE) in Start, MPI_Finalize
// in the destructor (after a barrier that sleeps between polls, so ranks that wait for rank 0's
// report leave the cores to it).
class MpiWorld {
 public:
  static absl::StatusOr<std::unique_ptr<MpiWorld>> Start();
  ~MpiWorld();
  MpiWorld(const MpiWorld&) = delete;
  MpiWorld& operator=(const MpiWorld&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }

  // Collective: -1 when `ok` on every rank, else the lowest rank where it is false.
  int FirstFailed(bool ok);

  // Runs this process's rank of `setup` (setup.ranks == world()) over a new MPI communicator
  // with setup.timeout_s. On rank 0: every rank's outcome, in rank order. On the other ranks:
  // an empty vector (their outcomes went to rank 0). Ranks whose run failed keep their error in
  // RankOutcome::error; an error status: the communicator could not be made, or the outcomes
  // could not be moved.
  absl::StatusOr<std::vector<RankOutcome>> Run(const RunSetup& setup);

  // Ends the job at once from any rank (MPI_Abort): after a failed step MPI may still hold
  // requests into freed buffers, so no rank finalizes (mpi.h, "Failure").
  [[noreturn]] void Abort(int code);

 private:
  MpiWorld() = default;
  int rank_ = 0, world_ = 1;
};

}  // namespace normuon_tools::run

#endif  // NORMUON_TOOLS_RUN_MPI_WORLD_H_
