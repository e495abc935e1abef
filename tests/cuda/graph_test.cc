// Graph mode (config.cuda_graph = 1) through the public C API against the eager CUDA step.
//
// Two runtimes with the same configuration but cuda_graph, over their own device buffers holding
// the same initial parameters, run the same scenario: new gradients written into the same device
// buffers before every step (cudaMemcpyAsync on the step's stream), the lr and weight decay
// changed between steps (the step's arguments and normuon_set_group_lr), every parameter rebound
// to its own pointers (the graph is kept) and two of them to new buffers (the graph is captured
// again), a NaN gradient (the step is skipped in both), a step begun by normuon_grad_ready, and
// a step on a second stream. After every step the parameters, all optimizer state and the step
// result must be bitwise equal: the graph holds the same kernels in the same order. Both ns
// dtypes (bf16, the CUDA default, and fp32) are run.
//
// Also: the profile and trace of a replayed step, the NULL stream refused in graph mode, and a
// failed capture (the caller's stream is already being captured) that runs nothing and is
// followed by a successful capture.
//
// Without a CUDA device (CI) or in a CPU-only build (--define=cuda=off) every test skips, saying
// why.
#include <gtest/gtest.h>

#ifdef NORMUON_WITH_CUDA
#include <cuda_runtime.h>
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "normuon/normuon.h"

namespace {

#ifndef NORMUON_WITH_CUDA

TEST(GraphTest, NeedsTheCudaBuild) {
  GTEST_SKIP() << "built without CUDA (--define=cuda=off): graph mode needs the CUDA backend";
}

#else  // NORMUON_WITH_CUDA

#define ASSERT_CUDA(call)                                                                   \
  do {                                                                                      \
    const cudaError_t assert_cuda_error_ = (call);                                          \
    ASSERT_EQ(assert_cuda_error_, cudaSuccess)                                              \
        << #call << ": " << cudaGetErrorName(assert_cuda_error_) << ": "                    \
        << cudaGetErrorString(assert_cuda_error_);                                          \
  } while (0)

#define ASSERT_NORMUON(rt, call)                                                            \
  do {                                                                                      \
    const normuon_status_t assert_normuon_status_ = (call);                                 \
    ASSERT_EQ(assert_normuon_status_, NORMUON_SUCCESS)                                      \
        << #call << ": " << normuon_status_string(assert_normuon_status_) << ": "           \
        << normuon_last_error(rt);                                                          \
  } while (0)

// Empty when a CUDA device and the CUDA backend are there, else why not.
std::string NoDeviceReason() {
  if (!normuon_has_cuda()) return "the library was built without the CUDA backend";
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device: cudaGetDeviceCount: ") + cudaGetErrorString(e);
  }
  if (count == 0) return "no CUDA device";
  return "";
}

#define SKIP_WITHOUT_DEVICE()                                   \
  do {                                                          \
    const std::string no_device_ = NoDeviceReason();            \
    if (!no_device_.empty()) GTEST_SKIP() << no_device_;        \
  } while (0)

struct ParamSpec {
  const char* name;
  int64_t rows, cols;
  bool matrix;
};

// Tall, wide, square, two of one shape (one Newton-Schulz batch), and AdamW parameters.
const ParamSpec kParams[] = {
    {"tall", 96, 40, true},   {"wide", 40, 96, true},  {"square", 64, 64, true},
    {"pair_a", 48, 80, true}, {"pair_b", 48, 80, true}, {"bias", 96, 1, false},
    {"embed", 50, 16, false},
};
constexpr int kNumParams = sizeof(kParams) / sizeof(kParams[0]);
constexpr int kWide = 1;  // gets the NaN gradient
constexpr int kTall = 0, kBias = 5;  // rebound to new buffers

int64_t Elements(int i) { return kParams[i].rows * kParams[i].cols; }

