#!/usr/bin/env bash
# tools/device_check.sh: the one prepared GPU check of normuon (docs/ARCHITECTURE.md section 6, "Machine
# limits"; ../.library/device/METHOD.md): a smoke tier first, then equivalence, then benchmarks,
# each tier with its own time budget, every log under $OUT.
#
# Two commands:
#   1. Here, on the CPU machine (builds -c opt with CUDA, packs .device/ and .anchors/):
#          bash tools/pack_device.sh
#   2. One device call (the `run` tool), from the repository root:
#          command:   bash tools/device_check.sh
#          carry:     [".device", ".anchors"]
#          timeout_s: 560   (the tier budgets below add up to 540 s; the machine's start is extra)
#      To rerun part of it (a session has 15 minutes of device time, starts included), name the
#      tiers: `TIERS="1 2" bash tools/device_check.sh`, `TIERS=3 bash tools/device_check.sh`.
#
# Tiers and budgets (seconds; override with SMOKE_S, EQUIV_S, BENCH_S):
#   1 smoke (120): GPU inventory (nvidia-smi); tests/cuda/cuda_backend_test (CUDA backend vs the
#     CPU backend, op by op, and 2-D piece calls vs packed calls); the GPU tests sharded_cuda_test
#     (the CUDA sharded step on 1-8 ranks sharing the GPU vs the CPU backend),
#     two_d_shards_cuda_test (column pieces: TP2 x DP2 and TP4 meshes bitwise vs the row-only
#     layout and the single rank, strided parameters, graph mode with them; several pieces per
#     rank with bind_piece and checkpoints; AdaMuon with column pieces),
#     inprocess_device_test (the device-memory in-process group), nccl_real_test (the NCCL
#     communicator at world size 1 on the real libnccl, found in the toolkit or PyTorch's wheel:
#     NORMUON_NCCL_LIBRARY), gram_cuda_test (Gram NS in fp16 and bf16, dense and tile products,
#     vs float64 standard NS: fp16 Gram no worse than standard bf16, issue 14), graph_test (CUDA
#     graph replay vs
#     eager) and pointer_check_test (host, pinned, managed, other-device pointers); tests/python/torch_cuda_test.py (the PyTorch front end on CUDA tensors against CPU
#     tensors, with the machine's PyTorch and the packed libnormuon.so); golden_check --backend=cuda on tests/data/normuon_reference.txt in bf16 (tolerance
#     7e-2) and fp32 (--tol=1e-5); one normuon_run --backend=cuda --model=tiny step.
#   2 equivalence (180): run-to-run determinism of the CUDA step (normuon_run gpt2-124m twice,
#     identical parameter checksums); normuon_run --backend=cuda --ranks=N --check against the
#     single-rank CUDA step and against the CPU backend (also --tp=2: column pieces, bitwise;
#     and --tp=2 --qkv_layout=separate: several pieces per rank, bitwise);
#     compute-sanitizer memcheck on cuda_backend_test, sharded_cuda_test, two_d_shards_cuda_test
#     (one case) and graph_test (racecheck too with RACECHECK=1).
#   3 benchmarks (240), most important first: newton_schulz_gpu_bench (with NsPhase: each model's
#     whole Newton-Schulz phase, standard bf16 vs Gram bf16/fp16 dense/tiles, with both floors)
#     and elementwise_gpu_bench (Google Benchmark JSON), normuon_run --backend=cuda gpt2-124m
#     (--json; also with Gram fp16, dense and tile products), step_bench's CUDA
#     step cases, the anchors (python3 .anchors/anchors/anchor_bench.py --model gpt2-124m with
#     ANCHOR_IMPLS, default official,dion,adamw-fused), normuon_run --backend=cuda llama-1b, then
#     DeepSpeed's Gram NS (anchor_bench.py --ns-only, gpt2-124m and llama-1b; SKIP_ANCHOR_NS=1
#     skips it) into ns-anchors.json.
# A check that runs past what is left of its tier's budget is stopped (TIMEOUT); checks after it
# in that tier are SKIPPED. Later tiers still run.
#
# Files under $OUT (the device tool returns at most 8; past 8 the end bundles all but the six
# read first into extra.tar.gz): summary.txt (one line per check, then
# compact tables of the benchmark results: read this first), checks.log (tiers 1 and 2),
# bench.log (tier 3's output), ns_gpu.json, elementwise_gpu.json, step_gpu.json,
# normuon_run.jsonl (one JSON object per normuon_run benchmark run), anchors-gpt2.json,
# ns-anchors.json.
#
# Without a GPU (or run here with OUT=/tmp/out) every tier reports "no GPU: skipped"; the packed
# binaries are still started once each (they skip their GPU work) so a broken pack shows here.
# Exit status: 0 every check that ran passed; 1 a check failed or timed out; 2 no GPU or nothing
# packed (nothing was verified). A tier left out of TIERS is reported as skipped.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2

