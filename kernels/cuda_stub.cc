// MakeCudaBackend for a CPU-only build (bazel ... --define=cuda=off): the CUDA backend is not
// compiled in, and asking for it says so.
#include "kernels/backend.h"

namespace normuon {

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int) {
  return absl::UnimplementedError(
      "this build of normuon has no CUDA backend (built with --define=cuda=off); use "
      "NORMUON_BACKEND_CPU or rebuild with CUDA");
}

}  // namespace normuon
