// Making a CUDA device current for the length of one call, for the NCCL communicator's creation:
// ncclCommInitRankConfig binds the new communicator to the device current on the calling thread.
// Kept apart from the NCCL code so that it alone touches the CUDA runtime; the CPU-only build
// (--define=cuda=off) links device_binding_none.cc instead and needs no CUDA at all.
#ifndef NORMUON_COMM_DEVICE_BINDING_H_
#define NORMUON_COMM_DEVICE_BINDING_H_

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

}  // namespace normuon

#endif  // NORMUON_COMM_DEVICE_BINDING_H_
