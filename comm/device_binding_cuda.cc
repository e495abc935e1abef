// RunWithCurrentDevice on the CUDA runtime (default build); see device_binding.h.
#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "comm/device_binding.h"

namespace normuon {

absl::Status RunWithCurrentDevice(int device, absl::FunctionRef<absl::Status()> fn) {
  if (device == kCurrentDevice) return fn();
  if (device < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("device is ", device, ", must be >= 0 or -1 (the current device)"));
  }
  int previous = 0;
  cudaError_t e = cudaGetDevice(&previous);
  if (e != cudaSuccess) {
    return absl::UnknownError(absl::StrCat("cudaGetDevice failed before making device ", device,
                                           " current: ", cudaGetErrorString(e)));
  }
  e = cudaSetDevice(device);
  if (e != cudaSuccess) {
    return absl::UnknownError(
        absl::StrCat("cudaSetDevice(", device, ") failed: ", cudaGetErrorString(e)));
  }
  absl::Status s = fn();
  // The caller's device comes back even when fn failed; a failure to restore it is reported
  // only if fn succeeded, since fn's own error is the one that matters then.
  e = cudaSetDevice(previous);
  if (e != cudaSuccess && s.ok()) {
    return absl::UnknownError(absl::StrCat("cudaSetDevice(", previous,
                                           ") failed while restoring the caller's device: ",
                                           cudaGetErrorString(e)));
  }
  return s;
}

absl::Status DeviceStreamSync(void* stream) {
  const cudaError_t e = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
  if (e != cudaSuccess) {
    return absl::UnknownError(absl::StrCat("cudaStreamSynchronize failed: ", cudaGetErrorString(e)));
  }
  return absl::OkStatus();
}

absl::Status DeviceCopySync(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return absl::OkStatus();
  const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault,
                                        static_cast<cudaStream_t>(stream));
  if (e != cudaSuccess) {
    return absl::UnknownError(absl::StrCat("cudaMemcpyAsync of ", bytes,
                                           " bytes failed: ", cudaGetErrorString(e)));
  }
  return DeviceStreamSync(stream);
}

}  // namespace normuon
