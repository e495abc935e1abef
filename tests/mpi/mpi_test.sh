#!/bin/bash
# Runs mpi_test modes under mpirun: mpi_test.sh BINARY MODE "NP..." [BINARY MODE "NP..."]...
# For each run: every rank must print "<mode> OK rank r" (but the one that exits, in mode
# "fault T exit"), mpirun must exit 0 within 60 s, and no rank may be left running.
set -uo pipefail
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One OpenBLAS thread in every process (the single-rank reference included): the bits of the
# comparison depend on the BLAS thread count.
export OPENBLAS_NUM_THREADS=1
# Under AddressSanitizer (tools/test.sh's --config=asan) Open MPI's own allocations, some made by
# components it unloads at MPI_Finalize, show as leaks that no suppression can name (their frames
# are "<unknown module>"): leak checking is off in the MPI processes; every other ASan check
# stays on.
if [ -n "${ASAN_OPTIONS:-}" ]; then export ASAN_OPTIONS="${ASAN_OPTIONS}:detect_leaks=0"; fi
# Shared memory between the ranks of this machine; Open MPI's session files in the test's tmpdir.
export OMPI_MCA_btl=self,vader
export TMPDIR="${TEST_TMPDIR:-/tmp}"
status=0
while [ $# -ge 3 ]; do
  bin="$1"
  mode="$2"
  nps="$3"
  shift 3
  for np in $nps; do
    log="$TMPDIR/run.$$.$np.log"
    start=$(date +%s%N)
    word="${mode%% *}"
    extra=()
    want="$np"
    # The fault modes stall or kill a rank; --enable-recovery keeps mpirun from killing the
    # others when one exits without MPI_Finalize (Open MPI 4.1), so they can report.
    [ "$word" = fault ] && extra=(--enable-recovery)
    case "$mode" in *" exit" | *" kill") want=$((np - 1)) ;; esac
    # Every process of this run carries a marker in its environment (the shell itself does not).
    marker="$$.$np.$RANDOM.$(date +%s%N)"
    # shellcheck disable=SC2086
    NORMUON_MPI_TEST_RUN="$marker" timeout -k 5 60 mpirun --oversubscribe "${extra[@]}" \
      -np "$np" -x OPENBLAS_NUM_THREADS -x NORMUON_MPI_TEST_RUN ${ASAN_OPTIONS:+-x ASAN_OPTIONS} "$bin" $mode >"$log" 2>&1
    rc=$?
    took=$(( ($(date +%s%N) - start) / 1000000 ))
    oks=$(grep -c "^$word OK rank" "$log" || true)
    if [ "$rc" -ne 0 ] || [ "$oks" -ne "$want" ]; then
      echo "FAIL: $(basename "$bin") $mode at np $np: mpirun exit $rc, $oks of $want ranks OK" >&2
      cat "$log" >&2
      status=1
    else
      echo "ok: $(basename "$bin") $mode at np $np (${took} ms)"
      grep -v "OK rank" "$log" | head -20
    fi
    # No process of the run may outlive mpirun (allow a few seconds for the exits).
    left=""
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      left=$(grep -l -s -z -x "NORMUON_MPI_TEST_RUN=$marker" /proc/[0-9]*/environ || true)
      [ -z "$left" ] && break
      sleep 0.5
    done
    if [ -n "$left" ]; then
      echo "FAIL: processes left behind after $mode at np $np: $left" >&2
      status=1
    fi
  done
done
if [ $# -ne 0 ]; then
  echo "usage: mpi_test.sh BINARY MODE NPS [BINARY MODE NPS]..." >&2
  exit 2
fi
exit $status
