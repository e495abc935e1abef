// normuon_run: the demo. Runs optimizer steps over the parameter shapes of a real model.
//
//   normuon_run [--model=NAME | --shapes=FILE] [--backend=cpu|cuda] [--device=N] [--steps=N]
//               [--ranks=N] [--owner_policy=round_robin|cost_balanced] [--check]
//               [--ns_dtype=default|fp32|bf16] [--seed=S] [--lr=X] [--weight_decay=X] [--json]
//
// Every `matrix` entry of the shape list is registered with normuon_register_matrix (NorMuon),
// every `adamw` entry with normuon_register_adamw. With --ranks=N, N threads form an in-process
// group and each registers its FSDP2 rows (ceil(rows/N) per rank) of every parameter.
// Parameters start as N(0, 0.02) draws; every step gets fresh N(0, 1) gradients; both come
// from a fast approximate normal generator (sum of four 16-bit uniforms) seeded by --seed, so a
// run is reproducible. Gradient generation and copies are outside the timed region: the time
// of a step is normuon_step plus normuon_step_result (which waits for the device on CUDA).
// Prints the wall time of every step and a summary (model, parameter counts, ms per step, and
// the sum and L2 norm of all parameters after the run, so two runs can be compared); --json
// prints the same as one JSON object instead. Models are found as model_shapes.h describes
// ($NORMUON_MODELS_DIR, the runfiles, or tools/models under the working directory).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"
#include "tools/model_shapes.h"

#ifdef NORMUON_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

ABSL_FLAG(std::string, model, "gpt2-124m",
          "model shape list by name (tiny, gpt2-124m, gpt2-350m, llama-1b-layer, llama-1b, "
          "llama-8b-layer, llama-8b); ignored when --shapes is given");
ABSL_FLAG(std::string, shapes, "", "path of a shape-list file (instead of --model)");
ABSL_FLAG(std::string, backend, "cpu", "cpu or cuda");
ABSL_FLAG(int, device, 0, "CUDA device ordinal (--backend=cuda)");
ABSL_FLAG(int, steps, 3, "optimizer steps to run");
ABSL_FLAG(std::string, ns_dtype, "default",
          "Newton-Schulz precision: default (fp32 on cpu, bf16 on cuda), fp32 or bf16");
ABSL_FLAG(uint64_t, seed, 1, "seed of the parameters and gradients");
ABSL_FLAG(double, lr, 0.02, "NorMuon learning rate");
ABSL_FLAG(double, weight_decay, 0.01, "NorMuon weight decay");
ABSL_FLAG(bool, json, false, "print one JSON object instead of text");
ABSL_FLAG(int, ranks, 1,
          "in-process ranks (threads) of the sharded step, FSDP2 row split (CUDA: the ranks share "
          "one GPU through a device-memory in-process group)");
ABSL_FLAG(std::string, owner_policy, "round_robin",
          "which rank orthogonalizes each matrix: round_robin or cost_balanced");
ABSL_FLAG(std::string, schedule, "sequential",
          "communication schedule: sequential, per_matrix or bucketed");
ABSL_FLAG(double, bucket_mb, 32.0, "bucketed schedule: MiB of wire data per bucket");
ABSL_FLAG(std::string, trace, "",
          "write a Chrome trace (Perfetto) of the last step of every rank to this file");
ABSL_FLAG(bool, overlap_backward, false,
          "after the plain steps, run the same number of steps with a simulated backward pass: "
          "per layer (last first) a timed wait, then normuon_grad_ready for that layer's "
          "matrices; reports the optimizer time still exposed after the last gradient");
ABSL_FLAG(double, backward_ms_per_layer, 0.0,
          "--overlap_backward: duration of one layer's backward; 0 = twice the plain step time "
          "spread over the layers");
ABSL_FLAG(bool, check, false,
          "also run the single-rank step and report the largest difference (exit 1 if not 0 on "
          "CPU)");
ABSL_FLAG(double, check_tol, -1.0,
          "with --check and --backend=cuda: exit 1 when the largest difference is over this "
          "(< 0: report only). The CPU backend must always be exact");
ABSL_FLAG(std::string, check_against, "same",
          "with --check: the single-rank run to compare with, on the same backend ('same') or on "
          "the CPU backend with the same Newton-Schulz precision ('cpu')");

namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// splitmix64: a tiny, fast, well-mixed generator; its state is a counter.
inline uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Fills out[0..n) with elements [first, first + n) of an approximately N(0, sigma^2) sequence:
// the sum of four 16-bit uniforms of one 64-bit draw, centered and scaled to unit variance
// (Irwin-Hall, 4 terms). The sequence is a pure function of (seed, stream, sub), so every
// parameter and step has its own reproducible values, and since splitmix64's state is a counter,
// any rank can generate just its rows (first = row_begin * cols).
void FillNormal(float* out, int64_t n, float sigma, uint64_t seed, uint64_t stream, uint64_t sub,
                int64_t first = 0) {
  uint64_t state = seed * 0x2545F4914F6CDD1Dull ^ (stream + 1) * 0x9E3779B97F4A7C15ull ^
                   (sub + 1) * 0xD1B54A32D192ED03ull;
  SplitMix64(&state);
  state += static_cast<uint64_t>(first) * 0x9E3779B97F4A7C15ull;
  constexpr double kMean = 4 * 65535.0 / 2;
  const double inv_std = 1.0 / std::sqrt(4 * (65536.0 * 65536.0 - 1) / 12.0);
  const float scale = static_cast<float>(inv_std) * sigma;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = SplitMix64(&state);
    const uint32_t s = static_cast<uint32_t>(r & 0xFFFF) +
                       static_cast<uint32_t>((r >> 16) & 0xFFFF) +
                       static_cast<uint32_t>((r >> 32) & 0xFFFF) + static_cast<uint32_t>(r >> 48);
    out[i] = static_cast<float>(s - kMean) * scale;
  }
}

// One parameter's buffers: host memory (CPU backend) or device memory (CUDA backend).
struct ParamBuffers {
  float* param = nullptr;
  float* grad = nullptr;
  std::unique_ptr<float[]> host_param;  // CPU backend
  std::unique_ptr<float[]> host_grad;   // CPU backend
};

class Storage {
 public:
  Storage(bool cuda, int device) : cuda_(cuda), device_(device) {}
  ~Storage() {
#ifdef NORMUON_WITH_CUDA
    if (cuda_) {
      for (ParamBuffers& b : buffers_) {
        if (b.param != nullptr) cudaFree(b.param);
        if (b.grad != nullptr) cudaFree(b.grad);
      }
    }
#endif
  }

  // Allocates one parameter's buffers and sets the parameter to `init` (n floats).
  bool Add(int64_t n, const float* init, std::string* error) {
    ParamBuffers b;
    if (!cuda_) {
      b.host_param.reset(new float[n]);
      b.host_grad.reset(new float[n]);
      std::memcpy(b.host_param.get(), init, n * sizeof(float));
      std::memset(b.host_grad.get(), 0, n * sizeof(float));
      b.param = b.host_param.get();
      b.grad = b.host_grad.get();
      buffers_.push_back(std::move(b));
      return true;
    }
#ifdef NORMUON_WITH_CUDA
    cudaError_t err = cudaSetDevice(device_);
    if (err == cudaSuccess) err = cudaMalloc(reinterpret_cast<void**>(&b.param), n * sizeof(float));
    if (err == cudaSuccess) err = cudaMalloc(reinterpret_cast<void**>(&b.grad), n * sizeof(float));
    if (err == cudaSuccess) {
      err = cudaMemcpy(b.param, init, n * sizeof(float), cudaMemcpyHostToDevice);
    }
    if (err == cudaSuccess) err = cudaMemset(b.grad, 0, n * sizeof(float));
    buffers_.push_back(std::move(b));
    if (err != cudaSuccess) {
      *error = absl::StrCat("CUDA: ", cudaGetErrorString(err));
      return false;
    }
    return true;
#else
    *error = "this build of normuon_run has no CUDA support (built without NORMUON_WITH_CUDA)";
    return false;
#endif
  }

  ParamBuffers& at(size_t i) { return buffers_[i]; }

  // Copies n floats from host `src` into parameter i's gradient (a no-op when src is the
  // gradient buffer itself, as on CPU).
  bool SetGrad(size_t i, const float* src, int64_t n, std::string* error) {
    if (!cuda_) {
      if (src != buffers_[i].grad) std::memcpy(buffers_[i].grad, src, n * sizeof(float));
      return true;
    }
#ifdef NORMUON_WITH_CUDA
    cudaError_t err = cudaMemcpy(buffers_[i].grad, src, n * sizeof(float), cudaMemcpyHostToDevice);
    if (err != cudaSuccess) {
      *error = absl::StrCat("CUDA: ", cudaGetErrorString(err));
      return false;
    }
    return true;
#else
    return false;
#endif
  }

  // Copies parameter i (n floats) into host memory dst.
  bool GetParam(size_t i, float* dst, int64_t n, std::string* error) {
    if (!cuda_) {
      std::memcpy(dst, buffers_[i].param, n * sizeof(float));
      return true;
    }
#ifdef NORMUON_WITH_CUDA
    cudaError_t err = cudaMemcpy(dst, buffers_[i].param, n * sizeof(float), cudaMemcpyDeviceToHost);
    if (err != cudaSuccess) {
      *error = absl::StrCat("CUDA: ", cudaGetErrorString(err));
      return false;
    }
    return true;
#else
    return false;
#endif
  }

 private:
  bool cuda_;
  int device_;
  std::vector<ParamBuffers> buffers_;
};

