// normuon_run's reports (run_report.h).
#include "tools/run/run_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "tools/common/api_flags.h"
#include "tools/common/json.h"

namespace normuon_tools::run {
namespace {

// The Newton-Schulz precision, and " gram" with ns_method = gram.
std::string Mode(const RankConfig& rc) {
  return absl::StrCat(NsDtypeName(EffectiveNsDtype(rc.backend, rc.ns_dtype)),
                      rc.ns_method == NORMUON_NS_METHOD_GRAM ? " gram" : "");
}

std::string PhaseLine(const normuon_step_profile_t& p, int steps) {
  const double n = steps;
  return absl::StrFormat(
      "momentum %.1f, gather %.1f, newton-schulz %.1f, scatter %.1f, row stats %.1f, "
      "update %.1f, adamw %.1f, finite check %.1f; exposed communication %.1f (ms per step)",
      p.momentum_ms / n, p.gather_ms / n, p.newton_schulz_ms / n, p.scatter_ms / n,
      p.row_stats_ms / n, p.update_ms / n, p.adamw_ms / n, p.finite_check_ms / n,
      p.exposed_comm_ms / n);
}

std::string PhaseJson(const normuon_step_profile_t& p, int steps) {
  const double n = steps;
  return absl::StrFormat(
      "{\"momentum_ms\": %.3f, \"gather_ms\": %.3f, \"newton_schulz_ms\": %.3f, "
      "\"scatter_ms\": %.3f, \"row_stats_ms\": %.3f, \"update_ms\": %.3f, \"adamw_ms\": %.3f, "
      "\"finite_check_ms\": %.3f, \"exposed_comm_ms\": %.3f}",
      p.momentum_ms / n, p.gather_ms / n, p.newton_schulz_ms / n, p.scatter_ms / n,
      p.row_stats_ms / n, p.update_ms / n, p.adamw_ms / n, p.finite_check_ms / n,
      p.exposed_comm_ms / n);
}

// How the ranks run: " as MPI processes", " as threads" (in-process group), or "" for one
// in-process rank.
const char* RanksAre(const RunSetup& setup) {
  if (setup.comm == CommKind::kMpi) {
    return setup.ranks == 1 ? " as an MPI process" : " as MPI processes";
  }
  return setup.ranks == 1 ? "" : " as threads";
}

}  // namespace

RunSummary Summarize(const RunSetup& setup, const std::vector<RankOutcome>& outcomes,
                     double max_diff) {
  RunSummary s;
  const int steps = setup.rank.steps;
  s.step_ms.assign(steps, 0.0);
  for (const RankOutcome& o : outcomes) {
    for (int k = 0; k < steps; ++k) s.step_ms[k] = std::max(s.step_ms[k], o.step_ms[k]);
    s.sum += o.sum;
    s.sum_sq += o.sum_sq;
    s.setup_ms = std::max(s.setup_ms, o.setup_ms);
    s.grad_ms = std::max(s.grad_ms, o.grad_ms);
    s.state_bytes = std::max(s.state_bytes, o.state_bytes);
  }
  double total_ms = 0.0;
  for (double ms : s.step_ms) total_ms += ms;
  s.mean_ms = total_ms / steps;
  s.steady_ms = steps > 1 ? (total_ms - s.step_ms[0]) / (steps - 1) : s.mean_ms;
  s.min_ms = *std::min_element(s.step_ms.begin(), s.step_ms.end());
  s.phases = outcomes[0].phases;
  s.have_phases = outcomes[0].have_phases;
  s.phase_steps = steps > 1 ? steps - 1 : 1;  // the steps whose phases were summed
  s.overlap = setup.rank.overlap_steps > 0;
  if (s.overlap) {
    const int overlapped = setup.rank.overlap_steps;
    for (int k = 0; k < overlapped; ++k) {
      double e = 0.0, b = 0.0;
      for (const RankOutcome& o : outcomes) {
        e = std::max(e, o.exposed_ms[k]);
        b = std::max(b, o.backward_ms[k]);
      }
      s.exposed_ms += e / overlapped;
      s.backward_ms += b / overlapped;
    }
    s.hidden = 1.0 - s.exposed_ms / s.steady_ms;
  }
  s.max_diff = max_diff;
  return s;
}

std::string HeaderText(const RunSetup& setup) {
  const ModelShapes& m = setup.shapes;
  return absl::StrFormat(
      "normuon_run: model %s (%s), backend %s, mode %s, %d rank%s%s (tp %d, %s), %d matrices "
      "(%d elements), %d adamw parameters, %d elements in all\n",
      setup.model, m.source, BackendName(setup.rank.backend), Mode(setup.rank), setup.ranks,
      setup.ranks == 1 ? "" : "s", RanksAre(setup), setup.tp, OwnerPolicyName(setup.rank.policy),
      m.num_matrices(), m.matrix_elements(), m.num_adamw(), m.total_elements());
}

std::string ReportText(const RunSetup& setup, const RunSummary& s) {
  std::string out = absl::StrFormat(
      "summary: world %d%s, %d steps: %.1f ms/step (mean), %.1f ms/step (without step 0), %.1f "
      "ms min; setup %.0f ms; state+buffers %.1f MiB (largest rank); gradient generation %.0f "
      "ms (untimed)\n",
      setup.ranks, RanksAre(setup), setup.rank.steps, s.mean_ms, s.steady_ms, s.min_ms,
      s.setup_ms, s.state_bytes / 1048576.0, s.grad_ms);
  if (s.have_phases) {
    absl::StrAppend(&out, "phases (rank 0): ", PhaseLine(s.phases, s.phase_steps), "\n");
  }
  absl::StrAppendFormat(&out, "checksum: param sum %.9e, param L2 norm %.9e\n", s.sum,
                        std::sqrt(s.sum_sq));
  if (s.overlap) {
    absl::StrAppendFormat(&out,
                          "overlap with a simulated backward (%d layers, %.0f ms): %.1f ms still "
                          "exposed after the last gradient vs %.1f ms for the plain step: %.1f%% "
                          "hidden\n",
                          setup.rank.layers.size(), s.backward_ms, s.exposed_ms, s.steady_ms,
                          100.0 * s.hidden);
  }
  if (setup.check) {
    absl::StrAppendFormat(
        &out, "check: max |sharded - single-rank (%s)| over every parameter element = %.9g%s\n",
        setup.check_against == CheckAgainst::kCpu ? "CPU" : BackendName(setup.rank.backend),
        s.max_diff, s.max_diff == 0.0 ? " (bitwise equal)" : "");
  }
  return out;
}

std::string ReportJson(const RunSetup& setup, const RunSummary& s) {
  const ModelShapes& m = setup.shapes;
  const RankConfig& rc = setup.rank;
  std::string out = "{";
  absl::StrAppend(&out, "\"model\": ", JsonQuote(setup.model), ", \"source\": ",
                  JsonQuote(m.source), ", \"backend\": ", JsonQuote(BackendName(rc.backend)),
                  ", \"mode\": ", JsonQuote(Mode(rc)), ", \"ranks\": ", setup.ranks,
                  ", \"tp\": ", setup.tp,
                  ", \"comm\": ", JsonQuote(CommKindName(setup.comm)),
                  ", \"owner_policy\": ", JsonQuote(OwnerPolicyName(rc.policy)),
                  ", \"matrices\": ", m.num_matrices(), ", \"matrix_elements\": ",
                  m.matrix_elements(), ", \"adamw_params\": ", m.num_adamw(),
                  ", \"elements\": ", m.total_elements(),
                  ", \"state_bytes_max_rank\": ", s.state_bytes, ", \"steps\": ", rc.steps,
                  ", \"seed\": ", rc.seed);
  absl::StrAppendFormat(&out, ", \"setup_ms\": %.3f, \"grad_gen_ms\": %.3f", s.setup_ms,
                        s.grad_ms);
  absl::StrAppend(&out, ", \"step_ms\": [",
                  absl::StrJoin(s.step_ms, ", ",
                                [](std::string* o, double v) {
                                  absl::StrAppend(o, absl::StrFormat("%.3f", v));
                                }),
                  "]");
  absl::StrAppendFormat(&out,
                        ", \"mean_step_ms\": %.3f, \"steady_step_ms\": %.3f, \"min_step_ms\": "
                        "%.3f, \"param_sum\": %.17g, \"param_norm\": %.17g",
                        s.mean_ms, s.steady_ms, s.min_ms, s.sum, std::sqrt(s.sum_sq));
  if (s.have_phases) {
    absl::StrAppend(&out, ", \"phases_rank0\": ", PhaseJson(s.phases, s.phase_steps));
  }
  if (setup.check) {
    absl::StrAppendFormat(&out, ", \"check_max_abs_diff\": %.9g", s.max_diff);
    absl::StrAppend(&out, ", \"check_against\": ",
                    JsonQuote(CheckAgainstName(setup.check_against)));
  }
  absl::StrAppend(&out, ", \"schedule\": ", JsonQuote(ScheduleName(rc.schedule)));
  if (s.overlap) {
    absl::StrAppendFormat(&out,
                          ", \"overlap_backward\": {\"backward_ms\": %.3f, "
                          "\"exposed_after_last_grad_ms\": %.3f, \"plain_step_ms\": %.3f, "
                          "\"hidden_fraction\": %.4f}",
                          s.backward_ms, s.exposed_ms, s.steady_ms, s.hidden);
  }
  return out + "}\n";
}

absl::Status WriteTrace(const std::string& path, const std::vector<RankOutcome>& outcomes) {
  std::string doc = "{\"traceEvents\":[\n";
  bool any = false;
  for (const RankOutcome& o : outcomes) {
    if (o.trace.empty()) continue;
    absl::StrAppend(&doc, any ? ",\n" : "", o.trace);
    any = true;
  }
  doc += "\n]}\n";
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr || std::fwrite(doc.data(), 1, doc.size(), f) != doc.size()) {
    if (f != nullptr) std::fclose(f);
    return absl::UnavailableError(absl::StrCat("cannot write the trace to ", path));
  }
  std::fclose(f);
  if (!any) return absl::FailedPreconditionError("no trace: step traces need the CPU backend");
  return absl::OkStatus();
}

}  // namespace normuon_tools::run
