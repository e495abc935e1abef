// The CUDA backend's sharded step (world size > 1) through the public C API: N ranks as N
// threads sharing CUDA device 0, each with its own non-blocking stream, its own runtime
// (config.backend = NORMUON_BACKEND_CUDA) and cudaMalloc'd fp32 parameter and gradient shards,
// connected by a device-memory in-process group (normuon_comm_create_inprocess_group_ex with
// NORMUON_COMM_MEMORY_DEVICE).
//
// What it checks, on a tall (96x40), a wide (40x96), two square (64x64, a Newton-Schulz batch of
// two) and a one-row (1x64) matrix plus a 64-element AdamW bias, over 3 steps of deterministic
// pseudo-random gradients (a pure function of parameter, step and global element, so every world
// size sees the same full gradient):
//  - world sizes 1, 2, 3, 4 and 8, FSDP2's even split and a ragged split in which some rank holds
//    no rows of some matrix: no step skipped; parameters and state (momentum, v, Adam moments)
//    match the CPU backend's single-rank run of the same precision (fp32 Newton-Schulz: update
//    within 1e-4 relative, momentum and AdamW state within 1e-6; bf16 Newton-Schulz: update
//    within 7e-2, v within 1.5e-1; docs/ARCHITECTURE.md section 6), and match the CUDA single-rank run per
//    row (the max over rows of each row's relative update error, so one misrouted row cannot
//    hide in a global norm); the max |difference| from the CUDA single-rank run is printed and
//    recorded as a test property (it may well be 0; bitwise equality is not asserted);
//  - both owner policies (round robin, cost balanced) at world sizes 3 and 4;
//  - a NaN gradient on one rank at world size 3 (config.check_finite = 1) skips that step on every
//    rank: normuon_step_result reports last_skipped = 1 and the same parameter everywhere, and
//    parameters and state are bitwise what they were before the step;
//  - a collective that fails mid-step (NORMUON_FAULT_ERROR injected on one rank of the device
//    group, world size 3) fails normuon_step on every rank with NORMUON_ERROR_COMM, counts the
//    step as skipped and writes no parameter or state;
//  - a CUDA runtime at world size 1 over a real NCCL communicator (NORMUON_NCCL_LIBRARY, else the
//    toolkit's libnccl.so.2) ends bitwise equal to the same runtime with comm 0.
// Without a CUDA device, and in the CPU-only build (--define=cuda=off), all of the above skip.
// Run everywhere: a CUDA runtime over a host in-process group at world size 2 is refused by
// normuon_create with NORMUON_ERROR_INVALID_ARGUMENT (the communicator is checked before any
// device is touched), and creating a device group fails cleanly where there is no usable device
// (NORMUON_ERROR_UNSUPPORTED without CUDA, NORMUON_ERROR_CUDA without a device); with a device, a
// CPU runtime over a device group is refused.
#include <gtest/gtest.h>

#ifdef NORMUON_WITH_CUDA
#include <cuda_runtime.h>
#include <sys/stat.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "normuon/comm.h"
#include "normuon/normuon.h"
#include "tests/testing/row_layouts.h"

namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---- Runs everywhere (no device needed) ----

TEST(ShardedCudaRefusalTest, ACudaRuntimeOverAHostGroupAtWorldTwoIsRefusedAtCreate) {
  normuon_comm_t comms[2] = {0, 0};
  ASSERT_EQ(normuon_comm_create_inprocess_group(2, 10.0, comms), NORMUON_SUCCESS);
  normuon_config_t c;
  normuon_config_init(&c);
  c.backend = NORMUON_BACKEND_CUDA;
  for (int r = 0; r < 2; ++r) {
    normuon_runtime_t rt = 0;
    EXPECT_EQ(normuon_create(&c, comms[r], &rt), NORMUON_ERROR_INVALID_ARGUMENT) << "rank " << r;
    EXPECT_EQ(rt, 0u);
    const std::string message = normuon_last_error(0);
    EXPECT_TRUE(Contains(message, "moves host memory")) << message;
    EXPECT_TRUE(Contains(message, "device communicator")) << message;
  }
  for (normuon_comm_t comm : comms) EXPECT_EQ(normuon_comm_destroy(comm), NORMUON_SUCCESS);
}

#ifdef NORMUON_WITH_CUDA
int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear it
    return 0;
  }
  return n;
}
#endif

