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
// The Newton-Schulz phase of a whole model (issue #14), NsPhase/<model>/<variant>: every
// same-shape batch of the model's shape list (tools/models, --models=gpt2-124m,llama-1b by
// default; NORMUON_MODELS_DIR or the runfiles) prepared together and orthogonalized one after
// the other, per variant: standard/bf16 (today's default, registered first: the baseline),
// gram/{bf16,fp16}/{dense,tiles} (Gram NS with the default restarts; tiles = the symmetric
// products over lower-triangle tiles, config.ns_symmetric_products = 1). Counters:
//   speedup_vs_standard_bf16  the baseline's time / this variant's, same model, same run
//   floor_standard_ms         standard NS5 FLOPs at the same-run bf16 GEMM ceiling of each batch
//   floor_gram_sym_ms         Gram FLOPs with symmetric products and the default restart
//                             (sharding/ns_cost.h: about (14 + 6 alpha) n^3 per matrix)
//   ratio_to_floor_gram_sym   this variant's time / floor_gram_sym_ms
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

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/gpu_ceilings.h"
#include "bench/gpu_regions.h"
#include "benchmark/benchmark.h"
#include "kernels/backend.h"
#include "base/bf16.h"
#include "base/status_macros.h"
#include "kernels/ns_method.h"
#include "sharding/ns_cost.h"
#include "sharding/owner_assignment.h"
#include "tools/model_shapes.h"

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
// The model-phase cases' buffers (BM_NsPhase below): one u and o per same-shape batch.
struct PhaseFixture {
  std::string key;
  std::vector<DeviceBuffer> u, o;
  DeviceBuffer control;
  std::vector<normuon::NsBatch> batches;
};
std::unique_ptr<PhaseFixture> g_phase;

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
  g_phase.reset();
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
    for (int64_t i = 0; i < n; ++i) {
      if (dtype == DType::kBF16) {
        host[i] = normuon::Bf16ToFloat(normuon::Bf16{bits[i]});
      } else {
        __half_raw h;
        h.x = bits[i];
        host[i] = __half2float(__half(h));
      }
    }
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

// ---- The Newton-Schulz phase of a model.

struct PhaseVariant {
  const char* name;
  DType dtype;
  bool gram;
  normuon::SymmetricProducts symmetric;
};
const PhaseVariant kPhaseVariants[] = {
    {"standard/bf16", DType::kBF16, false, normuon::SymmetricProducts::kDense},  // the baseline
    {"gram/bf16/dense", DType::kBF16, true, normuon::SymmetricProducts::kDense},
    {"gram/bf16/tiles", DType::kBF16, true, normuon::SymmetricProducts::kTiles},
    {"gram/fp16/dense", DType::kF16, true, normuon::SymmetricProducts::kDense},
    {"gram/fp16/tiles", DType::kF16, true, normuon::SymmetricProducts::kTiles},
};

struct PhaseShape {
  int64_t rows, cols, count;
};

// A model's same-shape batches, in the shape list's order of first appearance.
absl::StatusOr<std::vector<PhaseShape>> ModelBatches(const std::string& model, const char* argv0) {
  NORMUON_ASSIGN_OR_RETURN(normuon_tools::ModelShapes shapes,
                           normuon_tools::LoadModel(model, argv0));
  std::vector<PhaseShape> out;
  for (const normuon_tools::ModelShape& e : shapes.entries) {
    if (e.kind != normuon::ParamKind::kMatrix) continue;
    auto it = std::find_if(out.begin(), out.end(), [&](const PhaseShape& p) {
      return p.rows == e.rows && p.cols == e.cols;
    });
    if (it == out.end()) {
      out.push_back({e.rows, e.cols, 1});
    } else {
      ++it->count;
    }
  }
  return out;
}

std::map<std::string, double> g_baseline_seconds;  // model -> standard/bf16 seconds per phase
std::map<std::string, std::pair<double, double>> g_floors;  // model -> (standard, gram sym) s

