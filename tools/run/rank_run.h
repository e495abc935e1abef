// rank_run.h: the run loop of normuon_run: every rank's runtime, its FSDP2 rows of every
// parameter, the timed steps (and the steps with a simulated backward pass), and what each rank
// measured and ended with.
#ifndef NORMUON_TOOLS_RUN_RANK_RUN_H_
#define NORMUON_TOOLS_RUN_RANK_RUN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"
#include "tools/run/run_config.h"

namespace normuon_tools::run {

// What one rank measured and ended with.
struct RankOutcome {
  std::string error;                       // "" on success
  std::vector<double> step_ms;             // wall time of each plain step on this rank
  normuon_step_profile_t phases{};         // summed over the steady steps
  bool have_phases = false;
  std::vector<std::vector<float>> params;  // with keep_params: this rank's rows of every entry
  double sum = 0.0, sum_sq = 0.0;          // over this rank's rows of every parameter
  uint64_t state_bytes = 0;
  double setup_ms = 0.0, grad_ms = 0.0;
  std::string trace;                // the last step's Chrome trace events (RankConfig::trace)
  std::vector<double> exposed_ms;   // overlapped steps: last grad_ready -> end of step
  std::vector<double> backward_ms;  // overlapped steps: the simulated backward of each step
};

// Runs the whole optimizer on rank `rank` of `world` (comm 0 for a single rank): its rows of
// every parameter (cfg.layout, which must be for `world` ranks), parameters N(0, 0.02), fresh
// N(0, 1) gradients every step (random_fill.h: the same values whatever the world size), steps
// timed from normuon_step to the end of normuon_step_result.
RankOutcome RunRank(const RankConfig& cfg, normuon_comm_t comm, int rank, int world);

// RunRank on `world` in-process ranks (one thread each; on CUDA the group moves device memory),
// or directly for world 1. An error: the group could not be made.
absl::StatusOr<std::vector<RankOutcome>> RunRanks(const RankConfig& cfg, int world);

// --check: runs the same updates on one rank (every plain and overlapped step, without
// grad_ready; with CheckAgainst::kCpu on the CPU backend in the run's Newton-Schulz precision)
// and returns the largest |difference| of any parameter element from the ranks' rows in
// `outcomes` (which must have kept them).
absl::StatusOr<double> MaxDifferenceFromOneRank(const RunSetup& setup,
                                                const std::vector<RankOutcome>& outcomes);

}  // namespace normuon_tools::run

#endif  // NORMUON_TOOLS_RUN_RANK_RUN_H_
