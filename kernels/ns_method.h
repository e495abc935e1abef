// How the orthogonalization computes its polynomial (docs/ARCHITECTURE.md section 1, "Gram
// Newton-Schulz"), shared by both backends and the runtime. Pure functions of the coefficients and
// the shape; host only.
#ifndef NORMUON_KERNELS_NS_METHOD_H_
#define NORMUON_KERNELS_NS_METHOD_H_

#include <array>
#include <cstdint>
#include <vector>

#include "base/ns_method.h"  // NsMethod, UsesGram

namespace normuon {

// How the CUDA backend computes the Gram iteration's products that are symmetric in exact
// arithmetic (X X^T, R R, Q Z', R Z', Z' (R Z')): kDense in full (batched GEMMs); kTiles only the
// lower-triangle tile pairs (kernels/symmetric_plan.h, cublasGemmGroupedBatchedEx), mirrored to
// the upper triangle. config.ns_symmetric_products (normuon.h). The CPU backend ignores it: it
// always forms one triangle where that measured faster (ssyrk, newton_schulz_cpu.h).
enum class SymmetricProducts : int32_t { kDense = 0, kTiles = 1 };

// Why a Gram orthogonalization was redone with the standard iteration (normuon.h,
// normuon_step_info_t.ns_fallback_reason).
enum class NsFallback : int32_t { kNone = 0, kNonFinite = 1, kNormBound = 2 };

// The built-in coefficient sets for `iterations` iterations (normuon.h, normuon_orthogonalizer_t):
// the quintic's (3.4445, -4.7750, 2.0315) every iteration; Polar Express's five published triples
// (as Dion's polar_express.py), iterations past the fifth repeating the fifth.
std::vector<std::array<float, 3>> QuinticCoefficients(int32_t iterations);
std::vector<std::array<float, 3>> PolarExpressCoefficients(int32_t iterations);

// The Gram iteration's default restarts (0-based iterations preceded by a restart), chosen by
// measurement (bench/gram_accuracy, bench/RESULTS.md "Gram Newton-Schulz"): the quintic and custom
// coefficients restart once, before the second-to-last iteration; Polar Express, whose early
// coefficients are larger, before each of the last three (from iteration 1 on). None below 3
// iterations.
std::vector<int32_t> DefaultGramRestarts(int32_t iterations, bool polar_express);

// An upper bound of the Frobenius norm of a correct orthogonalization of a matrix with short side
// `short_side`, from the coefficients: the iterated polynomial's largest magnitude over the
// singular values the normalized input can have ([0, max(1, 1/norm_scale)]), times sqrt(s), with
// a margin of 1.5 for sampling and rounding. A result above it (or non-finite) has diverged.
double NsOutputNormBound(const std::vector<std::array<float, 3>>& coefficients, float norm_scale,
                         int64_t short_side);

}  // namespace normuon

#endif  // NORMUON_KERNELS_NS_METHOD_H_
