#!/bin/bash
# libnormuon.so must not need MPI: MPI_Comm differs between MPI libraries, so the adapter is
# compiled by the trainer (include/normuon/mpi.h). Checks the library's NEEDED entries and its
# undefined symbols.
set -euo pipefail
lib="$1"
needed=$(readelf -d "$lib" | grep NEEDED || true)
echo "$needed"
if grep -qi mpi <<<"$needed"; then
  echo "FAIL: $lib needs an MPI library" >&2
  exit 1
fi
if nm -D --undefined-only "$lib" | grep -q ' MPI_'; then
  echo "FAIL: $lib has undefined MPI_ symbols" >&2
  exit 1
fi
if ! nm -D --defined-only "$lib" | grep -q ' normuon_comm_create_custom$'; then
  echo "FAIL: $lib does not export normuon_comm_create_custom (wrong file?)" >&2
  exit 1
fi
echo "no_mpi_in_library_test: OK"