OUT=${OUT:-/tmp/device_check_out}
mkdir -p "$OUT"
SMOKE_S=${SMOKE_S:-120}
EQUIV_S=${EQUIV_S:-180}
BENCH_S=${BENCH_S:-240}
TIERS=${TIERS:-1 2 3}
DEV=.device
SUMMARY=$OUT/summary.txt
CHECKS_LOG=$OUT/checks.log
BENCH_LOG=$OUT/bench.log
: >"$SUMMARY"
: >"$CHECKS_LOG"
: >"$BENCH_LOG"

passed=0
failed=0
skipped=0
tier_deadline=0

say() { echo "$*" | tee -a "$SUMMARY"; }

# tier NAME BUDGET: starts a tier whose checks share BUDGET seconds.
tier() {
  tier_deadline=$(( $(date +%s) + $2 ))
  say ""
  say "== $1 (budget $2 s)"
}

# skip NAME REASON: records a check that was not run.
skip() {
  say "  SKIP     $1: $2"
  skipped=$((skipped + 1))
}

# check NAME LOG COMMAND...: runs COMMAND with what is left of the tier's budget, appending its
# output to LOG; records PASS, FAIL (exit status) or TIMEOUT with the seconds it took.
check() {
  local name=$1 log=$2
  shift 2
  local left=$(( tier_deadline - $(date +%s) ))
  if (( left < 5 )); then
    skip "$name" "tier budget spent"
    return 1
  fi
  {
    echo ""
    echo "=== $name ($(date -u +%H:%M:%S), ${left} s left in the tier)"
    echo "\$ $*"
  } >>"$log"
  local t0 rc dt
  t0=$(date +%s)
  timeout -k 5 "$left" "$@" >>"$log" 2>&1
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  if (( rc == 0 )); then
    say "  PASS     $name (${dt} s)"
    passed=$((passed + 1))
  elif (( rc == 124 || rc == 137 )); then
    say "  TIMEOUT  $name (${dt} s; see $(basename "$log"))"
    failed=$((failed + 1))
  else
    say "  FAIL     $name (exit $rc, ${dt} s; see $(basename "$log"))"
    failed=$((failed + 1))
  fi
  return $rc
}

# Compares two normuon_run --json outputs: the same param_sum and param_norm (bitwise: the
# printed values carry 17 significant digits).
SAME_CHECKSUMS_PY='
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
keys = ("param_sum", "param_norm")
print("run 1:", {k: a[k] for k in keys})
print("run 2:", {k: b[k] for k in keys})
sys.exit(0 if all(a[k] == b[k] for k in keys) else 1)
'

# Checks a Chrome trace: JSON, complete events ('X') on at least two processes (ranks), with
# non-negative durations, and the step's stages named.
TRACE_OK_PY='
import json, sys
doc = json.load(open(sys.argv[1]))
ev = [e for e in doc["traceEvents"] if e.get("ph") == "X"]
names = sorted({e["name"].split(" ")[0] for e in ev})
pids = sorted({e["pid"] for e in ev})
print(len(ev), "spans; ranks", pids, "; names", names)
assert len(pids) >= 2 and ev and all(e["dur"] >= 0 for e in ev)
'

say "device_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), tiers: $TIERS, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"

# ---- What is there: the pack, the GPU.
packed=1
if [ ! -f "$DEV/env.sh" ] || [ ! -d "$DEV/bin" ]; then
  packed=0
  say "not packed: $DEV/env.sh or $DEV/bin missing; run 'bash tools/pack_device.sh' here first" \
      "and carry [\"$DEV\", \".anchors\"]"
