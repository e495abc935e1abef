// normuon_run: the demo. Runs optimizer steps over the parameter shapes of a real model.
//
//   normuon_run [--model=NAME | --shapes=FILE] [--backend=cpu|cuda] [--device=N] [--steps=N]
//               [--ranks=N] [--owner_policy=round_robin|cost_balanced] [--check]
//               [--ns_dtype=default|fp32|bf16|fp16] [--ns_method=standard|gram] [--seed=S]
//               [--lr=X] [--weight_decay=X] [--json]
//   mpirun -np N normuon_run_mpi --comm=mpi [--timeout=S] [the flags above but --ranks]
//
// Ranks as processes. The MPI build of this file (//tools:normuon_run_mpi, compiled with
// NORMUON_RUN_WITH_MPI and linked with Open MPI) takes --comm=mpi: each process that mpirun
// starts is one rank, joined by include/normuon/mpi.h's communicator over MPI_COMM_WORLD; rank 0
// prints the one report (tools/run/mpi_world.h). The plain build links no MPI, so a user
// without MPI builds and runs it as before; it refuses --comm=mpi, and refuses to run as one of
// several processes of a launcher (each would run the whole model alone).
//
// Every `matrix` entry of the shape list is registered with normuon_register_matrix (NorMuon),
// every `adamw` entry with normuon_register_adamw. With --ranks=N, N threads form an in-process
// group and each registers its FSDP2 rows (ceil(rows/N) per rank) of every parameter.
// Parameters start as N(0, 0.02) draws; every step gets fresh N(0, 1) gradients; both come
// from a fast approximate normal generator (tools/common/random_fill.h) seeded by --seed, so a
// run is reproducible. Gradient generation and copies are outside the timed region: the time
// of a step is normuon_step plus normuon_step_result (which waits for the device on CUDA).
// Prints the wall time of every step and a summary (model, parameter counts, ms per step, and
// the sum and L2 norm of all parameters after the run, so two runs can be compared); --json
// prints the same as one JSON object instead. Models are found as model_shapes.h describes
// ($NORMUON_MODELS_DIR, the runfiles, or tools/models under the working directory).
//
// The files of tools/run/ hold the parts: run_config (flags), rank_run (the run loop),
// run_report (what is printed).
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "tools/run/rank_run.h"
#include "tools/run/run_config.h"
#include "tools/run/run_report.h"
#ifdef NORMUON_RUN_WITH_MPI
#include "tools/run/mpi_world.h"
#endif

namespace {

int Fail(absl::string_view message) {
  std::fprintf(stderr, "normuon_run: %s\n", std::string(message).c_str());
  return 1;
}

// The number of processes a launcher (mpirun, or a PMI launcher such as srun or MPICH's
// hydra) started this one among; 1 without one.
int LauncherWorldSize() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && std::atoi(v) > 1) return std::atoi(v);
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using normuon_tools::run::RunSetup;
  absl::SetProgramUsageMessage(
      "normuon_run [--model=NAME | --shapes=FILE] [--backend=cpu|cuda] [--steps=N]\n"
      "            [--ranks=N] [--owner_policy=round_robin|cost_balanced] [--check]\n"
      "            [--ns_dtype=default|fp32|bf16|fp16] [--ns_method=standard|gram] [--seed=S]\n"
      "            [--json]\n"
      "Runs NorMuon/AdamW steps over a model's parameter shapes with random gradients and\n"
      "prints the time per step and per phase. --ranks=N runs the sharded step on N in-process\n"
      "ranks (threads, FSDP2 row split); --check also runs the single-rank step and reports the\n"
      "largest difference of any parameter element (0 expected: the CPU path is exact);\n"
      "--check_against=cpu compares with the CPU backend instead (for --backend=cuda).\n"
      "mpirun -np N normuon_run_mpi --comm=mpi ... runs the N ranks as N processes over MPI.");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() > 1) return Fail(absl::StrCat("unexpected argument '", args[1], "'"));

  using normuon_tools::run::CommKind;
  const CommKind comm = normuon_tools::run::CommFromFlags();
  if (comm == CommKind::kInProcess && LauncherWorldSize() > 1) {
    return Fail(absl::StrCat(
        "started as one of ", LauncherWorldSize(),
        " processes (by mpirun?) with --comm=inprocess: every process would run the whole "
        "model alone. Run bazel-bin/tools/normuon_run_mpi --comm=mpi under the launcher, or "
        "one process with --ranks=N"));
  }
  int process_world = 0;
  bool reporter = true;  // the process that prints: rank 0
