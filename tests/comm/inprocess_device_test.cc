// The in-process group's device-memory mode (InProcessMemory::kDevice): N ranks as N threads
// sharing CUDA device 0, every buffer cudaMalloc'd, each rank with its own non-blocking stream.
// The data a rank sends is written by cudaMemcpyAsync on its stream just before the collective
// (behind a queue of large memsets that keep the stream busy), so a rank that did not wait for
// its stream on entry would send stale bytes. Checked at world sizes 1 to 4: an exchange with
// uneven, zero-byte and self transfers (nothing written past any receive), the all-reduce (in
// place and not; bitwise the rank-order host sum on every rank), the all-gather (in place and
// not); an injected NORMUON_FAULT_ERROR still fails the collective on every rank and the group
// after it; UsesDeviceMemory() is true (false for a host group).
//
// Without a CUDA device those cases skip. What runs everywhere: in the CPU-only build
// (--define=cuda=off) a device group is Unimplemented (NORMUON_ERROR_UNSUPPORTED through the C
// API); in the CUDA build on a machine without a usable device it is Unknown
// (NORMUON_ERROR_CUDA).
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "comm/inprocess_group.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "normuon/comm.h"
#include "tests/comm/test_util.h"

#if !defined(NORMUON_TEST_NO_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace normuon {
namespace {

using ::normuon::testing_util::RunRanks;
using ::normuon::testing_util::SecondsSince;
using ::testing::HasSubstr;

constexpr double kLongTimeout = 60.0;  // never reached by a passing test

TEST(InProcessDeviceTest, AHostGroupDoesNotUseDeviceMemory) {
  absl::StatusOr<std::vector<std::shared_ptr<InProcessRank>>> group =
      CreateInProcessGroup(2, kLongTimeout, InProcessMemory::kHost);
  ASSERT_TRUE(group.ok()) << group.status();
  for (const auto& rank : *group) EXPECT_FALSE(rank->UsesDeviceMemory());
}

#if defined(NORMUON_TEST_NO_CUDA)

TEST(InProcessDeviceTest, TheCpuOnlyBuildRefusesADeviceGroup) {
  absl::StatusOr<std::vector<std::shared_ptr<InProcessRank>>> group =
      CreateInProcessGroup(2, kLongTimeout, InProcessMemory::kDevice);
  ASSERT_FALSE(group.ok());
  EXPECT_EQ(group.status().code(), absl::StatusCode::kUnimplemented) << group.status();
  EXPECT_THAT(std::string(group.status().message()), HasSubstr("no CUDA"));

  normuon_comm_t comms[2] = {0, 0};
  EXPECT_EQ(
      normuon_comm_create_inprocess_group_ex(2, kLongTimeout, NORMUON_COMM_MEMORY_DEVICE, comms),
      NORMUON_ERROR_UNSUPPORTED);
  EXPECT_EQ(comms[0], 0u);
  EXPECT_EQ(comms[1], 0u);
}

TEST(InProcessDeviceTest, DeviceCollectivesNeedTheCudaBuild) {
  GTEST_SKIP() << "the CPU-only build (--define=cuda=off) has no device memory to move";
}

#else  // CUDA build

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear it
    return 0;
  }
  return n;
}

TEST(InProcessDeviceTest, WithoutAUsableDeviceCreationFailsAsACudaError) {
  if (DeviceCount() > 0) GTEST_SKIP() << "this machine has a CUDA device";
  absl::StatusOr<std::vector<std::shared_ptr<InProcessRank>>> group =
      CreateInProcessGroup(2, kLongTimeout, InProcessMemory::kDevice);
  ASSERT_FALSE(group.ok());
  EXPECT_EQ(group.status().code(), absl::StatusCode::kUnknown) << group.status();
  EXPECT_THAT(std::string(group.status().message()), HasSubstr("usable CUDA device"));

  normuon_comm_t comms[2] = {0, 0};
  EXPECT_EQ(
      normuon_comm_create_inprocess_group_ex(2, kLongTimeout, NORMUON_COMM_MEMORY_DEVICE, comms),
      NORMUON_ERROR_CUDA);
  EXPECT_EQ(comms[0], 0u);
  EXPECT_EQ(comms[1], 0u);
}

