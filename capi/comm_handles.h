// The handles of normuon/comm.h (normuon_comm_t): one HandleRegistry (base/handle_registry.h)
// of communicators, with the per-handle error message of normuon_comm_last_error. The C edge
// creates and destroys them; normuon_create looks the communicator up by handle; tests look
// communicators up to drive them directly.
#ifndef NORMUON_CAPI_COMM_HANDLES_H_
#define NORMUON_CAPI_COMM_HANDLES_H_

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "normuon/comm.h"

namespace normuon {

// What the C edge keeps per live handle: the communicator and the message of the last failed
// C call on the handle (normuon_comm_last_error).
struct CommHandle {
  std::shared_ptr<Communicator> comm;
  std::mutex mu;  // guards error
  std::string error;
};

// Registers comm and returns its new handle: (0xC0 << 56) | (generation << 32) | slot (the
// encoding of base/handle_registry.h with the communicator tag 0xC0, which no runtime handle
// has). ResourceExhausted only when no handle is left.
absl::StatusOr<normuon_comm_t> RegisterComm(std::shared_ptr<Communicator> comm);

// The communicator behind a handle, for normuon_create. Handle 0 gives a new single-rank
// communicator (normuon.h: "0 = single rank"). Unknown, destroyed or other kinds' handles:
// NotFound naming the handle.
absl::StatusOr<std::shared_ptr<Communicator>> LookupComm(normuon_comm_t handle);

// The registry entry of a live handle; 0, unknown or destroyed: NotFound.
absl::StatusOr<std::shared_ptr<CommHandle>> LookupCommHandle(normuon_comm_t handle);

// Removes a live handle and returns its entry (the communicator lives on while a runtime uses
// it); NotFound as LookupCommHandle.
absl::StatusOr<std::shared_ptr<CommHandle>> UnregisterComm(normuon_comm_t handle);

}  // namespace normuon

#endif  // NORMUON_CAPI_COMM_HANDLES_H_
