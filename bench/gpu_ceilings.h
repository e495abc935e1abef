// gpu_ceilings.h: what the GPU benchmarks measure besides their own kernels (CUDA build only;
// the implementation, gpu_ceilings.cu, is compiled by nvcc).
//
// Every GPU figure in bench/ is reported with a ceiling measured in the same binary and run
// (../shared/STYLE.md, "how we report speed"): a plain cuBLAS GEMM for the Newton-Schulz rate
// and a device-to-device copy for the elementwise kernels' bandwidth. This header holds those
// two measurements, the CUDA/cuBLAS status checks, device buffers, random fills (never zeros:
// they hide unwritten outputs and can run faster than real data) and an event timer.
//
// Conventions: a GEMM's FLOPs are 2*m*n*k; a copy of N bytes moves 2N bytes (read + write), the
// same way the kernels' bytes are counted. Timings are medians over repeated event-timed
// regions after a warm-up; a region repeats its work until it lasts about a millisecond, so
// launch latency does not pose as a slow ceiling for small shapes.
#ifndef NORMUON_BENCH_GPU_CEILINGS_H_
#define NORMUON_BENCH_GPU_CEILINGS_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"

// cuBLAS's handle (cublasHandle_t is a pointer to it).
struct cublasContext;

namespace normuon_bench {

absl::Status CudaCheck(cudaError_t e, const char* what);

// "no CUDA device: ..." when this process sees no usable GPU, "" when it does. Clears the error
// state the failed query leaves behind.
std::string NoDeviceReason();

// "NVIDIA H100 80GB HBM3, 132 SMs, 50 MiB L2, driver 13000" for the benchmarks' context line.
std::string DeviceDescription(int device);

// cudaMalloc'ed memory, freed on destruction. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  absl::Status Allocate(size_t bytes);
  void Reset();
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// The CUDA backend of device 0 for a benchmark's whole run, bound by BeginStep to a stream of its
// own (non-blocking), with `groups` copied to device memory as the step's scalars (none: no
// scalars) and a cleared control block, so commits are not skipped.
struct BenchGpu {
  BenchGpu() = default;
  ~BenchGpu();  // the backend, then the stream
  BenchGpu(const BenchGpu&) = delete;
  BenchGpu& operator=(const BenchGpu&) = delete;

  std::unique_ptr<normuon::Backend> backend;
  cudaStream_t stream = nullptr;
  DeviceBuffer scalars;  // the GroupScalars given to OpenBenchGpu
  DeviceBuffer control;  // StepControl
};

// Null, with *skip_reason set ("no CUDA device: ..."), when this process sees no usable GPU: the
// benchmark prints it and exits 0. An error when a set-up call fails.
absl::StatusOr<std::unique_ptr<BenchGpu>> OpenBenchGpu(
    const std::vector<normuon::GroupScalars>& groups, std::string* skip_reason);

// Fills n elements of `dtype` at dev with approximately N(mean, sigma^2) values (abs: |x|).
// Made on the host from a pool of a few million draws, tiled with shifting offsets, so large
// buffers fill quickly and no two tiles are alike.
absl::Status FillRandom(void* dev, normuon::DType dtype, int64_t n, float mean, float sigma,
                        uint64_t seed, bool abs = false);
// Fills n floats with `value`.
absl::Status FillConstant(float* dev, int64_t n, float value);

// Two events on one stream.
class EventTimer {
 public:
  EventTimer() = default;
  ~EventTimer();
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  absl::Status Init();
  absl::Status Start(cudaStream_t stream);
  // Records the stop event, waits for it, returns the milliseconds since Start.
  absl::StatusOr<double> StopMs(cudaStream_t stream);

 private:
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};

// Times `work` (which queues on `stream`) in event-timed regions of back-to-back calls, so that
// launch latency does not pose as a slow kernel: Init makes `warmup` untimed calls (the first
// picks cuBLAS kernels) and one timed call that sizes a region to about target_ms (1 to
// max_calls calls); each Region() then runs one region and returns the seconds of one call.
class RegionTimer {
 public:
  absl::Status Init(cudaStream_t stream, std::function<absl::Status()> work, int warmup,
                    double target_ms = 1.0, int max_calls = 1000);
  absl::StatusOr<double> Region();
  int calls() const { return calls_; }  // per region

 private:
  cudaStream_t stream_ = nullptr;
  std::function<absl::Status()> work_;
  EventTimer timer_;
  int calls_ = 1;
};

// Median seconds of one call of `work` (which queues on `stream`), timed with events: `warmup`
// untimed calls, then `reps` regions of `inner` back-to-back calls each (inner chosen from the
// first timing so that a region lasts about target_ms).
absl::StatusOr<double> MedianSeconds(cudaStream_t stream, const std::function<absl::Status()>& work,
                                     int warmup = 2, int reps = 7, double target_ms = 1.0);

// A cuBLAS handle on `stream` with cuBLAS's default settings ("a plain GEMM"). The handle type
// is only forward-declared here (cublasHandle_t is a cublasContext*), so that host code compiled
// without nvcc need not include cuBLAS's headers.
class PlainCublas {
 public:
  PlainCublas() = default;
  ~PlainCublas();
  PlainCublas(const PlainCublas&) = delete;
  PlainCublas& operator=(const PlainCublas&) = delete;
  absl::Status Init(cudaStream_t stream);
  cublasContext* get() const { return handle_; }

 private:
  cublasContext* handle_ = nullptr;
};

// FLOP/s of the Newton-Schulz Gram product's shape, C (s x s) = X X^T with X s x l, on random
// data in `dtype`: bf16 through cublasGemmEx (CUBLAS_COMPUTE_32F, bf16 output), fp32 through
// cublasSgemm (cuBLAS's default math: no TF32). batch > 1 uses the strided-batched call over
// `batch` independent matrices. Allocates (and frees) its own operands.
absl::StatusOr<double> GemmRate(const PlainCublas& cublas, cudaStream_t stream,
                                normuon::DType dtype, int64_t s, int64_t l, int64_t batch);

// Bytes per second (read + written) of cudaMemcpyAsync device to device that moves
// `moved_bytes` in all (copies moved_bytes / 2). Allocates its own buffers.
absl::StatusOr<double> CopyRate(cudaStream_t stream, size_t moved_bytes);

}  // namespace normuon_bench

#endif  // NORMUON_BENCH_GPU_CEILINGS_H_
