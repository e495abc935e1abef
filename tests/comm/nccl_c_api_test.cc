// The NCCL functions of normuon/comm.h against the stand-in NCCL: unique ids, creating every
// rank of an owned communicator, wrapping a caller's, the handle life cycle, and where errors
// are reported. In the CPU-only build the functions must say UNSUPPORTED instead.
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "capi/comm_handles.h"
#include "comm/communicator.h"
#include "comm/nccl_communicator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "normuon/comm.h"
#include "tests/comm/fake_nccl_util.h"

namespace normuon {
namespace {

using ::testing::HasSubstr;
using testing_util::kFakeDestroyed;
using testing_util::kFakeLive;

#if defined(NORMUON_TEST_NO_CUDA)

TEST(NcclCApiTest, EveryNcclFunctionIsUnsupportedWithoutCuda) {
  unsigned char id[NORMUON_NCCL_UNIQUE_ID_BYTES] = {};
  normuon_comm_t comm = 0;
  EXPECT_EQ(normuon_nccl_get_unique_id(id), NORMUON_ERROR_UNSUPPORTED);
  EXPECT_THAT(normuon_comm_last_error(0),
              HasSubstr("normuon_nccl_get_unique_id: this build of normuon has no CUDA "
                        "(--define=cuda=off), so it has no NCCL communicator"));
  EXPECT_EQ(normuon_comm_create_nccl(id, 0, 1, -1, 1.0, &comm), NORMUON_ERROR_UNSUPPORTED);
  EXPECT_THAT(normuon_comm_last_error(0), HasSubstr("normuon_comm_create_nccl"));
  EXPECT_EQ(normuon_comm_wrap_nccl(id, 1.0, &comm), NORMUON_ERROR_UNSUPPORTED);
  EXPECT_THAT(normuon_comm_last_error(0), HasSubstr("normuon_comm_wrap_nccl"));
  EXPECT_EQ(comm, 0u);
}

#else

class NcclCApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const testing_util::FakeNccl& f = testing_util::LoadFakeNccl();
    ASSERT_NE(f.handle, nullptr);
    fake_ = &f;
    fake_->reset();
  }
  void TearDown() override {
    if (fake_ == nullptr) return;
    EXPECT_EQ(fake_->Counters().misuses, 0) << "last misuse: " << fake_->last_misuse();
  }

  // The ncclComm_t behind a live handle.
  static void* RawComm(normuon_comm_t handle) {
    absl::StatusOr<std::shared_ptr<Communicator>> comm = LookupComm(handle);
    if (!comm.ok()) return nullptr;
    auto* nccl_comm = dynamic_cast<NcclCommunicator*>(comm->get());
    return nccl_comm != nullptr ? nccl_comm->nccl_comm_for_testing() : nullptr;
  }

  const testing_util::FakeNccl* fake_ = nullptr;
};

