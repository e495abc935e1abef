// The CPU step's bits do not depend on how many threads OpenBLAS runs (docs/ARCHITECTURE.md
// section 6, Determinism): the single-rank step and the sharded step through the in-process
// group (world 2, 3, 4), each with OpenBLAS set to 1, 2 and 4 threads, end bitwise equal after
// three steps, on shapes big enough for OpenBLAS to thread its GEMMs (128x128, 96x200, 300x64)
// and one cut into several Newton-Schulz tiles each way (400x390). Also: a step leaves the
// caller's OpenBLAS thread count as it found it; the CPU Newton-Schulz itself gives the same bits
// on any number of its own threads; and the worker pool it runs on.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/newton_schulz_cpu.h"
#include "kernels/worker_pool.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"
#include "tests/testing/row_layouts.h"

extern "C" void openblas_set_num_threads(int num_threads);
extern "C" int openblas_get_num_threads(void);
extern "C" char* openblas_get_corename(void);

namespace {

using normuon::testing::Fsdp2;
using normuon::testing::Random;
using normuon::testing::Range;
using normuon::testing::Split;

struct Spec {
  const char* name;
  int64_t rows, cols;
  bool matrix;
};

// Square, wide and tall matrices above OpenBLAS's threading threshold (m*n*k > 2^18), two of
// one shape (a batch of two), one bigger than a Newton-Schulz tile (kNsTile = 384) on both
// sides, a small one and an AdamW vector.
static_assert(normuon::kNsTile < 390, "keep \"big\" bigger than one tile each way");
const std::vector<Spec>& Model() {
  static const auto* specs = new std::vector<Spec>{
      {"sq.a", 128, 128, true}, {"wide", 96, 200, true},  {"tall", 300, 64, true},
      {"bias", 50, 1, false},   {"sq.b", 128, 128, true}, {"big", 400, 390, true},
      {"small", 24, 40, true},
  };
  return *specs;
}

// All ranks meet here; the last to arrive runs `last` (under the lock) before anyone leaves.
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  template <typename F>
  void Wait(F last) {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t gen = gen_;
    if (++arrived_ == n_) {
      last();
      arrived_ = 0;
      ++gen_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return gen_ != gen; });
  }
  void Wait() {
    Wait([] {});
  }

 private:
  const int n_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  int64_t gen_ = 0;
};

struct Outcome {
  std::vector<std::vector<float>> param, momentum;  // full values after the steps
  std::vector<std::string> errors;                  // per rank: "" or the failure
  int blas_threads_before = -1;                     // OpenBLAS's setting for the steps
  int blas_threads_after = -1;                      // and after the last step
};

struct Options {
  int world = 1;  // 1: no communicator (the single-rank path)
  int blas_threads = 1;
  Split split = Fsdp2;
  normuon_ns_dtype_t ns_dtype = NORMUON_NS_FP32;
  normuon_schedule_t schedule = NORMUON_SCHEDULE_SEQUENTIAL;
};