TEST(ShardedCudaRefusalTest, ADeviceGroupNeedsADeviceAndACudaRuntime) {
  normuon_comm_t comms[2] = {0, 0};
  const normuon_status_t st =
      normuon_comm_create_inprocess_group_ex(2, 10.0, NORMUON_COMM_MEMORY_DEVICE, comms);
#ifndef NORMUON_WITH_CUDA
  EXPECT_EQ(st, NORMUON_ERROR_UNSUPPORTED) << normuon_comm_last_error(0);
  EXPECT_EQ(comms[0], 0u);
  EXPECT_EQ(comms[1], 0u);
#else
  if (DeviceCount() == 0) {
    EXPECT_EQ(st, NORMUON_ERROR_CUDA) << normuon_comm_last_error(0);
    EXPECT_EQ(comms[0], 0u);
    EXPECT_EQ(comms[1], 0u);
    return;
  }
  ASSERT_EQ(st, NORMUON_SUCCESS) << normuon_comm_last_error(0);
  normuon_config_t c;
  normuon_config_init(&c);  // the CPU backend
  normuon_runtime_t rt = 0;
  EXPECT_EQ(normuon_create(&c, comms[0], &rt), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(rt, 0u);
  const std::string message = normuon_last_error(0);
  EXPECT_TRUE(Contains(message, "moves device memory")) << message;
  for (normuon_comm_t comm : comms) EXPECT_EQ(normuon_comm_destroy(comm), NORMUON_SUCCESS);
#endif
}

#ifndef NORMUON_WITH_CUDA

TEST(ShardedCudaTest, NeedsTheCudaBuild) {
  GTEST_SKIP() << "the CPU-only build (--define=cuda=off) has no CUDA backend to shard";
}

#else  // NORMUON_WITH_CUDA

using normuon::testing::Fsdp2;
using normuon::testing::Range;

constexpr double kGroupTimeoutS = 60.0;
constexpr float kLr = 0.02f;
constexpr float kWd = 0.01f;

struct ParamSpec {
  const char* name;
  int64_t rows, cols;
  bool matrix;
};

// Registration order. The two 64x64 matrices have the same shape, so they form a batch.
const std::vector<ParamSpec>& Model() {
  static const auto* specs = new std::vector<ParamSpec>{
      {"tall", 96, 40, true}, {"wide", 40, 96, true}, {"sq.a", 64, 64, true},
      {"row", 1, 64, true},   {"bias", 64, 1, false}, {"sq.b", 64, 64, true},
  };
  return *specs;
}
constexpr int kSqA = 2;  // index of "sq.a"

// A ragged cover with a rank that holds nothing: rank (param % world) gets no rows, the others
// get uneven runs (weights 1, 2, 3, ...) in reverse rank order (the highest rank first).
std::vector<Range> RaggedWithEmptyRank(int64_t rows, int world, size_t param) {
  if (world == 1) return {{0, rows}};
  const int empty = static_cast<int>(param % static_cast<size_t>(world));
  std::vector<int> holders;
  for (int r = world - 1; r >= 0; --r) {
    if (r != empty) holders.push_back(r);
  }
  int64_t total_weight = 0;
  for (size_t k = 0; k < holders.size(); ++k) total_weight += static_cast<int64_t>(k + 1);
  std::vector<Range> out(world, Range{0, 0});
  int64_t begin = 0, cum = 0;
  for (size_t k = 0; k < holders.size(); ++k) {
    cum += static_cast<int64_t>(k + 1);
    const int64_t end = rows * cum / total_weight;
    out[holders[k]] = {begin, end - begin};
    begin = end;
  }
  out[empty] = {rows, 0};  // an empty range at the end
  return out;
}

// splitmix64: a good 64-bit mix, for values that are pure functions of their coordinates.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [-1, 1), from (param, step, global row, col); step -1 is the initial parameter.
float Value(size_t param, int step, int64_t row, int64_t col) {
  uint64_t h = Mix(static_cast<uint64_t>(param) * 1000003ull + 17);
  h = Mix(h ^ static_cast<uint64_t>(step + 1));
  h = Mix(h ^ static_cast<uint64_t>(row) * 65599ull);
  h = Mix(h ^ static_cast<uint64_t>(col));
  return static_cast<float>(h >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

// The global gradient of `param` at `step`: rows of different scale, so v differs per row.
float Grad(size_t param, int step, int64_t row, int64_t col) {
  return Value(param, step, row, col) * (0.5f + 0.25f * static_cast<float>(row % 7));
}
float Init(size_t param, int64_t row, int64_t col) { return 0.05f * Value(param, -1, row, col); }

enum class CommKind { kNone, kDeviceGroup, kNccl };

struct Options {
  normuon_backend_t backend = NORMUON_BACKEND_CUDA;
  CommKind comm = CommKind::kNone;  // kNone: comm 0 (world must be 1)
  int world = 1;
  bool ragged = false;
  normuon_ns_dtype_t ns_dtype = NORMUON_NS_FP32;
  normuon_ns_method_t ns_method = NORMUON_NS_METHOD_STANDARD;
  normuon_owner_policy_t policy = NORMUON_OWNER_ROUND_ROBIN;
  // A pipelined schedule at world > 1 runs the exchanges on a second stream (two-stream
  // pipelining); grad_ready marks every matrix before step, last registered first.
  normuon_schedule_t schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  uint64_t bucket_bytes = 0;  // 0: the library's default
  bool grad_ready = false;
  int steps = 3;
  int check_finite = 0;
  // This rank writes a NaN into the first gradient element it holds of nan_param at nan_step.
  int nan_rank = -1, nan_step = -1, nan_param = -1;
  // This rank's collective number fault_call after finalize (0: the first step's first) fails
  // (NORMUON_FAULT_ERROR; in-process groups only). The steps may then fail with
  // NORMUON_ERROR_COMM or NORMUON_ERROR_TIMEOUT (in step_status).
  int fault_rank = -1;
  int64_t fault_call = -1;
};

// Full-shape values of every parameter and its state (matrices: momentum, v per row; AdamW: the
// two moments), gathered from every rank.
struct Snapshot {
  std::vector<std::vector<float>> param, first, second;
};

struct RunResult {
  Snapshot before_last;  // after step steps-2 (steps >= 2)
  Snapshot end;
  std::vector<std::vector<normuon_step_info_t>> info;      // [rank][step]
  std::vector<std::vector<normuon_status_t>> step_status;  // [rank][step]: normuon_step's
  std::vector<std::string> step_errors;                    // per rank: the last failed step's
  std::vector<std::string> errors;                         // per rank: "" or the first failure
  std::string skipped;  // the environment cannot run this (NCCL unavailable)
};

std::string Describe(const Options& o) {
  std::ostringstream s;
  s << (o.backend == NORMUON_BACKEND_CUDA ? "cuda" : "cpu") << " world " << o.world
    << (o.comm == CommKind::kNone ? " comm0"
        : o.comm == CommKind::kNccl ? " nccl"
                                    : " devgroup")
    << (o.ragged ? " ragged" : " fsdp2") << (o.ns_dtype == NORMUON_NS_BF16 ? " bf16" : " fp32")
    << (o.ns_method == NORMUON_NS_METHOD_GRAM ? " gram" : "")
    << (o.policy == NORMUON_OWNER_COST_BALANCED ? " cost-balanced" : " round-robin")
    << (o.schedule == NORMUON_SCHEDULE_PER_MATRIX ? " per-matrix"
        : o.schedule == NORMUON_SCHEDULE_BUCKETED ? " bucketed"
                                                  : "")
    << (o.grad_ready ? " grad_ready" : "");
  return s.str();
}

std::vector<Range> SplitOf(const Options& o, size_t param) {
  const int64_t rows = Model()[param].rows;
  return o.ragged ? RaggedWithEmptyRank(rows, o.world, param) : Fsdp2(rows, o.world);
}

Snapshot EmptySnapshot() {
  Snapshot s;
  for (const ParamSpec& p : Model()) {
    const size_t n = static_cast<size_t>(p.rows * p.cols);
    s.param.emplace_back(n, 0.0f);
    s.first.emplace_back(n, 0.0f);
    s.second.emplace_back(p.matrix ? static_cast<size_t>(p.rows) : n, 0.0f);
  }
  return s;
}

// One rank's buffers: cudaMalloc'd (CUDA backend) or host (CPU backend); freed on destruction.
class Buffers {
 public:
  explicit Buffers(bool device) : device_(device) {}
  ~Buffers() {
    for (void* p : owned_) {
      if (device_) {
        cudaFree(p);
      } else {
        std::free(p);
      }
    }
  }
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;

  // nullptr for 0 bytes or on failure (*error says which).
  void* Alloc(size_t bytes, std::string* error) {
    if (bytes == 0) return nullptr;
    void* p = nullptr;
    if (device_) {
      const cudaError_t e = cudaMalloc(&p, bytes);
      if (e != cudaSuccess) {
        *error = std::string("cudaMalloc: ") + cudaGetErrorString(e);
        return nullptr;
      }
    } else {
      p = std::malloc(bytes);
      if (p == nullptr) {
        *error = "malloc failed";
        return nullptr;
      }
    }
    owned_.push_back(p);
    return p;
  }

  // Host to buffer, queued on `stream` (CUDA) without waiting, as a trainer's backward pass
  // writes its gradients: the runtime must order its work after it on the step's stream. The
  // source is pageable host memory, which cudaMemcpyAsync stages before it returns, so the caller
  // may reuse it at once.
  bool Upload(void* dst, const void* src, size_t bytes, cudaStream_t stream, std::string* error) {
    if (bytes == 0) return true;
    if (!device_) {
      std::memcpy(dst, src, bytes);
      return true;
    }
    const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream);
    if (e != cudaSuccess) {
      *error = std::string("upload: ") + cudaGetErrorString(e);
      return false;
    }
    return true;
  }

  // Buffer to host, after the work on `stream`.
  bool Download(void* dst, const void* src, size_t bytes, cudaStream_t stream, std::string* error) {
    if (bytes == 0) return true;
    if (!device_) {
      std::memcpy(dst, src, bytes);
      return true;
    }
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    if (e != cudaSuccess) {
      *error = std::string("download: ") + cudaGetErrorString(e);
      return false;
    }
    return true;
  }

 private:
  const bool device_;
  std::vector<void*> owned_;
};

// Runs o.steps steps of Model() on o.world rank threads; see Options.
RunResult RunRanks(const Options& o) {
  const std::vector<ParamSpec>& specs = Model();
  const int world = o.world;
  const bool cuda = o.backend == NORMUON_BACKEND_CUDA;
  RunResult run;
  run.before_last = EmptySnapshot();
  run.end = EmptySnapshot();
  run.info.assign(world, std::vector<normuon_step_info_t>(o.steps));
  run.step_status.assign(world, std::vector<normuon_status_t>(o.steps, NORMUON_SUCCESS));
  run.step_errors.assign(world, "");
  run.errors.assign(world, "");

  std::vector<normuon_comm_t> comms(world, 0);
  if (o.comm == CommKind::kDeviceGroup) {
    const normuon_status_t st = normuon_comm_create_inprocess_group_ex(
        world, kGroupTimeoutS, NORMUON_COMM_MEMORY_DEVICE, comms.data());
    if (st != NORMUON_SUCCESS) {
      run.errors[0] = std::string("normuon_comm_create_inprocess_group_ex: ") +
                      normuon_status_string(st) + ": " + normuon_comm_last_error(0);
      return run;
    }
  } else if (o.comm == CommKind::kNccl) {
    if (world != 1) {
      run.errors[0] = "the NCCL case runs at world size 1 only (one GPU)";
      return run;
    }
    unsigned char id[NORMUON_NCCL_UNIQUE_ID_BYTES];
    normuon_status_t st = normuon_nccl_get_unique_id(id);
    if (st == NORMUON_ERROR_UNSUPPORTED) {
      run.skipped = std::string("no usable NCCL: ") + normuon_comm_last_error(0);
      return run;
    }
    if (st == NORMUON_SUCCESS)
      st = normuon_comm_create_nccl(id, 0, 1, 0, kGroupTimeoutS, &comms[0]);
    if (st != NORMUON_SUCCESS) {
      run.errors[0] = std::string("NCCL communicator: ") + normuon_status_string(st) + ": " +
                      normuon_comm_last_error(0);
      return run;
    }
  } else if (world != 1) {
    run.errors[0] = "comm 0 is a single rank";
    return run;
  }

  std::mutex mu;
  auto rank_main = [&](int rank) {
    std::string error;
    auto fail = [&](const std::string& what) {
      // Let the other ranks fail fast instead of waiting for this one until the timeout.
      if (comms[rank] != 0) normuon_comm_abort(comms[rank]);
      std::lock_guard<std::mutex> lock(mu);
      if (run.errors[rank].empty()) run.errors[rank] = what;
    };
    cudaStream_t stream = nullptr;
    if (cuda) {
      cudaError_t e = cudaSetDevice(0);
      if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
      if (e != cudaSuccess) return fail(std::string("stream: ") + cudaGetErrorString(e));
    }
    struct StreamGuard {
      cudaStream_t s;
      ~StreamGuard() {
        if (s != nullptr) cudaStreamDestroy(s);
      }
    } stream_guard{stream};
    Buffers buffers(cuda);

    std::vector<Range> ranges(specs.size());
    std::vector<void*> param_buf(specs.size(), nullptr), grad_buf(specs.size(), nullptr);
    std::vector<std::vector<float>> host(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      ranges[i] = SplitOf(o, i)[rank];
      const int64_t cols = specs[i].cols;
      const size_t n = static_cast<size_t>(ranges[i].count * cols);
      host[i].resize(n);
      if (n == 0) continue;
      param_buf[i] = buffers.Alloc(n * 4, &error);
      grad_buf[i] = buffers.Alloc(n * 4, &error);
      if (param_buf[i] == nullptr || grad_buf[i] == nullptr) return fail(error);
      for (int64_t r = 0; r < ranges[i].count; ++r) {
        for (int64_t c = 0; c < cols; ++c) host[i][r * cols + c] = Init(i, ranges[i].begin + r, c);
      }
      if (!buffers.Upload(param_buf[i], host[i].data(), n * 4, stream, &error)) return fail(error);
    }
    if (cuda) {
      const cudaError_t e = cudaStreamSynchronize(stream);
      if (e != cudaSuccess) return fail(std::string("initial upload: ") + cudaGetErrorString(e));
    }

    normuon_config_t c;
    normuon_config_init(&c);
    c.backend = o.backend;
    c.device = 0;
    c.ns_dtype = o.ns_dtype;
    c.ns_method = o.ns_method;
    c.owner_policy = o.policy;
    c.check_finite = o.check_finite;
    c.schedule = o.schedule;
    if (o.bucket_bytes > 0) c.bucket_bytes = o.bucket_bytes;
    c.adamw_weight_decay = 0.01f;
    normuon_runtime_t rt = 0;
    if (normuon_create(&c, comms[rank], &rt) != NORMUON_SUCCESS) {
      return fail(std::string("normuon_create: ") + normuon_last_error(0));
    }
    struct RuntimeGuard {
      normuon_runtime_t rt;
      ~RuntimeGuard() { normuon_destroy(rt); }  // before the buffers and the stream go
    } rt_guard{rt};

    std::vector<normuon_param_t> ids(specs.size(), -1);
    for (size_t i = 0; i < specs.size(); ++i) {
      normuon_param_desc_t d;
      normuon_param_desc_init(&d);
      d.name = specs[i].name;
      d.rows = specs[i].rows;
      d.cols = specs[i].cols;
      d.row_begin = ranges[i].begin;
      d.row_count = ranges[i].count;
      d.param = param_buf[i];
      d.grad = grad_buf[i];
      d.group = specs[i].matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
      const normuon_status_t st = specs[i].matrix ? normuon_register_matrix(rt, &d, &ids[i])
                                                  : normuon_register_adamw(rt, &d, &ids[i]);
      if (st != NORMUON_SUCCESS) {
        return fail(std::string("register ") + specs[i].name + ": " + normuon_last_error(rt));
      }
    }
    if (normuon_finalize(rt) != NORMUON_SUCCESS) {
      return fail(std::string("finalize: ") + normuon_last_error(rt));
    }
    if (o.fault_rank == rank) {
      // fault_call counts from the first collective after finalize. Arming refuses a call
      // number before the rank's next one, so the first number accepted is the next collective
      // (each try replaces the last; nothing runs on this rank in between).
      int64_t next = 0;
      while (next < 1000 &&
             normuon_comm_inject_fault(comms[rank], NORMUON_FAULT_ERROR, next) != NORMUON_SUCCESS) {
        ++next;
      }
      if (normuon_comm_inject_fault(comms[rank], NORMUON_FAULT_ERROR, next + o.fault_call) !=
          NORMUON_SUCCESS) {
        return fail(std::string("inject_fault: ") + normuon_comm_last_error(comms[rank]));
      }
    }

    // This rank's rows of every parameter and state, into `into` (under mu).
    auto collect = [&](Snapshot* into) -> bool {
      std::vector<std::vector<float>> p(specs.size()), first(specs.size()), second(specs.size());
      if (cuda && cudaStreamSynchronize(stream) != cudaSuccess) {
        fail("cudaStreamSynchronize before reading back");
        return false;
      }
      for (size_t i = 0; i < specs.size(); ++i) {
        const int64_t cols = specs[i].cols, count = ranges[i].count;
        const size_t n = static_cast<size_t>(count * cols);
        if (n == 0) continue;
        p[i].resize(n);
        if (!buffers.Download(p[i].data(), param_buf[i], n * 4, stream, &error)) {
          fail(error);
          return false;
        }
        const normuon_state_kind_t k1 =
            specs[i].matrix ? NORMUON_STATE_MOMENTUM : NORMUON_STATE_EXP_AVG;
        const normuon_state_kind_t k2 =
            specs[i].matrix ? NORMUON_STATE_SECOND_MOMENT : NORMUON_STATE_EXP_AVG_SQ;
        first[i].resize(n);
        second[i].resize(specs[i].matrix ? static_cast<size_t>(count) : n);
        for (auto [kind, dst] : {std::make_pair(k1, &first[i]), std::make_pair(k2, &second[i])}) {
          uint64_t bytes = 0;
          if (normuon_state_size(rt, ids[i], kind, &bytes) != NORMUON_SUCCESS ||
              bytes != dst->size() * 4) {
            fail(std::string("state size of ") + specs[i].name + ": " + std::to_string(bytes) +
                 " bytes, expected " + std::to_string(dst->size() * 4));
            return false;
          }
          if (normuon_get_state(rt, ids[i], kind, dst->data(), bytes) != NORMUON_SUCCESS) {
            fail(std::string("get_state: ") + normuon_last_error(rt));
            return false;
          }
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      for (size_t i = 0; i < specs.size(); ++i) {
        const int64_t cols = specs[i].cols, begin = ranges[i].begin;
        std::copy(p[i].begin(), p[i].end(), into->param[i].begin() + begin * cols);
        std::copy(first[i].begin(), first[i].end(), into->first[i].begin() + begin * cols);
        std::copy(second[i].begin(), second[i].end(),
                  into->second[i].begin() + (specs[i].matrix ? begin : begin * cols));
      }
      return true;
    };

    for (int s = 0; s < o.steps; ++s) {
      for (size_t i = 0; i < specs.size(); ++i) {
        const int64_t cols = specs[i].cols;
        if (ranges[i].count == 0) continue;
        for (int64_t r = 0; r < ranges[i].count; ++r) {
          for (int64_t col = 0; col < cols; ++col) {
            host[i][r * cols + col] = Grad(i, s, ranges[i].begin + r, col);
          }
        }
        if (rank == o.nan_rank && s == o.nan_step && static_cast<int>(i) == o.nan_param) {
          host[i][0] = std::numeric_limits<float>::quiet_NaN();
        }
        if (!buffers.Upload(grad_buf[i], host[i].data(), host[i].size() * 4, stream, &error)) {
          return fail(error);
        }
      }
      if (o.grad_ready) {
        for (size_t i = specs.size(); i-- > 0;) {
          if (!specs[i].matrix) continue;
          if (normuon_grad_ready(rt, &ids[i], 1, cuda ? stream : nullptr) != NORMUON_SUCCESS) {
            return fail(std::string("grad_ready: ") + normuon_last_error(rt));
          }
        }
      }
      const normuon_status_t st = normuon_step(rt, kLr, kWd, cuda ? stream : nullptr);
      run.step_status[rank][s] = st;
      if (st != NORMUON_SUCCESS) run.step_errors[rank] = normuon_last_error(rt);
      // The CPU backend reports a skipped step from step itself, CUDA from step_result; a failed
      // collective fails the step where a fault was injected.
      const bool expected =
          st == NORMUON_SUCCESS || (st == NORMUON_ERROR_NONFINITE && !cuda) ||
          (o.fault_rank >= 0 && (st == NORMUON_ERROR_COMM || st == NORMUON_ERROR_TIMEOUT));
      if (!expected) {
        return fail(std::string("step ") + std::to_string(s) + ": " + normuon_status_string(st) +
                    ": " + normuon_last_error(rt));
      }
      normuon_step_info_t info;
      normuon_step_info_init(&info);
      if (normuon_step_result(rt, &info) != NORMUON_SUCCESS) {
        return fail(std::string("step_result: ") + normuon_last_error(rt));
      }
      run.info[rank][s] = info;
      if (s == o.steps - 2 && !collect(&run.before_last)) return;
    }
    if (!collect(&run.end)) return;
  };

  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(rank_main, r);
  for (std::thread& t : threads) t.join();
  for (normuon_comm_t comm : comms) {
    if (comm != 0) normuon_comm_destroy(comm);
  }
  return run;
}

// ---- Comparisons ----

double Norm(const float* x, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return std::sqrt(s);
}

double DiffNorm(const float* a, const float* b, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    s += d * d;
  }
  return std::sqrt(s);
}

std::vector<float> InitialValues(size_t param) {
  const ParamSpec& p = Model()[param];
  std::vector<float> w(static_cast<size_t>(p.rows * p.cols));
  for (int64_t r = 0; r < p.rows; ++r) {
    for (int64_t c = 0; c < p.cols; ++c) w[r * p.cols + c] = Init(param, r, c);
  }
  return w;
}

// docs/ARCHITECTURE.md section 6 on the updates (W after minus W initial), over [begin, begin + n):
// ||ours - ref|| <= tol * ||ref|| + floor, floor = 2.4e-7 * ||W_after|| per step (the fp32
// rounding of W itself). Returns ||ours - ref|| / ||ref|| for reporting.
::testing::AssertionResult UpdateNear(const float* init, const float* got, const float* want,
                                      size_t n, double tol, int steps, double* rel_out) {
  std::vector<float> gu(n), wu(n);
  for (size_t i = 0; i < n; ++i) {
    gu[i] = got[i] - init[i];
    wu[i] = want[i] - init[i];
  }
  const double diff = DiffNorm(gu.data(), wu.data(), n);
  const double ref = Norm(wu.data(), n);
  const double floor = 2.4e-7 * Norm(want, n) * steps;
  const double rel = ref > 0 ? diff / ref : diff;
  if (rel_out != nullptr) *rel_out = rel;
  if (diff <= tol * ref + floor) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "update error " << diff << " = " << rel << " relative, allowed " << tol
         << " relative + floor " << floor;
}

// ||got - want|| <= tol * ||want|| (+ a tiny absolute term for all-zero states).
::testing::AssertionResult StateNear(const std::vector<float>& got, const std::vector<float>& want,
                                     double tol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "sizes " << got.size() << " vs " << want.size();
  }
  const double diff = DiffNorm(got.data(), want.data(), got.size());
  const double ref = Norm(want.data(), want.size());
  if (diff <= tol * ref + 1e-30) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "state error " << diff << " = " << diff / ref << " relative, allowed " << tol;
}

struct Tolerances {
  double update;    // matrices' update (global for the CPU comparison, per row across worlds)
  double momentum;  // momentum and the AdamW moments (they never touch the Newton-Schulz dtype)
  double v;         // the per-row second moment
};
// docs/ARCHITECTURE.md section 6. fp32 Newton-Schulz on the GPU: 1e-4 of the CPU's (cuBLAS sums in another
// order than OpenBLAS; cuda_backend_test uses the same bound).
constexpr Tolerances kFp32Tol = {1e-4, 1e-6, 1e-4};
constexpr Tolerances kBf16Tol = {7e-2, 1e-6, 1.5e-1};
// AdamW's update is fp32 in both modes.
constexpr double kAdamWUpdateTol = 1e-4;

const Tolerances& TolFor(normuon_ns_dtype_t d) {
  return d == NORMUON_NS_BF16 ? kBf16Tol : kFp32Tol;
}

void ExpectRunOk(const RunResult& run, const std::string& what, int steps) {
  for (size_t r = 0; r < run.errors.size(); ++r) {
    ASSERT_EQ(run.errors[r], "") << what << ": rank " << r;
  }
  for (size_t r = 0; r < run.info.size(); ++r) {
    const normuon_step_info_t& last = run.info[r][steps - 1];
    EXPECT_EQ(last.steps_skipped, 0) << what << ": rank " << r;
    EXPECT_EQ(last.steps_taken, steps) << what << ": rank " << r;
    EXPECT_EQ(last.last_skipped, 0) << what << ": rank " << r;
    EXPECT_EQ(last.nonfinite_param, -1) << what << ": rank " << r;
  }
}

// `got` against `want` (any two runs of the same precision), globally per parameter.
void ExpectNear(const RunResult& got, const RunResult& want, const Tolerances& tol, int steps,
                const std::string& what) {
  const std::vector<ParamSpec>& specs = Model();
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::vector<float> init = InitialValues(i);
    const std::string who = what + ", " + specs[i].name;
    EXPECT_TRUE(UpdateNear(init.data(), got.end.param[i].data(), want.end.param[i].data(),
                           init.size(), specs[i].matrix ? tol.update : kAdamWUpdateTol, steps,
                           nullptr))
        << who << ": parameter";
    EXPECT_TRUE(StateNear(got.end.first[i], want.end.first[i], tol.momentum))
        << who << (specs[i].matrix ? ": momentum" : ": exp_avg");
    EXPECT_TRUE(
        StateNear(got.end.second[i], want.end.second[i], specs[i].matrix ? tol.v : tol.momentum))
        << who << (specs[i].matrix ? ": v" : ": exp_avg_sq");
  }
}

// `got` against `want` row by row (docs/ARCHITECTURE.md section 6, GPU sharded vs GPU single rank): every
// row's update within the tolerance (one failure per parameter, naming the failing rows and the
// worst). Returns the max |difference| of any parameter value and the worst row's relative
// update error.
struct RowReport {
  double max_abs = 0.0;
  double worst_row_rel = 0.0;
};
RowReport ExpectNearPerRow(const RunResult& got, const RunResult& want, const Tolerances& tol,
                           int steps, const std::string& what) {
  const std::vector<ParamSpec>& specs = Model();
  RowReport report;
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::vector<float> init = InitialValues(i);
    const int64_t cols = specs[i].cols;
    double worst = 0.0;
    int64_t worst_row = -1;
    std::vector<int64_t> failing;
    std::string first_failure;
    for (int64_t r = 0; r < specs[i].rows; ++r) {
      const size_t off = static_cast<size_t>(r * cols);
      double rel = 0.0;
      const ::testing::AssertionResult ok = UpdateNear(
          init.data() + off, got.end.param[i].data() + off, want.end.param[i].data() + off,
          static_cast<size_t>(cols), specs[i].matrix ? tol.update : kAdamWUpdateTol, steps, &rel);
      if (!ok) {
        if (failing.empty()) first_failure = ok.message();
        failing.push_back(r);
      }
      if (rel > worst) {
        worst = rel;
        worst_row = r;
      }
    }
    std::string rows;
    for (size_t k = 0; k < failing.size() && k < 16; ++k) {
      rows += (k == 0 ? "" : ", ") + std::to_string(failing[k]);
    }
    if (!failing.empty()) {
      ADD_FAILURE() << what << ", " << specs[i].name << ": " << failing.size() << " of "
                    << specs[i].rows << " rows off (rows " << rows
                    << (failing.size() > 16 ? ", ..." : "") << "); row " << failing[0] << ": "
                    << first_failure << "; worst row " << worst_row << ": " << worst << " relative";
    }
    report.worst_row_rel = std::max(report.worst_row_rel, worst);
    for (size_t k = 0; k < init.size(); ++k) {
      report.max_abs =
          std::max(report.max_abs,
                   static_cast<double>(std::fabs(got.end.param[i][k] - want.end.param[i][k])));
    }
    EXPECT_TRUE(StateNear(got.end.first[i], want.end.first[i], tol.momentum))
        << what << ", " << specs[i].name << (specs[i].matrix ? ": momentum" : ": exp_avg");
    EXPECT_TRUE(
        StateNear(got.end.second[i], want.end.second[i], specs[i].matrix ? tol.v : tol.momentum))
        << what << ", " << specs[i].name << (specs[i].matrix ? ": v" : ": exp_avg_sq");
  }
  return report;
}

