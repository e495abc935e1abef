// One whole optimizer step through the C API (normuon.h), per schedule, on a model's shape list,
// against the machine's own floor for that step, measured in the same run.
//
// CPU (always): N in-process ranks (normuon_comm_create_inprocess_group, one thread per rank),
// each holding its FSDP2 rows (ceil(rows/N) per rank) of every parameter, fp32, random
// parameters and gradients (tools/common: the layout and values normuon_run uses). Args: model index, ranks, schedule (0 sequential, 1 per_matrix,
// 2 bucketed). The time of a step is the wall time from the first rank entering normuon_step to
// the last rank returning (UseManualTime); one untimed step runs first.
// Counters:
//   step_ms           the mean step time
//   exposed_comm_ms   normuon_last_step_profile's exposed communication, max over ranks
//   bytes_sent        bytes on the wire per step, summed over ranks; buckets: rank 0's count
//   floor_ms          the NS5 floor: the model's Newton-Schulz FLOPs (sharding::Ns5Flops:
//                     5 iterations of 4*s^2*l + 2*s^3 per matrix) over the same-run sgemm rate of those shapes
//                     (s x s x l, the Gram product), run as min(N, cores) concurrent one-thread
//                     sgemms for N > 1 ranks (the ranks share the cores; one BLAS thread each,
//                     as the runtime sets), one sgemm with OpenBLAS's own threads for 1 rank;
//                     the best rate seen so far in the run (measured after every case's steps)
//   ratio_to_floor    step_ms / floor_ms (1 = at the floor; the rest is momentum, statistics,
//                     updates, AdamW, communication and waiting)
// Models: 0 tiny, 1 gpt2-124m, 2 llama-1b-layer. gpt2-124m and llama-1b-layer steps take seconds
// here, so those cases are registered only when --benchmark_filter is given.
//
// GPU (CUDA build with a device): the single-rank step on the CUDA backend, device buffers,
// timed with CUDA events around normuon_step on the bench's stream. Args: model index (0 tiny,
// 1 gpt2-124m, 3 llama-1b, 4 llama-8b-layer), mode (0 bf16, 1 fp32), graph (1: config.cuda_graph,
// the step captured once, in the untimed first step, and replayed; bf16 only). floor_ms = NS5 FLOPs over
// the same-run cuBLAS GEMM rate of each shape (the better of one GEMM and the batched GEMM over
// the model's matrices of that shape) + the fewest bytes a step moves (matrices: read G, read and
// write M and W, 20 B/element; AdamW: read G, read and write W, m, v, 28 B/element) over the
// same-run device-to-device copy bandwidth. enqueue_ms: host time of the normuon_step call (what
// graph mode shortens).
//
//   bazel run -c opt //bench:step_bench -- --benchmark_format=json         # tiny, CPU (+ GPU)
//   bazel run -c opt //bench:step_bench -- --benchmark_filter='StepCpu/model:1/ranks:(1|8)/'
//   .device/bin/step_bench --benchmark_filter=StepCuda                        (GPU machine)
// Extra flag (Abseil, parsed after Google Benchmark takes its own): --bucket_mb=X, the bucketed
// schedule's bucket size (default 32, the library's).
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "benchmark/benchmark.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"
#include "sharding/owner_assignment.h"
#include "tools/common/api_flags.h"
#include "tools/common/model_layout.h"
#include "tools/common/random_fill.h"
#include "tools/common/api_calls.h"
#include "tools/model_shapes.h"

#ifdef NORMUON_WITH_CUDA
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/gpu_ceilings.h"
#include "kernels/backend.h"
#include "base/status_macros.h"
#endif

ABSL_FLAG(double, bucket_mb, 32.0, "bucketed schedule: MiB of wire data per bucket (> 0)");
ABSL_FLAG(normuon_ns_method_t, ns_method, NORMUON_NS_METHOD_STANDARD,
          "orthogonalization of every case: standard or gram (Gram Newton-Schulz)");
