# Sourced (from the repository root) by demo.sh and test.sh: installs what is missing
# (tools/setup.sh) and sets `cache`, the shared Bazel disk cache ($NORMUON_BAZEL_CACHE, default
# ~/.cache/normuon-bazel-disk), and `extra`, the flags the build needs on this machine
# (--define=cuda=off without the CUDA toolkit).
flags_file=$(mktemp)
trap 'rm -f "$flags_file"' EXIT
NORMUON_BAZEL_FLAGS_FILE="$flags_file" bash tools/setup.sh
read -r -a extra < "$flags_file" || true
cache="${NORMUON_BAZEL_CACHE:-$HOME/.cache/normuon-bazel-disk}"
mkdir -p "$cache"
