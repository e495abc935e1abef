// The C functions of normuon/comm.h under normal and hostile use: handle 0, stale handles,
// double destroy, invalid ops fields, every version of normuon_comm_ops_t, fault injection
// through handles, the async error state; and the registry behind the handles
// (capi/comm_handles.h).
#include "normuon/comm.h"

#include <cstddef>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "base/c_status.h"
#include "capi/comm_handles.h"
#include "comm/communicator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace normuon {
namespace {

using ::testing::HasSubstr;

std::string LastError(normuon_comm_t comm) { return normuon_comm_last_error(comm); }

TEST(CommCApiTest, HandleZeroIsAnInvalidHandleEverywhere) {
  int32_t v = -1;
  normuon_status_t e = NORMUON_SUCCESS;
  EXPECT_EQ(normuon_comm_destroy(0), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_EQ(normuon_comm_rank(0, &v), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_EQ(normuon_comm_world_size(0, &v), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_EQ(normuon_comm_abort(0), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_EQ(normuon_comm_get_async_error(0, &e), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_EQ(normuon_comm_inject_fault(0, NORMUON_FAULT_ERROR, 0), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_THAT(LastError(0), HasSubstr("communicator handle 0 is not a live communicator: 0 is never a "
                                       "handle (0 stands for \"single rank, no "
                                       "communicator\" in normuon_create only)"));
  EXPECT_EQ(v, -1);
}

TEST(CommCApiTest, DestroyedHandleIsStaleAndSecondDestroyFails) {
  normuon_comm_t h[2] = {0, 0};
  ASSERT_EQ(normuon_comm_create_inprocess_group(2, 5.0, h), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_comm_destroy(h[0]), NORMUON_SUCCESS);
  int32_t rank = -1;
  EXPECT_EQ(normuon_comm_rank(h[0], &rank), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_THAT(LastError(h[0]), HasSubstr("is not a live communicator"));
  EXPECT_EQ(normuon_comm_destroy(h[0]), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_EQ(normuon_comm_rank(h[1], &rank), NORMUON_SUCCESS);
  EXPECT_EQ(rank, 1);
  // Destroying rank 0 failed the group for rank 1, as a dead peer would.
  normuon_status_t e = NORMUON_SUCCESS;
  ASSERT_EQ(normuon_comm_get_async_error(h[1], &e), NORMUON_SUCCESS);
  EXPECT_EQ(e, NORMUON_ERROR_COMM);
  EXPECT_THAT(LastError(h[1]), HasSubstr("rank 0's communicator was destroyed"));
  EXPECT_EQ(normuon_comm_destroy(h[1]), NORMUON_SUCCESS);
}

TEST(CommCApiTest, GroupHandlesReportTheirRanksAndWorldSize) {
  normuon_comm_t h[3] = {};
  ASSERT_EQ(normuon_comm_create_inprocess_group(3, 5.0, h), NORMUON_SUCCESS);
  for (int r = 0; r < 3; ++r) {
    int32_t rank = -1, world = -1;
    ASSERT_EQ(normuon_comm_rank(h[r], &rank), NORMUON_SUCCESS);
    ASSERT_EQ(normuon_comm_world_size(h[r], &world), NORMUON_SUCCESS);
    EXPECT_EQ(rank, r);
    EXPECT_EQ(world, 3);
    normuon_status_t e = NORMUON_ERROR_INTERNAL;
    ASSERT_EQ(normuon_comm_get_async_error(h[r], &e), NORMUON_SUCCESS);
    EXPECT_EQ(e, NORMUON_SUCCESS);
  }
  EXPECT_EQ(normuon_comm_rank(h[0], nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(h[0]), HasSubstr("rank is NULL"));
  for (normuon_comm_t c : h) EXPECT_EQ(normuon_comm_destroy(c), NORMUON_SUCCESS);
}

TEST(CommCApiTest, GroupCreationNamesTheBadArgument) {
  normuon_comm_t h[2] = {};
  EXPECT_EQ(normuon_comm_create_inprocess_group(0, 1.0, h), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(0), HasSubstr("world_size is 0"));
  EXPECT_EQ(normuon_comm_create_inprocess_group(2, 0.0, h), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(0), HasSubstr("timeout_seconds is 0"));
  EXPECT_EQ(normuon_comm_create_inprocess_group(2, 1.0, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(0), HasSubstr("out is NULL"));
  EXPECT_EQ(h[0], 0u);
}

TEST(CommCApiTest, FaultInjectedThroughAHandleFailsTheCollectiveOnEveryRank) {
  normuon_comm_t h[2] = {};
  ASSERT_EQ(normuon_comm_create_inprocess_group(2, 5.0, h), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_comm_inject_fault(h[1], NORMUON_FAULT_ERROR, 0), NORMUON_SUCCESS);
  EXPECT_EQ(normuon_comm_inject_fault(h[1], static_cast<normuon_fault_t>(9), 0),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(h[1]), HasSubstr("fault is 9"));
  std::vector<absl::Status> results(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      absl::StatusOr<std::shared_ptr<Communicator>> comm = LookupComm(h[r]);
      if (!comm.ok()) {
        results[r] = comm.status();
        return;
      }
      float x = 1.0f;
      results[r] = (*comm)->AllReduceSum(&x, &x, 1, nullptr);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(StatusToC(results[r]), NORMUON_ERROR_COMM) << results[r];
    EXPECT_THAT(std::string(results[r].message()), HasSubstr("rank 1 failed collective #0"));
    normuon_status_t e = NORMUON_SUCCESS;
    ASSERT_EQ(normuon_comm_get_async_error(h[r], &e), NORMUON_SUCCESS);
    EXPECT_EQ(e, NORMUON_ERROR_COMM);
    EXPECT_THAT(LastError(h[r]), HasSubstr("injected fault NORMUON_FAULT_ERROR"));
  }
  for (normuon_comm_t c : h) EXPECT_EQ(normuon_comm_destroy(c), NORMUON_SUCCESS);
}

// A minimal C backend for the custom-ops path.
struct Counters {
  int aborts = 0, destroys = 0;
};
normuon_status_t NoExchange(void*, const normuon_p2p_t*, int32_t, const normuon_p2p_t*, int32_t,
                            void*) {
  return NORMUON_SUCCESS;
}
normuon_status_t NoReduce(void*, const float*, float*, uint64_t, void*) { return NORMUON_SUCCESS; }
normuon_status_t NoGather(void*, const void*, void*, uint64_t, void*) { return NORMUON_SUCCESS; }
normuon_status_t CountAbort(void* ctx) {
  ++static_cast<Counters*>(ctx)->aborts;
  return NORMUON_SUCCESS;
}
void CountDestroy(void* ctx) { ++static_cast<Counters*>(ctx)->destroys; }

normuon_comm_ops_t CountingOps(Counters* c) {
  normuon_comm_ops_t ops;
  normuon_comm_ops_init(&ops);
  ops.ctx = c;
  ops.rank = 2;
  ops.world_size = 3;
  ops.exchange = &NoExchange;
  ops.all_reduce_sum_f32 = &NoReduce;
  ops.all_gather = &NoGather;
  ops.abort = &CountAbort;
  ops.destroy = &CountDestroy;
  return ops;
}

TEST(CommCApiTest, CustomOpsInitSetsSizeAndASingleRank) {
  normuon_comm_ops_t ops;
  std::memset(&ops, 0x5a, sizeof(ops));
  normuon_comm_ops_init(&ops);
  EXPECT_EQ(ops.struct_size, sizeof(normuon_comm_ops_t));
  EXPECT_EQ(ops.rank, 0);
  EXPECT_EQ(ops.world_size, 1);
  EXPECT_EQ(ops.exchange, nullptr);
  EXPECT_EQ(ops.ctx, nullptr);
}

TEST(CommCApiTest, CustomCommunicatorLivesUntilDestroyedAndThenFreesCtxOnce) {
  Counters c;
  normuon_comm_ops_t ops = CountingOps(&c);
  normuon_comm_t h = 0;
  ASSERT_EQ(normuon_comm_create_custom(&ops, &h), NORMUON_SUCCESS);
  int32_t rank = -1, world = -1;
  ASSERT_EQ(normuon_comm_rank(h, &rank), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_comm_world_size(h, &world), NORMUON_SUCCESS);
  EXPECT_EQ(rank, 2);
  EXPECT_EQ(world, 3);
  EXPECT_EQ(normuon_comm_abort(h), NORMUON_SUCCESS);
  EXPECT_EQ(c.aborts, 1);
  EXPECT_EQ(normuon_comm_inject_fault(h, NORMUON_FAULT_ERROR, 0), NORMUON_ERROR_UNSUPPORTED);
  EXPECT_THAT(LastError(h), HasSubstr("needs an in-process group"));
  // A runtime holding the communicator keeps it alive past the handle's destruction.
  absl::StatusOr<std::shared_ptr<Communicator>> held = LookupComm(h);
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(normuon_comm_destroy(h), NORMUON_SUCCESS);
  EXPECT_EQ(c.destroys, 0);
  held->reset();
  EXPECT_EQ(c.destroys, 1);
  EXPECT_EQ(normuon_comm_destroy(h), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_EQ(c.destroys, 1);
}

TEST(CommCApiTest, CustomOpsWithBadFieldsAreRejectedNamingTheField) {
  Counters c;
  normuon_comm_t h = 0;
  normuon_comm_ops_t ops = CountingOps(&c);
  ops.all_gather = nullptr;
  EXPECT_EQ(normuon_comm_create_custom(&ops, &h), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(0), HasSubstr("normuon_comm_ops_t.all_gather is NULL"));
  ops = CountingOps(&c);
  ops.world_size = -2;
  EXPECT_EQ(normuon_comm_create_custom(&ops, &h), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(0), HasSubstr("normuon_comm_ops_t.world_size is -2"));
  ops = CountingOps(&c);
  ops.struct_size = 0;
  EXPECT_EQ(normuon_comm_create_custom(&ops, &h), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(0), HasSubstr("ops.struct_size 0 is smaller than the first version"));
  EXPECT_EQ(normuon_comm_create_custom(nullptr, &h), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(0), HasSubstr("ops is NULL"));
  ops = CountingOps(&c);
  EXPECT_EQ(normuon_comm_create_custom(&ops, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(h, 0u);
  EXPECT_EQ(c.destroys, 0);  // a rejected struct's ctx stays the caller's
}

TEST(CommCApiTest, CustomOpsDeclareWhereTheirBuffersLive) {
  Counters c;
  normuon_comm_t h = 0;
  normuon_comm_ops_t ops = CountingOps(&c);
  EXPECT_EQ(ops.device_memory, 0);  // host memory unless the caller says otherwise
  ops.device_memory = 2;
  EXPECT_EQ(normuon_comm_create_custom(&ops, &h), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(0), HasSubstr("normuon_comm_ops_t.device_memory is 2, must be 0 or 1"));
  EXPECT_EQ(h, 0u);
  for (int32_t device : {0, 1}) {
    ops = CountingOps(&c);
    ops.device_memory = device;
    ASSERT_EQ(normuon_comm_create_custom(&ops, &h), NORMUON_SUCCESS);
    absl::StatusOr<std::shared_ptr<Communicator>> comm = LookupComm(h);
    ASSERT_TRUE(comm.ok());
    EXPECT_EQ((*comm)->UsesDeviceMemory(), device == 1);
    EXPECT_EQ(normuon_comm_destroy(h), NORMUON_SUCCESS);
  }
}

TEST(CommCApiTest, InProcessGroupExNamesABadMemoryKindAndMakesHostGroups) {
  normuon_comm_t handles[2] = {0, 0};
  EXPECT_EQ(normuon_comm_create_inprocess_group_ex(2, 5.0, static_cast<normuon_comm_memory_t>(7),
                                                   handles),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(0), HasSubstr("memory is 7"));
  EXPECT_EQ(handles[0], 0u);
  ASSERT_EQ(normuon_comm_create_inprocess_group_ex(2, 5.0, NORMUON_COMM_MEMORY_HOST, handles),
            NORMUON_SUCCESS);
  for (normuon_comm_t h : handles) {
    absl::StatusOr<std::shared_ptr<Communicator>> comm = LookupComm(h);
    ASSERT_TRUE(comm.ok());
    EXPECT_FALSE((*comm)->UsesDeviceMemory());
    EXPECT_EQ(normuon_comm_destroy(h), NORMUON_SUCCESS);
  }
}

TEST(CommCApiTest, RuntimeHandlesAreNotCommunicatorHandles) {
  // A handle without the communicator tag (here: generation 1, slot 1, no tag at all).
  const normuon_comm_t untagged = (uint64_t{1} << 32) | 1;
  int32_t rank = 0;
  EXPECT_EQ(normuon_comm_rank(untagged, &rank), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_THAT(LastError(untagged), HasSubstr("is not a communicator handle"));
  // A live runtime's handle (tag 0xA0) is refused by every communicator function, and a live
  // communicator's handle (tag 0xC0) by the runtime functions.
  normuon_config_t config;
  normuon_config_init(&config);
  normuon_runtime_t rt = 0;
  ASSERT_EQ(normuon_create(&config, 0, &rt), NORMUON_SUCCESS) << normuon_last_error(0);
  EXPECT_EQ(rt >> 56, 0xA0u);
  EXPECT_EQ(normuon_comm_rank(rt, &rank), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_THAT(LastError(rt), HasSubstr("is not a communicator handle"));
  EXPECT_EQ(normuon_comm_destroy(rt), NORMUON_ERROR_INVALID_HANDLE);
  normuon_comm_t comm[1] = {0};
  ASSERT_EQ(normuon_comm_create_inprocess_group(1, 5.0, comm), NORMUON_SUCCESS);
  EXPECT_EQ(comm[0] >> 56, 0xC0u);
  EXPECT_EQ(normuon_destroy(comm[0]), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_THAT(std::string(normuon_last_error(0)), HasSubstr("is not a runtime handle"));
  EXPECT_EQ(normuon_destroy(rt), NORMUON_SUCCESS);
  EXPECT_EQ(normuon_comm_destroy(comm[0]), NORMUON_SUCCESS);
}

// ---- Every version of normuon_comm_ops_t (base/versioned_struct.h) ----

// The first version ended with last_error; device_memory came later.
constexpr size_t kFirstOpsVersion = offsetof(normuon_comm_ops_t, last_error) + sizeof(void*);

TEST(CommOpsVersionTest, SizesBelowTheFirstVersionAreRefusedNamingIt) {
  Counters c;
  for (uint32_t size : {0u, 3u, 4u, 8u, static_cast<uint32_t>(kFirstOpsVersion - 8)}) {
    normuon_comm_ops_t ops = CountingOps(&c);
    ops.struct_size = size;
    normuon_comm_t h = 0;
    EXPECT_EQ(normuon_comm_create_custom(&ops, &h), NORMUON_ERROR_INVALID_ARGUMENT) << size;
    EXPECT_THAT(LastError(0), HasSubstr("ops.struct_size " + std::to_string(size) +
                                        " is smaller than the first version (" +
                                        std::to_string(kFirstOpsVersion) + " bytes)"));
    EXPECT_EQ(h, 0u);
  }
  EXPECT_EQ(c.destroys, 0);
}

TEST(CommOpsVersionTest, ASizeInsideAFieldIsRefusedNamingTheField) {
  Counters c;
  normuon_comm_ops_t ops = CountingOps(&c);
  ops.struct_size = static_cast<uint32_t>(offsetof(normuon_comm_ops_t, device_memory) + 2);
  normuon_comm_t h = 0;
  EXPECT_EQ(normuon_comm_create_custom(&ops, &h), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(0), HasSubstr("ends inside field device_memory"));
  EXPECT_EQ(h, 0u);
  EXPECT_EQ(c.destroys, 0);
}

TEST(CommOpsVersionTest, TheFirstVersionGetsTheDefaultsOfTheLaterFields) {
  Counters c;
  normuon_comm_ops_t ops = CountingOps(&c);
  ops.struct_size = static_cast<uint32_t>(kFirstOpsVersion);
  ops.device_memory = 7;  // past the caller's struct: never read (an invalid value if it were)
  normuon_comm_t h = 0;
  ASSERT_EQ(normuon_comm_create_custom(&ops, &h), NORMUON_SUCCESS) << LastError(0);
  absl::StatusOr<std::shared_ptr<Communicator>> comm = LookupComm(h);
  ASSERT_TRUE(comm.ok());
  EXPECT_FALSE((*comm)->UsesDeviceMemory());  // device_memory's default: host memory
  EXPECT_EQ((*comm)->rank(), 2);
  comm->reset();
  EXPECT_EQ(normuon_comm_destroy(h), NORMUON_SUCCESS);
  EXPECT_EQ(c.destroys, 1);
}

TEST(CommOpsVersionTest, ANewerLargerStructIsAcceptedOnlyWithItsNewBytesZero) {
  Counters c;
  // A caller whose header has 16 more bytes of fields than this library knows.
  struct Newer {
    normuon_comm_ops_t ops;
    unsigned char more[16];
  } newer;
  std::memset(&newer, 0, sizeof(newer));
  newer.ops = CountingOps(&c);
  newer.ops.struct_size = sizeof(newer);
  normuon_comm_t h = 0;
  ASSERT_EQ(normuon_comm_create_custom(&newer.ops, &h), NORMUON_SUCCESS) << LastError(0);
  EXPECT_EQ(normuon_comm_destroy(h), NORMUON_SUCCESS);
  EXPECT_EQ(c.destroys, 1);

  h = 0;
  newer.more[5] = 1;  // a newer field this library does not have is set: refused
  EXPECT_EQ(normuon_comm_create_custom(&newer.ops, &h), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(0),
              HasSubstr("byte " + std::to_string(sizeof(normuon_comm_ops_t) + 5) + " is 1"));
  EXPECT_EQ(h, 0u);
  EXPECT_EQ(c.destroys, 1);  // nothing taken over

  newer.ops.struct_size = 1u << 20;  // garbage, not a struct any header declares
  EXPECT_EQ(normuon_comm_create_custom(&newer.ops, &h), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(LastError(0), HasSubstr("is larger than any version of normuon_comm_ops_t"));
}

// ---- The registry behind the handles ----

TEST(CommHandlesTest, HandleZeroGivesASingleRankCommunicator) {
  absl::StatusOr<std::shared_ptr<Communicator>> comm = LookupComm(0);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->rank(), 0);
  EXPECT_EQ((*comm)->world_size(), 1);
  EXPECT_EQ(LookupCommHandle(0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(UnregisterComm(0).status().code(), absl::StatusCode::kNotFound);
}

TEST(CommHandlesTest, StaleHandleIsNotFoundEvenAfterItsSlotIsReused) {
  absl::StatusOr<normuon_comm_t> first = RegisterComm(MakeSingleRankCommunicator());
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(UnregisterComm(*first).ok());
  absl::StatusOr<normuon_comm_t> second = RegisterComm(MakeSingleRankCommunicator());
  ASSERT_TRUE(second.ok());
  EXPECT_NE(*first, *second);
  EXPECT_EQ(LookupComm(*first).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(LookupComm(*first).status().message()), HasSubstr("is not a live communicator"));
  EXPECT_TRUE(LookupComm(*second).ok());
  EXPECT_EQ(UnregisterComm(*first).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(UnregisterComm(*second).ok());
}

TEST(CommHandlesTest, HandleWithoutTheCommunicatorTagIsNotFound) {
  absl::StatusOr<normuon_comm_t> h = RegisterComm(MakeSingleRankCommunicator());
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*h >> 56, 0xC0u);
  const normuon_comm_t untagged = *h & ((uint64_t{1} << 56) - 1);
  absl::Status s = LookupComm(untagged).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("is not a communicator handle"));
  EXPECT_TRUE(UnregisterComm(*h).ok());
}

}  // namespace
}  // namespace normuon
