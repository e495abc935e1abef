// The sharded step on the CPU backend through the in-process group: N ranks as N threads, each
// with its own runtime and its own rows, must end bitwise equal to the single-rank run's rows
// (docs/ARCHITECTURE.md sections 2 and 6), for every world size, split, shape and owner policy. Also the
// cross-rank failure modes: mismatched registration, a missing rank, a failed collective, a
// non-finite gradient on one rank.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/row_layouts.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"

namespace {

struct ParamSpec {
  std::string name;
  int64_t rows, cols;
  bool matrix;
  std::vector<int64_t> splits = {};  // row blocks (normuon_param_desc_t::row_splits)
};

using normuon::testing::Fsdp2;
using normuon::testing::Random;
using normuon::testing::Range;
using normuon::testing::Split;

// Random cuts (ranks with no rows), ranks in reverse row order.
std::vector<Range> RaggedReversed(int64_t rows, int world) {
  return normuon::testing::Ragged(0)(rows, world);
}

// Full-matrix values of every parameter and its state after a run.
struct Result {
  std::vector<std::vector<float>> param, first, second;  // first/second: momentum & v, or Adam
  std::vector<std::string> errors;                        // per rank: "" or the failure
};

struct RunOptions {
  int world = 1;
  Split split = Fsdp2;
  normuon_owner_policy_t policy = NORMUON_OWNER_ROUND_ROBIN;
  int steps = 3;
  normuon_ns_dtype_t ns_dtype = NORMUON_NS_FP32;
  normuon_ns_method_t ns_method = NORMUON_NS_METHOD_STANDARD;
  normuon_schedule_t schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  uint64_t bucket_bytes = 2048;  // a few small matrices per bucket
  // Faults and misuse, for the failure tests:
  int nan_rank = -1;         // this rank puts a NaN in its first gradient rows on the last step
  int bad_register_rank = -1;  // this rank registers the first matrix with one column too many
  int absent_rank = -1;      // this rank never calls step
  int fault_rank = -1;       // this rank's collective #fault_call fails
  int64_t fault_call = -1;
  double timeout_s = 20.0;
  int check_finite = 0;
  // normuon_grad_ready before each step: 0 none, 1 reverse order one by one, 2 a random order
  // (different on every rank) in random groups, 3 all matrices in one call.
  int arrival = 0;
  normuon_variant_t variant = NORMUON_VARIANT_NORMUON;
  normuon_orthogonalizer_t orthogonalizer = NORMUON_ORTHO_QUINTIC;
  int cautious = 0;
  normuon_neuron_axis_t neuron_axis = NORMUON_NEURON_ROWS;
  int disagree_rank = -1;  // this rank leaves one matrix unmarked on the last step
  // On this step, every rank first marks half its matrices (rank-dependent halves, grads not yet
  // final: zeros), then cancels the step with normuon_step_cancel, checks that nothing changed,
  // and only then takes the step as usual.
  int cancel_step = -1;
};

std::vector<std::vector<float>> FullValues(const std::vector<ParamSpec>& specs, uint32_t seed,
                                           float scale) {
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < specs.size(); ++i) {
    out.push_back(Random(static_cast<size_t>(specs[i].rows * specs[i].cols),
                         seed + 7919u * static_cast<uint32_t>(i), scale));
  }
  return out;
}

