// The C API from several threads (issue 6): different handles on different threads run
// independently, give bitwise-identical results and keep their own error messages; calls on one
// handle from several threads are serialized (the outcome equals a sequential run). Runs under
// ThreadSanitizer in tools/test.sh.
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "normuon/normuon.h"
#include "tests/reliability/test_util.h"

namespace normuon_reliability {
namespace {

constexpr int kThreads = 4;

// What one runtime produces in `steps` steps of the small model.
struct Outcome {
  std::vector<float> w, b, momentum;
  std::string own_error;
  bool ok = false;
};

void RunOne(int thread, int steps, Outcome* out) {
  SmallModel m(16, 12);
  normuon_config_t cfg;
  normuon_config_init(&cfg);
  if (normuon_create(&cfg, 0, &m.rt) != NORMUON_SUCCESS) return;
  normuon_param_desc_t dw = m.MatrixDesc(), db = m.AdamwDesc();
  if (normuon_register_matrix(m.rt, &dw, &m.w_id) != NORMUON_SUCCESS) return;
  if (normuon_register_adamw(m.rt, &db, &m.b_id) != NORMUON_SUCCESS) return;
  // A failure of this thread's own, with a value only this thread uses.
  normuon_param_desc_t bad = dw;
  const std::string name = "bad_" + std::to_string(thread);
  bad.name = name.c_str();
  bad.rows = -1000 - thread;
  normuon_param_t id = -1;
  if (normuon_register_matrix(m.rt, &bad, &id) != NORMUON_ERROR_INVALID_ARGUMENT) return;
  if (normuon_finalize(m.rt) != NORMUON_SUCCESS) return;
  for (int s = 0; s < steps; ++s) {
    if (normuon_step(m.rt, 0.01f, 0.001f, nullptr) != NORMUON_SUCCESS) return;
  }
  out->own_error = LastError(m.rt);
  out->momentum = m.Momentum();
  out->w = m.w;
  out->b = m.b;
  out->ok = true;
}

TEST(ThreadsTest, RuntimesOnDifferentThreadsAreIndependentAndBitwiseIdentical) {
  std::vector<Outcome> outcomes(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(RunOne, t, 3, &outcomes[t]);
  for (std::thread& t : threads) t.join();
  Outcome alone;
  RunOne(99, 3, &alone);
  ASSERT_TRUE(alone.ok);
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_TRUE(outcomes[t].ok) << "thread " << t;
    // Each handle kept its own message.
    EXPECT_TRUE(Contains(outcomes[t].own_error, "bad_" + std::to_string(t)));
    EXPECT_TRUE(Contains(outcomes[t].own_error, std::to_string(-1000 - t)));
    EXPECT_EQ(0, std::memcmp(outcomes[t].w.data(), alone.w.data(), alone.w.size() * 4));
    EXPECT_EQ(0, std::memcmp(outcomes[t].b.data(), alone.b.data(), alone.b.size() * 4));
    EXPECT_EQ(0, std::memcmp(outcomes[t].momentum.data(), alone.momentum.data(),
                             alone.momentum.size() * 4));
  }
}

TEST(ThreadsTest, FailedCreatesKeepTheirMessageOnTheirOwnThread) {
  std::vector<std::string> messages(kThreads);
  std::vector<std::thread> threads;
  std::atomic<int> arrived{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &messages, &arrived] {
      normuon_config_t cfg;
      normuon_config_init(&cfg);
      cfg.ns_steps = 1000 + t;
      normuon_runtime_t rt = 0;
      if (normuon_create(&cfg, 0, &rt) != NORMUON_ERROR_INVALID_ARGUMENT) return;
      // Wait until every thread has failed once, so the messages could overwrite each other if
      // they were shared.
      arrived.fetch_add(1);
      while (arrived.load() < kThreads) std::this_thread::yield();
      messages[t] = LastError(0);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_TRUE(Contains(messages[t], "config.ns_steps = " + std::to_string(1000 + t)));
  }
}

TEST(ThreadsTest, CallsOnOneHandleFromManyThreadsAreSerialized) {
  constexpr int kStepsPerThread = 5;
  SmallModel shared(16, 12);
  shared.Build(/*finalize=*/true);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&shared, &failures, t] {
      std::vector<float> momentum(16 * 12);
      for (int s = 0; s < kStepsPerThread; ++s) {
        if (normuon_step(shared.rt, 0.01f, 0.001f, nullptr) != NORMUON_SUCCESS) ++failures;
        // Reads and writes that do not change the outcome, interleaved with the steps.
        uint64_t bytes = 0;
        if (normuon_memory_required(shared.rt, &bytes) != NORMUON_SUCCESS) ++failures;
        if (normuon_state_size(shared.rt, shared.w_id, NORMUON_STATE_MOMENTUM, &bytes) !=
            NORMUON_SUCCESS) {
          ++failures;
        }
        if (normuon_get_state(shared.rt, shared.w_id, NORMUON_STATE_MOMENTUM, momentum.data(),
                              momentum.size() * 4) != NORMUON_SUCCESS) {
          ++failures;
        }
        if (normuon_set_group_lr(shared.rt, NORMUON_GROUP_ADAMW_DEFAULT, 3e-4f, 0.0f) !=
            NORMUON_SUCCESS) {
          ++failures;
        }
        normuon_step_info_t info;
        normuon_step_info_init(&info);
        if (normuon_step_result(shared.rt, &info) != NORMUON_SUCCESS) ++failures;
        if (t == 0 && normuon_bind(shared.rt, shared.w_id, shared.w.data(), shared.gw.data()) !=
                          NORMUON_SUCCESS) {
          ++failures;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0) << LastError(shared.rt);
  normuon_step_info_t info;
  normuon_step_info_init(&info);
  ASSERT_EQ(normuon_step_result(shared.rt, &info), NORMUON_SUCCESS);
  EXPECT_EQ(info.steps_taken, kThreads * kStepsPerThread);

  // The same number of steps on one thread gives the same bits.
  SmallModel alone(16, 12);
  alone.Build(/*finalize=*/true);
  for (int s = 0; s < kThreads * kStepsPerThread; ++s) {
    ASSERT_EQ(normuon_step(alone.rt, 0.01f, 0.001f, nullptr), NORMUON_SUCCESS);
  }
  EXPECT_EQ(0, std::memcmp(shared.w.data(), alone.w.data(), alone.w.size() * 4));
  EXPECT_EQ(0, std::memcmp(shared.b.data(), alone.b.data(), alone.b.size() * 4));
  const std::vector<float> ms = shared.Momentum(), ma = alone.Momentum();
  EXPECT_EQ(0, std::memcmp(ms.data(), ma.data(), ma.size() * 4));
}

}  // namespace
}  // namespace normuon_reliability
