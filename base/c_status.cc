// See c_status.h.
#include "base/c_status.h"

#include "absl/strings/str_cat.h"

namespace normuon {

const char* StatusName(normuon_status_t status) {
  switch (status) {
    case NORMUON_SUCCESS: return "NORMUON_SUCCESS";
    case NORMUON_ERROR_INVALID_ARGUMENT: return "NORMUON_ERROR_INVALID_ARGUMENT";
    case NORMUON_ERROR_INVALID_HANDLE: return "NORMUON_ERROR_INVALID_HANDLE";
    case NORMUON_ERROR_INVALID_STATE: return "NORMUON_ERROR_INVALID_STATE";
    case NORMUON_ERROR_UNSUPPORTED: return "NORMUON_ERROR_UNSUPPORTED";
    case NORMUON_ERROR_OUT_OF_MEMORY: return "NORMUON_ERROR_OUT_OF_MEMORY";
    case NORMUON_ERROR_CUDA: return "NORMUON_ERROR_CUDA";
    case NORMUON_ERROR_COMM: return "NORMUON_ERROR_COMM";
    case NORMUON_ERROR_NONFINITE: return "NORMUON_ERROR_NONFINITE";
    case NORMUON_ERROR_TIMEOUT: return "NORMUON_ERROR_TIMEOUT";
    case NORMUON_ERROR_INTERNAL: return "NORMUON_ERROR_INTERNAL";
    case NORMUON_STATUS_MIN_ENUM:
    case NORMUON_STATUS_MAX_ENUM: break;
  }
  return "NORMUON_ERROR_UNKNOWN_STATUS";
}

absl::Status StatusFromC(normuon_status_t status, absl::string_view message) {
  switch (status) {
    case NORMUON_SUCCESS: return absl::OkStatus();
    case NORMUON_ERROR_INVALID_ARGUMENT: return absl::InvalidArgumentError(message);
    case NORMUON_ERROR_INVALID_HANDLE: return absl::NotFoundError(message);
    case NORMUON_ERROR_INVALID_STATE: return absl::FailedPreconditionError(message);
    case NORMUON_ERROR_UNSUPPORTED: return absl::UnimplementedError(message);
    case NORMUON_ERROR_OUT_OF_MEMORY: return absl::ResourceExhaustedError(message);
    case NORMUON_ERROR_CUDA: return absl::UnknownError(message);
    case NORMUON_ERROR_COMM: return absl::AbortedError(message);
    case NORMUON_ERROR_NONFINITE: return absl::DataLossError(message);
    case NORMUON_ERROR_TIMEOUT: return absl::DeadlineExceededError(message);
    case NORMUON_ERROR_INTERNAL: return absl::InternalError(message);
    case NORMUON_STATUS_MIN_ENUM:
    case NORMUON_STATUS_MAX_ENUM: break;
  }
  return absl::InternalError(
      absl::StrCat(message, " [unknown status value ", static_cast<int>(status), "]"));
}

normuon_status_t StatusToC(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk: return NORMUON_SUCCESS;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists: return NORMUON_ERROR_INVALID_ARGUMENT;
    case absl::StatusCode::kNotFound: return NORMUON_ERROR_INVALID_HANDLE;
    case absl::StatusCode::kFailedPrecondition: return NORMUON_ERROR_INVALID_STATE;
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kUnavailable: return NORMUON_ERROR_UNSUPPORTED;
    case absl::StatusCode::kResourceExhausted: return NORMUON_ERROR_OUT_OF_MEMORY;
    case absl::StatusCode::kUnknown: return NORMUON_ERROR_CUDA;
    case absl::StatusCode::kAborted: return NORMUON_ERROR_COMM;
    case absl::StatusCode::kDataLoss: return NORMUON_ERROR_NONFINITE;
    case absl::StatusCode::kDeadlineExceeded: return NORMUON_ERROR_TIMEOUT;
    default: return NORMUON_ERROR_INTERNAL;
  }
}

}  // namespace normuon
