#!/bin/bash
# Builds every fuzzer with clang + libFuzzer + ASan/UBSan (--config=fuzz, CPU-only) and runs each
# for a bounded time on its seed corpus and past findings.
#
#   bash fuzz/run_all.sh SECONDS [FUZZER...]     (default: every fuzzer in fuzz/BUILD)
#
# Seeds (fuzz/corpus/NAME) and regressions (fuzz/regressions/NAME) are read, never written: new
# inputs libFuzzer finds go to a work directory ($NORMUON_FUZZ_WORKDIR, default a fresh
# directory under /tmp), with any crash under WORKDIR/artifacts/NAME/. A finding is kept by
# copying its file into fuzz/regressions/NAME/, where NAME_replay_test replays it in every
# `bazel test //...`. Exit status: 0 when no fuzzer found anything, 1 otherwise.
#
# Bazel runs in its own output base ($NORMUON_FUZZ_OUTPUT_BASE, default
# ~/.cache/normuon-bazel-fuzz): --config=fuzz re-configures the C++ toolchain for clang, which
# would otherwise throw away the main build's analysis cache. The disk cache is the one
# tools/test.sh uses ($NORMUON_BAZEL_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SECONDS [FUZZER...]" >&2
  exit 2
fi
seconds=$1
shift
all_fuzzers=(golden_fuzz model_shapes_fuzz registration_fuzz shard_fuzz tiling_fuzz capi_fuzz checkpoint_fuzz)
fuzzers=("$@")
[ ${#fuzzers[@]} -gt 0 ] || fuzzers=("${all_fuzzers[@]}")

# Largest input per fuzzer: the golden seed of the official implementation is ~12 KB.
max_len_of() {
  case "$1" in
    golden_fuzz) echo 16384 ;;
    model_shapes_fuzz | registration_fuzz | checkpoint_fuzz) echo 4096 ;;
    *) echo 1024 ;;
  esac
}

if ! command -v clang >/dev/null || ! command -v clang++ >/dev/null; then
  echo "run_all: clang not found; install clang and libclang-rt-dev (Debian 12: clang-14," \
       "libclang-rt-14-dev)" >&2
  exit 2
fi
if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' |
    clang++ -x c++ -fsanitize=fuzzer -o /dev/null - 2>/dev/null; then
  echo "run_all: clang cannot link -fsanitize=fuzzer; install libclang-rt-dev" \
       "(Debian 12: libclang-rt-14-dev)" >&2
  exit 2
fi

output_base="${NORMUON_FUZZ_OUTPUT_BASE:-$HOME/.cache/normuon-bazel-fuzz}"
cache="${NORMUON_BAZEL_CACHE:-$HOME/.cache/normuon-bazel-disk}"
mkdir -p "$output_base" "$cache"
work="${NORMUON_FUZZ_WORKDIR:-$(mktemp -d /tmp/normuon-fuzz.XXXXXX)}"
mkdir -p "$work"

targets=()
for f in "${fuzzers[@]}"; do targets+=("//fuzz:$f"); done
build_log="$work/build.log"
set +e
bazel --output_base="$output_base" build --config=fuzz --disk_cache="$cache" "${targets[@]}" \
  > "$build_log" 2>&1
build_rc=$?
set -e
# gold warns once per ASan symbol when a shared object is linked; nothing else is dropped.
grep -v "Cannot export local symbol" "$build_log" | tail -n 40 >&2
if [ $build_rc -ne 0 ]; then
  echo "run_all: building the fuzzers failed (exit $build_rc; full log $build_log)" >&2
  exit 1
fi
bin="$(bazel --output_base="$output_base" info --config=fuzz bazel-bin 2>/dev/null)/fuzz"

summary="$work/summary.txt"
printf "%-20s %8s %12s %10s %10s %8s  %s\n" fuzzer seconds executions exec/s corpus coverage \
  result > "$summary"
failed=0
for f in "${fuzzers[@]}"; do
  mkdir -p "$work/corpus/$f" "$work/artifacts/$f"
  log="$work/$f.log"
  dirs=("$work/corpus/$f" "fuzz/corpus/$f")
  [ -d "fuzz/regressions/$f" ] && dirs+=("fuzz/regressions/$f")
  start=$(date +%s)
  set +e
  ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}" \
    UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}" \
    "$bin/$f" -max_total_time="$seconds" -max_len="$(max_len_of "$f")" -timeout=20 \
    -rss_limit_mb=2560 -print_final_stats=1 -artifact_prefix="$work/artifacts/$f/" \
    "${dirs[@]}" > "$log" 2>&1
  rc=$?
  set -e
  elapsed=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  # The last status line: "#N ... cov: C ft: F corp: UNITS/SIZE ...".
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
  corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p')
  result=ok
  if [ $rc -ne 0 ] || [ -n "$(ls -A "$work/artifacts/$f")" ]; then
    result="FAILED (exit $rc; log $log; inputs in $work/artifacts/$f/)"
    failed=1
  fi
  printf "%-20s %8s %12s %10s %10s %8s  %s\n" "$f" "$elapsed" "${execs:-?}" "${rate:-?}" \
    "${corp:-?}" "${cov:-?}" "$result" >> "$summary"
done
cat "$summary"
echo "run_all: logs, new corpus inputs and any crash inputs are in $work"
if [ $failed -ne 0 ]; then
  echo "run_all: a fuzzer failed. Reproduce with the fuzzer binary and the saved input:" >&2
  echo "  $bin/NAME $work/artifacts/NAME/crash-..." >&2
  echo "then copy the input to fuzz/regressions/NAME/ so NAME_replay_test keeps it." >&2
fi
exit $failed