std::vector<float> Randn(size_t n, uint32_t seed, float scale) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> x(n);
  for (float& e : x) e = dist(gen);
  return x;
}

// The gradient of parameter i at step k (identical for both runtimes).
std::vector<float> Gradient(int i, int k) {
  return Randn(static_cast<size_t>(Elements(i)), 1000u * static_cast<uint32_t>(k + 1) + i, 1.0f);
}

// Everything a step leaves behind, copied to the host.
struct Snapshot {
  std::vector<std::vector<float>> params;
  std::vector<std::vector<char>> state;  // every applicable (param, kind), in a fixed order
  normuon_step_info_t info;
};

// One runtime with its device buffers.
class Model {
 public:
  ~Model() {
    if (rt_ != 0) normuon_destroy(rt_);
    for (void* p : owned_) cudaFree(p);
  }

  // Creates the runtime and registers every parameter over new device buffers that hold `init`.
  void Create(bool graph, normuon_ns_dtype_t ns, const std::vector<std::vector<float>>& init) {
    normuon_config_t c;
    normuon_config_init(&c);
    c.backend = NORMUON_BACKEND_CUDA;
    c.device = 0;
    c.ns_dtype = ns;
    if (ns == NORMUON_NS_FP16) {  // fp16 here means Gram NS in fp16 with the tile products
      c.ns_method = NORMUON_NS_METHOD_GRAM;
      c.ns_symmetric_products = 1;
    }
    c.check_finite = 1;
    c.weight_decay = 0.01f;
    c.adamw_weight_decay = 0.01f;
    c.cuda_graph = graph ? 1 : 0;
    ASSERT_NORMUON(0, normuon_create(&c, 0, &rt_));
    params_.assign(kNumParams, nullptr);
    grads_.assign(kNumParams, nullptr);
    for (int i = 0; i < kNumParams; ++i) {
      ASSERT_NO_FATAL_FAILURE(NewBuffers(i, init[i]));
      normuon_param_desc_t d;
      normuon_param_desc_init(&d);
      d.name = kParams[i].name;
      d.rows = kParams[i].rows;
      d.cols = kParams[i].cols;
      d.row_begin = 0;
      d.row_count = kParams[i].rows;
      d.param = params_[i];
      d.grad = grads_[i];
      normuon_param_t id = -1;
      if (kParams[i].matrix) {
        d.group = NORMUON_GROUP_MATRIX_DEFAULT;
        ASSERT_NORMUON(rt_, normuon_register_matrix(rt_, &d, &id));
      } else {
        d.group = NORMUON_GROUP_ADAMW_DEFAULT;
        ASSERT_NORMUON(rt_, normuon_register_adamw(rt_, &d, &id));
      }
      ASSERT_EQ(id, i);
    }
    ASSERT_NORMUON(rt_, normuon_finalize(rt_));
  }

  // New param and grad buffers for parameter i; the param buffer gets `values` (synchronously).
  void NewBuffers(int i, const std::vector<float>& values) {
    const size_t bytes = static_cast<size_t>(Elements(i)) * sizeof(float);
    void* p = nullptr;
    void* g = nullptr;
    ASSERT_CUDA(cudaMalloc(&p, bytes));
    owned_.push_back(p);
    ASSERT_CUDA(cudaMalloc(&g, bytes));
    owned_.push_back(g);
    ASSERT_CUDA(cudaMemcpy(p, values.data(), bytes, cudaMemcpyHostToDevice));
    ASSERT_CUDA(cudaMemset(g, 0, bytes));
    // Both may return before the device is done (pageable source, device memset), and the steps
    // run on non-blocking streams, which do not wait for the legacy default stream.
    ASSERT_CUDA(cudaDeviceSynchronize());
    params_[i] = p;
    grads_[i] = g;
  }

