// Optimizer checkpoints through the C API (normuon_save_checkpoint / normuon_load_checkpoint) on
// the CPU backend, with N ranks as N threads of the in-process group.
//
// The acceptance test of issue 5: train at world size 4 with ragged row splits, save, load at
// world size 3, 1 and 4 (another split), continue; parameters and every state buffer must equal
// an uninterrupted single-rank run bitwise (the CPU sharded step is bitwise equal to the
// single-rank step, docs/ARCHITECTURE.md section 6, so re-sharding must not change a bit either).
// And the failures: a wrong variant, other hyper-parameters, other shapes or names, corrupt,
// truncated, missing or stale files fail on every rank with the same message and change nothing
// (state compared bitwise before and after); a save that fails on one rank fails on all and
// leaves no index.
// The column neuron axis (v per column of each row block, replicated on every rank) is saved and
// resharded the same way, with fused (row-split) matrices; every rank's v, including a rank that
// holds no rows of the matrix, is compared; it does not load into a rows-axis runtime nor the
// reverse, nor under other row splits.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/row_layouts.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"

namespace {

using ::testing::HasSubstr;

struct ParamSpec {
  std::string name;
  int64_t rows, cols;
  bool matrix;
  std::vector<int64_t> splits = {};  // row blocks (normuon_param_desc_t.row_splits); none: one
};

// Row blocks of a matrix (one when it has no row_splits).
int64_t Blocks(const ParamSpec& p) {
  return p.splits.empty() ? 1 : static_cast<int64_t>(p.splits.size());
}

// Tall, wide, two squares (one batch), a 1-row and a 1-column matrix, AdamW vectors and an
// AdamW matrix (an embedding, sharded on rows too).
std::vector<ParamSpec> Model() {
  return {{"tall", 40, 12, true}, {"wide", 12, 40, true}, {"sq.a", 16, 16, true},
          {"bias", 30, 1, false}, {"sq.b", 16, 16, true}, {"row", 1, 9, true},
          {"col", 9, 1, true},    {"emb", 21, 4, false},  {"odd", 7, 5, true}};
}

// Model() plus a fused QKV-like projection under grouped-query attention (8 query rows, 6 key,
// 6 value) and three 4-row experts: matrices with row_splits, for the column neuron axis, whose v
// has one value per column of each block.
std::vector<ParamSpec> ColumnModel() {
  std::vector<ParamSpec> m = Model();
  m.push_back({"qkv", 20, 8, true, {8, 6, 6}});
  m.push_back({"experts", 12, 6, true, {4, 4, 4}});
  return m;
}

using normuon::testing::Fsdp2;
using normuon::testing::Random;
using normuon::testing::Range;
using normuon::testing::Ragged;
using normuon::testing::Split;

std::vector<std::vector<float>> FullValues(const std::vector<ParamSpec>& specs, uint32_t seed,
                                           float scale) {
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < specs.size(); ++i) {
    out.push_back(Random(static_cast<size_t>(specs[i].rows * specs[i].cols),
                         seed + 7919u * static_cast<uint32_t>(i), scale));
  }
  return out;
}

// Everything a run leaves, as full matrices (each rank fills in its rows).
struct State {
  std::vector<std::vector<float>> param, first, second;  // second: v (matrices) or exp_avg_sq
  std::vector<int64_t> adamw_step;                       // rank 0's, per parameter (0: matrix)
  int64_t steps_taken = -1, steps_skipped = -1;
};

enum class Op { kStep, kNanStep, kSave, kLoad, kSnapshot };

struct Action {
  Op op;
  std::string dir;
};

struct Session {
  std::vector<ParamSpec> specs = Model();
  int world = 1;
  Split split = Fsdp2;
  normuon_variant_t variant = NORMUON_VARIANT_NORMUON;
  normuon_neuron_axis_t neuron_axis = NORMUON_NEURON_ROWS;
  float beta2 = 0.95f;
  normuon_schedule_t schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  const State* start = nullptr;  // parameters to start from (else the seeded initial values)
  int first_step = 0;            // gradients of global step first_step, first_step + 1, ...
  std::vector<Action> actions;
};

struct Outcome {
  std::vector<State> snapshots;
  // Per action, per rank: status and message of that call (steps and I/O ops).
  std::vector<std::vector<normuon_status_t>> codes;
  std::vector<std::vector<std::string>> messages;
  std::vector<std::string> setup_errors;
};

