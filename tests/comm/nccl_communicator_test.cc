// The NCCL communicator's logic against the stand-in NCCL (tests/comm/fake_nccl), ranks as
// threads on host memory: exchange with uneven counts, all-reduce, all-gather, one NCCL group
// per exchange, non-blocking polling, async errors, hangs and timeouts, abort from another
// thread, ownership (owned communicators destroyed, borrowed ones never). Every test also checks
// that normuon broke none of NCCL's rules (the stand-in counts misuses).
//
// What these tests cannot show (only a multi-GPU machine can): the real NCCL transport, device
// buffers, ordering on CUDA streams, and which calls of a real non-blocking NCCL return
// ncclInProgress and for how long.
#include "comm/nccl_communicator.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <future>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "comm/device_binding.h"
#include "comm/nccl_library.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/comm/fake_nccl_util.h"
#include "tests/comm/test_util.h"

namespace normuon {
namespace {

using ::testing::AllOf;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using testing_util::FakeNccl;
using testing_util::kFakeAborted;
using testing_util::kFakeDestroyed;
using testing_util::kFakeLive;
using testing_util::SecondsSince;

using Comms = std::vector<std::shared_ptr<NcclCommunicator>>;

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const FakeNccl& f = testing_util::LoadFakeNccl();
    ASSERT_NE(f.handle, nullptr);
    ASSERT_NE(f.reset, nullptr);
    fake_ = &f;
    fake_->reset();
    absl::StatusOr<std::shared_ptr<const NcclLibrary>> lib = SharedNcclLibrary();
    ASSERT_TRUE(lib.ok()) << lib.status();
    lib_ = *lib;
  }

  void TearDown() override {
    if (fake_ == nullptr) return;
    EXPECT_EQ(fake_->Counters().misuses, 0) << "last misuse: " << fake_->last_misuse();
  }

  // world_size owned communicators of one new NCCL communicator, each created on its own thread
  // (creation is collective). Fails the test if any creation fails.
  Comms MakeRanks(int world_size, double timeout_seconds) {
    absl::StatusOr<nccl::UniqueId> id = NcclGetUniqueId(*lib_);
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) return {};
    std::vector<absl::StatusOr<std::shared_ptr<NcclCommunicator>>> made(
        world_size, absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    for (int r = 0; r < world_size; ++r) {
      threads.emplace_back([&, r] {
        made[r] = NcclCommunicator::Create(lib_, *id, r, world_size, kCurrentDevice,
                                           timeout_seconds);
      });
    }
    for (std::thread& t : threads) t.join();
    Comms comms;
    for (int r = 0; r < world_size; ++r) {
      EXPECT_TRUE(made[r].ok()) << "rank " << r << ": " << made[r].status();
      if (!made[r].ok()) return {};
      comms.push_back(*made[r]);
    }
    return comms;
  }

  // Runs fn(rank, communicator) on one thread per rank; returns each rank's status.
  template <typename Fn>
  std::vector<absl::Status> RunRanks(const Comms& comms, Fn fn) {
    std::vector<absl::Status> results(comms.size());
    std::vector<std::thread> threads;
    for (size_t r = 0; r < comms.size(); ++r) {
      threads.emplace_back([&, r] { results[r] = fn(static_cast<int>(r), *comms[r]); });
    }
    for (std::thread& t : threads) t.join();
    return results;
  }

  // A borrowed-to-be communicator of one rank made directly with the stand-in's NCCL functions,
  // as a trainer would make it. blocking: 1 (NCCL's default) or 0.
  nccl::CommHandle MakeLenderComm(int blocking) {
    nccl::UniqueId id;
    EXPECT_EQ(fake_->get_unique_id(&id), nccl::kSuccess);
    nccl::Config config = nccl::DefaultConfig();
    config.blocking = blocking;
    nccl::CommHandle comm = nullptr;
    const nccl::Result r = fake_->comm_init_rank_config(&comm, 1, id, 0, &config);
    EXPECT_TRUE(r == nccl::kSuccess || r == nccl::kInProgress) << NcclResultName(r);
    return comm;
  }

  int State(const std::shared_ptr<NcclCommunicator>& comm) const {
    return fake_->comm_state(comm->nccl_comm_for_testing());
  }

