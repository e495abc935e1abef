// The NCCL communicator against a real NCCL (default build only): the library that
// $NORMUON_NCCL_LIBRARY names when it names an existing file (on the GPU machine, PyTorch's wheel:
// .../site-packages/nvidia/nccl/lib/libnccl.so.2), else the CUDA toolkit's
// /usr/local/cuda/lib64/libnccl.so.2; with neither, every case skips. Without a
// CUDA device this checks what a CPU machine can: the real library loads, passes the version
// check and has every function; ncclGetUniqueId works; and creating a communicator with no
// device fails cleanly (an error, no hang, no crash), which exercises the by-value unique id
// and the 2.18 config layout against the real ABI. With a device it runs the whole adapter at
// world size 1: an owned communicator (exchange with a self-transfer, all-reduce, all-gather on
// device buffers and a stream, then finalize and destroy) and a borrowed one.
// World sizes above 1 need one GPU per rank and are not tested here. The runtime over a real
// NCCL communicator (world size 1) is tests/cuda/sharded_cuda_test.
#include <sys/stat.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "comm/nccl_communicator.h"
#include "comm/nccl_library.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

#if !defined(NORMUON_TEST_NO_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace normuon {
namespace {

using ::testing::HasSubstr;

#if defined(NORMUON_TEST_NO_CUDA)

TEST(NcclRealTest, NeedsTheCudaBuild) {
  GTEST_SKIP() << "the CPU-only build (--define=cuda=off) has no NCCL communicator to test";
}

#else

constexpr char kToolkitNccl[] = "/usr/local/cuda/lib64/libnccl.so.2";

// The real NCCL to test: $NORMUON_NCCL_LIBRARY if it names an existing file, else the toolkit's
// copy if installed, else "" (nothing to test).
std::string RealNcclPath() {
  struct stat st;
  const char* env = std::getenv(kNcclLibraryEnv);
  if (env != nullptr && env[0] != '\0' && stat(env, &st) == 0) return env;
  if (stat(kToolkitNccl, &st) == 0) return kToolkitNccl;
  return "";
}

class NcclRealTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = RealNcclPath();
    if (path.empty()) {
      const char* env = std::getenv(kNcclLibraryEnv);
      GTEST_SKIP() << "no real NCCL: $" << kNcclLibraryEnv << " is "
                   << (env == nullptr ? std::string("unset") : "'" + std::string(env) + "'")
                   << " (no such file) and " << kToolkitNccl << " is not installed";
    }
    // normuon loads the library this variable names (when no NCCL is loaded in the process yet).
    setenv(kNcclLibraryEnv, path.c_str(), 1);
    absl::StatusOr<std::shared_ptr<const NcclLibrary>> lib = SharedNcclLibrary();
    ASSERT_TRUE(lib.ok()) << lib.status();
    lib_ = *lib;
  }

  static int DeviceCount() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
  }

  std::shared_ptr<const NcclLibrary> lib_;
};

TEST_F(NcclRealTest, TheToolkitsNcclLoadsAndIsRecentEnough) {
  EXPECT_GE(lib_->version_code, kMinNcclVersionCode) << lib_->Describe();
  EXPECT_THAT(lib_->path, HasSubstr("libnccl.so.2"));
  std::cout << lib_->Describe() << "\n";
  EXPECT_THAT(lib_->ResultText(nccl::kRemoteError), HasSubstr("ncclRemoteError ("));
}

TEST_F(NcclRealTest, UniqueIdsAreMade) {
  absl::StatusOr<nccl::UniqueId> a = NcclGetUniqueId(*lib_);
  absl::StatusOr<nccl::UniqueId> b = NcclGetUniqueId(*lib_);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE(std::memcmp(a->internal, b->internal, sizeof(a->internal)), 0);
}