#define CUDA_RETURN_IF_ERROR(expr)                                                            \
  do {                                                                                        \
    const cudaError_t cuda_error_ = (expr);                                                   \
    if (cuda_error_ != cudaSuccess) {                                                         \
      return absl::InternalError(absl::StrCat(#expr, ": ", cudaGetErrorString(cuda_error_))); \
    }                                                                                         \
  } while (0)

// A device allocation, freed at the end of the scope.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  absl::Status Alloc(size_t bytes) {
    if (bytes == 0) return absl::OkStatus();
    CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr_, bytes));
    return absl::OkStatus();
  }
  char* get() const { return static_cast<char*>(ptr_); }

 private:
  void* ptr_ = nullptr;
};

// Pinned host memory, so that a cudaMemcpyAsync from it is truly asynchronous.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() {
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  absl::Status Alloc(size_t bytes) {
    CUDA_RETURN_IF_ERROR(cudaHostAlloc(&ptr_, bytes == 0 ? 1 : bytes, cudaHostAllocDefault));
    return absl::OkStatus();
  }
  char* get() const { return static_cast<char*>(ptr_); }

 private:
  void* ptr_ = nullptr;
};

// One rank's CUDA context: device 0 current on the calling thread, a non-blocking stream (which
// the legacy default stream does not order against), and scratch memory to keep it busy.
class RankDevice {
 public:
  RankDevice() = default;
  ~RankDevice() {
    if (stream_ != nullptr) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
  }
  RankDevice(const RankDevice&) = delete;
  RankDevice& operator=(const RankDevice&) = delete;

  absl::Status Init() {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(0));
    CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    return busy_.Alloc(kBusyBytes);
  }

  cudaStream_t stream() const { return stream_; }

  // Queues work that takes a while (about a millisecond) on the stream, so that what is queued
  // after it is still pending when the host reaches the collective.
  absl::Status KeepBusy() {
    for (int i = 0; i < 16; ++i) {
      CUDA_RETURN_IF_ERROR(cudaMemsetAsync(busy_.get(), i, kBusyBytes, stream_));
    }
    return absl::OkStatus();
  }

  // Queues host -> device bytes behind KeepBusy's work; returns without waiting. `src` is pinned
  // and must stay alive until the stream has run the copy.
  absl::Status QueueUpload(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return absl::OkStatus();
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    return absl::OkStatus();
  }

  // Device -> host, complete on return.
  absl::Status Download(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return absl::OkStatus();
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }

 private:
  static constexpr size_t kBusyBytes = size_t{64} << 20;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer busy_;
};

class DeviceGroupTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device: device-memory collectives cannot run";
  }

  static std::vector<std::shared_ptr<InProcessRank>> MakeDeviceGroup(int world, double timeout_s) {
    absl::StatusOr<std::vector<std::shared_ptr<InProcessRank>>> group =
        CreateInProcessGroup(world, timeout_s, InProcessMemory::kDevice);
    EXPECT_TRUE(group.ok()) << group.status();
    if (!group.ok()) return {};
    return *std::move(group);
  }
};

INSTANTIATE_TEST_SUITE_P(Worlds, DeviceGroupTest, ::testing::Values(1, 2, 3, 4));

