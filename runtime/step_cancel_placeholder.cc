// A stand-in for Runtime::StepCancel so that the C edge's normuon_step_cancel links before the
// runtime implements it; runtime.cc's definition replaces this file (delete it then, and its
// line in runtime/BUILD).
#include "runtime/runtime.h"

namespace normuon {

absl::Status Runtime::StepCancel() {
  return absl::UnimplementedError(
      "normuon_step_cancel is not implemented in this build yet (runtime/"
      "step_cancel_placeholder.cc)");
}

}  // namespace normuon