  const FakeNccl* fake_ = nullptr;
  std::shared_ptr<const NcclLibrary> lib_;
};

// The byte every (sender, receiver, transfer, offset) carries, so a misrouted byte shows.
uint8_t Pattern(int from, int to, int k, size_t i) {
  return static_cast<uint8_t>(from * 61 + to * 17 + k * 7 + i * 3 + 1);
}

// Bytes of transfer k from `from` to `to`: uneven, some zero.
size_t Bytes(int from, int to, int k) {
  return static_cast<size_t>(((from * 5 + to * 3 + k * 7) % 6) * 11);
}

TEST_F(NcclCommunicatorTest, TheLibraryIsTheOneNamedByTheEnvironment) {
  EXPECT_THAT(lib_->path, EndsWith("libnccl_fake.so"));
  EXPECT_THAT(lib_->origin, HasSubstr("$NORMUON_NCCL_LIBRARY"));
  EXPECT_EQ(lib_->version_code, nccl::VersionCode(2, 28, 9));
  EXPECT_THAT(lib_->Describe(), HasSubstr("NCCL 2.28.9 at "));
}

class NcclExchangeTest : public NcclCommunicatorTest,
                         public ::testing::WithParamInterface<int> {};

TEST_P(NcclExchangeTest, UnevenTransfersArriveWhereListed) {
  const int world = GetParam();
  Comms comms = MakeRanks(world, 10.0);
  ASSERT_EQ(static_cast<int>(comms.size()), world);
  // Two transfers from every rank to every rank (itself included), sizes uneven and some zero;
  // the receive lists are in a different order from the send lists.
  std::vector<absl::Status> results = RunRanks(comms, [&](int r, Communicator& c) {
    std::vector<std::vector<uint8_t>> out, in;
    std::vector<P2p> sends, recvs;
    for (int k = 0; k < 2; ++k) {
      for (int d = 0; d < world; ++d) {
        out.emplace_back(Bytes(r, d, k));
        for (size_t i = 0; i < out.back().size(); ++i) out.back()[i] = Pattern(r, d, k, i);
      }
    }
    for (int s = world - 1; s >= 0; --s) {
      for (int k = 0; k < 2; ++k) in.emplace_back(Bytes(s, r, k), 0);
    }
    size_t n = 0;
    for (int k = 0; k < 2; ++k) {
      for (int d = 0; d < world; ++d, ++n) {
        sends.push_back(P2p{d, out[n].data(), out[n].size()});
      }
    }
    n = 0;
    for (int s = world - 1; s >= 0; --s) {
      for (int k = 0; k < 2; ++k, ++n) recvs.push_back(P2p{s, in[n].data(), in[n].size()});
    }
    absl::Status st = c.Exchange(sends, recvs, nullptr);
    if (!st.ok()) return st;
    n = 0;
    for (int s = world - 1; s >= 0; --s) {
      for (int k = 0; k < 2; ++k, ++n) {
        for (size_t i = 0; i < in[n].size(); ++i) {
          if (in[n][i] != Pattern(s, r, k, i)) {
            return absl::InternalError("rank " + std::to_string(r) + ": byte " +
                                       std::to_string(i) + " of transfer " + std::to_string(k) +
                                       " from rank " + std::to_string(s) + " is wrong");
          }
        }
      }
    }
    return absl::OkStatus();
  });
  for (int r = 0; r < world; ++r) EXPECT_TRUE(results[r].ok()) << results[r];
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, NcclExchangeTest, ::testing::Values(1, 2, 4));