// The exchange pattern, identical on every rank's view: from `src` to `dst` there are
// TransferCount(src, dst) transfers, transfer k of TransferBytes(src, dst, k) bytes (uneven, some
// zero). Self pairs are included (rank 0 sends itself 0 and 1548 bytes).
int TransferCount(int src, int dst) {
  if ((src + 2 * dst) % 5 == 4) return 0;
  return (src + dst) % 3 == 0 ? 2 : 1;
}
uint64_t TransferBytes(int src, int dst, int k) {
  return static_cast<uint64_t>(((src * 5 + dst * 3 + k) % 4) * 1531 + (k == 1 ? 17 : 0));
}
// Byte i of transfer k from src to dst in exchange number `round` (new bytes every round).
uint8_t PatternByte(int src, int dst, int k, uint64_t i, int round) {
  return static_cast<uint8_t>(src * 37 + dst * 11 + k * 101 + round * 59 +
                              static_cast<int>(i % 251));
}

constexpr uint8_t kSentinel = 0xEE;
constexpr size_t kGuard = 16;  // sentinel bytes after every receive

// One rank's side of the pattern: all sends in one device arena, all receives (each followed by
// kGuard sentinel bytes) in another. Sends listed by ascending peer, receives by descending.
struct RankExchange {
  int rank = 0, world = 0;
  std::vector<P2p> sends, recvs;
  std::vector<int> recv_src, recv_k;
  std::vector<uint64_t> recv_offset;
  size_t send_bytes = 0, recv_bytes = 0;
  PinnedBuffer pinned;  // the bytes the sends carry, in arena order, for the asynchronous upload
  DeviceBuffer send_arena, recv_arena;

  absl::Status Build(int rank_in, int world_in) {
    rank = rank_in;
    world = world_in;
    for (int dst = 0; dst < world; ++dst) {
      for (int k = 0; k < TransferCount(rank, dst); ++k) send_bytes += TransferBytes(rank, dst, k);
    }
    for (int src = world - 1; src >= 0; --src) {
      for (int k = 0; k < TransferCount(src, rank); ++k) {
        recv_src.push_back(src);
        recv_k.push_back(k);
        recv_offset.push_back(recv_bytes);
        recv_bytes += TransferBytes(src, rank, k) + kGuard;
      }
    }
    absl::Status s = send_arena.Alloc(send_bytes);
    if (s.ok()) s = recv_arena.Alloc(recv_bytes);
    if (s.ok()) s = pinned.Alloc(send_bytes);
    if (!s.ok()) return s;
    uint64_t offset = 0;
    for (int dst = 0; dst < world; ++dst) {
      for (int k = 0; k < TransferCount(rank, dst); ++k) {
        const uint64_t n = TransferBytes(rank, dst, k);
        sends.push_back(P2p{dst, n == 0 ? nullptr : send_arena.get() + offset, n});
        offset += n;
      }
    }
    for (size_t j = 0; j < recv_src.size(); ++j) {
      const uint64_t n = TransferBytes(recv_src[j], rank, recv_k[j]);
      recvs.push_back(P2p{recv_src[j], n == 0 ? nullptr : recv_arena.get() + recv_offset[j], n});
    }
    return absl::OkStatus();
  }

  // Writes the send bytes of exchange `round` into the pinned buffer (the previous upload from
  // it must be complete).
  void Fill(int round) {
    size_t at = 0;
    for (int dst = 0; dst < world; ++dst) {
      for (int k = 0; k < TransferCount(rank, dst); ++k) {
        const uint64_t n = TransferBytes(rank, dst, k);
        for (uint64_t i = 0; i < n; ++i) {
          pinned.get()[at++] = static_cast<char>(PatternByte(rank, dst, k, i, round));
        }
      }
    }
  }

  // "" if every receive holds its sender's bytes of `round` and no guard byte was written.
  std::string CheckReceived(const std::vector<uint8_t>& got, int round) const {
    for (size_t j = 0; j < recv_src.size(); ++j) {
      const uint64_t n = TransferBytes(recv_src[j], rank, recv_k[j]);
      const uint8_t* r = got.data() + recv_offset[j];
      for (uint64_t i = 0; i < n; ++i) {
        if (r[i] != PatternByte(recv_src[j], rank, recv_k[j], i, round)) {
          return absl::StrCat("round ", round, ": rank ", rank, " receive ", j, " (", n,
                              " bytes from rank ", recv_src[j], ") differs at byte ", i);
        }
      }
      for (size_t i = 0; i < kGuard; ++i) {
        if (r[n + i] != kSentinel) {
          return absl::StrCat("round ", round, ": rank ", rank, " receive ", j, " overran at byte ",
                              n + i);
        }
      }
    }
    return "";
  }
};