Result RunRanks(const std::vector<ParamSpec>& specs, const RunOptions& o) {
  const int world = o.world;
  std::vector<normuon_comm_t> comms(world);
  EXPECT_EQ(normuon_comm_create_inprocess_group(world, o.timeout_s, comms.data()),
            NORMUON_SUCCESS);
  const auto init = FullValues(specs, 1000, 0.05f);
  std::vector<std::vector<std::vector<float>>> grads;  // [step][param]
  for (int s = 0; s < o.steps; ++s) grads.push_back(FullValues(specs, 2000 + 100 * s, 1.0f));
  std::vector<std::vector<Range>> ranges;
  for (const ParamSpec& p : specs) ranges.push_back(o.split(p.rows, world));

  Result res;
  res.param.resize(specs.size());
  res.first.resize(specs.size());
  res.second.resize(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t n = static_cast<size_t>(specs[i].rows * specs[i].cols);
    res.param[i].assign(n, 0.0f);
    res.first[i].assign(n, 0.0f);
    const bool row_v = specs[i].matrix && o.variant != NORMUON_VARIANT_ADAMUON;
    const size_t col_v = static_cast<size_t>(
        std::max<size_t>(1, specs[i].splits.size()) * specs[i].cols);  // per block
    res.second[i].assign(!specs[i].matrix ? n
                         : o.neuron_axis == NORMUON_NEURON_COLUMNS ? col_v
                         : row_v ? static_cast<size_t>(specs[i].rows)
                                 : n,
                         0.0f);
  }
  res.errors.assign(world, "");
  std::mutex mu;

  auto rank_main = [&](int rank) {
    auto fail = [&](const std::string& what) {
      std::lock_guard<std::mutex> lock(mu);
      if (res.errors[rank].empty()) res.errors[rank] = what;
    };
    normuon_config_t c;
    normuon_config_init(&c);
    c.ns_dtype = o.ns_dtype;
    c.ns_method = o.ns_method;
    c.owner_policy = o.policy;
    c.schedule = o.schedule;
    c.bucket_bytes = o.bucket_bytes;
    c.variant = o.variant;
    c.orthogonalizer = o.orthogonalizer;
    c.cautious_weight_decay = o.cautious;
    c.neuron_axis = o.neuron_axis;
    c.weight_decay = 0.01f;
    c.check_finite = o.check_finite;
    normuon_runtime_t rt = 0;
    if (normuon_create(&c, comms[rank], &rt) != NORMUON_SUCCESS) {
      return fail(normuon_last_error(0));
    }
    std::vector<std::vector<float>> p(specs.size()), g(specs.size());
    std::vector<normuon_param_t> ids(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      const Range r = ranges[i][rank];
      const int64_t cols = specs[i].cols;
      p[i].assign(init[i].begin() + r.begin * cols, init[i].begin() + (r.begin + r.count) * cols);
      g[i].assign(static_cast<size_t>(r.count * cols), 0.0f);
      normuon_param_desc_t d;
      normuon_param_desc_init(&d);
      d.name = specs[i].name.c_str();
      d.rows = specs[i].rows;
      d.cols = cols + (rank == o.bad_register_rank && i == 0 ? 1 : 0);
      d.row_begin = r.begin;
      d.row_count = r.count;
      d.param = r.count > 0 ? p[i].data() : nullptr;
      d.grad = r.count > 0 ? g[i].data() : nullptr;
      d.group = specs[i].matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
      d.row_splits = specs[i].splits.empty() ? nullptr : specs[i].splits.data();
      d.num_row_splits = static_cast<int32_t>(specs[i].splits.size());
      const normuon_status_t st = specs[i].matrix ? normuon_register_matrix(rt, &d, &ids[i])
                                                  : normuon_register_adamw(rt, &d, &ids[i]);
      if (st != NORMUON_SUCCESS && rank != o.bad_register_rank) {
        fail(normuon_last_error(rt));
        normuon_destroy(rt);
        return;
      }
    }
    if (normuon_comm_inject_fault(comms[rank], rank == o.fault_rank ? NORMUON_FAULT_ERROR
                                                                     : NORMUON_FAULT_NONE,
                                  std::max<int64_t>(o.fault_call, 0)) != NORMUON_SUCCESS) {
      fail("inject_fault failed");
    }
    if (normuon_finalize(rt) != NORMUON_SUCCESS) {
      fail(normuon_last_error(rt));
      normuon_destroy(rt);
      return;
    }
    for (int s = 0; s < o.steps && rank != o.absent_rank; ++s) {
      for (size_t i = 0; i < specs.size(); ++i) {
        const Range r = ranges[i][rank];
        std::copy(grads[s][i].begin() + r.begin * specs[i].cols,
                  grads[s][i].begin() + (r.begin + r.count) * specs[i].cols, g[i].begin());
        if (rank == o.nan_rank && s == o.steps - 1 && i == 0 && r.count > 0) {
          g[i][0] = std::numeric_limits<float>::quiet_NaN();
        }
      }
      std::vector<normuon_param_t> marks;
      for (size_t i = 0; i < specs.size(); ++i) {
        if (specs[i].matrix) marks.push_back(ids[i]);
      }
      if (s == o.cancel_step) {
        // A begun step with stale gradients, abandoned: parameters and state must not move.
        const std::vector<std::vector<float>> params_before = p;
        // Every parameter's first state buffer (momentum or exp_avg), concatenated.
        auto first_state = [&] {
          std::vector<float> all;
          for (size_t i = 0; i < specs.size(); ++i) {
            uint64_t bytes = 0;
            const normuon_state_kind_t kind =
                specs[i].matrix ? NORMUON_STATE_MOMENTUM : NORMUON_STATE_EXP_AVG;
            normuon_state_size(rt, ids[i], kind, &bytes);
            std::vector<float> st(bytes / 4);
            if (bytes) normuon_get_state(rt, ids[i], kind, st.data(), bytes);
            all.insert(all.end(), st.begin(), st.end());
          }
          return all;
        };
        const std::vector<float> state_before = first_state();
        std::vector<std::vector<float>> saved_grads = g;
        for (auto& v : g) std::fill(v.begin(), v.end(), 0.0f);
        for (size_t m = rank % 2; m < marks.size(); m += 2) {
          if (normuon_grad_ready(rt, &marks[m], 1, nullptr) != NORMUON_SUCCESS) {
            fail(normuon_last_error(rt));
          }
        }
        if (normuon_step_cancel(rt) != NORMUON_SUCCESS) fail(normuon_last_error(rt));
        if (normuon_step_cancel(rt) != NORMUON_SUCCESS) fail("a second cancel is not a no-op");
        if (p != params_before) fail("normuon_step_cancel changed a parameter");
        const std::vector<float> state_after = first_state();
        if (state_after != state_before) fail("normuon_step_cancel changed optimizer state");
        normuon_step_info_t info;
        normuon_step_info_init(&info);
        normuon_step_result(rt, &info);
        if (info.steps_taken != s || info.steps_skipped != 0) {
          fail("normuon_step_cancel counted a step");
        }
        g = saved_grads;
      }
      if (rank == o.disagree_rank && s == o.steps - 1) marks.pop_back();
      bool marked_ok = true;
      if (o.arrival == 1) {
        for (auto it = marks.rbegin(); it != marks.rend() && marked_ok; ++it) {
          marked_ok = normuon_grad_ready(rt, &*it, 1, nullptr) == NORMUON_SUCCESS;
        }
      } else if (o.arrival == 2) {
        std::mt19937 gen(static_cast<uint32_t>(97 * rank + s));
        std::shuffle(marks.begin(), marks.end(), gen);
        size_t pos = 0;
        while (pos < marks.size() && marked_ok) {
          const size_t n = std::min<size_t>(marks.size() - pos, 1 + gen() % 3);
          marked_ok = normuon_grad_ready(rt, marks.data() + pos, static_cast<int32_t>(n),
                                         nullptr) == NORMUON_SUCCESS;
          pos += n;
        }
      } else if (o.arrival == 3) {
        marked_ok = normuon_grad_ready(rt, marks.data(), static_cast<int32_t>(marks.size()),
                                       nullptr) == NORMUON_SUCCESS;
      }
      if (!marked_ok) {
        fail(normuon_last_error(rt));
        break;
      }
      if (normuon_step(rt, 0.02f, 0.01f, nullptr) != NORMUON_SUCCESS) {
        fail(normuon_last_error(rt));
        break;
      }
    }
    for (size_t i = 0; i < specs.size(); ++i) {
      const Range r = ranges[i][rank];
      const int64_t cols = specs[i].cols;
      std::lock_guard<std::mutex> lock(mu);
      std::copy(p[i].begin(), p[i].end(), res.param[i].begin() + r.begin * cols);
      if (r.count == 0) continue;
      if (specs[i].matrix) {
        normuon_get_state(rt, ids[i], NORMUON_STATE_MOMENTUM, res.first[i].data() + r.begin * cols,
                          r.count * cols * 4);
        if (o.neuron_axis == NORMUON_NEURON_COLUMNS) {
          // Replicated: every rank holds the same column v; the last writer's copy is kept, and
          // the test compares it with the single-rank run's.
          normuon_get_state(rt, ids[i], NORMUON_STATE_SECOND_MOMENT, res.second[i].data(),
                            res.second[i].size() * 4);
        } else if (o.variant == NORMUON_VARIANT_ADAMUON) {
          normuon_get_state(rt, ids[i], NORMUON_STATE_SECOND_MOMENT,
                            res.second[i].data() + r.begin * cols, r.count * cols * 4);
        } else if (o.variant != NORMUON_VARIANT_MUON) {
          normuon_get_state(rt, ids[i], NORMUON_STATE_SECOND_MOMENT,
                            res.second[i].data() + r.begin, r.count * 4);
        }
      } else {
        normuon_get_state(rt, ids[i], NORMUON_STATE_EXP_AVG, res.first[i].data() + r.begin * cols,
                          r.count * cols * 4);
        normuon_get_state(rt, ids[i], NORMUON_STATE_EXP_AVG_SQ,
                          res.second[i].data() + r.begin * cols, r.count * cols * 4);
      }
    }
    normuon_destroy(rt);
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(rank_main, r);
  for (std::thread& t : threads) t.join();
  for (normuon_comm_t c : comms) normuon_comm_destroy(c);
  return res;
}

// Bitwise equality; on a mismatch, says how far apart the values are.
::testing::AssertionResult BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "sizes " << a.size() << " vs " << b.size();
  }
  if (std::memcmp(a.data(), b.data(), a.size() * 4) == 0) return ::testing::AssertionSuccess();
  double diff = 0, mag = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    mag = std::max(mag, static_cast<double>(std::fabs(b[i])));
  }
  return ::testing::AssertionFailure() << "max |difference| " << diff << ", max |value| " << mag;
}