TEST_F(NcclCommunicatorTest, ExchangeIsOneNcclGroupOfItsNonEmptyTransfers) {
  Comms comms = MakeRanks(2, 10.0);
  ASSERT_EQ(comms.size(), 2u);
  long groups_before = -1;
  ASSERT_EQ(fake_->group_stats(comms[0]->nccl_comm_for_testing(), &groups_before, nullptr), 0);
  std::vector<absl::Status> results = RunRanks(comms, [&](int r, Communicator& c) {
    std::vector<uint8_t> a(8, 1), b(0), d(5, 2), x(8), y(0), z(5);
    const int peer = 1 - r;
    const std::vector<P2p> sends = {{peer, a.data(), 8}, {peer, b.data(), 0}, {r, d.data(), 5}};
    const std::vector<P2p> recvs = {{peer, x.data(), 8}, {peer, y.data(), 0}, {r, z.data(), 5}};
    return c.Exchange(sends, recvs, nullptr);
  });
  ASSERT_TRUE(results[0].ok()) << results[0];
  ASSERT_TRUE(results[1].ok()) << results[1];
  for (const auto& comm : comms) {
    long groups = -1, last_ops = -1;
    ASSERT_EQ(fake_->group_stats(comm->nccl_comm_for_testing(), &groups, &last_ops), 0);
    EXPECT_EQ(groups, groups_before + 1) << "one group for the whole exchange";
    EXPECT_EQ(last_ops, 4) << "two sends and two receives; zero-byte transfers are skipped";
  }
}

TEST_F(NcclCommunicatorTest, AllReduceSumGivesEveryRankTheSameSum) {
  constexpr int kWorld = 4;
  constexpr size_t kCount = 37;
  Comms comms = MakeRanks(kWorld, 10.0);
  ASSERT_EQ(comms.size(), static_cast<size_t>(kWorld));
  std::vector<std::vector<float>> out(kWorld, std::vector<float>(kCount));
  std::vector<std::vector<float>> in_place(kWorld, std::vector<float>(kCount));
  std::vector<absl::Status> results = RunRanks(comms, [&](int r, Communicator& c) {
    std::vector<float> in(kCount);
    for (size_t i = 0; i < kCount; ++i) in[i] = 0.25f * r + 0.5f * i;
    in_place[r] = in;
    absl::Status s = c.AllReduceSum(in.data(), out[r].data(), kCount, nullptr);
    if (!s.ok()) return s;
    return c.AllReduceSum(in_place[r].data(), in_place[r].data(), kCount, nullptr);
  });
  for (int r = 0; r < kWorld; ++r) ASSERT_TRUE(results[r].ok()) << results[r];
  for (size_t i = 0; i < kCount; ++i) {
    const float expected = 0.25f * (0 + 1 + 2 + 3) + 4 * 0.5f * i;
    for (int r = 0; r < kWorld; ++r) {
      EXPECT_EQ(out[r][i], expected) << "rank " << r << " element " << i;
      EXPECT_EQ(in_place[r][i], expected) << "in place, rank " << r << " element " << i;
    }
  }
}

TEST_F(NcclCommunicatorTest, AllGatherPlacesEachRankInItsSlot) {
  constexpr int kWorld = 3;
  constexpr size_t kBytes = 13;
  Comms comms = MakeRanks(kWorld, 10.0);
  ASSERT_EQ(comms.size(), static_cast<size_t>(kWorld));
  std::vector<std::vector<uint8_t>> out(kWorld, std::vector<uint8_t>(kWorld * kBytes));
  std::vector<std::vector<uint8_t>> in_place(kWorld, std::vector<uint8_t>(kWorld * kBytes));
  std::vector<absl::Status> results = RunRanks(comms, [&](int r, Communicator& c) {
    std::vector<uint8_t> in(kBytes);
    for (size_t i = 0; i < kBytes; ++i) in[i] = Pattern(r, 0, 0, i);
    std::memcpy(in_place[r].data() + r * kBytes, in.data(), kBytes);
    absl::Status s = c.AllGather(in.data(), out[r].data(), kBytes, nullptr);
    if (!s.ok()) return s;
    return c.AllGather(in_place[r].data() + r * kBytes, in_place[r].data(), kBytes, nullptr);
  });
  for (int r = 0; r < kWorld; ++r) ASSERT_TRUE(results[r].ok()) << results[r];
  for (int r = 0; r < kWorld; ++r) {
    for (int q = 0; q < kWorld; ++q) {
      for (size_t i = 0; i < kBytes; ++i) {
        EXPECT_EQ(out[r][q * kBytes + i], Pattern(q, 0, 0, i));
        EXPECT_EQ(in_place[r][q * kBytes + i], Pattern(q, 0, 0, i));
      }
    }
  }
}

