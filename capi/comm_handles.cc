// See comm_handles.h.
#include "capi/comm_handles.h"

#include <utility>

#include "base/handle_registry.h"

namespace normuon {
namespace {

constexpr uint8_t kCommTag = 0xC0;

HandleRegistry<CommHandle>& Registry() {
  static auto* registry = new HandleRegistry<CommHandle>(  // never destroyed: used at exit
      kCommTag, "communicator",
      "(0 stands for \"single rank, no communicator\" in normuon_create only)");
  return *registry;
}

}  // namespace

absl::StatusOr<normuon_comm_t> RegisterComm(std::shared_ptr<Communicator> comm) {
  auto entry = std::make_shared<CommHandle>();
  entry->comm = std::move(comm);
  return Registry().Add(std::move(entry));
}

absl::StatusOr<std::shared_ptr<Communicator>> LookupComm(normuon_comm_t handle) {
  if (handle == 0) return MakeSingleRankCommunicator();
  absl::StatusOr<std::shared_ptr<CommHandle>> entry = Registry().Find(handle);
  if (!entry.ok()) return entry.status();
  return (*entry)->comm;
}

absl::StatusOr<std::shared_ptr<CommHandle>> LookupCommHandle(normuon_comm_t handle) {
  return Registry().Find(handle);
}

absl::StatusOr<std::shared_ptr<CommHandle>> UnregisterComm(normuon_comm_t handle) {
  return Registry().Remove(handle);
}

}  // namespace normuon