ABSL_FLAG(bool, ns_symmetric_products, false,
          "with --ns_method=gram on CUDA: the symmetric products over their lower-triangle tiles "
          "(config.ns_symmetric_products = 1); no effect on CPU");
ABSL_FLAG(int, tp, 1,
          "CPU step cases: tensor-parallel size, the Megatron layout of normuon_run --tp (column- "
          "and row-parallel pieces, FSDP2 rows inside each TP piece); a case whose rank count it "
          "does not divide is skipped with that error");

ABSL_FLAG(std::string, qkv_layout, "interleaved",
          "with --tp: interleaved (Megatron's fused QKV) or separate (q, k and v blocks one after "
          "the other: each TP rank holds three row ranges of it, registered as a list of pieces, "
          "as normuon_run --qkv_layout=separate)");

namespace {

using Clock = std::chrono::steady_clock;
using normuon::ParamKind;
using normuon_tools::ModelShape;
using normuon_tools::ModelShapes;

const char* const kModels[] = {"tiny", "gpt2-124m", "llama-1b-layer", "llama-1b",
                               "llama-8b-layer"};

// True when argv holds --benchmark_filter=... (or "--benchmark_filter X"): the user chose which
// cases to run, so the expensive ones may be registered too.
bool FilterGiven(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (absl::StartsWith(argv[i], "--benchmark_filter")) return true;
  }
  return false;
}

std::string g_argv0;
int g_blas_threads = 1;           // OpenBLAS's own thread count, read at start
uint64_t g_bucket_bytes = uint64_t{32} << 20;
int g_tp = 1;
bool g_separate_qkv = false;

// Model shape lists, loaded once (tools/models through the runfiles or $NORMUON_MODELS_DIR).
const ModelShapes* Model(int index, std::string* error) {
  static std::map<int, std::unique_ptr<ModelShapes>> cache;
  auto it = cache.find(index);
  if (it != cache.end()) return it->second.get();
  absl::StatusOr<ModelShapes> m = normuon_tools::LoadModel(kModels[index], g_argv0);
  if (!m.ok()) {
    *error = std::string(m.status().message());
    return nullptr;
  }
  return (cache[index] = std::make_unique<ModelShapes>(std::move(*m))).get();
}

// Newton-Schulz FLOPs of the model's matrices, grouped by (s, l).
std::map<std::pair<int64_t, int64_t>, std::pair<double, int64_t>> NsWorkByShape(
    const ModelShapes& m) {
  std::map<std::pair<int64_t, int64_t>, std::pair<double, int64_t>> work;
  for (const ModelShape& e : m.entries) {
    if (e.kind != ParamKind::kMatrix) continue;
    auto& w = work[{std::min(e.rows, e.cols), std::max(e.rows, e.cols)}];
    w.first += normuon::sharding::Ns5Flops(e.rows, e.cols);
    w.second += 1;
  }
  return work;
}

// N worker threads that run one job together: each rank's runtime lives on its own thread.
class RankPool {
 public:
  explicit RankPool(int n) {
    for (int r = 0; r < n; ++r) threads_.emplace_back([this, r] { Loop(r); });
  }
  ~RankPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  RankPool(const RankPool&) = delete;
  RankPool& operator=(const RankPool&) = delete;

