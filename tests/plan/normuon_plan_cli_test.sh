#!/bin/bash
# normuon_plan end to end: text and JSON reports for built-in models and a shape file, rates read
# from a Google Benchmark JSON file, the backward-overlap figures, and every bad flag failing
# with a message that names the flag.
set -euo pipefail
plan="$1"
tmp="${TEST_TMPDIR:-/tmp}"

fail() { echo "FAIL: $*"; exit 1; }

# Text: one line per schedule and the per-rank table.
out=$("$plan" --model=gpt2-124m --world=16 --max_rank_lines=4)
for s in sequential per_matrix bucketed "world 16 on 2 nodes of 8 GPUs" "12 more ranks" "rank 0 phases"; do
  grep -q -- "$s" <<<"$out" || fail "text report lacks '$s': $out"
done

# JSON: well-formed (python3's parser when there is one) with the fields the README cites.
out=$("$plan" --model=llama-70b --world=64 --schedule=bucketed --backward_ms_per_layer=5 --json)
for key in '"schedules"' '"step_ms"' '"exposed_after_last_grad_ms"' '"bytes_sent"' \
           '"state_bytes"' '"ns5_flops"' '"phases_rank0"'; do
  grep -q "$key" <<<"$out" || fail "JSON lacks $key"
done
if command -v python3 >/dev/null 2>&1; then
  echo "$out" | python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["world"] == 64' \
    || fail "python3 cannot read the JSON report"
fi

# A shape file, the in-process machine, and rates from a benchmark file.
cat > "$tmp/shapes.txt" <<'SHAPES'
h.0.w 64x32 matrix
h.0.b 64 adamw
h.1.w 32x64 matrix
SHAPES
cat > "$tmp/rates.json" <<'RATES'
{"context": {}, "benchmarks": [
  {"name": "BM_NewtonSchulzCpu/64/32/real_time", "run_type": "iteration", "TFLOP/s": 0.01},
  {"name": "BM_Blend/1024/2048/real_time", "run_type": "iteration", "GB/s": 2.5}]}
RATES
out=$("$plan" --shapes="$tmp/shapes.txt" --machine=cpu_inprocess --cores=2 --world=3 \
      --rates="$tmp/rates.json" --verbose --json)
grep -q '"kind": "cpu_inprocess"' <<<"$out" || fail "machine not in JSON: $out"
grep -q '"blend": 2.5' <<<"$out" || fail "blend rate not read: $out"
grep -q '"owned_names": \["h.0.w"\]\|"owned_names": \["h.1.w"\]' <<<"$out" || fail "no owned names: $out"
grep -q '"ns_dtype": "fp32"' <<<"$out" || fail "cpu_inprocess should default to fp32: $out"

# Bad flags: non-zero exit, and the message names the flag.
expect_error() {
  local flag="$1"; shift
  local err
  if err=$("$plan" "$@" 2>&1 >/dev/null); then fail "accepted: $*"; fi
  grep -q -- "$flag" <<<"$err" || fail "error for '$*' does not name $flag: $err"
}
expect_error --world --world=0
expect_error --schedule --schedule=eventually
expect_error --machine --machine=tpu
expect_error --owner_policy --owner_policy=fastest
expect_error --ns_dtype --ns_dtype=fp8
expect_error --bucket_mb --bucket_mb=0
expect_error --intra_gbps --intra_gbps=0
expect_error --inter_gbps --inter_gbps=-1
expect_error --intra_latency_us --intra_latency_us=-1
expect_error --inter_latency_us --inter_latency_us=-3
expect_error --gpus_per_node --gpus_per_node=0
expect_error --link_model --link_model=mesh
expect_error --cores --cores=0
expect_error --blas_threads --blas_threads=-2
expect_error --kernel_us --kernel_us=-5
expect_error --ns_tflops --ns_tflops=-1
expect_error --mem_gbps --mem_gbps=-1
expect_error --backward_ms_per_layer --backward_ms_per_layer=-1
expect_error --max_rank_lines --max_rank_lines=-1
expect_error --rates --rates="$tmp/missing.json"
echo '{"benchmarks": []}' > "$tmp/empty.json"
expect_error --rates --rates="$tmp/empty.json"
expect_error --model --model=no-such-model
expect_error --shapes --shapes="$tmp/missing.txt"
expect_error --ns_method --ns_method=polar
expect_error --ns_restarts --ns_restarts=5
expect_error --ns_restarts --ns_restarts=0
expect_error --ns_restarts --ns_restarts=3,2
expect_error --ns_restarts --ns_restarts=two
expect_error --tp --tp=-1
expect_error --tp --tp=3 --world=8
expect_error --mesh_worlds --mesh_worlds=64
expect_error --mesh_worlds --tp=8 --mesh_worlds=60
expect_error --split_k --tp=2 --split_k=3
expect_error --split_k --tp=2 --world=8 --split_k=16

# Gram NS: fewer FLOPs on a wide matrix, the method in the JSON; a square one costs the same.
std_flops=$("$plan" --shapes="$tmp/shapes.txt" --world=1 --json | grep -o '"ns5_flops": [0-9.e+]*' | head -1)
gram_out=$("$plan" --shapes="$tmp/shapes.txt" --world=1 --json --ns_method=gram)
gram_flops=$(echo "$gram_out" | grep -o '"ns5_flops": [0-9.e+]*' | head -1)
grep -q '"ns_method": "gram"' <<<"$gram_out" || fail "ns_method not in JSON: $gram_out"
[ "$std_flops" != "$gram_flops" ] || fail "gram did not change the FLOPs: $std_flops"

# The TP x DP mesh comparison: four strategies per world, text and JSON.
out=$("$plan" --model=llama-8b-layer --tp=8 --world=64 --mesh_worlds=128)
for s in gather_to_owner duplicated_tp gram_allreduce_tp split_gram "world 64 = tp 8 x dp 8" \
         "world 128 = tp 8 x dp 16"; do
  grep -q -- "$s" <<<"$out" || fail "mesh report lacks '$s': $out"
done
if command -v python3 >/dev/null 2>&1; then
  "$plan" --model=llama-8b-layer --tp=8 --world=64 --mesh_worlds=128,256 --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert [m["world"] for m in d["mesh"]] == [64, 128, 256], d
for m in d["mesh"]:
    s = {x["strategy"]: x for x in m["strategies"]}
    assert len(s) == 4, s
    a, b = s["gather_to_owner"], s["duplicated_tp"]
    assert abs(b["total_flops"] - 8 * a["total_flops"]) <= 1e-9 * b["total_flops"], (a, b)
    for x in s.values():
        assert x["busy_ranks"] + x["idle_ranks"] == m["world"], x
' || fail "mesh JSON"
fi
echo "normuon_plan CLI OK"