int Fail(const std::string& message) {
  std::fprintf(stderr, "normuon_run: %s\n", message.c_str());
  return 1;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// What one rank measured and ended with.
struct RankOutcome {
  std::string error;                       // "" on success
  std::vector<double> step_ms;             // wall time of each step on this rank
  normuon_step_profile_t phases{};         // summed over steps (CPU backend)
  bool have_phases = false;
  std::vector<std::vector<float>> params;  // with --check: this rank's rows of every parameter
  double sum = 0.0, sum_sq = 0.0;          // over this rank's rows of every parameter
  uint64_t state_bytes = 0;
  double setup_ms = 0.0, grad_ms = 0.0;
  std::string trace;                 // the last step's Chrome trace events (--trace)
  std::vector<double> exposed_ms;    // --overlap_backward: last grad_ready -> end of step
  std::vector<double> backward_ms;   // --overlap_backward: the simulated backward of each step
};

struct RunConfig {
  const std::vector<normuon_tools::ModelShape>* entries;
  bool cuda;
  int device;
  normuon_ns_dtype_t ns_dtype;
  normuon_owner_policy_t policy;
  int steps;
  uint64_t seed;
  float lr, weight_decay;
  bool keep_params;
  bool verbose;  // print each step as it ends
  normuon_schedule_t schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  uint64_t bucket_bytes = uint64_t{32} << 20;
  bool trace = false;
  // --overlap_backward: after the plain steps, this many steps with a simulated backward pass.
  int overlap_steps = 0;
  double backward_ms_per_layer = 0.0;  // 0: twice the plain steady step time over the layers
  std::vector<std::vector<int>> layers;  // matrix entries per layer, backward order
};

// The layer of a parameter: the number after "h." or "layers." (GPT-2, Llama naming), else -1.
int LayerOf(const std::string& name) {
  for (const char* prefix : {"h.", "layers."}) {
    const size_t at = name.find(prefix);
    if (at != 0 && (at == std::string::npos || name[at - 1] != '.')) continue;
    size_t i = at + std::strlen(prefix);
    int layer = 0;
    bool digits = false;
    while (i < name.size() && name[i] >= '0' && name[i] <= '9') {
      layer = layer * 10 + (name[i++] - '0');
      digits = true;
    }
    if (digits) return layer;
  }
  return -1;
}

// Matrix entries grouped by layer in backward order: the last layer first; matrices outside
// the numbered layers (embeddings, a head) last.
std::vector<std::vector<int>> BackwardLayers(const std::vector<normuon_tools::ModelShape>& e) {
  int max_layer = -1;
  for (const auto& x : e) max_layer = std::max(max_layer, LayerOf(x.name));
  std::vector<std::vector<int>> layers(static_cast<size_t>(max_layer + 2));
  for (size_t i = 0; i < e.size(); ++i) {
    if (e[i].kind != normuon_tools::ShapeKind::kMatrix) continue;
    const int l = LayerOf(e[i].name);
    layers[l < 0 ? layers.size() - 1 : static_cast<size_t>(max_layer - l)].push_back(
        static_cast<int>(i));
  }
  if (layers.back().empty()) layers.pop_back();
  return layers;
}

// FSDP2's dim-0 layout: ceil(rows / world) rows per rank, the last ranks short or empty.
void Fsdp2Rows(int64_t rows, int rank, int world, int64_t* begin, int64_t* count) {
  const int64_t chunk = (rows + world - 1) / world;
  const int64_t b = std::min<int64_t>(rows, chunk * rank);
  const int64_t e = std::min<int64_t>(rows, chunk * (rank + 1));
  *begin = b;
  *count = e - b;
}

void AddPhases(normuon_step_profile_t* into, const normuon_step_profile_t& p) {
  into->total_ms += p.total_ms;
  into->finite_check_ms += p.finite_check_ms;
  into->momentum_ms += p.momentum_ms;
  into->gather_ms += p.gather_ms;
  into->newton_schulz_ms += p.newton_schulz_ms;
  into->scatter_ms += p.scatter_ms;
  into->row_stats_ms += p.row_stats_ms;
  into->update_ms += p.update_ms;
  into->adamw_ms += p.adamw_ms;
  into->exposed_comm_ms += p.exposed_comm_ms;
}

// Runs the whole optimizer on rank `rank` of `world` (comm 0 for a single rank): its FSDP2 rows
// of every parameter, cfg.steps steps.
RankOutcome RunRank(const RunConfig& cfg, normuon_comm_t comm, int rank, int world) {
  RankOutcome out;
  auto api_fail = [&](normuon_runtime_t rt, const char* call, normuon_status_t st) {
    out.error = absl::StrCat(call, " failed on rank ", rank, ": ", normuon_status_string(st),
                             ": ", normuon_last_error(rt));
    return out;
  };
  const std::vector<normuon_tools::ModelShape>& entries = *cfg.entries;
  const Clock::time_point setup_start = Clock::now();
  normuon_config_t config;
  normuon_config_init(&config);
  config.backend = cfg.cuda ? NORMUON_BACKEND_CUDA : NORMUON_BACKEND_CPU;
  config.device = cfg.device;
  config.ns_dtype = cfg.ns_dtype;
  config.owner_policy = cfg.policy;
  config.schedule = cfg.schedule;
  config.bucket_bytes = cfg.bucket_bytes;
  config.lr = cfg.lr;
  config.weight_decay = cfg.weight_decay;
  normuon_runtime_t rt = 0;
  normuon_status_t st = normuon_create(&config, comm, &rt);
  if (st != NORMUON_SUCCESS) return api_fail(0, "normuon_create", st);
  struct Destroy {
    normuon_runtime_t rt;
    ~Destroy() { normuon_destroy(rt); }
  } destroy{rt};

  Storage storage(cfg.cuda, cfg.device);
  std::vector<int64_t> begin(entries.size()), count(entries.size());
  int64_t largest = 1;
  for (size_t i = 0; i < entries.size(); ++i) {
    Fsdp2Rows(entries[i].rows, rank, world, &begin[i], &count[i]);
    largest = std::max(largest, count[i] * entries[i].cols);
  }
  std::vector<float> staging(static_cast<size_t>(largest));
  std::vector<normuon_param_t> handles(entries.size(), -1);
  for (size_t i = 0; i < entries.size(); ++i) {
    const normuon_tools::ModelShape& e = entries[i];
    const int64_t n = count[i] * e.cols;
    FillNormal(staging.data(), n, 0.02f, cfg.seed, i, 0, begin[i] * e.cols);
    std::string error;
    if (!storage.Add(std::max<int64_t>(n, 1), staging.data(), &error)) {
      out.error = error;
      return out;
    }
    normuon_param_desc_t desc;
    normuon_param_desc_init(&desc);
    desc.name = e.name.c_str();
    desc.rows = e.rows;
    desc.cols = e.cols;
    desc.row_begin = begin[i];
    desc.row_count = count[i];
    desc.param = storage.at(i).param;
    desc.grad = storage.at(i).grad;
    normuon_param_t handle = -1;
    if (e.kind == normuon_tools::ShapeKind::kMatrix) {
      desc.group = NORMUON_GROUP_MATRIX_DEFAULT;
      st = normuon_register_matrix(rt, &desc, &handle);
      if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_register_matrix", st);
    } else {
      desc.group = NORMUON_GROUP_ADAMW_DEFAULT;
      st = normuon_register_adamw(rt, &desc, &handle);
      if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_register_adamw", st);
    }
    handles[i] = handle;
  }
  st = normuon_finalize(rt);
  if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_finalize", st);
  st = normuon_memory_required(rt, &out.state_bytes);
  if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_memory_required", st);
  out.setup_ms = MsSince(setup_start);
  normuon_step_profile_init(&out.phases);

  std::vector<std::string> backward_events;  // this rank's simulated backward, for the trace
  double per_layer_ms = cfg.backward_ms_per_layer;
  const int total_steps = cfg.steps + cfg.overlap_steps;
  for (int s = 0; s < total_steps; ++s) {
    const Clock::time_point gen_start = Clock::now();
    for (size_t i = 0; i < entries.size(); ++i) {
      const int64_t n = count[i] * entries[i].cols;
      if (n == 0) continue;
      float* dst = cfg.cuda ? staging.data() : storage.at(i).grad;
      FillNormal(dst, n, 1.0f, cfg.seed, i, static_cast<uint64_t>(s) + 1,
                 begin[i] * entries[i].cols);
      std::string error;
      if (!storage.SetGrad(i, dst, n, &error)) {
        out.error = error;
        return out;
      }
    }
    out.grad_ms += MsSince(gen_start);

    Clock::time_point start = Clock::now();
    if (s >= cfg.steps) {
      // A simulated backward pass: per layer, last first, a timed wait standing for the device
      // work of that layer's backward, then its matrices' gradients are final.
      if (per_layer_ms <= 0.0) {
        double plain = 0.0;
        for (int k = 1; k < cfg.steps; ++k) plain += out.step_ms[k];
        plain = cfg.steps > 1 ? plain / (cfg.steps - 1) : out.step_ms[0];
        per_layer_ms = 2.0 * plain / std::max<size_t>(1, cfg.layers.size());
      }
      backward_events.clear();
      const Clock::time_point backward_start = Clock::now();
      for (const std::vector<int>& layer : cfg.layers) {
        const Clock::time_point t0 = Clock::now();
        std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(per_layer_ms));
        const Clock::time_point t1 = Clock::now();
        backward_events.push_back(absl::StrFormat(
            "{\"name\":\"backward layer\",\"cat\":\"trainer\",\"ph\":\"X\",\"pid\":%d,"
            "\"tid\":3,\"ts\":%.3f,\"dur\":%.3f}",
            rank, std::chrono::duration<double, std::micro>(t0.time_since_epoch()).count(),
            std::chrono::duration<double, std::micro>(t1 - t0).count()));
        std::vector<normuon_param_t> ready;
        for (int i : layer) ready.push_back(handles[i]);
        st = normuon_grad_ready(rt, ready.data(), static_cast<int32_t>(ready.size()), nullptr);
        if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_grad_ready", st);
      }
      out.backward_ms.push_back(MsSince(backward_start));
      start = Clock::now();  // the last gradient is final: what follows is exposed
    }
    st = normuon_step(rt, -1.0f, -1.0f, nullptr);
    if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_step", st);
    normuon_step_info_t info;
    normuon_step_info_init(&info);
    st = normuon_step_result(rt, &info);
    if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_step_result", st);
    const double ms = MsSince(start);
    if (s < cfg.steps) {
      out.step_ms.push_back(ms);
    } else {
      out.exposed_ms.push_back(ms);
    }
    if (info.last_skipped) {
      out.error = absl::StrCat("step ", s, " was skipped on rank ", rank);
      return out;
    }
    normuon_step_profile_t prof;
    normuon_step_profile_init(&prof);
    // Phases of the steady steps: step 0 (cuBLAS set-up, first touches) is left out when there
    // are others, as in the steady step time.
    if (s < cfg.steps && (s > 0 || cfg.steps == 1) &&
        normuon_last_step_profile(rt, &prof) == NORMUON_SUCCESS) {
      AddPhases(&out.phases, prof);
      out.have_phases = true;
    }
    if (cfg.verbose) {
      std::printf(s < cfg.steps ? "step %d: %.1f ms\n"
                                : "step %d (overlapped backward): %.1f ms after the last gradient\n",
                  s, ms);
      std::fflush(stdout);
    }
  }
  if (cfg.trace) {
    uint64_t needed = 0;
    if (normuon_last_step_trace(rt, nullptr, 0, &needed) == NORMUON_SUCCESS) {
      std::string trace(needed, '\0');
      st = normuon_last_step_trace(rt, trace.data(), needed, &needed);
      if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_last_step_trace", st);
      trace.resize(needed - 1);
      out.trace = trace;
      for (const std::string& e : backward_events) absl::StrAppend(&out.trace, ",\n", e);
      if (!backward_events.empty()) {
        absl::StrAppend(&out.trace, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":", rank,
                        ",\"tid\":3,\"args\":{\"name\":\"backward (simulated)\"}}");
      }
    }
  }

  for (size_t i = 0; i < entries.size(); ++i) {
    const int64_t n = count[i] * entries[i].cols;
    std::vector<float> rows(static_cast<size_t>(n));
    std::string error;
    if (n > 0 && !storage.GetParam(i, rows.data(), n, &error)) {
      out.error = error;
      return out;
    }
    for (float v : rows) {
      out.sum += v;
      out.sum_sq += static_cast<double>(v) * v;
    }
    if (cfg.keep_params) out.params.push_back(std::move(rows));
  }
  return out;
}

