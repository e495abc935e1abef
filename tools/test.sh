#!/bin/bash
# The whole test suite: installs what is missing, then runs every test with Bazel (CPU; GPU tests
# skip with a message when there is no device). This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
flags_file=$(mktemp)
trap 'rm -f "$flags_file"' EXIT
NORMUON_BAZEL_FLAGS_FILE="$flags_file" bash tools/setup.sh
read -r -a extra < "$flags_file" || true
cache="${NORMUON_BAZEL_CACHE:-$HOME/.cache/normuon-bazel-disk}"
mkdir -p "$cache"
bazel test --disk_cache="$cache" "${extra[@]}" //... 