bool BitwiseEqual(const std::vector<std::vector<float>>& a,
                  const std::vector<std::vector<float>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].size() != b[i].size()) return false;
    if (std::memcmp(a[i].data(), b[i].data(), a[i].size() * 4) != 0) return false;
  }
  return true;
}

class ShardedCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device: the sharded CUDA step cannot run";
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  }

  // The references of one precision, computed once per test.
  struct References {
    RunResult cpu;   // CPU backend, one rank
    RunResult cuda;  // CUDA backend, one rank, comm 0
  };
  static References MakeReferences(normuon_ns_dtype_t ns_dtype, int steps,
                                   normuon_ns_method_t method = NORMUON_NS_METHOD_STANDARD) {
    References ref;
    Options cpu;
    cpu.backend = NORMUON_BACKEND_CPU;
    cpu.ns_dtype = ns_dtype;
    cpu.ns_method = method;
    cpu.steps = steps;
    ref.cpu = RunRanks(cpu);
    Options cuda;
    cuda.ns_dtype = ns_dtype;
    cuda.ns_method = method;
    cuda.steps = steps;
    ref.cuda = RunRanks(cuda);
    return ref;
  }

  // Every world size and split against the references.
  // Runs `o` and compares it with the references: the CPU run within `tol`, the CUDA world-1
  // run row by row within `world1_tol`; prints the largest difference from world 1. False after
  // a fatal failure (the caller returns).
  static bool RunAndCompare(const Options& o, const References& ref, const Tolerances& tol,
                            const Tolerances& world1_tol, RowReport* report = nullptr) {
    const std::string what = Describe(o);
    const RunResult run = RunRanks(o);
    ExpectRunOk(run, what, o.steps);
    if (::testing::Test::HasFatalFailure()) return false;
    ExpectNear(run, ref.cpu, tol, o.steps, what + " vs cpu");
    const RowReport rows =
        ExpectNearPerRow(run, ref.cuda, world1_tol, o.steps, what + " vs cuda world 1");
    std::cout << what << ": max |W - W(cuda world 1)| = " << rows.max_abs
              << ", worst row's relative update error " << rows.worst_row_rel << "\n";
    if (report != nullptr) *report = rows;
    return true;
  }

  static void SweepWorlds(normuon_ns_dtype_t ns_dtype, const std::vector<int>& worlds,
                          normuon_ns_method_t method = NORMUON_NS_METHOD_STANDARD) {
    constexpr int kSteps = 3;
    const Tolerances& tol = TolFor(ns_dtype);
    const References ref = MakeReferences(ns_dtype, kSteps, method);
    ExpectRunOk(ref.cpu, "cpu reference", kSteps);
    ExpectRunOk(ref.cuda, "cuda reference", kSteps);
    ExpectNear(ref.cuda, ref.cpu, tol, kSteps, "cuda world 1 (comm 0) vs cpu");
    for (int world : worlds) {
      for (bool ragged : {false, true}) {
        Options o;
        o.comm = CommKind::kDeviceGroup;
        o.world = world;
        o.ragged = ragged;
        o.ns_dtype = ns_dtype;
        o.ns_method = method;
        o.steps = kSteps;
        RowReport rows;
        if (!RunAndCompare(o, ref, tol, tol, &rows)) return;
        ::testing::Test::RecordProperty(
            "max_abs_diff_vs_world1." + std::string(ns_dtype == NORMUON_NS_BF16 ? "bf16" : "fp32") +
                ".world" + std::to_string(world) + (ragged ? ".ragged" : ".fsdp2"),
            std::to_string(rows.max_abs));
      }
    }
  }
};

