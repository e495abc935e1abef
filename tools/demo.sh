#!/bin/bash
# The README's demo: installs what is missing, builds, and runs optimizer steps over a real
# model's shapes (tools/normuon_run; pass its flags through, e.g. --model=tiny --steps=5).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/bazel_setup.sh  # sets cache and extra
bazel run --disk_cache="$cache" "${extra[@]}" -c opt //tools:normuon_run -- "$@"
