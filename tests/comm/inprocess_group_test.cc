// The in-process group: exchange, all-reduce and all-gather results at several world sizes, and
// every failure mode (timeout, dead peer, wrong size, injected error, mismatched collectives,
// bad arguments, abort, teardown) turning into errors on every rank instead of hangs.
#include "comm/inprocess_group.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/comm/test_util.h"

namespace normuon {
namespace {

using ::normuon::testing_util::MakeGroup;
using ::normuon::testing_util::RunRanks;
using ::normuon::testing_util::SecondsSince;
using ::testing::HasSubstr;

constexpr double kLongTimeout = 30.0;  // never reached by a passing test
constexpr uint8_t kSentinel = 0xEE;
constexpr size_t kGuard = 4;  // sentinel bytes after every receive buffer

// The transfers of the exchange pattern, identical on every rank's view: from `src` to `dst`
// there are transfer_count(src, dst) transfers; transfer k has transfer_bytes(src, dst, k)
// bytes. Some pairs have none, some have zero-byte transfers, self pairs are included.
int TransferCount(int src, int dst) {
  if ((src + 2 * dst) % 5 == 4) return 0;
  return (src + dst) % 3 == 0 ? 2 : 1;
}
uint64_t TransferBytes(int src, int dst, int k) {
  return static_cast<uint64_t>(((src * 5 + dst * 3 + k) % 4) * 7 + (k == 1 ? 5 : 0));
}
uint8_t PatternByte(int src, int dst, int k, uint64_t i) {
  return static_cast<uint8_t>(src * 37 + dst * 11 + k * 101 + static_cast<int>(i));
}

// One rank's buffers and lists for the pattern. Sends are listed by ascending peer, receives by
// descending peer (only the order among transfers of one pair is significant).
struct RankExchange {
  std::vector<std::vector<uint8_t>> send_data;
  std::vector<std::vector<uint8_t>> recv_data;  // bytes + kGuard, prefilled with kSentinel
  std::vector<P2p> sends;
  std::vector<P2p> recvs;
  std::vector<int> recv_src, recv_k;

  RankExchange(int rank, int world) {
    for (int dst = 0; dst < world; ++dst) {
      for (int k = 0; k < TransferCount(rank, dst); ++k) {
        const uint64_t n = TransferBytes(rank, dst, k);
        std::vector<uint8_t> data(n);
        for (uint64_t i = 0; i < n; ++i) data[i] = PatternByte(rank, dst, k, i);
        send_data.push_back(std::move(data));
      }
    }
    for (int src = world - 1; src >= 0; --src) {
      for (int k = 0; k < TransferCount(src, rank); ++k) {
        recv_data.emplace_back(TransferBytes(src, rank, k) + kGuard, kSentinel);
        recv_src.push_back(src);
        recv_k.push_back(k);
      }
    }
    size_t i = 0;
    for (int dst = 0; dst < world; ++dst) {
      for (int k = 0; k < TransferCount(rank, dst); ++k, ++i) {
        const uint64_t n = send_data[i].size();
        sends.push_back(P2p{dst, n == 0 ? nullptr : send_data[i].data(), n});
      }
    }
    for (size_t j = 0; j < recv_data.size(); ++j) {
      const uint64_t n = recv_data[j].size() - kGuard;
      recvs.push_back(P2p{recv_src[j], n == 0 ? nullptr : recv_data[j].data(), n});
    }
  }

  // Empty if every receive holds the sender's pattern and no byte past it was written.
  std::string CheckReceived(int rank) const {
    for (size_t j = 0; j < recv_data.size(); ++j) {
      const uint64_t n = recv_data[j].size() - kGuard;
      for (uint64_t i = 0; i < n; ++i) {
        if (recv_data[j][i] != PatternByte(recv_src[j], rank, recv_k[j], i)) {
          return absl::StrCat("rank ", rank, " receive ", j, " from ", recv_src[j], " byte ", i);
        }
      }
      for (size_t i = n; i < recv_data[j].size(); ++i) {
        if (recv_data[j][i] != kSentinel) {
          return absl::StrCat("rank ", rank, " receive ", j, " overran at byte ", i);
        }
      }
    }
    return "";
  }

