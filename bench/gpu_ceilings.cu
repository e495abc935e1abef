// gpu_ceilings.cu: the same-run ceilings and helpers declared in gpu_ceilings.h. Host code only;
// compiled by nvcc (build_defs/cuda.bzl) because cuBLAS's headers need the CUDA include tree.
#include "bench/gpu_ceilings.h"

#include <cublas_v2.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/bf16.h"
#include "base/status_macros.h"
#include "tools/common/random_fill.h"

namespace normuon_bench {

absl::Status CudaCheck(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(e), ": ", cudaGetErrorString(e)));
}

namespace {

absl::Status CublasCheck(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cublasGetStatusString(s)));
}

}  // namespace

std::string NoDeviceReason() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return absl::StrCat("no CUDA device: cudaGetDeviceCount: ", cudaGetErrorName(e), ": ",
                        cudaGetErrorString(e));
  }
  if (count == 0) return "no CUDA device: cudaGetDeviceCount found none";
  return "";
}

std::string DeviceDescription(int device) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) {
    cudaGetLastError();
    return absl::StrCat("CUDA device ", device, " (properties unavailable)");
  }
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  return absl::StrFormat("%s, sm_%d%d, %d SMs, %.0f MiB L2, %.1f GiB, driver %d, runtime %d",
                         p.name, p.major, p.minor, p.multiProcessorCount,
                         p.l2CacheSize / 1048576.0, p.totalGlobalMem / 1073741824.0, driver,
                         runtime);
}

BenchGpu::~BenchGpu() {
  backend.reset();
  if (stream != nullptr) cudaStreamDestroy(stream);
}

absl::StatusOr<std::unique_ptr<BenchGpu>> OpenBenchGpu(
    const std::vector<normuon::GroupScalars>& groups, std::string* skip_reason) {
  *skip_reason = NoDeviceReason();
  if (!skip_reason->empty()) return std::unique_ptr<BenchGpu>();
  absl::StatusOr<std::unique_ptr<normuon::Backend>> backend = normuon::MakeCudaBackend(0);
  if (!backend.ok()) {
    *skip_reason = absl::StrCat("no CUDA device: ", backend.status().message());
    return std::unique_ptr<BenchGpu>();
  }
  auto gpu = std::make_unique<BenchGpu>();
  gpu->backend = *std::move(backend);
  const size_t scalar_bytes = groups.size() * sizeof(normuon::GroupScalars);
  NORMUON_RETURN_IF_ERROR(
      CudaCheck(cudaStreamCreateWithFlags(&gpu->stream, cudaStreamNonBlocking), "cudaStreamCreate"));
  if (scalar_bytes > 0) NORMUON_RETURN_IF_ERROR(gpu->scalars.Allocate(scalar_bytes));
  NORMUON_RETURN_IF_ERROR(gpu->control.Allocate(sizeof(normuon::StepControl)));
  NORMUON_RETURN_IF_ERROR(gpu->backend->BeginStep(
      gpu->stream, scalar_bytes > 0 ? groups.data() : nullptr,
      scalar_bytes > 0 ? gpu->scalars.get() : nullptr, scalar_bytes,
      gpu->control.as<normuon::StepControl>()));
  NORMUON_RETURN_IF_ERROR(CudaCheck(cudaStreamSynchronize(gpu->stream), "BeginStep"));
  return gpu;
}

DeviceBuffer::~DeviceBuffer() { Reset(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    Reset();
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

absl::Status DeviceBuffer::Allocate(size_t bytes) {
  Reset();
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1));
  if (e != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrCat("cudaMalloc of ", bytes, " bytes: ",
                                                     cudaGetErrorString(e)));
  }
  ptr_ = p;
  bytes_ = bytes;
  return absl::OkStatus();
}