// Tall, wide, square (twice: a batch of two), a 1-row and a 1-column matrix, and AdamW vectors.
const std::vector<ParamSpec>& Model() {
  static const auto* specs = new std::vector<ParamSpec>{
      {"tall", 40, 12, true},     {"wide", 12, 40, true},   {"sq.a", 16, 16, true},
      {"bias", 30, 1, false},     {"sq.b", 16, 16, true},   {"row", 1, 9, true},
      {"col", 9, 1, true},        {"emb", 21, 4, false},    {"odd", 7, 5, true},
  };
  return *specs;
}

void ExpectSameAsSingleRank(const Result& single, const Result& sharded, const std::string& what) {
  for (size_t r = 0; r < sharded.errors.size(); ++r) {
    ASSERT_EQ(sharded.errors[r], "") << what << " rank " << r;
  }
  for (size_t i = 0; i < Model().size(); ++i) {
    EXPECT_TRUE(BitwiseEqual(sharded.param[i], single.param[i])) << what << " param " << Model()[i].name;
    EXPECT_TRUE(BitwiseEqual(sharded.first[i], single.first[i])) << what << " state 1 " << Model()[i].name;
    EXPECT_TRUE(BitwiseEqual(sharded.second[i], single.second[i])) << what << " state 2 " << Model()[i].name;
  }
}