  // Writes the gradients of step k into the current grad buffers, on `stream`.
  void WriteGradients(int k, cudaStream_t stream) {
    for (int i = 0; i < kNumParams; ++i) {
      std::vector<float> g = Gradient(i, k);
      if (k == 4 && i == kWide) g[7] = std::numeric_limits<float>::quiet_NaN();
      ASSERT_CUDA(cudaMemcpyAsync(grads_[i], g.data(), g.size() * sizeof(float),
                                  cudaMemcpyHostToDevice, stream));
    }
  }

  std::vector<float> Read(const void* device, int i) const {
    std::vector<float> host(static_cast<size_t>(Elements(i)));
    const cudaError_t e =
        cudaMemcpy(host.data(), device, host.size() * sizeof(float), cudaMemcpyDeviceToHost);
    EXPECT_EQ(e, cudaSuccess) << cudaGetErrorString(e);
    return host;
  }

  // Waits for the step on `stream` and copies parameters, state and the step result.
  void Snap(cudaStream_t stream, Snapshot* out) {
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    normuon_step_info_init(&out->info);
    ASSERT_NORMUON(rt_, normuon_step_result(rt_, &out->info));
    out->params.clear();
    out->state.clear();
    for (int i = 0; i < kNumParams; ++i) {
      out->params.push_back(Read(params_[i], i));
      for (normuon_state_kind_t kind :
           {NORMUON_STATE_MOMENTUM, NORMUON_STATE_SECOND_MOMENT, NORMUON_STATE_EXP_AVG,
            NORMUON_STATE_EXP_AVG_SQ, NORMUON_STATE_STEP}) {
        uint64_t bytes = 0;
        ASSERT_NORMUON(rt_, normuon_state_size(rt_, i, kind, &bytes));
        if (bytes == 0) continue;
        std::vector<char> s(bytes);
        ASSERT_NORMUON(rt_, normuon_get_state(rt_, i, kind, s.data(), bytes));
        out->state.push_back(std::move(s));
      }
    }
  }

  normuon_runtime_t rt() const { return rt_; }
  void* param(int i) const { return params_[i]; }
  void* grad(int i) const { return grads_[i]; }

 private:
  normuon_runtime_t rt_ = 0;
  std::vector<void*> params_, grads_;
  std::vector<void*> owned_;  // every buffer ever allocated, freed after the runtime
};

std::vector<std::vector<float>> InitialParams() {
  std::vector<std::vector<float>> init;
  for (int i = 0; i < kNumParams; ++i) {
    init.push_back(Randn(static_cast<size_t>(Elements(i)), 77u + static_cast<uint32_t>(i), 0.05f));
  }
  return init;
}

// Bitwise equality of two snapshots, naming the first difference.
void ExpectBitwiseEqual(const Snapshot& eager, const Snapshot& graph, int step) {
  EXPECT_EQ(graph.info.steps_taken, eager.info.steps_taken) << "step " << step;
  EXPECT_EQ(graph.info.steps_skipped, eager.info.steps_skipped) << "step " << step;
  EXPECT_EQ(graph.info.last_skipped, eager.info.last_skipped) << "step " << step;
  EXPECT_EQ(graph.info.nonfinite_param, eager.info.nonfinite_param) << "step " << step;
  ASSERT_EQ(graph.params.size(), eager.params.size());
  for (size_t i = 0; i < eager.params.size(); ++i) {
    const std::vector<float>& a = eager.params[i];
    const std::vector<float>& b = graph.params[i];
    ASSERT_EQ(a.size(), b.size());
    if (std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0) continue;
    size_t j = 0;
    while (j < a.size() && std::memcmp(&a[j], &b[j], sizeof(float)) == 0) ++j;
    ADD_FAILURE() << "step " << step << ": parameter '" << kParams[i].name << "' differs at "
                  << j << ": eager " << a[j] << ", graph " << b[j];
  }
  ASSERT_EQ(graph.state.size(), eager.state.size());
  for (size_t s = 0; s < eager.state.size(); ++s) {
    EXPECT_TRUE(eager.state[s] == graph.state[s])
        << "step " << step << ": optimizer state buffer " << s << " differs";
  }
}

