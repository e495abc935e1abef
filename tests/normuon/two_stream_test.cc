// The runtime's asynchronous code paths on CPU: the two-stream pipelining of a sharded step
// (runtime/runtime.cc: the pipeline's stage hand-offs, the fixed mark slots of two threads, the
// final join, the device-side step flags, the profile's exposed communication from the step
// stream's waits) with a stand-in backend that says it is asynchronous (IsSynchronous() false)
// but runs the CPU backend's arithmetic on host memory. The hand-offs are no-ops here (each CPU
// call has finished when it returns, and the pipeline's threads order the stages), marks are
// host clock readings. So this checks the runtime's bookkeeping and its results, under the
// sanitizers too; the CUDA streams and events themselves are checked on a GPU
// (tests/cuda/sharded_cuda_test.cc).
//
// Every run is compared with the single-rank CPU step, bitwise (the CPU path is exact).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/inprocess_group.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "runtime/runtime.h"
#include "tests/testing/forwarding_backend.h"

namespace normuon {
namespace {

// The CPU backend behind an asynchronous face: every call forwards; marks are host clock
// readings; the communication stream is a token and the hand-offs check their slots only.
class AsyncCpuShim final : public testing::ForwardingBackend {
 public:
  explicit AsyncCpuShim(std::atomic<int>* handoffs)
      : ForwardingBackend(MakeCpuBackend()), handoffs_(handoffs) {}

  const char* name() const override { return "async-cpu-shim"; }
  bool IsSynchronous() const override { return false; }

  absl::Status PrepareMarks(int count) override {
    if (count > static_cast<int>(marks_.size())) marks_ = std::vector<Clock::time_point>(count);
    return absl::OkStatus();
  }
  absl::Status Mark(int slot) override { return Record(slot); }
  absl::Status MarkComm(int slot) override { return Record(slot); }
  absl::StatusOr<double> MarkElapsedMs(int from, int to) override {
    const int n = static_cast<int>(marks_.size());
    if (from < 0 || to < 0 || from >= n || to >= n) {
      return absl::InternalError(absl::StrCat("mark slots ", from, ", ", to, " of ", n));
    }
    return std::chrono::duration<double, std::milli>(marks_[to] - marks_[from]).count();
  }

  absl::Status PrepareCommStream(int events) override {
    events_ = events;
    return absl::OkStatus();
  }
  void* CommStream() override { return this; }
  absl::Status RecordHandoff(int slot, bool) override { return Handoff(slot); }
  absl::Status WaitHandoff(int slot, bool) override { return Handoff(slot); }

 private:
  using Clock = std::chrono::steady_clock;
  absl::Status Record(int slot) {
    if (slot < 0 || slot >= static_cast<int>(marks_.size())) {
      return absl::InternalError(absl::StrCat("mark slot ", slot, " of ", marks_.size()));
    }
    marks_[slot] = Clock::now();  // distinct slots per thread: no two threads write one slot
    return absl::OkStatus();
  }
  absl::Status Handoff(int slot) {
    if (slot < 0 || slot >= events_) {
      return absl::InternalError(absl::StrCat("hand-off slot ", slot, " of ", events_));
    }
    handoffs_->fetch_add(1);
    return absl::OkStatus();
  }

  std::atomic<int>* handoffs_;
  std::vector<Clock::time_point> marks_;
  int events_ = 0;
};

// Forwards to an in-process rank; an armed collective returns an error on this rank after it
// completed there (a one-sided failure, as a caller's transport may report one).
class OneSided final : public Communicator {
 public:
  explicit OneSided(std::shared_ptr<InProcessRank> inner) : inner_(std::move(inner)) {}
  // The next exchange (or all-reduce) fails on this rank once its data has moved.
  void FailNext(bool all_reduce) { armed_.store(all_reduce ? kAllReduce : kExchange); }

  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  std::string Describe() const override { return "one-sided " + inner_->Describe(); }
  absl::Status Exchange(absl::Span<const P2p> sends, absl::Span<const P2p> recvs,
                        void* stream) override {
    return After(inner_->Exchange(sends, recvs, stream), kExchange);
  }
  absl::Status AllReduceSum(const float* in, float* out, size_t count, void* stream) override {
    return After(inner_->AllReduceSum(in, out, count, stream), kAllReduce);
  }
  absl::Status AllGather(const void* in, void* out, size_t bytes, void* stream) override {
    return inner_->AllGather(in, out, bytes, stream);
  }
  absl::Status Abort() override { return inner_->Abort(); }
  absl::Status AsyncError() const override { return inner_->AsyncError(); }

