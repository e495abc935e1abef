// The planner's report: runs the static plan and the simulation of every requested schedule
// (step_model.h) and renders the result as text or JSON. Kept apart from the command line so the
// tests can read the JSON back (tools/common/json.h).
#ifndef NORMUON_TOOLS_PLAN_REPORT_H_
#define NORMUON_TOOLS_PLAN_REPORT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/model_shapes.h"
#include "tools/plan/step_model.h"

namespace normuon::plan {

struct ReportInputs {
  std::string model;   // name or path, for the header
  normuon_tools::ModelShapes shapes;
  PlanOptions options;               // options.schedule is ignored: see schedules
  std::vector<normuon_schedule_t> schedules;  // in the order to report
  SimOptions sim;                    // sim.layers is filled from the shapes when a backward runs
};

struct ScheduleReport {
  normuon_schedule_t schedule;
  StepPlan plan;
  SimResult plain;      // the step alone, from time 0
  bool overlap = false;
  SimResult backward;   // with the simulated backward pass (step_ms = exposed after last grad)
};

struct Report {
  ReportInputs in;
  int layers = 0;  // backward layers (when a backward runs)
  std::vector<ScheduleReport> schedules;
};

// Plans and simulates every schedule of in.schedules (each at least once).
absl::StatusOr<Report> MakeReport(ReportInputs in);

// One JSON object (see normuon_plan.cc for the fields); verbose adds every rank's owned names.
std::string ReportJson(const Report& report, bool verbose);

// A human-readable report: header, a line per schedule, a table of ranks (at most
// max_rank_lines of them, then the slowest; 0 = all), rank 0's phases per schedule. verbose
// lists each printed rank's owned matrices.
std::string ReportText(const Report& report, bool verbose, int max_rank_lines);

}  // namespace normuon::plan

#endif  // NORMUON_TOOLS_PLAN_REPORT_H_
