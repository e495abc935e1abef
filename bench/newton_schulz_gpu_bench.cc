// Newton-Schulz (NS5) throughput of the CUDA backend against the GPU's own ceiling: a plain
// cuBLAS GEMM of the Gram product's shape (s x s x l), measured in the same binary and run.
//
// Each case is one NsBatch of same-shape matrices of a real model (GPT-2 124M, Llama-3.2-1B,
// Llama-3-8B layouts; one matrix per layer, so the batch is the model's layer count), random
// data, orthogonalized by MakeCudaBackend(0)->NewtonSchulz after Prepare, timed with CUDA events
// around the call (UseManualTime). bf16 mode (bf16 GEMM inputs, fp32 accumulation: the CUDA
// default) runs every shape; fp32 mode (sgemm, no TF32) runs the GPT-2 and Llama-1B shapes (an
// 8B fp32 batch takes seconds per call).
//
// Counters (FLOPs: sharding::Ns5Flops, 5 iterations of 4*s^2*l + 2*s^3 per matrix; the
// normalization and the copies between GEMMs are not counted):
//   TFLOP/s               NS5 rate
//   gemm_TFLOP/s          one s x s x l GEMM (cublasGemmEx bf16 with CUBLAS_COMPUTE_32F, or
//                         cublasSgemm), default cuBLAS settings, same run
//   gemm_batched_TFLOP/s  the strided-batched GEMM over the same batch count
//   ratio_to_gemm         TFLOP/s / gemm_TFLOP/s  (the ceiling the issue names)
//   ratio_to_best_gemm    TFLOP/s / max(gemm, gemm_batched)
//
//   bazel run -c opt //bench:newton_schulz_gpu_bench -- --benchmark_format=json
//   .device/bin/newton_schulz_gpu_bench --benchmark_filter=bf16/gpt2 ...   (tools/device_check.sh)
//
// Without a CUDA device it prints "no CUDA device: skipped" and exits 0; in a CPU-only build
// (--define=cuda=off) it says so and exits 0.
#include <cstdio>

#ifndef NORMUON_WITH_CUDA

int main() {
  std::printf("newton_schulz_gpu_bench: built without CUDA (--define=cuda=off): skipped\n");
  return 0;
}

#else  // NORMUON_WITH_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/gpu_ceilings.h"
#include "bench/gpu_regions.h"
#include "benchmark/benchmark.h"
#include "kernels/backend.h"
#include "base/bf16.h"
#include "base/status_macros.h"
#include "sharding/owner_assignment.h"

