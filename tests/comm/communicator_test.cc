// The communicator layer below the C API: the single-rank communicator and the adapter over a
// caller's normuon_comm_ops_t (statuses, messages, sticky failure, abort, ownership of ctx).
// The handle registry and the status conversion are tested with the C edge and in tests/base.
#include "comm/communicator.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace normuon {
namespace {

using ::testing::HasSubstr;

// ---- Single rank ----

TEST(SingleRankTest, IsRankZeroOfAWorldOfOneOnHostMemory) {
  std::shared_ptr<Communicator> comm = MakeSingleRankCommunicator();
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->world_size(), 1);
  EXPECT_FALSE(comm->UsesDeviceMemory());
  EXPECT_TRUE(comm->AsyncError().ok());
}

TEST(SingleRankTest, ExchangeCopiesSelfTransfersInListOrder) {
  std::shared_ptr<Communicator> comm = MakeSingleRankCommunicator();
  const char a[] = "abc", b[] = "defgh";
  char x[3] = {}, y[5] = {};
  const P2p sends[] = {{0, const_cast<char*>(a), 3}, {0, nullptr, 0}, {0, const_cast<char*>(b), 5}};
  const P2p recvs[] = {{0, x, 3}, {0, nullptr, 0}, {0, y, 5}};
  ASSERT_TRUE(comm->Exchange(sends, recvs, nullptr).ok());
  EXPECT_EQ(std::string(x, 3), "abc");
  EXPECT_EQ(std::string(y, 5), "defgh");
}

TEST(SingleRankTest, ExchangeRejectsAPeerOtherThanItself) {
  std::shared_ptr<Communicator> comm = MakeSingleRankCommunicator();
  char x = 0;
  const P2p sends[] = {{1, &x, 1}};
  absl::Status s = comm->Exchange(sends, {}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("sends[0].peer is 1, must be in [0, 1)"));
}

TEST(SingleRankTest, ExchangeSizeMismatchCopiesNothing) {
  std::shared_ptr<Communicator> comm = MakeSingleRankCommunicator();
  char a[4] = {1, 2, 3, 4}, x[4] = {}, y[2] = {};
  const P2p sends[] = {{0, a, 4}, {0, a, 4}};
  const P2p recvs[] = {{0, x, 4}, {0, y, 2}};
  absl::Status s = comm->Exchange(sends, recvs, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("rank 0 sends 4 bytes to rank 0 but rank 0 expects 2 bytes"));
  EXPECT_EQ(x[0], 0);
}

TEST(SingleRankTest, AllReduceAndAllGatherCopyInToOut) {
  std::shared_ptr<Communicator> comm = MakeSingleRankCommunicator();
  float in[3] = {1.5f, -2.0f, 3.25f}, out[3] = {};
  ASSERT_TRUE(comm->AllReduceSum(in, out, 3, nullptr).ok());
  EXPECT_EQ(std::memcmp(in, out, sizeof(in)), 0);
  ASSERT_TRUE(comm->AllReduceSum(in, in, 3, nullptr).ok());
  char g[2] = {};
  ASSERT_TRUE(comm->AllGather("hi", g, 2, nullptr).ok());
  EXPECT_EQ(std::string(g, 2), "hi");
}

TEST(SingleRankTest, AbortRefusesLaterCollectives) {
  std::shared_ptr<Communicator> comm = MakeSingleRankCommunicator();
  ASSERT_TRUE(comm->Abort().ok());
  absl::Status s = comm->Exchange({}, {}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("collective #0 (exchange) refused"));
}

// ---- The adapter over normuon_comm_ops_t ----

// A fake C backend: records its calls and returns a scripted status and message.
struct FakeBackend {
  normuon_status_t result = NORMUON_SUCCESS;
  std::string message;
  int exchanges = 0, reduces = 0, gathers = 0, aborts = 0, destroys = 0;
  const normuon_p2p_t* last_sends = nullptr;
  int32_t last_n_sends = -1, last_n_recvs = -1;
  uint64_t last_count = 0;
  void* last_stream = nullptr;

  static FakeBackend* Of(void* ctx) { return static_cast<FakeBackend*>(ctx); }
  static normuon_status_t Exchange(void* ctx, const normuon_p2p_t* sends, int32_t n_sends,
                                   const normuon_p2p_t*, int32_t n_recvs, void* stream) {
    FakeBackend* f = Of(ctx);
    ++f->exchanges;
    f->last_sends = sends;
    f->last_n_sends = n_sends;
    f->last_n_recvs = n_recvs;
    f->last_stream = stream;
    return f->result;
  }
  static normuon_status_t AllReduce(void* ctx, const float*, float*, uint64_t count, void*) {
    ++Of(ctx)->reduces;
    Of(ctx)->last_count = count;
    return Of(ctx)->result;
  }
  static normuon_status_t AllGather(void* ctx, const void*, void*, uint64_t bytes, void*) {
    ++Of(ctx)->gathers;
    Of(ctx)->last_count = bytes;
    return Of(ctx)->result;
  }
  static normuon_status_t Abort(void* ctx) {
    ++Of(ctx)->aborts;
    return NORMUON_SUCCESS;
  }
  static void Destroy(void* ctx) { ++Of(ctx)->destroys; }
  static const char* LastError(void* ctx) { return Of(ctx)->message.c_str(); }