 private:
  static constexpr int kExchange = 1, kAllReduce = 2;
  absl::Status After(absl::Status s, int kind) {
    int expected = kind;
    if (s.ok() && armed_.compare_exchange_strong(expected, 0)) {
      return absl::AbortedError("injected one-sided failure after the data moved");
    }
    return s;
  }
  std::shared_ptr<InProcessRank> inner_;
  std::atomic<int> armed_{0};
};

struct Spec {
  const char* name;
  int64_t rows, cols;
  bool matrix;
};

const std::vector<Spec>& Model() {
  static const auto* specs = new std::vector<Spec>{
      {"a", 48, 32, true}, {"b", 32, 48, true}, {"c", 40, 40, true}, {"d", 40, 40, true},
      {"e", 1, 24, true},  {"bias", 24, 1, false}, {"f", 64, 16, true},
  };
  return *specs;
}

float Value(size_t param, int step, int64_t index) {
  uint64_t h = (param + 1) * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(step) + 7) * 0xBF58476D1CE4E5B9ull ^
               static_cast<uint64_t>(index) * 0x94D049BB133111EBull;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return static_cast<float>(h >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

struct Options {
  int world = 1;
  bool shim = false;  // the asynchronous stand-in backend
  normuon_schedule_t schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  bool grad_ready = false;
  int steps = 3;
  int fault_rank = -1;  // this rank's first collective of step 1 fails
  normuon_neuron_axis_t axis = NORMUON_NEURON_ROWS;
  int check_finite = 0;
  int nan_rank = -1;       // this rank's first gradient element of matrix "a" is NaN at step 1
  int skip_mark_rank = -1;  // with grad_ready: this rank does not mark matrix "a" at step 1
  int one_sided_rank = -1;  // at step 1, this rank's first exchange (or all-reduce) fails here only
  bool one_sided_all_reduce = false;
};

struct RankResult {
  std::vector<std::vector<float>> params;  // this rank's rows of each parameter
  std::vector<absl::Status> step_status;
  std::vector<normuon_step_info_t> info;
  normuon_step_profile_t profile{};
  std::string trace;
  std::string error;
};

// FSDP2 rows of `rows` for rank r of `world`.
void Rows(int64_t rows, int r, int world, int64_t* begin, int64_t* count) {
  const int64_t chunk = (rows + world - 1) / world;
  *begin = std::min<int64_t>(rows, r * chunk);
  *count = std::min<int64_t>(rows, *begin + chunk) - *begin;
}

std::vector<RankResult> RunRanks(const Options& o, std::atomic<int>* handoffs) {
  std::vector<RankResult> out(o.world);
  std::vector<std::shared_ptr<InProcessRank>> group;
  if (o.world > 1) {
    absl::StatusOr<std::vector<std::shared_ptr<InProcessRank>>> g =
        CreateInProcessGroup(o.world, 60.0);
    if (!g.ok()) {
      out[0].error = std::string(g.status().message());
      return out;
    }
    group = *g;
  }
  auto rank_main = [&](int r) {
    RankResult& res = out[r];
    auto fail = [&](const std::string& what, const absl::Status& s) {
      res.error = what + ": " + std::string(s.message());
    };
    normuon_config_t c;
    normuon_config_init(&c);
    c.backend = NORMUON_BACKEND_CPU;
    c.schedule = o.schedule;
    c.bucket_bytes = 4096;  // several buckets
    c.neuron_axis = o.axis;
    c.check_finite = o.check_finite;
    std::shared_ptr<Communicator> comm =
        o.world > 1 ? std::shared_ptr<Communicator>(group[r]) : MakeSingleRankCommunicator();
    std::shared_ptr<OneSided> one_sided;
    if (o.world > 1 && o.one_sided_rank >= 0) comm = one_sided = std::make_shared<OneSided>(group[r]);
    absl::StatusOr<std::unique_ptr<Runtime>> made =
        Runtime::Create(c, comm, o.shim ? std::make_unique<AsyncCpuShim>(handoffs) : nullptr);
    if (!made.ok()) return fail("create", made.status());
    Runtime& rt = **made;
    const std::vector<Spec>& specs = Model();
    std::vector<std::vector<float>> param(specs.size()), grad(specs.size());
    std::vector<int64_t> begin(specs.size()), count(specs.size());
    std::vector<int32_t> ids(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      Rows(specs[i].rows, r, o.world, &begin[i], &count[i]);
      const int64_t n = count[i] * specs[i].cols;
      param[i].resize(std::max<int64_t>(n, 1));
      grad[i].resize(std::max<int64_t>(n, 1));
      for (int64_t k = 0; k < n; ++k) {
        param[i][k] = 0.05f * Value(i, -1, begin[i] * specs[i].cols + k);
      }
      normuon_param_desc_t d;
      normuon_param_desc_init(&d);
      d.name = specs[i].name;
      d.rows = specs[i].rows;
      d.cols = specs[i].cols;
      d.row_begin = begin[i];
      d.row_count = count[i];
      d.param = count[i] > 0 ? param[i].data() : nullptr;
      d.grad = count[i] > 0 ? grad[i].data() : nullptr;
      d.group = specs[i].matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
      absl::StatusOr<int32_t> id = specs[i].matrix ? rt.RegisterMatrix(d) : rt.RegisterAdamW(d);
      if (!id.ok()) return fail("register", id.status());
      ids[i] = *id;
    }
    absl::Status s = rt.Finalize();
    if (!s.ok()) return fail("finalize", s);
    for (int step = 0; step < o.steps; ++step) {
      for (size_t i = 0; i < specs.size(); ++i) {
        const int64_t n = count[i] * specs[i].cols;
        for (int64_t k = 0; k < n; ++k) grad[i][k] = Value(i, step, begin[i] * specs[i].cols + k);
        if (step == 1 && r == o.nan_rank && i == 0 && n > 0) grad[i][0] = std::nanf("");
      }
      if (step == 1 && o.fault_rank == r) {
        // The first collective of step 1 fails on this rank.
        s = group[r]->InjectFault(NORMUON_FAULT_ERROR, group[r]->next_collective());
        if (!s.ok()) return fail("inject", s);
      }
      if (step == 1 && r == o.one_sided_rank) one_sided->FailNext(o.one_sided_all_reduce);
      if (o.grad_ready) {
        for (size_t i = specs.size(); i-- > 0;) {
          if (!specs[i].matrix) continue;
          if (step == 1 && r == o.skip_mark_rank && i == 0) continue;
          s = rt.GradReady(&ids[i], 1, nullptr);
          if (!s.ok()) return fail("grad_ready", s);
        }
      }
      res.step_status.push_back(rt.Step(0.02f, 0.01f, nullptr));
      normuon_step_info_t info;
      normuon_step_info_init(&info);
      s = rt.StepResult(&info);
      if (!s.ok()) return fail("step_result", s);
      res.info.push_back(info);
    }
    normuon_step_profile_init(&res.profile);
    s = rt.LastStepProfile(&res.profile);
    if (!s.ok()) return fail("profile", s);
    absl::StatusOr<std::string> trace = rt.LastStepTrace();
    if (!trace.ok()) return fail("trace", trace.status());
    res.trace = *trace;
    for (size_t i = 0; i < specs.size(); ++i) {
      res.params.emplace_back(param[i].begin(), param[i].begin() + count[i] * specs[i].cols);
    }
  };
  if (o.world == 1) {
    rank_main(0);
  } else {
    std::vector<std::thread> threads;
    for (int r = 0; r < o.world; ++r) threads.emplace_back(rank_main, r);
    for (std::thread& t : threads) t.join();
  }
  return out;
}

// The full parameters of a run, assembled from every rank's rows.
std::vector<std::vector<float>> Assemble(const std::vector<RankResult>& ranks) {
  const std::vector<Spec>& specs = Model();
  const int world = static_cast<int>(ranks.size());
  std::vector<std::vector<float>> full(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    for (int r = 0; r < world; ++r) {
      full[i].insert(full[i].end(), ranks[r].params[i].begin(), ranks[r].params[i].end());
    }
  }
  return full;
}

bool BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

TEST(TwoStreamTest, PipelinedSchedulesOnAnAsynchronousBackendMatchTheSingleRankStepBitwise) {
  std::atomic<int> unused{0};
  Options single;
  single.steps = 3;
  const std::vector<RankResult> ref = RunRanks(single, &unused);
  ASSERT_EQ(ref[0].error, "");
  const std::vector<std::vector<float>> want = Assemble(ref);
  for (int world : {2, 3, 4}) {
    for (auto schedule : {NORMUON_SCHEDULE_PER_MATRIX, NORMUON_SCHEDULE_BUCKETED}) {
      for (bool grad_ready : {false, true}) {
        Options o;
        o.world = world;
        o.shim = true;
        o.schedule = schedule;
        o.grad_ready = grad_ready;
        o.steps = 3;
        std::atomic<int> handoffs{0};
        const std::vector<RankResult> run = RunRanks(o, &handoffs);
        const std::string what = "world " + std::to_string(world) +
                                 (schedule == NORMUON_SCHEDULE_BUCKETED ? " bucketed" : " per-matrix") +
                                 (grad_ready ? " grad_ready" : "");
        for (int r = 0; r < world; ++r) {
          ASSERT_EQ(run[r].error, "") << what << ", rank " << r;
          for (const absl::Status& st : run[r].step_status) ASSERT_TRUE(st.ok()) << what << ": " << st;
          EXPECT_EQ(run[r].info.back().steps_taken, 3) << what;
        }
        // The two-stream path ran: stage hand-offs were recorded and waited on.
        EXPECT_GT(handoffs.load(), 0) << what;
        const std::vector<std::vector<float>> got = Assemble(run);
        for (size_t i = 0; i < want.size(); ++i) {
          EXPECT_TRUE(BitwiseEqual(got[i], want[i])) << what << ": parameter " << Model()[i].name;
        }
        // The profile from the marks: stages present, exposed communication within the step.
        for (int r = 0; r < world; ++r) {
          const normuon_step_profile_t& p = run[r].profile;
          EXPECT_GT(p.total_ms, 0.0) << what;
          EXPECT_GT(p.newton_schulz_ms + p.momentum_ms, 0.0) << what;
          EXPECT_GE(p.exposed_comm_ms, 0.0) << what;
          EXPECT_LE(p.exposed_comm_ms, p.total_ms + 1e-9) << what;
          EXPECT_GT(p.bytes_sent, 0u) << what;
          EXPECT_NE(run[r].trace.find("\"gather\""), std::string::npos) << what;
          EXPECT_NE(run[r].trace.find("\"scatter\""), std::string::npos) << what;
          EXPECT_NE(run[r].trace.find("\"newton_schulz\""), std::string::npos) << what;
        }
      }
    }
  }
}

TEST(TwoStreamTest, TheColumnNeuronAxisMatchesTheSingleRankStepBitwise) {
  std::atomic<int> unused{0};
  Options single;
  single.axis = NORMUON_NEURON_COLUMNS;
  const std::vector<RankResult> ref = RunRanks(single, &unused);
  ASSERT_EQ(ref[0].error, "");
  Options o = single;
  o.world = 3;
  o.shim = true;
  o.schedule = NORMUON_SCHEDULE_BUCKETED;
  const std::vector<RankResult> run = RunRanks(o, &unused);
  for (int r = 0; r < o.world; ++r) ASSERT_EQ(run[r].error, "") << "rank " << r;
  const std::vector<std::vector<float>> got = Assemble(run), want = Assemble(ref);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_TRUE(BitwiseEqual(got[i], want[i])) << "parameter " << Model()[i].name;
  }
}

// On an asynchronous backend the step flags are folded on the backend and a lost step is
// reported by step_result, not by step: every rank skips the same step.
TEST(TwoStreamTest, ANonFiniteGradientOnOneRankSkipsTheStepOnEveryRank) {
  std::atomic<int> unused{0};
  Options o;
  o.world = 3;
  o.shim = true;
  o.schedule = NORMUON_SCHEDULE_PER_MATRIX;
  o.check_finite = 1;
  o.nan_rank = 2;
  const std::vector<RankResult> run = RunRanks(o, &unused);
  for (int r = 0; r < o.world; ++r) {
    ASSERT_EQ(run[r].error, "") << "rank " << r;
    for (const absl::Status& st : run[r].step_status) EXPECT_TRUE(st.ok()) << st;
    EXPECT_EQ(run[r].info[1].last_skipped, 1) << "rank " << r;
    EXPECT_EQ(run[r].info[1].nonfinite_param, 0) << "rank " << r;
    EXPECT_EQ(run[r].info[2].steps_taken, 2) << "rank " << r;
    EXPECT_EQ(run[r].info[2].steps_skipped, 1) << "rank " << r;
  }
}

TEST(TwoStreamTest, RanksThatMarkDifferentSetsSkipTheStepOnEveryRank) {
  std::atomic<int> unused{0};
  Options o;
  o.world = 2;
  o.shim = true;
  o.schedule = NORMUON_SCHEDULE_BUCKETED;
  o.grad_ready = true;
  o.skip_mark_rank = 1;
  const std::vector<RankResult> run = RunRanks(o, &unused);
  for (int r = 0; r < o.world; ++r) {
    ASSERT_EQ(run[r].error, "") << "rank " << r;
    EXPECT_EQ(run[r].info[1].last_skipped, 1) << "rank " << r;
    EXPECT_EQ(run[r].info[1].nonfinite_param, -1) << "rank " << r;
    EXPECT_EQ(run[r].info[2].steps_taken, 2) << "rank " << r;
  }
}

TEST(TwoStreamTest, AFailedExchangeFailsTheStepOnEveryRankAndLaterStepsReportIt) {
  Options o;
  o.world = 3;
  o.shim = true;
  o.schedule = NORMUON_SCHEDULE_BUCKETED;
  o.steps = 2;
  o.fault_rank = 1;
  std::atomic<int> handoffs{0};
  const std::vector<RankResult> run = RunRanks(o, &handoffs);
  for (int r = 0; r < o.world; ++r) {
    ASSERT_EQ(run[r].error, "") << "rank " << r;
    ASSERT_EQ(run[r].step_status.size(), 2u);
    EXPECT_TRUE(run[r].step_status[0].ok()) << run[r].step_status[0];
    EXPECT_FALSE(run[r].step_status[1].ok()) << "rank " << r;
    // Step 1 is counted as skipped: one step taken in all.
    EXPECT_EQ(run[r].info[1].steps_taken, 1) << "rank " << r;
    EXPECT_EQ(run[r].info[1].last_skipped, 1) << "rank " << r;
  }
}

// One-sided failures (docs/ARCHITECTURE.md section 6): an exchange that fails on one rank only.
// That rank still issues the rest of the step's collectives and says so in the flags, folded on
// the backend: every rank skips the step, and the next one is taken everywhere.
TEST(TwoStreamTest, AOneSidedExchangeFailureSkipsTheStepOnEveryRank) {
  std::atomic<int> unused{0};
  Options o;
  o.world = 3;
  o.shim = true;
  o.schedule = NORMUON_SCHEDULE_BUCKETED;
  o.grad_ready = true;
  o.one_sided_rank = 1;
  const std::vector<RankResult> run = RunRanks(o, &unused);
  for (int r = 0; r < o.world; ++r) {
    ASSERT_EQ(run[r].error, "") << "rank " << r;
    ASSERT_EQ(run[r].step_status.size(), 3u);
    // Only the failing rank knows on the host; the others learn it on the backend.
    EXPECT_EQ(run[r].step_status[1].ok(), r != 1) << "rank " << r << ": " << run[r].step_status[1];
    EXPECT_EQ(run[r].info[1].last_skipped, 1) << "rank " << r;
    EXPECT_EQ(run[r].info[1].steps_taken, 1) << "rank " << r;
    EXPECT_EQ(run[r].info[2].steps_taken, 2) << "rank " << r;
    EXPECT_EQ(run[r].info[2].last_skipped, 0) << "rank " << r;
  }
  EXPECT_NE(run[1].step_status[1].message().find("injected one-sided failure"), std::string::npos)
      << run[1].step_status[1];
}

// The step's last collective failing on one rank only: the others commit; the next step is
// skipped on every rank, and normuon_step_result (the only report on an asynchronous backend)
// fails on every rank naming the rank that did not commit, and the step.
TEST(TwoStreamTest, AOneSidedFailureOfTheLastCollectiveIsReportedByTheNextStepOnEveryRank) {
  std::atomic<int> unused{0};
  Options o;
  o.world = 3;
  o.shim = true;
  o.schedule = NORMUON_SCHEDULE_PER_MATRIX;
  o.one_sided_rank = 1;
  o.one_sided_all_reduce = true;
  const std::vector<RankResult> run = RunRanks(o, &unused);
  for (int r = 0; r < o.world; ++r) {
    ASSERT_EQ(run[r].info.size(), 2u) << "rank " << r << ": " << run[r].error;
    EXPECT_EQ(run[r].step_status[1].ok(), r != 1) << "rank " << r << ": " << run[r].step_status[1];
    EXPECT_EQ(run[r].info[1].steps_taken, r == 1 ? 1 : 2) << "rank " << r;
    EXPECT_NE(run[r].error.find("step_result: "), std::string::npos) << run[r].error;
    EXPECT_NE(run[r].error.find("rank 1 did not commit step 2"), std::string::npos)
        << run[r].error;
    EXPECT_NE(run[r].error.find("ranks 0, 2 committed"), std::string::npos) << run[r].error;
  }
  EXPECT_NE(run[1].step_status[1].message().find("last collective"), std::string::npos)
      << run[1].step_status[1];
}

}  // namespace
}  // namespace normuon
