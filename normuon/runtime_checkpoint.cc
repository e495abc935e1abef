// Runtime::SaveCheckpoint / LoadCheckpoint: not implemented yet.
#include "normuon/runtime.h"

namespace normuon {

absl::Status Runtime::SaveCheckpoint(const std::string&) {
  return absl::UnimplementedError("checkpoints are not implemented yet");
}

absl::Status Runtime::LoadCheckpoint(const std::string&) {
  return absl::UnimplementedError("checkpoints are not implemented yet");
}

}  // namespace normuon