  // Runs job(rank) on every worker; returns when all are done.
  void Run(const std::function<void(int)>& job) {
    std::unique_lock<std::mutex> lock(mu_);
    job_ = &job;
    pending_ = static_cast<int>(threads_.size());
    ++generation_;
    cv_.notify_all();
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void Loop(int rank) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      (*job)(rank);
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

struct StepSample {
  double ms = 0.0;
  double exposed_ms = 0.0;
  double bytes_sent = 0.0;
  int buckets = 0;
};

// The CPU step of one (model, ranks, schedule): runtimes, their buffers and the rank threads.
class CpuStepRig {
 public:
  CpuStepRig(const ModelShapes& model, int ranks, normuon_schedule_t schedule)
      : model_(model), ranks_(ranks), schedule_(schedule), pool_(ranks), states_(ranks) {}

  ~CpuStepRig() {
    pool_.Run([this](int r) {
      if (states_[r].rt != 0) normuon_destroy(states_[r].rt);
    });
    for (normuon_comm_t c : comms_) normuon_comm_destroy(c);
  }

  // Creates, registers and finalizes every rank, then runs one untimed step. "" on success.
  std::string SetUp() {
    absl::StatusOr<normuon_tools::PieceLists> layout =
        normuon_tools::MegatronPieces(model_, g_tp, ranks_, g_separate_qkv);
    if (!layout.ok()) return std::string(layout.status().message());
    layout_ = *std::move(layout);
    if (ranks_ > 1) {
      comms_.resize(ranks_);
      if (normuon_comm_create_inprocess_group(ranks_, 3600.0, comms_.data()) != NORMUON_SUCCESS) {
        comms_.clear();
        return absl::StrCat("normuon_comm_create_inprocess_group: ", normuon_comm_last_error(0));
      }
    }
    pool_.Run([this](int r) { SetUpRank(r); });
    std::string error = FirstError();
    if (!error.empty()) return error;
    StepSample warm;
    return Step(&warm);
  }

  std::string Step(StepSample* out) {
    pool_.Run([this](int r) {
      RankState& s = states_[r];
      s.t0 = Clock::now();
      const normuon_status_t st = normuon_step(s.rt, -1.0f, -1.0f, nullptr);
      s.t1 = Clock::now();
      if (st != NORMUON_SUCCESS) {
        s.error = RankError(r, normuon_tools::ApiError(s.rt, "normuon_step", st));
        return;
      }
      normuon_step_profile_init(&s.profile);
      const normuon_status_t got = normuon_last_step_profile(s.rt, &s.profile);
      if (got != NORMUON_SUCCESS) {
        s.error = RankError(r, normuon_tools::ApiError(s.rt, "normuon_last_step_profile", got));
      }
    });
    std::string error = FirstError();
    if (!error.empty()) return error;
    Clock::time_point first = states_[0].t0, last = states_[0].t1;
    *out = StepSample();
    for (const RankState& s : states_) {
      first = std::min(first, s.t0);
      last = std::max(last, s.t1);
      out->exposed_ms = std::max(out->exposed_ms, s.profile.exposed_comm_ms);
      out->bytes_sent += static_cast<double>(s.profile.bytes_sent);
    }
    out->ms = std::chrono::duration<double, std::milli>(last - first).count();
    out->buckets = states_[0].profile.buckets;
    return "";
  }

 private:
  struct RankState {
    normuon_runtime_t rt = 0;
    std::vector<std::vector<float>> params, grads;
    std::string error;
    Clock::time_point t0, t1;
    normuon_step_profile_t profile{};
  };

  void SetUpRank(int r) {
    RankState& s = states_[r];
    normuon_config_t config;
    normuon_config_init(&config);
    config.backend = NORMUON_BACKEND_CPU;
    config.ns_method = absl::GetFlag(FLAGS_ns_method);
    config.ns_symmetric_products = absl::GetFlag(FLAGS_ns_symmetric_products) ? 1 : 0;
    config.schedule = schedule_;
    config.bucket_bytes = g_bucket_bytes;
    config.weight_decay = 0.01f;
    normuon_status_t st = normuon_create(&config, ranks_ > 1 ? comms_[r] : 0, &s.rt);
    if (st != NORMUON_SUCCESS) {
      s.error = RankError(r, normuon_tools::ApiError(0, "normuon_create", st));
      return;
    }
    const std::vector<ModelShape>& entries = model_.entries;
    s.params.resize(entries.size());
    s.grads.resize(entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      const ModelShape& e = entries[i];
      const std::vector<normuon::sharding::PieceRect>& pieces = layout_[i][r];
      int64_t n = 0;
      for (const normuon::sharding::PieceRect& p : pieces) n += p.row_count * p.col_count;
      s.params[i].resize(static_cast<size_t>(n));
      s.grads[i].resize(static_cast<size_t>(n));
      int64_t at = 0;  // the pieces back to back
      for (const normuon::sharding::PieceRect& rows : pieces) {
        for (int64_t a = 0; a < rows.row_count; ++a) {  // row by row: a piece's columns
          const int64_t first = (rows.row_begin + a) * e.cols + rows.col_begin;
          normuon_tools::FillNormal(s.params[i].data() + at, rows.col_count, 0.02f, 1, i, 0,
                                    first);
          normuon_tools::FillNormal(s.grads[i].data() + at, rows.col_count, 1.0f, 1, i, 1, first);
          at += rows.col_count;
        }
      }
      normuon_param_t handle;
      const absl::Status registered =
          pieces.size() == 1
              ? normuon_tools::RegisterPiece(s.rt, e, pieces[0],
                                             n > 0 ? s.params[i].data() : nullptr,
                                             n > 0 ? s.grads[i].data() : nullptr, &handle)
              : normuon_tools::RegisterPieces(s.rt, e, pieces, s.params[i].data(),
                                              s.grads[i].data(), &handle);
      if (!registered.ok()) {
        s.error = RankError(r, registered);
        return;
      }
    }
    st = normuon_finalize(s.rt);
    if (st != NORMUON_SUCCESS) {
      s.error = RankError(r, normuon_tools::ApiError(s.rt, "normuon_finalize", st));
    }
  }

  static std::string RankError(int rank, const absl::Status& status) {
    return absl::StrCat("rank ", rank, ": ", status.message());
  }

  std::string FirstError() {
    for (RankState& s : states_) {
      if (!s.error.empty()) return s.error;
    }
    return "";
  }

  const ModelShapes& model_;
  const int ranks_;
  const normuon_schedule_t schedule_;
  normuon_tools::PieceLists layout_;  // [entry][rank][piece]
  RankPool pool_;
  std::vector<RankState> states_;
  std::vector<normuon_comm_t> comms_;
};

// The rig of the case being run, kept across Google Benchmark's repeated calls of one case (and
// its repetitions), replaced when the next case starts, released at the end of main.
std::string g_cpu_rig_key;
std::unique_ptr<CpuStepRig> g_cpu_rig;

// FLOP/s of `workers` concurrent s x s x l sgemms (X X^T), each with blas_threads OpenBLAS
// threads: the aggregate rate, best of three trials. Each worker repeats its GEMM until it has
// done about 2 GFLOP, so small shapes are timed over many calls.
double AggregateSgemmRate(int64_t s, int64_t l, int workers, int blas_threads) {
  openblas_set_num_threads(blas_threads);
  const double flops = 2.0 * s * s * l;
  const int reps = static_cast<int>(std::clamp(2e9 / flops, 1.0, 100000.0));
  std::vector<std::vector<float>> x(workers), c(workers);
  for (int w = 0; w < workers; ++w) {
    x[w].resize(static_cast<size_t>(s * l));
    c[w].resize(static_cast<size_t>(s * s));
    normuon_tools::FillNormal(x[w].data(), s * l, 1.0f, 77 + w, 0, 0);
  }
  double best = 0.0;
  for (int trial = 0; trial < 3; ++trial) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int w = 0; w < workers; ++w) {
      threads.emplace_back([&, w] {
        ready.fetch_add(1);
        while (!go.load()) std::this_thread::yield();
        for (int i = 0; i < reps; ++i) {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s, s, l, 1.0f, x[w].data(), l,
                      x[w].data(), l, 0.0f, c[w].data(), s);
        }
      });
    }
    while (ready.load() < workers) std::this_thread::yield();
    const Clock::time_point t0 = Clock::now();
    go.store(true);
    for (std::thread& t : threads) t.join();
    const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, workers * reps * flops / sec);
  }
  return best;
}

