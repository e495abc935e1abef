// golden_compare.cc: update and state comparisons declared in golden_compare.h.
#include "tools/golden_compare.h"

#include <cassert>
#include <cmath>
#include <limits>

namespace normuon_tools {
namespace {

double Ratio(double num, double den) {
  if (den > 0.0) return num / den;
  if (num == 0.0) return 0.0;
  return std::isnan(num) ? num : std::numeric_limits<double>::infinity();
}

}  // namespace

const char* PrecisionName(Precision precision) {
  return precision == Precision::kFp32 ? "fp32" : "bf16";
}

Tolerances DefaultTolerances(Precision precision) {
  Tolerances t;
  if (precision == Precision::kBf16) {
    t.update = 7e-2;
    t.momentum = 1e-6;
    t.second_moment = 1.5e-1;
    t.adam_state = 1e-6;
  }
  return t;
}

double Norm(absl::Span<const double> a) {
  double sum = 0.0;
  for (double v : a) sum += v * v;
  return std::sqrt(sum);
}

double DiffNorm(absl::Span<const double> a, absl::Span<const double> b) {
  assert(a.size() == b.size());
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = a[i] - b[i];
    sum += d * d;
  }
  return std::sqrt(sum);
}

UpdateError CompareUpdate(absl::Span<const float> before, absl::Span<const float> after,
                          absl::Span<const double> ref_before, absl::Span<const double> ref_after,
                          double tol, double floor_factor) {
  assert(before.size() == after.size() && before.size() == ref_before.size() &&
         before.size() == ref_after.size());
  double diff2 = 0.0;
  double ref2 = 0.0;
  double w2 = 0.0;
  for (size_t i = 0; i < before.size(); ++i) {
    const double ours = static_cast<double>(after[i]) - static_cast<double>(before[i]);
    const double ref = ref_after[i] - ref_before[i];
    diff2 += (ours - ref) * (ours - ref);
    ref2 += ref * ref;
    w2 += ref_after[i] * ref_after[i];
  }
  UpdateError e;
  e.abs_error = std::sqrt(diff2);
  e.ref_norm = std::sqrt(ref2);
  e.rel_error = Ratio(e.abs_error, e.ref_norm);
  e.floor = floor_factor * std::sqrt(w2);
  e.bound = tol * e.ref_norm + e.floor;
  e.bound_use = Ratio(e.abs_error, e.bound);
  e.pass = e.abs_error <= e.bound;
  return e;
}

StateError CompareState(absl::Span<const float> ours, absl::Span<const double> ref, double tol) {
  assert(ours.size() == ref.size());
  double diff2 = 0.0;
  double ref2 = 0.0;
  for (size_t i = 0; i < ours.size(); ++i) {
    const double d = static_cast<double>(ours[i]) - ref[i];
    diff2 += d * d;
    ref2 += ref[i] * ref[i];
  }
  StateError e;
  e.abs_error = std::sqrt(diff2);
  e.ref_norm = std::sqrt(ref2);
  e.rel_error = Ratio(e.abs_error, e.ref_norm);
  e.tol = tol;
  e.pass = e.abs_error <= tol * e.ref_norm;
  return e;
}

}  // namespace normuon_tools