  normuon_comm_ops_t Ops(int32_t rank, int32_t world) {
    normuon_comm_ops_t ops;
    normuon_comm_ops_init(&ops);
    ops.ctx = this;
    ops.rank = rank;
    ops.world_size = world;
    ops.exchange = &Exchange;
    ops.all_reduce_sum_f32 = &AllReduce;
    ops.all_gather = &AllGather;
    ops.abort = &Abort;
    ops.destroy = &Destroy;
    ops.last_error = &LastError;
    return ops;
  }
};

std::shared_ptr<Communicator> MakeAdapter(FakeBackend* fake, int32_t rank = 1,
                                          int32_t world = 4) {
  normuon_comm_ops_t ops = fake->Ops(rank, world);
  absl::StatusOr<std::shared_ptr<Communicator>> comm = MakeCustomOpsCommunicator(ops);
  EXPECT_TRUE(comm.ok()) << comm.status();
  return comm.ok() ? *comm : nullptr;
}

TEST(CustomOpsTest, PassesListsCountsAndStreamThrough) {
  FakeBackend fake;
  std::shared_ptr<Communicator> comm = MakeAdapter(&fake);
  EXPECT_EQ(comm->rank(), 1);
  EXPECT_EQ(comm->world_size(), 4);
  char buf[8];
  const P2p sends[] = {{0, buf, 8}, {2, buf, 0}};
  const P2p recvs[] = {{3, buf, 8}};
  int stream_token = 0;
  ASSERT_TRUE(comm->Exchange(sends, recvs, &stream_token).ok());
  EXPECT_EQ(fake.last_sends, sends);  // the span itself, no copy
  EXPECT_EQ(fake.last_n_sends, 2);
  EXPECT_EQ(fake.last_n_recvs, 1);
  EXPECT_EQ(fake.last_stream, &stream_token);
  float f[5] = {};
  ASSERT_TRUE(comm->AllReduceSum(f, f, 5, nullptr).ok());
  EXPECT_EQ(fake.last_count, 5u);
  ASSERT_TRUE(comm->AllGather(f, f, 12, nullptr).ok());
  EXPECT_EQ(fake.last_count, 12u);
}