TEST(ShardedStepTest, EveryWorldSizeSplitOwnerPolicyAndScheduleMatchesTheSingleRankRunBitwise) {
  const Result single = RunRanks(Model(), RunOptions{});
  for (const auto& e : single.errors) ASSERT_EQ(e, "");
  for (auto schedule :
       {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX, NORMUON_SCHEDULE_BUCKETED}) {
    for (int world : {1, 2, 3, 4, 8}) {
      for (int split = 0; split < 2; ++split) {
        for (auto policy : {NORMUON_OWNER_ROUND_ROBIN, NORMUON_OWNER_COST_BALANCED}) {
          RunOptions o;
          o.world = world;
          o.split = split == 0 ? Split(Fsdp2) : Split(RaggedReversed);
          o.policy = policy;
          o.schedule = schedule;
          const std::string what = "schedule " + std::to_string(schedule) + " world " +
                                   std::to_string(world) + (split == 0 ? " fsdp2" : " ragged") +
                                   " policy " + std::to_string(policy);
          ExpectSameAsSingleRank(single, RunRanks(Model(), o), what);
        }
      }
    }
  }
}

TEST(GradReadyTest, EveryArrivalOrderWorldSizeAndScheduleMatchesThePlainStepBitwise) {
  const Result single = RunRanks(Model(), RunOptions{});
  for (int arrival : {1, 2, 3}) {
    for (auto schedule :
         {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX, NORMUON_SCHEDULE_BUCKETED}) {
      for (int world : {1, 3, 4}) {
        RunOptions o;
        o.world = world;
        o.split = RaggedReversed;
        o.schedule = schedule;
        o.arrival = arrival;
        const std::string what = "arrival " + std::to_string(arrival) + " schedule " +
                                 std::to_string(schedule) + " world " + std::to_string(world);
        ExpectSameAsSingleRank(single, RunRanks(Model(), o), what);
      }
    }
  }
}

TEST(GradReadyTest, RanksThatMarkDifferentParametersFailTheStepEverywhereAndWriteNothing) {
  const Result two_steps = [] {
    RunOptions z;
    z.steps = 2;
    return RunRanks(Model(), z);
  }();
  RunOptions o;
  o.world = 3;
  o.steps = 3;
  o.schedule = NORMUON_SCHEDULE_BUCKETED;
  o.arrival = 3;
  o.disagree_rank = 1;
  const Result r = RunRanks(Model(), o);
  for (int k = 0; k < 3; ++k) {
    EXPECT_NE(r.errors[k].find("disagree"), std::string::npos) << "rank " << k << ": " << r.errors[k];
  }
  for (size_t i = 0; i < Model().size(); ++i) {
    EXPECT_TRUE(BitwiseEqual(r.param[i], two_steps.param[i])) << Model()[i].name;
  }
}

TEST(GradReadyTest, ACancelledStepChangesNothingAndTheRunContinuesBitwise) {
  const Result single = RunRanks(Model(), RunOptions{});
  for (int world : {1, 2, 3}) {
    for (normuon_schedule_t schedule : {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX,
                                        NORMUON_SCHEDULE_BUCKETED}) {
      RunOptions o;
      o.world = world;
      o.schedule = schedule;
      o.arrival = 2;
      o.cancel_step = 1;
      ExpectSameAsSingleRank(single, RunRanks(Model(), o),
                             "cancel world " + std::to_string(world) + " schedule " +
                                 std::to_string(schedule));
    }
  }
}

