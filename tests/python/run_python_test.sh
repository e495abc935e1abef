#!/bin/bash
# Runs one Python file with Debian's /usr/bin/python3 (the interpreter python3-torch is installed
# for; a python3 found on PATH may be another one without torch).
# Usage (from a Bazel sh_test, in the runfiles root):
#   run_python_test.sh <libnormuon.so> <file.py> [VAR=path ...] [-- args for file.py]
# Exports NORMUON_LIBRARY, puts python/ (the normuon package) on PYTHONPATH, exports each
# VAR=path (made absolute), then runs the file with the args after "--" (default: -v, for
# unittest files).
set -euo pipefail
python=/usr/bin/python3
[ -x "$python" ] || { echo "$python not found (tools/setup.sh installs python3-torch)"; exit 1; }
root="$PWD"
export NORMUON_LIBRARY="$root/$1"
file="$root/$2"
shift 2
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  export "${1%%=*}=$root/${1#*=}"
  shift
done
if [ $# -gt 0 ]; then shift; else set -- -v; fi
export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
# Two cores: keep torch's and OpenBLAS's thread pools from oversubscribing them.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$python" -B "$file" "$@"