TEST_F(NcclCApiTest, UniqueIdIsWrittenToTheCallersBytes) {
  unsigned char id[NORMUON_NCCL_UNIQUE_ID_BYTES];
  std::memset(id, 0xff, sizeof(id));
  ASSERT_EQ(normuon_nccl_get_unique_id(id), NORMUON_SUCCESS) << normuon_comm_last_error(0);
  EXPECT_EQ(std::memcmp(id, "FAKENCCL", 8), 0);
  EXPECT_EQ(normuon_nccl_get_unique_id(nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(normuon_comm_last_error(0), HasSubstr("id_out is NULL"));
}

TEST_F(NcclCApiTest, EveryRankCreatesItsHandleAndTheRuntimeDrivesIt) {
  unsigned char id[NORMUON_NCCL_UNIQUE_ID_BYTES];
  ASSERT_EQ(normuon_nccl_get_unique_id(id), NORMUON_SUCCESS);
  constexpr int kWorld = 3;
  std::vector<normuon_comm_t> handles(kWorld, 0);
  std::vector<normuon_status_t> created(kWorld, NORMUON_ERROR_INTERNAL);
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) {
    threads.emplace_back([&, r] {
      created[r] = normuon_comm_create_nccl(id, r, kWorld, -1, 10.0, &handles[r]);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < kWorld; ++r) ASSERT_EQ(created[r], NORMUON_SUCCESS) << "rank " << r;

  std::vector<void*> raw;
  for (int r = 0; r < kWorld; ++r) {
    int32_t rank = -1, world = -1;
    ASSERT_EQ(normuon_comm_rank(handles[r], &rank), NORMUON_SUCCESS);
    ASSERT_EQ(normuon_comm_world_size(handles[r], &world), NORMUON_SUCCESS);
    EXPECT_EQ(rank, r);
    EXPECT_EQ(world, kWorld);
    raw.push_back(RawComm(handles[r]));
    ASSERT_NE(raw.back(), nullptr);
  }
  // What the runtime does with a handle: look the communicator up and run collectives.
  std::vector<float> sums(kWorld);
  threads.clear();
  std::vector<absl::Status> ran(kWorld);
  for (int r = 0; r < kWorld; ++r) {
    threads.emplace_back([&, r] {
      absl::StatusOr<std::shared_ptr<Communicator>> comm = LookupComm(handles[r]);
      if (!comm.ok()) {
        ran[r] = comm.status();
        return;
      }
      float x = static_cast<float>(r + 1);
      ran[r] = (*comm)->AllReduceSum(&x, &sums[r], 1, nullptr);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < kWorld; ++r) {
    ASSERT_TRUE(ran[r].ok()) << ran[r];
    EXPECT_EQ(sums[r], 6.0f);
    normuon_status_t e = NORMUON_ERROR_INTERNAL;
    ASSERT_EQ(normuon_comm_get_async_error(handles[r], &e), NORMUON_SUCCESS);
    EXPECT_EQ(e, NORMUON_SUCCESS);
  }
  EXPECT_EQ(normuon_comm_inject_fault(handles[0], NORMUON_FAULT_ERROR, 1),
            NORMUON_ERROR_UNSUPPORTED);
  EXPECT_THAT(normuon_comm_last_error(handles[0]), HasSubstr("this is NCCL rank 0 of 3 (owned"));
  for (int r = 0; r < kWorld; ++r) ASSERT_EQ(normuon_comm_destroy(handles[r]), NORMUON_SUCCESS);
  for (void* c : raw) EXPECT_EQ(fake_->comm_state(c), kFakeDestroyed);
  EXPECT_EQ(normuon_comm_destroy(handles[0]), NORMUON_ERROR_INVALID_HANDLE);
}

TEST_F(NcclCApiTest, CreationErrorsAreReportedOnTheThread) {
  unsigned char id[NORMUON_NCCL_UNIQUE_ID_BYTES];
  ASSERT_EQ(normuon_nccl_get_unique_id(id), NORMUON_SUCCESS);
  normuon_comm_t comm = 0;
  EXPECT_EQ(normuon_comm_create_nccl(nullptr, 0, 1, -1, 1.0, &comm),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(normuon_comm_last_error(0), HasSubstr("unique_id is NULL"));
  EXPECT_EQ(normuon_comm_create_nccl(id, 0, 1, -1, 1.0, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(normuon_comm_last_error(0), HasSubstr("out is NULL"));
  EXPECT_EQ(normuon_comm_create_nccl(id, 0, 0, -1, 1.0, &comm), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(normuon_comm_last_error(0), HasSubstr("world_size is 0"));
  // Rank 1 never comes.
  EXPECT_EQ(normuon_comm_create_nccl(id, 0, 2, -1, 0.2, &comm), NORMUON_ERROR_TIMEOUT);
  EXPECT_THAT(normuon_comm_last_error(0), HasSubstr("communicator not initialized after"));
  EXPECT_EQ(comm, 0u);
}

TEST_F(NcclCApiTest, AWrappedCommunicatorStaysTheCallers) {
  nccl::UniqueId id;
  ASSERT_EQ(fake_->get_unique_id(&id), nccl::kSuccess);
  nccl::Config config = nccl::DefaultConfig();
  config.blocking = 0;
  nccl::CommHandle lent = nullptr;
  ASSERT_EQ(fake_->comm_init_rank_config(&lent, 1, id, 0, &config), nccl::kInProgress);
  normuon_comm_t handle = 0;
  ASSERT_EQ(normuon_comm_wrap_nccl(lent, 10.0, &handle), NORMUON_SUCCESS)
      << normuon_comm_last_error(0);
  int32_t world = 0;
  ASSERT_EQ(normuon_comm_world_size(handle, &world), NORMUON_SUCCESS);
  EXPECT_EQ(world, 1);
  EXPECT_EQ(normuon_comm_abort(handle), NORMUON_SUCCESS);
  normuon_status_t e = NORMUON_SUCCESS;
  ASSERT_EQ(normuon_comm_get_async_error(handle, &e), NORMUON_SUCCESS);
  EXPECT_EQ(e, NORMUON_ERROR_COMM);
  EXPECT_THAT(normuon_comm_last_error(handle), HasSubstr("its owner must abort it"));
  ASSERT_EQ(normuon_comm_destroy(handle), NORMUON_SUCCESS);
  EXPECT_EQ(fake_->comm_state(lent), kFakeLive);
  EXPECT_EQ(fake_->comm_destroy(lent), nccl::kSuccess);
  EXPECT_EQ(normuon_comm_wrap_nccl(nullptr, 1.0, &handle), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(normuon_comm_last_error(0), HasSubstr("nccl_comm is NULL"));
}

#endif  // NORMUON_TEST_NO_CUDA

}  // namespace
}  // namespace normuon
