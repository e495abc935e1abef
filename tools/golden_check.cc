// golden_check: runs every case of a golden file through the normuon C API and checks it.
//
//   golden_check FILE... [--backend=cpu|cuda] [--device=N] [--ns_dtype=default|fp32|bf16]
//                        [--tol=X] [--verbose]
//
// Prints one line per case (name, kind, shape, precision mode, the largest relative error of a
// step's update, the relative error of each final state buffer, PASS/FAIL) and, for a failing
// case or with --verbose, one line per step. Tolerances are docs/ARCHITECTURE.md section 6's (fp32 mode:
// update 1e-5, state 1e-5; bf16 mode: update 7e-2, momentum and AdamW state 1e-6, v 1.5e-1);
// --tol replaces the update tolerance. Exit status: 0 when every case passes, 1 when a case is
// over tolerance, 2 on a usage error, an unreadable or malformed file, or a failed API call
// (its normuon_last_error message is printed).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "normuon/normuon.h"
#include "tools/common/api_flags.h"
#include "tools/golden_format.h"
#include "tools/golden_runner.h"

// --backend and --ns_dtype are strings read with the C API enums' flag parsers
// (tools/common/api_flags.h) after absl::ParseCommandLine, not Abseil flag types: a bad value is
// a usage error, and golden_check's usage errors exit 2 (Abseil's own parser exits 1).
ABSL_FLAG(std::string, backend, "cpu", "cpu or cuda");
ABSL_FLAG(int, device, 0, "CUDA device ordinal (--backend=cuda)");
ABSL_FLAG(std::string, ns_dtype, "default",
          "Newton-Schulz precision: default (fp32 on cpu, bf16 on cuda), fp32 or bf16");
ABSL_FLAG(double, tol, -1.0, "relative update tolerance; negative = the mode's default");
ABSL_FLAG(bool, verbose, false, "print every step's errors, not only a failing case's");

namespace {

using normuon_tools::CaseResult;
using normuon_tools::GoldenCase;
using normuon_tools::RunOptions;

void PrintSteps(const CaseResult& result) {
  for (const normuon_tools::StepCheck& s : result.steps) {
    std::printf(
        "    step %d: update rel %.3e  |ours-ref| %.3e  |ref| %.3e  floor %.3e  "
        "%.2f of bound  %s\n",
        s.step, s.error.rel_error, s.error.abs_error, s.error.ref_norm, s.error.floor,
        s.error.bound_use, s.error.pass ? "ok" : "OVER");
  }
  for (const normuon_tools::StateCheck& s : result.states) {
    std::printf("    %s: rel %.3e  |ours-ref| %.3e  |ref| %.3e  tol %.1e  %s\n", s.name.c_str(),
                s.error.rel_error, s.error.abs_error, s.error.ref_norm, s.error.tol,
                s.error.pass ? "ok" : "OVER");
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "golden_check FILE... [--backend=cpu|cuda] [--ns_dtype=default|fp32|bf16] [--tol=X]\n"
      "Runs every case of golden files through the normuon C API and checks each step's update\n"
      "and the final optimizer state against the reference. Exit 0 = all pass, 1 = a case is\n"
      "over tolerance, 2 = usage, file or API error.");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::fprintf(stderr,
                 "usage: golden_check FILE... [--backend=cpu|cuda] "
                 "[--ns_dtype=default|fp32|bf16] [--tol=X] (--help for more)\n");
    return 2;
  }

  RunOptions options;
  const std::string backend = absl::GetFlag(FLAGS_backend);
  const std::string ns_dtype = absl::GetFlag(FLAGS_ns_dtype);
  auto usage_error = [](const std::string& value, const std::string& error) {
    std::fprintf(stderr, "golden_check: illegal value '%s': %s\n", value.c_str(), error.c_str());
    return 2;
  };
  std::string error;
  if (!AbslParseFlag(backend, &options.backend, &error)) return usage_error(backend, error);
  if (!AbslParseFlag(ns_dtype, &options.ns_dtype, &error)) return usage_error(ns_dtype, error);
  if (options.backend == NORMUON_BACKEND_CUDA) {
    if (!normuon_tools::ToolsHaveCuda()) {
      std::fprintf(stderr,
                   "golden_check: this build has no CUDA support (built without "
                   "NORMUON_WITH_CUDA)\n");
      return 2;
    }
    if (!normuon_has_cuda()) {
      std::fprintf(stderr, "golden_check: the normuon library was built without CUDA\n");
      return 2;
    }
  }
  options.device = absl::GetFlag(FLAGS_device);
  const double tol = absl::GetFlag(FLAGS_tol);
  if (tol >= 0.0) options.update_tol = tol;
  const bool verbose = absl::GetFlag(FLAGS_verbose);

  const normuon_tools::Tolerances t = normuon_tools::TolerancesFor(options);
  const int version = normuon_version();
  std::printf(
      "golden_check: normuon %d.%d.%d, backend %s, mode %s; tolerances: update %.1e "
      "(+ %.1e*|W|), momentum %.1e, v %.1e, adamw state %.1e\n",
      version / 10000, version / 100 % 100, version % 100, backend.c_str(),
      normuon_tools::PrecisionName(
          normuon_tools::EffectivePrecision(options.backend, options.ns_dtype)),
      t.update, t.floor_factor, t.momentum, t.second_moment, t.adam_state);

  int cases = 0, passed = 0, failed = 0, errors = 0;
  for (size_t f = 1; f < args.size(); ++f) {
    absl::StatusOr<std::vector<GoldenCase>> golden = normuon_tools::ReadGoldenFile(args[f]);
    if (!golden.ok()) {
      std::printf("ERROR %s\n", std::string(golden.status().message()).c_str());
      ++errors;
      continue;
    }
    for (const GoldenCase& c : *golden) {
      ++cases;
      absl::StatusOr<CaseResult> result = normuon_tools::RunGoldenCase(c, options);
      if (!result.ok()) {
        std::printf("%-24s ERROR %s\n", c.name.c_str(),
                    std::string(result.status().message()).c_str());
        ++errors;
        continue;
      }
      std::printf("%s\n", result->Summary().c_str());
      if (verbose || !result->pass) PrintSteps(*result);
      (result->pass ? passed : failed)++;
    }
  }
  std::printf("golden_check: %d cases: %d passed, %d failed, %d errors\n", cases, passed, failed,
              errors);
  std::fflush(stdout);
  if (errors > 0) return 2;
  return failed > 0 ? 1 : 0;
}
