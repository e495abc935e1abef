// golden_runner.h: runs one golden case through the normuon C API and checks it.
//
// The one implementation of "run a case" shared by tools/golden_check and
// tests/tools/golden_test. For a case it creates a runtime (hyper-parameters from the case,
// backend and ns_dtype from the options), registers the parameter (normuon_register_matrix for
// kind normuon, normuon_register_adamw for kind adamw) with fp32 parameter and gradient buffers
// (host memory on CPU, cudaMalloc'd memory on CUDA), finalizes, and for every step copies the
// gradient in (float64 -> float32), calls normuon_step and normuon_step_result, reads the
// parameter back and compares the update with the reference's (golden_compare.h). After the
// last step it reads the final state with normuon_get_state and compares it.
//
// The run follows its own trajectory: the parameter is set from param_init once, never reset to
// the reference's between steps.
#ifndef NORMUON_TOOLS_GOLDEN_RUNNER_H_
#define NORMUON_TOOLS_GOLDEN_RUNNER_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "normuon/normuon.h"
#include "tools/golden_compare.h"
#include "tools/golden_format.h"

namespace normuon_tools {

struct RunOptions {
  normuon_backend_t backend = NORMUON_BACKEND_CPU;
  int device = 0;  // CUDA device ordinal
  normuon_ns_dtype_t ns_dtype = NORMUON_NS_DEFAULT;
  // Overrides the mode's update tolerance when set (golden_check --tol).
  std::optional<double> update_tol;
};

// The precision mode a run uses: ns_dtype, or for NORMUON_NS_DEFAULT the backend's default
// (fp32 on CPU, bf16 on CUDA).
Precision EffectivePrecision(normuon_backend_t backend, normuon_ns_dtype_t ns_dtype);

// The tolerances a run with these options is held to.
Tolerances TolerancesFor(const RunOptions& options);

// True when this build of the tools can drive the CUDA backend (compiled with
// NORMUON_WITH_CUDA); the library must also say normuon_has_cuda().
bool ToolsHaveCuda();

struct StepCheck {
  int step = 0;
  UpdateError error;
};

struct StateCheck {
  std::string name;  // the golden key, e.g. "momentum_final"
  StateError error;
};

struct CaseResult {
  std::string name;
  GoldenKind kind = GoldenKind::kNormuon;
  int64_t rows = 0;
  int64_t cols = 0;
  Precision precision = Precision::kFp32;
  Tolerances tolerances;
  std::vector<StepCheck> steps;
  std::vector<StateCheck> states;  // the final-state arrays the case carries
  bool pass = false;               // every step and every state within tolerance

  // Largest relative update error over the steps, and its step.
  double max_update_rel() const;
  int worst_step() const;
  // Largest abs_error / bound over the steps (<= 1 passes).
  double max_bound_use() const;

  // One line: name, kind, shape, max update error, state errors, PASS/FAIL.
  std::string Summary() const;
};

// Runs and checks one case. An error status means the run itself failed (an API call returned
// an error: the message carries normuon_last_error, or a CUDA call failed, or a state buffer
// has an unexpected size); a tolerance miss is a result with pass = false.
absl::StatusOr<CaseResult> RunGoldenCase(const GoldenCase& golden, const RunOptions& options);

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_GOLDEN_RUNNER_H_
