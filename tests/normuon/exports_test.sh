#!/bin/bash
# libnormuon.so must export the C API (normuon_*) and nothing else.
set -euo pipefail
lib="$1"
defined=$(nm -D --defined-only "$lib" | awk '{print $3}')
[ -n "$defined" ] || { echo "no exported symbols in $lib"; exit 1; }
others=$(grep -v '^normuon_' <<< "$defined" || true)
if [ -n "$others" ]; then
  echo "symbols other than normuon_* are exported:"; echo "$others" | head -20; exit 1
fi
for f in normuon_create normuon_step normuon_finalize normuon_last_error; do
  grep -qx "$f" <<< "$defined" || { echo "missing export $f"; exit 1; }
done
echo "exports OK: $(echo "$defined" | wc -l) normuon_* symbols"