else
  # env.sh unpacks the libraries, sets LD_LIBRARY_PATH and names any library still missing.
  # The unpacked copy is removed at exit if this run made it: run here, it would otherwise
  # travel with the next device call and crowd its 64 MiB.
  if [ ! -d "$DEV/lib" ]; then trap 'rm -rf "${DEV:?}/lib"' EXIT; fi
  envmsg=$(mktemp)
  # shellcheck disable=SC1091
  source "$DEV/env.sh" >"$envmsg" 2>&1
  cat "$envmsg" >>"$CHECKS_LOG"
  if [ -s "$envmsg" ]; then say "env.sh: $(tr '\n' ' ' <"$envmsg")"; fi
  rm -f "$envmsg"
  export NORMUON_MODELS_DIR=$PWD/$DEV/models
  # The real NCCL for nccl_real_test: the toolkit's, else the one in PyTorch's wheel.
  if [ -z "${NORMUON_NCCL_LIBRARY:-}" ]; then
    for f in /usr/local/cuda/lib64/libnccl.so.2 \
             $(python3 -c 'import nvidia.nccl, glob; print(" ".join(glob.glob(nvidia.nccl.__path__[0] + "/lib/libnccl.so*")))' 2>/dev/null); do
      if [ -f "$f" ]; then export NORMUON_NCCL_LIBRARY=$f; break; fi
    done
  fi
  say "NCCL for nccl_real_test: ${NORMUON_NCCL_LIBRARY:-none found}"
fi
gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  gpu=1
  say "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader 2>/dev/null | head -1)"
else
  say "GPU: none (nvidia-smi missing or lists no GPU)"
fi

B=$DEV/bin
GOLDEN=$DEV/data/normuon_reference.txt

# ---- Tier 1: smoke.
tier "tier 1: smoke" "$SMOKE_S"
if [[ " $TIERS " != *" 1 "* ]]; then
  skip "smoke tier" "not in TIERS"
elif (( ! packed )); then
  skip "smoke tier" "nothing packed"
elif (( ! gpu )); then
  skip "GPU smoke checks" "no GPU: skipped"
  # The pack itself still has to load and start here.
  check "packed cuda_backend_test starts (its GPU comparisons skip)" "$CHECKS_LOG" \
    "$B/cuda_backend_test" --gtest_brief=1
  check "packed newton_schulz_gpu_bench starts (no device: skips)" "$CHECKS_LOG" \
    "$B/newton_schulz_gpu_bench"
  [ -x "$B/gram_cuda_test" ] && check "packed gram_cuda_test starts (no device: skips)" \
    "$CHECKS_LOG" "$B/gram_cuda_test" --gtest_brief=1
  check "packed elementwise_gpu_bench starts (no device: skips)" "$CHECKS_LOG" \
    "$B/elementwise_gpu_bench"
  check "packed golden_check --backend=cpu (CPU path)" "$CHECKS_LOG" \
    "$B/golden_check" "$GOLDEN"
  check "packed normuon_run --backend=cpu --model=tiny (models found)" "$CHECKS_LOG" \
    "$B/normuon_run" --backend=cpu --model=tiny --steps=1
else
  nvidia-smi >>"$CHECKS_LOG" 2>&1
  check "cuda_backend_test" "$CHECKS_LOG" "$B/cuda_backend_test"
  for t in gram_cuda_test sharded_cuda_test two_d_shards_cuda_test inprocess_device_test \
           nccl_real_test graph_test \
           pointer_check_test; do
    if [ -x "$B/$t" ]; then
      check "$t" "$CHECKS_LOG" "$B/$t"
    else
      skip "$t" "not packed"
    fi
  done
  # The PyTorch front end on CUDA tensors, with this machine's PyTorch and the packed library.
  if [ -f "$B/libnormuon.so" ]; then
    check "tests/python/torch_cuda_test.py (CUDA tensors vs CPU tensors)" "$CHECKS_LOG" \
      env NORMUON_LIBRARY="$PWD/$B/libnormuon.so" PYTHONPATH="$PWD/python" PYTHONDONTWRITEBYTECODE=1 \
      python3 -B tests/python/torch_cuda_test.py -v
  else
    skip "torch_cuda_test.py" "libnormuon.so not packed"
  fi
  check "golden_check --backend=cuda (bf16, tolerance 7e-2)" "$CHECKS_LOG" \
    "$B/golden_check" --backend=cuda "$GOLDEN"
  check "golden_check --backend=cuda --ns_dtype=fp32 --tol=1e-5" "$CHECKS_LOG" \
    "$B/golden_check" --backend=cuda --ns_dtype=fp32 --tol=1e-5 "$GOLDEN"
  check "normuon_run --backend=cuda --model=tiny (one step)" "$CHECKS_LOG" \
    "$B/normuon_run" --backend=cuda --model=tiny --steps=1
