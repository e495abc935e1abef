#!/bin/bash
# The demo as processes: `mpirun -np N normuon_run_mpi --comm=mpi` at N = 1..4 prints one report
# (rank 0's), with the world size, and its --check finds the parameters bitwise equal to the
# single-rank step, under every schedule and with a simulated backward (grad_ready). The plain
# normuon_run (no MPI) refuses --comm=mpi and refuses to run as one of mpirun's processes; a
# flag that disagrees with the process count is reported once. No process is left behind.
# usage: normuon_run_mpi_test.sh NORMUON_RUN_MPI NORMUON_RUN
set -uo pipefail
run_mpi="$1"
run_plain="$2"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader
export OPENBLAS_NUM_THREADS=1
export TMPDIR="${TEST_TMPDIR:-/tmp}"
if [ -n "${ASAN_OPTIONS:-}" ]; then export ASAN_OPTIONS="${ASAN_OPTIONS}:detect_leaks=0"; fi
marker="normuon_run_mpi_test.$$.$RANDOM"
export NORMUON_RUN_MPI_TEST="$marker"
status=0
fail() {
  echo "FAIL: $*" >&2
  status=1
}
# mpirun NP ARGS...: output in $out, stderr in $err, exit status in $rc.
launch() {
  local np="$1"
  shift
  out=$(timeout -k 5 120 mpirun --oversubscribe -np "$np" -x OPENBLAS_NUM_THREADS \
    -x NORMUON_RUN_MPI_TEST ${ASAN_OPTIONS:+-x ASAN_OPTIONS} "$@" 2>"$TMPDIR/err")
  rc=$?
  err=$(cat "$TMPDIR/err")
}

schedules=(sequential per_matrix bucketed sequential)
for np in 1 2 3 4; do
  schedule=${schedules[$((np - 1))]}
  launch "$np" "$run_mpi" --comm=mpi --model=tiny --steps=2 --schedule="$schedule" \
    --bucket_mb=0.05 --check --json
  lines=$(printf '%s\n' "$out" | grep -c '^{' || true)
  if [ "$rc" -ne 0 ] || [ "$lines" -ne 1 ]; then
    fail "np $np $schedule: exit $rc, $lines reports: $out $err"
    continue
  fi
  grep -q "\"ranks\": $np," <<<"$out" || fail "np $np: no \"ranks\": $np in $out"
  grep -q '"comm": "mpi"' <<<"$out" || fail "np $np: no \"comm\": \"mpi\" in $out"
  grep -q '"check_max_abs_diff": 0[,}]' <<<"$out" || fail "np $np $schedule differs: $out"
  grep -q '"exposed_comm_ms"' <<<"$out" || fail "np $np: no phase profile in $out"
  echo "ok: np $np $schedule bitwise"
done

# Overlapped steps (grad_ready from the simulated backward), in text: one header, one summary.
launch 3 "$run_mpi" --comm=mpi --model=tiny --steps=2 --overlap_backward \
  --backward_ms_per_layer=1 --bucket_mb=0.05 --check
[ "$rc" -eq 0 ] || fail "overlap at np 3: exit $rc: $out $err"
[ "$(printf '%s\n' "$out" | grep -c '^normuon_run: model tiny')" -eq 1 ] ||
  fail "overlap at np 3: not one header: $out"
[ "$(printf '%s\n' "$out" | grep -c '^summary: world 3 as MPI processes')" -eq 1 ] ||
  fail "overlap at np 3: not one summary with the world size: $out"
grep -q "(bitwise equal)" <<<"$out" || fail "overlap at np 3 differs: $out"
grep -q "^overlap with a simulated backward" <<<"$out" || fail "no overlap line: $out"

# --ranks that disagrees with the processes: one message, from rank 0, and a failed job.
launch 2 "$run_mpi" --comm=mpi --model=tiny --ranks=3
[ "$rc" -ne 0 ] || fail "--ranks=3 at np 2 accepted: $out"
[ "$(printf '%s\n' "$err" | grep -c -- '--ranks=3 disagrees with --comm=mpi.s 2 processes')" -eq 1 ] ||
  fail "--ranks=3 at np 2: not one message: $err"

# The plain build: no MPI inside, so it refuses both.
if "$run_plain" --comm=mpi --model=tiny >/dev/null 2>"$TMPDIR/err"; then
  fail "normuon_run (no MPI) accepted --comm=mpi"
fi
grep -q "built without MPI" "$TMPDIR/err" || fail "no 'built without MPI': $(cat "$TMPDIR/err")"
launch 2 "$run_plain" --model=tiny
[ "$rc" -ne 0 ] || fail "normuon_run (no MPI) ran as 2 independent processes: $out"
grep -q "started as one of 2 processes" <<<"$err" || fail "no launcher message: $err"

# Nothing of the runs may outlive mpirun.
sleep 0.5
left=$(grep -l -s -z -x "NORMUON_RUN_MPI_TEST=$marker" /proc/[0-9]*/environ || true)
[ -z "$left" ] || fail "processes left behind: $left"
[ "$status" -eq 0 ] && echo "normuon_run_mpi OK"
exit $status
