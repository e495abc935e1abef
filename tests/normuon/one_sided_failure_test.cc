// One-sided failures (issue 17; docs/ARCHITECTURE.md section 6, "One-sided failures"): a
// caller's communicator returns an error on one rank after the data of the collective was
// exchanged, while the other ranks' calls succeed. Three ranks as threads, each with a custom
// communicator (normuon_comm_create_custom) over the in-process group that injects that failure
// at one collective of a step, for every collective of the step, every schedule, with and
// without normuon_grad_ready.
//
// What must hold: the failing rank returns an error and changes nothing. A failure before the
// step's last collective fails the step on every rank (the failing rank still issues the rest of
// the step's collectives and says so in the step's flags): nothing changes anywhere, and the next
// step works. A failure of the last collective (the flags' all-reduce) lets the other ranks
// commit; then the next step, and a checkpoint save, fail on every rank with an error naming the
// rank that did not commit which step, and change nothing. No rank ever waits for the timeout.
// After a load of the checkpoint saved before, every rank steps again and ends bitwise equal to
// an uninterrupted single-rank run.
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "base/c_status.h"
#include "comm/inprocess_group.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"
#include "tests/testing/row_layouts.h"

namespace normuon {
namespace {

using ::testing::HasSubstr;
using testing::Fsdp2;
using testing::Random;
using testing::Range;

constexpr int kWorld = 3;
constexpr double kTimeoutS = 10.0;
constexpr int kSteps = 3;

struct Spec {
  std::string name;
  int64_t rows, cols;
  bool matrix;
};

// Six matrices (six buckets with the per-matrix schedule; two bucketed, which puts at least
// world-size matrices in a bucket) and an AdamW vector.
std::vector<Spec> Model() {
  return {{"a", 12, 8, true}, {"b", 8, 12, true}, {"bias", 10, 1, false}, {"c", 9, 6, true},
          {"d", 6, 4, true},  {"e", 4, 6, true},  {"f", 5, 5, true}};
}

// ---- The communicator that fails one-sidedly ----

struct Faulty {
  std::shared_ptr<InProcessRank> inner;
  int64_t calls = 0;               // collectives so far (every rank issues the same ones)
  std::set<int64_t> fail_at;       // these return an error after the exchange succeeded
  std::string kinds;               // 'x' exchange, 'r' all-reduce, 'g' all-gather, per call
  std::string error;
};

Faulty* Of(void* ctx) { return static_cast<Faulty*>(ctx); }

normuon_status_t After(Faulty* f, char kind, const absl::Status& s) {
  const int64_t n = f->calls++;
  f->kinds.push_back(kind);
  if (!s.ok()) {
    f->error = std::string(s.message());
    return StatusToC(s);
  }
  if (f->fail_at.count(n) != 0) {
    f->error = absl::StrCat("injected one-sided failure of collective #", n,
                            " after its data was exchanged");
    return NORMUON_ERROR_COMM;
  }
  return NORMUON_SUCCESS;
}

normuon_comm_ops_t FaultyOps(Faulty* f, int rank) {
  normuon_comm_ops_t ops;
  normuon_comm_ops_init(&ops);
  ops.ctx = f;
  ops.rank = rank;
  ops.world_size = kWorld;
  ops.exchange = [](void* ctx, const normuon_p2p_t* sends, int32_t n_sends,
                    const normuon_p2p_t* recvs, int32_t n_recvs, void* stream) {
    return After(Of(ctx), 'x',
                 Of(ctx)->inner->Exchange(absl::MakeConstSpan(sends, n_sends),
                                          absl::MakeConstSpan(recvs, n_recvs), stream));
  };
  ops.all_reduce_sum_f32 = [](void* ctx, const float* in, float* out, uint64_t count,
                              void* stream) {
    return After(Of(ctx), 'r', Of(ctx)->inner->AllReduceSum(in, out, count, stream));
  };
  ops.all_gather = [](void* ctx, const void* in, void* out, uint64_t bytes, void* stream) {
    return After(Of(ctx), 'g', Of(ctx)->inner->AllGather(in, out, bytes, stream));
  };
  ops.last_error = [](void* ctx) { return Of(ctx)->error.c_str(); };
  return ops;
}

// Runs fn(rank) on one thread per rank and joins them.
void Parallel(const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) threads.emplace_back(fn, r);
  for (std::thread& t : threads) t.join();
}

std::vector<float> Values(const Spec& s, uint32_t seed, float scale) {
  return Random(static_cast<size_t>(s.rows * s.cols), seed, scale);
}

std::vector<std::vector<float>> Grads(int step) {
  std::vector<std::vector<float>> g;
  const std::vector<Spec> m = Model();
  for (size_t i = 0; i < m.size(); ++i) g.push_back(Values(m[i], 2000 + 100 * step + i, 1.0f));
  return g;
}

normuon_config_t Config(normuon_schedule_t schedule) {
  normuon_config_t c;
  normuon_config_init(&c);
  c.schedule = schedule;
  c.bucket_bytes = 150;  // a bucket or two per matrix (wire bytes, per rank)
  c.weight_decay = 0.01f;
  return c;
}

// One rank: its runtime, its rows of every parameter, their gradients.
struct Rank {
  normuon_comm_t comm = 0;
  normuon_runtime_t rt = 0;
  std::vector<Range> rows;  // per parameter
  std::vector<std::vector<float>> p, g;
  std::vector<normuon_param_t> ids;
  normuon_status_t status = NORMUON_SUCCESS;  // of the last phase
  std::string message;
};

// Creates, registers and finalizes (world 1 with comm 0: the reference).
void SetUp(Rank& k, int rank, int world, normuon_comm_t comm, normuon_schedule_t schedule) {
  const std::vector<Spec> m = Model();
  k.comm = comm;
  const normuon_config_t c = Config(schedule);
  ASSERT_EQ(normuon_create(&c, comm, &k.rt), NORMUON_SUCCESS) << normuon_last_error(0);
  k.ids.resize(m.size());
  for (size_t i = 0; i < m.size(); ++i) {
    const Range r = Fsdp2(m[i].rows, world)[rank];
    const std::vector<float> init = Values(m[i], 1000 + i, 0.05f);
    k.rows.push_back(r);
    k.p.emplace_back(init.begin() + r.begin * m[i].cols,
                     init.begin() + (r.begin + r.count) * m[i].cols);
    k.g.emplace_back(static_cast<size_t>(r.count * m[i].cols), 0.0f);
    normuon_param_desc_t d;
    normuon_param_desc_init(&d);
    d.name = m[i].name.c_str();
    d.rows = m[i].rows;
    d.cols = m[i].cols;
    d.row_begin = r.begin;
    d.row_count = r.count;
    d.param = r.count > 0 ? k.p[i].data() : nullptr;
    d.grad = r.count > 0 ? k.g[i].data() : nullptr;
    d.group = m[i].matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
    ASSERT_EQ(m[i].matrix ? normuon_register_matrix(k.rt, &d, &k.ids[i])
                          : normuon_register_adamw(k.rt, &d, &k.ids[i]),
              NORMUON_SUCCESS)
        << normuon_last_error(k.rt);
  }
}

void Record(Rank& k, normuon_status_t s) {
  k.status = s;
  k.message = s == NORMUON_SUCCESS ? "" : normuon_last_error(k.rt);
}

// Step `step` (1-based) with its gradients; grad_ready marks the matrices one by one in reverse
// order first.
void Step(Rank& k, int step, bool grad_ready) {
  const std::vector<Spec> m = Model();
  const std::vector<std::vector<float>> g = Grads(step);
  for (size_t i = 0; i < m.size(); ++i) {
    std::copy(g[i].begin() + k.rows[i].begin * m[i].cols,
              g[i].begin() + (k.rows[i].begin + k.rows[i].count) * m[i].cols, k.g[i].begin());
  }
  if (grad_ready) {
    for (size_t i = m.size(); i-- > 0;) {
      if (!m[i].matrix) continue;
      const normuon_status_t s = normuon_grad_ready(k.rt, &k.ids[i], 1, nullptr);
      if (s != NORMUON_SUCCESS) return Record(k, s);
    }
  }
  Record(k, normuon_step(k.rt, -1.0f, -1.0f, nullptr));
}

// Every parameter and state buffer of the rank, as bytes.
std::string Snapshot(const Rank& k) {
  std::string out;
  const std::vector<Spec> m = Model();
  for (size_t i = 0; i < m.size(); ++i) {
    if (!k.p[i].empty()) {
      out.append(reinterpret_cast<const char*>(k.p[i].data()), k.p[i].size() * sizeof(float));
    }
    const std::vector<normuon_state_kind_t> kinds =
        m[i].matrix ? std::vector<normuon_state_kind_t>{NORMUON_STATE_MOMENTUM,
                                                        NORMUON_STATE_SECOND_MOMENT}
                    : std::vector<normuon_state_kind_t>{NORMUON_STATE_EXP_AVG,
                                                        NORMUON_STATE_EXP_AVG_SQ,
                                                        NORMUON_STATE_STEP};
    for (normuon_state_kind_t kind : kinds) {
      uint64_t bytes = 0;
      EXPECT_EQ(normuon_state_size(k.rt, k.ids[i], kind, &bytes), NORMUON_SUCCESS);
      if (bytes == 0) continue;
      std::string buf(bytes, '\0');
      EXPECT_EQ(normuon_get_state(k.rt, k.ids[i], kind, buf.data(), bytes), NORMUON_SUCCESS)
          << normuon_last_error(k.rt);
      out += buf;
    }
  }
  return out;
}

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  static int counter = 0;
  const std::string dir =
      absl::StrCat(base != nullptr ? base : "/tmp", "/one_sided_", name, "_", ++counter);
  mkdir(dir.c_str(), 0755);
  return dir;
}

