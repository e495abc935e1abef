// run_report.h: what normuon_run prints: the ranks' outcomes summed up (a sharded step takes as
// long as its slowest rank), as text or as one JSON object, and the Chrome trace file.
#ifndef NORMUON_TOOLS_RUN_RUN_REPORT_H_
#define NORMUON_TOOLS_RUN_RUN_REPORT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tools/run/rank_run.h"
#include "tools/run/run_config.h"

namespace normuon_tools::run {

struct RunSummary {
  std::vector<double> step_ms;  // per plain step, the slowest rank's
  double mean_ms = 0.0, steady_ms = 0.0, min_ms = 0.0;  // steady: without step 0
  double sum = 0.0, sum_sq = 0.0;  // over every parameter element of every rank
  double setup_ms = 0.0, grad_ms = 0.0;  // the slowest rank's
  uint64_t state_bytes = 0;             // the largest rank's
  normuon_step_profile_t phases{};      // rank 0's, summed over phase_steps steps
  bool have_phases = false;
  int phase_steps = 1;
  // Overlapped steps, per step the slowest rank's, averaged: the simulated backward and the
  // optimizer time still exposed after the last gradient; hidden = 1 - exposed / steady.
  bool overlap = false;
  double backward_ms = 0.0, exposed_ms = 0.0, hidden = 0.0;
  double max_diff = -1.0;  // --check: MaxDifferenceFromOneRank; -1 without
};

RunSummary Summarize(const RunSetup& setup, const std::vector<RankOutcome>& outcomes,
                     double max_diff);

// The text line printed before the run starts.
std::string HeaderText(const RunSetup& setup);
// After the run: the summary, phases, checksum, overlap and check lines, or one JSON object.
std::string ReportText(const RunSetup& setup, const RunSummary& summary);
std::string ReportJson(const RunSetup& setup, const RunSummary& summary);

// Writes every rank's trace events to `path` as one Chrome trace document. Fails when it cannot
// write, or when no rank had a trace (traces need the CPU backend).
absl::Status WriteTrace(const std::string& path, const std::vector<RankOutcome>& outcomes);

}  // namespace normuon_tools::run

#endif  // NORMUON_TOOLS_RUN_RUN_REPORT_H_