  bool Untouched() const {
    for (const auto& buf : recv_data) {
      for (uint8_t b : buf) {
        if (b != kSentinel) return false;
      }
    }
    return true;
  }
};

class WorldSizeTest : public ::testing::TestWithParam<int> {};

INSTANTIATE_TEST_SUITE_P(Worlds, WorldSizeTest, ::testing::Values(1, 2, 3, 4, 8));

TEST_P(WorldSizeTest, ExchangeDeliversUnevenZeroByteAndSelfTransfers) {
  const int world = GetParam();
  auto ranks = MakeGroup(world, kLongTimeout);
  std::vector<std::string> problems(world);
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) -> absl::Status {
    for (int round = 0; round < 3; ++round) {  // the group is reusable, collective after collective
      RankExchange ex(r, world);
      absl::Status s = comm.Exchange(ex.sends, ex.recvs, nullptr);
      if (!s.ok()) return s;
      problems[r] = ex.CheckReceived(r);
      if (!problems[r].empty()) return absl::OkStatus();
    }
    return absl::OkStatus();
  });
  for (int r = 0; r < world; ++r) {
    EXPECT_TRUE(results[r].ok()) << results[r];
    EXPECT_EQ(problems[r], "");
  }
}

// Values of mixed magnitude and sign, so that the summation order changes the rounding.
float ReduceInput(int rank, size_t i) {
  const float big = (i % 7 == 0) ? ((rank % 2) ? 1.0e7f : -1.0e7f) : 0.0f;
  return big + static_cast<float>(rank + 1) * 1.0e-3f * std::sin(static_cast<float>(i) + rank) +
         static_cast<float>(i % 5) * 0.1f;
}

TEST_P(WorldSizeTest, AllReduceIsTheRankOrderSumBitwiseOnEveryRank) {
  const int world = GetParam();
  constexpr size_t kCount = 257;
  auto ranks = MakeGroup(world, kLongTimeout);
  std::vector<float> expected(kCount);
  for (size_t i = 0; i < kCount; ++i) {
    float acc = ReduceInput(0, i);
    for (int r = 1; r < world; ++r) acc += ReduceInput(r, i);
    expected[i] = acc;
  }
  std::vector<std::vector<float>> out(world, std::vector<float>(kCount));
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) {
    std::vector<float> in(kCount);
    for (size_t i = 0; i < kCount; ++i) in[i] = ReduceInput(r, i);
    return comm.AllReduceSum(in.data(), out[r].data(), kCount, nullptr);
  });
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r];
    EXPECT_EQ(std::memcmp(out[r].data(), expected.data(), kCount * sizeof(float)), 0)
        << "rank " << r;
  }
}

TEST_P(WorldSizeTest, AllReduceInPlaceGivesTheSameBits) {
  const int world = GetParam();
  constexpr size_t kCount = 64;
  auto ranks = MakeGroup(world, kLongTimeout);
  std::vector<std::vector<float>> separate(world, std::vector<float>(kCount));
  std::vector<std::vector<float>> in_place(world, std::vector<float>(kCount));
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) -> absl::Status {
    std::vector<float> in(kCount);
    for (size_t i = 0; i < kCount; ++i) in[i] = in_place[r][i] = ReduceInput(r, i);
    absl::Status s = comm.AllReduceSum(in.data(), separate[r].data(), kCount, nullptr);
    if (!s.ok()) return s;
    return comm.AllReduceSum(in_place[r].data(), in_place[r].data(), kCount, nullptr);
  });
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r];
    EXPECT_EQ(std::memcmp(separate[r].data(), in_place[r].data(), kCount * sizeof(float)), 0);
  }
}

TEST_P(WorldSizeTest, AllGatherConcatenatesInRankOrder) {
  const int world = GetParam();
  constexpr size_t kBytes = 5;
  auto ranks = MakeGroup(world, kLongTimeout);
  std::vector<std::vector<uint8_t>> out(world, std::vector<uint8_t>(world * kBytes, 0));
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) {
    uint8_t in[kBytes];
    for (size_t i = 0; i < kBytes; ++i) in[i] = static_cast<uint8_t>(r * 10 + i);
    return comm.AllGather(in, out[r].data(), kBytes, nullptr);
  });
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r];
    for (int q = 0; q < world; ++q) {
      for (size_t i = 0; i < kBytes; ++i) {
        EXPECT_EQ(out[r][q * kBytes + i], q * 10 + i) << "rank " << r << " slot " << q;
      }
    }
  }
}

TEST(InProcessGroupTest, AllGatherInPlaceKeepsOwnSlotAndFillsTheOthers) {
  constexpr int kWorld = 3;
  auto ranks = MakeGroup(kWorld, kLongTimeout);
  std::vector<std::vector<int32_t>> buf(kWorld, std::vector<int32_t>(kWorld, -1));
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) {
    buf[r][r] = 100 + r;
    return comm.AllGather(&buf[r][r], buf[r].data(), sizeof(int32_t), nullptr);
  });
  for (int r = 0; r < kWorld; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r];
    EXPECT_EQ(buf[r], (std::vector<int32_t>{100, 101, 102}));
  }
}