std::string Ranks(const std::vector<int>& ranks) {
  return absl::StrCat(ranks.size() == 1 ? "rank " : "ranks ", absl::StrJoin(ranks, ", "));
}

// The single-rank run of kSteps steps: the full parameters.
std::vector<std::vector<float>> Reference(normuon_schedule_t schedule) {
  Rank k;
  SetUp(k, 0, 1, 0, schedule);
  EXPECT_EQ(normuon_finalize(k.rt), NORMUON_SUCCESS);
  for (int s = 1; s <= kSteps; ++s) {
    Step(k, s, false);
    EXPECT_EQ(k.status, NORMUON_SUCCESS) << k.message;
  }
  normuon_destroy(k.rt);
  return k.p;
}

struct Group {
  std::vector<std::unique_ptr<Faulty>> faulty;
  std::vector<Rank> ranks = std::vector<Rank>(kWorld);

  explicit Group(normuon_schedule_t schedule) {
    absl::StatusOr<std::vector<std::shared_ptr<InProcessRank>>> inner =
        CreateInProcessGroup(kWorld, kTimeoutS);
    EXPECT_TRUE(inner.ok()) << inner.status();
    for (int r = 0; r < kWorld; ++r) {
      faulty.push_back(std::make_unique<Faulty>());
      faulty[r]->inner = (*inner)[r];
      const normuon_comm_ops_t ops = FaultyOps(faulty[r].get(), r);
      normuon_comm_t comm = 0;
      EXPECT_EQ(normuon_comm_create_custom(&ops, &comm), NORMUON_SUCCESS);
      SetUp(ranks[r], r, kWorld, comm, schedule);
    }
    Parallel([&](int r) { Record(ranks[r], normuon_finalize(ranks[r].rt)); });
    for (const Rank& k : ranks) EXPECT_EQ(k.status, NORMUON_SUCCESS) << k.message;
  }
  ~Group() {
    for (Rank& k : ranks) {
      normuon_destroy(k.rt);
      normuon_comm_destroy(k.comm);
    }
  }

