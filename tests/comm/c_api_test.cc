// The C functions of normuon/comm.h under normal and hostile use: handle 0, stale handles,
// double destroy, invalid ops fields, fault injection through handles, the async error state.
#include "normuon/comm.h"

#include <cstring>
#include <string>
#include <thread>
#include <vector>

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
  EXPECT_THAT(LastError(0), HasSubstr("communicator handle 0 is not a communicator"));
  EXPECT_EQ(v, -1);
}

TEST(CommCApiTest, DestroyedHandleIsStaleAndSecondDestroyFails) {
  normuon_comm_t h[2] = {0, 0};
  ASSERT_EQ(normuon_comm_create_inprocess_group(2, 5.0, h), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_comm_destroy(h[0]), NORMUON_SUCCESS);
  int32_t rank = -1;
  EXPECT_EQ(normuon_comm_rank(h[0], &rank), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_THAT(LastError(h[0]), HasSubstr("is not live"));
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
  EXPECT_THAT(LastError(0), HasSubstr("normuon_comm_ops_t.struct_size is 0"));
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
  // The first runtime handle value (generation 1, slot 1) as capi/api.cc issues it.
  const normuon_comm_t runtime_like = (uint64_t{1} << 32) | 1;
  int32_t rank = 0;
  EXPECT_EQ(normuon_comm_rank(runtime_like, &rank), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_THAT(LastError(runtime_like), HasSubstr("is not a communicator handle"));
}

}  // namespace
}  // namespace normuon
