// What both C edges (api.cc, comm_api.cc) do around every call: nothing thrown inside the
// library crosses the C boundary. Internal to capi/.
#ifndef NORMUON_CAPI_GUARDED_H_
#define NORMUON_CAPI_GUARDED_H_

#include <exception>
#include <new>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace normuon {

// Runs fn() (returning absl::Status) and turns exceptions into statuses: std::bad_alloc ->
// ResourceExhausted (NORMUON_ERROR_OUT_OF_MEMORY), anything else -> Internal.
template <typename Fn>
absl::Status Guarded(Fn fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of host memory");
  } catch (const std::exception& ex) {
    return absl::InternalError(absl::StrCat("internal error: ", ex.what()));
  } catch (...) {
    return absl::InternalError("internal error: unknown exception");
  }
}

}  // namespace normuon

#endif  // NORMUON_CAPI_GUARDED_H_
