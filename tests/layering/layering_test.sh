#!/bin/bash
# The layer rule of docs/ARCHITECTURE.md section 4, checked on the sources themselves: every
# #include of a library package names a package at its own layer or below.
#   base     -> base, normuon (the public headers' C types)
#   sharding -> base, sharding
#   kernels  -> base, kernels
#   comm     -> base, comm, normuon
#   runtime  -> base, sharding, kernels, comm, runtime, normuon
#   capi     -> everything of the library
# Bazel's visibility lists enforce the same at build time (a BUILD edge from a lower package to a
# higher one fails analysis); tools/check_layers.sh checks the dependency graph with bazel query.
set -u
status=0
check() {  # PACKAGE ALLOWED-PREFIXES...
  local pkg="$1"
  shift
  local allowed="$*"
  local f line inc top ok
  for f in $(find "$pkg" -name '*.h' -o -name '*.cc' -o -name '*.cu' -o -name '*.cuh' | sort); do
    while IFS= read -r line; do
      inc="${line#*\"}"
      inc="${inc%%\"*}"
      top="${inc%%/*}"
      [ "$top" = "$inc" ] && continue  # a file of the same folder
      case "$top" in
        base|sharding|kernels|comm|runtime|capi|normuon|tools|bench|tests|fuzz) ;;
        *) continue ;;  # a system or third-party header
      esac
      ok=0
      for a in $allowed; do [ "$top" = "$a" ] && ok=1; done
      if [ "$ok" = 0 ]; then
        echo "layering: $f includes \"$inc\": $pkg may include only: $allowed" >&2
        status=1
      fi
    done < <(grep -E '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f")
  done
}
check base base normuon
check sharding base sharding
check kernels base kernels
check comm base comm normuon
check runtime base sharding kernels comm runtime normuon
check capi base sharding kernels comm runtime capi normuon
if [ "$status" = 0 ]; then echo "layering: every include points down or sideways"; fi
exit $status