fi

# ---- Tier 2: equivalence.
tier "tier 2: equivalence" "$EQUIV_S"
if [[ " $TIERS " != *" 2 "* ]]; then
  skip "equivalence tier" "not in TIERS"
elif (( ! packed )); then
  skip "equivalence tier" "nothing packed"
elif (( ! gpu )); then
  skip "determinism and compute-sanitizer" "no GPU: skipped"
else
  det=$(mktemp -d)
  check "normuon_run --backend=cuda gpt2-124m, run 1 of 2" "$CHECKS_LOG" \
    bash -c "'$B/normuon_run' --backend=cuda --model=gpt2-124m --steps=2 --json >'$det/1.json'"
  check "normuon_run --backend=cuda gpt2-124m, run 2 of 2" "$CHECKS_LOG" \
    bash -c "'$B/normuon_run' --backend=cuda --model=gpt2-124m --steps=2 --json >'$det/2.json'"
  if [ -s "$det/1.json" ] && [ -s "$det/2.json" ]; then
    check "CUDA step bitwise identical run to run (param checksums)" "$CHECKS_LOG" \
      python3 -c "$SAME_CHECKSUMS_PY" "$det/1.json" "$det/2.json"
  else
    skip "CUDA step determinism" "a run produced no JSON"
  fi
  # The sharded CUDA step on N ranks sharing this GPU (device-memory in-process group) against
  # the single-rank CUDA step and against the CPU backend (same Newton-Schulz precision).
  check "normuon_run --backend=cuda --ranks=4 --check gpt2-124m (vs CUDA single rank)" \
    "$CHECKS_LOG" "$B/normuon_run" --backend=cuda --model=gpt2-124m --ranks=4 --steps=2 \
    --check --check_tol=1e-2
  # Column pieces: the Megatron TP2 x DP2 layout (row-parallel projections split by columns,
  # strided pieces of rows split across ranks) against the single-rank CUDA step, bf16: bitwise.
  check "normuon_run --backend=cuda --ranks=4 --tp=2 --check gpt2-124m (bitwise vs CUDA single rank)" \
    "$CHECKS_LOG" "$B/normuon_run" --backend=cuda --model=gpt2-124m --ranks=4 --tp=2 --steps=2 \
    --check --check_tol=0
  # Several pieces per rank: --qkv_layout=separate gives each TP rank its q, k and v rows of the
  # fused QKV as three pieces (normuon_param_desc_t.pieces), bitwise vs the single rank in bf16.
  check "normuon_run --backend=cuda --ranks=4 --tp=2 --qkv_layout=separate --check gpt2-124m (several pieces per rank, bitwise)" \
    "$CHECKS_LOG" "$B/normuon_run" --backend=cuda --model=gpt2-124m --ranks=4 --tp=2 \
    --qkv_layout=separate --steps=2 --check --check_tol=0
  # The pipelined schedules on two streams (exchanges on a second stream), and grad_ready's early
  # start on CUDA, against the single-rank CUDA step.
  for sched in per_matrix bucketed; do
    check "normuon_run --backend=cuda --ranks=4 --schedule=$sched --check gpt2-124m" "$CHECKS_LOG" \
      "$B/normuon_run" --backend=cuda --model=gpt2-124m --ranks=4 --steps=2 --schedule=$sched \
      --bucket_mb=4 --check --check_tol=1e-6
  done
  check "normuon_run --backend=cuda --ranks=3 --overlap_backward --check gpt2-124m" "$CHECKS_LOG" \
    "$B/normuon_run" --backend=cuda --model=gpt2-124m --ranks=3 --steps=2 --overlap_backward \
    --check --check_tol=1e-6
  # Gram NS in fp16 with symmetric (tile) products, sharded vs single rank (issue 14).
  check "normuon_run --backend=cuda --ns_method=gram --ns_dtype=fp16 --ns_symmetric_products --ranks=4 --check gpt2-124m" \
    "$CHECKS_LOG" "$B/normuon_run" --backend=cuda --model=gpt2-124m --ranks=4 --steps=2 \
    --ns_method=gram --ns_dtype=fp16 --ns_symmetric_products --check --check_tol=1e-6
  check "normuon_run --backend=cuda --ns_dtype=fp32 --ranks=3 --check --check_against=cpu tiny" \
    "$CHECKS_LOG" "$B/normuon_run" --backend=cuda --ns_dtype=fp32 --model=tiny --ranks=3 \
    --steps=3 --check --check_against=cpu --check_tol=1e-4
  check "normuon_run --backend=cuda --ranks=8 --check --check_against=cpu gpt2-124m (bf16)" \
    "$CHECKS_LOG" "$B/normuon_run" --backend=cuda --model=gpt2-124m --ranks=8 --steps=2 \
    --check --check_against=cpu --check_tol=1e-2
  # The profile and the Chrome trace from CUDA events: every phase present, spans ordered.
  check "normuon_run --backend=cuda --ranks=2 --trace -> trace-cuda.json" "$CHECKS_LOG" \
    "$B/normuon_run" --backend=cuda --model=gpt2-124m --ranks=2 --steps=2 --schedule=bucketed \
    --trace="$OUT/trace-cuda.json"
  if [ -s "$OUT/trace-cuda.json" ]; then
    check "trace-cuda.json: valid, two ranks, stages named" "$CHECKS_LOG" \
      python3 -c "$TRACE_OK_PY" "$OUT/trace-cuda.json"
  else
    skip "trace check" "no trace written"
  fi
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [ -z "$sanitizer" ]; then
    skip "compute-sanitizer" "not installed"
  else
    check "compute-sanitizer memcheck cuda_backend_test" "$CHECKS_LOG" \
      "$sanitizer" --tool memcheck --error-exitcode 1 "$B/cuda_backend_test" --gtest_brief=1
    # A subset each (the full sweeps are long under the sanitizer); graph_test's deliberate
    # capture failure is left out: its refused API calls are reported as errors by design.
    [ -x "$B/sharded_cuda_test" ] && check "compute-sanitizer memcheck sharded_cuda_test (subset)" \
      "$CHECKS_LOG" "$sanitizer" --tool memcheck --error-exitcode 1 "$B/sharded_cuda_test" \
      --gtest_brief=1 --gtest_filter='*BothOwnerPolicies*:*NonFinite*:*FailedCollective*'
    # Column pieces: strided parameters, rectangle copies, the strided finite check (TP2 x DP2).
    [ -x "$B/two_d_shards_cuda_test" ] && check "compute-sanitizer memcheck two_d_shards_cuda_test (subset)" \
      "$CHECKS_LOG" "$sanitizer" --tool memcheck --error-exitcode 1 "$B/two_d_shards_cuda_test" \
      --gtest_brief=1 --gtest_filter='*TheFiniteCheckReadsThePiece*'
    check "compute-sanitizer memcheck normuon_run --backend=cuda --ranks=2 --schedule=bucketed (two streams)" \
      "$CHECKS_LOG" "$sanitizer" --tool memcheck --error-exitcode 1 "$B/normuon_run" \
      --backend=cuda --model=tiny --ranks=2 --steps=2 --schedule=bucketed --bucket_mb=0.01
    [ -x "$B/gram_cuda_test" ] && check "compute-sanitizer memcheck gram_cuda_test (tile products)" \
      "$CHECKS_LOG" "$sanitizer" --tool memcheck --error-exitcode 1 "$B/gram_cuda_test" \
      --gtest_brief=1 --gtest_filter='*TileProductsMatchDense*'
    [ -x "$B/graph_test" ] && check "compute-sanitizer memcheck graph_test (equivalence)" \
      "$CHECKS_LOG" "$sanitizer" --tool memcheck --error-exitcode 1 "$B/graph_test" \
      --gtest_brief=1 --gtest_filter='NsDtypes/GraphEquivalenceTest.*'
    if [ -n "${RACECHECK:-}" ]; then
      check "compute-sanitizer racecheck cuda_backend_test" "$CHECKS_LOG" \
        "$sanitizer" --tool racecheck --error-exitcode 1 "$B/cuda_backend_test" --gtest_brief=1
    fi
  fi