Outcome RunSession(const Session& s) {
  const int world = s.world;
  const std::vector<ParamSpec>& specs = s.specs;
  std::vector<normuon_comm_t> comms(world);
  EXPECT_EQ(normuon_comm_create_inprocess_group(world, 20.0, comms.data()), NORMUON_SUCCESS);
  const std::vector<std::vector<float>> init =
      s.start != nullptr ? s.start->param : FullValues(specs, 1000, 0.05f);
  std::vector<std::vector<Range>> ranges;
  for (const ParamSpec& p : specs) ranges.push_back(s.split(p.rows, world));
  int snapshot_count = 0;
  for (const Action& a : s.actions) snapshot_count += a.op == Op::kSnapshot;

  const bool column_axis = s.neuron_axis == NORMUON_NEURON_COLUMNS;
  Outcome out;
  out.snapshots.resize(snapshot_count);
  for (State& st : out.snapshots) {
    st.adamw_step.assign(specs.size(), 0);
    for (const ParamSpec& p : specs) {
      const size_t n = static_cast<size_t>(p.rows * p.cols);
      st.param.emplace_back(n, 0.0f);
      st.first.emplace_back(n, 0.0f);
      const bool has_v = p.matrix && s.variant != NORMUON_VARIANT_MUON;
      const bool v_per_element = s.variant == NORMUON_VARIANT_ADAMUON;  // one v per element
      // Column axis: one v per column of each row block, the same on every rank.
      const size_t v_count = v_per_element ? n
                             : column_axis ? static_cast<size_t>(Blocks(p) * p.cols)
                                           : static_cast<size_t>(p.rows);
      st.second.emplace_back(p.matrix ? (has_v ? v_count : 0) : n, 0.0f);
    }
  }
  // Column axis: per snapshot and parameter, whether a rank has filled in v yet (the others
  // compare theirs with it).
  std::vector<std::vector<char>> v_seen(snapshot_count, std::vector<char>(specs.size(), 0));
  out.codes.assign(s.actions.size(), std::vector<normuon_status_t>(world, NORMUON_SUCCESS));
  out.messages.assign(s.actions.size(), std::vector<std::string>(world));
  out.setup_errors.assign(world, "");
  std::mutex mu;

  auto rank_main = [&](int rank) {
    normuon_config_t c;
    normuon_config_init(&c);
    c.ns_dtype = NORMUON_NS_FP32;
    c.variant = s.variant;
    c.beta2 = s.beta2;
    c.neuron_axis = s.neuron_axis;
    c.schedule = s.schedule;
    c.bucket_bytes = 4096;  // several buckets for the bucketed schedule
    c.weight_decay = 0.01f;
    c.check_finite = 1;
    normuon_runtime_t rt = 0;
    if (normuon_create(&c, comms[rank], &rt) != NORMUON_SUCCESS) {
      out.setup_errors[rank] = normuon_last_error(0);
      return;
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
      d.cols = cols;
      d.row_begin = r.begin;
      d.row_count = r.count;
      d.param = r.count > 0 ? p[i].data() : nullptr;
      d.grad = r.count > 0 ? g[i].data() : nullptr;
      d.row_splits = specs[i].splits.empty() ? nullptr : specs[i].splits.data();
      d.num_row_splits = static_cast<int32_t>(specs[i].splits.size());
      d.group = specs[i].matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
      const normuon_status_t st = specs[i].matrix ? normuon_register_matrix(rt, &d, &ids[i])
                                                  : normuon_register_adamw(rt, &d, &ids[i]);
      if (st != NORMUON_SUCCESS) {
        out.setup_errors[rank] = normuon_last_error(rt);
        normuon_destroy(rt);
        return;
      }
    }
    if (normuon_finalize(rt) != NORMUON_SUCCESS) {
      out.setup_errors[rank] = normuon_last_error(rt);
      normuon_destroy(rt);
      return;
    }
    int step = s.first_step, snapshot = 0;
    for (size_t k = 0; k < s.actions.size(); ++k) {
      const Action& a = s.actions[k];
      normuon_status_t st = NORMUON_SUCCESS;
      switch (a.op) {
        case Op::kStep:
        case Op::kNanStep: {
          const auto grads = FullValues(specs, 2000 + 100 * static_cast<uint32_t>(step++), 1.0f);
          for (size_t i = 0; i < specs.size(); ++i) {
            const Range r = ranges[i][rank];
            std::copy(grads[i].begin() + r.begin * specs[i].cols,
                      grads[i].begin() + (r.begin + r.count) * specs[i].cols, g[i].begin());
          }
          if (a.op == Op::kNanStep && !g[3].empty()) {
            g[3][0] = std::numeric_limits<float>::quiet_NaN();
          }
          st = normuon_step(rt, 0.02f, 0.01f, nullptr);
          break;
        }
        case Op::kSave:
          st = normuon_save_checkpoint(rt, a.dir.c_str());
          break;
        case Op::kLoad:
          st = normuon_load_checkpoint(rt, a.dir.c_str());
          break;
        case Op::kSnapshot: {
          const int snapshot_index = snapshot++;
          State& snap = out.snapshots[snapshot_index];
          normuon_step_info_t info;
          normuon_step_info_init(&info);
          EXPECT_EQ(normuon_step_result(rt, &info), NORMUON_SUCCESS);
          std::lock_guard<std::mutex> lock(mu);
          if (rank == 0) {
            snap.steps_taken = info.steps_taken;
            snap.steps_skipped = info.steps_skipped;
          }
          for (size_t i = 0; i < specs.size(); ++i) {
            const Range r = ranges[i][rank];
            const int64_t cols = specs[i].cols;
            std::copy(p[i].begin(), p[i].end(), snap.param[i].begin() + r.begin * cols);
            if (!specs[i].matrix && rank == 0) {
              EXPECT_EQ(normuon_get_state(rt, ids[i], NORMUON_STATE_STEP, &snap.adamw_step[i], 8),
                        NORMUON_SUCCESS);
            }
            if (column_axis && specs[i].matrix && !snap.second[i].empty()) {
              // Every rank keeps all of v, rows here or not: each rank's copy must be the same.
              std::vector<float> v(snap.second[i].size());
              EXPECT_EQ(normuon_get_state(rt, ids[i], NORMUON_STATE_SECOND_MOMENT, v.data(),
                                          v.size() * 4),
                        NORMUON_SUCCESS);
              char& seen = v_seen[snapshot_index][i];
              if (!seen) {
                snap.second[i] = v;
                seen = 1;
              } else if (std::memcmp(v.data(), snap.second[i].data(), v.size() * 4) != 0) {
                ADD_FAILURE() << "rank " << rank << " (" << r.count << " rows) holds another v "
                              << "of '" << specs[i].name << "' than a rank before it";
              }
            }
            if (r.count == 0) continue;
            const uint64_t bytes = static_cast<uint64_t>(r.count * cols * 4);
            if (specs[i].matrix) {
              EXPECT_EQ(normuon_get_state(rt, ids[i], NORMUON_STATE_MOMENTUM,
                                          snap.first[i].data() + r.begin * cols, bytes),
                        NORMUON_SUCCESS);
              if (!snap.second[i].empty() && !column_axis) {
                const bool per_element = s.variant == NORMUON_VARIANT_ADAMUON;
                EXPECT_EQ(normuon_get_state(rt, ids[i], NORMUON_STATE_SECOND_MOMENT,
                                            snap.second[i].data() +
                                                (per_element ? r.begin * cols : r.begin),
                                            per_element ? bytes : r.count * 4),
                          NORMUON_SUCCESS);
              }
            } else {
              EXPECT_EQ(normuon_get_state(rt, ids[i], NORMUON_STATE_EXP_AVG,
                                          snap.first[i].data() + r.begin * cols, bytes),
                        NORMUON_SUCCESS);
              EXPECT_EQ(normuon_get_state(rt, ids[i], NORMUON_STATE_EXP_AVG_SQ,
                                          snap.second[i].data() + r.begin * cols, bytes),
                        NORMUON_SUCCESS);
            }
          }
          break;
        }
      }
      out.codes[k][rank] = st;
      if (st != NORMUON_SUCCESS) out.messages[k][rank] = normuon_last_error(rt);
    }
    normuon_destroy(rt);
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(rank_main, r);
  for (std::thread& t : threads) t.join();
  for (normuon_comm_t c : comms) normuon_comm_destroy(c);
  return out;
}

::testing::AssertionResult BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "sizes " << a.size() << " vs " << b.size();
  }
  if (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0) {
    return ::testing::AssertionSuccess();
  }
  size_t differ = 0;
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], 4) != 0) ++differ;
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
  }
  return ::testing::AssertionFailure() << differ << " of " << a.size()
                                       << " values differ, max |difference| " << diff;
}

