#!/bin/bash
# The layer rule of docs/ARCHITECTURE.md section 4 on Bazel's dependency graph: no target of a
# lower layer depends, directly or not, on a target of a higher one. tools/test.sh runs it; the
# same rule holds on the sources (tests/layering) and in the BUILD files' visibility lists, which
# make a forbidden edge fail analysis ("target ... is not visible from target ...").
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
forbid() {  # LOWER HIGHER...
  local lower="$1"
  shift
  local higher=""
  for h in "$@"; do higher="${higher:+$higher + }$h"; done
  local found
  found=$(bazel query --noshow_progress "deps($lower) intersect ($higher)" 2>/dev/null || true)
  if [ -n "$found" ]; then
    echo "check_layers: $lower depends on a higher layer:" >&2
    echo "$found" | sed 's/^/  /' >&2
    status=1
  fi
}
forbid //base/... //sharding/... //kernels/... //comm/... //runtime/... //capi/...
forbid //sharding/... //kernels/... //comm/... //runtime/... //capi/...
forbid //kernels/... //sharding/... //comm/... //runtime/... //capi/...
forbid //comm/... //sharding/... //kernels/... //runtime/... //capi/...
forbid //runtime/... //capi/...
[ "$status" = 0 ] && echo "check_layers: base <- sharding <- runtime -> {comm, kernels}; capi on top"
exit $status
