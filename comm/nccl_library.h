// NCCL resolved at run time: a table of the NCCL functions normuon calls, found with dlsym, so
// that nothing links libnccl and the library that drives a communicator is the one that made it.
//
// Why run time and not link time: a trainer that hands us its ncclComm_t (a PyTorch process
// group's, say) created it with the NCCL its framework carries, and a communicator must be driven
// by the library that created it (its struct layout and internal state are private to that
// build). Linking our own libnccl would bring a second, different NCCL into the process.
//
// Where the functions come from, first match wins:
//   1. the NCCL already loaded in the process and visible to dlsym(RTLD_DEFAULT);
//   2. the NCCL already loaded in the process under the soname libnccl.so.2 but privately (a
//      library loaded with RTLD_LOCAL, as Python loads extension modules, pulled it in);
//   3. the file named by $NORMUON_NCCL_LIBRARY, if set and not empty (no fallback if it fails);
//   4. dlopen("libnccl.so.2") through the normal library search path.
// A copy we open ourselves is opened RTLD_LOCAL, so it never becomes the process's global NCCL,
// and it is never closed (NCCL keeps threads and CUDA state alive for the life of the process).
// An NCCL linked statically into another library, with its symbols hidden, cannot be found; set
// NORMUON_NCCL_LIBRARY to a shared NCCL then, and do not borrow that library's communicators.
//
// ncclGetVersion must report 2.18.0 or newer: normuon relies on non-blocking communicators
// (ncclCommInitRankConfig with blocking = 0, ncclInProgress), ncclCommFinalize and
// ncclGetLastError, all settled by 2.18, and declares the 2.18 ncclConfig_t (comm/nccl_types.h).
#ifndef NORMUON_COMM_NCCL_LIBRARY_H_
#define NORMUON_COMM_NCCL_LIBRARY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "comm/nccl_types.h"

namespace normuon {

// The oldest NCCL accepted (see the file comment).
constexpr int kMinNcclVersionCode = nccl::VersionCode(2, 18, 0);

// The environment variable that names an NCCL shared library to load when none is loaded yet.
constexpr char kNcclLibraryEnv[] = "NORMUON_NCCL_LIBRARY";

// The resolved functions. Immutable once loaded; shared by every communicator that uses it.
struct NcclLibrary {
  std::string path;     // the file the functions live in, as the dynamic loader reports it
  std::string origin;   // how it was found, for messages ("already loaded in the process", ...)
  int version_code = 0; // as ncclGetVersion reports it
  void* handle = nullptr;  // dlopen handle or RTLD_DEFAULT; never closed

  nccl::GetVersionFn get_version = nullptr;
  nccl::GetUniqueIdFn get_unique_id = nullptr;
  nccl::CommInitRankConfigFn comm_init_rank_config = nullptr;
  nccl::CommGetAsyncErrorFn comm_get_async_error = nullptr;
  nccl::CommFinalizeFn comm_finalize = nullptr;
  nccl::CommDestroyFn comm_destroy = nullptr;
  nccl::CommAbortFn comm_abort = nullptr;
  nccl::CommCountFn comm_count = nullptr;
  nccl::CommUserRankFn comm_user_rank = nullptr;
  nccl::GetErrorStringFn get_error_string = nullptr;
  nccl::GetLastErrorFn get_last_error = nullptr;
  nccl::GroupStartFn group_start = nullptr;
  nccl::GroupEndFn group_end = nullptr;
  nccl::SendFn send = nullptr;
  nccl::RecvFn recv = nullptr;
  nccl::AllReduceFn all_reduce = nullptr;
  nccl::AllGatherFn all_gather = nullptr;

  // "NCCL 2.28.9 at /usr/local/cuda/lib64/libnccl.so.2 (from $NORMUON_NCCL_LIBRARY)".
  std::string Describe() const;

  // "ncclRemoteError (remote process exited or there was a network error)": the enum's name and
  // this library's ncclGetErrorString text.
  std::string ResultText(nccl::Result result) const;

  // ncclGetLastError(comm) as a string ("" when NCCL has none). NCCL's text is process-wide in
  // many versions, so it may describe another communicator's failure; messages say "last NCCL
  // error" for that reason.
  std::string LastError(nccl::CommHandle comm) const;
};

// Resolves NCCL as described in the file comment, every call afresh (tests use this to see each
// failure). Errors, all Unavailable (NORMUON_ERROR_UNSUPPORTED at the C edge), name what was
// tried: the library was not found (with dlerror's text), a function is missing, ncclGetVersion
// failed, or the version is older than 2.18 (naming the version found and the path).
absl::StatusOr<std::shared_ptr<const NcclLibrary>> LoadNcclLibrary();

// The process's NCCL for communicators: the first successful LoadNcclLibrary(), kept for the life
// of the process, so every communicator is driven by one library. A failure is not kept: a later
// call (after the trainer loaded its NCCL, or with NORMUON_NCCL_LIBRARY set) tries again.
absl::StatusOr<std::shared_ptr<const NcclLibrary>> SharedNcclLibrary();

// "2.18.1" from an ncclGetVersion code (also the pre-2.9 encoding, major*1000 + minor*100 + patch).
std::string NcclVersionString(int version_code);

// "ncclRemoteError"; "ncclResult_t 42" for a value this file does not know.
std::string NcclResultName(nccl::Result result);

}  // namespace normuon

#endif  // NORMUON_COMM_NCCL_LIBRARY_H_
