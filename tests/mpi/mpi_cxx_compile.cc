// normuon/mpi.h compiled as C++17: create a communicator and check its world size.
#include <cstdio>

#include "normuon/mpi.h"

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, world = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  normuon_comm_t comm = 0;
  char why[256];
  int failures = 0;
  if (normuon_comm_create_mpi(MPI_COMM_WORLD, 10.0, &comm, why, sizeof why) != NORMUON_SUCCESS) {
    std::fprintf(stderr, "FAIL rank %d: %s\n", rank, why);
    ++failures;
  } else {
    int32_t size = 0;
    normuon_comm_world_size(comm, &size);
    if (size != world) {
      std::fprintf(stderr, "FAIL rank %d: world size %d, MPI says %d\n", rank, size, world);
      ++failures;
    }
    normuon_comm_destroy(comm);
  }
  // The NCCL call compiles as C++ and returns on every rank (no GPU needed: without a usable
  // NCCL every rank gets rank 0's failure; mpi_test's "nccl" mode checks that in detail).
  normuon_comm_t nccl = 0;
  const normuon_status_t s = normuon_comm_create_nccl_mpi(MPI_COMM_WORLD, -1, 10.0, &nccl, why,
                                                          sizeof why);
  if (s == NORMUON_SUCCESS) {
    normuon_comm_destroy(nccl);
  } else if (why[0] == '\0') {
    std::fprintf(stderr, "FAIL rank %d: create_nccl_mpi failed without a message\n", rank);
    ++failures;
  }
  if (failures == 0) std::printf("collectives OK rank %d\n", rank);
  std::fflush(stdout);
  MPI_Finalize();
  return failures == 0 ? 0 : 1;
}
