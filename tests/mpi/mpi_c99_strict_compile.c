/* normuon/mpi.h under strict ISO C99 (no POSIX feature macros: the adapter then polls without
 * sleeping) with every warning an error: it must compile cleanly. Built, not run. */
#include "normuon/mpi.h"

normuon_status_t normuon_mpi_strict_c99_create(MPI_Comm comm, normuon_comm_t* out);

normuon_status_t normuon_mpi_strict_c99_create(MPI_Comm comm, normuon_comm_t* out) {
  char why[128];
  return normuon_comm_create_mpi(comm, 10.0, out, why, sizeof why);
}

normuon_status_t normuon_mpi_strict_c99_create_nccl(MPI_Comm comm, normuon_comm_t* out);

normuon_status_t normuon_mpi_strict_c99_create_nccl(MPI_Comm comm, normuon_comm_t* out) {
  char why[128];
  return normuon_comm_create_nccl_mpi(comm, -1, 10.0, out, why, sizeof why);
}
