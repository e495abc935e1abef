// golden_compare.h: the arithmetic of a golden check (docs/ARCHITECTURE.md section 6, "Tolerances").
//
// A step's update is the parameter after the step minus the parameter before it. Ours (fp32
// parameters, differenced in double) is compared with the reference's (float64) by
//   rel = ||ours - ref|| / ||ref||                 (reported)
//   pass: ||ours - ref|| <= tol * ||ref|| + floor,  floor = 2.4e-7 * ||W_after||
// where W_after is the reference parameter after the step: the floor covers the fp32 rounding
// of W itself, without which small updates (every AdamW case) cannot pass. Final optimizer state
// is compared by plain relative error: ||ours - ref|| <= tol * ||ref||.
//
// Tolerances: fp32 mode (CPU, or CUDA with ns_dtype fp32): update 1e-5, all state 1e-5.
// bf16 mode (CUDA default): update 7e-2, momentum and AdamW state 1e-6 (they never touch bf16),
// NorMuon's v 1.5e-1.
#ifndef NORMUON_TOOLS_GOLDEN_COMPARE_H_
#define NORMUON_TOOLS_GOLDEN_COMPARE_H_

#include <cstdint>

#include "absl/types/span.h"

namespace normuon_tools {

enum class Precision { kFp32, kBf16 };

// "fp32" or "bf16".
const char* PrecisionName(Precision precision);

// Relative floor on update comparisons, times ||W_after||.
inline constexpr double kUpdateFloorFactor = 2.4e-7;

struct Tolerances {
  double update = 1e-5;         // relative, on each step's update (plus the floor)
  double momentum = 1e-5;       // NorMuon momentum
  double second_moment = 1e-5;  // NorMuon v
  double adam_state = 1e-5;     // AdamW exp_avg and exp_avg_sq
  double floor_factor = kUpdateFloorFactor;
};

// The tolerances docs/ARCHITECTURE.md section 6 sets for a precision mode.
Tolerances DefaultTolerances(Precision precision);

struct UpdateError {
  double abs_error = 0.0;  // ||ours - ref||
  double ref_norm = 0.0;   // ||ref||
  double rel_error = 0.0;  // abs_error / ref_norm (0 if both are 0, inf if only ref is 0)
  double floor = 0.0;      // floor_factor * ||ref W_after||
  double bound = 0.0;      // tol * ref_norm + floor
  double bound_use = 0.0;  // abs_error / bound: <= 1 passes (0 if both are 0)
  bool pass = false;       // abs_error <= bound (false on NaN)
};

// Compares one step's update. before/after: our fp32 parameter around the step; ref_before /
// ref_after: the reference's. All four have the same length.
UpdateError CompareUpdate(absl::Span<const float> before, absl::Span<const float> after,
                          absl::Span<const double> ref_before, absl::Span<const double> ref_after,
                          double tol, double floor_factor = kUpdateFloorFactor);

struct StateError {
  double abs_error = 0.0;
  double ref_norm = 0.0;
  double rel_error = 0.0;  // abs_error / ref_norm (0 if both are 0, inf if only ref is 0)
  double tol = 0.0;
  bool pass = false;  // abs_error <= tol * ref_norm (false on NaN)
};

// Compares a state buffer (ours fp32, reference float64, same length).
StateError CompareState(absl::Span<const float> ours, absl::Span<const double> ref, double tol);

// ||a - b|| and ||b|| in double; a and b of equal length.
double DiffNorm(absl::Span<const double> a, absl::Span<const double> b);
double Norm(absl::Span<const double> a);

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_GOLDEN_COMPARE_H_
