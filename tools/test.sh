#!/bin/bash
# The whole test suite: installs what is missing, then runs every test with Bazel (CPU; GPU tests
# skip with a message when there is no device). This is the README's test command and what CI runs.
#
# After the suite itself, the reliability runs of RELIABILITY.md (CPU-only, each Bazel in its own
# output base under ~/.cache so the main build's cache survives; all share the disk cache):
#   1. the whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer (--config=asan),
#   2. the threaded tests (in-process multi-rank groups, pipelines, calls from many threads)
#      under ThreadSanitizer (--config=tsan),
#   3. every fuzzer for NORMUON_FUZZ_SECONDS seconds (fuzz/run_all.sh; clang + libFuzzer).
# NORMUON_SANITIZERS=0 skips 1 and 2; NORMUON_FUZZ_SECONDS=0 skips 3 (default 20 per fuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/bazel_setup.sh  # sets cache and extra
bazel test --disk_cache="$cache" "${extra[@]}" //...
# The layer rule on the dependency graph (docs/ARCHITECTURE.md section 4).
bash tools/check_layers.sh

sanitizers="${NORMUON_SANITIZERS:-1}"
fuzz_seconds="${NORMUON_FUZZ_SECONDS:-20}"
cache_root="${NORMUON_CACHE_ROOT:-$HOME/.cache}"

# Every package of the repository. Not //...: in another output base, //... would also descend
# into the bazel-* links of the main one.
packages=("//:all")
for d in */; do
  d="${d%/}"
  case "$d" in bazel-*) continue ;; esac
  if [ -n "$(find "$d" \( -name BUILD -o -name BUILD.bazel \) -print -quit)" ]; then
    packages+=("//$d/...")
  fi
done

run_sanitizer() {  # CONFIG TARGET...
  local config="$1"
  shift
  local base="$cache_root/normuon-bazel-$config"
  echo "test.sh: --config=$config (output base $base)" >&2
  local rc=0
  bazel --output_base="$base" test --config="$config" --disk_cache="$cache" -- "$@" || rc=$?
  bazel --output_base="$base" shutdown
  return $rc
}

if [ "$sanitizers" != "0" ]; then
  # The Python tests load the library into Debian's uninstrumented python3, which cannot host
  # an ASan runtime; everything else runs.
  asan_excluded=()
  [ -d tests/python ] && asan_excluded+=(-//tests/python/...)
  run_sanitizer asan "${packages[@]}" "${asan_excluded[@]}"
  # The threaded tests: in-process groups (comm, sharded step, checkpoints), the bucket
  # pipeline's worker threads (normuon), and C API calls from many threads (reliability).
  tsan_targets=()
  for p in tests/comm tests/normuon tests/checkpoint tests/reliability; do
    [ -d "$p" ] && tsan_targets+=("//$p/...")
  done
  run_sanitizer tsan "${tsan_targets[@]}"
fi

if [ "$fuzz_seconds" != "0" ]; then
  # clang with libFuzzer and the sanitizer runtimes (Debian 12: clang-14, libclang-rt-14-dev).
  missing=()
  command -v clang++ >/dev/null || missing+=(clang)
  compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null ||
    missing+=(libclang-rt-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "test.sh: installing ${missing[*]} for the fuzzers" >&2
    bash tools/setup.sh "${missing[@]}"
  fi
  fuzz_rc=0
  NORMUON_BAZEL_CACHE="$cache" NORMUON_FUZZ_OUTPUT_BASE="$cache_root/normuon-bazel-fuzz" \
    bash fuzz/run_all.sh "$fuzz_seconds" || fuzz_rc=$?
  bazel --output_base="$cache_root/normuon-bazel-fuzz" shutdown
  exit $fuzz_rc
fi