std::string PhaseLine(const normuon_step_profile_t& p, int steps) {
  const double n = steps;
  return absl::StrFormat(
      "momentum %.1f, gather %.1f, newton-schulz %.1f, scatter %.1f, row stats %.1f, "
      "update %.1f, adamw %.1f, finite check %.1f; exposed communication %.1f (ms per step)",
      p.momentum_ms / n, p.gather_ms / n, p.newton_schulz_ms / n, p.scatter_ms / n,
      p.row_stats_ms / n, p.update_ms / n, p.adamw_ms / n, p.finite_check_ms / n,
      p.exposed_comm_ms / n);
}

std::string PhaseJson(const normuon_step_profile_t& p, int steps) {
  const double n = steps;
  return absl::StrFormat(
      "{\"momentum_ms\": %.3f, \"gather_ms\": %.3f, \"newton_schulz_ms\": %.3f, "
      "\"scatter_ms\": %.3f, \"row_stats_ms\": %.3f, \"update_ms\": %.3f, \"adamw_ms\": %.3f, "
      "\"finite_check_ms\": %.3f, \"exposed_comm_ms\": %.3f}",
      p.momentum_ms / n, p.gather_ms / n, p.newton_schulz_ms / n, p.scatter_ms / n,
      p.row_stats_ms / n, p.update_ms / n, p.adamw_ms / n, p.finite_check_ms / n,
      p.exposed_comm_ms / n);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "normuon_run [--model=NAME | --shapes=FILE] [--backend=cpu|cuda] [--steps=N]\n"
      "            [--ranks=N] [--owner_policy=round_robin|cost_balanced] [--check]\n"
      "            [--ns_dtype=default|fp32|bf16] [--seed=S] [--json]\n"
      "Runs NorMuon/AdamW steps over a model's parameter shapes with random gradients and\n"
      "prints the time per step and per phase. --ranks=N runs the sharded step on N in-process\n"
      "ranks (threads, FSDP2 row split); --check also runs the single-rank step and reports the\n"
      "largest difference of any parameter element (0 expected: the CPU path is exact);\n"
      "--check_against=cpu compares with the CPU backend instead (for --backend=cuda).");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() > 1) return Fail(absl::StrCat("unexpected argument '", args[1], "'"));

  const std::string backend = absl::GetFlag(FLAGS_backend);
  const bool cuda = backend == "cuda";
  if (!cuda && backend != "cpu") return Fail("--backend must be cpu or cuda");
  if (cuda && !normuon_has_cuda()) return Fail("the normuon library was built without CUDA");
  normuon_ns_dtype_t ns_dtype = NORMUON_NS_DEFAULT;
  const std::string ns = absl::GetFlag(FLAGS_ns_dtype);
  if (ns == "fp32") {
    ns_dtype = NORMUON_NS_FP32;
  } else if (ns == "bf16") {
    ns_dtype = NORMUON_NS_BF16;
  } else if (ns != "default") {
    return Fail("--ns_dtype must be default, fp32 or bf16");
  }
  const std::string mode = ns_dtype == NORMUON_NS_FP32   ? "fp32"
                           : ns_dtype == NORMUON_NS_BF16 ? "bf16"
                           : cuda                        ? "bf16"
                                                         : "fp32";
  const int steps = absl::GetFlag(FLAGS_steps);
  if (steps < 1) return Fail("--steps must be at least 1");
  const int ranks = absl::GetFlag(FLAGS_ranks);
  if (ranks < 1 || ranks > 4096) return Fail("--ranks must be in [1, 4096]");
  const std::string policy_name = absl::GetFlag(FLAGS_owner_policy);
  normuon_owner_policy_t policy;
  if (policy_name == "round_robin") {
    policy = NORMUON_OWNER_ROUND_ROBIN;
  } else if (policy_name == "cost_balanced") {
    policy = NORMUON_OWNER_COST_BALANCED;
  } else {
    return Fail("--owner_policy must be round_robin or cost_balanced");
  }
  const bool check = absl::GetFlag(FLAGS_check);
  const std::string check_against = absl::GetFlag(FLAGS_check_against);
  const double check_tol = absl::GetFlag(FLAGS_check_tol);
  if (check_against != "same" && check_against != "cpu") {
    return Fail("--check_against must be same or cpu");
  }
  const std::string schedule_name = absl::GetFlag(FLAGS_schedule);
  normuon_schedule_t schedule;
  if (schedule_name == "sequential") {
    schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  } else if (schedule_name == "per_matrix") {
    schedule = NORMUON_SCHEDULE_PER_MATRIX;
  } else if (schedule_name == "bucketed") {
    schedule = NORMUON_SCHEDULE_BUCKETED;
  } else {
    return Fail("--schedule must be sequential, per_matrix or bucketed");
  }
  const double bucket_mb = absl::GetFlag(FLAGS_bucket_mb);
  if (!(bucket_mb > 0.0 && bucket_mb < 1e7)) return Fail("--bucket_mb must be > 0");
  const std::string trace_path = absl::GetFlag(FLAGS_trace);
  const bool overlap = absl::GetFlag(FLAGS_overlap_backward);
  const double backward_ms = absl::GetFlag(FLAGS_backward_ms_per_layer);
  if (backward_ms < 0.0) return Fail("--backward_ms_per_layer must be >= 0");
  const bool json = absl::GetFlag(FLAGS_json);

  const std::string shapes_path = absl::GetFlag(FLAGS_shapes);
  std::string model = absl::GetFlag(FLAGS_model);
  absl::StatusOr<normuon_tools::ModelShapes> shapes =
      shapes_path.empty() ? normuon_tools::LoadModel(model, argv[0])
                          : normuon_tools::ReadModelShapesFile(shapes_path);
  if (!shapes.ok()) return Fail(std::string(shapes.status().message()));
  if (!shapes_path.empty()) model = shapes_path;

  RunConfig cfg;
  cfg.entries = &shapes->entries;
  cfg.cuda = cuda;
  cfg.device = absl::GetFlag(FLAGS_device);
  cfg.ns_dtype = ns_dtype;
  cfg.policy = policy;
  cfg.steps = steps;
  cfg.seed = absl::GetFlag(FLAGS_seed);
  cfg.lr = static_cast<float>(absl::GetFlag(FLAGS_lr));
  cfg.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  cfg.keep_params = check;
  cfg.verbose = !json && ranks == 1;
  cfg.schedule = schedule;
  cfg.bucket_bytes = static_cast<uint64_t>(bucket_mb * 1048576.0);
  cfg.trace = !trace_path.empty();
  cfg.overlap_steps = overlap ? steps : 0;
  cfg.backward_ms_per_layer = backward_ms;
  cfg.layers = BackwardLayers(shapes->entries);

  if (!json) {
    std::printf("normuon_run: model %s (%s), backend %s, mode %s, %d rank%s (%s), %lld matrices "
                "(%lld elements), %lld adamw parameters, %lld elements in all\n",
                model.c_str(), shapes->source.c_str(), backend.c_str(), mode.c_str(), ranks,
                ranks == 1 ? "" : "s", policy_name.c_str(),
                static_cast<long long>(shapes->num_matrices()),
                static_cast<long long>(shapes->matrix_elements()),
                static_cast<long long>(shapes->num_adamw()),
                static_cast<long long>(shapes->total_elements()));
    std::fflush(stdout);
  }

  std::vector<RankOutcome> outcomes(ranks);
  if (ranks == 1) {
    outcomes[0] = RunRank(cfg, 0, 0, 1);
  } else {
    std::vector<normuon_comm_t> comms(ranks);
    // CUDA: the ranks share this machine's GPU and the group moves device memory.
    const normuon_status_t st = normuon_comm_create_inprocess_group_ex(
        ranks, 3600.0, cuda ? NORMUON_COMM_MEMORY_DEVICE : NORMUON_COMM_MEMORY_HOST, comms.data());
    if (st != NORMUON_SUCCESS) {
      return Fail(absl::StrCat("normuon_comm_create_inprocess_group_ex: ",
                               normuon_comm_last_error(0)));
    }
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r) {
      threads.emplace_back([&, r] { outcomes[r] = RunRank(cfg, comms[r], r, ranks); });
    }
    for (std::thread& t : threads) t.join();
    for (normuon_comm_t c : comms) normuon_comm_destroy(c);
  }
  for (const RankOutcome& o : outcomes) {
    if (!o.error.empty()) return Fail(o.error);
  }

  // The step time of a sharded run is the slowest rank's; phases are rank 0's.
  std::vector<double> step_ms(steps, 0.0);
  double sum = 0.0, sum_sq = 0.0, setup_ms = 0.0, grad_ms = 0.0;
  uint64_t state_bytes = 0;
  for (const RankOutcome& o : outcomes) {
    for (int s = 0; s < steps; ++s) step_ms[s] = std::max(step_ms[s], o.step_ms[s]);
    sum += o.sum;
    sum_sq += o.sum_sq;
    setup_ms = std::max(setup_ms, o.setup_ms);
    grad_ms = std::max(grad_ms, o.grad_ms);
    state_bytes = std::max(state_bytes, o.state_bytes);
  }
  double max_diff = -1.0;
  if (check) {
    RunConfig single = cfg;
    single.verbose = false;
    single.steps = cfg.steps + cfg.overlap_steps;  // the same updates, without grad_ready
    single.overlap_steps = 0;
    single.trace = false;
    if (check_against == "cpu") {
      single.cuda = false;
      // The CPU reference in the same Newton-Schulz precision as the run it checks.
      single.ns_dtype = mode == "bf16" ? NORMUON_NS_BF16 : NORMUON_NS_FP32;
    }
    const RankOutcome ref = RunRank(single, 0, 0, 1);
    if (!ref.error.empty()) return Fail(ref.error);
    max_diff = 0.0;
    for (int r = 0; r < ranks; ++r) {
      for (size_t i = 0; i < shapes->entries.size(); ++i) {
        int64_t begin, count;
        Fsdp2Rows(shapes->entries[i].rows, r, ranks, &begin, &count);
        const std::vector<float>& mine = outcomes[r].params[i];
        const float* want = ref.params[i].data() + begin * shapes->entries[i].cols;
        for (size_t k = 0; k < mine.size(); ++k) {
          max_diff = std::max(max_diff, static_cast<double>(std::fabs(mine[k] - want[k])));
        }
      }
    }
  }
  double total_ms = 0.0;
  for (double ms : step_ms) total_ms += ms;
  const double mean_ms = total_ms / steps;
  const double steady_ms = steps > 1 ? (total_ms - step_ms[0]) / (steps - 1) : mean_ms;
  const double min_ms = *std::min_element(step_ms.begin(), step_ms.end());
  const RankOutcome& first = outcomes[0];
  const int phase_steps = steps > 1 ? steps - 1 : 1;  // the steps whose phases were summed
  // --overlap_backward: per step the slowest rank's exposed time, averaged over the steps.
  double exposed_mean = 0.0, backward_mean = 0.0;
  if (overlap) {
    for (int s = 0; s < steps; ++s) {
      double e = 0.0, b = 0.0;
      for (const RankOutcome& o : outcomes) {
        e = std::max(e, o.exposed_ms[s]);
        b = std::max(b, o.backward_ms[s]);
      }
      exposed_mean += e / steps;
      backward_mean += b / steps;
    }
  }
  const double hidden = overlap ? 1.0 - exposed_mean / steady_ms : 0.0;
  if (!trace_path.empty()) {
    std::string doc = "{\"traceEvents\":[\n";
    bool any = false;
    for (const RankOutcome& o : outcomes) {
      if (o.trace.empty()) continue;
      absl::StrAppend(&doc, any ? ",\n" : "", o.trace);
      any = true;
    }
    doc += "\n]}\n";
    FILE* f = std::fopen(trace_path.c_str(), "w");
    if (f == nullptr || std::fwrite(doc.data(), 1, doc.size(), f) != doc.size()) {
      if (f != nullptr) std::fclose(f);
      return Fail(absl::StrCat("cannot write the trace to ", trace_path));
    }
    std::fclose(f);
    if (!any) return Fail("no trace: step traces need the CPU backend");
  }

  if (json) {
    std::string out = "{";
    absl::StrAppend(
        &out, "\"model\": ", JsonString(model), ", \"source\": ", JsonString(shapes->source),
        ", \"backend\": ", JsonString(backend), ", \"mode\": ", JsonString(mode),
        ", \"ranks\": ", ranks, ", \"owner_policy\": ", JsonString(policy_name),
        ", \"matrices\": ", shapes->num_matrices(),
        ", \"matrix_elements\": ", shapes->matrix_elements(),
        ", \"adamw_params\": ", shapes->num_adamw(), ", \"elements\": ", shapes->total_elements(),
        ", \"state_bytes_max_rank\": ", state_bytes, ", \"steps\": ", steps,
        ", \"seed\": ", cfg.seed);
    absl::StrAppend(
        &out, absl::StrFormat(", \"setup_ms\": %.3f, \"grad_gen_ms\": %.3f", setup_ms, grad_ms));
    absl::StrAppend(&out, ", \"step_ms\": [",
                    absl::StrJoin(step_ms, ", ",
                                  [](std::string* o, double v) {
                                    absl::StrAppend(o, absl::StrFormat("%.3f", v));
                                  }),
                    "]");
    absl::StrAppend(&out, absl::StrFormat(", \"mean_step_ms\": %.3f, \"steady_step_ms\": %.3f, "
                                          "\"min_step_ms\": %.3f, \"param_sum\": %.17g, "
                                          "\"param_norm\": %.17g",
                                          mean_ms, steady_ms, min_ms, sum, std::sqrt(sum_sq)));
    if (first.have_phases) absl::StrAppend(&out, ", \"phases_rank0\": ", PhaseJson(first.phases, phase_steps));
    if (check) {
      absl::StrAppend(&out, absl::StrFormat(", \"check_max_abs_diff\": %.9g", max_diff),
                      ", \"check_against\": ", JsonString(check_against));
    }
    absl::StrAppend(&out, ", \"schedule\": ", JsonString(schedule_name));
    if (overlap) {
      absl::StrAppend(&out, absl::StrFormat(
                                ", \"overlap_backward\": {\"backward_ms\": %.3f, "
                                "\"exposed_after_last_grad_ms\": %.3f, \"plain_step_ms\": %.3f, "
                                "\"hidden_fraction\": %.4f}",
                                backward_mean, exposed_mean, steady_ms, hidden));
    }
    std::printf("%s}\n", out.c_str());
  } else {
    std::printf("summary: %d steps: %.1f ms/step (mean), %.1f ms/step (without step 0), %.1f ms "
                "min; setup %.0f ms; state+buffers %.1f MiB (largest rank); gradient generation "
                "%.0f ms (untimed)\n",
                steps, mean_ms, steady_ms, min_ms, setup_ms, state_bytes / 1048576.0, grad_ms);
    if (first.have_phases) std::printf("phases (rank 0): %s\n", PhaseLine(first.phases, phase_steps).c_str());
    std::printf("checksum: param sum %.9e, param L2 norm %.9e\n", sum, std::sqrt(sum_sq));
    if (overlap) {
      std::printf("overlap with a simulated backward (%zu layers, %.0f ms): %.1f ms still exposed "
                  "after the last gradient vs %.1f ms for the plain step: %.1f%% hidden\n",
                  cfg.layers.size(), backward_mean, exposed_mean, steady_ms, 100.0 * hidden);
    }
    if (check) {
      std::printf("check: max |sharded - single-rank (%s)| over every parameter element = %.9g%s\n",
                  check_against == "cpu" ? "CPU" : backend.c_str(), max_diff,
                  max_diff == 0.0 ? " (bitwise equal)" : "");
    }
  }
  if (check && max_diff != 0.0 && !cuda) return 1;  // the CPU path must be exact
  if (check && cuda && check_tol >= 0.0 && !(max_diff <= check_tol)) {
    std::fprintf(stderr, "normuon_run: --check: max difference %.9g is over --check_tol=%g\n",
                 max_diff, check_tol);
    return 1;
  }
  return 0;
}
