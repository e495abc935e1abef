// Bandwidth of the CUDA backend's fused elementwise kernels against the GPU's own ceiling: a
// device-to-device cudaMemcpy that moves the same number of bytes, measured in the same run.
//
// Each case runs one backend call (MakeCudaBackend(0), on its own stream after BeginStep) over a
// large matrix of random data, timed with CUDA events (UseManualTime): Blend, RowStats,
// CommitMatrix and CommitAdamW. Parameters, gradients and optimizer state are fp32; U and O are
// in the Newton-Schulz dtype of the mode (bf16, the CUDA default, or fp32). Shapes: Llama-1B's
// MLP (8192 x 2048, 64 MiB per fp32 tensor) and Llama-8B's (14336 x 4096, 224 MiB), both well
// beyond the L2 cache, so every call streams from device memory.
//
// Bytes are the fewest each kernel must move, every input read once and every output written
// once, as the planner counts them (tools/plan/cost_model.h; n = elements, r = rows, p = 4 bytes
// for fp32 tensors, q = U/O element size):
//   Blend         n*(p grad + p momentum + q U)
//   RowStats      n*q O + r*(4 v + 4 v_new + 8 row slots)
//   CommitMatrix  n*(p grad + 2p momentum + 2p param + q O) + r*(4 v_new + 4 v)
//   CommitAdamW   n*(p grad + 2p param + 2p exp_avg + 2p exp_avg_sq)
// Counters: GB/s (those bytes over the mean call time), copy_GB/s (cudaMemcpyAsync D2D moving the
// same bytes, read + written, same run) and ratio_to_copy (GB/s / copy_GB/s).
//
//   bazel run -c opt //bench:elementwise_gpu_bench -- --benchmark_format=json
//
// Without a CUDA device it prints "no CUDA device: skipped" and exits 0; in a CPU-only build
// (--define=cuda=off) it says so and exits 0.
#include <cstdio>

#ifndef NORMUON_WITH_CUDA

int main() {
  std::printf("elementwise_gpu_bench: built without CUDA (--define=cuda=off): skipped\n");
  return 0;
}

#else  // NORMUON_WITH_CUDA

#include <cuda_runtime.h>

#include <algorithm>
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
#include "tools/plan/cost_model.h"
#include "base/status_macros.h"