// Needs no device: the ragged split of the sweeps holds what it claims.
TEST(ShardedCudaLayoutTest, RaggedLayoutsCoverEveryRowAndHaveARankWithoutRows) {
  for (int world : {2, 3, 4, 8}) {
    Options o;
    o.world = world;
    o.ragged = true;
    for (size_t i = 0; i < Model().size(); ++i) {
      const std::vector<Range> split = SplitOf(o, i);
      int64_t covered = 0, empty = 0;
      for (const Range& r : split) {
        covered += r.count;
        empty += r.count == 0 ? 1 : 0;
      }
      EXPECT_EQ(covered, Model()[i].rows) << "world " << world << " param " << i;
      EXPECT_GE(empty, 1) << "world " << world << " param " << i;
    }
  }
}

TEST_F(ShardedCudaTest, Fp32EveryWorldSizeAndSplitMatchesTheCpuAndTheSingleRankRun) {
  SweepWorlds(NORMUON_NS_FP32, {1, 2, 3, 4, 8});
}

TEST_F(ShardedCudaTest, Bf16EveryWorldSizeAndSplitMatchesTheCpuBf16AndTheSingleRankRun) {
  SweepWorlds(NORMUON_NS_BF16, {1, 2, 3, 4});
}

// Gram Newton-Schulz on CUDA (batched dense cuBLAS products in the batch's dtype) against the CPU
// backend's Gram run of the same precision, at every world size (docs/ARCHITECTURE.md
// section 1.2a). Not yet run on a GPU (bench/RESULTS.md).
TEST_F(ShardedCudaTest, GramFp32AndBf16MatchTheCpuGramAndTheSingleRankRun) {
  SweepWorlds(NORMUON_NS_FP32, {1, 2, 3}, NORMUON_NS_METHOD_GRAM);
  SweepWorlds(NORMUON_NS_BF16, {1, 2, 3}, NORMUON_NS_METHOD_GRAM);
}

