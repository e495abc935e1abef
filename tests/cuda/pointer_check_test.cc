// The CUDA backend's pointer checks through the public C API (kernels/cuda/cuda_backend.cu,
// CheckPointer; RELIABILITY.md): a runtime on NORMUON_BACKEND_CUDA refuses, at register and at
// bind, parameter and gradient pointers that are pageable host memory, pinned host memory or
// memory of another device, naming the parameter and the pointer; it accepts device memory and
// managed memory; a refused bind changes nothing (the next step runs on the old pointers).
//
// Without a CUDA device (CI) or in a CPU-only build (--define=cuda=off) every test skips, saying
// why. The other-device case needs two GPUs and skips on one.
#include <gtest/gtest.h>

#ifdef NORMUON_WITH_CUDA
#include <cuda_runtime.h>
#endif

#include <cstdlib>
#include <string>
#include <vector>

#include "normuon/normuon.h"

namespace {

#ifndef NORMUON_WITH_CUDA

TEST(PointerCheckTest, NeedsTheCudaBuild) {
  GTEST_SKIP() << "built without CUDA (--define=cuda=off): there is no CUDA backend to check";
}

#else  // NORMUON_WITH_CUDA

constexpr int64_t kRows = 8, kCols = 4;
constexpr size_t kBytes = kRows * kCols * sizeof(float);

bool HasDevice() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

class PointerCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HasDevice()) GTEST_SKIP() << "no CUDA device: the pointer checks are not exercised";
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    normuon_config_t c;
    normuon_config_init(&c);
    c.backend = NORMUON_BACKEND_CUDA;
    c.device = 0;
    ASSERT_EQ(normuon_create(&c, 0, &rt_), NORMUON_SUCCESS) << normuon_last_error(0);
    ASSERT_EQ(cudaMalloc(&param_, kBytes), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&grad_, kBytes), cudaSuccess);
    std::vector<float> init(kRows * kCols, 0.5f);
    ASSERT_EQ(cudaMemcpy(param_, init.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(grad_, init.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);
  }
  void TearDown() override {
    if (rt_ != 0) normuon_destroy(rt_);
    cudaFree(param_);
    cudaFree(grad_);
  }

  // Registers "w" (kRows x kCols fp32, all rows) with the given pointers.
  normuon_status_t Register(void* param, const void* grad, normuon_param_t* out) {
    normuon_param_desc_t d;
    normuon_param_desc_init(&d);
    d.name = "w";
    d.rows = kRows;
    d.cols = kCols;
    d.row_begin = 0;
    d.row_count = kRows;
    d.param = param;
    d.grad = grad;
    return normuon_register_matrix(rt_, &d, out);
  }

  normuon_runtime_t rt_ = 0;
  void* param_ = nullptr;
  void* grad_ = nullptr;
};

TEST_F(PointerCheckTest, HostMemoryIsRefusedAtRegisterNamingTheParameterAndPointer) {
  std::vector<float> pageable(kRows * kCols, 1.0f);
  normuon_param_t id = -1;
  EXPECT_EQ(Register(pageable.data(), grad_, &id), NORMUON_ERROR_INVALID_ARGUMENT);
  std::string message = normuon_last_error(rt_);
  EXPECT_TRUE(Contains(message, "parameter 'w': param")) << message;
  EXPECT_TRUE(Contains(message, "host memory") || Contains(message, "not CUDA device memory"))
      << message;

  void* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned, kBytes), cudaSuccess);
  EXPECT_EQ(Register(param_, pinned, &id), NORMUON_ERROR_INVALID_ARGUMENT);
  message = normuon_last_error(rt_);
  EXPECT_TRUE(Contains(message, "parameter 'w': grad")) << message;
  EXPECT_TRUE(Contains(message, "host memory")) << message;
  cudaFreeHost(pinned);
  EXPECT_EQ(id, -1);
}

TEST_F(PointerCheckTest, DeviceAndManagedMemoryAreAcceptedAndStep) {
  void* managed = nullptr;
  ASSERT_EQ(cudaMallocManaged(&managed, kBytes), cudaSuccess);
  std::vector<float> grad(kRows * kCols, 0.25f);
  ASSERT_EQ(cudaMemcpy(managed, grad.data(), kBytes, cudaMemcpyDefault), cudaSuccess);
  normuon_param_t id = -1;
  ASSERT_EQ(Register(param_, managed, &id), NORMUON_SUCCESS) << normuon_last_error(rt_);
  ASSERT_EQ(normuon_finalize(rt_), NORMUON_SUCCESS) << normuon_last_error(rt_);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  EXPECT_EQ(normuon_step(rt_, 0.02f, 0.0f, stream), NORMUON_SUCCESS) << normuon_last_error(rt_);
  normuon_step_info_t info;
  normuon_step_info_init(&info);
  EXPECT_EQ(normuon_step_result(rt_, &info), NORMUON_SUCCESS);
  EXPECT_EQ(info.steps_taken, 1);
  cudaStreamDestroy(stream);
  cudaFree(managed);
}

TEST_F(PointerCheckTest, ARefusedBindChangesNothing) {
  normuon_param_t id = -1;
  ASSERT_EQ(Register(param_, grad_, &id), NORMUON_SUCCESS) << normuon_last_error(rt_);
  ASSERT_EQ(normuon_finalize(rt_), NORMUON_SUCCESS) << normuon_last_error(rt_);
  std::vector<float> host(kRows * kCols, 9.0f);
  EXPECT_EQ(normuon_bind(rt_, id, param_, host.data()), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(normuon_last_error(rt_), "parameter 'w': grad")) << normuon_last_error(rt_);
  EXPECT_EQ(normuon_bind(rt_, id, host.data(), grad_), NORMUON_ERROR_INVALID_ARGUMENT);
  // The step runs on the device pointers registered first: the parameter moves, the host
  // buffer is untouched.
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(normuon_step(rt_, 0.02f, 0.0f, stream), NORMUON_SUCCESS) << normuon_last_error(rt_);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  std::vector<float> after(kRows * kCols);
  ASSERT_EQ(cudaMemcpy(after.data(), param_, kBytes, cudaMemcpyDeviceToHost), cudaSuccess);
  bool moved = false;
  for (float x : after) moved = moved || x != 0.5f;
  EXPECT_TRUE(moved) << "the step did not update the registered device parameter";
  for (float x : host) ASSERT_EQ(x, 9.0f);
  cudaStreamDestroy(stream);
}

TEST_F(PointerCheckTest, MemoryOfAnotherDeviceIsRefused) {
  int n = 0;
  ASSERT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
  if (n < 2) GTEST_SKIP() << "one CUDA device: no other device's memory to hand over";
  void* other = nullptr;
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&other, kBytes), cudaSuccess);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  normuon_param_t id = -1;
  EXPECT_EQ(Register(other, grad_, &id), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(normuon_last_error(rt_), "memory of CUDA device 1"))
      << normuon_last_error(rt_);
  cudaFree(other);
}

#endif  // NORMUON_WITH_CUDA

}  // namespace