namespace {

using normuon::DType;
using normuon_bench::DeviceBuffer;

enum class Kernel { kBlend, kRowStats, kCommitMatrix, kCommitAdamW };

const char* KernelName(Kernel k) {
  switch (k) {
    case Kernel::kBlend:
      return "Blend";
    case Kernel::kRowStats:
      return "RowStats";
    case Kernel::kCommitMatrix:
      return "CommitMatrix";
    case Kernel::kCommitAdamW:
      return "CommitAdamW";
  }
  return "?";
}

struct Shape {
  const char* what;
  int64_t rows, cols;
};
const Shape kShapes[] = {{"llama-1b mlp", 8192, 2048}, {"llama-8b mlp", 14336, 4096}};

// The bytes a kernel must read and write: the planner's own counts (tools/plan/cost_model.h), so
// that normuon_plan --rates divides by exactly what this benchmark measured.
double KernelBytes(Kernel k, int64_t rows, int64_t cols, DType ns) {
  const int64_t n = rows * cols, q = static_cast<int64_t>(normuon::SizeOf(ns));
  switch (k) {
    case Kernel::kBlend:
      return static_cast<double>(normuon::plan::BlendBytes(n, q));
    case Kernel::kRowStats:
      return static_cast<double>(normuon::plan::RowStatsBytes(n, rows, q));
    case Kernel::kCommitMatrix:
      return static_cast<double>(normuon::plan::CommitMatrixBytes(n, rows, q));
    case Kernel::kCommitAdamW:
      return static_cast<double>(normuon::plan::CommitAdamwBytes(n));
  }
  return 0.0;
}

// The backend under test on its stream; its scalars: the NorMuon group at [0], AdamW at [1].
normuon_bench::BenchGpu* g_gpu = nullptr;

// One shape's tensors, in the dtypes of one mode; kept across the cases that share them.
struct Tensors {
  std::string key;
  int64_t rows = 0, cols = 0;
  DType ns = DType::kBF16;
  DeviceBuffer param, grad, momentum, u, o, v, v_new, slots, scale;
  DeviceBuffer exp_avg, exp_avg_sq, step;
};
std::unique_ptr<Tensors> g_tensors;

absl::Status BuildTensors(const Shape& shape, DType ns, const std::string& key) {
  g_tensors.reset();
  auto t = std::make_unique<Tensors>();
  t->key = key;
  t->rows = shape.rows;
  t->cols = shape.cols;
  t->ns = ns;
  const int64_t n = shape.rows * shape.cols, r = shape.rows;
  const size_t f = sizeof(float), q = normuon::SizeOf(ns);
  for (DeviceBuffer* b : {&t->param, &t->grad, &t->momentum, &t->exp_avg, &t->exp_avg_sq}) {
    NORMUON_RETURN_IF_ERROR(b->Allocate(n * f));
  }
  NORMUON_RETURN_IF_ERROR(t->u.Allocate(n * q));
  NORMUON_RETURN_IF_ERROR(t->o.Allocate(n * q));
  NORMUON_RETURN_IF_ERROR(t->v.Allocate(r * f));
  NORMUON_RETURN_IF_ERROR(t->v_new.Allocate(r * f));
  NORMUON_RETURN_IF_ERROR(t->slots.Allocate(2 * r * f));
  NORMUON_RETURN_IF_ERROR(t->scale.Allocate(f));
  NORMUON_RETURN_IF_ERROR(t->step.Allocate(sizeof(int64_t)));
  using normuon_bench::FillRandom;
  NORMUON_RETURN_IF_ERROR(FillRandom(t->param.get(), DType::kF32, n, 0.0f, 0.02f, 1));
  NORMUON_RETURN_IF_ERROR(FillRandom(t->grad.get(), DType::kF32, n, 0.0f, 1.0f, 2));
  NORMUON_RETURN_IF_ERROR(FillRandom(t->momentum.get(), DType::kF32, n, 0.0f, 0.5f, 3));
  NORMUON_RETURN_IF_ERROR(FillRandom(t->o.get(), ns, n, 0.0f, 0.03f, 4));
  NORMUON_RETURN_IF_ERROR(FillRandom(t->u.get(), ns, n, 0.0f, 1.0f, 5));
  NORMUON_RETURN_IF_ERROR(FillRandom(t->exp_avg.get(), DType::kF32, n, 0.0f, 0.1f, 6));
  NORMUON_RETURN_IF_ERROR(FillRandom(t->exp_avg_sq.get(), DType::kF32, n, 0.01f, 0.01f, 7, true));
  NORMUON_RETURN_IF_ERROR(FillRandom(t->v.get(), DType::kF32, r, 1e-3f, 1e-3f, 8, true));
  NORMUON_RETURN_IF_ERROR(FillRandom(t->v_new.get(), DType::kF32, r, 1e-3f, 1e-3f, 9, true));
  NORMUON_RETURN_IF_ERROR(normuon_bench::FillConstant(t->scale.as<float>(), 1, 0.5f));
  const int64_t step = 10;
  NORMUON_RETURN_IF_ERROR(normuon_bench::CudaCheck(
      cudaMemcpy(t->step.get(), &step, sizeof(step), cudaMemcpyHostToDevice), "cudaMemcpy"));
  g_tensors = std::move(t);
  return absl::OkStatus();
}

normuon::MatrixWork Work(const Tensors& t) {
  normuon::MatrixWork w;
  w.rows = t.rows;
  w.cols = t.cols;
  w.row_begin = 0;
  w.row_count = t.rows;
  w.param = t.param.get();
  w.grad = t.grad.get();
  w.momentum = t.momentum.as<float>();
  w.v = t.v.as<float>();
  w.v_new = t.v_new.as<float>();
  w.u_rows = t.u.get();
  w.o_rows = t.o.get();
  w.row_slots = t.slots.as<float>();
  w.row_slots_total = t.slots.as<float>();
  w.scale = t.scale.as<float>();
  w.scalars = g_gpu->scalars.as<normuon::GroupScalars>();
  w.ns_dtype = t.ns;
  w.control = g_gpu->control.as<normuon::StepControl>();
  return w;
}

absl::Status RunKernel(Kernel k, const Tensors& t) {
  const normuon::MatrixWork w = Work(t);
  const auto* control = g_gpu->control.as<normuon::StepControl>();
  switch (k) {
    case Kernel::kBlend:
      return g_gpu->backend->Blend(w);
    case Kernel::kRowStats:
      return g_gpu->backend->RowStats(w);
    case Kernel::kCommitMatrix:
      return g_gpu->backend->CommitMatrix(w, control);
    case Kernel::kCommitAdamW: {
      normuon::AdamWWork a;
      a.count = t.rows * t.cols;
      a.param = t.param.get();
      a.grad = t.grad.get();
      a.exp_avg = t.exp_avg.as<float>();
      a.exp_avg_sq = t.exp_avg_sq.as<float>();
      a.step = t.step.as<int64_t>();
      a.scalars = g_gpu->scalars.as<normuon::GroupScalars>() + 1;
      return g_gpu->backend->CommitAdamW(a, control);
    }
  }
  return absl::InternalError("unknown kernel");
}

void BM_Elementwise(benchmark::State& state, Kernel k, Shape shape, DType ns) {
  const std::string key = absl::StrCat(shape.rows, "x", shape.cols, "/", static_cast<int>(ns));
  if (g_tensors == nullptr || g_tensors->key != key) {
    const absl::Status st = BuildTensors(shape, ns, key);
    if (!st.ok()) {
      g_tensors.reset();
      state.SkipWithError(std::string(st.message()).c_str());
      return;
    }
  }
  const double bytes = KernelBytes(k, shape.rows, shape.cols, ns);
  // Regions of about a millisecond, so launch latency does not count against a 20-microsecond
  // kernel; two warm-up calls.
  normuon_bench::RegionTimer regions;
  const absl::Status st =
      regions.Init(g_gpu->stream, [&k] { return RunKernel(k, *g_tensors); }, 2);
  if (!st.ok()) {
    state.SkipWithError(std::string(st.message()).c_str());
    return;
  }
  const double total_seconds = normuon_bench::TimeRegions(state, regions);
  if (total_seconds < 0.0) return;
  absl::StatusOr<double> copy =
      normuon_bench::CopyRate(g_gpu->stream, static_cast<size_t>(bytes));
  if (!copy.ok()) {
    state.SkipWithError(std::string(copy.status().message()).c_str());
    return;
  }
  const double rate = bytes * static_cast<double>(state.iterations()) / total_seconds;
  state.counters["GB/s"] = rate * 1e-9;
  state.counters["copy_GB/s"] = *copy * 1e-9;
  state.counters["ratio_to_copy"] = rate / *copy;
  state.counters["MB"] = bytes * 1e-6;
  state.counters["calls_per_region"] = regions.calls();
  state.SetLabel(absl::StrFormat("%s %lldx%lld, U/O %s", shape.what,
                                 static_cast<long long>(shape.rows),
                                 static_cast<long long>(shape.cols),
                                 ns == DType::kBF16 ? "bf16" : "fp32"));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  // Group 0 NorMuon, group 1 AdamW, as the tests use them.
  const std::vector<normuon::GroupScalars> groups = {
      {0.02f, 0.01f, 0.95f, 0.95f, 1e-10f, {0, 0, 0}},
      {3e-4f, 0.01f, 0.9f, 0.95f, 1e-10f, {0, 0, 0}}};
  std::string skip;
  absl::StatusOr<std::unique_ptr<normuon_bench::BenchGpu>> gpu =
      normuon_bench::OpenBenchGpu(groups, &skip);
  if (!gpu.ok()) {
    std::fprintf(stderr, "elementwise_gpu_bench: set-up failed: %s\n",
                 std::string(gpu.status().message()).c_str());
    return 1;
  }
  if (*gpu == nullptr) {
    std::printf("elementwise_gpu_bench: %s: skipped\n", skip.c_str());
    return 0;
  }
  g_gpu = gpu->get();
  benchmark::AddCustomContext("device", normuon_bench::DeviceDescription(0));
  benchmark::AddCustomContext("ceiling", "cudaMemcpyAsync D2D of the same bytes, same run");

  for (const Shape& shape : kShapes) {
    for (DType ns : {DType::kBF16, DType::kF32}) {
      for (Kernel k : {Kernel::kBlend, Kernel::kRowStats, Kernel::kCommitMatrix,
                       Kernel::kCommitAdamW}) {
        // AdamW has no U/O: run it once per shape.
        if (k == Kernel::kCommitAdamW && ns != DType::kF32) continue;
        const std::string name = absl::StrFormat(
            "%s/%s/%lldx%lld", KernelName(k), ns == DType::kBF16 ? "bf16" : "fp32",
            static_cast<long long>(shape.rows), static_cast<long long>(shape.cols));
        benchmark::RegisterBenchmark(name.c_str(), BM_Elementwise, k, shape, ns)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_tensors.reset();
  gpu->reset();  // the backend, then its stream
  return 0;
}

#endif  // NORMUON_WITH_CUDA