TEST_F(ShardedCudaTest, BothOwnerPoliciesMatchTheSingleRankRun) {
  constexpr int kSteps = 3;
  const References ref = MakeReferences(NORMUON_NS_FP32, kSteps);
  ExpectRunOk(ref.cpu, "cpu reference", kSteps);
  ExpectRunOk(ref.cuda, "cuda reference", kSteps);
  for (int world : {3, 4}) {
    for (auto policy : {NORMUON_OWNER_ROUND_ROBIN, NORMUON_OWNER_COST_BALANCED}) {
      Options o;
      o.comm = CommKind::kDeviceGroup;
      o.world = world;
      o.ragged = true;
      o.policy = policy;
      o.steps = kSteps;
      if (!RunAndCompare(o, ref, kFp32Tol, kFp32Tol)) return;
    }
  }
}

// The pipelined schedules at world > 1 run the exchanges on a second stream, handed off by
// events; grad_ready starts the buckets' work before step. Same results as the single rank.
TEST_F(ShardedCudaTest, PipelinedSchedulesOnTwoStreamsMatchTheSingleRankRun) {
  constexpr int kSteps = 3;
  for (normuon_ns_dtype_t dtype : {NORMUON_NS_BF16, NORMUON_NS_FP32}) {
    const References ref = MakeReferences(dtype, kSteps);
    ExpectRunOk(ref.cuda, "cuda reference", kSteps);
    const Tolerances tol = dtype == NORMUON_NS_BF16 ? kBf16Tol : kFp32Tol;
    for (int world : {2, 3, 4}) {
      for (auto schedule : {NORMUON_SCHEDULE_PER_MATRIX, NORMUON_SCHEDULE_BUCKETED}) {
        for (bool grad_ready : {false, true}) {
          Options o;
          o.comm = CommKind::kDeviceGroup;
          o.world = world;
          o.ragged = world == 3;
          o.ns_dtype = dtype;
          o.schedule = schedule;
          o.bucket_bytes = 16 << 10;  // small buckets: several buckets, several in flight
          o.grad_ready = grad_ready;
          o.steps = kSteps;
          if (!RunAndCompare(o, ref, tol, kFp32Tol)) return;
        }
      }
    }
  }
}