TEST_F(NcclCommunicatorTest, EmptyCollectivesIssueNothing) {
  Comms comms = MakeRanks(1, 10.0);
  ASSERT_EQ(comms.size(), 1u);
  long before = -1, after = -1;
  ASSERT_EQ(fake_->group_stats(comms[0]->nccl_comm_for_testing(), &before, nullptr), 0);
  EXPECT_TRUE(comms[0]->AllReduceSum(nullptr, nullptr, 0, nullptr).ok());
  EXPECT_TRUE(comms[0]->AllGather(nullptr, nullptr, 0, nullptr).ok());
  ASSERT_EQ(fake_->group_stats(comms[0]->nccl_comm_for_testing(), &after, nullptr), 0);
  EXPECT_EQ(after, before);
}

TEST_F(NcclCommunicatorTest, AsyncErrorAbortsTheFailingRankAndStaysFailed) {
  Comms comms = MakeRanks(2, 10.0);
  ASSERT_EQ(comms.size(), 2u);
  ASSERT_EQ(fake_->inject(1, FAKE_NCCL_ASYNC_ERROR), 0);
  std::vector<absl::Status> results = RunRanks(comms, [&](int r, Communicator& c) {
    std::vector<uint8_t> a(16, 1), b(16);
    const std::vector<P2p> sends = {{1 - r, a.data(), 16}};
    const std::vector<P2p> recvs = {{1 - r, b.data(), 16}};
    return c.Exchange(sends, recvs, nullptr);
  });
  EXPECT_EQ(results[1].code(), absl::StatusCode::kAborted);
  EXPECT_THAT(results[1].message(),
              AllOf(HasSubstr("NCCL rank 1: collective #0 (exchange) failed: ncclRemoteError "
                              "(remote process exited or there was a network error)"),
                    HasSubstr("injected asynchronous error"), HasSubstr("communicator aborted"),
                    HasSubstr("the step's parameters must be restored from a checkpoint")));
  // The peer sees the failure too, as after a network error.
  EXPECT_EQ(results[0].code(), absl::StatusCode::kAborted);
  EXPECT_THAT(results[0].message(), HasSubstr("NCCL rank 0: collective #0 (exchange) failed"));
  // Owned communicators are aborted at their first failure.
  EXPECT_EQ(fake_->Counters().aborts, 2);
  EXPECT_EQ(comms[1]->nccl_comm_for_testing(), nullptr);
  // Sticky: the next collective is refused at once, naming the first failure.
  float x = 1;
  const absl::Status again = comms[1]->AllReduceSum(&x, &x, 1, nullptr);
  EXPECT_EQ(again.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(again.message(),
              AllOf(HasSubstr("NCCL rank 1: collective #1 (all_reduce_sum) refused: the "
                              "communicator failed earlier"),
                    HasSubstr("injected asynchronous error")));
  EXPECT_THAT(comms[1]->AsyncError().message(), HasSubstr("injected asynchronous error"));
}

TEST_F(NcclCommunicatorTest, HangTimesOutWithinTheTimeoutAndAborts) {
  constexpr double kTimeout = 0.3;
  Comms comms = MakeRanks(2, kTimeout);
  ASSERT_EQ(comms.size(), 2u);
  void* const comm1 = comms[1]->nccl_comm_for_testing();
  ASSERT_EQ(fake_->inject(1, FAKE_NCCL_HANG), 0);
  std::vector<double> seconds(2);
  std::vector<absl::Status> results = RunRanks(comms, [&](int r, Communicator& c) {
    std::vector<uint8_t> a(4, 1), b(4);
    const std::vector<P2p> sends = {{1 - r, a.data(), 4}};
    const std::vector<P2p> recvs = {{1 - r, b.data(), 4}};
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = c.Exchange(sends, recvs, nullptr);
    seconds[r] = SecondsSince(start);
    return s;
  });
  // Rank 1's group never finishes; rank 0's waits for rank 1's send. Both give up in time, and
  // the first to abort may end the other's wait with an error instead: never a hang.
  EXPECT_EQ(results[1].code(), absl::StatusCode::kDeadlineExceeded) << results[1];
  EXPECT_THAT(results[1].message(),
              AllOf(HasSubstr("NCCL rank 1: collective #0 (exchange) not issued after 0."),
                    HasSubstr(" s; communicator aborted \u2014 the step's parameters must be "
                              "restored from a checkpoint")));
  EXPECT_FALSE(results[0].ok());
  for (int r = 0; r < 2; ++r) {
    EXPECT_LT(seconds[r], kTimeout + 2.0) << "rank " << r;
  }
  EXPECT_GE(seconds[1], kTimeout);
  EXPECT_EQ(fake_->comm_state(comm1), kFakeAborted) << "ncclCommAbort was called";
  const absl::Status again = comms[1]->Exchange({}, {}, nullptr);
  EXPECT_EQ(again.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(again.message(), HasSubstr("refused"));
}

TEST_F(NcclCommunicatorTest, AFailingCallIsReportedWithNcclsText) {
  Comms comms = MakeRanks(1, 10.0);
  ASSERT_EQ(comms.size(), 1u);
  ASSERT_EQ(fake_->inject(0, FAKE_NCCL_CALL_ERROR), 0);
  float x = 2;
  const absl::Status s = comms[0]->AllReduceSum(&x, &x, 1, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("NCCL rank 0: collective #0 (all_reduce_sum): ncclAllReduce "
                              "returned ncclInternalError (internal error)"),
                    HasSubstr("last NCCL error: fake NCCL rank 0: injected call error"),
                    HasSubstr("communicator aborted")));
  EXPECT_EQ(fake_->Counters().aborts, 1);
}

TEST_F(NcclCommunicatorTest, ByteCountsThatDisagreeFailBothRanks) {
  Comms comms = MakeRanks(2, 10.0);
  ASSERT_EQ(comms.size(), 2u);
  std::vector<absl::Status> results = RunRanks(comms, [&](int r, Communicator& c) {
    std::vector<uint8_t> a(12, 1), b(12);
    // Rank 0 sends 8 bytes; rank 1 expects 12.
    const std::vector<P2p> sends = {{1 - r, a.data(), r == 0 ? 8u : 12u}};
    const std::vector<P2p> recvs = {{1 - r, b.data(), 12}};
    return c.Exchange(sends, recvs, nullptr);
  });
  EXPECT_EQ(results[0].code(), absl::StatusCode::kAborted);
  EXPECT_EQ(results[1].code(), absl::StatusCode::kAborted);
  EXPECT_THAT(results[1].message(), HasSubstr("rank 0 sent 8 bytes to rank 1, which receives 12"));
}

TEST_F(NcclCommunicatorTest, BadArgumentsAreRejectedBeforeAnythingIsIssued) {
  Comms comms = MakeRanks(1, 10.0);
  ASSERT_EQ(comms.size(), 1u);
  void* const comm = comms[0]->nccl_comm_for_testing();
  long before = -1, after = -1;
  ASSERT_EQ(fake_->group_stats(comm, &before, nullptr), 0);
  uint8_t byte = 0;
  const std::vector<P2p> sends = {{5, &byte, 1}};
  const absl::Status s = comms[0]->Exchange(sends, {}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("NCCL rank 0, collective #0 (exchange): sends[0].peer "
                                           "is 5, must be in [0, 1)"),
                                 HasSubstr("nothing was issued")));
  ASSERT_EQ(fake_->group_stats(comm, &after, nullptr), 0);
  EXPECT_EQ(after, before);
  // Still a failure of the communicator (its peers would wait for this rank): sticky.
  EXPECT_EQ(fake_->comm_state(comm), kFakeAborted);
  float x = 0;
  EXPECT_EQ(comms[0]->AllReduceSum(nullptr, &x, 1, nullptr).code(), absl::StatusCode::kAborted);
}