void ExpectSameState(const State& got, const State& want, const std::vector<ParamSpec>& specs,
                     const std::string& what) {
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_TRUE(BitwiseEqual(got.param[i], want.param[i])) << what << ": param " << specs[i].name;
    EXPECT_TRUE(BitwiseEqual(got.first[i], want.first[i])) << what << ": state 1 " << specs[i].name;
    EXPECT_TRUE(BitwiseEqual(got.second[i], want.second[i]))
        << what << ": state 2 " << specs[i].name;
    EXPECT_EQ(got.adamw_step[i], want.adamw_step[i]) << what << ": step " << specs[i].name;
  }
  EXPECT_EQ(got.steps_taken, want.steps_taken) << what;
  EXPECT_EQ(got.steps_skipped, want.steps_skipped) << what;
}

void ExpectNoErrors(const Outcome& o, const std::string& what) {
  for (size_t r = 0; r < o.setup_errors.size(); ++r) {
    ASSERT_EQ(o.setup_errors[r], "") << what << " rank " << r;
  }
  for (size_t k = 0; k < o.codes.size(); ++k) {
    for (size_t r = 0; r < o.codes[k].size(); ++r) {
      ASSERT_EQ(o.codes[k][r], NORMUON_SUCCESS)
          << what << " action " << k << " rank " << r << ": " << o.messages[k][r];
    }
  }
}

// Action k failed on every rank with one message (returned) and one status.
std::string FailedEverywhere(const Outcome& o, size_t k, normuon_status_t code) {
  for (size_t r = 0; r < o.codes[k].size(); ++r) {
    EXPECT_EQ(o.codes[k][r], code) << "rank " << r << ": " << o.messages[k][r];
    EXPECT_EQ(o.messages[k][r], o.messages[k][0]) << "rank " << r;
  }
  return o.messages[k][0];
}

std::string TempDir(const std::string& tag) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ = std::string(base != nullptr ? base : "/tmp") + "/" + tag + "XXXXXX";
  EXPECT_NE(mkdtemp(templ.data()), nullptr);
  return templ;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// A checkpoint directory copied, so a test can damage its copy.
std::string CopyCheckpoint(const std::string& from, int world, const std::string& tag) {
  const std::string to = TempDir(tag);
  WriteBytes(to + "/index.nmck", ReadBytes(from + "/index.nmck"));
  for (int r = 0; r < world; ++r) {
    const std::string name =
        "/rank-" + std::to_string(r) + "-of-" + std::to_string(world) + ".nmck";
    WriteBytes(to + name, ReadBytes(from + name));
  }
  return to;
}

constexpr int kBefore = 3;  // steps before the save
constexpr int kAfter = 3;   // steps after the load

std::vector<Action> Steps(int n) { return std::vector<Action>(n, Action{Op::kStep, ""}); }