TEST_F(ShardedCudaTest, ANonFiniteGradientOnOneRankSkipsTheStepOnEveryRank) {
  Options o;
  o.comm = CommKind::kDeviceGroup;
  o.world = 3;
  o.steps = 2;
  o.check_finite = 1;
  o.nan_rank = 1;
  o.nan_step = 1;
  o.nan_param = kSqA;
  // The NaN lands where rank 1 holds rows (FSDP2: rows 22..43 of 64).
  ASSERT_GT(SplitOf(o, kSqA)[1].count, 0);
  const RunResult run = RunRanks(o);
  for (int r = 0; r < o.world; ++r) ASSERT_EQ(run.errors[r], "") << "rank " << r;
  for (int r = 0; r < o.world; ++r) {
    const normuon_step_info_t& first = run.info[r][0];
    EXPECT_EQ(first.last_skipped, 0) << "rank " << r;
    EXPECT_EQ(first.steps_taken, 1) << "rank " << r;
    const normuon_step_info_t& second = run.info[r][1];
    EXPECT_EQ(second.last_skipped, 1) << "rank " << r;
    EXPECT_EQ(second.steps_skipped, 1) << "rank " << r;
    EXPECT_EQ(second.steps_taken, 1) << "rank " << r;
    EXPECT_EQ(second.nonfinite_param, kSqA) << "rank " << r << ": every rank names the parameter";
  }
  // Nothing was written by the skipped step, on any rank.
  EXPECT_TRUE(BitwiseEqual(run.end.param, run.before_last.param)) << "parameters changed";
  EXPECT_TRUE(BitwiseEqual(run.end.first, run.before_last.first)) << "momentum / exp_avg changed";
  EXPECT_TRUE(BitwiseEqual(run.end.second, run.before_last.second)) << "v / exp_avg_sq changed";
  // And the first step did update them (the comparison above is not vacuous).
  for (size_t i = 0; i < Model().size(); ++i) {
    const std::vector<float> init = InitialValues(i);
    EXPECT_NE(std::memcmp(init.data(), run.before_last.param[i].data(), init.size() * 4), 0)
        << Model()[i].name;
  }
}