constexpr int kSteps = 8;
constexpr int kRebindStep = 3;   // before this step: tall and bias move to new buffers
constexpr int kNaNStep = 4;      // wide's gradient holds a NaN: the step is skipped
constexpr int kGradReadyStep = 5;
constexpr int kSecondStreamStep = 6;

// Runs the scenario on m, one snapshot per step. The graph runtime also checks its profile and
// trace after a replayed step, and that the buffers it was bound to before the rebind stay as
// they were.
void RunScenario(Model* m, bool graph, cudaStream_t s1, cudaStream_t s2,
                 std::vector<Snapshot>* snaps) {
  normuon_runtime_t rt = m->rt();
  std::vector<void*> old_buffers;
  std::vector<std::vector<float>> old_values;
  for (int k = 0; k < kSteps; ++k) {
    cudaStream_t stream = k == kSecondStreamStep ? s2 : s1;
    if (k == kSecondStreamStep) ASSERT_CUDA(cudaStreamSynchronize(s1));
    if (k == kSecondStreamStep + 1) ASSERT_CUDA(cudaStreamSynchronize(s2));
    if (k == 2) {
      // The same pointers again (a trainer binding every step): nothing moves.
      for (int i = 0; i < kNumParams; ++i) {
        ASSERT_NORMUON(rt, normuon_bind(rt, i, m->param(i), m->grad(i)));
      }
    }
    if (k == kRebindStep) {
      ASSERT_CUDA(cudaStreamSynchronize(s1));
      for (int i : {kTall, kBias}) {
        old_buffers.push_back(m->param(i));
        old_values.push_back(m->Read(m->param(i), i));
        ASSERT_NO_FATAL_FAILURE(m->NewBuffers(i, old_values.back()));
        ASSERT_NORMUON(rt, normuon_bind(rt, i, m->param(i), m->grad(i)));
      }
      // The AdamW group's lr and weight decay change too (read by the graph at replay).
      ASSERT_NORMUON(rt, normuon_set_group_lr(rt, NORMUON_GROUP_ADAMW_DEFAULT, 1e-3f, 0.02f));
    }
    ASSERT_NO_FATAL_FAILURE(m->WriteGradients(k, stream));
    if (k == kGradReadyStep) {
      std::vector<normuon_param_t> matrices;
      for (int i = 0; i < kNumParams; ++i) {
        if (kParams[i].matrix) matrices.push_back(i);
      }
      ASSERT_NORMUON(rt, normuon_grad_ready(rt, matrices.data(),
                                            static_cast<int32_t>(matrices.size()), stream));
    }
    // A new lr every step (but the step begun by grad_ready: the eager CUDA step copies the
    // scalars at grad_ready and again, from the legacy default stream, at step; this test is
    // about graph mode, not that copy's order); weight decay changed at step 2 and kept.
    const float lr =
        k == kGradReadyStep ? -1.0f : 0.02f * (1.0f - 0.07f * static_cast<float>(k));
    const float wd = k == 2 ? 0.05f : -1.0f;
    ASSERT_NORMUON(rt, normuon_step(rt, lr, wd, stream));
    snaps->emplace_back();
    ASSERT_NO_FATAL_FAILURE(m->Snap(stream, &snaps->back()));
    const normuon_step_info_t& info = snaps->back().info;
    if (k == kNaNStep) {
      EXPECT_EQ(info.last_skipped, 1) << (graph ? "graph" : "eager");
      EXPECT_EQ(info.nonfinite_param, kWide);
    } else {
      EXPECT_EQ(info.last_skipped, 0) << (graph ? "graph" : "eager") << " step " << k;
    }
    if (graph && (k == 0 || k == 2 || k == kRebindStep || k == kSecondStreamStep)) {
      // Device time between the marks of the step, also for a replay (k = 2, 6).
      normuon_step_profile_t p;
      normuon_step_profile_init(&p);
      ASSERT_NORMUON(rt, normuon_last_step_profile(rt, &p));
      EXPECT_GT(p.total_ms, 0.0) << "step " << k;
      EXPECT_GT(p.newton_schulz_ms, 0.0) << "step " << k;
      EXPECT_GT(p.update_ms, 0.0) << "step " << k;
      EXPECT_GE(p.buckets, 1) << "step " << k;
      uint64_t needed = 0;
      ASSERT_NORMUON(rt, normuon_last_step_trace(rt, nullptr, 0, &needed));
      std::string trace(needed, '\0');
      ASSERT_NORMUON(rt, normuon_last_step_trace(rt, &trace[0], needed, &needed));
      EXPECT_NE(trace.find("newton_schulz"), std::string::npos) << "step " << k;
    }
  }
  // The graph captured before the rebind held the old pointers; a replay of it would have
  // written there.
  for (size_t j = 0; j < old_buffers.size(); ++j) {
    const int i = j == 0 ? kTall : kBias;
    const std::vector<float> now = m->Read(old_buffers[j], i);
    EXPECT_TRUE(now == old_values[j]) << "the old buffer of '" << kParams[i].name
                                      << "' changed after the rebind";
  }
}

