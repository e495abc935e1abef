// Tests of tools/plan/report: the JSON report is well-formed (read back with the parser of
// json.h) and holds, per schedule and rank, the numbers of the plan and the simulation it was
// made from; the text report names every schedule.
#include "tools/plan/report.h"

#include <string>

#include "gtest/gtest.h"
#include "tools/plan/json.h"

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
  in.schedules = {Schedule::kSequential, Schedule::kPerMatrix, Schedule::kBucketed};
  in.sim.backward_ms_per_layer = backward_ms;
  return in;
}

TEST(ReportTest, JsonIsWellFormedAndComplete) {
  for (double backward : {0.0, 2.0}) {
    SCOPED_TRACE(backward);
    absl::StatusOr<Report> report = MakeReport(Inputs("gpt2-124m", 12, backward));
    ASSERT_TRUE(report.ok()) << report.status();
    const std::string text = ReportJson(*report, /*verbose=*/true);
    absl::StatusOr<JsonValue> doc = ParseJson(text);
    ASSERT_TRUE(doc.ok()) << doc.status() << "\n" << text.substr(0, 2000);
    EXPECT_EQ(doc->Find("model")->string(), "gpt2-124m");
    EXPECT_EQ(doc->Find("world")->number(), 12);
    EXPECT_EQ(doc->Find("matrices")->number(), 48);
    EXPECT_EQ(doc->Find("machine")->Find("nodes")->number(), 2);
    EXPECT_EQ(doc->Find("ns_dtype")->string(), "bf16");
    ASSERT_EQ(doc->Find("state")->items().size(), 12u);
    EXPECT_EQ(doc->Find("state")->items()[0].Find("state_bytes")->number(),
              static_cast<double>(report->schedules[0].plan.ranks[0].state_bytes()));
    const JsonValue* schedules = doc->Find("schedules");
    ASSERT_EQ(schedules->items().size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      const JsonValue& s = schedules->items()[i];
      const ScheduleReport& sr = report->schedules[i];
      EXPECT_EQ(s.Find("schedule")->string(), ScheduleName(sr.schedule));
      EXPECT_NEAR(s.Find("step_ms")->number(), sr.plain.step_ms, 1e-3);
      EXPECT_EQ(s.Find("buckets")->number(), static_cast<double>(sr.plan.buckets.size()));
      for (const char* key : {"momentum_ms", "gather_ms", "newton_schulz_ms", "scatter_ms",
                              "row_stats_ms", "update_ms", "adamw_ms", "exposed_comm_ms"}) {
        EXPECT_NE(s.Find("phases_rank0")->Find(key), nullptr) << key;
      }
      EXPECT_EQ(s.Find("overlap_backward") != nullptr, backward > 0.0);
      if (backward > 0.0) {
        EXPECT_NEAR(s.Find("overlap_backward")->Find("exposed_after_last_grad_ms")->number(),
                    sr.backward.step_ms, 1e-3);
      }
      const JsonValue* ranks = s.Find("ranks");
      ASSERT_EQ(ranks->items().size(), 12u);
      size_t owned = 0;
      for (int r = 0; r < 12; ++r) {
        const JsonValue& row = ranks->items()[r];
        EXPECT_EQ(row.Find("rank")->number(), r);
        EXPECT_EQ(row.Find("bytes_sent")->number(),
                  static_cast<double>(sr.plan.ranks[r].bytes_sent));
        EXPECT_EQ(row.Find("owned_names")->items().size(), sr.plan.ranks[r].owned.size());
        owned += static_cast<size_t>(row.Find("owned")->number());
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