std::vector<Action> Concat(std::vector<std::vector<Action>> parts) {
  std::vector<Action> out;
  for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// The uninterrupted single-rank run: snapshots after kBefore and after kBefore + kAfter steps.
const Outcome& Reference(normuon_variant_t variant) {
  static Outcome* cached[4] = {nullptr, nullptr, nullptr, nullptr};  // per variant
  if (cached[variant] == nullptr) {
    Session s;
    s.variant = variant;
    s.actions = Concat({Steps(kBefore), {{Op::kSnapshot, ""}}, Steps(kAfter),
                        {{Op::kSnapshot, ""}}});
    cached[variant] = new Outcome(RunSession(s));
  }
  return *cached[variant];
}

// A checkpoint saved at world size 4 (ragged split) after kBefore steps; and that run's state.
struct Saved {
  std::string dir;
  State state;
};

Saved SaveAtWorld4(normuon_variant_t variant, const std::string& tag) {
  Session s;
  s.world = 4;
  s.split = Ragged(0);
  s.variant = variant;
  const std::string dir = TempDir(tag);
  s.actions = Concat({Steps(kBefore), {{Op::kSave, dir}, {Op::kSnapshot, ""}}});
  const Outcome o = RunSession(s);
  ExpectNoErrors(o, "save at world 4");
  return {dir, o.snapshots.at(0)};
}

const Saved& SavedNorMuon() {
  static Saved* saved = new Saved(SaveAtWorld4(NORMUON_VARIANT_NORMUON, "ck4_"));
  return *saved;
}

TEST(CheckpointTest, SaveWritesOneFilePerRankAndTheIndexAtomically) {
  const Saved& saved = SavedNorMuon();
  EXPECT_TRUE(Exists(saved.dir + "/index.nmck"));
  for (int r = 0; r < 4; ++r) {
    EXPECT_TRUE(Exists(saved.dir + "/rank-" + std::to_string(r) + "-of-4.nmck")) << r;
    EXPECT_FALSE(Exists(saved.dir + "/rank-" + std::to_string(r) + "-of-4.nmck.tmp")) << r;
  }
  EXPECT_FALSE(Exists(saved.dir + "/index.nmck.tmp"));
  EXPECT_EQ(ReadBytes(saved.dir + "/index.nmck").substr(0, 8), "NMCKINDX");
  // The sharded run is the single-rank run (a premise of the equality checks below).
  ExpectSameState(saved.state, Reference(NORMUON_VARIANT_NORMUON).snapshots[0],
                  Model(), "world 4 before the save");
}

// The issue's acceptance test: load at world sizes 3 and 1, and at 4 with another split; the
// loaded state equals the saved one and training continues exactly as if never interrupted.
TEST(CheckpointTest, LoadAtAnotherWorldSizeOrSplitContinuesBitwiseAsTheUninterruptedRun) {
  const Saved& saved = SavedNorMuon();
  const Outcome& ref = Reference(NORMUON_VARIANT_NORMUON);
  struct Target {
    int world;
    Split split;
    const char* what;
    normuon_schedule_t schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  };
  const Target targets[] = {{3, Ragged(11), "world 3 ragged"},
                            {3, Fsdp2, "world 3 fsdp2"},
                            {1, Fsdp2, "world 1"},
                            {4, Fsdp2, "world 4 fsdp2"},
                            {4, Ragged(5), "world 4 other ragged split"},
                            {5, Ragged(3), "world 5 ragged"},
                            {3, Ragged(7), "world 3 bucketed schedule", NORMUON_SCHEDULE_BUCKETED}};
  for (const Target& t : targets) {
    Session s;
    s.world = t.world;
    s.split = t.split;
    s.schedule = t.schedule;
    s.start = &saved.state;  // parameters are the caller's, not part of the checkpoint
    s.first_step = kBefore;
    s.actions = Concat({{{Op::kLoad, saved.dir}, {Op::kSnapshot, ""}}, Steps(kAfter),
                        {{Op::kSnapshot, ""}}});
    const Outcome o = RunSession(s);
    ExpectNoErrors(o, t.what);
    ExpectSameState(o.snapshots[0], ref.snapshots[0], Model(), std::string(t.what) + " loaded");
    ExpectSameState(o.snapshots[1], ref.snapshots[1], Model(),
                    std::string(t.what) + " after continuing");
  }
}

TEST(CheckpointTest, MuonCheckpointsHaveNoSecondMomentAndReshardToo) {
  const Saved saved = SaveAtWorld4(NORMUON_VARIANT_MUON, "muon_");
  const Outcome& ref = Reference(NORMUON_VARIANT_MUON);
  ExpectSameState(saved.state, ref.snapshots[0], Model(), "muon world 4");
  Session s;
  s.world = 2;
  s.split = Ragged(2);
  s.variant = NORMUON_VARIANT_MUON;
  s.start = &saved.state;
  s.first_step = kBefore;
  s.actions = Concat({{{Op::kLoad, saved.dir}}, Steps(kAfter), {{Op::kSnapshot, ""}}});
  const Outcome o = RunSession(s);
  ExpectNoErrors(o, "muon world 2");
  ExpectSameState(o.snapshots[0], ref.snapshots[1], Model(), "muon after continuing");
}

TEST(CheckpointTest, AdaMuonPerElementSecondMomentReshardsToo) {
  const Saved saved = SaveAtWorld4(NORMUON_VARIANT_ADAMUON, "adamuon_");
  const Outcome& ref = Reference(NORMUON_VARIANT_ADAMUON);
  ExpectSameState(saved.state, ref.snapshots[0], Model(), "adamuon world 4");
  for (int world : {3, 1}) {
    Session s;
    s.world = world;
    s.split = Ragged(world);
    s.variant = NORMUON_VARIANT_ADAMUON;
    s.start = &saved.state;
    s.first_step = kBefore;
    s.actions = Concat({{{Op::kLoad, saved.dir}}, Steps(kAfter), {{Op::kSnapshot, ""}}});
    const Outcome o = RunSession(s);
    ExpectNoErrors(o, "adamuon world " + std::to_string(world));
    ExpectSameState(o.snapshots[0], ref.snapshots[1], Model(), "adamuon after continuing");
  }
}

// ---- Neuron axis = columns ----

// The uninterrupted single-rank run of ColumnModel() with the column neuron axis: snapshots
// after kBefore and kBefore + kAfter steps.
const Outcome& ColumnReference() {
  static const Outcome* cached = [] {
    Session s;
    s.specs = ColumnModel();
    s.neuron_axis = NORMUON_NEURON_COLUMNS;
    s.actions = Concat({Steps(kBefore), {{Op::kSnapshot, ""}}, Steps(kAfter),
                        {{Op::kSnapshot, ""}}});
    return new Outcome(RunSession(s));
  }();
  return *cached;
}

// A column-axis checkpoint of ColumnModel() saved at world size 4 with `split` after kBefore
// steps.
Saved SaveColumnsAtWorld4(Split split, const std::string& tag) {
  Session s;
  s.specs = ColumnModel();
  s.neuron_axis = NORMUON_NEURON_COLUMNS;
  s.world = 4;
  s.split = split;
  const std::string dir = TempDir(tag);
  s.actions = Concat({Steps(kBefore), {{Op::kSave, dir}, {Op::kSnapshot, ""}}});
  const Outcome o = RunSession(s);
  ExpectNoErrors(o, "column-axis save at world 4");
  return {dir, o.snapshots.at(0)};
}

const Saved& SavedColumns() {
  static Saved* saved = new Saved(SaveColumnsAtWorld4(Ragged(0), "cols4_"));
  return *saved;
}

// matrix_second_moment of a saved index: the CONF payload starts at byte 36 (header 20, section
// header 16), after save_id, world_size, variant, ns_dtype, ns_steps, nesterov and ns_eps.
uint32_t SavedSecondMomentLayout(const std::string& dir) {
  const std::string b = ReadBytes(dir + "/index.nmck");
  EXPECT_GE(b.size(), 72u);
  if (b.size() < 72) return ~0u;
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[68 + i]);
  return v;
}

