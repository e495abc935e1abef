// Compile-time proof that comm/nccl_types.h matches the nccl.h of the CUDA toolkit: the values of
// the enums, the size of the unique id, and the offsets of every field of the 2.18 config layout.
// Built only in the default (CUDA) build; the CPU-only build has no nccl.h and does not need one.
// Nothing here runs: the object file is empty.
//
// nccl.h includes the toolkit's fp16, bf16 and fp8 headers but declares nothing with their types.
// Those headers need the CCCL headers (<nv/target>) that @cuda//:headers does not carry, so their
// include guards are defined first and they are skipped.
#define __CUDA_FP16_H__
#define __CUDA_BF16_H__
#define __CUDA_FP8_H__
#include <nccl.h>

#include <cstddef>

#include "comm/nccl_types.h"

namespace normuon {
namespace nccl {
namespace {

// Compares enumerators of two different enums by value (== on them directly draws -Wenum-compare).
constexpr bool Same(int ours, int theirs) { return ours == theirs; }

static_assert(sizeof(Result) == sizeof(ncclResult_t), "ncclResult_t size");
static_assert(Same(kSuccess, ncclSuccess) && Same(kUnhandledCudaError, ncclUnhandledCudaError) &&
                  Same(kSystemError, ncclSystemError) &&
                  Same(kInternalError, ncclInternalError) &&
                  Same(kInvalidArgument, ncclInvalidArgument) &&
                  Same(kInvalidUsage, ncclInvalidUsage) && Same(kRemoteError, ncclRemoteError) &&
                  Same(kInProgress, ncclInProgress),
              "ncclResult_t values");

static_assert(sizeof(DataType) == sizeof(ncclDataType_t), "ncclDataType_t size");
static_assert(Same(kInt8, ncclInt8) && Same(kUint8, ncclUint8) && Same(kFloat32, ncclFloat32),
              "ncclDataType_t values");

static_assert(sizeof(RedOp) == sizeof(ncclRedOp_t), "ncclRedOp_t size");
static_assert(Same(kSum, ncclSum), "ncclRedOp_t values");

static_assert(sizeof(UniqueId) == sizeof(ncclUniqueId) && kUniqueIdBytes == NCCL_UNIQUE_ID_BYTES,
              "ncclUniqueId size");
static_assert(alignof(UniqueId) == alignof(ncclUniqueId), "ncclUniqueId alignment");

static_assert(sizeof(CommHandle) == sizeof(ncclComm_t), "ncclComm_t is a pointer");
static_assert(sizeof(void*) == sizeof(cudaStream_t), "cudaStream_t is a pointer");

// The 2.18 layout is a prefix of every later ncclConfig_t.
static_assert(offsetof(Config, size) == offsetof(ncclConfig_t, size), "config.size");
static_assert(offsetof(Config, magic) == offsetof(ncclConfig_t, magic), "config.magic");
static_assert(offsetof(Config, version) == offsetof(ncclConfig_t, version), "config.version");
static_assert(offsetof(Config, blocking) == offsetof(ncclConfig_t, blocking), "config.blocking");
static_assert(offsetof(Config, cgaClusterSize) == offsetof(ncclConfig_t, cgaClusterSize),
              "config.cgaClusterSize");
static_assert(offsetof(Config, minCTAs) == offsetof(ncclConfig_t, minCTAs), "config.minCTAs");
static_assert(offsetof(Config, maxCTAs) == offsetof(ncclConfig_t, maxCTAs), "config.maxCTAs");
static_assert(offsetof(Config, netName) == offsetof(ncclConfig_t, netName), "config.netName");
static_assert(offsetof(Config, splitShare) == offsetof(ncclConfig_t, splitShare),
              "config.splitShare");
static_assert(sizeof(Config) <= sizeof(ncclConfig_t), "config is a prefix");
static_assert(kConfigUndefInt == NCCL_CONFIG_UNDEF_INT, "NCCL_CONFIG_UNDEF_INT");
static_assert(kConfigVersion == NCCL_VERSION(2, 18, 0), "NCCL_VERSION encoding");
static_assert(VersionCode(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH) == NCCL_VERSION_CODE,
              "NCCL_VERSION_CODE encoding");

}  // namespace
}  // namespace nccl
}  // namespace normuon