void DeviceBuffer::Reset() {
  if (ptr_ != nullptr) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

absl::Status FillRandom(void* dev, normuon::DType dtype, int64_t n, float mean, float sigma,
                        uint64_t seed, bool abs) {
  if (n <= 0) return absl::OkStatus();
  // A pool of 2^22 draws; tile k copies `tile` elements starting at a shifting offset.
  constexpr int64_t kPool = int64_t{1} << 22;
  const int64_t pool_n = std::min(n, kPool);
  std::vector<float> pool(static_cast<size_t>(pool_n));
  normuon_tools::FillNormal(pool.data(), pool_n, sigma, seed, 0, 0);
  if (mean != 0.0f || abs) {
    for (float& x : pool) x = mean + (abs ? std::fabs(x) : x);
  }
  const size_t elem = normuon::SizeOf(dtype);
  const int64_t tile = std::max<int64_t>(1, pool_n / 2);
  // bf16 or fp16 (the Newton-Schulz dtypes) as 16-bit patterns.
  std::vector<uint16_t> bits(dtype != normuon::DType::kF32 ? static_cast<size_t>(pool_n) : 0);
  for (size_t i = 0; i < bits.size(); ++i) {
    if (dtype == normuon::DType::kBF16) {
      bits[i] = normuon::FloatToBf16(pool[i]).bits;
    } else {
      const __half_raw h = __float2half_rn(pool[i]);
      bits[i] = h.x;
    }
  }
  const void* host = dtype != normuon::DType::kF32 ? static_cast<const void*>(bits.data())
                                                   : static_cast<const void*>(pool.data());
  char* out = static_cast<char*>(dev);
  int64_t done = 0;
  for (int64_t k = 0; done < n; ++k) {
    const int64_t count = std::min(tile, n - done);
    const int64_t span = pool_n - count;  // >= 0
    const int64_t offset = span == 0 ? 0 : (k * 7919) % (span + 1);
    NORMUON_RETURN_IF_ERROR(CudaCheck(
        cudaMemcpy(out + done * elem, static_cast<const char*>(host) + offset * elem,
                   static_cast<size_t>(count) * elem, cudaMemcpyHostToDevice),
        "cudaMemcpy (random fill)"));
    done += count;
  }
  return absl::OkStatus();
}

absl::Status FillConstant(float* dev, int64_t n, float value) {
  if (n <= 0) return absl::OkStatus();
  std::vector<float> host(static_cast<size_t>(n), value);
  return CudaCheck(cudaMemcpy(dev, host.data(), host.size() * sizeof(float),
                              cudaMemcpyHostToDevice),
                   "cudaMemcpy (constant fill)");
}

EventTimer::~EventTimer() {
  if (start_ != nullptr) cudaEventDestroy(start_);
  if (stop_ != nullptr) cudaEventDestroy(stop_);
}

absl::Status EventTimer::Init() {
  if (start_ == nullptr) NORMUON_RETURN_IF_ERROR(CudaCheck(cudaEventCreate(&start_), "cudaEventCreate"));
  if (stop_ == nullptr) NORMUON_RETURN_IF_ERROR(CudaCheck(cudaEventCreate(&stop_), "cudaEventCreate"));
  return absl::OkStatus();
}

absl::Status EventTimer::Start(cudaStream_t stream) {
  return CudaCheck(cudaEventRecord(start_, stream), "cudaEventRecord");
}

absl::StatusOr<double> EventTimer::StopMs(cudaStream_t stream) {
  NORMUON_RETURN_IF_ERROR(CudaCheck(cudaEventRecord(stop_, stream), "cudaEventRecord"));
  NORMUON_RETURN_IF_ERROR(CudaCheck(cudaEventSynchronize(stop_), "cudaEventSynchronize"));
  float ms = 0.0f;
  NORMUON_RETURN_IF_ERROR(CudaCheck(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime"));
  return static_cast<double>(ms);
}

absl::Status RegionTimer::Init(cudaStream_t stream, std::function<absl::Status()> work,
                               int warmup, double target_ms, int max_calls) {
  stream_ = stream;
  work_ = std::move(work);
  NORMUON_RETURN_IF_ERROR(timer_.Init());
  for (int i = 0; i < warmup; ++i) NORMUON_RETURN_IF_ERROR(work_());
  // One timed call sizes the regions.
  NORMUON_RETURN_IF_ERROR(timer_.Start(stream_));
  NORMUON_RETURN_IF_ERROR(work_());
  NORMUON_ASSIGN_OR_RETURN(const double one_ms, timer_.StopMs(stream_));
  calls_ = static_cast<int>(
      std::clamp(target_ms / std::max(one_ms, 1e-4), 1.0, static_cast<double>(max_calls)));
  return absl::OkStatus();
}

absl::StatusOr<double> RegionTimer::Region() {
  NORMUON_RETURN_IF_ERROR(timer_.Start(stream_));
  for (int i = 0; i < calls_; ++i) NORMUON_RETURN_IF_ERROR(work_());
  NORMUON_ASSIGN_OR_RETURN(const double ms, timer_.StopMs(stream_));
  return ms * 1e-3 / calls_;
}

absl::StatusOr<double> MedianSeconds(cudaStream_t stream,
                                     const std::function<absl::Status()>& work, int warmup,
                                     int reps, double target_ms) {
  RegionTimer regions;
  NORMUON_RETURN_IF_ERROR(regions.Init(stream, work, warmup, target_ms));
  std::vector<double> seconds;
  for (int r = 0; r < reps; ++r) {
    NORMUON_ASSIGN_OR_RETURN(const double s, regions.Region());
    seconds.push_back(s);
  }
  NORMUON_RETURN_IF_ERROR(CudaCheck(cudaGetLastError(), "kernel launch"));
  std::nth_element(seconds.begin(), seconds.begin() + seconds.size() / 2, seconds.end());
  return seconds[seconds.size() / 2];
}

PlainCublas::~PlainCublas() {
  if (handle_ != nullptr) cublasDestroy(handle_);
}

absl::Status PlainCublas::Init(cudaStream_t stream) {
  if (handle_ == nullptr) NORMUON_RETURN_IF_ERROR(CublasCheck(cublasCreate(&handle_), "cublasCreate"));
  return CublasCheck(cublasSetStream(handle_, stream), "cublasSetStream");
}

absl::StatusOr<double> GemmRate(const PlainCublas& cublas, cudaStream_t stream,
                                normuon::DType dtype, int64_t s, int64_t l, int64_t batch) {
  const size_t elem = normuon::SizeOf(dtype);
  DeviceBuffer x, c;
  NORMUON_RETURN_IF_ERROR(x.Allocate(static_cast<size_t>(batch * s * l) * elem));
  NORMUON_RETURN_IF_ERROR(c.Allocate(static_cast<size_t>(batch * s * s) * elem));
  NORMUON_RETURN_IF_ERROR(FillRandom(x.get(), dtype, batch * s * l, 0.0f, 1.0f, 7 + s + l));
  const int si = static_cast<int>(s), li = static_cast<int>(l), bi = static_cast<int>(batch);
  const long long stride_x = static_cast<long long>(s) * l;
  const long long stride_c = static_cast<long long>(s) * s;
  const float alpha = 1.0f, beta = 0.0f;
  cublasHandle_t h = cublas.get();
  // X (s x l, row-major) read column-major is Y = X^T (l x s); C = Y^T Y = X X^T, s x s, as the
  // backend's Gram product of a wide matrix.
  std::function<absl::Status()> work;
  if (dtype == normuon::DType::kBF16) {
    work = [&]() -> absl::Status {
      if (bi == 1) {
        return CublasCheck(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, si, si, li, &alpha, x.get(),
                                        CUDA_R_16BF, li, x.get(), CUDA_R_16BF, li, &beta, c.get(),
                                        CUDA_R_16BF, si, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                           "cublasGemmEx");
      }
      return CublasCheck(
          cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, si, si, li, &alpha, x.get(),
                                     CUDA_R_16BF, li, stride_x, x.get(), CUDA_R_16BF, li,
                                     stride_x, &beta, c.get(), CUDA_R_16BF, si, stride_c, bi,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmStridedBatchedEx");
    };
  } else {
    work = [&]() -> absl::Status {
      const float* xf = x.as<float>();
      if (bi == 1) {
        return CublasCheck(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, si, si, li, &alpha, xf, li,
                                       xf, li, &beta, c.as<float>(), si),
                           "cublasSgemm");
      }
      return CublasCheck(cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, si, si, li,
                                                   &alpha, xf, li, stride_x, xf, li, stride_x,
                                                   &beta, c.as<float>(), si, stride_c, bi),
                         "cublasSgemmStridedBatched");
    };
  }
  NORMUON_ASSIGN_OR_RETURN(const double sec, MedianSeconds(stream, work));
  return 2.0 * static_cast<double>(s) * s * l * batch / sec;
}

absl::StatusOr<double> CopyRate(cudaStream_t stream, size_t moved_bytes) {
  const size_t half = std::max<size_t>(moved_bytes / 2, 16);
  DeviceBuffer src, dst;
  NORMUON_RETURN_IF_ERROR(src.Allocate(half));
  NORMUON_RETURN_IF_ERROR(dst.Allocate(half));
  NORMUON_RETURN_IF_ERROR(FillRandom(src.get(), normuon::DType::kF32, static_cast<int64_t>(half / 4),
                             0.0f, 1.0f, 11));
  NORMUON_ASSIGN_OR_RETURN(const double sec, MedianSeconds(stream, [&]() {
                     return CudaCheck(cudaMemcpyAsync(dst.get(), src.get(), half,
                                                      cudaMemcpyDeviceToDevice, stream),
                                      "cudaMemcpyAsync");
                   }));
  return 2.0 * static_cast<double>(half) / sec;
}

}  // namespace normuon_bench