TEST_P(DeviceGroupTest, UsesDeviceMemory) {
  for (const auto& rank : MakeDeviceGroup(GetParam(), kLongTimeout)) {
    EXPECT_TRUE(rank->UsesDeviceMemory());
  }
}

TEST_P(DeviceGroupTest, ExchangeDeliversUnevenZeroByteAndSelfTransfersFromTheRanksStreams) {
  const int world = GetParam();
  auto ranks = MakeDeviceGroup(world, kLongTimeout);
  ASSERT_EQ(static_cast<int>(ranks.size()), world);
  std::vector<std::string> problems(world);
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) -> absl::Status {
    RankDevice dev;
    absl::Status s = dev.Init();
    if (!s.ok()) return s;
    // Allocated once: cudaFree and friends may synchronize the device, which would hide a
    // missing stream wait. Round 0 also lines the ranks up, so that no rank allocates during
    // rounds 1 and 2.
    RankExchange ex;
    s = ex.Build(r, world);
    if (!s.ok()) return s;
    for (int round = 0; round < 3; ++round) {  // the group is reusable
      ex.Fill(round);
      // Sentinels in the receive arena, then this round's payload, both queued behind busy work:
      // none of it has run when the collective is entered.
      s = dev.KeepBusy();
      if (!s.ok()) return s;
      if (ex.recv_bytes > 0) {
        CUDA_RETURN_IF_ERROR(
            cudaMemsetAsync(ex.recv_arena.get(), kSentinel, ex.recv_bytes, dev.stream()));
      }
      s = dev.QueueUpload(ex.send_arena.get(), ex.pinned.get(), ex.send_bytes);
      if (!s.ok()) return s;
      s = comm.Exchange(ex.sends, ex.recvs, dev.stream());
      if (!s.ok()) return s;
      std::vector<uint8_t> got(ex.recv_bytes);
      s = dev.Download(got.data(), ex.recv_arena.get(), ex.recv_bytes);
      if (!s.ok()) return s;
      problems[r] = ex.CheckReceived(got, round);
      if (!problems[r].empty()) return absl::OkStatus();
    }
    return absl::OkStatus();
  });
  for (int r = 0; r < world; ++r) {
    EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
    EXPECT_EQ(problems[r], "");
  }
}

// Values of mixed magnitude and sign, so that the summation order changes the rounding.
float ReduceInput(int rank, size_t i) {
  const float big = (i % 7 == 0) ? ((rank % 2) ? 1.0e7f : -1.0e7f) : 0.0f;
  return big + static_cast<float>(rank + 1) * 1.0e-3f * std::sin(static_cast<float>(i) + rank) +
         static_cast<float>(i % 5) * 0.1f;
}

