// The CPU backend's memory-bound kernels, timed for the planner (normuon_plan --rates): blend,
// row statistics, matrix commit, AdamW commit, and a plain copy (how the in-process group moves
// messages and how the compute stage packs them). Each reports "GB/s" = the planner's own byte
// count for the call (tools/plan/cost_model.h: BlendBytes, RowStatsBytes, ...) / wall time, so
// the planner divides by exactly what was measured. Single-threaded, as every rank's kernels are.
//
//   bazel run -c opt --define=cuda=off //bench:cpu_kernel_rates_bench --
//       --benchmark_format=json > /tmp/kernels.json   (one command line)
//
// Sizes: a 1024 x 2048 fp32 shard (8 MiB per array), larger than this machine's L2 and about the
// size of a GPT-2 matrix's rows on one of 2-4 ranks.
#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/backend.h"
#include "tools/plan/cost_model.h"

namespace {

using normuon::AdamWWork;
using normuon::Backend;
using normuon::DType;
using normuon::GroupScalars;
using normuon::MatrixWork;
using normuon::StepControl;

// Deterministic values in [-1, 1) without denormals.
std::vector<float> Values(size_t n, float scale) {
  std::vector<float> v(n);
  uint32_t s = 12345;
  for (float& x : v) {
    s = s * 1664525u + 1013904223u;
    x = scale * (static_cast<float>(s >> 8) / 8388608.0f - 1.0f);
  }
  return v;
}

struct Buffers {
  explicit Buffers(int64_t rows, int64_t cols)
      : n(static_cast<size_t>(rows * cols)),
        param(Values(n, 0.02f)),
        grad(Values(n, 1.0f)),
        momentum(Values(n, 0.1f)),
        second(n, 0.01f),
        o(Values(n, 0.05f)),
        u(n),
        v(static_cast<size_t>(rows), 0.01f),
        v_new(static_cast<size_t>(rows), 0.01f),
        slots(static_cast<size_t>(2 * rows), 0.0f) {
    scalars = GroupScalars{0.02f, 0.01f, 0.95f, 0.95f, 1e-10f, {0, 0, 0}};
    control = StepControl{normuon::kNoParam, 0, 0, 0};
  }
  size_t n;
  std::vector<float> param, grad, momentum, second, o, u, v, v_new, slots;
  GroupScalars scalars;
  StepControl control;
  float scale = 1.0f;
  int64_t step = 0;
};

MatrixWork Work(Buffers* b, int64_t rows, int64_t cols) {
  MatrixWork w;
  w.rows = rows;
  w.cols = cols;
  w.row_begin = 0;
  w.row_count = rows;
  w.param = b->param.data();
  w.grad = b->grad.data();
  w.momentum = b->momentum.data();
  w.v = b->v.data();
  w.v_new = b->v_new.data();
  w.u_rows = b->u.data();
  w.o_rows = b->o.data();
  w.row_slots = b->slots.data();
  w.row_slots_total = b->slots.data();
  w.scale = &b->scale;
  w.scalars = &b->scalars;
  w.ns_dtype = DType::kF32;
  return w;
}

// Times `call` over the benchmark's iterations and reports bytes / second as "GB/s".
template <typename F>
void Timed(benchmark::State& state, int64_t bytes, F call) {
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    call();
    benchmark::ClobberMemory();
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  state.counters["GB/s"] = static_cast<double>(bytes) * state.iterations() / sec * 1e-9;
}

// One matrix kernel of the CPU backend on a rows x cols shard (the benchmark's arguments): `call`
// makes the backend call on the shard's MatrixWork; `bytes` is the planner's count for it.
template <typename Call>
void MatrixKernel(benchmark::State& state, int64_t bytes, Call call) {
  const int64_t rows = state.range(0), cols = state.range(1);
  Buffers b(rows, cols);
  std::unique_ptr<Backend> be = normuon::MakeCpuBackend();
  const MatrixWork w = Work(&b, rows, cols);
  Timed(state, bytes, [&] { (void)call(*be, w, &b.control); });
}

void BM_Blend(benchmark::State& state) {
  MatrixKernel(state, normuon::plan::BlendBytes(state.range(0) * state.range(1), 4),
               [](Backend& be, const MatrixWork& w, StepControl*) { return be.Blend(w); });
}

void BM_RowStats(benchmark::State& state) {
  MatrixKernel(state,
               normuon::plan::RowStatsBytes(state.range(0) * state.range(1), state.range(0), 4),
               [](Backend& be, const MatrixWork& w, StepControl*) { return be.RowStats(w); });
}

void BM_CommitMatrix(benchmark::State& state) {
  MatrixKernel(
      state, normuon::plan::CommitMatrixBytes(state.range(0) * state.range(1), state.range(0), 4),
      [](Backend& be, const MatrixWork& w, StepControl* c) { return be.CommitMatrix(w, c); });
}

void BM_CommitAdamW(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  Buffers b(rows, cols);
  std::unique_ptr<Backend> be = normuon::MakeCpuBackend();
  AdamWWork w;
  w.count = rows * cols;
  w.param = b.param.data();
  w.grad = b.grad.data();
  w.exp_avg = b.momentum.data();
  w.exp_avg_sq = b.second.data();
  w.step = &b.step;
  w.scalars = &b.scalars;
  Timed(state, normuon::plan::CommitAdamwBytes(rows * cols),
        [&] { (void)be->CommitAdamW(w, &b.control); });
}

void BM_Copy(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  Buffers b(rows, cols);
  const size_t bytes = b.n * sizeof(float);
  Timed(state, normuon::plan::CopyBytes(static_cast<int64_t>(bytes)),
        [&] { std::memcpy(b.u.data(), b.o.data(), bytes); });
}

#define NORMUON_KERNEL_BENCH(fn) \
  BENCHMARK(fn)->Args({1024, 2048})->Unit(benchmark::kMillisecond)->UseRealTime()

NORMUON_KERNEL_BENCH(BM_Blend);
NORMUON_KERNEL_BENCH(BM_RowStats);
NORMUON_KERNEL_BENCH(BM_CommitMatrix);
NORMUON_KERNEL_BENCH(BM_CommitAdamW);
NORMUON_KERNEL_BENCH(BM_Copy);

}  // namespace

BENCHMARK_MAIN();