TEST(GradReadyTest, OneStreamPerStepAndNoStateWritesInsideABegunStep) {
  normuon_config_t c;
  normuon_config_init(&c);
  c.schedule = NORMUON_SCHEDULE_BUCKETED;
  normuon_runtime_t rt = 0;
  ASSERT_EQ(normuon_create(&c, 0, &rt), NORMUON_SUCCESS);
  std::vector<float> w(64, 0.5f), g(64, 0.25f);
  normuon_param_desc_t d;
  normuon_param_desc_init(&d);
  d.name = "w";
  d.rows = 8;
  d.cols = 8;
  d.row_count = 8;
  d.param = w.data();
  d.grad = g.data();
  d.group = NORMUON_GROUP_MATRIX_DEFAULT;
  normuon_param_t id = 0;
  ASSERT_EQ(normuon_register_matrix(rt, &d, &id), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_finalize(rt), NORMUON_SUCCESS);
  int stream_a = 0, stream_b = 0;  // never dereferenced by the CPU backend: only compared
  ASSERT_EQ(normuon_grad_ready(rt, &id, 1, &stream_a), NORMUON_SUCCESS);
  std::vector<float> m(64, 1.0f);
  EXPECT_EQ(normuon_set_state(rt, id, NORMUON_STATE_MOMENTUM, m.data(), 256),
            NORMUON_ERROR_INVALID_STATE);
  EXPECT_NE(std::string(normuon_last_error(rt)).find("set_state inside a step"), std::string::npos)
      << normuon_last_error(rt);
  EXPECT_EQ(normuon_get_state(rt, id, NORMUON_STATE_MOMENTUM, m.data(), 256), NORMUON_SUCCESS);
  EXPECT_EQ(normuon_step(rt, 0.02f, 0.0f, &stream_b), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(normuon_last_error(rt)).find("differs from the stream"), std::string::npos)
      << normuon_last_error(rt);
  EXPECT_EQ(w, std::vector<float>(64, 0.5f));  // the refused step wrote nothing
  EXPECT_EQ(normuon_step(rt, 0.02f, 0.0f, &stream_a), NORMUON_SUCCESS);
  EXPECT_NE(w, std::vector<float>(64, 0.5f));
  normuon_destroy(rt);
}

TEST(ShardedStepTest, OverlappingSchedulesSurviveAFailedCollectiveWithoutWriting) {
  const Result untouched = [] {
    RunOptions z;
    z.steps = 0;
    return RunRanks(Model(), z);
  }();
  for (auto schedule : {NORMUON_SCHEDULE_PER_MATRIX, NORMUON_SCHEDULE_BUCKETED}) {
    RunOptions o;
    o.world = 3;
    o.steps = 1;
    o.schedule = schedule;
    o.fault_rank = 2;
    // #0 and #1 are finalize's all-gathers; #2 is bucket 0's gather, #3 the next collective of
    // the pipeline (bucket 1's gather), while bucket 0's Newton-Schulz may be running.
    o.fault_call = 3;
    o.timeout_s = 5;
    const Result r = RunRanks(Model(), o);
    for (int k = 0; k < 3; ++k) EXPECT_NE(r.errors[k], "") << "rank " << k;
    for (size_t i = 0; i < Model().size(); ++i) {
      EXPECT_TRUE(BitwiseEqual(r.param[i], untouched.param[i]))
          << Model()[i].name << " schedule " << schedule;
      EXPECT_TRUE(BitwiseEqual(r.first[i], untouched.first[i])) << Model()[i].name;
    }
  }
}

TEST(ShardedStepTest, EveryVariantAndSwitchIsExactAcrossRanks) {
  struct Case {
    normuon_variant_t variant;
    normuon_orthogonalizer_t ortho;
    int cautious;
  } cases[] = {{NORMUON_VARIANT_ADAMUON, NORMUON_ORTHO_QUINTIC, 0},
               {NORMUON_VARIANT_NORMUON_PAPER, NORMUON_ORTHO_QUINTIC, 1},
               {NORMUON_VARIANT_MUON, NORMUON_ORTHO_POLAR_EXPRESS, 1},
               {NORMUON_VARIANT_NORMUON, NORMUON_ORTHO_POLAR_EXPRESS, 0}};
  for (const Case& k : cases) {
    RunOptions o;
    o.variant = k.variant;
    o.orthogonalizer = k.ortho;
    o.cautious = k.cautious;
    const Result single = RunRanks(Model(), o);
    for (int world : {3, 4}) {
      o.world = world;
      o.split = RaggedReversed;
      o.schedule = NORMUON_SCHEDULE_BUCKETED;
      ExpectSameAsSingleRank(single, RunRanks(Model(), o),
                             "variant " + std::to_string(k.variant) + " ortho " +
                                 std::to_string(k.ortho) + " cautious " +
                                 std::to_string(k.cautious) + " world " + std::to_string(world));
    }
  }
}

// A fused QKV projection (GQA: 32 query rows, 8 + 8 key/value rows) and an expert tensor of
// E = 3 experts of 10 x 12, registered with row splits.
const std::vector<ParamSpec>& BlockModel() {
  static const auto* specs = new std::vector<ParamSpec>{
      {"attn.qkv", 48, 16, true, {32, 8, 8}},
      {"moe.experts", 30, 12, true, {10, 10, 10}},
      {"bias", 30, 1, false},
      {"proj", 16, 24, true},
  };
  return *specs;
}