fi

# ---- Tier 3: benchmarks.
tier "tier 3: benchmarks" "$BENCH_S"
if [[ " $TIERS " != *" 3 "* ]]; then
  skip "benchmark tier" "not in TIERS"
elif (( ! packed )); then
  skip "benchmark tier" "nothing packed"
elif (( ! gpu )); then
  skip "GPU benchmarks" "no GPU: skipped"
else
  gb=(--benchmark_min_time=0.2 --benchmark_format=console --benchmark_out_format=json)
  if [ -n "${SKIP_KERNEL_BENCH:-}" ]; then
    skip "newton_schulz_gpu_bench and elementwise_gpu_bench" "SKIP_KERNEL_BENCH is set"
  else
    check "newton_schulz_gpu_bench -> ns_gpu.json" "$BENCH_LOG" \
      "$B/newton_schulz_gpu_bench" "${gb[@]}" --benchmark_out="$OUT/ns_gpu.json"
    check "elementwise_gpu_bench -> elementwise_gpu.json" "$BENCH_LOG" \
      "$B/elementwise_gpu_bench" "${gb[@]}" --benchmark_out="$OUT/elementwise_gpu.json"
  fi
  check "normuon_run --backend=cuda --model=gpt2-124m -> normuon_run.jsonl" "$BENCH_LOG" \
    bash -c "'$B/normuon_run' --backend=cuda --model=gpt2-124m --steps=20 --json >>'$OUT/normuon_run.jsonl'"
  # The whole step with Gram NS (issue 14): fp16, dense and tile products, same model.
  for sym in "" --ns_symmetric_products; do
    check "normuon_run --backend=cuda --ns_method=gram --ns_dtype=fp16 $sym gpt2-124m -> normuon_run.jsonl" \
      "$BENCH_LOG" bash -c "'$B/normuon_run' --backend=cuda --model=gpt2-124m --steps=20 \
        --ns_method=gram --ns_dtype=fp16 $sym --json >>'$OUT/normuon_run.jsonl'"
  done
  # The sharded CUDA step on 4 ranks sharing the GPU: one stream (sequential) vs two streams.
  for sched in sequential bucketed; do
    check "normuon_run --backend=cuda --ranks=4 --schedule=$sched gpt2-124m -> normuon_run.jsonl" \
      "$BENCH_LOG" bash -c "'$B/normuon_run' --backend=cuda --model=gpt2-124m --ranks=4 --steps=10 \
        --schedule=$sched --json >>'$OUT/normuon_run.jsonl'"
  done
  check "step_bench StepCuda -> step_gpu.json" "$BENCH_LOG" \
    "$B/step_bench" --benchmark_filter=StepCuda "${gb[@]}" --benchmark_out="$OUT/step_gpu.json"
  check "normuon_run --backend=cuda --model=llama-1b -> normuon_run.jsonl" "$BENCH_LOG" \
    bash -c "'$B/normuon_run' --backend=cuda --model=llama-1b --steps=5 --json >>'$OUT/normuon_run.jsonl'"
  # The references on the same shapes, in the same call (../shared/anchors/README.md); the rows
  # that compile for minutes (dion-triton, dion-graph) only with ANCHOR_IMPLS set.
  if [ -f .anchors/anchors/anchor_bench.py ]; then
    check "anchors: anchor_bench.py --model gpt2-124m -> anchors-gpt2.json" "$BENCH_LOG" \
      env PYTHONUNBUFFERED=1 python3 .anchors/anchors/anchor_bench.py --model gpt2-124m \
      --impl "${ANCHOR_IMPLS:-official,dion,adamw-fused}" --steps 10 --warmup 3 \
      --json "$OUT/anchors-gpt2.json"
  else
    skip "anchors" ".anchors/anchors/anchor_bench.py not carried"
  fi
  # DeepSpeed's PyTorch Gram NS (fp16, restart at iteration 2) and its standard NS5 on the same
  # models as NsPhase in ns_gpu.json (the README's --ns-only mode); merged into ns-anchors.json.
  if [ -f .anchors/anchors/anchor_bench.py ] && [ -z "${SKIP_ANCHOR_NS:-}" ]; then
    for m in gpt2-124m llama-1b; do
      check "anchors --ns-only deepspeed-gram,deepspeed-standard --model $m" "$BENCH_LOG" \
        env PYTHONUNBUFFERED=1 python3 .anchors/anchors/anchor_bench.py --model "$m" --ns-only \
        --impl deepspeed-gram,deepspeed-standard --ns-check 0 --json "$OUT/ns-anchors-$m.json"
    done
    python3 - "$OUT" <<'PY' >>"$BENCH_LOG" 2>&1