// Saved at world 4 (FSDP2's split, where the last ranks hold no rows of the small matrices, and a
// ragged one), loaded at 3, 1, 5 and 4 with another split: the loaded state, every rank's
// replicated v included, and the continued run equal the uninterrupted run bitwise.
TEST(CheckpointTest, ColumnNeuronAxisCheckpointsReshardAndContinueBitwise) {
  const Outcome& ref = ColumnReference();
  ExpectNoErrors(ref, "column reference");
  const std::vector<ParamSpec> specs = ColumnModel();
  struct Source {
    Saved saved;
    const char* what;
  };
  const Source sources[] = {{SavedColumns(), "saved ragged"},
                            {SaveColumnsAtWorld4(Fsdp2, "cols4fsdp_"), "saved fsdp2"}};
  struct Target {
    int world;
    Split split;
    const char* what;
    normuon_schedule_t schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  };
  const Target targets[] = {{3, Ragged(11), "world 3 ragged"},
                            {3, Fsdp2, "world 3 fsdp2"},
                            {1, Fsdp2, "world 1"},
                            {5, Ragged(3), "world 5 ragged"},
                            {5, Fsdp2, "world 5 fsdp2"},
                            {4, Ragged(5), "world 4 other ragged split"},
                            {3, Ragged(7), "world 3 bucketed schedule", NORMUON_SCHEDULE_BUCKETED}};
  for (const Source& src : sources) {
    // The sharded run is the single-rank run, and the files say how v is kept.
    ExpectSameState(src.saved.state, ref.snapshots[0], specs, std::string(src.what) + " world 4");
    EXPECT_EQ(SavedSecondMomentLayout(src.saved.dir), 3u) << src.what;
    for (const Target& t : targets) {
      const std::string what = std::string(src.what) + ", " + t.what;
      Session s;
      s.specs = specs;
      s.neuron_axis = NORMUON_NEURON_COLUMNS;
      s.world = t.world;
      s.split = t.split;
      s.schedule = t.schedule;
      s.start = &src.saved.state;
      s.first_step = kBefore;
      s.actions = Concat({{{Op::kLoad, src.saved.dir}, {Op::kSnapshot, ""}}, Steps(kAfter),
                          {{Op::kSnapshot, ""}}});
      const Outcome o = RunSession(s);
      ExpectNoErrors(o, what);
      ExpectSameState(o.snapshots[0], ref.snapshots[0], specs, what + " loaded");
      ExpectSameState(o.snapshots[1], ref.snapshots[1], specs, what + " after continuing");
    }
  }
}

TEST(CheckpointTest, SkippedStepCountsAreRestored) {
  Session a;
  a.world = 3;
  a.split = Ragged(1);
  const std::string dir = TempDir("skip_");
  a.actions = {{Op::kStep, ""}, {Op::kNanStep, ""}, {Op::kStep, ""}, {Op::kSave, dir}};
  const Outcome saved = RunSession(a);
  EXPECT_EQ(saved.codes[1][0], NORMUON_ERROR_NONFINITE);
  EXPECT_EQ(saved.codes[3][0], NORMUON_SUCCESS) << saved.messages[3][0];
  Session b;
  b.world = 2;
  b.actions = {{Op::kLoad, dir}, {Op::kSnapshot, ""}};
  const Outcome o = RunSession(b);
  ExpectNoErrors(o, "load");
  EXPECT_EQ(o.snapshots[0].steps_taken, 2);
  EXPECT_EQ(o.snapshots[0].steps_skipped, 1);
  EXPECT_EQ(o.snapshots[0].adamw_step[3], 2);  // 'bias': the skipped step did not count
}

// A session that steps twice (its own state), snapshots, tries to load `dir`, snapshots again,
// and steps once more (the runtime and its communicator stay usable after a refused load).
struct RefusedLoad {
  Outcome outcome;
  std::string message;
};

