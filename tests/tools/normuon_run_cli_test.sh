#!/bin/bash
# normuon_run end to end on the tiny model: single rank, and 3 in-process ranks checked against
# the single-rank step (the CPU path must be bitwise equal); bad flags fail with a message.
set -euo pipefail
run="$1"
out=$("$run" --model=tiny --steps=2 --json)
echo "$out" | grep -q '"ranks": 1' || { echo "single-rank JSON missing ranks: $out"; exit 1; }
echo "$out" | grep -q '"newton_schulz_ms"' || { echo "no phase times: $out"; exit 1; }
for policy in round_robin cost_balanced; do
  out=$("$run" --model=tiny --steps=2 --ranks=3 --owner_policy=$policy --check --json)
  echo "$out" | grep -q '"check_max_abs_diff": 0[,}]' || { echo "sharded run differs ($policy): $out"; exit 1; }
done
for schedule in per_matrix bucketed; do
  out=$("$run" --model=tiny --steps=2 --ranks=4 --schedule=$schedule --bucket_mb=0.05 --check --json)
  echo "$out" | grep -q '"check_max_abs_diff": 0[,}]' || { echo "schedule $schedule differs: $out"; exit 1; }
done
# A simulated backward with grad_ready: same parameters as the plain single-rank steps, a trace
# with the backward track, and the exposed time reported.
trace="${TEST_TMPDIR:-/tmp}/trace.json"
out=$("$run" --model=tiny --steps=2 --ranks=3 --schedule=per_matrix --overlap_backward \
      --backward_ms_per_layer=2 --trace="$trace" --check --json)
echo "$out" | grep -q '"check_max_abs_diff": 0[,}]' || { echo "overlap run differs: $out"; exit 1; }
echo "$out" | grep -q '"hidden_fraction"' || { echo "no overlap figures: $out"; exit 1; }
for name in '"backward layer"' '"newton_schulz"' '"gather"' '"traceEvents"'; do
  grep -q "$name" "$trace" || { echo "trace lacks $name"; exit 1; }
done
if "$run" --model=tiny --schedule=eventually 2>/dev/null; then echo "bad schedule accepted"; exit 1; fi
if "$run" --model=tiny --ranks=0 2>/dev/null; then echo "--ranks=0 accepted"; exit 1; fi
if "$run" --model=tiny --owner_policy=fastest 2>/dev/null; then echo "bad policy accepted"; exit 1; fi
if "$run" --model=no-such-model 2>/dev/null; then echo "unknown model accepted"; exit 1; fi
echo "normuon_run CLI OK"