TEST_F(NcclCommunicatorTest, AbortFromAnotherThreadEndsTheCollectiveInFlight) {
  Comms comms = MakeRanks(1, 60.0);
  ASSERT_EQ(comms.size(), 1u);
  void* const comm = comms[0]->nccl_comm_for_testing();
  ASSERT_EQ(fake_->inject(0, FAKE_NCCL_HANG), 0);
  const auto start = std::chrono::steady_clock::now();
  std::future<absl::Status> in_flight = std::async(std::launch::async, [&] {
    uint8_t a = 1, b = 0;
    const std::vector<P2p> sends = {{0, &a, 1}};
    const std::vector<P2p> recvs = {{0, &b, 1}};
    return comms[0]->Exchange(sends, recvs, nullptr);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(comms[0]->Abort().ok());
  const absl::Status s = in_flight.get();
  EXPECT_LT(SecondsSince(start), 10.0);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("was abandoned"), HasSubstr("aborted by its caller")));
  EXPECT_EQ(fake_->comm_state(comm), kFakeAborted);
  EXPECT_TRUE(comms[0]->Abort().ok()) << "aborting twice is not an error";
  EXPECT_EQ(fake_->Counters().aborts, 1);
}

// Puts `comm` into NCCL's async error state the way a trainer's own work on it could: a
// collective issued on it directly, with an async error injected. Returns when NCCL reports it.
void FailBehindOurBack(const FakeNccl& fake, void* comm) {
  ASSERT_EQ(fake.inject(0, FAKE_NCCL_ASYNC_ERROR), 0);
  auto* handle = static_cast<nccl::CommHandle>(comm);
  float x = 1;
  ASSERT_EQ(fake.all_reduce(&x, &x, 1, nccl::kFloat32, nccl::kSum, handle, nullptr),
            nccl::kInProgress);
  nccl::Result state = nccl::kInProgress;
  const auto start = std::chrono::steady_clock::now();
  while (state == nccl::kInProgress && SecondsSince(start) < 10) {
    ASSERT_EQ(fake.comm_get_async_error(handle, &state), nccl::kSuccess);
    std::this_thread::yield();
  }
  ASSERT_EQ(state, nccl::kRemoteError);
}

