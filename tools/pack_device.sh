#!/usr/bin/env bash
# tools/pack_device.sh: builds, here, everything tools/device_check.sh runs on the GPU machine,
# and packs it into .device/ (ignored by git), which the device call carries.
#
#     bash tools/pack_device.sh            # from anywhere in the checkout; takes minutes (nvcc)
#
# 1. `bazel build -c opt` (the CUDA build: never --define=cuda=off) of the GPU test, the golden
#    check, the demo and the three benchmarks;
# 2. ../shared/tools/pack-for-device .device <those binaries>: copies them into .device/bin and
#    the shared libraries they need (Abseil, OpenBLAS, Google Benchmark, ...; not the driver or
#    the CUDA libraries, which the GPU machine has) into .device/lib.tar.xz, and writes
#    .device/env.sh, which device_check.sh sources;
# 3. copies tests/data (golden cases) to .device/data and tools/models to .device/models;
# 4. when ../shared/anchors exists, copies it and ../shared/models into .anchors/ (ignored by
#    git) for the reference implementations' benchmark (../shared/anchors/README.md).
# Then one device call: command `bash tools/device_check.sh`, carry [".device", ".anchors"].
#
# The outputs of -c opt are shared with every other build of this workspace, and --define does
# not change their directory: a CPU-only build running at the same moment can replace them. So
# each packed binary is checked for the CUDA runtime (readelf) and the script fails if one lacks
# it. The test (a cc_test) links its Bazel libraries dynamically: pack-for-device reads them off
# the binary's rpath in bazel-bin and packs them with the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
dest=.device
targets=(
  //tests/cuda:cuda_backend_test
  //tests/cuda:sharded_cuda_test
  //tests/cuda:two_d_shards_cuda_test
  //tests/cuda:graph_test
  //tests/cuda:pointer_check_test
  //tests/cuda:gram_cuda_test
  //tests/comm:inprocess_device_test
  //tests/comm:nccl_real_test
  //tools:golden_check
  //tools:normuon_run
  //bench:newton_schulz_gpu_bench
  //bench:elementwise_gpu_bench
  //bench:step_bench
  //:libnormuon.so
)
echo "pack_device: bazel build -c opt ${targets[*]}"
bazel build -c opt "${targets[@]}"
bin=$(bazel info -c opt bazel-bin 2>/dev/null)
paths=()
for t in "${targets[@]}"; do
  rel=${t#//}
  paths+=("$bin/${rel/://}")
done

rm -rf "${dest:?}/bin" "${dest:?}/data" "${dest:?}/models"
"$root/../shared/tools/pack-for-device" "$dest" "${paths[@]}"
for b in "$dest"/bin/*; do
  if ! readelf -d "$b" | grep -q 'NEEDED.*libcudart'; then
    echo "pack_device: $(basename "$b") does not link the CUDA runtime: a CPU-only build" \
         "(--define=cuda=off) replaced the outputs meanwhile; run this script again" >&2
    exit 1
  fi
done
mkdir -p "$dest/data" "$dest/models"
cp tests/data/*.txt "$dest/data/"
cp tools/models/*.txt "$dest/models/"

if [ -d ../shared/anchors ]; then
  rm -rf .anchors
  mkdir -p .anchors
  cp -r ../shared/anchors ../shared/models .anchors/
  find .anchors -name __pycache__ -prune -exec rm -rf {} +
fi

git check-ignore -q "$dest" || echo "pack_device: warning: $dest is not ignored by git" >&2
du -sh "$dest" .anchors 2>/dev/null | awk '{print "pack_device: " $2 ": " $1}'
ls "$dest/bin"
echo "pack_device: done. Device call: command 'bash tools/device_check.sh'," \
     "carry [\"$dest\", \".anchors\"]"
