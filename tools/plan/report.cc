// The planner's report (report.h): plans and simulations per schedule, rendered as text or JSON.
#include "tools/plan/report.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "tools/common/api_flags.h"
#include "tools/common/json.h"
#include "tools/common/model_layout.h"

namespace normuon::plan {
namespace {

using normuon_tools::JsonQuote;
using normuon_tools::ScheduleName;

constexpr double kMiB = 1048576.0;

// A JSON number; non-finite values (which JSON cannot hold) become null.
std::string Num(double v, const char* format = "%.6g") {
  if (!std::isfinite(v)) return "null";
  return absl::StrFormat(format, v);
}

std::string Ms(double v) { return Num(v, "%.4f"); }

// The step's Newton-Schulz FLOPs over all matrices (sharding::NsFlops under the plan's cost).
double TotalNsFlops(const ReportInputs& in) {
  double total = 0.0;
  for (const normuon_tools::ModelShape& e : in.shapes.entries) {
    if (e.kind == ParamKind::kMatrix) total += sharding::NsFlops(e.rows, e.cols, in.options.ns_cost);
  }
  return total;
}

const char* DtypeName(int64_t wire) { return wire == 2 ? "bf16" : "fp32"; }

std::string PhasesJson(const PhaseTimes& p) {
  // The keys of normuon_run's "phases_rank0", so the two can be compared field by field.
  return absl::StrCat("{\"momentum_ms\": ", Ms(p.blend), ", \"gather_ms\": ", Ms(p.gather),
                      ", \"newton_schulz_ms\": ", Ms(p.compute), ", \"scatter_ms\": ",
                      Ms(p.scatter), ", \"row_stats_ms\": ", Ms(p.stats + p.reduce),
                      ", \"update_ms\": ", Ms(p.commit), ", \"adamw_ms\": ", Ms(p.adamw),
                      ", \"exposed_comm_ms\": ", Ms(p.exposed_comm), "}");
}

std::string MachineJson(const Machine& m, int world) {
  if (m.kind == MachineKind::kCpuInprocess) {
    return absl::StrCat("{\"kind\": \"cpu_inprocess\", \"cores\": ", m.cores,
                        ", \"blas_threads\": ", m.blas_threads,
                        ", \"collective_us\": ", m.collective_us, "}");
  }
  const int nodes = (world + m.gpus_per_node - 1) / m.gpus_per_node;
  return absl::StrCat(
      "{\"kind\": \"cluster\", \"gpus_per_node\": ", m.gpus_per_node, ", \"nodes\": ", nodes,
      ", \"intra\": {\"gbps\": ", Num(m.intra.gbps), ", \"latency_us\": ", Num(m.intra.latency_us),
      "}, \"inter\": {\"gbps\": ", Num(m.inter.gbps), ", \"latency_us\": ",
      Num(m.inter.latency_us), "}, \"link_model\": ", JsonQuote(LinkModelName(m.link_model)),
      ", \"kernel_us\": ", Num(m.kernel_us),
      ", \"backward_shares_gpu\": ", m.backward_shares_compute ? "true" : "false", "}");
}

std::string RatesJson(const KernelRates& r) {
  std::vector<std::string> points;
  for (const NsRateTable::Point& p : r.ns.points()) {
    points.push_back(absl::StrCat("{\"rows\": ", p.rows, ", \"cols\": ", p.cols,
                                  ", \"tflops\": ", Num(p.tflops), "}"));
  }
  std::vector<std::string> kernels;
  for (int k = 0; k < kKernelCount; ++k) {
    kernels.push_back(absl::StrCat(JsonQuote(KernelName(static_cast<Kernel>(k))), ": ",
                                   Num(r.Gbps(static_cast<Kernel>(k)))));
  }
  return absl::StrCat("{\"source\": ", JsonQuote(r.source),
                      ", \"ns_default_tflops\": ", Num(r.ns.default_tflops()),
                      ", \"ns_points\": [", absl::StrJoin(points, ", "),
                      "], \"mem_gbps\": ", Num(r.mem_gbps), ", \"kernel_gbps\": {",
                      absl::StrJoin(kernels, ", "), "}}");
}

// The fraction of the plain step hidden behind the backward pass; exactly 0 when nothing
// started early (the sequential schedule), rather than a rounding-error -0.0.
double Hidden(double exposed, double plain) {
  if (!(plain > 0.0)) return 0.0;
  const double h = 1.0 - exposed / plain;
  return std::fabs(h) < 1e-9 ? 0.0 : h;
}

}  // namespace

absl::StatusOr<Report> MakeReport(ReportInputs in) {
  Report report;
  if (in.schedules.empty()) return absl::InvalidArgumentError("no schedule to report");
  const bool backward = in.sim.backward_ms_per_layer > 0.0;
  if (backward) {
    in.sim.layers = normuon_tools::BackwardLayers(in.shapes);
    report.layers = static_cast<int>(in.sim.layers.size());
  }
  for (normuon_schedule_t s : in.schedules) {
    ScheduleReport sr;
    sr.schedule = s;
    PlanOptions o = in.options;
    o.schedule = s;
    NORMUON_ASSIGN_OR_RETURN(sr.plan, BuildStepPlan(in.shapes, o));
    SimOptions plain = in.sim;
    plain.backward_ms_per_layer = 0.0;
    NORMUON_ASSIGN_OR_RETURN(sr.plain, SimulateStep(sr.plan, plain));
    if (backward) {
      sr.overlap = true;
      NORMUON_ASSIGN_OR_RETURN(sr.backward, SimulateStep(sr.plan, in.sim));
    }
    report.schedules.push_back(std::move(sr));
  }
  report.in = std::move(in);
  return report;
}

std::string ReportJson(const Report& report, bool verbose) {
  const ReportInputs& in = report.in;
  const int world = in.options.world;
  std::string out = "{";
  absl::StrAppend(&out, "\"model\": ", JsonQuote(in.model),
                  ", \"source\": ", JsonQuote(in.shapes.source),
                  ", \"matrices\": ", in.shapes.num_matrices(),
                  ", \"matrix_elements\": ", in.shapes.matrix_elements(),
                  ", \"adamw_params\": ", in.shapes.num_adamw(),
                  ", \"elements\": ", in.shapes.total_elements(), ", \"world\": ", world);
  absl::StrAppend(&out, ", \"machine\": ", MachineJson(in.sim.machine, world),
                  ", \"ns_dtype\": ", JsonQuote(DtypeName(in.options.wire_bytes)),
                  ", \"wire_bytes\": ", in.options.wire_bytes,
                  ", \"ns_method\": ", JsonQuote(sharding::NsMethodName(in.options.ns_cost.method)),
                  ", \"ns_cost\": ", JsonQuote(sharding::NsCostDescription(in.options.ns_cost)),
                  ", \"ns_flops_total\": ", Num(TotalNsFlops(in), "%.17g"),
                  ", \"owner_policy\": ", JsonQuote(sharding::OwnerPolicyName(in.options.policy)),
                  ", \"bucket_mb\": ", Num(static_cast<double>(in.options.bucket_bytes) / kMiB),
                  ", \"rates\": ", RatesJson(in.sim.rates),
                  ", \"backward_ms_per_layer\": ", Num(in.sim.backward_ms_per_layer),
                  ", \"backward_layers\": ", report.layers);
  // Optimizer state per rank does not depend on the schedule.
  if (!report.schedules.empty()) {
    std::vector<std::string> ranks;
    const StepPlan& p = report.schedules.front().plan;
    for (int r = 0; r < world; ++r) {
      const RankSummary& rs = p.ranks[r];
      ranks.push_back(absl::StrCat("{\"rank\": ", r, ", \"momentum_bytes\": ", rs.momentum_bytes,
                                   ", \"v_bytes\": ", rs.v_bytes, ", \"adam_bytes\": ",
                                   rs.adam_bytes, ", \"state_bytes\": ", rs.state_bytes(), "}"));
    }
    absl::StrAppend(&out, ", \"state\": [", absl::StrJoin(ranks, ", "), "]");
  }
  std::vector<std::string> schedules;
  for (const ScheduleReport& sr : report.schedules) {
    std::string s = absl::StrCat(
        "{\"schedule\": ", JsonQuote(ScheduleName(sr.schedule)),
        ", \"buckets\": ", sr.plan.buckets.size(), ", \"slot_floats\": ", sr.plan.slot_floats,
        ", \"step_ms\": ", Ms(sr.plain.step_ms), ", \"exposed_comm_ms\": ",
        Ms(sr.plain.exposed_comm_ms), ", \"phases_rank0\": ", PhasesJson(sr.plain.ranks[0].phases));
    if (sr.overlap) {
      absl::StrAppend(&s, ", \"overlap_backward\": {\"backward_ms\": ", Ms(sr.backward.backward_ms),
                      ", \"exposed_after_last_grad_ms\": ", Ms(sr.backward.step_ms),
                      ", \"plain_step_ms\": ", Ms(sr.plain.step_ms), ", \"hidden_fraction\": ",
                      Num(Hidden(sr.backward.step_ms, sr.plain.step_ms), "%.4f"), "}");
    }
    std::vector<std::string> ranks;
    for (int r = 0; r < world; ++r) {
      const RankSummary& rs = sr.plan.ranks[r];
      std::string row = absl::StrCat(
          "{\"rank\": ", r, ", \"owned\": ", rs.owned.size(), ", \"ns5_flops\": ",
          Num(rs.ns5_flops, "%.17g"), ", \"bytes_sent\": ", rs.bytes_sent,
          ", \"bytes_received\": ", rs.bytes_received, ", \"step_ms\": ",
          Ms(sr.plain.ranks[r].step_ms), ", \"exposed_comm_ms\": ",
          Ms(sr.plain.ranks[r].phases.exposed_comm));
      if (sr.overlap) {
        absl::StrAppend(&row, ", \"exposed_after_last_grad_ms\": ",
                        Ms(sr.backward.ranks[r].step_ms));
      }
      if (verbose) {
        std::vector<std::string> names;
        for (int k : rs.owned) names.push_back(JsonQuote(sr.plan.matrices[k].name));
        absl::StrAppend(&row, ", \"owned_names\": [", absl::StrJoin(names, ", "), "]");
      }
      ranks.push_back(row + "}");
    }
    absl::StrAppend(&s, ", \"ranks\": [", absl::StrJoin(ranks, ", "), "]}");
    schedules.push_back(std::move(s));
  }
  absl::StrAppend(&out, ", \"schedules\": [", absl::StrJoin(schedules, ", "), "]}");
  return out;
}

std::string ReportText(const Report& report, bool verbose, int max_rank_lines) {
  const ReportInputs& in = report.in;
  const Machine& m = in.sim.machine;
  const int world = in.options.world;
  std::string out;
  absl::StrAppendFormat(&out,
                        "normuon_plan: model %s (%s): %d matrices (%.1fM elements), %d AdamW "
                        "parameters (%.1fM elements)\n",
                        in.model, in.shapes.source, in.shapes.num_matrices(),
                        in.shapes.matrix_elements() * 1e-6, in.shapes.num_adamw(),
                        (in.shapes.total_elements() - in.shapes.matrix_elements()) * 1e-6);
  if (m.kind == MachineKind::kCluster) {
    const int nodes = (world + m.gpus_per_node - 1) / m.gpus_per_node;
    absl::StrAppendFormat(&out,
                          "machine: cluster, world %d on %d node%s of %d GPUs; intra-node %g GB/s "
                          "%g us, inter-node %g GB/s %g us (%s model); %g us per kernel\n",
                          world, nodes, nodes == 1 ? "" : "s", m.gpus_per_node, m.intra.gbps,
                          m.intra.latency_us, m.inter.gbps, m.inter.latency_us,
                          LinkModelName(m.link_model), m.kernel_us);
  } else {
    absl::StrAppendFormat(&out,
                          "machine: cpu_inprocess, %d ranks sharing %d cores, %d BLAS thread%s "
                          "per Newton-Schulz call, exchanges are copies after %g us\n",
                          world, m.cores, m.blas_threads, m.blas_threads == 1 ? "" : "s",
                          m.collective_us);
  }
  absl::StrAppendFormat(&out, "numerics: Newton-Schulz %s, %s (wire %d bytes), owners %s, buckets of %g MiB\n",
                        DtypeName(in.options.wire_bytes),
                        sharding::NsCostDescription(in.options.ns_cost), in.options.wire_bytes,
                        sharding::OwnerPolicyName(in.options.policy),
                        static_cast<double>(in.options.bucket_bytes) / kMiB);
  absl::StrAppendFormat(&out, "Newton-Schulz work per step: %.4f TFLOP over all matrices\n",
                        TotalNsFlops(in) * 1e-12);
  const KernelRates& rt = in.sim.rates;
  std::string ns = rt.ns.empty()
                       ? absl::StrFormat("%g TFLOP/s for every shape", rt.ns.default_tflops())
                       : absl::StrFormat("%d measured shapes (%g to %g TFLOP/s, interpolated by FLOPs)",
                                         rt.ns.points().size(),
                                         std::min_element(rt.ns.points().begin(), rt.ns.points().end(),
                                                          [](const auto& a, const auto& b) {
                                                            return a.tflops < b.tflops;
                                                          })->tflops,
                                         std::max_element(rt.ns.points().begin(), rt.ns.points().end(),
                                                          [](const auto& a, const auto& b) {
                                                            return a.tflops < b.tflops;
                                                          })->tflops);
  std::vector<std::string> kernels;
  for (int k = 0; k < kKernelCount; ++k) {
    kernels.push_back(absl::StrFormat("%s %g", KernelName(static_cast<Kernel>(k)),
                                      rt.Gbps(static_cast<Kernel>(k))));
  }
  absl::StrAppendFormat(&out, "rates (%s): Newton-Schulz %s; memory-bound GB/s: %s\n", rt.source,
                        ns, absl::StrJoin(kernels, ", "));
  if (in.sim.backward_ms_per_layer > 0.0) {
    absl::StrAppendFormat(&out, "backward: %d layers x %g ms, released last layer first%s\n",
                          report.layers, in.sim.backward_ms_per_layer,
                          m.kind == MachineKind::kCluster && m.backward_shares_compute
                              ? " (sharing the GPU with the optimizer's kernels)"
                              : "");
  }

  out += "\nschedule     buckets  step ms (max rank)  exposed comm ms";
  if (in.sim.backward_ms_per_layer > 0.0) out += "  after last grad ms  hidden";
  out += "\n";
  for (const ScheduleReport& sr : report.schedules) {
    absl::StrAppendFormat(&out, "%-11s %8d %19.3f %16.3f", ScheduleName(sr.schedule),
                          sr.plan.buckets.size(), sr.plain.step_ms, sr.plain.exposed_comm_ms);
    if (sr.overlap) {
      absl::StrAppendFormat(&out, " %19.3f %6.1f%%", sr.backward.step_ms,
                            100.0 * Hidden(sr.backward.step_ms, sr.plain.step_ms));
    }
    out += "\n";
  }
  // Say why a pipeline loses, when it does: the reason is structural, not a rate.
  const ScheduleReport* seq = nullptr;
  for (const ScheduleReport& sr : report.schedules) {
    if (sr.schedule == NORMUON_SCHEDULE_SEQUENTIAL) seq = &sr;
  }
  for (const ScheduleReport& sr : report.schedules) {
    if (seq == nullptr || sr.schedule == NORMUON_SCHEDULE_SEQUENTIAL || world < 3) continue;
    if (sr.plain.step_ms <= 1.1 * seq->plain.step_ms) continue;
    absl::StrAppendFormat(&out,
                          "note: %s is %.1fx slower than sequential here. Its %d buckets of ~%.1f "
                          "matrices on %d ranks are one all-to-all each: a collective that feeds a "
                          "few owners uses only their links, and the collectives run one after "
                          "another; buckets of at least `world` matrices (the bucketed schedule) "
                          "or one bucket (sequential) use every link at once.\n",
                          ScheduleName(sr.schedule), sr.plain.step_ms / seq->plain.step_ms,
                          sr.plan.buckets.size(),
                          static_cast<double>(sr.plan.matrices.size()) /
                              std::max<size_t>(1, sr.plan.buckets.size()),
                          world);
  }

  // Ranks: owners and bytes of the last schedule listed (bucketed with --schedule=all).
  const ScheduleReport& main = report.schedules.back();
  absl::StrAppendFormat(&out,
                        "\nper rank (owned matrices, FLOPs and bytes of the %s schedule; step ms "
                        "of each schedule):\n",
                        ScheduleName(main.schedule));
  out += "rank  owned  NS5 GFLOP  state MiB   sent MiB   recv MiB";
  for (const ScheduleReport& sr : report.schedules) {
    absl::StrAppendFormat(&out, " %11s", ScheduleName(sr.schedule));
  }
  out += "\n";
  auto row = [&](int r) {
    const RankSummary& rs = main.plan.ranks[r];
    std::string line = absl::StrFormat("%4d %6d %10.2f %10.1f %10.2f %10.2f", r, rs.owned.size(),
                                       rs.ns5_flops * 1e-9, rs.state_bytes() / kMiB,
                                       rs.bytes_sent / kMiB, rs.bytes_received / kMiB);
    for (const ScheduleReport& sr : report.schedules) {
      absl::StrAppendFormat(&line, " %11.3f", sr.plain.ranks[r].step_ms);
    }
    line += "\n";
    if (verbose && !rs.owned.empty()) {
      std::vector<std::string> names;
      for (int k : rs.owned) names.push_back(main.plan.matrices[k].name);
      absl::StrAppend(&line, "      owns: ", absl::StrJoin(names, ", "), "\n");
    }
    return line;
  };
  const int shown = max_rank_lines <= 0 ? world : std::min(world, max_rank_lines);
  for (int r = 0; r < shown; ++r) out += row(r);
  if (shown < world) {
    int slowest = 0;
    for (int r = 1; r < world; ++r) {
      if (main.plain.ranks[r].step_ms > main.plain.ranks[slowest].step_ms) slowest = r;
    }
    absl::StrAppendFormat(&out, "  ... %d more ranks (--max_rank_lines=0 prints all)\n",
                          world - shown);
    if (slowest >= shown) {
      out += "slowest:\n";
      out += row(slowest);
    }
  }
  // Totals and extremes over all ranks.
  double max_flops = 0.0, max_state = 0.0, max_sent = 0.0;
  for (const RankSummary& rs : main.plan.ranks) {
    max_flops = std::max(max_flops, rs.ns5_flops);
    max_state = std::max(max_state, static_cast<double>(rs.state_bytes()));
    max_sent = std::max(max_sent, static_cast<double>(rs.bytes_sent));
  }
  absl::StrAppendFormat(&out, " max %6s %10.2f %10.1f %10.2f %10s", "", max_flops * 1e-9,
                        max_state / kMiB, max_sent / kMiB, "");
  for (const ScheduleReport& sr : report.schedules) {
    absl::StrAppendFormat(&out, " %11.3f", sr.plain.step_ms);
  }
  out += "\n";

  out += "\nrank 0 phases (ms): schedule     blend   gather  compute  scatter    stats   reduce   "
         "commit    adamw  exposed\n";
  for (const ScheduleReport& sr : report.schedules) {
    const PhaseTimes& p = sr.plain.ranks[0].phases;
    absl::StrAppendFormat(&out, "                    %-11s %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f\n",
                          ScheduleName(sr.schedule), p.blend, p.gather, p.compute, p.scatter,
                          p.stats, p.reduce, p.commit, p.adamw, p.exposed_comm);
  }
  return out;
}

}  // namespace normuon::plan