absl::Status BuildPhase(const std::string& model, const std::vector<PhaseShape>& shapes,
                        const PhaseVariant& v, const std::string& key) {
  g_phase.reset();
  auto f = std::make_unique<PhaseFixture>();
  f->key = key;
  NORMUON_RETURN_IF_ERROR(f->control.Allocate(sizeof(normuon::StepControl)));
  f->u.resize(shapes.size());
  f->o.resize(shapes.size());
  int32_t param = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const PhaseShape& s = shapes[i];
    const int64_t n = s.count * s.rows * s.cols;
    const size_t bytes = static_cast<size_t>(n) * normuon::SizeOf(v.dtype);
    NORMUON_RETURN_IF_ERROR(f->u[i].Allocate(bytes));
    NORMUON_RETURN_IF_ERROR(f->o[i].Allocate(bytes));
    NORMUON_RETURN_IF_ERROR(
        normuon_bench::FillRandom(f->u[i].get(), normuon::NsInputDType(v.dtype), n, 0.0f, 1.0f,
                                  1 + i));
    normuon::NsBatch b;
    b.rows = s.rows;
    b.cols = s.cols;
    b.count = s.count;
    b.u = f->u[i].get();
    b.o = f->o[i].get();
    b.dtype = v.dtype;
    b.coefficients = kQuintic5;
    if (v.gram) {
      b.method = normuon::NsMethod::kGram;
      b.restarts = normuon::DefaultGramRestarts(5, false);
      b.symmetric = v.symmetric;
      for (int64_t k = 0; k < s.count; ++k) b.params.push_back(param++);
      b.control = static_cast<normuon::StepControl*>(f->control.get());
    }
    f->batches.push_back(std::move(b));
  }
  NORMUON_RETURN_IF_ERROR(g_gpu->backend->Prepare(f->batches));
  if (g_floors.count(model) == 0) {  // the floors, once per model: each batch at its best GEMM rate
    normuon::sharding::NsCost gram_sym;
    gram_sym.method = normuon::sharding::NsMethod::kGram;
    for (int32_t r : normuon::DefaultGramRestarts(5, false)) gram_sym.restarts.push_back(r);
    gram_sym.symmetric = true;
    double standard = 0.0, gram = 0.0;
    for (const PhaseShape& s : shapes) {
      const int64_t sh = std::min(s.rows, s.cols), lo = std::max(s.rows, s.cols);
      NORMUON_ASSIGN_OR_RETURN(double one, normuon_bench::GemmRate(*g_cublas, g_gpu->stream,
                                                                   DType::kBF16, sh, lo, 1));
      NORMUON_ASSIGN_OR_RETURN(double many, normuon_bench::GemmRate(*g_cublas, g_gpu->stream,
                                                                    DType::kBF16, sh, lo, s.count));
      const double rate = std::max(one, many);
      standard += normuon::sharding::Ns5Flops(s.rows, s.cols) * s.count / rate;
      gram += normuon::sharding::NsFlops(s.rows, s.cols, gram_sym) * s.count / rate;
    }
    g_floors[model] = {standard, gram};
  }
  g_phase = std::move(f);
  return absl::OkStatus();
}

void BM_NsPhase(benchmark::State& state, std::string model, std::vector<PhaseShape> shapes,
                PhaseVariant v) {
  const std::string key = model + "/" + v.name;
  if (g_phase == nullptr || g_phase->key != key) {
    g_fixture.reset();
    const absl::Status st = BuildPhase(model, shapes, v, key);
    if (!st.ok()) {
      g_phase.reset();
      state.SkipWithError(std::string(st.message()).c_str());
      return;
    }
  }
  const std::vector<normuon::NsBatch>& batches = g_phase->batches;
  normuon_bench::RegionTimer regions;
  absl::Status st = regions.Init(
      g_gpu->stream,
      [&batches]() -> absl::Status {
        for (const normuon::NsBatch& b : batches) {
          NORMUON_RETURN_IF_ERROR(g_gpu->backend->NewtonSchulz(b));
        }
        return absl::OkStatus();
      },
      1, 2.0, 50);
  if (!st.ok()) {
    state.SkipWithError(std::string(st.message()).c_str());
    return;
  }
  const double total_seconds = normuon_bench::TimeRegions(state, regions);
  if (total_seconds < 0.0) return;
  for (const normuon::NsBatch& b : batches) {
    st = CheckOutput(b.o, b.dtype, b.rows * b.cols);
    if (!st.ok()) {
      state.SkipWithError(absl::StrCat(b.rows, "x", b.cols, ": ", st.message()).c_str());
      return;
    }
  }
  const double per_phase = total_seconds / static_cast<double>(state.iterations());
  if (!v.gram) g_baseline_seconds[model] = per_phase;
  if (g_baseline_seconds.count(model) > 0) {
    state.counters["speedup_vs_standard_bf16"] = g_baseline_seconds[model] / per_phase;
  }
  const auto [floor_standard, floor_gram] = g_floors[model];
  state.counters["floor_standard_ms"] = floor_standard * 1e3;
  state.counters["floor_gram_sym_ms"] = floor_gram * 1e3;
  state.counters["ratio_to_floor_gram_sym"] = per_phase / floor_gram;
  int64_t matrices = 0;
  for (const PhaseShape& s : shapes) matrices += s.count;
  state.counters["matrices"] = static_cast<double>(matrices);
  state.SetLabel(absl::StrFormat("%s %s, %lld batches", model, v.name,
                                 static_cast<long long>(shapes.size())));
}

}  // namespace

int main(int argc, char** argv) {
  // --models=a,b (ours; removed before Google Benchmark reads the rest).
  std::vector<std::string> models = {"gpt2-124m", "llama-1b"};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--models=", 0) != 0) continue;
    models.clear();
    for (absl::string_view m : absl::StrSplit(arg.substr(9), ',', absl::SkipEmpty())) {
      models.emplace_back(m);
    }
    for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
    --argc;
    --i;
  }
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
  // The Newton-Schulz phase of each model, every variant (the baseline first).
  for (const std::string& model : models) {
    absl::StatusOr<std::vector<PhaseShape>> shapes = ModelBatches(model, argv[0]);
    if (!shapes.ok()) {
      std::fprintf(stderr, "newton_schulz_gpu_bench: --models=%s: %s\n", model.c_str(),
                   std::string(shapes.status().message()).c_str());
      return 1;
    }
    for (const PhaseVariant& v : kPhaseVariants) {
      const std::string name = absl::StrCat("NsPhase/", model, "/", v.name);
      benchmark::RegisterBenchmark(name.c_str(), BM_NsPhase, model, *shapes, v)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_fixture.reset();
  g_phase.reset();
  gpu->reset();  // the backend, then its stream
  return 0;
}

#endif  // NORMUON_WITH_CUDA
