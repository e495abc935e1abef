// Loading the stand-in NCCL (tests/comm/fake_nccl) in a test: its path in the runfiles, the
// environment variable that makes normuon load it, and its hooks and NCCL functions resolved
// with dlsym. The test binaries never link it (nor any libnccl), so normuon's loader finds no
// NCCL in the process and takes NORMUON_NCCL_LIBRARY, as it would on a machine without one.
#ifndef NORMUON_TESTS_COMM_FAKE_NCCL_UTIL_H_
#define NORMUON_TESTS_COMM_FAKE_NCCL_UTIL_H_

#include <dlfcn.h>

#include <cstdlib>
#include <string>

#include "comm/nccl_library.h"
#include "comm/nccl_types.h"
#include "gtest/gtest.h"
#include "tests/comm/fake_nccl/fake_nccl.h"

namespace normuon {
namespace testing_util {

// The stand-in's hooks, and the NCCL functions a test calls itself (to make a communicator to
// lend, say), all from the one loaded copy that normuon drives.
struct FakeNccl {
  void* handle = nullptr;
  std::string path;
  int (*inject)(int, int) = nullptr;
  void (*set_version)(int) = nullptr;
  void (*set_peer_timeout)(double) = nullptr;
  void (*reset)() = nullptr;
  void (*counters)(FakeNcclCounters*) = nullptr;
  const char* (*last_misuse)() = nullptr;
  int (*comm_state)(const void*) = nullptr;
  int (*group_stats)(const void*, long*, long*) = nullptr;
  nccl::GetUniqueIdFn get_unique_id = nullptr;
  nccl::CommInitRankConfigFn comm_init_rank_config = nullptr;
  nccl::CommGetAsyncErrorFn comm_get_async_error = nullptr;
  nccl::CommDestroyFn comm_destroy = nullptr;
  nccl::CommAbortFn comm_abort = nullptr;
  nccl::AllReduceFn all_reduce = nullptr;

  FakeNcclCounters Counters() const {
    FakeNcclCounters c{};
    counters(&c);
    return c;
  }
};

// $TEST_SRCDIR/$TEST_WORKSPACE/tests/comm/fake_nccl/libnccl_fake.so.
inline std::string FakeNcclPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  return std::string(srcdir != nullptr ? srcdir : ".") + "/" +
         (workspace != nullptr ? workspace : "normuon") +
         "/tests/comm/fake_nccl/libnccl_fake.so";
}

template <typename Fn>
void Bind(void* handle, const char* name, Fn* out) {
  *out = reinterpret_cast<Fn>(dlsym(handle, name));
  ASSERT_NE(*out, nullptr) << "the stand-in NCCL has no " << name;
}

// Points NORMUON_NCCL_LIBRARY at the stand-in and opens it as normuon does (RTLD_LOCAL, so it
// never becomes visible to dlsym(RTLD_DEFAULT)). Once per process; later calls return the same.
// Fails the calling test if the library cannot be opened.
inline const FakeNccl& LoadFakeNccl() {
  static FakeNccl* fake = nullptr;
  if (fake != nullptr) return *fake;
  auto* f = new FakeNccl();
  f->path = FakeNcclPath();
  setenv(kNcclLibraryEnv, f->path.c_str(), /*overwrite=*/1);
  f->handle = dlopen(f->path.c_str(), RTLD_NOW | RTLD_LOCAL);
  EXPECT_NE(f->handle, nullptr) << "cannot open " << f->path << ": " << dlerror();
  if (f->handle == nullptr) return *f;
  Bind(f->handle, "fake_nccl_inject", &f->inject);
  Bind(f->handle, "fake_nccl_set_version", &f->set_version);
  Bind(f->handle, "fake_nccl_set_peer_timeout", &f->set_peer_timeout);
  Bind(f->handle, "fake_nccl_reset", &f->reset);
  Bind(f->handle, "fake_nccl_counters", &f->counters);
  Bind(f->handle, "fake_nccl_last_misuse", &f->last_misuse);
  Bind(f->handle, "fake_nccl_comm_state", &f->comm_state);
  Bind(f->handle, "fake_nccl_group_stats", &f->group_stats);
  Bind(f->handle, "ncclGetUniqueId", &f->get_unique_id);
  Bind(f->handle, "ncclCommInitRankConfig", &f->comm_init_rank_config);
  Bind(f->handle, "ncclCommGetAsyncError", &f->comm_get_async_error);
  Bind(f->handle, "ncclCommDestroy", &f->comm_destroy);
  Bind(f->handle, "ncclCommAbort", &f->comm_abort);
  Bind(f->handle, "ncclAllReduce", &f->all_reduce);
  fake = f;
  return *fake;
}

// The communicator states of fake_nccl_comm_state.
constexpr int kFakeLive = 0;
constexpr int kFakeDestroyed = 1;
constexpr int kFakeAborted = 2;

}  // namespace testing_util
}  // namespace normuon

#endif  // NORMUON_TESTS_COMM_FAKE_NCCL_UTIL_H_
