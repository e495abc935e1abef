// The CUDA runtime calls of comm/: making a device current for the length of one call (for the
// NCCL communicator's creation: ncclCommInitRankConfig binds the new communicator to the device
// current on the calling thread), and the stream waits and copies of the in-process group's
// device mode. Kept apart so that these files alone touch the CUDA runtime; the CPU-only build
// (--define=cuda=off) links device_binding_none.cc instead and needs no CUDA at all (its device
// functions return Unimplemented).
#ifndef NORMUON_COMM_DEVICE_BINDING_H_
#define NORMUON_COMM_DEVICE_BINDING_H_

#include <cstddef>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"

namespace normuon {

// The device number that means "leave the current device as it is".
constexpr int kCurrentDevice = -1;

// device == kCurrentDevice: runs fn() as is (the caller has made its device current).
// device >= 0: makes `device` current on this thread, runs fn(), and makes the previous device
// current again, whatever fn() returned. A CUDA failure (no such device, no driver) is returned
// as Unknown naming the call and the device, and fn() does not run. In the CPU-only build a
// device >= 0 is Unimplemented. Any other device number is InvalidArgument.
absl::Status RunWithCurrentDevice(int device, absl::FunctionRef<absl::Status()> fn);

// Device memory for the in-process group's device mode (ranks as threads sharing one machine's
// GPUs). `stream` is a cudaStream_t; nullptr is the calling thread's default stream.
// Waits until the work queued on `stream` has run (a CUDA failure is returned as Unknown).
absl::Status DeviceStreamSync(void* stream);
// Copies `bytes` from src to dst, either of which may be device or host memory (unified
// addressing), on `stream`, and waits for the copy: on return dst holds the bytes.
absl::Status DeviceCopySync(void* dst, const void* src, size_t bytes, void* stream);

}  // namespace normuon

#endif  // NORMUON_COMM_DEVICE_BINDING_H_