TEST_F(NcclCommunicatorTest, AsyncErrorReportsNcclsStateAndAbortsAnOwnedCommunicator) {
  Comms comms = MakeRanks(1, 10.0);
  ASSERT_EQ(comms.size(), 1u);
  void* const raw = comms[0]->nccl_comm_for_testing();
  EXPECT_TRUE(comms[0]->AsyncError().ok());
  FailBehindOurBack(*fake_, raw);
  const absl::Status s = comms[0]->AsyncError();
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("NCCL rank 0: asynchronous error: ncclRemoteError"),
                                 HasSubstr("injected asynchronous error"),
                                 HasSubstr("communicator aborted")));
  EXPECT_EQ(fake_->comm_state(raw), kFakeAborted);
  float x = 1;
  EXPECT_THAT(comms[0]->AllReduceSum(&x, &x, 1, nullptr).message(), HasSubstr("refused"));
}

TEST_F(NcclCommunicatorTest, AsyncErrorOnABorrowedCommunicatorIsReportedNotActedOn) {
  nccl::CommHandle lent = MakeLenderComm(0);
  ASSERT_NE(lent, nullptr);
  absl::StatusOr<std::shared_ptr<NcclCommunicator>> comm = NcclCommunicator::Wrap(lib_, lent, 10.0);
  ASSERT_TRUE(comm.ok()) << comm.status();
  FailBehindOurBack(*fake_, lent);
  const absl::Status s = (*comm)->AsyncError();
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(s.message(), HasSubstr("the borrowed communicator was not aborted"));
  EXPECT_EQ(fake_->comm_state(lent), kFakeLive);
  comm->reset();
  EXPECT_EQ(fake_->comm_abort(lent), nccl::kSuccess);
}

TEST_F(NcclCommunicatorTest, CreationTimesOutWhenARankNeverJoins) {
  absl::StatusOr<nccl::UniqueId> id = NcclGetUniqueId(*lib_);
  ASSERT_TRUE(id.ok()) << id.status();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::shared_ptr<NcclCommunicator>> comm =
      NcclCommunicator::Create(lib_, *id, 0, 2, kCurrentDevice, 0.3);
  EXPECT_LT(SecondsSince(start), 2.5);
  ASSERT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(comm.status().message(),
              AllOf(HasSubstr("NCCL rank 0 of 2: communicator not initialized after 0."),
                    HasSubstr("world size 2"), HasSubstr("communicator aborted")));
  EXPECT_EQ(fake_->Counters().aborts, 1);
}