TEST_P(DeviceGroupTest, AllReduceIsTheRankOrderHostSumBitwiseOnEveryRankInPlaceOrNot) {
  const int world = GetParam();
  constexpr size_t kCount = 1025;
  auto ranks = MakeDeviceGroup(world, kLongTimeout);
  ASSERT_EQ(static_cast<int>(ranks.size()), world);
  std::vector<float> expected(kCount);
  for (size_t i = 0; i < kCount; ++i) {
    float acc = ReduceInput(0, i);
    for (int r = 1; r < world; ++r) acc += ReduceInput(r, i);
    expected[i] = acc;
  }
  std::vector<std::vector<float>> separate(world, std::vector<float>(kCount));
  std::vector<std::vector<float>> in_place(world, std::vector<float>(kCount));
  std::vector<std::vector<float>> input_after(world, std::vector<float>(kCount));
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) -> absl::Status {
    RankDevice dev;
    absl::Status s = dev.Init();
    if (!s.ok()) return s;
    const size_t bytes = kCount * sizeof(float);
    PinnedBuffer host;
    s = host.Alloc(bytes);
    if (!s.ok()) return s;
    float* h = reinterpret_cast<float*>(host.get());
    for (size_t i = 0; i < kCount; ++i) h[i] = ReduceInput(r, i);
    DeviceBuffer in, out, both;
    for (DeviceBuffer* b : {&in, &out, &both}) {
      s = b->Alloc(bytes);
      if (!s.ok()) return s;
    }
    // Separate buffers.
    s = dev.KeepBusy();
    if (s.ok()) s = dev.QueueUpload(in.get(), h, bytes);
    if (s.ok()) {
      s = comm.AllReduceSum(reinterpret_cast<const float*>(in.get()),
                            reinterpret_cast<float*>(out.get()), kCount, dev.stream());
    }
    if (s.ok()) s = dev.Download(separate[r].data(), out.get(), bytes);
    if (s.ok()) s = dev.Download(input_after[r].data(), in.get(), bytes);
    if (!s.ok()) return s;
    // In place.
    s = dev.KeepBusy();
    if (s.ok()) s = dev.QueueUpload(both.get(), h, bytes);
    if (s.ok()) {
      s = comm.AllReduceSum(reinterpret_cast<const float*>(both.get()),
                            reinterpret_cast<float*>(both.get()), kCount, dev.stream());
    }
    if (s.ok()) s = dev.Download(in_place[r].data(), both.get(), bytes);
    return s;
  });
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
    EXPECT_EQ(std::memcmp(separate[r].data(), expected.data(), kCount * sizeof(float)), 0)
        << "rank " << r;
    EXPECT_EQ(std::memcmp(in_place[r].data(), expected.data(), kCount * sizeof(float)), 0)
        << "rank " << r << " (in place)";
    for (size_t i = 0; i < kCount; ++i) {
      ASSERT_EQ(input_after[r][i], ReduceInput(r, i))
          << "rank " << r << "'s input changed at " << i;
    }
  }
}

TEST_P(DeviceGroupTest, AllGatherConcatenatesInRankOrderInPlaceOrNot) {
  const int world = GetParam();
  constexpr size_t kBytes = 4099;  // odd: slots at unaligned offsets
  auto ranks = MakeDeviceGroup(world, kLongTimeout);
  ASSERT_EQ(static_cast<int>(ranks.size()), world);
  auto byte_of = [](int rank, size_t i) { return static_cast<uint8_t>(rank * 29 + i % 241); };
  std::vector<std::vector<uint8_t>> separate(world), in_place(world);
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) -> absl::Status {
    RankDevice dev;
    absl::Status s = dev.Init();
    if (!s.ok()) return s;
    const size_t total = kBytes * static_cast<size_t>(world);
    PinnedBuffer host;
    s = host.Alloc(kBytes);
    if (!s.ok()) return s;
    for (size_t i = 0; i < kBytes; ++i) host.get()[i] = static_cast<char>(byte_of(r, i));
    DeviceBuffer in, out, both;
    s = in.Alloc(kBytes);
    if (s.ok()) s = out.Alloc(total);
    if (s.ok()) s = both.Alloc(total);
    if (!s.ok()) return s;
    s = dev.KeepBusy();
    if (!s.ok()) return s;
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out.get(), kSentinel, total, dev.stream()));
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(both.get(), kSentinel, total, dev.stream()));
    s = dev.QueueUpload(in.get(), host.get(), kBytes);
    if (s.ok()) s = comm.AllGather(in.get(), out.get(), kBytes, dev.stream());
    separate[r].resize(total);
    if (s.ok()) s = dev.Download(separate[r].data(), out.get(), total);
    if (!s.ok()) return s;
    // In place: this rank's block is already at its slot of the output.
    char* own_slot = both.get() + static_cast<size_t>(r) * kBytes;
    s = dev.KeepBusy();
    if (s.ok()) s = dev.QueueUpload(own_slot, host.get(), kBytes);
    if (s.ok()) s = comm.AllGather(own_slot, both.get(), kBytes, dev.stream());
    in_place[r].resize(total);
    if (s.ok()) s = dev.Download(in_place[r].data(), both.get(), total);
    return s;
  });
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
    for (int q = 0; q < world; ++q) {
      for (size_t i = 0; i < kBytes; ++i) {
        const size_t at = static_cast<size_t>(q) * kBytes + i;
        ASSERT_EQ(separate[r][at], byte_of(q, i)) << "rank " << r << " slot " << q << " byte " << i;
        ASSERT_EQ(in_place[r][at], byte_of(q, i))
            << "rank " << r << " slot " << q << " byte " << i << " (in place)";
      }
    }
  }
}