TEST(RowSplitTest, BlocksAreExactAcrossRanksWhoseRowsCrossBlockEdges) {
  for (auto schedule : {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX}) {
    RunOptions o;
    o.schedule = schedule;
    const Result single = RunRanks(BlockModel(), o);
    for (const auto& e : single.errors) ASSERT_EQ(e, "");
    for (int world : {2, 4, 7}) {  // 3 experts over 4 or 7 ranks: ranks hold parts of experts
      for (int split = 0; split < 2; ++split) {
        o.world = world;
        o.split = split == 0 ? Split(Fsdp2) : Split(RaggedReversed);
        const Result r = RunRanks(BlockModel(), o);
        for (size_t k = 0; k < r.errors.size(); ++k) ASSERT_EQ(r.errors[k], "") << "rank " << k;
        for (size_t i = 0; i < BlockModel().size(); ++i) {
          EXPECT_TRUE(BitwiseEqual(r.param[i], single.param[i]))
              << BlockModel()[i].name << " world " << world << " split " << split;
          EXPECT_TRUE(BitwiseEqual(r.second[i], single.second[i])) << BlockModel()[i].name;
        }
      }
    }
  }
}

TEST(RowSplitTest, ABlockIsOrthogonalizedAsItsOwnMatrix) {
  // The fused parameter with splits equals its blocks registered as separate matrices.
  const int64_t cols = 16;
  const std::vector<int64_t> splits = {32, 8, 8};
  const std::vector<float> init = Random(48 * cols, 5, 0.05f);
  std::vector<std::vector<float>> grads;
  for (int s = 0; s < 3; ++s) grads.push_back(Random(48 * cols, 50 + s, 1.0f));
  // mode 0: one parameter with the splits; 1: three parameters; 2: one parameter, no splits.
  auto run = [&](int mode) {
    const bool fused = mode != 1;
    normuon_config_t c;
    normuon_config_init(&c);
    c.weight_decay = 0.01f;
    normuon_runtime_t rt = 0;
    EXPECT_EQ(normuon_create(&c, 0, &rt), NORMUON_SUCCESS);
    std::vector<float> p = init, g(init.size());
    normuon_param_t id;
    int64_t row = 0;
    for (size_t b = 0; b < (fused ? 1 : splits.size()); ++b) {
      normuon_param_desc_t d;
      normuon_param_desc_init(&d);
      const std::string name = "w" + std::to_string(b);
      d.name = name.c_str();
      d.rows = fused ? 48 : splits[b];
      d.cols = cols;
      d.row_count = d.rows;
      d.param = p.data() + row * cols;
      d.grad = g.data() + row * cols;
      d.group = NORMUON_GROUP_MATRIX_DEFAULT;
      if (mode == 0) {
        d.row_splits = splits.data();
        d.num_row_splits = 3;
      }
      EXPECT_EQ(normuon_register_matrix(rt, &d, &id), NORMUON_SUCCESS) << normuon_last_error(rt);
      row += d.rows;
    }
    EXPECT_EQ(normuon_finalize(rt), NORMUON_SUCCESS) << normuon_last_error(rt);
    for (const auto& gs : grads) {
      std::copy(gs.begin(), gs.end(), g.begin());
      EXPECT_EQ(normuon_step(rt, 0.02f, 0.01f, nullptr), NORMUON_SUCCESS);
    }
    normuon_destroy(rt);
    return p;
  };
  const std::vector<float> fused = run(0), separate = run(1), whole = run(2);
  EXPECT_TRUE(BitwiseEqual(fused, separate));
  // Treating the fused matrix as one matrix is a different update: the splits matter.
  EXPECT_FALSE(BitwiseEqual(fused, whole));
}

TEST(RowSplitTest, BadSplitsAreRejectedNamingTheField) {
  normuon_config_t c;
  normuon_config_init(&c);
  normuon_runtime_t rt = 0;
  ASSERT_EQ(normuon_create(&c, 0, &rt), NORMUON_SUCCESS);
  std::vector<float> p(48 * 4), g(48 * 4);
  struct Case {
    std::vector<int64_t> splits;
    int32_t n;
    bool adamw;
    const char* expect;
  } cases[] = {{{32, 8}, 2, false, "sum to 40"},
               {{40, 0, 8}, 3, false, "row_splits[1]"},
               {{48}, -1, false, "num_row_splits"},
               {{24, 24}, 2, true, "AdamW"}};
  for (const Case& k : cases) {
    normuon_param_desc_t d;
    normuon_param_desc_init(&d);
    d.name = "w";
    d.rows = 48;
    d.cols = 4;
    d.row_count = 48;
    d.param = p.data();
    d.grad = g.data();
    d.row_splits = k.splits.data();
    d.num_row_splits = k.n;
    d.group = k.adamw ? NORMUON_GROUP_ADAMW_DEFAULT : NORMUON_GROUP_MATRIX_DEFAULT;
    normuon_param_t id;
    const normuon_status_t st =
        k.adamw ? normuon_register_adamw(rt, &d, &id) : normuon_register_matrix(rt, &d, &id);
    EXPECT_EQ(st, NORMUON_ERROR_INVALID_ARGUMENT) << k.expect;
    EXPECT_NE(std::string(normuon_last_error(rt)).find(k.expect), std::string::npos)
        << normuon_last_error(rt);
  }
  normuon_destroy(rt);
}