import glob, json, os, sys
out = sys.argv[1]
parts = {}
for p in sorted(glob.glob(os.path.join(out, "ns-anchors-*.json"))):
    try:
        parts[os.path.basename(p)[len("ns-anchors-"):-len(".json")]] = json.load(open(p))
    except ValueError as e:
        parts[p] = {"error": str(e)}
    os.remove(p)
if parts:
    json.dump(parts, open(os.path.join(out, "ns-anchors.json"), "w"), indent=1)
PY
  fi
fi

# ---- Summary: the counts, then compact tables of what the benchmarks wrote.
say ""
say "result: $passed passed, $failed failed or timed out, $skipped skipped"
for f in ns_gpu elementwise_gpu step_gpu; do
  if [ -s "$OUT/$f.json" ]; then
    say ""
    python3 bench/summarize_json.py "$OUT/$f.json" 2>&1 | tee -a "$SUMMARY" >/dev/null
  fi
done
if [ -s "$OUT/normuon_run.jsonl" ]; then
  say ""
  say "normuon_run (CUDA):"
  python3 - "$OUT/normuon_run.jsonl" <<'PY' 2>&1 | tee -a "$SUMMARY" >/dev/null
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    ph = r.get("phases_rank0") or {}
    print("  %s %s %s ranks=%s %s: steady %.2f ms/step, min %.2f ms; rank 0 device: gather %.2f,"
          " newton-schulz %.2f, scatter %.2f, exposed comm %.2f ms" % (
        r.get("model"), r.get("backend"), r.get("mode"), r.get("ranks", 1), r.get("schedule"),
        r.get("steady_step_ms", -1), r.get("min_step_ms", -1), ph.get("gather_ms", -1),
        ph.get("newton_schulz_ms", -1), ph.get("scatter_ms", -1), ph.get("exposed_comm_ms", -1)))