class GraphEquivalenceTest : public ::testing::TestWithParam<normuon_ns_dtype_t> {};

TEST_P(GraphEquivalenceTest, ReplayIsBitwiseTheEagerStep) {
  SKIP_WITHOUT_DEVICE();
  cudaStream_t s1 = nullptr, s2 = nullptr;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  const std::vector<std::vector<float>> init = InitialParams();
  std::vector<Snapshot> eager_snaps, graph_snaps;
  {
    Model eager;
    ASSERT_NO_FATAL_FAILURE(eager.Create(/*graph=*/false, GetParam(), init));
    ASSERT_NO_FATAL_FAILURE(RunScenario(&eager, false, s1, s2, &eager_snaps));
  }
  {
    Model graph;
    ASSERT_NO_FATAL_FAILURE(graph.Create(/*graph=*/true, GetParam(), init));
    ASSERT_NO_FATAL_FAILURE(RunScenario(&graph, true, s1, s2, &graph_snaps));
  }
  ASSERT_EQ(graph_snaps.size(), eager_snaps.size());
  for (size_t k = 0; k < eager_snaps.size(); ++k) {
    ASSERT_NO_FATAL_FAILURE(ExpectBitwiseEqual(eager_snaps[k], graph_snaps[k], static_cast<int>(k)));
  }
  // The steps did something: parameters moved, the skipped step counted.
  EXPECT_FALSE(eager_snaps.back().params[2] == init[2]);
  EXPECT_EQ(eager_snaps.back().info.steps_taken, kSteps - 1);
  EXPECT_EQ(eager_snaps.back().info.steps_skipped, 1);
  ASSERT_CUDA(cudaStreamDestroy(s1));
  ASSERT_CUDA(cudaStreamDestroy(s2));
}

INSTANTIATE_TEST_SUITE_P(NsDtypes, GraphEquivalenceTest,
                         ::testing::Values(NORMUON_NS_BF16, NORMUON_NS_FP32, NORMUON_NS_FP16),
                         [](const ::testing::TestParamInfo<normuon_ns_dtype_t>& info) {
                           return info.param == NORMUON_NS_BF16   ? std::string("bf16")
                                  : info.param == NORMUON_NS_FP32 ? std::string("fp32")
                                                                  : std::string("gram_fp16_tiles");
                         });