TEST(ShardedStepTest, ColumnNeuronAxisIsExactAcrossRanksAndSchedules) {
  for (const auto* model : {&Model(), &BlockModel()}) {
    RunOptions o;
    o.neuron_axis = NORMUON_NEURON_COLUMNS;
    const Result single = RunRanks(*model, o);
    for (const auto& e : single.errors) ASSERT_EQ(e, "");
    for (auto schedule : {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_BUCKETED}) {
      for (int world : {2, 5}) {
        o.world = world;
        o.split = RaggedReversed;
        o.schedule = schedule;
        const Result r = RunRanks(*model, o);
        for (size_t k = 0; k < r.errors.size(); ++k) ASSERT_EQ(r.errors[k], "") << "rank " << k;
        for (size_t i = 0; i < model->size(); ++i) {
          EXPECT_TRUE(BitwiseEqual(r.param[i], single.param[i]))
              << (*model)[i].name << " world " << world << " schedule " << schedule;
          EXPECT_TRUE(BitwiseEqual(r.second[i], single.second[i])) << (*model)[i].name;
        }
      }
    }
  }
}

TEST(ShardedStepTest, Bf16WireMatchesTheSingleRankBf16RunBitwise) {
  RunOptions o;
  o.ns_dtype = NORMUON_NS_BF16;
  const Result single = RunRanks(Model(), o);
  o.world = 3;
  o.split = RaggedReversed;
  ExpectSameAsSingleRank(single, RunRanks(Model(), o), "bf16 world 3");
}

TEST(ShardedStepTest, MismatchedRegistrationFailsFinalizeOnEveryRankWithOneMessage) {
  RunOptions o;
  o.world = 3;
  o.bad_register_rank = 1;
  const Result r = RunRanks(Model(), o);
  for (int k = 0; k < 3; ++k) {
    EXPECT_NE(r.errors[k].find("tall"), std::string::npos) << "rank " << k << ": " << r.errors[k];
    EXPECT_EQ(r.errors[k], r.errors[0]);
  }
}

TEST(ShardedStepTest, ARankThatNeverStepsTimesTheOthersOutAndNothingIsWritten) {
  RunOptions o;
  o.world = 3;
  o.steps = 1;
  o.absent_rank = 2;
  o.timeout_s = 0.3;
  const Result r = RunRanks(Model(), o);
  const Result none = [] {
    RunOptions z;
    z.steps = 0;
    return RunRanks(Model(), z);
  }();
  for (int k = 0; k < 2; ++k) {
    EXPECT_NE(r.errors[k].find("nothing was updated"), std::string::npos) << r.errors[k];
  }
  // Every parameter is as it started: the failed step committed nothing anywhere.
  for (size_t i = 0; i < Model().size(); ++i) {
    EXPECT_TRUE(BitwiseEqual(r.param[i], none.param[i])) << Model()[i].name;
  }
}

TEST(ShardedStepTest, AFailedCollectiveMidStepLeavesEveryParameterUntouched) {
  // Collectives: #0 and #1 are finalize's all-gathers; step 1 is #2 gather, #3 scatter, #4
  // all-reduce. Fail each of step 2's (#5, #6, #7) on rank 1.
  const Result one_step = [] {
    RunOptions z;
    z.steps = 1;
    return RunRanks(Model(), z);
  }();
  for (int64_t call : {5, 6, 7}) {
    RunOptions o;
    o.world = 4;
    o.steps = 2;
    o.fault_rank = 1;
    o.fault_call = call;
    o.timeout_s = 5;
    const Result r = RunRanks(Model(), o);
    for (int k = 0; k < 4; ++k) {
      EXPECT_NE(r.errors[k], "") << "rank " << k << " fault at #" << call;
    }
    for (size_t i = 0; i < Model().size(); ++i) {
      EXPECT_TRUE(BitwiseEqual(r.param[i], one_step.param[i]))
          << Model()[i].name << " fault at #" << call;
      EXPECT_TRUE(BitwiseEqual(r.first[i], one_step.first[i])) << Model()[i].name;
    }
  }
}

