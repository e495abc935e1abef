// Finding NCCL at run time and checking its version; see nccl_library.h.
#include "comm/nccl_library.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"

namespace normuon {
namespace {

constexpr char kSoname[] = "libnccl.so.2";

std::string DlErrorText() {
  const char* text = dlerror();
  return text != nullptr ? text : "(dlerror gave no message)";
}

// The file that holds `symbol`, as the dynamic loader reports it; `fallback` if it cannot say.
std::string FileOf(void* symbol, const std::string& fallback) {
  Dl_info info;
  if (symbol != nullptr && dladdr(symbol, &info) != 0 && info.dli_fname != nullptr &&
      info.dli_fname[0] != '\0') {
    return info.dli_fname;
  }
  return fallback;
}

// A library we hold a reference on and give back unless Release() is called: every failure path
// after a dlopen drops its reference, while a success keeps it for the life of the process.
class LibraryRef {
 public:
  explicit LibraryRef(void* handle) : handle_(handle) {}
  ~LibraryRef() {
    if (handle_ != nullptr && handle_ != RTLD_DEFAULT) dlclose(handle_);
  }
  LibraryRef(const LibraryRef&) = delete;
  LibraryRef& operator=(const LibraryRef&) = delete;
  void* get() const { return handle_; }
  void* Release() { return std::exchange(handle_, nullptr); }

 private:
  void* handle_;
};

// Where the library comes from, before any function is looked up.
struct Located {
  void* handle = nullptr;  // dlopen handle, or RTLD_DEFAULT
  std::string path;
  std::string origin;
};

absl::StatusOr<Located> Locate() {
  Located found;
  // 1. Visible to the whole process: the trainer's NCCL, linked or loaded RTLD_GLOBAL. Take a
  // handle on the very file that defines ncclGetVersion, so every other function comes from the
  // same library even if a second NCCL is loaded somewhere.
  dlerror();
  if (void* sym = dlsym(RTLD_DEFAULT, "ncclGetVersion")) {
    found.path = FileOf(sym, "(the executable)");
    found.handle = dlopen(found.path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (found.handle == nullptr) found.handle = RTLD_DEFAULT;  // e.g. NCCL inside the executable
    found.origin = "already loaded in the process";
    return found;
  }
  // 2. Loaded privately by some library under NCCL's soname: dlopen by that name finds it
  // without loading anything.
  if (void* handle = dlopen(kSoname, RTLD_NOW | RTLD_NOLOAD)) {
    found.handle = handle;
    found.path = FileOf(dlsym(handle, "ncclGetVersion"), kSoname);
    found.origin = "already loaded in the process, privately by another library";
    return found;
  }
  // 3. The caller's choice. A failure here is final: silently taking another NCCL would hide a
  // misconfiguration.
  const char* env = std::getenv(kNcclLibraryEnv);
  if (env != nullptr && env[0] != '\0') {
    void* handle = dlopen(env, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      return absl::UnavailableError(absl::StrCat(
          "NCCL library not found: dlopen(\"", env, "\") from $", kNcclLibraryEnv,
          " failed: ", DlErrorText(), "; no NCCL is loaded in this process either"));
    }
    found.handle = handle;
    found.path = FileOf(dlsym(handle, "ncclGetVersion"), env);
    found.origin = absl::StrCat("from $", kNcclLibraryEnv);
    return found;
  }
  // 4. The system's NCCL.
  void* handle = dlopen(kSoname, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "NCCL library not found: no NCCL is loaded in this process, $", kNcclLibraryEnv,
        " is not set, and dlopen(\"", kSoname, "\") failed: ", DlErrorText(),
        ". Install NCCL 2.18 or newer where the dynamic loader finds it, or set $",
        kNcclLibraryEnv, " to the path of libnccl.so.2"));
  }
  found.handle = handle;
  found.path = FileOf(dlsym(handle, "ncclGetVersion"), kSoname);
  found.origin = "found by the dynamic loader";
  return found;
}

template <typename Fn>
absl::Status Resolve(void* handle, const char* name, const std::string& where, Fn* out) {
  dlerror();
  void* sym = dlsym(handle, name);
  if (sym == nullptr) {
    return absl::UnavailableError(absl::StrCat("NCCL at ", where, " has no function ", name,
                                               " (dlsym: ", DlErrorText(), ")"));
  }
  *out = reinterpret_cast<Fn>(sym);
  return absl::OkStatus();
}

}  // namespace

std::string NcclVersionString(int code) {
  // NCCL_VERSION changed its encoding at 2.9: major*10000 + minor*100 + patch from then on.
  if (code >= 10000) return absl::StrCat(code / 10000, ".", (code % 10000) / 100, ".", code % 100);
  return absl::StrCat(code / 1000, ".", (code % 1000) / 100, ".", code % 100);
}