TEST(GraphTest, NullStreamIsRefused) {
  SKIP_WITHOUT_DEVICE();
  Model m;
  ASSERT_NO_FATAL_FAILURE(m.Create(/*graph=*/true, NORMUON_NS_DEFAULT, InitialParams()));
  EXPECT_EQ(normuon_step(m.rt(), -1.0f, -1.0f, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(normuon_last_error(m.rt())).find("config.cuda_graph"), std::string::npos)
      << normuon_last_error(m.rt());
  const normuon_param_t first = 0;
  EXPECT_EQ(normuon_grad_ready(m.rt(), &first, 1, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  // Nothing was begun: a step on a stream runs.
  cudaStream_t s = nullptr;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  ASSERT_NO_FATAL_FAILURE(m.WriteGradients(0, s));
  ASSERT_NORMUON(m.rt(), normuon_step(m.rt(), -1.0f, -1.0f, s));
  Snapshot snap;
  ASSERT_NO_FATAL_FAILURE(m.Snap(s, &snap));
  EXPECT_EQ(snap.info.steps_taken, 1);
  ASSERT_CUDA(cudaStreamDestroy(s));
}

// A capture that cannot begin (the caller is capturing the stream itself) runs nothing and
// returns NORMUON_ERROR_CUDA; the next step captures and matches the eager runtime.
TEST(GraphTest, FailedCaptureRunsNothingAndTheNextStepCapturesAgain) {
  SKIP_WITHOUT_DEVICE();
  cudaStream_t s = nullptr;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const std::vector<std::vector<float>> init = InitialParams();
  Model eager, graph;
  ASSERT_NO_FATAL_FAILURE(eager.Create(/*graph=*/false, NORMUON_NS_DEFAULT, init));
  ASSERT_NO_FATAL_FAILURE(graph.Create(/*graph=*/true, NORMUON_NS_DEFAULT, init));

  ASSERT_NO_FATAL_FAILURE(graph.WriteGradients(0, s));
  ASSERT_CUDA(cudaStreamSynchronize(s));
  ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  const normuon_status_t failed = normuon_step(graph.rt(), -1.0f, -1.0f, s);
  const std::string message = normuon_last_error(graph.rt());
  cudaGraph_t theirs = nullptr;
  // Our capture may have been invalidated by the refused one: either way it ends here.
  if (cudaStreamEndCapture(s, &theirs) != cudaSuccess) cudaGetLastError();
  if (theirs != nullptr) cudaGraphDestroy(theirs);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusActive;
  ASSERT_CUDA(cudaStreamIsCapturing(s, &capture));
  ASSERT_EQ(capture, cudaStreamCaptureStatusNone);
  EXPECT_EQ(failed, NORMUON_ERROR_CUDA) << normuon_status_string(failed) << ": " << message;
  EXPECT_NE(message.find("capture"), std::string::npos) << message;
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);

  Snapshot before;
  ASSERT_NO_FATAL_FAILURE(graph.Snap(s, &before));
  EXPECT_EQ(before.info.steps_taken, 0);
  EXPECT_TRUE(before.params[2] == init[2]) << "the failed step wrote a parameter";

  for (int k = 0; k < 3; ++k) {
    Snapshot a, b;
    ASSERT_NO_FATAL_FAILURE(eager.WriteGradients(k, s));
    ASSERT_NORMUON(eager.rt(), normuon_step(eager.rt(), -1.0f, -1.0f, s));
    ASSERT_NO_FATAL_FAILURE(eager.Snap(s, &a));
    ASSERT_NO_FATAL_FAILURE(graph.WriteGradients(k, s));
    ASSERT_NORMUON(graph.rt(), normuon_step(graph.rt(), -1.0f, -1.0f, s));
    ASSERT_NO_FATAL_FAILURE(graph.Snap(s, &b));
    ASSERT_NO_FATAL_FAILURE(ExpectBitwiseEqual(a, b, k));
  }
  ASSERT_CUDA(cudaStreamDestroy(s));
}

#endif  // NORMUON_WITH_CUDA

}  // namespace
