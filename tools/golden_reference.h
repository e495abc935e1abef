// golden_reference.h: a float64 re-implementation of the official NorMuon step (zichongli5/NorMuon,
// normuon.py: normuon_update, zeropower_via_newtonschulz5 with its bf16 cast replaced by float64,
// adam_update), used to make golden cases for shapes and hyper-parameters the shared reference
// file does not cover (1-row, tall, wide, odd sizes, no Nesterov, other NS step counts).
//
// It is checked against ../shared/golden/normuon_reference.txt (tests/tools/golden_reference_test):
// recomputing that file's cases from their inputs reproduces its parameters and state to ~1e-12,
// so derived cases carry the official implementation's semantics. Files made with it say so in
// their header comment (tools/golden_make).
#ifndef NORMUON_TOOLS_GOLDEN_REFERENCE_H_
#define NORMUON_TOOLS_GOLDEN_REFERENCE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/golden_format.h"

namespace normuon_tools {

// Recomputes c->params (one per step) and c->final_state from c's kind, hyper-parameters,
// param_init and grads (steps of them), in float64. Final state: momentum_final and
// second_moment_final (normuon), exp_avg_final and exp_avg_sq_final (adamw).
absl::Status ComputeReference(GoldenCase* c);

// What MakeRandomCase draws.
struct RandomCaseSpec {
  std::string name;
  GoldenKind kind = GoldenKind::kNormuon;
  int64_t rows = 1;
  int64_t cols = 1;
  int steps = 3;
  double lr = 0.02;
  double beta1 = 0.95;
  double beta2 = 0.95;
  double weight_decay = 0.01;
  double eps = 1e-10;
  bool nesterov = true;
  int ns_steps = 5;
  double init_std = 0.1;  // param_init ~ N(0, init_std^2)
  double grad_std = 1.0;  // grads ~ N(0, grad_std^2)
  uint64_t seed = 1;
};

// A case with random param_init and gradients (a fixed generator: the same spec gives the same
// numbers on every platform) and its reference parameters and state from ComputeReference.
absl::StatusOr<GoldenCase> MakeRandomCase(const RandomCaseSpec& spec);

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_GOLDEN_REFERENCE_H_