#ifdef NORMUON_RUN_WITH_MPI
  std::unique_ptr<normuon_tools::run::MpiWorld> mpi;
  if (comm == CommKind::kMpi) {
    absl::StatusOr<std::unique_ptr<normuon_tools::run::MpiWorld>> started =
        normuon_tools::run::MpiWorld::Start();
    if (!started.ok()) return Fail(started.status().message());
    mpi = *std::move(started);
    process_world = mpi->world();
    reporter = mpi->rank() == 0;
  }
#endif

  absl::StatusOr<std::unique_ptr<RunSetup>> setup_or =
      normuon_tools::run::SetupFromFlags(argv[0], process_world);
#ifdef NORMUON_RUN_WITH_MPI
  // Every process reads the same flags, but the files they name may differ: all go on, or all
  // stop (the lowest rank that failed says why).
  if (mpi != nullptr) {
    const int first_failed = mpi->FirstFailed(setup_or.ok());
    if (first_failed >= 0) {
      if (mpi->rank() == first_failed) {
        std::fprintf(stderr, "normuon_run: rank %d: %s\n", mpi->rank(),
                     std::string(setup_or.status().message()).c_str());
      }
      return 1;
    }
  }
#endif
  if (!setup_or.ok()) return Fail(setup_or.status().message());
  const RunSetup& setup = **setup_or;
  if (reporter) {
    for (const std::string& note : setup.notes) {
      std::fprintf(stderr, "normuon_run: %s\n", note.c_str());
    }
    if (!setup.json) {
      std::fputs(normuon_tools::run::HeaderText(setup).c_str(), stdout);
      std::fflush(stdout);
    }
  }

  absl::StatusOr<std::vector<normuon_tools::run::RankOutcome>> outcomes;
#ifdef NORMUON_RUN_WITH_MPI
  if (mpi != nullptr) {
    outcomes = mpi->Run(setup);
    if (!outcomes.ok()) {
      std::fprintf(stderr, "normuon_run: %s\n", std::string(outcomes.status().message()).c_str());
      mpi->Abort(1);
    }
    if (!reporter) return 0;  // rank 0 reports, and ends the job if any rank failed
    bool failed = false;
    for (const normuon_tools::run::RankOutcome& o : *outcomes) {
      if (o.error.empty()) continue;
      std::fprintf(stderr, "normuon_run: %s\n", o.error.c_str());
      failed = true;
    }
    // After a failed step MPI may still hold requests into freed buffers: no rank finalizes.
    if (failed) mpi->Abort(1);
  }
#endif
  if (comm == CommKind::kInProcess) {
    outcomes = normuon_tools::run::RunRanks(setup.rank, setup.ranks);
    if (!outcomes.ok()) return Fail(outcomes.status().message());
    for (const normuon_tools::run::RankOutcome& o : *outcomes) {
      if (!o.error.empty()) return Fail(o.error);
    }
  }
  double max_diff = -1.0;
  if (setup.check) {
    absl::StatusOr<double> diff = normuon_tools::run::MaxDifferenceFromOneRank(setup, *outcomes);
    if (!diff.ok()) return Fail(diff.status().message());
    max_diff = *diff;
  }
  const normuon_tools::run::RunSummary summary =
      normuon_tools::run::Summarize(setup, *outcomes, max_diff);
  if (!setup.trace_path.empty()) {
    const absl::Status written = normuon_tools::run::WriteTrace(setup.trace_path, *outcomes);
    if (!written.ok()) return Fail(written.message());
  }
  const std::string report = setup.json ? normuon_tools::run::ReportJson(setup, summary)
                                        : normuon_tools::run::ReportText(setup, summary);
  std::fputs(report.c_str(), stdout);

  const bool cuda = setup.rank.backend == NORMUON_BACKEND_CUDA;
  if (setup.check && max_diff != 0.0 && !cuda) return 1;  // the CPU path must be exact
  if (setup.check && cuda && setup.check_tol >= 0.0 && !(max_diff <= setup.check_tol)) {
    std::fprintf(stderr, "normuon_run: --check: max difference %.9g is over --check_tol=%g\n",
                 max_diff, setup.check_tol);
    return 1;
  }
  return 0;
}
