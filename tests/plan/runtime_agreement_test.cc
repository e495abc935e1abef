// The planner's static plan against the runtime itself: a model's shapes registered through the
// C API on N in-process ranks (FSDP2 rows, as normuon_run does), one step per schedule, and the
// runtime's own profile (bytes sent and received, buckets) and state sizes must equal what
// BuildStepPlan predicts for every rank. This is what ties the planner to the runtime's real
// decisions rather than to a copy of them.
#include <algorithm>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"
#include "tools/common/api_flags.h"
#include "tools/model_shapes.h"
#include "tools/plan/step_model.h"

namespace normuon::plan {
namespace {

struct RankResult {
  std::string error;
  uint64_t bytes_sent = 0, bytes_received = 0;
  int32_t buckets = 0;
  uint64_t momentum = 0, v = 0, adam = 0;
};

// One step of `model` on `world` in-process ranks; every rank's profile and state sizes.
std::vector<RankResult> RunRuntime(const normuon_tools::ModelShapes& model, int world,
                                   normuon_schedule_t schedule, uint64_t bucket_bytes,
                                   normuon_owner_policy_t policy) {
  std::vector<normuon_comm_t> comms(world);
  EXPECT_EQ(normuon_comm_create_inprocess_group(world, 30.0, comms.data()), NORMUON_SUCCESS);
  std::vector<RankResult> out(world);
  auto rank_main = [&](int rank) {
    RankResult& res = out[rank];
    normuon_config_t c;
    normuon_config_init(&c);
    c.ns_dtype = NORMUON_NS_FP32;
    c.schedule = schedule;
    c.bucket_bytes = bucket_bytes;
    c.owner_policy = policy;
    normuon_runtime_t rt = 0;
    if (normuon_create(&c, comms[rank], &rt) != NORMUON_SUCCESS) {
      res.error = "create failed";
      return;
    }
    std::vector<std::vector<float>> param(model.entries.size()), grad(model.entries.size());
    std::vector<normuon_param_t> handles(model.entries.size());
    for (size_t i = 0; i < model.entries.size(); ++i) {
      const auto& e = model.entries[i];
      const int64_t chunk = (e.rows + world - 1) / world;
      const int64_t begin = std::min<int64_t>(e.rows, chunk * rank);
      const int64_t count = std::min<int64_t>(e.rows, chunk * (rank + 1)) - begin;
      param[i].assign(static_cast<size_t>(std::max<int64_t>(1, count * e.cols)), 0.01f);
      grad[i].assign(param[i].size(), 0.5f);
      normuon_param_desc_t d;
      normuon_param_desc_init(&d);
      d.name = e.name.c_str();
      d.rows = e.rows;
      d.cols = e.cols;
      d.row_begin = begin;
      d.row_count = count;
      d.param = param[i].data();
      d.grad = grad[i].data();
      const bool matrix = e.kind == ParamKind::kMatrix;
      d.group = matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
      const normuon_status_t st = matrix ? normuon_register_matrix(rt, &d, &handles[i])
                                         : normuon_register_adamw(rt, &d, &handles[i]);
      if (st != NORMUON_SUCCESS) res.error = normuon_last_error(rt);
    }
    if (res.error.empty() && normuon_finalize(rt) != NORMUON_SUCCESS) {
      res.error = normuon_last_error(rt);
    }
    if (res.error.empty() && normuon_step(rt, -1.0f, -1.0f, nullptr) != NORMUON_SUCCESS) {
      res.error = normuon_last_error(rt);
    }
    normuon_step_profile_t prof;
    normuon_step_profile_init(&prof);
    if (res.error.empty() && normuon_last_step_profile(rt, &prof) == NORMUON_SUCCESS) {
      res.bytes_sent = prof.bytes_sent;
      res.bytes_received = prof.bytes_received;
      res.buckets = prof.buckets;
    }
    for (size_t i = 0; res.error.empty() && i < model.entries.size(); ++i) {
      const bool matrix = model.entries[i].kind == ParamKind::kMatrix;
      uint64_t a = 0, b = 0;
      normuon_state_size(rt, handles[i],
                         matrix ? NORMUON_STATE_MOMENTUM : NORMUON_STATE_EXP_AVG, &a);
      normuon_state_size(rt, handles[i],
                         matrix ? NORMUON_STATE_SECOND_MOMENT : NORMUON_STATE_EXP_AVG_SQ, &b);
      if (matrix) {
        res.momentum += a;
        res.v += b;
      } else {
        res.adam += a + b;
      }
    }
    normuon_destroy(rt);
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(rank_main, r);
  for (std::thread& t : threads) t.join();
  for (normuon_comm_t comm : comms) normuon_comm_destroy(comm);
  return out;
}

TEST(RuntimeAgreementTest, BytesBucketsAndStateEqualThePlan) {
  absl::StatusOr<normuon_tools::ModelShapes> model = normuon_tools::LoadModel("tiny", "");
  ASSERT_TRUE(model.ok()) << model.status();
  const uint64_t bucket_bytes = 64 << 10;  // tiny's matrices are 16-48 KiB in fp32
  for (int world : {2, 3, 5}) {
    for (normuon_schedule_t s :
         {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX, NORMUON_SCHEDULE_BUCKETED}) {
      for (auto policy : {NORMUON_OWNER_ROUND_ROBIN, NORMUON_OWNER_COST_BALANCED}) {
        SCOPED_TRACE(
            absl::StrCat("world ", world, " ", normuon_tools::ScheduleName(s), " policy ", policy));
        PlanOptions o;
        o.world = world;
        o.schedule = s;
        o.wire_bytes = 4;
        o.bucket_bytes = static_cast<int64_t>(bucket_bytes);
        o.policy = policy == NORMUON_OWNER_ROUND_ROBIN ? sharding::OwnerPolicy::kRoundRobin
                                                       : sharding::OwnerPolicy::kCostBalanced;
        absl::StatusOr<StepPlan> plan = BuildStepPlan(*model, o);
        ASSERT_TRUE(plan.ok()) << plan.status();
        const std::vector<RankResult> got = RunRuntime(*model, world, s, bucket_bytes, policy);
        for (int r = 0; r < world; ++r) {
          SCOPED_TRACE(absl::StrCat("rank ", r));
          ASSERT_EQ(got[r].error, "");
          EXPECT_EQ(got[r].bytes_sent, static_cast<uint64_t>(plan->ranks[r].bytes_sent));
          EXPECT_EQ(got[r].bytes_received, static_cast<uint64_t>(plan->ranks[r].bytes_received));
          EXPECT_EQ(got[r].buckets, static_cast<int32_t>(plan->buckets.size()));
          EXPECT_EQ(got[r].momentum, static_cast<uint64_t>(plan->ranks[r].momentum_bytes));
          EXPECT_EQ(got[r].v, static_cast<uint64_t>(plan->ranks[r].v_bytes));
          EXPECT_EQ(got[r].adam, static_cast<uint64_t>(plan->ranks[r].adam_bytes));
        }
      }
    }
  }
}

}  // namespace
}  // namespace normuon::plan