// The NS5 floor of one model at `ranks` in-process ranks on this machine, in ms; *rate: the
// aggregate sgemm rate it implies. The sgemm rates are measured again at every call, right
// after the timed steps, and the best rate seen so far in this run for each shape and thread
// layout is the ceiling: on a shared machine, other load can only make a measurement slower.
double CpuFloorMs(const ModelShapes& m, int ranks, double* rate) {
  static std::map<std::tuple<int64_t, int64_t, int, int>, double> best;
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  const int workers = ranks == 1 ? 1 : std::min(ranks, cores);
  const int blas = ranks == 1 ? g_blas_threads : 1;
  double seconds = 0.0, flops = 0.0;
  for (const auto& [shape, work] : NsWorkByShape(m)) {
    double& r = best[{shape.first, shape.second, workers, blas}];
    r = std::max(r, AggregateSgemmRate(shape.first, shape.second, workers, blas));
    seconds += work.first / r;
    flops += work.first;
  }
  // Leave OpenBLAS as the step of this rank count uses it.
  openblas_set_num_threads(blas);
  *rate = flops / seconds;
  return seconds * 1e3;
}

void BM_StepCpu(benchmark::State& state) {
  const int model_index = static_cast<int>(state.range(0));
  const int ranks = static_cast<int>(state.range(1));
  const int schedule = static_cast<int>(state.range(2));
  std::string error;
  const ModelShapes* m = Model(model_index, &error);
  if (m == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  // One rank: OpenBLAS's own threads (the runtime only sets one thread for N > 1 ranks, and that
  // setting is process-wide, so restore it for single-rank cases that follow sharded ones).
  openblas_set_num_threads(ranks == 1 ? g_blas_threads : 1);
  std::string& rig_key = g_cpu_rig_key;
  std::unique_ptr<CpuStepRig>& rig = g_cpu_rig;
  const std::string key = absl::StrCat(model_index, "/", ranks, "/", schedule);
  if (rig == nullptr || rig_key != key) {
    rig.reset();
    rig = std::make_unique<CpuStepRig>(*m, ranks, normuon_tools::kSchedules[schedule]);
    error = rig->SetUp();
    if (!error.empty()) {
      rig.reset();
      state.SkipWithError(error.c_str());
      return;
    }
    rig_key = key;
  }
  double total_ms = 0.0, exposed = 0.0, bytes = 0.0;
  int buckets = 0;
  for (auto _ : state) {
    StepSample sample;
    error = rig->Step(&sample);
    if (!error.empty()) {
      rig.reset();
      state.SkipWithError(error.c_str());
      return;
    }
    state.SetIterationTime(sample.ms * 1e-3);
    total_ms += sample.ms;
    exposed += sample.exposed_ms;
    bytes = sample.bytes_sent;
    buckets = sample.buckets;
  }
  const double n = static_cast<double>(state.iterations());
  double rate = 0.0;
  const double floor_ms = CpuFloorMs(*m, ranks, &rate);
  state.counters["step_ms"] = total_ms / n;
  state.counters["exposed_comm_ms"] = exposed / n;
  state.counters["bytes_sent"] = bytes;
  state.counters["buckets"] = buckets;
  state.counters["floor_ms"] = floor_ms;
  state.counters["ratio_to_floor"] = (total_ms / n) / floor_ms;
  state.counters["sgemm_GFLOP/s"] = rate * 1e-9;
  state.SetLabel(absl::StrFormat("%s, %d rank%s, %s", kModels[model_index], ranks,
                                 ranks == 1 ? "" : "s",
                                 normuon_tools::ScheduleName(normuon_tools::kSchedules[schedule])));
}

#ifdef NORMUON_WITH_CUDA

// The single-rank CUDA step of one (model, mode): device buffers and the runtime.
class CudaStepRig {
 public:
  ~CudaStepRig() {
    if (rt_ != 0) normuon_destroy(rt_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  std::string SetUp(const ModelShapes& m, normuon_ns_dtype_t ns, bool graph) {
    absl::Status st = normuon_bench::CudaCheck(
        cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    if (!st.ok()) return std::string(st.message());
    normuon_config_t config;
    normuon_config_init(&config);
    config.backend = NORMUON_BACKEND_CUDA;
    config.device = 0;
    config.ns_dtype = ns;
    config.ns_method = absl::GetFlag(FLAGS_ns_method);
    config.ns_symmetric_products = absl::GetFlag(FLAGS_ns_symmetric_products) ? 1 : 0;
    config.weight_decay = 0.01f;
    config.cuda_graph = graph ? 1 : 0;
    normuon_status_t created = normuon_create(&config, 0, &rt_);
    if (created != NORMUON_SUCCESS) {
      return std::string(normuon_tools::ApiError(0, "normuon_create", created).message());
    }
    buffers_.resize(2 * m.entries.size());
    for (size_t i = 0; i < m.entries.size(); ++i) {
      const ModelShape& e = m.entries[i];
      const int64_t n = e.rows * e.cols;
      normuon_bench::DeviceBuffer& p = buffers_[2 * i];
      normuon_bench::DeviceBuffer& g = buffers_[2 * i + 1];
      st = p.Allocate(n * sizeof(float));
      if (st.ok()) st = g.Allocate(n * sizeof(float));
      if (st.ok()) st = normuon_bench::FillRandom(p.get(), normuon::DType::kF32, n, 0, 0.02f, 2 * i);
      if (st.ok()) st = normuon_bench::FillRandom(g.get(), normuon::DType::kF32, n, 0, 1, 2 * i + 1);
      if (!st.ok()) return absl::StrCat(e.name, ": ", st.message());
      normuon_param_t handle;
      st = normuon_tools::RegisterEntry(rt_, e, normuon::sharding::RowShard{0, e.rows}, p.get(),
                                        g.get(), &handle);
      if (!st.ok()) return std::string(st.message());
    }
    const normuon_status_t finalized = normuon_finalize(rt_);
    if (finalized != NORMUON_SUCCESS) {
      return std::string(normuon_tools::ApiError(rt_, "normuon_finalize", finalized).message());
    }
    st = timer_.Init();
    if (!st.ok()) return std::string(st.message());
    double ms = 0, enqueue = 0;
    return Step(&ms, &enqueue);  // untimed: first-call set-up of cuBLAS; graph mode: the capture
  }

  std::string Step(double* ms, double* enqueue_ms) {
    absl::Status st = timer_.Start(stream_);
    if (!st.ok()) return std::string(st.message());
    const Clock::time_point t0 = Clock::now();
    const normuon_status_t s = normuon_step(rt_, -1.0f, -1.0f, stream_);
    *enqueue_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (s != NORMUON_SUCCESS) {
      return std::string(normuon_tools::ApiError(rt_, "normuon_step", s).message());
    }
    absl::StatusOr<double> t = timer_.StopMs(stream_);
    if (!t.ok()) return std::string(t.status().message());
    *ms = *t;
    normuon_step_info_t info;
    normuon_step_info_init(&info);
    const normuon_status_t result = normuon_step_result(rt_, &info);
    if (result != NORMUON_SUCCESS) {
      return std::string(normuon_tools::ApiError(rt_, "normuon_step_result", result).message());
    }
    if (info.last_skipped) return "the step was skipped (non-finite gradient?)";
    return "";
  }

  cudaStream_t stream() const { return stream_; }

 private:
  normuon_runtime_t rt_ = 0;
  cudaStream_t stream_ = nullptr;
  std::vector<normuon_bench::DeviceBuffer> buffers_;
  normuon_bench::EventTimer timer_;
};

// As g_cpu_rig; released before the CUDA runtime shuts down.
std::string g_cuda_rig_key;
std::unique_ptr<CudaStepRig> g_cuda_rig;

// The CUDA step's floor in ms (see the header comment); *gemm_rate: the model's NS5 FLOPs over
// the GEMM part of the floor.
absl::StatusOr<double> CudaFloorMs(const ModelShapes& m, normuon::DType dtype, cudaStream_t stream,
                                   double* gemm_rate) {
  normuon_bench::PlainCublas cublas;
  NORMUON_RETURN_IF_ERROR(cublas.Init(stream));
  double gemm_s = 0.0, flops = 0.0, bytes = 0.0;
  for (const auto& [shape, work] : NsWorkByShape(m)) {
    NORMUON_ASSIGN_OR_RETURN(const double one,
                     normuon_bench::GemmRate(cublas, stream, dtype, shape.first, shape.second, 1));
    double rate = one;
    if (work.second > 1) {
      NORMUON_ASSIGN_OR_RETURN(const double batched,
                       normuon_bench::GemmRate(cublas, stream, dtype, shape.first, shape.second,
                                               work.second));
      rate = std::max(rate, batched);
    }
    gemm_s += work.first / rate;
    flops += work.first;
  }
  for (const ModelShape& e : m.entries) {
    bytes += static_cast<double>(e.elements()) * (e.kind == ParamKind::kMatrix ? 20.0 : 28.0);
  }
  NORMUON_ASSIGN_OR_RETURN(const double copy,
                   normuon_bench::CopyRate(stream, size_t{1} << 30));  // 1 GiB moved
  *gemm_rate = flops / gemm_s;
  return (gemm_s + bytes / copy) * 1e3;
}

void BM_StepCuda(benchmark::State& state) {
  const int model_index = static_cast<int>(state.range(0));
  const bool fp32 = state.range(1) == 1;
  const bool graph = state.range(2) == 1;
  std::string error;
  const ModelShapes* m = Model(model_index, &error);
  if (m == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  std::string& rig_key = g_cuda_rig_key;
  std::unique_ptr<CudaStepRig>& rig = g_cuda_rig;
  static double floor_ms = 0.0, gemm_rate = 0.0;
  const std::string key = absl::StrCat(model_index, "/", fp32, "/", graph);
  if (rig == nullptr || rig_key != key) {
    rig.reset();
    rig = std::make_unique<CudaStepRig>();
    error = rig->SetUp(*m, fp32 ? NORMUON_NS_FP32 : NORMUON_NS_BF16, graph);
    absl::StatusOr<double> floor =
        error.empty() ? CudaFloorMs(*m, fp32 ? normuon::DType::kF32 : normuon::DType::kBF16,
                                    rig->stream(), &gemm_rate)
                      : absl::StatusOr<double>(absl::InternalError(error));
    if (!floor.ok()) {
      rig.reset();
      state.SkipWithError(std::string(floor.status().message()).c_str());
      return;
    }
    floor_ms = *floor;
    rig_key = key;
  }
  double total_ms = 0.0, enqueue_total = 0.0;
  for (auto _ : state) {
    double ms = 0.0, enqueue = 0.0;
    error = rig->Step(&ms, &enqueue);
    if (!error.empty()) {
      rig.reset();
      state.SkipWithError(error.c_str());
      return;
    }
    state.SetIterationTime(ms * 1e-3);
    total_ms += ms;
    enqueue_total += enqueue;
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["step_ms"] = total_ms / n;
  state.counters["enqueue_ms"] = enqueue_total / n;
  state.counters["floor_ms"] = floor_ms;
  state.counters["ratio_to_floor"] = (total_ms / n) / floor_ms;
  state.counters["gemm_TFLOP/s"] = gemm_rate * 1e-12;
  state.SetLabel(absl::StrFormat("%s, 1 rank, CUDA, %s%s", kModels[model_index],
                                 fp32 ? "fp32" : "bf16", graph ? ", graph" : ""));
}

#endif  // NORMUON_WITH_CUDA

}  // namespace

int main(int argc, char** argv) {
  g_argv0 = argv[0];
  g_blas_threads = openblas_get_num_threads();
  const bool filter_given = FilterGiven(argc, argv);
  // Google Benchmark takes its own flags (--benchmark_*) out of argv; Abseil parses the rest and
  // refuses anything it does not know.
  benchmark::Initialize(&argc, argv);
  absl::SetProgramUsageMessage(
      "step_bench [--benchmark_* flags] [--bucket_mb=X]: whole optimizer steps per schedule");
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::fprintf(stderr, "step_bench: unexpected argument '%s'\n", positional[1]);
    return 1;
  }
  const double bucket_mb = absl::GetFlag(FLAGS_bucket_mb);
  if (!(bucket_mb > 0.0 && bucket_mb < 1e7)) {
    std::fprintf(stderr, "step_bench: --bucket_mb must be > 0\n");
    return 1;
  }
  g_bucket_bytes = static_cast<uint64_t>(bucket_mb * 1048576.0);
  g_tp = absl::GetFlag(FLAGS_tp);
  if (g_tp < 1) {
    std::fprintf(stderr, "step_bench: --tp must be >= 1\n");
    return 1;
  }
  benchmark::AddCustomContext("tp", absl::StrCat(g_tp));
  const std::string qkv_layout = absl::GetFlag(FLAGS_qkv_layout);
  if (qkv_layout != "interleaved" && qkv_layout != "separate") {
    std::fprintf(stderr, "step_bench: --qkv_layout = '%s': expected interleaved or separate\n",
                 qkv_layout.c_str());
    return 1;
  }
  g_separate_qkv = qkv_layout == "separate";
  benchmark::AddCustomContext("qkv_layout", qkv_layout);

  benchmark::AddCustomContext("cpu_cores", absl::StrCat(std::thread::hardware_concurrency()));
  benchmark::AddCustomContext("openblas_threads", absl::StrCat(g_blas_threads));
  benchmark::AddCustomContext("bucket_bytes", absl::StrCat(g_bucket_bytes));
  benchmark::AddCustomContext(
      "ns_method", std::string(normuon_tools::NsMethodName(absl::GetFlag(FLAGS_ns_method))));
  benchmark::AddCustomContext("ns_symmetric_products",
                              absl::GetFlag(FLAGS_ns_symmetric_products) ? "1" : "0");
  benchmark::AddCustomContext(
      "floor", "NS5 FLOPs / same-run sgemm rate (min(ranks, cores) concurrent one-thread sgemms)");

  // CPU: tiny always; gpt2-124m and llama-1b-layer when a filter picks the cases to run.
  const int cpu_models = filter_given ? 3 : 1;
  for (int model = 0; model < cpu_models; ++model) {
    for (int ranks : {1, 2, 4, 8}) {
      for (int schedule = 0; schedule < 3; ++schedule) {
        benchmark::RegisterBenchmark("StepCpu", BM_StepCpu)
            ->Args({model, ranks, schedule})
            ->ArgNames({"model", "ranks", "schedule"})
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
  if (!filter_given) {
    std::fprintf(stderr, "step_bench: gpt2-124m and llama-1b-layer CPU cases (model:1, model:2) "
                         "run only with --benchmark_filter\n");
  }

#ifdef NORMUON_WITH_CUDA
  const std::string no_device = normuon_bench::NoDeviceReason();
  if (!no_device.empty()) {
    std::fprintf(stderr, "step_bench: CUDA step cases: %s: skipped\n", no_device.c_str());
  } else if (!normuon_has_cuda()) {
    std::fprintf(stderr, "step_bench: CUDA step cases: the library has no CUDA backend: skipped\n");
  } else {
    benchmark::AddCustomContext("device", normuon_bench::DeviceDescription(0));
    for (int model : {0, 1, 3, 4}) {
      // Eager bf16 and fp32, then graph mode (bf16), next to its eager case.
      for (const auto& [mode, graph] : {std::pair{0, 0}, std::pair{0, 1}, std::pair{1, 0}}) {
        benchmark::RegisterBenchmark("StepCuda", BM_StepCuda)
            ->Args({model, mode, graph})
            ->ArgNames({"model", "fp32", "graph"})
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
#else
  std::fprintf(stderr, "step_bench: built without CUDA: CPU cases only\n");
#endif

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_cpu_rig.reset();
#ifdef NORMUON_WITH_CUDA
  g_cuda_rig.reset();
#endif
  return 0;
}
