// The C edge of the communicator API (normuon/comm.h): the communicator handles
// (capi/comm_handles.h), the versioned copy of normuon_comm_ops_t (base/versioned_struct.h),
// status conversion (base/c_status.h) and per-handle error messages. Nothing thrown inside the
// library crosses this boundary.
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/c_status.h"
#include "base/versioned_struct.h"
#include "capi/comm_handles.h"
#include "capi/guarded.h"
#include "capi/struct_layouts.h"
#include "comm/communicator.h"
#include "comm/inprocess_group.h"
#include "normuon/comm.h"

#if defined(NORMUON_WITH_NCCL)
#include "comm/nccl_communicator.h"
#include "comm/nccl_library.h"
#endif

namespace normuon {
namespace {

// Messages of failures that have no live handle to live on (create, bad handles).
thread_local std::string g_comm_thread_error;

normuon_status_t FailOnThread(const absl::Status& s) {
  g_comm_thread_error = std::string(s.message());
  return StatusToC(s);
}

// Runs fn(entry) on a live handle; a failure's message goes to the handle (or to the thread when
// the handle is not live).
template <typename Fn>
normuon_status_t WithHandle(normuon_comm_t comm, Fn fn) {
  std::shared_ptr<CommHandle> entry;
  absl::Status s = Guarded([&]() -> absl::Status {
    absl::StatusOr<std::shared_ptr<CommHandle>> found = LookupCommHandle(comm);
    if (!found.ok()) return found.status();
    entry = *std::move(found);
    return absl::OkStatus();
  });
  if (!s.ok()) return FailOnThread(s);
  s = Guarded([&]() -> absl::Status { return fn(*entry); });
  if (s.ok()) return NORMUON_SUCCESS;
  std::lock_guard<std::mutex> lock(entry->mu);
  entry->error = std::string(s.message());
  return StatusToC(s);
}

#if defined(NORMUON_WITH_NCCL)
// Registers a new NCCL communicator and writes its handle; `make` gives the communicator.
template <typename Make>
normuon_status_t CreateNcclHandle(normuon_comm_t* out, Make make) {
  normuon_comm_t handle = 0;
  absl::Status s = Guarded([&]() -> absl::Status {
    if (out == nullptr) return absl::InvalidArgumentError("out is NULL");
    absl::StatusOr<std::shared_ptr<const NcclLibrary>> lib = SharedNcclLibrary();
    if (!lib.ok()) return lib.status();
    absl::StatusOr<std::shared_ptr<NcclCommunicator>> comm = make(*std::move(lib));
    if (!comm.ok()) return comm.status();
    absl::StatusOr<normuon_comm_t> added = RegisterComm(*std::move(comm));
    if (!added.ok()) return added.status();
    handle = *added;
    return absl::OkStatus();
  });
  if (!s.ok()) return FailOnThread(s);
  *out = handle;
  return NORMUON_SUCCESS;
}
#else
// The CPU-only build has no device buffers for NCCL to move.
normuon_status_t NcclUnsupported(const char* function) {
  return FailOnThread(absl::UnimplementedError(absl::StrCat(
      function, ": this build of normuon has no CUDA (--define=cuda=off), so it has no NCCL "
                "communicator; use the in-process group or a custom communicator")));
}
#endif

}  // namespace
}  // namespace normuon

using normuon::CommHandle;