// Three steps of Model() on `world` ranks (threads). OpenBLAS is set to o.blas_threads before
// create and again once every rank has finalized (finalize of a sharded runtime may set it
// itself), so the steps run under that setting.
Outcome RunSteps(const Options& o) {
  const std::vector<Spec>& specs = Model();
  const int world = o.world;
  std::vector<normuon_comm_t> comms(world, 0);
  if (world > 1) {
    EXPECT_EQ(normuon_comm_create_inprocess_group(world, 30.0, comms.data()), NORMUON_SUCCESS);
  }
  std::vector<std::vector<float>> init;
  std::vector<std::vector<std::vector<float>>> grads(3);  // [step][param]
  std::vector<std::vector<Range>> ranges;
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t n = static_cast<size_t>(specs[i].rows * specs[i].cols);
    init.push_back(Random(n, 100u + static_cast<uint32_t>(i), 0.05f));
    for (int s = 0; s < 3; ++s) {
      grads[s].push_back(Random(n, 1000u * (s + 1) + static_cast<uint32_t>(i), 1.0f));
    }
    ranges.push_back(o.split(specs[i].rows, world));
  }
  Outcome run;
  run.param.resize(specs.size());
  run.momentum.resize(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    run.param[i].assign(init[i].size(), 0.0f);
    run.momentum[i].assign(init[i].size(), 0.0f);
  }
  run.errors.assign(world, "");
  std::mutex mu;
  Barrier barrier(world);
  openblas_set_num_threads(o.blas_threads);

  auto rank_main = [&](int rank) {
    auto fail = [&](const std::string& what) {
      std::lock_guard<std::mutex> lock(mu);
      if (run.errors[rank].empty()) run.errors[rank] = what;
    };
    normuon_config_t c;
    normuon_config_init(&c);
    c.ns_dtype = o.ns_dtype;
    c.schedule = o.schedule;
    c.weight_decay = 0.01f;
    c.bucket_bytes = 64 << 10;
    normuon_runtime_t rt = 0;
    bool ok = normuon_create(&c, comms[rank], &rt) == NORMUON_SUCCESS;
    if (!ok) fail(normuon_last_error(0));
    std::vector<std::vector<float>> p(specs.size()), g(specs.size());
    std::vector<normuon_param_t> ids(specs.size());
    for (size_t i = 0; ok && i < specs.size(); ++i) {
      const Range r = ranges[i][rank];
      const int64_t cols = specs[i].cols;
      p[i].assign(init[i].begin() + r.begin * cols, init[i].begin() + (r.begin + r.count) * cols);
      g[i].assign(static_cast<size_t>(r.count * cols), 0.0f);
      normuon_param_desc_t d;
      normuon_param_desc_init(&d);
      d.name = specs[i].name;
      d.rows = specs[i].rows;
      d.cols = cols;
      d.row_begin = r.begin;
      d.row_count = r.count;
      d.param = r.count > 0 ? p[i].data() : nullptr;
      d.grad = r.count > 0 ? g[i].data() : nullptr;
      d.group = specs[i].matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
      ok = (specs[i].matrix ? normuon_register_matrix(rt, &d, &ids[i])
                            : normuon_register_adamw(rt, &d, &ids[i])) == NORMUON_SUCCESS;
      if (!ok) fail(normuon_last_error(rt));
    }
    if (ok && normuon_finalize(rt) != NORMUON_SUCCESS) {
      ok = false;
      fail(normuon_last_error(rt));
    }
    // Every rank has finalized (or failed) before the setting is made for the steps. A failed
    // rank still meets the others at every barrier, so none waits forever.
    barrier.Wait([&] {
      openblas_set_num_threads(o.blas_threads);
      run.blas_threads_before = openblas_get_num_threads();  // 1 with a single-threaded OpenBLAS
    });
    for (int s = 0; ok && s < 3; ++s) {
      for (size_t i = 0; i < specs.size(); ++i) {
        const Range r = ranges[i][rank];
        const int64_t cols = specs[i].cols;
        std::copy(grads[s][i].begin() + r.begin * cols,
                  grads[s][i].begin() + (r.begin + r.count) * cols, g[i].begin());
      }
      if (normuon_step(rt, 0.02f, 0.01f, nullptr) != NORMUON_SUCCESS) {
        ok = false;
        fail(normuon_last_error(rt));
      }
    }
    barrier.Wait([&] { run.blas_threads_after = openblas_get_num_threads(); });
    for (size_t i = 0; ok && i < specs.size(); ++i) {
      const Range r = ranges[i][rank];
      const int64_t cols = specs[i].cols;
      std::lock_guard<std::mutex> lock(mu);
      std::copy(p[i].begin(), p[i].end(), run.param[i].begin() + r.begin * cols);
      if (specs[i].matrix && r.count > 0) {
        const normuon_status_t st =
            normuon_get_state(rt, ids[i], NORMUON_STATE_MOMENTUM,
                              run.momentum[i].data() + r.begin * cols, r.count * cols * 4);
        if (st != NORMUON_SUCCESS) run.errors[rank] = normuon_last_error(rt);
      }
    }
    if (rt != 0) normuon_destroy(rt);
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(rank_main, r);
  for (std::thread& t : threads) t.join();
  for (normuon_comm_t c : comms) {
    if (c != 0) normuon_comm_destroy(c);
  }
  return run;
}

// Bitwise equality; on a mismatch, how many elements differ and by how much at most.
::testing::AssertionResult BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "sizes " << a.size() << " vs " << b.size();
  }
  size_t differ = 0;
  double max_diff = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], 4) != 0) {
      ++differ;
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(a[i] - b[i])));
    }
  }
  if (differ == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << differ << " of " << a.size() << " elements differ, by up to " << max_diff;
}

void ExpectSame(const Outcome& ref, const Outcome& run, const std::string& what) {
  for (size_t r = 0; r < run.errors.size(); ++r) {
    ASSERT_EQ(run.errors[r], "") << what << ", rank " << r;
  }
  for (size_t i = 0; i < Model().size(); ++i) {
    EXPECT_TRUE(BitwiseEqual(run.param[i], ref.param[i])) << what << ", param " << Model()[i].name;
    EXPECT_TRUE(BitwiseEqual(run.momentum[i], ref.momentum[i]))
        << what << ", momentum " << Model()[i].name;
  }
}

