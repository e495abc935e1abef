#!/bin/bash
# The README's demo: installs what is missing, builds, and runs optimizer steps over a real
# model's shapes (tools/normuon_run; pass its flags through, e.g. --model=tiny --steps=5).
set -euo pipefail
cd "$(dirname "$0")/.."
flags_file=$(mktemp)
trap 'rm -f "$flags_file"' EXIT
NORMUON_BAZEL_FLAGS_FILE="$flags_file" bash tools/setup.sh
read -r -a extra < "$flags_file" || true
cache="${NORMUON_BAZEL_CACHE:-$HOME/.cache/normuon-bazel-disk}"
mkdir -p "$cache"
bazel run --disk_cache="$cache" "${extra[@]}" -c opt //tools:normuon_run -- "$@"