TEST_F(NcclCommunicatorTest, CreationFailuresCarryNcclsText) {
  absl::StatusOr<nccl::UniqueId> id = NcclGetUniqueId(*lib_);
  ASSERT_TRUE(id.ok());
  ASSERT_EQ(fake_->inject(0, FAKE_NCCL_ASYNC_ERROR), 0);
  absl::StatusOr<std::shared_ptr<NcclCommunicator>> comm =
      NcclCommunicator::Create(lib_, *id, 0, 1, kCurrentDevice, 5.0);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(comm.status().message(),
              AllOf(HasSubstr("NCCL rank 0 of 1: initialization failed: ncclRemoteError"),
                    HasSubstr("injected asynchronous error (FAKE_NCCL_ASYNC_ERROR) in "
                              "ncclCommInitRankConfig")));
  EXPECT_EQ(fake_->Counters().aborts, 1);
}

TEST_F(NcclCommunicatorTest, CreationRejectsBadArguments) {
  absl::StatusOr<nccl::UniqueId> id = NcclGetUniqueId(*lib_);
  ASSERT_TRUE(id.ok());
  auto create = [&](int rank, int world, int device, double timeout) {
    return NcclCommunicator::Create(lib_, *id, rank, world, device, timeout).status();
  };
  EXPECT_THAT(create(0, 0, -1, 1.0).message(), HasSubstr("world_size is 0, must be >= 1"));
  EXPECT_THAT(create(2, 2, -1, 1.0).message(), HasSubstr("rank is 2, must be in [0, "));
  EXPECT_THAT(create(0, 1, -1, 0.0).message(), HasSubstr("timeout_seconds is 0"));
  EXPECT_THAT(create(0, 1, -1, std::nan("")).message(), HasSubstr("must be finite"));
  EXPECT_THAT(create(0, 1, -2, 1.0).message(), HasSubstr("device is -2"));
  EXPECT_EQ(create(0, 1, -2, 1.0).code(), absl::StatusCode::kInvalidArgument);
#if defined(NORMUON_TEST_NO_CUDA)
  const absl::Status no_cuda = create(0, 1, 0, 1.0);
  EXPECT_EQ(no_cuda.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(no_cuda.message(), HasSubstr("this build has no CUDA"));
#endif
  EXPECT_EQ(fake_->Counters().inits, 0) << "nothing reached NCCL";
}

TEST_F(NcclCommunicatorTest, OwnedCommunicatorIsFinalizedAndDestroyed) {
  Comms comms = MakeRanks(2, 10.0);
  ASSERT_EQ(comms.size(), 2u);
  std::vector<void*> raw = {comms[0]->nccl_comm_for_testing(), comms[1]->nccl_comm_for_testing()};
  std::vector<absl::Status> results = RunRanks(comms, [&](int, Communicator& c) {
    float x = 1;
    return c.AllReduceSum(&x, &x, 1, nullptr);
  });
  ASSERT_TRUE(results[0].ok() && results[1].ok());
  EXPECT_TRUE(comms[0]->owned());
  comms.clear();
  for (void* c : raw) EXPECT_EQ(fake_->comm_state(c), kFakeDestroyed);
  const FakeNcclCounters n = fake_->Counters();
  EXPECT_EQ(n.finalizes, 2);
  EXPECT_EQ(n.destroys, 2);
  EXPECT_EQ(n.aborts, 0);
}

TEST_F(NcclCommunicatorTest, BorrowedCommunicatorIsNeverDestroyed) {
  for (int blocking : {1, 0}) {
    SCOPED_TRACE(blocking ? "blocking" : "non-blocking");
    nccl::CommHandle lent = MakeLenderComm(blocking);
    ASSERT_NE(lent, nullptr);
    absl::StatusOr<std::shared_ptr<NcclCommunicator>> comm =
        NcclCommunicator::Wrap(lib_, lent, 10.0);
    ASSERT_TRUE(comm.ok()) << comm.status();
    EXPECT_FALSE((*comm)->owned());
    EXPECT_EQ((*comm)->rank(), 0);
    EXPECT_EQ((*comm)->world_size(), 1);
    EXPECT_THAT((*comm)->Describe(), HasSubstr("NCCL rank 0 of 1 (borrowed; NCCL 2.28.9"));
    float x = 3;
    EXPECT_TRUE((*comm)->AllReduceSum(&x, &x, 1, nullptr).ok());
    EXPECT_EQ(x, 3);
    EXPECT_TRUE((*comm)->Abort().ok());  // only stops our use of it
    comm->reset();
    EXPECT_EQ(fake_->comm_state(lent), kFakeLive);
    EXPECT_EQ(fake_->comm_destroy(lent), nccl::kSuccess);  // the owner's to destroy
  }
  const FakeNcclCounters n = fake_->Counters();
  EXPECT_EQ(n.finalizes, 0);
  EXPECT_EQ(n.aborts, 0);
  EXPECT_EQ(n.destroys, 2) << "only the owner's own destroys";
}

TEST_F(NcclCommunicatorTest, BorrowedCommunicatorIsLeftToItsOwnerOnNcclsErrors) {
  nccl::CommHandle lent = MakeLenderComm(0);
  ASSERT_NE(lent, nullptr);
  absl::StatusOr<std::shared_ptr<NcclCommunicator>> comm = NcclCommunicator::Wrap(lib_, lent, 10.0);
  ASSERT_TRUE(comm.ok()) << comm.status();
  ASSERT_EQ(fake_->inject(0, FAKE_NCCL_ASYNC_ERROR), 0);
  float x = 1;
  const absl::Status s = (*comm)->AllReduceSum(&x, &x, 1, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(s.message(), HasSubstr("the borrowed communicator was not aborted (its owner must "
                                     "abort it)"));
  comm->reset();
  EXPECT_EQ(fake_->comm_state(lent), kFakeLive);
  EXPECT_EQ(fake_->comm_abort(lent), nccl::kSuccess);  // the owner's decision
}

TEST_F(NcclCommunicatorTest, BorrowedCommunicatorIsAbortedOnOurTimeout) {
  nccl::CommHandle lent = MakeLenderComm(0);
  ASSERT_NE(lent, nullptr);
  absl::StatusOr<std::shared_ptr<NcclCommunicator>> comm = NcclCommunicator::Wrap(lib_, lent, 0.2);
  ASSERT_TRUE(comm.ok()) << comm.status();
  ASSERT_EQ(fake_->inject(0, FAKE_NCCL_HANG), 0);
  float x = 1;
  const absl::Status s = (*comm)->AllReduceSum(&x, &x, 1, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("not issued after"),
                    HasSubstr("NCCL has freed that ncclComm_t, so its owner must neither use nor "
                              "destroy it")));
  EXPECT_EQ(fake_->comm_state(lent), kFakeAborted);
  comm->reset();  // must not touch the freed communicator (the stand-in would count a misuse)
}

TEST_F(NcclCommunicatorTest, WrapRejectsWhatIsNotALiveCommunicator) {
  absl::StatusOr<std::shared_ptr<NcclCommunicator>> none = NcclCommunicator::Wrap(lib_, nullptr, 1);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(none.status().message(), HasSubstr("nccl_comm is NULL"));
  int not_a_comm = 0;
  absl::StatusOr<std::shared_ptr<NcclCommunicator>> bad =
      NcclCommunicator::Wrap(lib_, &not_a_comm, 1);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(),
              HasSubstr("is it a live ncclComm_t created by NCCL 2.28.9 at "));
  // Asking the stand-in about a foreign pointer is the misuse being tested here.
  fake_->reset();
}

TEST_F(NcclCommunicatorTest, WrapWaitsForACommunicatorStillInitializing) {
  // A rank of a two-rank communicator whose peer has not joined yet: Wrap waits, then gives up
  // without aborting what is still the caller's.
  nccl::UniqueId id;
  ASSERT_EQ(fake_->get_unique_id(&id), nccl::kSuccess);
  nccl::Config config = nccl::DefaultConfig();
  config.blocking = 0;
  nccl::CommHandle lent = nullptr;
  ASSERT_EQ(fake_->comm_init_rank_config(&lent, 2, id, 0, &config), nccl::kInProgress);
  absl::StatusOr<std::shared_ptr<NcclCommunicator>> comm = NcclCommunicator::Wrap(lib_, lent, 0.2);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(comm.status().message(), HasSubstr("still initializing after 0."));
  EXPECT_EQ(fake_->comm_state(lent), kFakeLive);
  EXPECT_EQ(fake_->comm_abort(lent), nccl::kSuccess);
}

}  // namespace
}  // namespace normuon