// Device buffers of n bytes, freed at the end of the scope.
struct DeviceBuffer {
  explicit DeviceBuffer(size_t n) : bytes(n) { EXPECT_EQ(cudaMalloc(&ptr, n), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(ptr); }
  void* ptr = nullptr;
  size_t bytes;
};

TEST_F(NcclRealTest, WorldSizeOneRunsEveryCollectiveOnTheDevice) {
  absl::StatusOr<nccl::UniqueId> id = NcclGetUniqueId(*lib_);
  ASSERT_TRUE(id.ok()) << id.status();
  if (DeviceCount() == 0) {
    absl::StatusOr<std::shared_ptr<NcclCommunicator>> comm =
        NcclCommunicator::Create(lib_, *id, 0, 1, kCurrentDevice, 20.0);
    ASSERT_FALSE(comm.ok()) << "NCCL made a communicator without a CUDA device";
    EXPECT_THAT(comm.status().message(), HasSubstr("NCCL rank 0 of 1: "));
    GTEST_SKIP() << "no CUDA device; creation failed cleanly: " << comm.status();
  }
  absl::StatusOr<std::shared_ptr<NcclCommunicator>> comm =
      NcclCommunicator::Create(lib_, *id, 0, 1, /*device=*/0, 60.0);
  ASSERT_TRUE(comm.ok()) << comm.status();
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);

  // Exchange: two self-transfers of uneven sizes and a zero-byte one.
  std::vector<uint8_t> a(1000), b(37), got_a(1000), got_b(37);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i * 7 + 1);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 5 + 3);
  DeviceBuffer da(a.size()), db(b.size()), ra(a.size()), rb(b.size());
  ASSERT_EQ(cudaMemcpy(da.ptr, a.data(), a.size(), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(db.ptr, b.data(), b.size(), cudaMemcpyHostToDevice), cudaSuccess);
  const std::vector<P2p> sends = {{0, da.ptr, a.size()}, {0, nullptr, 0}, {0, db.ptr, b.size()}};
  const std::vector<P2p> recvs = {{0, ra.ptr, a.size()}, {0, nullptr, 0}, {0, rb.ptr, b.size()}};
  absl::Status s = (*comm)->Exchange(sends, recvs, stream);
  ASSERT_TRUE(s.ok()) << s;

  // All-reduce (in place) and all-gather of floats.
  std::vector<float> x = {1.5f, -2.0f, 3.25f}, sum(3), gathered(3);
  DeviceBuffer dx(x.size() * sizeof(float)), dg(x.size() * sizeof(float));
  ASSERT_EQ(cudaMemcpy(dx.ptr, x.data(), dx.bytes, cudaMemcpyHostToDevice), cudaSuccess);
  s = (*comm)->AllReduceSum(static_cast<float*>(dx.ptr), static_cast<float*>(dx.ptr), x.size(),
                            stream);
  ASSERT_TRUE(s.ok()) << s;
  s = (*comm)->AllGather(dx.ptr, dg.ptr, dx.bytes, stream);
  ASSERT_TRUE(s.ok()) << s;

  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got_a.data(), ra.ptr, a.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got_b.data(), rb.ptr, b.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(sum.data(), dx.ptr, dx.bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(gathered.data(), dg.ptr, dg.bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got_a, a);
  EXPECT_EQ(got_b, b);
  EXPECT_EQ(sum, x);
  EXPECT_EQ(gathered, x);
  EXPECT_TRUE((*comm)->AsyncError().ok());
  comm->reset();  // finalize, then destroy
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

TEST_F(NcclRealTest, ABorrowedCommunicatorRunsAndIsLeftToItsOwner) {
  if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  absl::StatusOr<nccl::UniqueId> id = NcclGetUniqueId(*lib_);
  ASSERT_TRUE(id.ok()) << id.status();
  nccl::Config config = nccl::DefaultConfig();  // blocking, as PyTorch makes them
  nccl::CommHandle lent = nullptr;
  ASSERT_EQ(lib_->comm_init_rank_config(&lent, 1, *id, 0, &config), nccl::kSuccess);
  absl::StatusOr<std::shared_ptr<NcclCommunicator>> comm = NcclCommunicator::Wrap(lib_, lent, 60);
  ASSERT_TRUE(comm.ok()) << comm.status();
  DeviceBuffer dx(sizeof(float));
  const float one = 1.0f;
  ASSERT_EQ(cudaMemcpy(dx.ptr, &one, sizeof(one), cudaMemcpyHostToDevice), cudaSuccess);
  absl::Status s = (*comm)->AllReduceSum(static_cast<float*>(dx.ptr),
                                         static_cast<float*>(dx.ptr), 1, nullptr);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  comm->reset();
  EXPECT_EQ(lib_->comm_destroy(lent), nccl::kSuccess) << "still the owner's, and still alive";
}

#endif  // NORMUON_TEST_NO_CUDA

}  // namespace
}  // namespace normuon