  // Runs a collective phase on every rank; returns the seconds it took.
  double Run(const std::function<void(Rank&)>& fn) {
    const auto t0 = std::chrono::steady_clock::now();
    Parallel([&](int r) { fn(ranks[r]); });
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::vector<std::string> Snapshots() {
    std::vector<std::string> s;
    for (const Rank& k : ranks) s.push_back(Snapshot(k));
    return s;
  }
};

struct Case {
  normuon_schedule_t schedule;
  bool grad_ready;
};

std::string Name(const Case& c) {
  return absl::StrCat(c.schedule == NORMUON_SCHEDULE_SEQUENTIAL   ? "sequential"
                      : c.schedule == NORMUON_SCHEDULE_PER_MATRIX ? "per-matrix"
                                                                  : "bucketed",
                      c.grad_ready ? ", grad_ready" : "");
}

// The collectives of one clean step, as every rank issued them.
std::string StepCollectives(const Case& c) {
  Group g(c.schedule);
  const int64_t before = g.faulty[0]->calls;
  g.Run([&](Rank& k) { Step(k, 1, c.grad_ready); });
  for (const Rank& k : g.ranks) EXPECT_EQ(k.status, NORMUON_SUCCESS) << k.message;
  const std::string kinds = g.faulty[0]->kinds.substr(static_cast<size_t>(before));
  for (int r = 1; r < kWorld; ++r) {
    EXPECT_EQ(g.faulty[r]->kinds.substr(static_cast<size_t>(before)), kinds) << "rank " << r;
  }
  return kinds;
}

// Step 1, a checkpoint, step 2 with collective #at of the step failing one-sidedly on
// `failing`, step 3; then the checkpoint loaded, steps 2 and 3 again, against the reference.
void RunCase(const Case& c, int64_t at, bool last, const std::vector<int>& failing,
             const std::vector<std::vector<float>>& reference) {
  SCOPED_TRACE(absl::StrCat(Name(c), ": collective #", at, " of the step fails on ",
                            Ranks(failing)));
  Group g(c.schedule);
  g.Run([&](Rank& k) { Step(k, 1, c.grad_ready); });
  for (const Rank& k : g.ranks) ASSERT_EQ(k.status, NORMUON_SUCCESS) << k.message;
  const std::string dir = TempDir("ck");
  g.Run([&](Rank& k) { Record(k, normuon_save_checkpoint(k.rt, dir.c_str())); });
  for (const Rank& k : g.ranks) ASSERT_EQ(k.status, NORMUON_SUCCESS) << k.message;
  std::vector<std::vector<std::vector<float>>> after_step1;
  for (const Rank& k : g.ranks) after_step1.push_back(k.p);

  auto fails = [&](int r) {
    return std::find(failing.begin(), failing.end(), r) != failing.end();
  };
  for (int r : failing) g.faulty[r]->fail_at.insert(g.faulty[r]->calls + at);
  std::vector<std::string> before = g.Snapshots();
  double seconds = g.Run([&](Rank& k) { Step(k, 2, c.grad_ready); });
  EXPECT_LT(seconds, kTimeoutS / 2) << "a rank waited for the timeout";
  std::vector<std::string> after = g.Snapshots();
  for (int r = 0; r < kWorld; ++r) {
    const Rank& k = g.ranks[r];
    if (fails(r)) {
      EXPECT_EQ(k.status, NORMUON_ERROR_COMM) << "rank " << r;
      EXPECT_THAT(k.message, HasSubstr("injected one-sided failure")) << "rank " << r;
      EXPECT_EQ(after[r], before[r]) << "the failing rank " << r << " changed something";
    } else if (!last) {
      // The failing rank said so in the step's flags: nobody commits.
      EXPECT_EQ(k.status, NORMUON_ERROR_COMM) << "rank " << r;
      EXPECT_THAT(k.message, HasSubstr(absl::StrCat(Ranks(failing), " failed in this step")))
          << "rank " << r;
      EXPECT_EQ(after[r], before[r]) << "rank " << r << " changed something";
    } else {
      // The last collective succeeded here: this rank committed.
      EXPECT_EQ(k.status, NORMUON_SUCCESS) << "rank " << r << ": " << k.message;
      EXPECT_NE(after[r], before[r]) << "rank " << r << " did not commit";
    }
  }

  before = after;
  seconds = g.Run([&](Rank& k) { Step(k, 3, c.grad_ready); });
  EXPECT_LT(seconds, kTimeoutS / 2) << "a rank waited for the timeout";
  after = g.Snapshots();
  for (int r = 0; r < kWorld; ++r) {
    const Rank& k = g.ranks[r];
    if (!last) {
      EXPECT_EQ(k.status, NORMUON_SUCCESS) << "rank " << r << ": " << k.message;
      continue;
    }
    // The ranks' states differ: every rank fails, naming who did not commit step 2.
    EXPECT_EQ(k.status, NORMUON_ERROR_INVALID_STATE) << "rank " << r << ": " << k.message;
    EXPECT_THAT(k.message, HasSubstr(absl::StrCat(Ranks(failing), " did not commit step 2")))
        << "rank " << r;
    EXPECT_THAT(k.message, HasSubstr("checkpoint")) << "rank " << r;
    EXPECT_EQ(after[r], before[r]) << "rank " << r << " changed something";
    normuon_step_info_t info;
    normuon_step_info_init(&info);
    EXPECT_EQ(normuon_step_result(k.rt, &info), NORMUON_ERROR_INVALID_STATE) << "rank " << r;
  }
  if (last) {
    // A checkpoint of diverged states is refused on every rank, and the last good one is kept.
    g.Run([&](Rank& k) { Record(k, normuon_save_checkpoint(k.rt, dir.c_str())); });
    for (int r = 0; r < kWorld; ++r) {
      EXPECT_EQ(g.ranks[r].status, NORMUON_ERROR_INVALID_STATE) << "rank " << r;
      EXPECT_THAT(g.ranks[r].message, HasSubstr("diverged")) << "rank " << r;
    }
    // Still diverged on a second try: the failure is not forgotten.
    g.Run([&](Rank& k) { Step(k, 3, c.grad_ready); });
    for (const Rank& k : g.ranks) EXPECT_EQ(k.status, NORMUON_ERROR_INVALID_STATE) << k.message;
  }

  // Restore: the parameters of after step 1 (the trainer's), the optimizer state from the
  // checkpoint; then steps 2 and 3 as in the reference.
  for (int r = 0; r < kWorld; ++r) {
    for (size_t i = 0; i < g.ranks[r].p.size(); ++i) {
      std::copy(after_step1[r][i].begin(), after_step1[r][i].end(), g.ranks[r].p[i].begin());
    }
  }
  g.Run([&](Rank& k) { Record(k, normuon_load_checkpoint(k.rt, dir.c_str())); });
  for (const Rank& k : g.ranks) ASSERT_EQ(k.status, NORMUON_SUCCESS) << k.message;
  for (int s = 2; s <= kSteps; ++s) {
    g.Run([&](Rank& k) { Step(k, s, c.grad_ready); });
    for (const Rank& k : g.ranks) ASSERT_EQ(k.status, NORMUON_SUCCESS) << k.message;
  }
  const std::vector<Spec> m = Model();
  for (int r = 0; r < kWorld; ++r) {
    for (size_t i = 0; i < m.size(); ++i) {
      const Range rows = g.ranks[r].rows[i];
      const std::vector<float> want(reference[i].begin() + rows.begin * m[i].cols,
                                    reference[i].begin() + (rows.begin + rows.count) * m[i].cols);
      ASSERT_EQ(g.ranks[r].p[i].size(), want.size());
      EXPECT_TRUE(want.empty() || std::memcmp(want.data(), g.ranks[r].p[i].data(),
                                              want.size() * sizeof(float)) == 0)
          << "rank " << r << ", parameter " << m[i].name << " differs from the single-rank run";
    }
  }
}

class OneSidedFailureTest : public ::testing::TestWithParam<Case> {};

TEST_P(OneSidedFailureTest, AtEveryCollectiveOfTheStep) {
  const Case c = GetParam();
  const std::string kinds = StepCollectives(c);
  // Exchanges (a gather and a scatter per bucket), then the flags' all-reduce, last.
  ASSERT_GE(kinds.size(), 3u) << kinds;
  EXPECT_EQ(kinds.back(), 'r') << kinds;
  EXPECT_EQ(kinds.substr(0, kinds.size() - 1), std::string(kinds.size() - 1, 'x')) << kinds;
  if (c.schedule != NORMUON_SCHEDULE_SEQUENTIAL) {
    EXPECT_GT(kinds.size(), 3u) << kinds;
  }
  const std::vector<std::vector<float>> reference = Reference(c.schedule);
  const int64_t n = static_cast<int64_t>(kinds.size());
  for (int64_t at = 0; at < n; ++at) {
    RunCase(c, at, at == n - 1, {static_cast<int>(at % kWorld)}, reference);
  }
  // Two ranks of three miss the last collective: the one that committed is the odd one out.
  RunCase(c, n - 1, true, {0, 2}, reference);
}

INSTANTIATE_TEST_SUITE_P(
    Schedules, OneSidedFailureTest,
    ::testing::Values(Case{NORMUON_SCHEDULE_SEQUENTIAL, false},
                      Case{NORMUON_SCHEDULE_SEQUENTIAL, true},
                      Case{NORMUON_SCHEDULE_PER_MATRIX, false},
                      Case{NORMUON_SCHEDULE_PER_MATRIX, true},
                      Case{NORMUON_SCHEDULE_BUCKETED, false},
                      Case{NORMUON_SCHEDULE_BUCKETED, true}),
    [](const ::testing::TestParamInfo<Case>& info) {
      std::string n = Name(info.param);
      for (char& ch : n) {
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return n;
    });

}  // namespace
}  // namespace normuon
