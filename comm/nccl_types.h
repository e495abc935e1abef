// The slice of NCCL's C ABI that normuon uses, declared here instead of taken from nccl.h, so that
// NCCL is a run-time dependency only (comm/nccl_library.h resolves the functions with dlsym) and
// the CPU-only build (--define=cuda=off) needs no CUDA header at all. The stand-in NCCL of the
// tests (tests/comm/fake_nccl) implements its exported functions with these same types.
//
// Everything here mirrors NCCL 2.18's public header: the values of the enums, the 128-byte unique
// id passed by value, and the versioned config struct. comm/nccl_abi_check.cc (default build
// only) checks each of these against the nccl.h of the CUDA toolkit at compile time.
//
// Why the config is the 2.18 layout and not the newest: NCCL copies min(config.size, its own
// sizeof) bytes of the caller's struct and resets every field newer than config.version to its
// default. A struct declared as 2.18 with version 2.18.0 therefore means the same thing to every
// NCCL from 2.18 on, including ones newer than the toolkit this was compiled against.
//
// No C++ beyond enums with a fixed underlying type: the layout must be what a C compiler gives.
#ifndef NORMUON_COMM_NCCL_TYPES_H_
#define NORMUON_COMM_NCCL_TYPES_H_

#include <cstddef>
#include <cstdint>

namespace normuon {
namespace nccl {

// ncclResult_t. Every NCCL call returns one; ncclInProgress only on non-blocking communicators.
enum Result : int {
  kSuccess = 0,
  kUnhandledCudaError = 1,
  kSystemError = 2,
  kInternalError = 3,
  kInvalidArgument = 4,
  kInvalidUsage = 5,
  kRemoteError = 6,
  kInProgress = 7,
};

// ncclDataType_t, only the members normuon uses. Bytes travel as kUint8 (count = bytes).
enum DataType : int {
  kInt8 = 0,
  kUint8 = 1,
  kFloat32 = 7,
};

// ncclRedOp_t, only the member normuon uses.
enum RedOp : int {
  kSum = 0,
};

// ncclComm_t: opaque; the struct is NCCL's (or the stand-in's) and never dereferenced here.
struct Comm;
using CommHandle = Comm*;

// ncclUniqueId: 128 opaque bytes, passed by value to ncclCommInitRankConfig.
constexpr size_t kUniqueIdBytes = 128;
struct UniqueId {
  char internal[kUniqueIdBytes];
};

// NCCL_VERSION(major, minor, patch) for NCCL 2.9 and later, as ncclGetVersion reports it.
constexpr int VersionCode(int major, int minor, int patch) {
  return major * 10000 + minor * 100 + patch;
}

// ncclConfig_t as of NCCL 2.18 (see the file comment). Fill with DefaultConfig().
struct Config {
  size_t size;          // sizeof(Config)
  unsigned int magic;   // kConfigMagic
  unsigned int version; // the NCCL version whose layout this is
  int blocking;         // 0: every call may return kInProgress instead of blocking
  int cgaClusterSize;
  int minCTAs;
  int maxCTAs;
  const char* netName;
  int splitShare;
};

constexpr unsigned int kConfigMagic = 0xcafebeef;
constexpr int kConfigUndefInt = -2147483647 - 1;  // NCCL_CONFIG_UNDEF_INT (INT_MIN)
constexpr unsigned int kConfigVersion = VersionCode(2, 18, 0);

// NCCL_CONFIG_INITIALIZER for the layout above: every option left to NCCL.
inline Config DefaultConfig() {
  Config c;
  c.size = sizeof(Config);
  c.magic = kConfigMagic;
  c.version = kConfigVersion;
  c.blocking = kConfigUndefInt;
  c.cgaClusterSize = kConfigUndefInt;
  c.minCTAs = kConfigUndefInt;
  c.maxCTAs = kConfigUndefInt;
  c.netName = nullptr;
  c.splitShare = kConfigUndefInt;
  return c;
}

// The signatures of the NCCL functions normuon calls, with cudaStream_t as void* (a pointer to
// an opaque struct either way). The stand-in NCCL defines its exports with exactly these.
using GetVersionFn = Result (*)(int* version);
using GetUniqueIdFn = Result (*)(UniqueId* id);
using CommInitRankConfigFn = Result (*)(CommHandle* comm, int nranks, UniqueId id, int rank,
                                        Config* config);
using CommGetAsyncErrorFn = Result (*)(CommHandle comm, Result* async_error);
using CommFinalizeFn = Result (*)(CommHandle comm);
using CommDestroyFn = Result (*)(CommHandle comm);
using CommAbortFn = Result (*)(CommHandle comm);
using CommCountFn = Result (*)(CommHandle comm, int* count);
using CommUserRankFn = Result (*)(CommHandle comm, int* rank);
using GetErrorStringFn = const char* (*)(Result result);
using GetLastErrorFn = const char* (*)(CommHandle comm);
using GroupStartFn = Result (*)();
using GroupEndFn = Result (*)();
using SendFn = Result (*)(const void* buf, size_t count, DataType type, int peer, CommHandle comm,
                          void* stream);
using RecvFn = Result (*)(void* buf, size_t count, DataType type, int peer, CommHandle comm,
                          void* stream);
using AllReduceFn = Result (*)(const void* in, void* out, size_t count, DataType type, RedOp op,
                               CommHandle comm, void* stream);
using AllGatherFn = Result (*)(const void* in, void* out, size_t count_per_rank, DataType type,
                               CommHandle comm, void* stream);

}  // namespace nccl
}  // namespace normuon

#endif  // NORMUON_COMM_NCCL_TYPES_H_
