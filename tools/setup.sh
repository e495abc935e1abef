#!/bin/bash
# Installs the Debian packages the build needs, and any named as arguments (idempotent; silent
# when everything is there), and checks for the CUDA toolkit. The Bazel flags the build then
# needs ("--define=cuda=off" without CUDA, else nothing) are written to the file named by
# $NORMUON_BAZEL_FLAGS_FILE, when set.
set -euo pipefail

packages=(bazel-bootstrap libabsl-dev libgtest-dev libbenchmark-dev libopenblas-dev
          nlohmann-json3-dev python3-torch python3-matplotlib zlib1g-dev libopenmpi-dev
          openmpi-bin "$@")
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
fi

# CUDA: nvcc, cuBLAS and the CUDA runtime under /usr/local/cuda. Without them the build is
# CPU-only (--define=cuda=off) and says so.
cuda_flags=""
cuda_missing=()
[ -x /usr/local/cuda/bin/nvcc ] || cuda_missing+=("/usr/local/cuda/bin/nvcc")
[ -e /usr/local/cuda/lib64/libcublas.so ] || cuda_missing+=("/usr/local/cuda/lib64/libcublas.so")
[ -e /usr/local/cuda/lib64/libcudart.so ] || cuda_missing+=("/usr/local/cuda/lib64/libcudart.so")
[ -e /usr/local/cuda/include/cuda_runtime.h ] || cuda_missing+=("/usr/local/cuda/include/cuda_runtime.h")
if [ ${#cuda_missing[@]} -gt 0 ]; then
  echo "setup: CUDA toolkit not found (missing: ${cuda_missing[*]})." >&2
  echo "setup: building the CPU-only library (--define=cuda=off); the CUDA backend is left out." >&2
  cuda_flags="--define=cuda=off"
fi
if [ -n "${NORMUON_BAZEL_FLAGS_FILE:-}" ]; then
  echo "$cuda_flags" > "$NORMUON_BAZEL_FLAGS_FILE"
fi
