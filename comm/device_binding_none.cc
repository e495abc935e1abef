// RunWithCurrentDevice in the CPU-only build (--define=cuda=off): there is no device to bind;
// see device_binding.h.
#include "absl/strings/str_cat.h"
#include "comm/device_binding.h"

namespace normuon {

absl::Status RunWithCurrentDevice(int device, absl::FunctionRef<absl::Status()> fn) {
  if (device == kCurrentDevice) return fn();
  if (device < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("device is ", device, ", must be >= 0 or -1 (the current device)"));
  }
  return absl::UnimplementedError(absl::StrCat(
      "device ", device, " cannot be made current: this build has no CUDA (--define=cuda=off)"));
}

absl::Status DeviceStreamSync(void*) {
  return absl::UnimplementedError("no device stream to wait on: this build has no CUDA "
                                  "(--define=cuda=off)");
}

absl::Status DeviceCopySync(void*, const void*, size_t bytes, void*) {
  return absl::UnimplementedError(absl::StrCat(
      "cannot copy ", bytes, " bytes of device memory: this build has no CUDA (--define=cuda=off)"));
}

}  // namespace normuon