PY
fi
if [ -s "$OUT/ns-anchors.json" ]; then
  say ""
  say "anchors --ns-only (DeepSpeed Gram/standard NS): $OUT/ns-anchors.json; compare with NsPhase in ns_gpu.json"
fi
if [ -s "$OUT/anchors-gpt2.json" ]; then
  say ""
  say "anchors (gpt2-124m): $OUT/anchors-gpt2.json ($(wc -c <"$OUT/anchors-gpt2.json") bytes)"
fi
# The device tool brings back at most 8 files from $OUT: keep the summary, the logs and the
# benchmark JSON read first as they are, and bundle the rest into one extra.tar.gz when there
# are more than 8.
keep=(summary.txt checks.log bench.log ns_gpu.json normuon_run.jsonl step_gpu.json)
mapfile -t all_files < <(cd "$OUT" && find . -maxdepth 1 -type f ! -name extra.tar.gz -printf '%f\n' | sort)
if (( ${#all_files[@]} > 8 )); then
  rest=()
  for f in "${all_files[@]}"; do
    [[ " ${keep[*]} " == *" $f "* ]] || rest+=("$f")
  done
  if tar -C "$OUT" -czf "$OUT/extra.tar.gz" "${rest[@]}"; then
    (cd "$OUT" && rm -f "${rest[@]}")
    say "bundled into extra.tar.gz (the device tool returns 8 files): ${rest[*]}"
  fi
fi

echo ""
echo "---- $SUMMARY"
cat "$SUMMARY"

if (( ! packed || ! gpu )); then
  exit 2
fi
(( failed == 0 )) && exit 0 || exit 1