namespace {

using normuon::DType;
using normuon_bench::DeviceBuffer;

struct NsCase {
  const char* model;
  const char* matrix;  // which weights have this shape
  int64_t rows, cols;
  int64_t count;       // matrices in the batch (the model's layer count)
  bool fp32;           // also run in fp32 mode
};

// The same-shape groups of the three models (one matrix per layer).
const NsCase kCases[] = {
    {"gpt2-124m", "attn.c_proj", 768, 768, 12, true},
    {"gpt2-124m", "attn.c_attn", 2304, 768, 12, true},
    {"gpt2-124m", "mlp.c_fc", 3072, 768, 12, true},
    {"gpt2-124m", "mlp.c_proj", 768, 3072, 12, true},
    {"llama-1b", "q_proj,o_proj", 2048, 2048, 16, true},
    {"llama-1b", "k_proj,v_proj", 512, 2048, 16, true},
    {"llama-1b", "gate_proj,up_proj", 8192, 2048, 16, true},
    {"llama-1b", "down_proj", 2048, 8192, 16, true},
    {"llama-8b", "q_proj,o_proj", 4096, 4096, 32, false},
    {"llama-8b", "k_proj,v_proj", 1024, 4096, 32, false},
    {"llama-8b", "gate_proj,up_proj", 14336, 4096, 32, false},
    {"llama-8b", "down_proj", 4096, 14336, 32, false},
};

const std::vector<std::array<float, 3>> kQuintic5(5, {3.4445f, -4.7750f, 2.0315f});

// Process-wide GPU state: the backend under test on its stream, and the plain cuBLAS handle of
// the ceiling on the same stream.
normuon_bench::BenchGpu* g_gpu = nullptr;
const normuon_bench::PlainCublas* g_cublas = nullptr;

// The buffers of the case being run; kept across Google Benchmark's repeated calls of one case
// and replaced when the next case starts (the Llama-8B batches need several GiB).
struct NsFixture {
  std::string key;
  DeviceBuffer u, o, control;  // control: the Gram divergence check's StepControl
  double gemm = 0.0, gemm_batched = 0.0;
};
std::unique_ptr<NsFixture> g_fixture;

// The case's batch on the fixture's buffers, as the runtime hands it to the backend.
normuon::NsBatch Batch(const NsCase& c, DType dtype, const NsFixture& f, bool gram) {
  normuon::NsBatch b;
  b.rows = c.rows;
  b.cols = c.cols;
  b.count = c.count;
  b.u = f.u.get();
  b.o = f.o.get();
  b.dtype = dtype;
  b.coefficients = kQuintic5;
  if (gram) {  // Gram Newton-Schulz with the library's default restarts and its check
    b.method = normuon::NsMethod::kGram;
    b.restarts = normuon::DefaultGramRestarts(5, false);
    for (int64_t k = 0; k < c.count; ++k) b.params.push_back(static_cast<int32_t>(k));
    b.control = static_cast<normuon::StepControl*>(f.control.get());
  }
  return b;
}

absl::Status BuildFixture(const NsCase& c, DType dtype, bool gram, const std::string& key) {
  g_fixture.reset();  // free the previous case's memory first
  auto f = std::make_unique<NsFixture>();
  f->key = key;
  const int64_t n = c.count * c.rows * c.cols;
  const size_t bytes = static_cast<size_t>(n) * normuon::SizeOf(dtype);
  NORMUON_RETURN_IF_ERROR(f->u.Allocate(bytes));
  NORMUON_RETURN_IF_ERROR(f->o.Allocate(bytes));
  NORMUON_RETURN_IF_ERROR(f->control.Allocate(sizeof(normuon::StepControl)));
  NORMUON_RETURN_IF_ERROR(normuon_bench::FillRandom(f->u.get(), dtype, n, 0.0f, 1.0f, 1));
  NORMUON_RETURN_IF_ERROR(g_gpu->backend->Prepare({Batch(c, dtype, *f, gram)}));
  const int64_t s = std::min(c.rows, c.cols), l = std::max(c.rows, c.cols);
  NORMUON_ASSIGN_OR_RETURN(f->gemm, normuon_bench::GemmRate(*g_cublas, g_gpu->stream, dtype, s, l, 1));
  NORMUON_ASSIGN_OR_RETURN(f->gemm_batched,
                   normuon_bench::GemmRate(*g_cublas, g_gpu->stream, dtype, s, l, c.count));
  g_fixture = std::move(f);
  return absl::OkStatus();
}

// The output is finite and not all zero (first matrix, first 64 Ki elements): a cheap guard
// against timing a call that did nothing. Correctness is tests/cuda/cuda_backend_test's job.
absl::Status CheckOutput(const void* o, DType dtype, int64_t n) {
  n = std::min<int64_t>(n, 65536);
  std::vector<float> host(static_cast<size_t>(n));
  if (dtype == DType::kF32) {
    NORMUON_RETURN_IF_ERROR(normuon_bench::CudaCheck(
        cudaMemcpy(host.data(), o, n * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy"));
  } else {
    std::vector<uint16_t> bits(static_cast<size_t>(n));
    NORMUON_RETURN_IF_ERROR(normuon_bench::CudaCheck(
        cudaMemcpy(bits.data(), o, n * sizeof(uint16_t), cudaMemcpyDeviceToHost), "cudaMemcpy"));
    for (int64_t i = 0; i < n; ++i) host[i] = normuon::Bf16ToFloat(normuon::Bf16{bits[i]});
  }
  double sum_sq = 0.0;
  for (float x : host) {
    if (!std::isfinite(x)) return absl::InternalError("Newton-Schulz output is not finite");
    sum_sq += static_cast<double>(x) * x;
  }
  if (sum_sq == 0.0) return absl::InternalError("Newton-Schulz output is all zero");
  return absl::OkStatus();
}

// gram: Gram Newton-Schulz (TFLOP/s then counts the standard iteration's FLOPs: an effective
// rate, comparable with the standard case's).
void BM_NewtonSchulzCuda(benchmark::State& state, NsCase c, DType dtype, bool gram) {
  const std::string key =
      absl::StrCat(c.model, c.rows, "x", c.cols, "/", static_cast<int>(dtype), gram ? "/gram" : "");
  if (g_fixture == nullptr || g_fixture->key != key) {
    const absl::Status st = BuildFixture(c, dtype, gram, key);
    if (!st.ok()) {
      g_fixture.reset();
      state.SkipWithError(std::string(st.message()).c_str());
      return;
    }
  }
  const normuon::NsBatch b = Batch(c, dtype, *g_fixture, gram);
  // Regions of about a millisecond (at most 100 calls), so launch latency does not count against
  // the small GPT-2 batches; one warm-up call (it picks the cuBLAS kernels).
  normuon_bench::RegionTimer regions;
  absl::Status st = regions.Init(
      g_gpu->stream, [&b] { return g_gpu->backend->NewtonSchulz(b); }, 1, 1.0, 100);
  if (!st.ok()) {
    state.SkipWithError(std::string(st.message()).c_str());
    return;
  }
  const double total_seconds = normuon_bench::TimeRegions(state, regions);
  if (total_seconds < 0.0) return;
  st = CheckOutput(b.o, dtype, c.rows * c.cols);
  if (!st.ok()) {
    state.SkipWithError(std::string(st.message()).c_str());
    return;
  }
  // The rate of the mean call, as Google Benchmark's manual time reports it.
  const double flops = normuon::sharding::Ns5Flops(c.rows, c.cols) * static_cast<double>(c.count);
  const double rate = flops * static_cast<double>(state.iterations()) / total_seconds;
  const double gemm = g_fixture->gemm, batched = g_fixture->gemm_batched;
  state.counters["TFLOP/s"] = rate * 1e-12;
  state.counters["gemm_TFLOP/s"] = gemm * 1e-12;
  state.counters["gemm_batched_TFLOP/s"] = batched * 1e-12;
  state.counters["ratio_to_gemm"] = rate / gemm;
  state.counters["ratio_to_best_gemm"] = rate / std::max(gemm, batched);
  state.counters["batch"] = static_cast<double>(c.count);
  state.SetLabel(absl::StrFormat("%s %s %lldx%lld x%lld", c.model, c.matrix,
                                 static_cast<long long>(c.rows), static_cast<long long>(c.cols),
                                 static_cast<long long>(c.count)));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::string skip;
  absl::StatusOr<std::unique_ptr<normuon_bench::BenchGpu>> gpu =
      normuon_bench::OpenBenchGpu({}, &skip);  // Newton-Schulz takes no step scalars
  normuon_bench::PlainCublas cublas;
  absl::Status st = gpu.status();
  if (st.ok() && *gpu != nullptr) st = cublas.Init((*gpu)->stream);
  if (!st.ok()) {
    std::fprintf(stderr, "newton_schulz_gpu_bench: set-up failed: %s\n",
                 std::string(st.message()).c_str());
    return 1;
  }
  if (*gpu == nullptr) {
    std::printf("newton_schulz_gpu_bench: %s: skipped\n", skip.c_str());
    return 0;
  }
  g_gpu = gpu->get();
  g_cublas = &cublas;
  benchmark::AddCustomContext("device", normuon_bench::DeviceDescription(0));
  benchmark::AddCustomContext("ceiling", "plain cuBLAS GEMM of s x s x l, same run");

  for (DType dtype : {DType::kBF16, DType::kF32}) {
    const char* mode = dtype == DType::kBF16 ? "bf16" : "fp32";
    for (const NsCase& c : kCases) {
      if (dtype == DType::kF32 && !c.fp32) continue;
      const std::string name = absl::StrFormat("NS5/%s/%s/%lldx%lld/batch:%lld", mode, c.model,
                                               static_cast<long long>(c.rows),
                                               static_cast<long long>(c.cols),
                                               static_cast<long long>(c.count));
      benchmark::RegisterBenchmark(name.c_str(), BM_NewtonSchulzCuda, c, dtype, false)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  // Gram Newton-Schulz (bf16) on the rectangular batches (square ones run the standard iteration).
  for (const NsCase& c : kCases) {
    if (c.rows == c.cols) continue;
    const std::string name =
        absl::StrFormat("GramNS5/bf16/%s/%lldx%lld/batch:%lld", c.model,
                        static_cast<long long>(c.rows), static_cast<long long>(c.cols),
                        static_cast<long long>(c.count));
    benchmark::RegisterBenchmark(name.c_str(), BM_NewtonSchulzCuda, c, DType::kBF16, true)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_fixture.reset();
  gpu->reset();  // the backend, then its stream
  return 0;
}

#endif  // NORMUON_WITH_CUDA
