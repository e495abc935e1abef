// Newton-Schulz throughput on the CPU backend against the machine's own ceiling: a plain fp32
// sgemm of the same short side, measured in the same run. Counters: TFLOP/s of the NS step
// (sharding::Ns5Flops: 5 iterations of 4*s^2*l + 2*s^3 flops) and its ratio to the GEMM rate.
//
//   bazel run -c opt //bench:newton_schulz_cpu_bench -- --benchmark_format=json
#include <cblas.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <random>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/newton_schulz_cpu.h"
#include "sharding/owner_assignment.h"

namespace {

const std::vector<std::array<float, 3>> kQuintic5 = normuon::QuinticCoefficients(5);

std::vector<float> Random(size_t n) {
  std::mt19937 gen(1);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// The ceiling: one s x s x l sgemm (the shape of A = X X^T), flops 2*s*s*l.
double GemmRate(int64_t s, int64_t l) {
  std::vector<float> x = Random(static_cast<size_t>(s * l)), a(static_cast<size_t>(s * s));
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s, s, l, 1.0f, x.data(), l, x.data(), l,
                0.0f, a.data(), s);
    const double sec =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * s * s * l / sec);
  }
  return best;
}

void BM_NewtonSchulzCpu(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const std::vector<float> u = Random(static_cast<size_t>(rows * cols));
  std::vector<float> o(u.size());
  normuon::NsCpuWorkspace ws;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    normuon::NewtonSchulzCpu(u.data(), o.data(), rows, cols, kQuintic5, 1e-7f, 1.0f, false, &ws);
    benchmark::DoNotOptimize(o.data());
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double rate = normuon::sharding::Ns5Flops(rows, cols) * static_cast<double>(state.iterations()) / sec;
  const double gemm = GemmRate(std::min(rows, cols), std::max(rows, cols));
  state.counters["TFLOP/s"] = rate * 1e-12;
  state.counters["gemm_TFLOP/s"] = gemm * 1e-12;
  state.counters["ratio_to_gemm"] = rate / gemm;
}

// The Newton-Schulz phase of one GPT-2 124M layer (c_attn 768x2304, attn c_proj 768x768, c_fc
// 768x3072, mlp c_proj 3072x768; the model is 12 such layers, so the phase's ratios are the
// layer's): arg 0 = standard, 1 = Gram with dense products, 2 = Gram with symmetric products
// (the default). Gram runs with the quintic's default restart (before iteration 3). Each reports its time per layer
// and, for Gram, speedup_vs_standard against the standard benchmark of the same run (which runs
// first).
double g_standard_layer_seconds = 0.0;

void BM_Gpt2LayerNsPhase(benchmark::State& state) {
  const int method = static_cast<int>(state.range(0));
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {2304, 768}, {768, 768}, {3072, 768}, {768, 3072}};
  std::vector<std::vector<float>> u, o;
  for (const auto& [r, c] : shapes) {
    u.push_back(Random(static_cast<size_t>(r * c)));
    o.emplace_back(static_cast<size_t>(r * c));
  }
  normuon::NsCpuOptions opt;
  opt.coefficients = kQuintic5;
  opt.method = method == 0 ? normuon::NsMethod::kStandard : normuon::NsMethod::kGram;
  opt.restarts = normuon::DefaultGramRestarts(5, false);
  normuon::NsCpuWorkspace ws;
  ws.symmetric_products = method == 2;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    for (size_t k = 0; k < shapes.size(); ++k) {
      normuon::NewtonSchulzCpu(u[k].data(), o[k].data(), shapes[k].first, shapes[k].second, opt,
                               &ws);
    }
    benchmark::DoNotOptimize(o[0].data());
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                     static_cast<double>(state.iterations());
  if (method == 0) g_standard_layer_seconds = sec;
  state.counters["layer_ms"] = sec * 1e3;
  state.counters["gpt2_124m_phase_ms"] = 12.0 * sec * 1e3;
  if (method != 0 && g_standard_layer_seconds > 0.0) {
    state.counters["speedup_vs_standard"] = g_standard_layer_seconds / sec;
  }
  state.SetLabel(method == 0 ? "standard" : method == 1 ? "gram_dense" : "gram_symmetric");
}
BENCHMARK(BM_Gpt2LayerNsPhase)
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2.0);

// GPT-2 124M's matrix shapes (c_attn, c_proj, c_fc, mlp c_proj), and a tiny one.
BENCHMARK(BM_NewtonSchulzCpu)
    ->Args({192, 64})
    ->Args({768, 768})
    ->Args({2304, 768})
    ->Args({3072, 768})
    ->Args({768, 3072})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