extern "C" {

void normuon_comm_ops_init(normuon_comm_ops_t* ops) {
  if (ops == nullptr) return;
  std::memset(ops, 0, sizeof(*ops));
  ops->struct_size = sizeof(*ops);
  ops->rank = 0;
  ops->world_size = 1;
}

normuon_status_t normuon_comm_create_custom(const normuon_comm_ops_t* ops, normuon_comm_t* out) {
  normuon_comm_t handle = 0;
  absl::Status s = normuon::Guarded([&]() -> absl::Status {
    normuon_comm_ops_t defaults;
    normuon_comm_ops_init(&defaults);
    absl::StatusOr<normuon_comm_ops_t> copy =
        normuon::CopyStructIn(ops, normuon::kCommOpsLayout, defaults);
    if (!copy.ok()) return copy.status();
    if (out == nullptr) return absl::InvalidArgumentError("out is NULL");
    absl::StatusOr<std::shared_ptr<normuon::Communicator>> comm =
        normuon::MakeCustomOpsCommunicator(*copy);
    if (!comm.ok()) return comm.status();
    // A create that fails takes nothing over (comm.h): if the handle cannot be registered (out
    // of memory), ctx goes back to the caller before the communicator is dropped.
    absl::StatusOr<normuon_comm_t> added = absl::InternalError("not registered");
    try {
      added = normuon::RegisterComm(*comm);
    } catch (...) {
      normuon::ReleaseCustomOpsContext(**comm);
      throw;
    }
    if (!added.ok()) {
      normuon::ReleaseCustomOpsContext(**comm);
      return added.status();
    }
    handle = *added;
    return absl::OkStatus();
  });
  if (!s.ok()) return normuon::FailOnThread(s);
  *out = handle;
  return NORMUON_SUCCESS;
}

normuon_status_t normuon_comm_create_inprocess_group_ex(int32_t world_size,
                                                        double timeout_seconds,
                                                        normuon_comm_memory_t memory,
                                                        normuon_comm_t* out) {
  std::vector<normuon_comm_t> handles;
  absl::Status s = normuon::Guarded([&]() -> absl::Status {
    if (out == nullptr) return absl::InvalidArgumentError("out is NULL");
    if (memory != NORMUON_COMM_MEMORY_HOST && memory != NORMUON_COMM_MEMORY_DEVICE) {
      return absl::InvalidArgumentError(absl::StrCat(
          "memory is ", static_cast<int>(memory),
          ", not NORMUON_COMM_MEMORY_HOST (0) or NORMUON_COMM_MEMORY_DEVICE (1)"));
    }
    absl::StatusOr<std::vector<std::shared_ptr<normuon::InProcessRank>>> ranks =
        normuon::CreateInProcessGroup(world_size, timeout_seconds,
                                      memory == NORMUON_COMM_MEMORY_DEVICE
                                          ? normuon::InProcessMemory::kDevice
                                          : normuon::InProcessMemory::kHost);
    if (!ranks.ok()) return ranks.status();
    handles.reserve(ranks->size());
    for (auto& rank : *ranks) {
      absl::StatusOr<normuon_comm_t> added = normuon::RegisterComm(std::move(rank));
      if (!added.ok()) return added.status();
      handles.push_back(*added);
    }
    return absl::OkStatus();
  });
  if (!s.ok()) {
    // A partly registered group (only possible when out of memory or handles) is released.
    for (normuon_comm_t h : handles) (void)normuon::UnregisterComm(h);
    return normuon::FailOnThread(s);
  }
  for (size_t r = 0; r < handles.size(); ++r) out[r] = handles[r];
  return NORMUON_SUCCESS;
}

normuon_status_t normuon_comm_create_inprocess_group(int32_t world_size, double timeout_seconds,
                                                     normuon_comm_t* out) {
  return normuon_comm_create_inprocess_group_ex(world_size, timeout_seconds,
                                                NORMUON_COMM_MEMORY_HOST, out);
}

normuon_status_t normuon_comm_destroy(normuon_comm_t comm) {
  std::shared_ptr<CommHandle> entry;
  absl::Status s = normuon::Guarded([&]() -> absl::Status {
    absl::StatusOr<std::shared_ptr<CommHandle>> removed = normuon::UnregisterComm(comm);
    if (!removed.ok()) return removed.status();
    entry = *std::move(removed);
    // Dropping the entry here tears the communicator down unless a runtime still holds it.
    entry.reset();
    return absl::OkStatus();
  });
  if (!s.ok()) return normuon::FailOnThread(s);
  return NORMUON_SUCCESS;
}

normuon_status_t normuon_comm_rank(normuon_comm_t comm, int32_t* rank) {
  return normuon::WithHandle(comm, [&](CommHandle& h) -> absl::Status {
    if (rank == nullptr) return absl::InvalidArgumentError("rank is NULL");
    *rank = h.comm->rank();
    return absl::OkStatus();
  });
}

normuon_status_t normuon_comm_world_size(normuon_comm_t comm, int32_t* world_size) {
  return normuon::WithHandle(comm, [&](CommHandle& h) -> absl::Status {
    if (world_size == nullptr) return absl::InvalidArgumentError("world_size is NULL");
    *world_size = h.comm->world_size();
    return absl::OkStatus();
  });
}

normuon_status_t normuon_comm_abort(normuon_comm_t comm) {
  return normuon::WithHandle(comm, [&](CommHandle& h) { return h.comm->Abort(); });
}

normuon_status_t normuon_comm_get_async_error(normuon_comm_t comm, normuon_status_t* error) {
  return normuon::WithHandle(comm, [&](CommHandle& h) -> absl::Status {
    if (error == nullptr) return absl::InvalidArgumentError("error is NULL");
    absl::Status failure = h.comm->AsyncError();
    *error = normuon::StatusToC(failure);
    if (!failure.ok()) {
      std::lock_guard<std::mutex> lock(h.mu);
      h.error = std::string(failure.message());
    }
    return absl::OkStatus();
  });
}

const char* normuon_comm_last_error(normuon_comm_t comm) {
  try {
    absl::StatusOr<std::shared_ptr<CommHandle>> entry = normuon::LookupCommHandle(comm);
    if (!entry.ok()) return normuon::g_comm_thread_error.c_str();
    // The entry outlives this call only through the registry; the string lives on the handle
    // until the next call on it, as documented.
    std::lock_guard<std::mutex> lock((*entry)->mu);
    return (*entry)->error.c_str();
  } catch (...) {
    return "internal error while reading the last error";
  }
}

normuon_status_t normuon_comm_inject_fault(normuon_comm_t comm, normuon_fault_t fault,
                                           int64_t at_call) {
  return normuon::WithHandle(comm, [&](CommHandle& h) -> absl::Status {
    auto* rank = dynamic_cast<normuon::InProcessRank*>(h.comm.get());
    if (rank == nullptr) {
      return absl::UnimplementedError(absl::StrCat(
          "fault injection needs an in-process group communicator; this is ",
          h.comm->Describe()));
    }
    return rank->InjectFault(fault, at_call);
  });
}

normuon_status_t normuon_nccl_get_unique_id(void* id_out) {
#if defined(NORMUON_WITH_NCCL)
  absl::Status s = normuon::Guarded([&]() -> absl::Status {
    if (id_out == nullptr) return absl::InvalidArgumentError("id_out is NULL");
    absl::StatusOr<std::shared_ptr<const normuon::NcclLibrary>> lib =
        normuon::SharedNcclLibrary();
    if (!lib.ok()) return lib.status();
    absl::StatusOr<normuon::nccl::UniqueId> id = normuon::NcclGetUniqueId(**lib);
    if (!id.ok()) return id.status();
    static_assert(sizeof(*id) == NORMUON_NCCL_UNIQUE_ID_BYTES, "unique id size");
    std::memcpy(id_out, &*id, sizeof(*id));
    return absl::OkStatus();
  });
  if (!s.ok()) return normuon::FailOnThread(s);
  return NORMUON_SUCCESS;
#else
  (void)id_out;
  return normuon::NcclUnsupported("normuon_nccl_get_unique_id");
#endif
}

normuon_status_t normuon_comm_create_nccl(const void* unique_id, int32_t rank,
                                          int32_t world_size, int32_t device,
                                          double timeout_seconds, normuon_comm_t* out) {
#if defined(NORMUON_WITH_NCCL)
  if (unique_id == nullptr) {
    return normuon::FailOnThread(absl::InvalidArgumentError("unique_id is NULL"));
  }
  return normuon::CreateNcclHandle(
      out, [&](std::shared_ptr<const normuon::NcclLibrary> lib) {
        normuon::nccl::UniqueId id;
        std::memcpy(&id, unique_id, sizeof(id));
        return normuon::NcclCommunicator::Create(std::move(lib), id, rank, world_size, device,
                                                 timeout_seconds);
      });
#else
  (void)unique_id, (void)rank, (void)world_size, (void)device, (void)timeout_seconds, (void)out;
  return normuon::NcclUnsupported("normuon_comm_create_nccl");
#endif
}

normuon_status_t normuon_comm_wrap_nccl(void* nccl_comm, double timeout_seconds,
                                        normuon_comm_t* out) {
#if defined(NORMUON_WITH_NCCL)
  return normuon::CreateNcclHandle(out, [&](std::shared_ptr<const normuon::NcclLibrary> lib) {
    return normuon::NcclCommunicator::Wrap(std::move(lib), nccl_comm, timeout_seconds);
  });
#else
  (void)nccl_comm, (void)timeout_seconds, (void)out;
  return normuon::NcclUnsupported("normuon_comm_wrap_nccl");
#endif
}

}  // extern "C"