TEST_F(ShardedCudaTest, AFailedCollectiveFailsTheStepOnEveryRankAndWritesNothing) {
  Options o;
  o.comm = CommKind::kDeviceGroup;
  o.world = 3;
  o.ragged = true;
  o.steps = 1;
  o.fault_rank = 2;
  o.fault_call = 0;  // the first step's first collective (a gather)
  const RunResult run = RunRanks(o);
  for (int r = 0; r < o.world; ++r) ASSERT_EQ(run.errors[r], "") << "rank " << r;
  for (int r = 0; r < o.world; ++r) {
    EXPECT_EQ(run.step_status[r][0], NORMUON_ERROR_COMM)
        << "rank " << r << ": " << normuon_status_string(run.step_status[r][0]);
    EXPECT_TRUE(Contains(run.step_errors[r], "injected fault"))
        << "rank " << r << ": " << run.step_errors[r];
    const normuon_step_info_t& info = run.info[r][0];
    EXPECT_EQ(info.last_skipped, 1) << "rank " << r;
    EXPECT_EQ(info.steps_skipped, 1) << "rank " << r;
    EXPECT_EQ(info.steps_taken, 0) << "rank " << r;
  }
  for (size_t i = 0; i < Model().size(); ++i) {
    const std::vector<float> init = InitialValues(i);
    EXPECT_EQ(std::memcmp(init.data(), run.end.param[i].data(), init.size() * 4), 0)
        << Model()[i].name << ": parameter written by a failed step";
    for (const std::vector<float>* state : {&run.end.first[i], &run.end.second[i]}) {
      EXPECT_EQ(*state, std::vector<float>(state->size(), 0.0f))
          << Model()[i].name << ": state written by a failed step";
    }
  }
}