TEST(CustomOpsTest, TimeoutBecomesDeadlineExceededWithTheBackendsMessage) {
  FakeBackend fake;
  std::shared_ptr<Communicator> comm = MakeAdapter(&fake);
  fake.result = NORMUON_ERROR_TIMEOUT;
  fake.message = "peer 3 silent for 600 s";
  absl::Status s = comm->Exchange({}, {}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_EQ(s.message(),
            "custom communicator rank 1 of 4, collective #0 (exchange) returned "
            "NORMUON_ERROR_TIMEOUT: peer 3 silent for 600 s");
}

TEST(CustomOpsTest, CommErrorBecomesAborted) {
  FakeBackend fake;
  std::shared_ptr<Communicator> comm = MakeAdapter(&fake);
  fake.result = NORMUON_ERROR_COMM;
  fake.message = "connection reset by rank 2";
  float x = 0;
  absl::Status s = comm->AllReduceSum(&x, &x, 1, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("(all_reduce_sum) returned NORMUON_ERROR_COMM: connection reset by "
                        "rank 2"));
}

TEST(CustomOpsTest, OtherStatusesMapToTheirAbslCodes) {
  const std::pair<normuon_status_t, absl::StatusCode> cases[] = {
      {NORMUON_ERROR_INVALID_ARGUMENT, absl::StatusCode::kInvalidArgument},
      {NORMUON_ERROR_OUT_OF_MEMORY, absl::StatusCode::kResourceExhausted},
      {NORMUON_ERROR_CUDA, absl::StatusCode::kUnknown},
      {NORMUON_ERROR_INTERNAL, absl::StatusCode::kInternal},
      {static_cast<normuon_status_t>(99), absl::StatusCode::kInternal},
  };
  for (const auto& [c_status, code] : cases) {
    FakeBackend fake;
    std::shared_ptr<Communicator> comm = MakeAdapter(&fake);
    fake.result = c_status;
    absl::Status s = comm->AllGather(nullptr, nullptr, 0, nullptr);
    EXPECT_EQ(s.code(), code) << s;
  }
}

TEST(CustomOpsTest, MissingLastErrorStillGivesAMessage) {
  FakeBackend fake;
  normuon_comm_ops_t ops = fake.Ops(0, 2);
  ops.last_error = nullptr;
  absl::StatusOr<std::shared_ptr<Communicator>> comm = MakeCustomOpsCommunicator(ops);
  ASSERT_TRUE(comm.ok());
  fake.result = NORMUON_ERROR_COMM;
  absl::Status s = (*comm)->Exchange({}, {}, nullptr);
  EXPECT_THAT(std::string(s.message()), HasSubstr("ops.last_error is not set"));
}

// A transport's error (other than a timeout) does not end the communicator: the transport
// decides whether it can go on (normuon/comm.h, "After a failure"), so a rank whose call failed
// one-sidedly still takes part in the rest of the step.
TEST(CustomOpsTest, AFailedCollectiveLeavesTheNextOneToTheBackend) {
  FakeBackend fake;
  std::shared_ptr<Communicator> comm = MakeAdapter(&fake);
  fake.result = NORMUON_ERROR_COMM;
  fake.message = "link down";
  const absl::Status first = comm->Exchange({}, {}, nullptr);
  EXPECT_EQ(first.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(first.message()), HasSubstr("link down"));
  fake.result = NORMUON_SUCCESS;
  EXPECT_TRUE(comm->Exchange({}, {}, nullptr).ok());
  EXPECT_EQ(fake.exchanges, 2);
  EXPECT_TRUE(comm->AsyncError().ok());
}

// A timeout does: the adapter cannot know whether the peers are still inside that collective.
TEST(CustomOpsTest, ATimeoutRefusesLaterCollectivesWithoutCallingTheBackend) {
  FakeBackend fake;
  std::shared_ptr<Communicator> comm = MakeAdapter(&fake);
  fake.result = NORMUON_ERROR_TIMEOUT;
  fake.message = "peer 2 did not arrive";
  EXPECT_EQ(comm->Exchange({}, {}, nullptr).code(), absl::StatusCode::kDeadlineExceeded);
  fake.result = NORMUON_SUCCESS;
  absl::Status s = comm->Exchange({}, {}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("collective #1 (exchange) refused"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("peer 2 did not arrive"));
  EXPECT_EQ(fake.exchanges, 1);
  EXPECT_EQ(comm->AsyncError().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(CustomOpsTest, AbortCallsTheBackendAndRefusesLaterCollectives) {
  FakeBackend fake;
  std::shared_ptr<Communicator> comm = MakeAdapter(&fake);
  ASSERT_TRUE(comm->Abort().ok());
  EXPECT_EQ(fake.aborts, 1);
  EXPECT_EQ(comm->AllGather(nullptr, nullptr, 0, nullptr).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(fake.gathers, 0);
}

TEST(CustomOpsTest, DestroyRunsOnceWhenTheLastUserLetsGo) {
  FakeBackend fake;
  std::shared_ptr<Communicator> comm = MakeAdapter(&fake);
  std::shared_ptr<Communicator> runtime_copy = comm;
  comm.reset();
  EXPECT_EQ(fake.destroys, 0);
  runtime_copy.reset();
  EXPECT_EQ(fake.destroys, 1);
}

TEST(CustomOpsTest, InvalidFieldsAreNamedAndCtxIsNotTakenOver) {
  FakeBackend fake;
  struct Case {
    void (*breaks)(normuon_comm_ops_t*);
    const char* names;
  };
  const Case cases[] = {
      {[](normuon_comm_ops_t* o) { o->world_size = 0; }, "world_size is 0"},
      {[](normuon_comm_ops_t* o) { o->rank = 4; }, "rank is 4, must be in [0, world_size = 4)"},
      {[](normuon_comm_ops_t* o) { o->rank = -1; }, "rank is -1"},
      {[](normuon_comm_ops_t* o) { o->exchange = nullptr; }, "exchange is NULL"},
      {[](normuon_comm_ops_t* o) { o->all_reduce_sum_f32 = nullptr; },
       "all_reduce_sum_f32 is NULL"},
      {[](normuon_comm_ops_t* o) { o->all_gather = nullptr; }, "all_gather is NULL"},
  };
  for (const Case& c : cases) {
    normuon_comm_ops_t ops = fake.Ops(1, 4);
    c.breaks(&ops);
    absl::StatusOr<std::shared_ptr<Communicator>> comm = MakeCustomOpsCommunicator(ops);
    EXPECT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument) << c.names;
    EXPECT_THAT(std::string(comm.status().message()), HasSubstr(c.names));
  }
  EXPECT_EQ(fake.destroys, 0);
}

TEST(CustomOpsTest, OptionalFunctionsMayBeNull) {
  FakeBackend fake;
  normuon_comm_ops_t ops = fake.Ops(0, 1);
  ops.abort = nullptr;
  ops.destroy = nullptr;
  ops.last_error = nullptr;
  absl::StatusOr<std::shared_ptr<Communicator>> comm = MakeCustomOpsCommunicator(ops);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_TRUE((*comm)->Abort().ok());
}

TEST(CustomOpsTest, ReleasedContextIsNotDestroyed) {
  FakeBackend fake;
  std::shared_ptr<Communicator> comm = MakeAdapter(&fake);
  ReleaseCustomOpsContext(*comm);
  comm.reset();
  EXPECT_EQ(fake.destroys, 0);
  // Other communicators: no effect, no crash.
  std::shared_ptr<Communicator> single = MakeSingleRankCommunicator();
  ReleaseCustomOpsContext(*single);
}

}  // namespace
}  // namespace normuon