TEST(InProcessGroupTest, RankThatNeverCallsTimesOutEveryOtherRankNamingIt) {
  constexpr int kWorld = 4;
  constexpr double kTimeout = 0.3;
  auto ranks = MakeGroup(kWorld, kTimeout);
  const auto start = std::chrono::steady_clock::now();
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) -> absl::Status {
    float x = 1.0f, y = 0.0f;
    // Collective #0 with everyone lines the ranks up; rank 3 then stops calling.
    absl::Status s = comm.AllReduceSum(&x, &y, 1, nullptr);
    if (!s.ok() || r == 3) return s;
    return comm.AllReduceSum(&x, &y, 1, nullptr);
  });
  const double elapsed = SecondsSince(start);
  EXPECT_TRUE(results[3].ok()) << results[3];
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(results[r].code(), absl::StatusCode::kDeadlineExceeded) << results[r];
    EXPECT_THAT(std::string(results[r].message()), HasSubstr("for ranks {3}"));
    EXPECT_THAT(std::string(results[r].message()), HasSubstr("collective #1 (all_reduce_sum)"));
  }
  EXPECT_LT(elapsed, 5.0);
}

TEST(InProcessGroupTest, NeverArriveFaultMakesThePeersTimeOutNamingTheDeadRank) {
  constexpr int kWorld = 4;
  auto ranks = MakeGroup(kWorld, 0.3);
  ASSERT_TRUE(ranks[2]->InjectFault(NORMUON_FAULT_NEVER_ARRIVE, 1).ok());
  const auto start = std::chrono::steady_clock::now();
  auto results = RunRanks(ranks, [&](int, InProcessRank& comm) -> absl::Status {
    absl::Status s = comm.Exchange({}, {}, nullptr);
    if (!s.ok()) return s;
    return comm.Exchange({}, {}, nullptr);
  });
  EXPECT_LT(SecondsSince(start), 5.0);
  EXPECT_EQ(results[2].code(), absl::StatusCode::kAborted) << results[2];
  EXPECT_THAT(std::string(results[2].message()), HasSubstr("NORMUON_FAULT_NEVER_ARRIVE"));
  for (int r : {0, 1, 3}) {
    EXPECT_EQ(results[r].code(), absl::StatusCode::kDeadlineExceeded) << results[r];
    EXPECT_THAT(std::string(results[r].message()), HasSubstr("for ranks {2}"));
    EXPECT_THAT(std::string(results[r].message()), HasSubstr("collective #1 (exchange)"));
  }
}

// Every rank sends 16 bytes to every rank (itself included).
struct AllToAll {
  std::vector<std::vector<uint8_t>> send, recv;
  std::vector<P2p> sends, recvs;
  AllToAll(int rank, int world) : send(world), recv(world) {
    for (int p = 0; p < world; ++p) {
      send[p].assign(16, static_cast<uint8_t>(rank * 16 + p));
      recv[p].assign(16, kSentinel);
      sends.push_back(P2p{p, send[p].data(), 16});
      recvs.push_back(P2p{p, recv[p].data(), 16});
    }
  }
  bool Untouched() const {
    for (const auto& b : recv) {
      for (uint8_t x : b) {
        if (x != kSentinel) return false;
      }
    }
    return true;
  }
};

TEST(InProcessGroupTest, WrongSizeFaultFailsEveryRankNamingBothSidesAndCopiesNothing) {
  constexpr int kWorld = 3;
  auto ranks = MakeGroup(kWorld, kLongTimeout);
  ASSERT_TRUE(ranks[1]->InjectFault(NORMUON_FAULT_WRONG_SIZE, 0).ok());
  std::vector<AllToAll> buffers;
  for (int r = 0; r < kWorld; ++r) buffers.emplace_back(r, kWorld);
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) {
    return comm.Exchange(buffers[r].sends, buffers[r].recvs, nullptr);
  });
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(results[r].code(), absl::StatusCode::kAborted) << results[r];
    EXPECT_THAT(std::string(results[r].message()),
                HasSubstr("rank 1 sends 17 bytes to rank 0 but rank 0 expects 16 bytes from "
                          "rank 1"));
    EXPECT_THAT(std::string(results[r].message()), HasSubstr("collective #0 (exchange)"));
    EXPECT_TRUE(buffers[r].Untouched()) << "rank " << r << " received data";
  }
}