// OPENBLAS_CORETYPE=Haswell (the blas_threads_haswell_test target) forces OpenBLAS's AVX2
// kernels, whose results depend on the thread count: only on CPUs that can run them.
bool ForcedKernelsRunHere() {
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  if (forced == nullptr || std::string(forced) != "Haswell") return true;
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

class BlasThreadsTest : public ::testing::Test {
 protected:
  // The process-wide OpenBLAS setting is the test's to change; put back what it found.
  void SetUp() override {
    if (!ForcedKernelsRunHere()) GTEST_SKIP() << "OPENBLAS_CORETYPE=Haswell needs AVX2 and FMA";
    saved_ = openblas_get_num_threads();
    std::printf("OpenBLAS kernels: %s\n", openblas_get_corename());
  }
  void TearDown() override { openblas_set_num_threads(saved_); }
  int saved_ = 1;
};

TEST_F(BlasThreadsTest, SingleRankAndShardedStepsAreBitwiseEqualAtEveryBlasThreadCount) {
  Options base;
  const Outcome ref = RunSteps(base);
  for (const std::string& e : ref.errors) ASSERT_EQ(e, "");
  // The updates are real: three steps moved every parameter.
  for (size_t i = 0; i < Model().size(); ++i) {
    EXPECT_FALSE(BitwiseEqual(ref.param[i],
                              Random(ref.param[i].size(), 100u + static_cast<uint32_t>(i), 0.05f)))
        << Model()[i].name;
  }
  for (int threads : {1, 2, 4}) {
    for (int world : {1, 2, 3, 4}) {
      Options o;
      o.world = world;
      o.blas_threads = threads;
      const std::string what =
          "world " + std::to_string(world) + ", " + std::to_string(threads) + " BLAS threads";
      const Outcome run = RunSteps(o);
      ExpectSame(ref, run, what);
      EXPECT_EQ(run.blas_threads_after, run.blas_threads_before)
          << what << ": the step changed OpenBLAS's setting";
    }
  }
}

TEST_F(BlasThreadsTest, RaggedSplitsPipelinedScheduleAndBf16AreBitwiseEqualToo) {
  for (normuon_ns_dtype_t ns : {NORMUON_NS_FP32, NORMUON_NS_BF16}) {
    Options base;
    base.ns_dtype = ns;
    const Outcome ref = RunSteps(base);
    for (const std::string& e : ref.errors) ASSERT_EQ(e, "");
    for (int threads : {2, 4}) {
      for (int world : {1, 3}) {
        Options o = base;
        o.world = world;
        o.blas_threads = threads;
        o.split = normuon::testing::Ragged(7);
        o.schedule = NORMUON_SCHEDULE_BUCKETED;
        ExpectSame(ref, RunSteps(o),
                   "ns_dtype " + std::to_string(ns) + ", world " + std::to_string(world) +
                       ", bucketed, ragged, " + std::to_string(threads) + " BLAS threads");
      }
    }
  }
}

// The orthogonalization alone, on shapes cut into tiles (a tall one with edge tiles of 7 and 1,
// a wide one one tile high), with its own threads at 1, 3 and 8 and OpenBLAS at 1 and 4: the
// same bits as one thread with OpenBLAS at one thread, in fp32 and in bf16 mode.
TEST_F(BlasThreadsTest, NewtonSchulzGivesTheSameBitsOnAnyNumberOfThreads) {
  using normuon::kNsTile;
  const std::vector<std::array<float, 3>> quintic(5, {3.4445f, -4.7750f, 2.0315f});
  const int64_t shapes[][2] = {{2 * kNsTile + 1, kNsTile + 7}, {kNsTile / 2, 2 * kNsTile + 3}};
  for (const auto& shape : shapes) {
    const int64_t rows = shape[0], cols = shape[1];
    const std::vector<float> u = Random(static_cast<size_t>(rows * cols), 5, 1.0f);
    for (bool bf16 : {false, true}) {
      std::vector<float> ref(u.size());
      {
        openblas_set_num_threads(1);
        normuon::NsCpuWorkspace ws;
        ws.threads = 1;
        normuon::NewtonSchulzCpu(u.data(), ref.data(), rows, cols, quintic, 1e-7f, 1.0f, bf16,
                                 &ws);
      }
      // Orthogonalized: the largest singular value is near 1 (the quintic overshoots to ~1.2),
      // so no element is above 1.5 and the result is far from zero.
      double sq = 0.0, top = 0.0;
      for (float x : ref) {
        sq += static_cast<double>(x) * x;
        top = std::max(top, static_cast<double>(std::fabs(x)));
      }
      EXPECT_GT(sq, 0.25 * static_cast<double>(std::min(rows, cols)));
      EXPECT_LT(top, 1.5);
      for (int blas : {1, 4}) {
        for (int threads : {1, 3, 8}) {
          openblas_set_num_threads(blas);
          const int setting = openblas_get_num_threads();
          normuon::NsCpuWorkspace ws;
          ws.threads = threads;
          std::vector<float> o(u.size());
          normuon::NewtonSchulzCpu(u.data(), o.data(), rows, cols, quintic, 1e-7f, 1.0f, bf16, &ws);
          EXPECT_TRUE(BitwiseEqual(o, ref))
              << rows << "x" << cols << (bf16 ? " bf16" : " fp32") << ", " << threads
              << " threads, OpenBLAS at " << blas;
          EXPECT_EQ(openblas_get_num_threads(), setting) << "OpenBLAS's setting was not put back";
        }
      }
    }
  }
}

// Several workspaces at once on threads of their own (in-process ranks): same bits.
TEST_F(BlasThreadsTest, ConcurrentNewtonSchulzCallsGiveTheSameBits) {
  const std::vector<std::array<float, 3>> quintic(5, {3.4445f, -4.7750f, 2.0315f});
  const int64_t rows = normuon::kNsTile + 33, cols = 2 * normuon::kNsTile;
  const std::vector<float> u = Random(static_cast<size_t>(rows * cols), 9, 1.0f);
  openblas_set_num_threads(1);
  std::vector<float> ref(u.size());
  normuon::NsCpuWorkspace ref_ws;
  ref_ws.threads = 1;
  normuon::NewtonSchulzCpu(u.data(), ref.data(), rows, cols, quintic, 1e-7f, 1.0f, false, &ref_ws);
  openblas_set_num_threads(2);
  const int setting = openblas_get_num_threads();
  std::vector<std::vector<float>> out(4, std::vector<float>(u.size()));
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      normuon::NsCpuWorkspace ws;
      ws.threads = 1 + k % 3;
      for (int rep = 0; rep < 2; ++rep) {
        normuon::NewtonSchulzCpu(u.data(), out[k].data(), rows, cols, quintic, 1e-7f, 1.0f,
                                 false, &ws);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int k = 0; k < 4; ++k) EXPECT_TRUE(BitwiseEqual(out[k], ref)) << "thread " << k;
  EXPECT_EQ(openblas_get_num_threads(), setting);
}

TEST(WorkerPoolTest, RunsEveryTaskOnceInEveryJobOnAnyNumberOfThreads) {
  for (int threads : {0, 1, 2, 5}) {
    normuon::WorkerPool pool(threads);
    EXPECT_EQ(pool.threads(), std::max(threads, 1));
    for (int64_t count : {0, 1, 2, 7, 100, 1000}) {
      for (int job = 0; job < 20; ++job) {
        std::vector<int> hits(static_cast<size_t>(count), 0);
        std::atomic<int64_t> calls{0};
        auto task = [&](int64_t i) {
          ++hits[static_cast<size_t>(i)];  // each i is claimed by one thread only
          calls.fetch_add(1);
        };
        pool.Run(count, task);
        EXPECT_EQ(calls.load(), count);
        for (int64_t i = 0; i < count; ++i) {
          ASSERT_EQ(hits[static_cast<size_t>(i)], 1) << "task " << i << " of " << count;
        }
      }
    }
  }
}

TEST(WorkerPoolTest, TheWorkersTakePartAndRunReturnsOnlyWhenAllTasksHaveFinished) {
  normuon::WorkerPool pool(3);
  std::mutex mu;
  std::vector<std::thread::id> ran_on;
  std::atomic<int> finished{0};
  auto task = [&](int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    {
      std::lock_guard<std::mutex> lock(mu);
      ran_on.push_back(std::this_thread::get_id());
    }
    finished.fetch_add(1);
  };
  pool.Run(60, task);
  EXPECT_EQ(finished.load(), 60);
  std::sort(ran_on.begin(), ran_on.end());
  const auto distinct = std::unique(ran_on.begin(), ran_on.end()) - ran_on.begin();
  EXPECT_GE(distinct, 2) << "60 tasks of 2 ms ran on one thread only";
}

}  // namespace