// NCCL found as normuon finds it; the test points NORMUON_NCCL_LIBRARY at the toolkit's copy when
// the variable is unset or names no file.
void PreferAnExistingNcclLibrary() {
  struct stat st;
  const char* env = std::getenv("NORMUON_NCCL_LIBRARY");
  if (env != nullptr && stat(env, &st) == 0) return;
  const char* toolkit = "/usr/local/cuda/lib64/libnccl.so.2";
  if (stat(toolkit, &st) == 0) setenv("NORMUON_NCCL_LIBRARY", toolkit, 1);
}

TEST_F(ShardedCudaTest, WorldSizeOneOverRealNcclIsBitwiseTheRunWithoutACommunicator) {
  PreferAnExistingNcclLibrary();
  for (normuon_ns_dtype_t ns_dtype : {NORMUON_NS_FP32, NORMUON_NS_BF16}) {
    Options plain;
    plain.ns_dtype = ns_dtype;
    plain.steps = 2;
    Options nccl = plain;
    nccl.comm = CommKind::kNccl;
    const RunResult with_nccl = RunRanks(nccl);
    if (!with_nccl.skipped.empty()) GTEST_SKIP() << with_nccl.skipped;
    const RunResult without = RunRanks(plain);
    ExpectRunOk(with_nccl, Describe(nccl), 2);
    ExpectRunOk(without, Describe(plain), 2);
    if (HasFatalFailure()) return;
    EXPECT_TRUE(BitwiseEqual(with_nccl.end.param, without.end.param)) << Describe(nccl);
    EXPECT_TRUE(BitwiseEqual(with_nccl.end.first, without.end.first)) << Describe(nccl);
    EXPECT_TRUE(BitwiseEqual(with_nccl.end.second, without.end.second)) << Describe(nccl);
  }
}

#endif  // NORMUON_WITH_CUDA

}  // namespace