TEST(InProcessGroupTest, MismatchedByteCountsAreReportedOnSenderAndReceiver) {
  auto ranks = MakeGroup(2, kLongTimeout);
  std::vector<uint8_t> payload(8, 7), self_in(4, 9);
  std::vector<uint8_t> self_out(4, kSentinel), got(8, kSentinel);
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) {
    if (r == 0) {
      // A valid self copy alongside the bad send: it must not happen either.
      const P2p sends[] = {{0, self_in.data(), 4}, {1, payload.data(), 8}};
      const P2p recvs[] = {{0, self_out.data(), 4}};
      return comm.Exchange(sends, recvs, nullptr);
    }
    const P2p recvs[] = {{0, got.data(), 4}};
    return comm.Exchange({}, recvs, nullptr);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].code(), absl::StatusCode::kAborted) << results[r];
    EXPECT_THAT(std::string(results[r].message()),
                HasSubstr("rank 0 sends 8 bytes to rank 1 but rank 1 expects 4 bytes"));
  }
  EXPECT_EQ(self_out, std::vector<uint8_t>(4, kSentinel));
  EXPECT_EQ(got, std::vector<uint8_t>(8, kSentinel));
}

TEST(InProcessGroupTest, InjectedErrorOnOneRankFailsThatCollectiveOnEveryRank) {
  constexpr int kWorld = 4;
  auto ranks = MakeGroup(kWorld, kLongTimeout);
  ASSERT_TRUE(ranks[2]->InjectFault(NORMUON_FAULT_ERROR, 1).ok());
  std::vector<absl::Status> first(kWorld);
  const auto start = std::chrono::steady_clock::now();
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) -> absl::Status {
    float x = 1.0f, y = 0.0f;
    first[r] = comm.AllReduceSum(&x, &y, 1, nullptr);
    AllToAll a(r, kWorld);
    return comm.Exchange(a.sends, a.recvs, nullptr);
  });
  EXPECT_LT(SecondsSince(start), 5.0);
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_TRUE(first[r].ok()) << first[r];
    EXPECT_EQ(results[r].code(), absl::StatusCode::kAborted) << results[r];
    EXPECT_THAT(std::string(results[r].message()),
                HasSubstr("rank 2 failed collective #1 (exchange): injected fault"));
  }
}

TEST(InProcessGroupTest, FailedGroupRefusesEveryLaterCollectiveAtOnce) {
  constexpr int kWorld = 3;
  auto ranks = MakeGroup(kWorld, kLongTimeout);
  ASSERT_TRUE(ranks[0]->InjectFault(NORMUON_FAULT_ERROR, 0).ok());
  std::vector<absl::Status> later(kWorld);
  const auto start = std::chrono::steady_clock::now();
  RunRanks(ranks, [&](int r, InProcessRank& comm) {
    float x = 1.0f, y = 0.0f;
    (void)comm.AllReduceSum(&x, &y, 1, nullptr);
    later[r] = comm.AllGather(&x, &y, 0, nullptr);
    return absl::OkStatus();
  });
  EXPECT_LT(SecondsSince(start), 5.0);  // far below the 30 s timeout: nobody waited
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(later[r].code(), absl::StatusCode::kAborted) << later[r];
    EXPECT_THAT(std::string(later[r].message()),
                HasSubstr(absl::StrCat("rank ", r, ", collective #1 (all_gather) refused")));
    EXPECT_THAT(std::string(later[r].message()), HasSubstr("rank 0 failed collective #0"));
    EXPECT_FALSE(ranks[r]->AsyncError().ok());
  }
}

TEST(InProcessGroupTest, AbortWakesARankWaitingForItsPeers) {
  auto ranks = MakeGroup(2, kLongTimeout);
  absl::Status waiting;
  const auto start = std::chrono::steady_clock::now();
  std::thread t([&] {
    float x = 1.0f, y = 0.0f;
    waiting = ranks[1]->AllReduceSum(&x, &y, 1, nullptr);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(ranks[0]->Abort().ok());
  t.join();
  EXPECT_LT(SecondsSince(start), 5.0);
  EXPECT_EQ(waiting.code(), absl::StatusCode::kAborted) << waiting;
  EXPECT_THAT(std::string(waiting.message()), HasSubstr("rank 0 aborted the group"));
  EXPECT_EQ(ranks[0]->AsyncError().code(), absl::StatusCode::kAborted);
}

TEST(InProcessGroupTest, DestroyingOneRankFailsTheGroupForTheOthers) {
  auto ranks = MakeGroup(3, kLongTimeout);
  ranks[2].reset();
  float x = 1.0f, y = 0.0f;
  absl::Status s = ranks[0]->AllReduceSum(&x, &y, 1, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("rank 2's communicator was destroyed"));
}

TEST(InProcessGroupTest, DifferentCollectivesAtTheSameNumberFailOnEveryRank) {
  constexpr int kWorld = 3;
  auto ranks = MakeGroup(kWorld, kLongTimeout);
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) {
    float x[4] = {1, 2, 3, 4};
    if (r == 2) return comm.AllReduceSum(x, x, 4, nullptr);
    return comm.Exchange({}, {}, nullptr);
  });
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(results[r].code(), absl::StatusCode::kAborted) << results[r];
    EXPECT_THAT(std::string(results[r].message()),
                HasSubstr("collective #0: ranks called different collectives"));
    EXPECT_THAT(std::string(results[r].message()), HasSubstr("rank 2 all_reduce_sum (count 4)"));
  }
}