TEST_P(DeviceGroupTest, AnInjectedErrorFailsTheCollectiveOnEveryRankAndTheGroupAfterIt) {
  const int world = GetParam();
  auto ranks = MakeDeviceGroup(world, kLongTimeout);
  ASSERT_EQ(static_cast<int>(ranks.size()), world);
  const int faulty = world - 1;
  ASSERT_TRUE(ranks[faulty]->InjectFault(NORMUON_FAULT_ERROR, 1).ok());
  std::vector<absl::Status> first(world), second(world), third(world);
  std::vector<std::vector<float>> untouched(world, std::vector<float>(4));
  const auto start = std::chrono::steady_clock::now();
  auto results = RunRanks(ranks, [&](int r, InProcessRank& comm) -> absl::Status {
    RankDevice dev;
    absl::Status s = dev.Init();
    if (!s.ok()) return s;
    DeviceBuffer x, y;
    s = x.Alloc(4 * sizeof(float));
    if (s.ok()) s = y.Alloc(4 * sizeof(float) * static_cast<size_t>(world));
    if (!s.ok()) return s;
    const float ones[4] = {1, 1, 1, 1};
    // On the rank's stream (the legacy default stream does not order against it); a pageable
    // source is staged before cudaMemcpyAsync returns, and the collective waits for the stream.
    CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(x.get(), ones, sizeof(ones), cudaMemcpyHostToDevice, dev.stream()));
    float* xf = reinterpret_cast<float*>(x.get());
    float* yf = reinterpret_cast<float*>(y.get());
    first[r] = comm.AllReduceSum(xf, yf, 4, dev.stream());  // #0: fine
    // #1: an all-gather into y; the faulty rank fails it, so nobody's y may change.
    CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(y.get(), 0, 4 * sizeof(float) * static_cast<size_t>(world), dev.stream()));
    second[r] = comm.AllGather(xf, yf, 4 * sizeof(float), dev.stream());
    third[r] = comm.AllReduceSum(xf, yf, 4, dev.stream());  // #2: refused at once
    return dev.Download(untouched[r].data(), y.get(), 4 * sizeof(float));
  });
  EXPECT_LT(SecondsSince(start), 20.0);  // far below the timeout: nobody waited for it
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
    EXPECT_TRUE(first[r].ok()) << "rank " << r << ": " << first[r];
    EXPECT_EQ(second[r].code(), absl::StatusCode::kAborted) << "rank " << r << ": " << second[r];
    EXPECT_THAT(std::string(second[r].message()),
                HasSubstr(absl::StrCat("rank ", faulty,
                                       " failed collective #1 (all_gather): injected fault")));
    EXPECT_EQ(third[r].code(), absl::StatusCode::kAborted) << "rank " << r << ": " << third[r];
    EXPECT_FALSE(ranks[r]->AsyncError().ok()) << "rank " << r;
    EXPECT_EQ(untouched[r], std::vector<float>(4, 0.0f)) << "rank " << r;
  }
}

#endif  // NORMUON_TEST_NO_CUDA

}  // namespace
}  // namespace normuon
