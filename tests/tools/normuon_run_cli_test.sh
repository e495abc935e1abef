#!/bin/bash
# normuon_run end to end on the tiny model: single rank, and 3 in-process ranks checked against
# the single-rank step (the CPU path must be bitwise equal); --overlap_backward's schedule; bad
# flags fail with a message.
set -euo pipefail
run="$1"
out=$("$run" --model=tiny --steps=2 --json)
grep -q '"ranks": 1' <<<"$out" || { echo "single-rank JSON missing ranks: $out"; exit 1; }
grep -q '"newton_schulz_ms"' <<<"$out" || { echo "no phase times: $out"; exit 1; }
for policy in round_robin cost_balanced; do
  out=$("$run" --model=tiny --steps=2 --ranks=3 --owner_policy=$policy --check --json)
  grep -q '"check_max_abs_diff": 0[,}]' <<<"$out" || { echo "sharded run differs ($policy): $out"; exit 1; }
done
for schedule in per_matrix bucketed; do
  out=$("$run" --model=tiny --steps=2 --ranks=4 --schedule=$schedule --bucket_mb=0.05 --check --json)
  grep -q '"check_max_abs_diff": 0[,}]' <<<"$out" || { echo "schedule $schedule differs: $out"; exit 1; }
done
# Tensor parallel x FSDP (Megatron layout, column pieces for c_proj): bitwise equal to one rank.
for mesh in "2 4" "4 4" "2 6" "4 8"; do
  set -- $mesh
  out=$("$run" --model=tiny --steps=2 --tp=$1 --ranks=$2 --schedule=bucketed --bucket_mb=0.05 \
        --check --json)
  grep -q '"check_max_abs_diff": 0[,}]' <<<"$out" || { echo "TP$1 on $2 ranks differs: $out"; exit 1; }
done
# A fused QKV split without interleaving: each TP rank holds its rows of q, k and v, registered
# as three pieces (normuon_param_desc_t.pieces); bitwise equal to one rank.
for mesh in "2 4" "4 4"; do
  set -- $mesh
  out=$("$run" --model=tiny --steps=2 --tp=$1 --ranks=$2 --qkv_layout=separate \
        --schedule=bucketed --bucket_mb=0.05 --check --json)
  grep -q '"check_max_abs_diff": 0[,}]' <<<"$out" ||
    { echo "separate QKV, TP$1 on $2 ranks differs: $out"; exit 1; }
done
if "$run" --model=tiny --steps=1 --qkv_layout=fused 2>"${TEST_TMPDIR:-/tmp}/qkv_err.txt"; then
  echo "--qkv_layout=fused accepted"; exit 1
fi
grep -q -- "--qkv_layout = 'fused': expected interleaved or separate" \
  "${TEST_TMPDIR:-/tmp}/qkv_err.txt" ||
  { echo "unclear --qkv_layout refusal: $(cat "${TEST_TMPDIR:-/tmp}/qkv_err.txt")"; exit 1; }
if "$run" --model=tiny --steps=1 --tp=3 --ranks=4 2>"${TEST_TMPDIR:-/tmp}/tp_err.txt"; then
  echo "--tp not dividing --ranks accepted"; exit 1
fi
grep -q -- "--tp = 3 must be >= 1 and divide --ranks = 4" "${TEST_TMPDIR:-/tmp}/tp_err.txt" ||
  { echo "unclear --tp refusal: $(cat "${TEST_TMPDIR:-/tmp}/tp_err.txt")"; exit 1; }
# A simulated backward with grad_ready: same parameters as the plain single-rank steps, a trace
# with the backward track, and the exposed time reported.
trace="${TEST_TMPDIR:-/tmp}/trace.json"
out=$("$run" --model=tiny --steps=2 --ranks=3 --schedule=per_matrix --overlap_backward \
      --backward_ms_per_layer=2 --trace="$trace" --check --json)
grep -q '"check_max_abs_diff": 0[,}]' <<<"$out" || { echo "overlap run differs: $out"; exit 1; }
grep -q '"hidden_fraction"' <<<"$out" || { echo "no overlap figures: $out"; exit 1; }
for name in '"backward layer"' '"newton_schulz"' '"gather"' '"traceEvents"'; do
  grep -q "$name" "$trace" || { echo "trace lacks $name"; exit 1; }
done
# --overlap_backward without --schedule runs the bucketed schedule (as the PyTorch front end) and
# says so on stderr; with an explicit --schedule=sequential (nothing could start early) it is
# refused.
err="${TEST_TMPDIR:-/tmp}/overlap_err.txt"
fail() { echo "$1"; exit 1; }
out=$("$run" --model=tiny --steps=2 --ranks=2 --overlap_backward --backward_ms_per_layer=1 \
      --json 2>"$err")
grep -q '"schedule": "bucketed"' <<<"$out" || fail "overlap did not pick bucketed: $out"
grep -q '"hidden_fraction"' <<<"$out" || fail "no overlap figures: $out"
grep -q "using the bucketed schedule" "$err" || fail "no note on the schedule: $(cat "$err")"
if "$run" --model=tiny --steps=1 --overlap_backward --schedule=sequential 2>"$err" >/dev/null; then
  fail "--overlap_backward with --schedule=sequential accepted"
fi
grep -q -- "--overlap_backward needs a pipelined schedule" "$err" ||
  fail "unclear refusal: $(cat "$err")"
out=$("$run" --model=tiny --steps=1 --schedule=sequential --json)
grep -q '"schedule": "sequential"' <<<"$out" || fail "explicit sequential not kept: $out"
# Bad enum values are refused by the flag parser, naming the flag and what it accepts.
if "$run" --model=tiny --schedule=eventually 2>"$err"; then fail "bad schedule accepted"; fi
grep -q -- "--schedule must be one of sequential, per_matrix, bucketed" "$err" ||
  fail "bad schedule message: $(cat "$err")"
if "$run" --model=tiny --backend=tpu 2>"$err"; then fail "bad backend accepted"; fi
grep -q -- "--backend must be one of cpu, cuda" "$err" || fail "bad backend message: $(cat "$err")"
if "$run" --model=tiny --check --check_against=gpu 2>/dev/null; then
  fail "bad --check_against accepted"
fi
if "$run" --model=tiny --ns_dtype=fp8 2>/dev/null; then fail "bad --ns_dtype accepted"; fi
if "$run" --model=tiny --ranks=0 2>/dev/null; then echo "--ranks=0 accepted"; exit 1; fi
if "$run" --model=tiny --owner_policy=fastest 2>/dev/null; then echo "bad policy accepted"; exit 1; fi
if "$run" --model=no-such-model 2>/dev/null; then echo "unknown model accepted"; exit 1; fi
echo "normuon_run CLI OK"