RefusedLoad LoadMustFail(Session s, const std::string& dir, normuon_status_t code) {
  s.actions = Concat({Steps(2), {{Op::kSnapshot, ""}, {Op::kLoad, dir}, {Op::kSnapshot, ""}},
                      Steps(1)});
  RefusedLoad r{RunSession(s), ""};
  for (const std::string& e : r.outcome.setup_errors) EXPECT_EQ(e, "");
  r.message = FailedEverywhere(r.outcome, 3, code);
  EXPECT_THAT(r.message, HasSubstr("checkpoint load from '" + dir + "' failed on rank"));
  EXPECT_THAT(r.message, HasSubstr("nothing was changed on any rank"));
  ExpectSameState(r.outcome.snapshots[1], r.outcome.snapshots[0], s.specs, "refused load");
  for (size_t k = 5; k < r.outcome.codes.size(); ++k) {
    for (normuon_status_t c : r.outcome.codes[k]) EXPECT_EQ(c, NORMUON_SUCCESS);
  }
  return r;
}

Session World3() {
  Session s;
  s.world = 3;
  s.split = Ragged(11);
  return s;
}

TEST(CheckpointTest, AWrongVariantFailsOnEveryRankAndChangesNothing) {
  Session s = World3();
  s.variant = NORMUON_VARIANT_MUON;
  const RefusedLoad r = LoadMustFail(s, SavedNorMuon().dir, NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(r.message, HasSubstr("was saved with variant 0 (NORMUON), this runtime runs "
                                   "variant 2 (MUON)"));
  EXPECT_THAT(r.message, HasSubstr("index.nmck"));
  s.variant = NORMUON_VARIANT_NORMUON_PAPER;
  EXPECT_THAT(LoadMustFail(s, SavedNorMuon().dir, NORMUON_ERROR_INVALID_ARGUMENT).message,
              HasSubstr("variant 1 (NORMUON_PAPER)"));
}

TEST(CheckpointTest, OtherHyperParametersShapesOrNamesFailOnEveryRank) {
  const std::string dir = SavedNorMuon().dir;
  Session s = World3();
  s.beta2 = 0.99f;
  EXPECT_THAT(LoadMustFail(s, dir, NORMUON_ERROR_INVALID_ARGUMENT).message,
              HasSubstr("group 0 was saved as kind 0, beta1 0.95, beta2 0.95"));
  s = World3();
  s.specs[7].cols = 5;  // 'emb'
  EXPECT_THAT(LoadMustFail(s, dir, NORMUON_ERROR_INVALID_ARGUMENT).message,
              HasSubstr("parameter 7 was saved as 'emb' (adamw, 21 x 4, group 1), this runtime "
                        "registered 'emb' (adamw, 21 x 5, group 1)"));
  s = World3();
  s.specs[8].name = "odd2";
  EXPECT_THAT(LoadMustFail(s, dir, NORMUON_ERROR_INVALID_ARGUMENT).message,
              HasSubstr("parameter 8 was saved as 'odd'"));
  s = World3();
  s.specs[6].matrix = false;  // 'col' registered for AdamW
  EXPECT_THAT(LoadMustFail(s, dir, NORMUON_ERROR_INVALID_ARGUMENT).message,
              HasSubstr("parameter 6 was saved as 'col' (matrix"));
  s = World3();
  s.specs.pop_back();
  EXPECT_THAT(LoadMustFail(s, dir, NORMUON_ERROR_INVALID_ARGUMENT).message,
              HasSubstr("it has 9 parameters, this runtime registered 8"));
}

// A rows-axis checkpoint does not load into a columns-axis runtime, nor the reverse: the index's
// matrix_second_moment names both layouts.
TEST(CheckpointTest, RowAndColumnAxisCheckpointsDoNotLoadIntoEachOther) {
  Session s = World3();
  s.neuron_axis = NORMUON_NEURON_COLUMNS;
  RefusedLoad r = LoadMustFail(s, SavedNorMuon().dir, NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(r.message, HasSubstr(SavedNorMuon().dir + "/index.nmck' does not match this "
                                   "runtime: it was saved with matrix_second_moment = 1 (one v "
                                   "per row: neuron axis = rows), this runtime (variant NORMUON, "
                                   "config.neuron_axis = COLUMNS) keeps 3 (one v per column of "
                                   "each row block"));
  s = World3();
  s.specs = ColumnModel();
  r = LoadMustFail(s, SavedColumns().dir, NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(r.message, HasSubstr("it was saved with matrix_second_moment = 3 (one v per column "
                                   "of each row block, on every rank: neuron axis = columns), "
                                   "this runtime (variant NORMUON, config.neuron_axis = ROWS) "
                                   "keeps 1 (one v per row"));
  // At world 1 too (the single rank reads every file).
  Session one;
  one.specs = ColumnModel();
  EXPECT_THAT(LoadMustFail(one, SavedColumns().dir, NORMUON_ERROR_INVALID_ARGUMENT).message,
              HasSubstr("matrix_second_moment = 3"));
}

// The column axis keeps one v per column of each row block: a checkpoint saved with other
// row_splits (another number of blocks) is refused on every rank, naming the file, the parameter
// and both counts, and nothing changes (every rank's v included).
TEST(CheckpointTest, AColumnAxisCheckpointUnderOtherRowSplitsIsRefusedEverywhere) {
  const std::string dir = SavedColumns().dir;
  for (int world : {3, 1, 5}) {
    Session s;
    s.world = world;
    s.split = Ragged(static_cast<uint32_t>(world) + 20);
    s.specs = ColumnModel();
    s.neuron_axis = NORMUON_NEURON_COLUMNS;
    s.specs[9].splits = {10, 10};  // 'qkv' in two blocks, saved in three
    RefusedLoad r = LoadMustFail(s, dir, NORMUON_ERROR_INVALID_ARGUMENT);
    EXPECT_THAT(r.message, HasSubstr("checkpoint file '" + dir + "/rank-"));
    EXPECT_THAT(r.message, HasSubstr("' holds 24 values of v for parameter 9 'qkv' (3 row blocks "
                                     "x 8 cols); this runtime keeps 16 (2 row blocks x 8 cols): "
                                     "the checkpoint was saved with a different row split"))
        << "world " << world;
    s.specs[9].splits.clear();  // one block
    r = LoadMustFail(s, dir, NORMUON_ERROR_INVALID_ARGUMENT);
    EXPECT_THAT(r.message, HasSubstr("holds 24 values of v for parameter 9 'qkv' (3 row blocks x "
                                     "8 cols); this runtime keeps 8 (1 row block x 8 cols)"));
    s.specs[9].splits = {8, 6, 6};
    s.specs[10].splits = {2, 2, 2, 2, 2, 2};  // 'experts' in six blocks, saved in three
    r = LoadMustFail(s, dir, NORMUON_ERROR_INVALID_ARGUMENT);
    EXPECT_THAT(r.message, HasSubstr("holds 18 values of v for parameter 10 'experts' (3 row "
                                     "blocks x 6 cols); this runtime keeps 36 (6 row blocks x 6 "
                                     "cols)"));
  }
}

TEST(CheckpointTest, ACorruptRankFileFailsOnEveryRankEvenThoseThatDoNotReadIt) {
  const std::string dir = CopyCheckpoint(SavedNorMuon().dir, 4, "corrupt_");
  const std::string victim = dir + "/rank-2-of-4.nmck";
  std::string bytes = ReadBytes(victim);
  ASSERT_GT(bytes.size(), 200u);
  bytes[bytes.size() / 2] ^= 0x10;
  WriteBytes(victim, bytes);
  const RefusedLoad r = LoadMustFail(World3(), dir, NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(r.message, HasSubstr("checkpoint file '" + victim + "', section #"));
  EXPECT_THAT(r.message, HasSubstr("checksum mismatch"));
  // At world 1 the single rank reads every file.
  Session one;
  EXPECT_THAT(LoadMustFail(one, dir, NORMUON_ERROR_INVALID_ARGUMENT).message,
              HasSubstr("checksum mismatch"));
}

TEST(CheckpointTest, TruncatedMissingAndStaleFilesFailOnEveryRank) {
  const std::string good = SavedNorMuon().dir;
  {
    const std::string dir = CopyCheckpoint(good, 4, "trunc_");
    const std::string victim = dir + "/rank-1-of-4.nmck";
    const std::string bytes = ReadBytes(victim);
    WriteBytes(victim, bytes.substr(0, bytes.size() - 7));
    const std::string msg = LoadMustFail(World3(), dir, NORMUON_ERROR_INVALID_ARGUMENT).message;
    EXPECT_THAT(msg, HasSubstr("checkpoint file '" + victim + "', section #"));
    EXPECT_THAT(msg, HasSubstr("the file is truncated"));
  }
  {
    const std::string dir = CopyCheckpoint(good, 4, "noindex_");
    ASSERT_EQ(std::remove((dir + "/index.nmck").c_str()), 0);
    EXPECT_THAT(LoadMustFail(World3(), dir, NORMUON_ERROR_INVALID_ARGUMENT).message,
                HasSubstr("the checkpoint index '" + dir + "/index.nmck' does not exist"));
  }
  {
    const std::string dir = CopyCheckpoint(good, 4, "norank_");
    ASSERT_EQ(std::remove((dir + "/rank-3-of-4.nmck").c_str()), 0);
    EXPECT_THAT(LoadMustFail(World3(), dir, NORMUON_ERROR_INVALID_ARGUMENT).message,
                HasSubstr("the checkpoint rank file '" + dir + "/rank-3-of-4.nmck' does not "
                          "exist"));
  }
  {
    // A rank file of another save (same world size and split, one more step) in place of ours.
    const std::string dir = CopyCheckpoint(good, 4, "stale_");
    Session s;
    s.world = 4;
    s.split = Ragged(0);
    const std::string other = TempDir("other_");
    s.actions = Concat({Steps(kBefore + 1), {{Op::kSave, other}}});
    ExpectNoErrors(RunSession(s), "second save");
    WriteBytes(dir + "/rank-0-of-4.nmck", ReadBytes(other + "/rank-0-of-4.nmck"));
    EXPECT_THAT(LoadMustFail(World3(), dir, NORMUON_ERROR_INVALID_ARGUMENT).message,
                HasSubstr("rank-0-of-4.nmck' belongs to another save"));
  }
  {
    // A corrupt index.
    const std::string dir = CopyCheckpoint(good, 4, "badindex_");
    std::string bytes = ReadBytes(dir + "/index.nmck");
    bytes[40] ^= 1;  // inside the CONF payload
    WriteBytes(dir + "/index.nmck", bytes);
    EXPECT_THAT(LoadMustFail(World3(), dir, NORMUON_ERROR_INVALID_ARGUMENT).message,
                HasSubstr("index.nmck', section #0 'CONF' (at byte 20): checksum mismatch"));
  }
}

TEST(CheckpointTest, ASaveThatFailsOnOneRankFailsOnEveryRankAndWritesNoIndex) {
  const std::string dir = CopyCheckpoint(SavedNorMuon().dir, 4, "savefail_");
  // Rank 2's file cannot be renamed into place: a directory has its name.
  ASSERT_EQ(std::remove((dir + "/rank-2-of-4.nmck").c_str()), 0);
  ASSERT_EQ(::mkdir((dir + "/rank-2-of-4.nmck").c_str(), 0755), 0);
  Session s;
  s.world = 4;
  s.split = Fsdp2;
  s.actions = Concat({Steps(1), {{Op::kSave, dir}}});
  const Outcome o = RunSession(s);
  const std::string msg = FailedEverywhere(o, 1, NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(msg, HasSubstr("checkpoint save to '" + dir + "' failed on rank 2: cannot rename"));
  EXPECT_THAT(msg, HasSubstr("no index was written"));
  // The old index was removed first, so the mix of old and new rank files is not loadable.
  EXPECT_FALSE(Exists(dir + "/index.nmck"));
  EXPECT_THAT(LoadMustFail(World3(), dir, NORMUON_ERROR_INVALID_ARGUMENT).message,
              HasSubstr("index.nmck' does not exist"));

  Session t;
  t.world = 2;
  t.actions = {{Op::kSave, dir + "/no/such/dir"}};
  const Outcome missing = RunSession(t);
  EXPECT_THAT(FailedEverywhere(missing, 0, NORMUON_ERROR_INVALID_ARGUMENT),
              HasSubstr("failed on rank 0 (and on 1 other rank): checkpoint directory '" + dir +
                        "/no/such/dir': No such file or directory"));
}

TEST(CheckpointTest, SingleRankWithoutACommunicatorAndBeforeFinalize) {
  normuon_config_t c;
  normuon_config_init(&c);
  normuon_runtime_t rt = 0;
  ASSERT_EQ(normuon_create(&c, 0, &rt), NORMUON_SUCCESS);
  std::vector<float> w(6 * 4, 0.5f), g(6 * 4, 0.25f), b(3, 1.0f), gb(3, -1.0f);
  normuon_param_desc_t d;
  normuon_param_desc_init(&d);
  d.name = "w";
  d.rows = 6;
  d.cols = 4;
  d.row_count = 6;
  d.param = w.data();
  d.grad = g.data();
  d.group = NORMUON_GROUP_MATRIX_DEFAULT;
  normuon_param_t pw, pb;
  ASSERT_EQ(normuon_register_matrix(rt, &d, &pw), NORMUON_SUCCESS);
  d.name = "b";
  d.rows = 3;
  d.cols = 1;
  d.row_count = 3;
  d.param = b.data();
  d.grad = gb.data();
  d.group = NORMUON_GROUP_ADAMW_DEFAULT;
  ASSERT_EQ(normuon_register_adamw(rt, &d, &pb), NORMUON_SUCCESS);
  const std::string dir = TempDir("single_");
  EXPECT_EQ(normuon_save_checkpoint(rt, dir.c_str()), NORMUON_ERROR_INVALID_STATE);
  EXPECT_EQ(normuon_load_checkpoint(rt, dir.c_str()), NORMUON_ERROR_INVALID_STATE);
  EXPECT_EQ(normuon_save_checkpoint(rt, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  ASSERT_EQ(normuon_finalize(rt), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_step(rt, 0.02f, 0.0f, nullptr), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_save_checkpoint(rt, dir.c_str()), NORMUON_SUCCESS) << normuon_last_error(rt);
  std::vector<float> m1(24), v1(6);
  ASSERT_EQ(normuon_get_state(rt, pw, NORMUON_STATE_MOMENTUM, m1.data(), 96), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_get_state(rt, pw, NORMUON_STATE_SECOND_MOMENT, v1.data(), 24), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_step(rt, 0.02f, 0.0f, nullptr), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_load_checkpoint(rt, dir.c_str()), NORMUON_SUCCESS) << normuon_last_error(rt);
  std::vector<float> m2(24), v2(6);
  int64_t step = -1;
  ASSERT_EQ(normuon_get_state(rt, pw, NORMUON_STATE_MOMENTUM, m2.data(), 96), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_get_state(rt, pw, NORMUON_STATE_SECOND_MOMENT, v2.data(), 24), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_get_state(rt, pb, NORMUON_STATE_STEP, &step, 8), NORMUON_SUCCESS);
  EXPECT_TRUE(BitwiseEqual(m2, m1));
  EXPECT_TRUE(BitwiseEqual(v2, v1));
  EXPECT_EQ(step, 1);
  normuon_step_info_t info;
  normuon_step_info_init(&info);
  ASSERT_EQ(normuon_step_result(rt, &info), NORMUON_SUCCESS);
  EXPECT_EQ(info.steps_taken, 1);
  EXPECT_EQ(info.last_skipped, 0);
  EXPECT_EQ(normuon_load_checkpoint(rt, (dir + "/nope").c_str()), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_THAT(std::string(normuon_last_error(rt)), HasSubstr("does not exist"));
  // Inside a step begun by grad_ready: refused (the pipeline may be using the state).
  ASSERT_EQ(normuon_grad_ready(rt, &pw, 1, nullptr), NORMUON_SUCCESS);
  EXPECT_EQ(normuon_save_checkpoint(rt, dir.c_str()), NORMUON_ERROR_INVALID_STATE);
  EXPECT_THAT(std::string(normuon_last_error(rt)), HasSubstr("inside a step"));
  EXPECT_EQ(normuon_load_checkpoint(rt, dir.c_str()), NORMUON_ERROR_INVALID_STATE);
  ASSERT_EQ(normuon_step(rt, 0.02f, 0.0f, nullptr), NORMUON_SUCCESS);
  EXPECT_EQ(normuon_load_checkpoint(rt, dir.c_str()), NORMUON_SUCCESS) << normuon_last_error(rt);
  normuon_destroy(rt);
}

}  // namespace
