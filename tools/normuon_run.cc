// normuon_run: the demo. Runs optimizer steps over the parameter shapes of a real model.
//
//   normuon_run [--model=NAME | --shapes=FILE] [--backend=cpu|cuda] [--device=N] [--steps=N]
//               [--ns_dtype=default|fp32|bf16] [--seed=S] [--lr=X] [--weight_decay=X] [--json]
//
// Every `matrix` entry of the shape list is registered with normuon_register_matrix (NorMuon),
// every `adamw` entry with normuon_register_adamw, each with all of its rows (a single rank).
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
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
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

// Fills out[0..n) with approximately N(0, sigma^2) values: the sum of four 16-bit uniforms of one
// 64-bit draw, centered and scaled to unit variance (Irwin-Hall, 4 terms). The stream is a pure
// function of (seed, stream, sub) so every parameter and step has its own reproducible values.
void FillNormal(float* out, int64_t n, float sigma, uint64_t seed, uint64_t stream, uint64_t sub) {
  uint64_t state = seed * 0x2545F4914F6CDD1Dull ^ (stream + 1) * 0x9E3779B97F4A7C15ull ^
                   (sub + 1) * 0xD1B54A32D192ED03ull;
  SplitMix64(&state);
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

int ApiFail(normuon_runtime_t rt, const char* call, normuon_status_t status) {
  return Fail(
      absl::StrCat(call, " failed: ", normuon_status_string(status), ": ", normuon_last_error(rt)));
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

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "normuon_run [--model=NAME | --shapes=FILE] [--backend=cpu|cuda] [--steps=N]\n"
      "            [--ns_dtype=default|fp32|bf16] [--seed=S] [--json]\n"
      "Runs NorMuon/AdamW steps over a model's parameter shapes with random gradients and\n"
      "prints the time per step.");
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
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  const bool json = absl::GetFlag(FLAGS_json);

  // The shape list.
  const std::string shapes_path = absl::GetFlag(FLAGS_shapes);
  std::string model = absl::GetFlag(FLAGS_model);
  absl::StatusOr<normuon_tools::ModelShapes> shapes =
      shapes_path.empty() ? normuon_tools::LoadModel(model, argv[0])
                          : normuon_tools::ReadModelShapesFile(shapes_path);
  if (!shapes.ok()) return Fail(std::string(shapes.status().message()));
  if (!shapes_path.empty()) model = shapes_path;
  const std::vector<normuon_tools::ModelShape>& entries = shapes->entries;

  // The runtime.
  const Clock::time_point setup_start = Clock::now();
  normuon_config_t config;
  normuon_config_init(&config);
  config.backend = cuda ? NORMUON_BACKEND_CUDA : NORMUON_BACKEND_CPU;
  config.device = absl::GetFlag(FLAGS_device);
  config.ns_dtype = ns_dtype;
  config.lr = static_cast<float>(absl::GetFlag(FLAGS_lr));
  config.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  normuon_runtime_t rt = 0;
  normuon_status_t st = normuon_create(&config, 0, &rt);
  if (st != NORMUON_SUCCESS) return ApiFail(0, "normuon_create", st);
  struct Destroy {
    normuon_runtime_t rt;
    ~Destroy() { normuon_destroy(rt); }
  } destroy{rt};

  // Buffers and registration, in list order.
  Storage storage(cuda, config.device);
  int64_t largest = 0;
  for (const auto& e : entries) largest = std::max(largest, e.elements());
  std::vector<float> staging(static_cast<size_t>(largest));
  std::vector<normuon_param_t> handles;
  for (size_t i = 0; i < entries.size(); ++i) {
    const normuon_tools::ModelShape& e = entries[i];
    FillNormal(staging.data(), e.elements(), 0.02f, seed, i, 0);
    std::string error;
    if (!storage.Add(e.elements(), staging.data(), &error)) return Fail(error);
    normuon_param_desc_t desc;
    normuon_param_desc_init(&desc);
    desc.name = e.name.c_str();
    desc.rows = e.rows;
    desc.cols = e.cols;
    desc.row_begin = 0;
    desc.row_count = e.rows;
    desc.param = storage.at(i).param;
    desc.param_dtype = NORMUON_DTYPE_FP32;
    desc.grad = storage.at(i).grad;
    desc.grad_dtype = NORMUON_DTYPE_FP32;
    normuon_param_t handle = -1;
    if (e.kind == normuon_tools::ShapeKind::kMatrix) {
      desc.group = NORMUON_GROUP_MATRIX_DEFAULT;
      st = normuon_register_matrix(rt, &desc, &handle);
      if (st != NORMUON_SUCCESS) return ApiFail(rt, "normuon_register_matrix", st);
    } else {
      desc.group = NORMUON_GROUP_ADAMW_DEFAULT;
      st = normuon_register_adamw(rt, &desc, &handle);
      if (st != NORMUON_SUCCESS) return ApiFail(rt, "normuon_register_adamw", st);
    }
    handles.push_back(handle);
  }
  st = normuon_finalize(rt);
  if (st != NORMUON_SUCCESS) return ApiFail(rt, "normuon_finalize", st);
  uint64_t state_bytes = 0;
  st = normuon_memory_required(rt, &state_bytes);
  if (st != NORMUON_SUCCESS) return ApiFail(rt, "normuon_memory_required", st);
  const double setup_ms = MsSince(setup_start);

  if (!json) {
    std::printf(
        "normuon_run: model %s (%s), backend %s, mode %s, %lld matrices (%lld elements), "
        "%lld adamw parameters, %lld elements in all; state+workspace %.1f MiB; "
        "setup %.0f ms\n",
        model.c_str(), shapes->source.c_str(), backend.c_str(), mode.c_str(),
        static_cast<long long>(shapes->num_matrices()),
        static_cast<long long>(shapes->matrix_elements()),
        static_cast<long long>(shapes->num_adamw()),
        static_cast<long long>(shapes->total_elements()), state_bytes / 1048576.0, setup_ms);
    std::fflush(stdout);
  }

  // The steps.
  std::vector<double> step_ms;
  double grad_ms = 0.0;
  for (int s = 0; s < steps; ++s) {
    const Clock::time_point gen_start = Clock::now();
    for (size_t i = 0; i < entries.size(); ++i) {
      const int64_t n = entries[i].elements();
      float* dst = cuda ? staging.data() : storage.at(i).grad;
      FillNormal(dst, n, 1.0f, seed, i, static_cast<uint64_t>(s) + 1);
      std::string error;
      if (!storage.SetGrad(i, dst, n, &error)) return Fail(error);
    }
    grad_ms += MsSince(gen_start);

    const Clock::time_point start = Clock::now();
    st = normuon_step(rt, -1.0f, -1.0f, nullptr);
    if (st != NORMUON_SUCCESS) return ApiFail(rt, "normuon_step", st);
    normuon_step_info_t info;
    normuon_step_info_init(&info);
    st = normuon_step_result(rt, &info);
    if (st != NORMUON_SUCCESS) return ApiFail(rt, "normuon_step_result", st);
    const double ms = MsSince(start);
    step_ms.push_back(ms);
    if (info.last_skipped) return Fail(absl::StrCat("step ", s, " was skipped"));
    if (!json) {
      std::printf("step %d: %.1f ms\n", s, ms);
      std::fflush(stdout);
    }
  }

  // Checksum of all parameters after the run.
  double sum = 0.0, sum_sq = 0.0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const int64_t n = entries[i].elements();
    std::string error;
    if (!storage.GetParam(i, staging.data(), n, &error)) return Fail(error);
    for (int64_t k = 0; k < n; ++k) {
      sum += staging[k];
      sum_sq += static_cast<double>(staging[k]) * staging[k];
    }
  }
  double total_ms = 0.0;
  for (double ms : step_ms) total_ms += ms;
  const double mean_ms = total_ms / steps;
  double steady_ms = mean_ms;  // mean without the first step, which may warm caches
  if (steps > 1) steady_ms = (total_ms - step_ms[0]) / (steps - 1);
  const double min_ms = *std::min_element(step_ms.begin(), step_ms.end());

  if (json) {
    std::string out = "{";
    absl::StrAppend(
        &out, "\"model\": ", JsonString(model), ", \"source\": ", JsonString(shapes->source),
        ", \"backend\": ", JsonString(backend), ", \"mode\": ", JsonString(mode),
        ", \"matrices\": ", shapes->num_matrices(),
        ", \"matrix_elements\": ", shapes->matrix_elements(),
        ", \"adamw_params\": ", shapes->num_adamw(), ", \"elements\": ", shapes->total_elements(),
        ", \"state_bytes\": ", state_bytes, ", \"steps\": ", steps, ", \"seed\": ", seed);
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
                                          "\"param_norm\": %.17g}",
                                          mean_ms, steady_ms, min_ms, sum, std::sqrt(sum_sq)));
    std::printf("%s\n", out.c_str());
  } else {
    std::printf(
        "summary: model %s, backend %s, mode %s, %lld matrices, %lld adamw params, "
        "%lld elements, %d steps: %.1f ms/step (mean), %.1f ms/step (without step 0), "
        "%.1f ms min; gradient generation %.0f ms (untimed)\n",
        model.c_str(), backend.c_str(), mode.c_str(),
        static_cast<long long>(shapes->num_matrices()), static_cast<long long>(shapes->num_adamw()),
        static_cast<long long>(shapes->total_elements()), steps, mean_ms, steady_ms, min_ms,
        grad_ms);
    std::printf("checksum: param sum %.9e, param L2 norm %.9e\n", sum, std::sqrt(sum_sq));
  }
  return 0;
}
