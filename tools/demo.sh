#!/bin/bash
# The README's demo: installs what is missing, builds, and runs optimizer steps over a real
# model's shapes (tools/normuon_run; pass its flags through, e.g. --model=tiny --steps=5).
#
#   bash tools/demo.sh --procs=N [flags]   the same demo as N processes: builds the MPI build
#                                           (//tools:normuon_run_mpi) and starts it with
#                                           `mpirun -np N ... --comm=mpi`; rank 0 prints the
#                                           one report. Shared memory between the processes;
#                                           --oversubscribe (N may exceed the cores); as root,
#                                           Open MPI's run-as-root consent is given. Each
#                                           process gets cores/N OpenBLAS threads unless
#                                           OPENBLAS_NUM_THREADS is set.
set -euo pipefail
cd "$(dirname "$0")/.."
procs=""
args=()
for a in "$@"; do
  case "$a" in
    --procs=*) procs="${a#--procs=}" ;;
    *) args+=("$a") ;;
  esac
done
source tools/bazel_setup.sh  # sets cache and extra
if [ -z "$procs" ]; then
  bazel run --disk_cache="$cache" "${extra[@]}" -c opt //tools:normuon_run -- "${args[@]}"
  exit
fi
if ! [[ "$procs" =~ ^[1-9][0-9]*$ ]]; then
  echo "demo.sh: --procs=$procs must be a positive integer" >&2
  exit 2
fi
bazel build --disk_cache="$cache" "${extra[@]}" -c opt //tools:normuon_run_mpi
bin="$(bazel info --disk_cache="$cache" "${extra[@]}" -c opt bazel-bin 2>/dev/null)/tools/normuon_run_mpi"
root=()
if [ "$(id -u)" -eq 0 ]; then
  root=(--allow-run-as-root)
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
cores=$(nproc)
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-$(( cores / procs > 0 ? cores / procs : 1 ))}"
exec mpirun "${root[@]}" --oversubscribe --mca btl self,vader -x OPENBLAS_NUM_THREADS \
  -np "$procs" "$bin" --comm=mpi "${args[@]}"