TEST(InProcessGroupTest, AllReduceCountMismatchNamesRanksAndCounts) {
  auto ranks = MakeGroup(2, kLongTimeout);
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) {
    float x[3] = {1, 2, 3};
    return comm.AllReduceSum(x, x, r == 0 ? 3 : 2, nullptr);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].code(), absl::StatusCode::kAborted) << results[r];
    EXPECT_THAT(std::string(results[r].message()),
                HasSubstr("rank 0 has count 3 but rank 1 has count 2"));
  }
}

TEST(InProcessGroupTest, BadArgumentsOnOneRankFailItAndReleaseThePeers) {
  constexpr int kWorld = 3;
  auto ranks = MakeGroup(kWorld, kLongTimeout);
  const auto start = std::chrono::steady_clock::now();
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) {
    uint8_t b = 0;
    if (r == 1) {
      const P2p sends[] = {{7, &b, 1}};
      return comm.Exchange(sends, {}, nullptr);
    }
    return comm.Exchange({}, {}, nullptr);
  });
  EXPECT_LT(SecondsSince(start), 5.0);
  EXPECT_EQ(results[1].code(), absl::StatusCode::kInvalidArgument) << results[1];
  EXPECT_THAT(std::string(results[1].message()),
              HasSubstr("sends[0].peer is 7, must be in [0, 3)"));
  for (int r : {0, 2}) {
    EXPECT_EQ(results[r].code(), absl::StatusCode::kAborted) << results[r];
    EXPECT_THAT(std::string(results[r].message()), HasSubstr("rank 1's arguments were rejected"));
  }
}

TEST(InProcessGroupTest, FaultCannotBeArmedForACollectiveAlreadyPast) {
  auto ranks = MakeGroup(1, kLongTimeout);
  ASSERT_TRUE(ranks[0]->Exchange({}, {}, nullptr).ok());
  EXPECT_EQ(ranks[0]->next_collective(), 1);
  absl::Status s = ranks[0]->InjectFault(NORMUON_FAULT_ERROR, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("next collective is #1"));
  EXPECT_TRUE(ranks[0]->InjectFault(NORMUON_FAULT_NONE, 0).ok());
}

TEST(InProcessGroupTest, WrongSizeFaultWaitsForTheFirstExchangeWithASend) {
  auto ranks = MakeGroup(2, kLongTimeout);
  ASSERT_TRUE(ranks[0]->InjectFault(NORMUON_FAULT_WRONG_SIZE, 0).ok());
  std::vector<absl::Status> first(2);
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) {
    float x = 1.0f;
    first[r] = comm.AllReduceSum(&x, &x, 1, nullptr);  // #0: not an exchange, fault stays armed
    uint8_t a = 1, b = 0;
    const P2p sends[] = {{1, &a, 1}};
    const P2p recvs[] = {{0, &b, 1}};
    return r == 0 ? comm.Exchange(sends, {}, nullptr) : comm.Exchange({}, recvs, nullptr);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(first[r].ok()) << first[r];
    EXPECT_THAT(std::string(results[r].message()),
                HasSubstr("collective #1 (exchange): rank 0 sends 2 bytes to rank 1"));
  }
}

TEST(InProcessGroupTest, CreationRejectsBadWorldSizeAndTimeout) {
  EXPECT_EQ(CreateInProcessGroup(0, 1.0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateInProcessGroup(4097, 1.0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateInProcessGroup(2, 0.0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateInProcessGroup(2, std::nan("")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(CreateInProcessGroup(2, -1.0).status().message()),
              HasSubstr("timeout_seconds is -1"));
}

}  // namespace
}  // namespace normuon