TEST(ShardedStepTest, ANonFiniteGradientOnOneRankSkipsTheStepOnEveryRank) {
  const Result two_steps = [] {
    RunOptions z;
    z.steps = 2;
    return RunRanks(Model(), z);
  }();
  RunOptions o;
  o.world = 3;
  o.steps = 3;  // the third step carries the NaN
  o.nan_rank = 2;
  o.check_finite = 1;
  const Result r = RunRanks(Model(), o);
  for (int k = 0; k < 3; ++k) {
    EXPECT_NE(r.errors[k].find("NaN or Inf"), std::string::npos) << r.errors[k];
  }
  for (size_t i = 0; i < Model().size(); ++i) {
    EXPECT_TRUE(BitwiseEqual(r.param[i], two_steps.param[i])) << Model()[i].name;
    EXPECT_TRUE(BitwiseEqual(r.second[i], two_steps.second[i])) << Model()[i].name;
  }
}

}  // namespace

// Gram Newton-Schulz (docs/ARCHITECTURE.md section 1): the owner computes the same function of the
// gathered matrix at every world size, so the sharded Gram step is bitwise the single-rank Gram
// step, on every schedule, split, owner policy, arrival order, variant and neuron axis.
TEST(GramShardedTest, EveryWorldSizeScheduleAndSplitMatchesTheSingleRankGramRunBitwise) {
  RunOptions o;
  o.ns_method = NORMUON_NS_METHOD_GRAM;
  const Result single = RunRanks(Model(), o);
  for (const auto& e : single.errors) ASSERT_EQ(e, "");
  // The Gram run really ran another iteration: close to the standard one, not the same bits.
  const Result standard = RunRanks(Model(), RunOptions{});
  bool any_differs = false;
  for (size_t i = 0; i < Model().size(); ++i) {
    any_differs = any_differs || !BitwiseEqual(single.param[i], standard.param[i]);
    for (size_t j = 0; j < single.param[i].size(); ++j) {
      ASSERT_NEAR(single.param[i][j], standard.param[i][j], 1e-4f) << Model()[i].name;
    }
  }
  EXPECT_TRUE(any_differs);
  for (auto schedule :
       {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX, NORMUON_SCHEDULE_BUCKETED}) {
    for (int world : {1, 2, 3, 4, 8}) {
      for (int split = 0; split < 2; ++split) {
        RunOptions r = o;
        r.world = world;
        r.split = split == 0 ? Split(Fsdp2) : Split(RaggedReversed);
        r.policy = split == 0 ? NORMUON_OWNER_ROUND_ROBIN : NORMUON_OWNER_COST_BALANCED;
        r.schedule = schedule;
        r.arrival = world == 3 ? 2 : 0;
        ExpectSameAsSingleRank(single, RunRanks(Model(), r),
                               "gram schedule " + std::to_string(schedule) + " world " +
                                   std::to_string(world) + " split " + std::to_string(split));
      }
    }
  }
}

TEST(GramShardedTest, VariantsRowSplitsAndColumnAxisAreExactAcrossRanks) {
  struct Case {
    normuon_variant_t variant;
    normuon_orthogonalizer_t ortho;
    normuon_neuron_axis_t axis;
    normuon_ns_dtype_t dtype;
  } cases[] = {{NORMUON_VARIANT_ADAMUON, NORMUON_ORTHO_QUINTIC, NORMUON_NEURON_ROWS, NORMUON_NS_FP32},
               {NORMUON_VARIANT_MUON, NORMUON_ORTHO_POLAR_EXPRESS, NORMUON_NEURON_ROWS,
                NORMUON_NS_FP32},
               {NORMUON_VARIANT_NORMUON, NORMUON_ORTHO_POLAR_EXPRESS, NORMUON_NEURON_COLUMNS,
                NORMUON_NS_FP32},
               {NORMUON_VARIANT_NORMUON, NORMUON_ORTHO_QUINTIC, NORMUON_NEURON_ROWS,
                NORMUON_NS_BF16}};
  for (const auto* model : {&Model(), &BlockModel()}) {
    for (const Case& k : cases) {
      RunOptions o;
      o.ns_method = NORMUON_NS_METHOD_GRAM;
      o.variant = k.variant;
      o.orthogonalizer = k.ortho;
      o.neuron_axis = k.axis;
      o.ns_dtype = k.dtype;
      const Result single = RunRanks(*model, o);
      for (const auto& e : single.errors) ASSERT_EQ(e, "");
      o.world = 3;
      o.split = RaggedReversed;
      o.schedule = NORMUON_SCHEDULE_BUCKETED;
      const Result r = RunRanks(*model, o);
      for (size_t k2 = 0; k2 < r.errors.size(); ++k2) ASSERT_EQ(r.errors[k2], "") << "rank " << k2;
      for (size_t i = 0; i < model->size(); ++i) {
        EXPECT_TRUE(BitwiseEqual(r.param[i], single.param[i]))
            << (*model)[i].name << " variant " << k.variant << " ortho " << k.ortho << " axis "
            << k.axis << " dtype " << k.dtype;
        EXPECT_TRUE(BitwiseEqual(r.second[i], single.second[i])) << (*model)[i].name;
      }
    }
  }
}
