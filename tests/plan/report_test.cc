// Tests of tools/plan/report: the JSON report is well-formed (read back with
// tools/common/json.h) and holds, per schedule and rank, the numbers of the plan and the simulation it was
// made from; the text report names every schedule.
#include "tools/plan/report.h"

#include <string>

#include "gtest/gtest.h"
#include "tools/common/api_flags.h"
#include "tools/common/json.h"

namespace normuon::plan {
namespace {

ReportInputs Inputs(const std::string& model, int world, double backward_ms) {
  ReportInputs in;
  in.model = model;
  absl::StatusOr<normuon_tools::ModelShapes> m = normuon_tools::LoadModel(model, "");
  EXPECT_TRUE(m.ok()) << m.status();
  in.shapes = *m;
  in.options.world = world;
  in.options.wire_bytes = 2;
  in.schedules = {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX,
                  NORMUON_SCHEDULE_BUCKETED};
  in.sim.backward_ms_per_layer = backward_ms;
  return in;
}

TEST(ReportTest, JsonIsWellFormedAndComplete) {
  for (double backward : {0.0, 2.0}) {
    SCOPED_TRACE(backward);
    absl::StatusOr<Report> report = MakeReport(Inputs("gpt2-124m", 12, backward));
    ASSERT_TRUE(report.ok()) << report.status();
    const std::string text = ReportJson(*report, /*verbose=*/true);
    absl::StatusOr<nlohmann::json> doc = normuon_tools::ParseJson(text);
    ASSERT_TRUE(doc.ok()) << doc.status() << "\n" << text.substr(0, 2000);
    EXPECT_EQ(doc->at("model"), "gpt2-124m");
    EXPECT_EQ(doc->at("world"), 12);
    EXPECT_EQ(doc->at("matrices"), 48);
    EXPECT_EQ(doc->at("machine").at("nodes"), 2);
    EXPECT_EQ(doc->at("ns_dtype"), "bf16");
    ASSERT_EQ(doc->at("state").size(), 12u);
    EXPECT_EQ(doc->at("state")[0].at("state_bytes").get<double>(),
              static_cast<double>(report->schedules[0].plan.ranks[0].state_bytes()));
    const nlohmann::json& schedules = doc->at("schedules");
    ASSERT_EQ(schedules.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      const nlohmann::json& s = schedules[i];
      const ScheduleReport& sr = report->schedules[i];
      EXPECT_EQ(s.at("schedule").get<std::string>(), normuon_tools::ScheduleName(sr.schedule));
      EXPECT_NEAR(s.at("step_ms").get<double>(), sr.plain.step_ms, 1e-3);
      EXPECT_EQ(s.at("buckets").get<double>(), static_cast<double>(sr.plan.buckets.size()));
      for (const char* key : {"momentum_ms", "gather_ms", "newton_schulz_ms", "scatter_ms",
                              "row_stats_ms", "update_ms", "adamw_ms", "exposed_comm_ms"}) {
        EXPECT_TRUE(s.at("phases_rank0").contains(key)) << key;
      }
      EXPECT_EQ(s.contains("overlap_backward"), backward > 0.0);
      if (backward > 0.0) {
        EXPECT_NEAR(s.at("overlap_backward").at("exposed_after_last_grad_ms").get<double>(),
                    sr.backward.step_ms, 1e-3);
      }
      const nlohmann::json& ranks = s.at("ranks");
      ASSERT_EQ(ranks.size(), 12u);
      size_t owned = 0;
      for (int r = 0; r < 12; ++r) {
        const nlohmann::json& row = ranks[r];
        EXPECT_EQ(row.at("rank"), r);
        EXPECT_EQ(row.at("bytes_sent").get<double>(),
                  static_cast<double>(sr.plan.ranks[r].bytes_sent));
        EXPECT_EQ(row.at("owned_names").size(), sr.plan.ranks[r].owned.size());
        owned += row.at("owned").get<size_t>();
      }
      EXPECT_EQ(owned, 48u);
    }
  }
}

TEST(ReportTest, TextNamesEverySchedule) {
  absl::StatusOr<Report> report = MakeReport(Inputs("tiny", 3, 1.0));
  ASSERT_TRUE(report.ok()) << report.status();
  const std::string text = ReportText(*report, /*verbose=*/true, /*max_rank_lines=*/2);
  for (const char* s : {"sequential", "per_matrix", "bucketed", "after last grad", "owns: ",
                        "1 more ranks", "rank 0 phases"}) {
    EXPECT_NE(text.find(s), std::string::npos) << s << "\n" << text;
  }
}

TEST(ReportTest, NoSchedule) {
  ReportInputs in = Inputs("tiny", 2, 0.0);
  in.schedules.clear();
  EXPECT_FALSE(MakeReport(in).ok());
}

}  // namespace
}  // namespace normuon::plan
