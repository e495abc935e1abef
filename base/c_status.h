// The one conversion between the C API's normuon_status_t and absl::Status, used wherever the two
// meet: the C edge (capi/) turns a Status into the code it returns, and the adapter over a
// caller's normuon_comm_ops_t (comm/) turns the codes the caller's functions return into
// Statuses (docs/ARCHITECTURE.md section 7, "C API conventions").
#ifndef NORMUON_BASE_C_STATUS_H_
#define NORMUON_BASE_C_STATUS_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "normuon/normuon.h"

namespace normuon {

// "NORMUON_ERROR_TIMEOUT"; "NORMUON_ERROR_UNKNOWN_STATUS" for a value outside the enum. Never
// null; the string is static.
const char* StatusName(normuon_status_t status);

// C status -> absl::Status with `message` (OkStatus for NORMUON_SUCCESS): TIMEOUT ->
// DeadlineExceeded, COMM -> Aborted, INVALID_ARGUMENT -> InvalidArgument, INVALID_HANDLE ->
// NotFound, INVALID_STATE -> FailedPrecondition, UNSUPPORTED -> Unimplemented, OUT_OF_MEMORY ->
// ResourceExhausted, CUDA -> Unknown, NONFINITE -> DataLoss, INTERNAL -> Internal; a value
// outside the enum -> Internal, with the value appended to the message. StatusToC inverts it on
// these codes.
absl::Status StatusFromC(normuon_status_t status, absl::string_view message);

// absl::Status -> the C status the C edge returns for it. Besides the inverses of StatusFromC:
// OutOfRange and AlreadyExists -> INVALID_ARGUMENT, Unavailable -> UNSUPPORTED, every other code
// (Cancelled, PermissionDenied, Unauthenticated, ...) -> INTERNAL.
normuon_status_t StatusToC(const absl::Status& status);

}  // namespace normuon

#endif  // NORMUON_BASE_C_STATUS_H_