std::string NcclResultName(nccl::Result result) {
  switch (result) {
    case nccl::kSuccess: return "ncclSuccess";
    case nccl::kUnhandledCudaError: return "ncclUnhandledCudaError";
    case nccl::kSystemError: return "ncclSystemError";
    case nccl::kInternalError: return "ncclInternalError";
    case nccl::kInvalidArgument: return "ncclInvalidArgument";
    case nccl::kInvalidUsage: return "ncclInvalidUsage";
    case nccl::kRemoteError: return "ncclRemoteError";
    case nccl::kInProgress: return "ncclInProgress";
  }
  return absl::StrCat("ncclResult_t ", static_cast<int>(result));
}

std::string NcclLibrary::Describe() const {
  return absl::StrCat("NCCL ", NcclVersionString(version_code), " at ", path, " (", origin, ")");
}

std::string NcclLibrary::ResultText(nccl::Result result) const {
  const char* text = get_error_string != nullptr ? get_error_string(result) : nullptr;
  if (text == nullptr || text[0] == '\0') return NcclResultName(result);
  return absl::StrCat(NcclResultName(result), " (", text, ")");
}

std::string NcclLibrary::LastError(nccl::CommHandle comm) const {
  const char* text = get_last_error != nullptr ? get_last_error(comm) : nullptr;
  return text != nullptr ? text : "";
}

absl::StatusOr<std::shared_ptr<const NcclLibrary>> LoadNcclLibrary() {
  absl::StatusOr<Located> located = Locate();
  if (!located.ok()) return located.status();
  LibraryRef ref(located->handle);
  auto lib = std::make_shared<NcclLibrary>();
  lib->path = located->path;
  lib->origin = located->origin;
  lib->handle = ref.get();
  const std::string where = absl::StrCat(lib->path, " (", lib->origin, ")");

  // The version first: an old NCCL lacks some functions, and "too old" is the useful message.
  absl::Status s = Resolve(lib->handle, "ncclGetVersion", where, &lib->get_version);
  if (!s.ok()) return s;
  const nccl::Result r = lib->get_version(&lib->version_code);
  if (r != nccl::kSuccess) {
    return absl::UnavailableError(absl::StrCat("ncclGetVersion of NCCL at ", where, " returned ",
                                               NcclResultName(r)));
  }
  if (lib->version_code < kMinNcclVersionCode) {
    return absl::UnavailableError(absl::StrCat(
        "NCCL ", NcclVersionString(lib->version_code), " (ncclGetVersion code ",
        lib->version_code, ") at ", where, " is too old: normuon needs NCCL ",
        NcclVersionString(kMinNcclVersionCode),
        " or newer (non-blocking communicators, ncclCommFinalize, ncclGetLastError)"));
  }

  // Every lookup runs; the first missing function is reported.
  void* const h = lib->handle;
  const absl::Status lookups[] = {
      Resolve(h, "ncclGetUniqueId", where, &lib->get_unique_id),
      Resolve(h, "ncclCommInitRankConfig", where, &lib->comm_init_rank_config),
      Resolve(h, "ncclCommGetAsyncError", where, &lib->comm_get_async_error),
      Resolve(h, "ncclCommFinalize", where, &lib->comm_finalize),
      Resolve(h, "ncclCommDestroy", where, &lib->comm_destroy),
      Resolve(h, "ncclCommAbort", where, &lib->comm_abort),
      Resolve(h, "ncclCommCount", where, &lib->comm_count),
      Resolve(h, "ncclCommUserRank", where, &lib->comm_user_rank),
      Resolve(h, "ncclGetErrorString", where, &lib->get_error_string),
      Resolve(h, "ncclGetLastError", where, &lib->get_last_error),
      Resolve(h, "ncclGroupStart", where, &lib->group_start),
      Resolve(h, "ncclGroupEnd", where, &lib->group_end),
      Resolve(h, "ncclSend", where, &lib->send),
      Resolve(h, "ncclRecv", where, &lib->recv),
      Resolve(h, "ncclAllReduce", where, &lib->all_reduce),
      Resolve(h, "ncclAllGather", where, &lib->all_gather),
  };
  for (const absl::Status& lookup : lookups) {
    if (!lookup.ok()) return lookup;
  }
  ref.Release();  // kept for the life of the process: see nccl_library.h
  return std::shared_ptr<const NcclLibrary>(std::move(lib));
}

absl::StatusOr<std::shared_ptr<const NcclLibrary>> SharedNcclLibrary() {
  static std::mutex* mu = new std::mutex();
  static std::shared_ptr<const NcclLibrary>* shared = new std::shared_ptr<const NcclLibrary>();
  std::lock_guard<std::mutex> lock(*mu);
  if (*shared != nullptr) return *shared;
  absl::StatusOr<std::shared_ptr<const NcclLibrary>> lib = LoadNcclLibrary();
  if (lib.ok()) *shared = *lib;
  return lib;
}

}  // namespace normuon
