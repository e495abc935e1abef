// normuon_plan: predicts what a sharded NorMuon step does and how long it takes on a machine we
// may not have (issue 4, "Planner for scale"; issue 9, the exposed time with backward overlap).
//
//   normuon_plan [--model=NAME | --shapes=FILE] [--world=N] [--machine=cluster|cpu_inprocess]
//                [--gpus_per_node=8] [--intra_gbps=300] [--intra_latency_us=3]
//                [--inter_gbps=50] [--inter_latency_us=10] [--link_model=port|peer]
//                [--kernel_us=X] [--cores=2] [--blas_threads=N]
//                [--schedule=all|sequential|per_matrix|bucketed] [--bucket_mb=32]
//                [--owner_policy=round_robin|cost_balanced] [--ns_dtype=default|bf16|fp32]
//                [--rates=FILE[,FILE...]] [--ns_tflops=X] [--mem_gbps=Y]
//                [--backward_ms_per_layer=X] [--json] [--verbose] [--max_rank_lines=N]
//                [--ns_method=standard|gram] [--ns_restarts=2] [--symmetric_products]
//                [--tp=T [--mesh_worlds=64,128,...] [--split_k=K]]
//
// --ns_method, --ns_restarts and --symmetric_products set how Newton-Schulz runs
// (sharding/ns_cost.h): the FLOPs charged per matrix and the cost-balanced owners' weights.
// --tp=T (T >= 1) prints instead the TP x DP mesh comparison of mesh_model.h at --world (T x DP
// GPUs) and at every world of --mesh_worlds: gather-to-owner, NS duplicated on every TP rank, a
// Gram all-reduce per iteration, and one matrix's Gram NS split over k ranks.
//
// Prints, per rank, the owned matrices, their Newton-Schulz FLOPs, the optimizer state, the
// bytes sent and received, and the predicted step time of each schedule; with
// --backward_ms_per_layer, also the time still exposed after the last gradient. The model of
// the step and of the machines is described in step_model.h; the sharding decisions are the
// runtime's own (sharding/). Rates: --rates reads Google Benchmark JSON files (the Newton-Schulz
// benchmark's "TFLOP/s" per shape, the kernel benchmark's "GB/s"); --ns_tflops and --mem_gbps
// set what no file measured.
//
// JSON (--json): one object with "model", "world", "machine", "rates", "state" (per rank:
// momentum, v and Adam bytes), and "schedules": per schedule "step_ms" (max over ranks),
// "exposed_comm_ms", "phases_rank0" (the keys of normuon_run's), "overlap_backward" (with a
// backward pass: "exposed_after_last_grad_ms", "hidden_fraction") and "ranks" (owned, ns5_flops,
// bytes_sent, bytes_received, step_ms; "owned_names" with --verbose).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "tools/common/api_flags.h"
#include "tools/common/json.h"
#include "tools/common/text_file.h"
#include "tools/model_shapes.h"
#include "sharding/ns_cost.h"
#include "tools/plan/mesh_model.h"
#include "tools/plan/plan_flags.h"
#include "tools/plan/report.h"
#include "tools/plan/step_model.h"

ABSL_FLAG(std::string, model, "gpt2-124m",
          "model shape list by name (tools/models: tiny, gpt2-124m, gpt2-350m, llama-1b, "
          "llama-8b, llama-70b, ...); ignored when --shapes is given");
ABSL_FLAG(std::string, shapes, "", "path of a shape-list file (instead of --model)");
ABSL_FLAG(int, world, 8, "ranks (GPUs, or in-process ranks with --machine=cpu_inprocess)");
ABSL_FLAG(normuon::plan::MachineKind, machine, normuon::plan::MachineKind::kCluster,
          "cluster (one GPU per rank, NVLink inside a node, InfiniBand across) or cpu_inprocess "
          "(the in-process group on this machine's cores, to check against normuon_run)");
ABSL_FLAG(int, gpus_per_node, 8, "cluster: GPUs per node");
ABSL_FLAG(double, intra_gbps, 300.0, "cluster: intra-node bandwidth per GPU per direction, GB/s");
ABSL_FLAG(double, intra_latency_us, 3.0, "cluster: intra-node latency per exchange, us");
ABSL_FLAG(double, inter_gbps, 50.0, "cluster: inter-node bandwidth per GPU per direction, GB/s");
ABSL_FLAG(double, inter_latency_us, 10.0, "cluster: inter-node latency per exchange, us");
ABSL_FLAG(normuon::plan::LinkModel, link_model, normuon::plan::LinkModel::kPort,
          "cluster: port (a GPU's bytes to all peers of a link class share its port) or peer "
          "(one full-duplex link per peer)");
ABSL_FLAG(double, kernel_us, -1.0,
          "overhead per kernel launched, us; -1 = 4 on a cluster, 0 on cpu_inprocess");
ABSL_FLAG(bool, backward_shares_gpu, true,
          "cluster: the simulated backward's kernels share the GPU with the optimizer's");
ABSL_FLAG(int, cores, 2, "cpu_inprocess: cores shared by all ranks");
ABSL_FLAG(double, collective_us, 0.0,
          "cpu_inprocess: fixed microseconds of every collective before its copies (thread "
          "hand-offs; for ranks that are MPI processes on this machine, the message protocol "
          "and polling: about 150-500 here, bench/RESULTS.md); 0 = not modelled");
ABSL_FLAG(int, blas_threads, 0,
          "cpu_inprocess: cores one Newton-Schulz call uses; 0 = 1 when --world > 1 (the runtime "
          "sets one OpenBLAS thread per rank), else --cores");
ABSL_FLAG(normuon::plan::ScheduleList, schedule, normuon::plan::AllSchedules(),
          "all, sequential, per_matrix or bucketed");
ABSL_FLAG(double, bucket_mb, 32.0, "bucketed schedule: MiB of wire data per bucket");
ABSL_FLAG(normuon_owner_policy_t, owner_policy, NORMUON_OWNER_ROUND_ROBIN,
          "round_robin or cost_balanced");
ABSL_FLAG(normuon_ns_dtype_t, ns_dtype, NORMUON_NS_DEFAULT,
          "Newton-Schulz wire and GEMM dtype: default (bf16 on a cluster, fp32 on "
          "cpu_inprocess, as the backends), bf16 or fp32");
ABSL_FLAG(std::string, rates, "",
          "comma-separated Google Benchmark JSON files: Newton-Schulz TFLOP/s per shape "
          "(BM_NewtonSchulz*/ROWS/COLS) and kernel GB/s (bench:cpu_kernel_rates_bench); "
          "the best entry per shape wins. cpu_inprocess: measure with one BLAS thread, and "
          "where cores share FMA units or memory, as --cores concurrent copies of the benchmark "
          "(tools/plan/README.md)");
ABSL_FLAG(double, ns_tflops, 0.0,
          "Newton-Schulz TFLOP/s for shapes when no --rates file measured any; 0 = 600 (bf16) "
          "or 50 (fp32) on a cluster (an H100 at about 0.6 of its dense peak), 0.05 per core "
          "on cpu_inprocess");
ABSL_FLAG(double, mem_gbps, 0.0,
          "GB/s (bytes read + written) of memory-bound kernels no --rates file measured; 0 = "
          "3000 on a cluster (H100 HBM3), 5 per core on cpu_inprocess");
ABSL_FLAG(double, backward_ms_per_layer, 0.0,
          "> 0: also simulate a backward pass of this many ms per layer releasing gradients "
          "last layer first, and report the time exposed after the last gradient");
ABSL_FLAG(std::string, ns_method, "standard",
          "standard or gram: how Newton-Schulz runs, for its FLOPs and the cost-balanced "
          "owners (gram: square matrices still run standard)");
ABSL_FLAG(std::string, ns_restarts, "2",
          "gram: comma-separated iterations (0-based, in [1, 5)) restarted before; empty = none");
ABSL_FLAG(bool, symmetric_products, false,
          "count products with a symmetric result (X X^T, R R, ...) as one triangle (half the "
          "FLOPs)");
ABSL_FLAG(int, tp, 0,
          ">= 1: print the TP x DP mesh comparison (world = tp x dp) instead of the per-rank "
          "report");
ABSL_FLAG(std::string, mesh_worlds, "",
          "with --tp: comma-separated world sizes to compare besides --world (e.g. "
          "64,128,256,512,1024)");
ABSL_FLAG(int, split_k, 0,
          "with --tp: ranks per matrix of the split-Gram strategy; 0 = the best power of two");
ABSL_FLAG(bool, json, false, "print one JSON object instead of text");
ABSL_FLAG(bool, verbose, false, "list the names of the matrices each rank owns");
ABSL_FLAG(int, max_rank_lines, 32, "text: ranks listed (then the slowest); 0 = all");

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "normuon_plan: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "normuon_plan [--model=NAME | --shapes=FILE] [--world=N] [--machine=cluster|cpu_inprocess]\n"
      "  [link, rate and schedule flags; see --help]\n"
      "Predicts, per rank, the owned matrices, NS5 FLOPs, optimizer-state bytes, bytes sent and\n"
      "received, and the step time of each schedule of a sharded NorMuon step.");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() > 1) return Fail(absl::StrCat("unexpected argument '", args[1], "'"));
  using normuon::plan::MachineKind;

  normuon::plan::ReportInputs in;
  normuon::plan::Machine& m = in.sim.machine;
  m.kind = absl::GetFlag(FLAGS_machine);
  const bool cluster = m.kind == MachineKind::kCluster;

  const int world = absl::GetFlag(FLAGS_world);
  if (world < 1 || world > (1 << 20)) return Fail("--world must be in [1, 1048576]");
  in.options.world = world;
  m.gpus_per_node = absl::GetFlag(FLAGS_gpus_per_node);
  if (m.gpus_per_node < 1) return Fail("--gpus_per_node must be >= 1");
  m.intra = {absl::GetFlag(FLAGS_intra_gbps), absl::GetFlag(FLAGS_intra_latency_us)};
  m.inter = {absl::GetFlag(FLAGS_inter_gbps), absl::GetFlag(FLAGS_inter_latency_us)};
  if (!(m.intra.gbps > 0.0)) return Fail("--intra_gbps must be > 0");
  if (!(m.inter.gbps > 0.0)) return Fail("--inter_gbps must be > 0");
  if (!(m.intra.latency_us >= 0.0)) return Fail("--intra_latency_us must be >= 0");
  if (!(m.inter.latency_us >= 0.0)) return Fail("--inter_latency_us must be >= 0");
  m.link_model = absl::GetFlag(FLAGS_link_model);
  const double kernel_us = absl::GetFlag(FLAGS_kernel_us);
  if (kernel_us != -1.0 && !(kernel_us >= 0.0)) {
    return Fail("--kernel_us must be >= 0 (or -1 for the default)");
  }
  m.kernel_us = kernel_us == -1.0 ? (cluster ? 4.0 : 0.0) : kernel_us;
  m.backward_shares_compute = absl::GetFlag(FLAGS_backward_shares_gpu);
  m.cores = absl::GetFlag(FLAGS_cores);
  if (m.cores < 1) return Fail("--cores must be >= 1");
  const int blas = absl::GetFlag(FLAGS_blas_threads);
  if (blas < 0) return Fail("--blas_threads must be >= 0");
  m.blas_threads = blas > 0 ? blas : (world > 1 ? 1 : m.cores);
  m.collective_us = absl::GetFlag(FLAGS_collective_us);
  if (!(m.collective_us >= 0.0 && m.collective_us < 1e9)) {
    return Fail("--collective_us must be >= 0");
  }

  in.schedules = absl::GetFlag(FLAGS_schedule).schedules;
  const double bucket_mb = absl::GetFlag(FLAGS_bucket_mb);
  if (!(bucket_mb > 0.0 && bucket_mb < 1e7)) return Fail("--bucket_mb must be > 0 (and < 1e7)");
  in.options.bucket_bytes = static_cast<int64_t>(bucket_mb * 1048576.0);
  if (in.options.bucket_bytes < 1) in.options.bucket_bytes = 1;
  in.options.policy = normuon_tools::ShardingOwnerPolicy(absl::GetFlag(FLAGS_owner_policy));
  // The backends' own default: bf16 on a GPU cluster, fp32 on the CPU.
  in.options.wire_bytes =
      normuon_tools::EffectiveNsDtype(cluster ? NORMUON_BACKEND_CUDA : NORMUON_BACKEND_CPU,
                                      absl::GetFlag(FLAGS_ns_dtype)) == NORMUON_NS_BF16
          ? 2
          : 4;

  normuon::plan::KernelRates& rates = in.sim.rates;
  const double ns_tflops = absl::GetFlag(FLAGS_ns_tflops);
  if (!(ns_tflops >= 0.0)) return Fail("--ns_tflops must be > 0 (or 0 for the default)");
  rates.ns.set_default_tflops(ns_tflops > 0.0 ? ns_tflops
                              : cluster       ? (in.options.wire_bytes == 2 ? 600.0 : 50.0)
                                              : 0.05);
  const double mem_gbps = absl::GetFlag(FLAGS_mem_gbps);
  if (!(mem_gbps >= 0.0)) return Fail("--mem_gbps must be > 0 (or 0 for the default)");
  rates.mem_gbps = mem_gbps > 0.0 ? mem_gbps : cluster ? 3000.0 : 5.0;
  const std::string rate_files = absl::GetFlag(FLAGS_rates);
  if (!rate_files.empty()) {
    rates.source = rate_files;
    for (absl::string_view file : absl::StrSplit(rate_files, ',', absl::SkipEmpty())) {
      const std::string path(file);
      absl::StatusOr<std::string> text = normuon_tools::ReadTextFile(path, "rates file");
      if (!text.ok()) return Fail(absl::StrCat("--rates: ", text.status().message()));
      const absl::Status s =
          normuon::plan::AddBenchmarkRates(*text, path, in.options.wire_bytes, &rates);
      if (!s.ok()) return Fail(absl::StrCat("--rates: ", s.message()));
    }
  }
  const double backward = absl::GetFlag(FLAGS_backward_ms_per_layer);
  if (!(backward >= 0.0)) return Fail("--backward_ms_per_layer must be >= 0");
  in.sim.backward_ms_per_layer = backward;
  const int max_rank_lines = absl::GetFlag(FLAGS_max_rank_lines);
  if (max_rank_lines < 0) return Fail("--max_rank_lines must be >= 0");

  // How Newton-Schulz runs.
  normuon::sharding::NsCost& ns = in.options.ns_cost;
  {
    absl::StatusOr<normuon::sharding::NsMethod> method =
        normuon::sharding::ParseNsMethod(absl::GetFlag(FLAGS_ns_method));
    if (!method.ok()) return Fail(absl::StrCat("--ns_method: ", method.status().message()));
    ns.method = *method;
  }
  std::vector<int> restarts;
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_ns_restarts), ',', absl::SkipWhitespace())) {
    int i = 0;
    if (!absl::SimpleAtoi(part, &i)) {
      return Fail(absl::StrCat("--ns_restarts: '", part, "' is not an integer"));
    }
    restarts.push_back(i);
  }
  ns.symmetric = absl::GetFlag(FLAGS_symmetric_products);
  normuon::sharding::NsCost gram = normuon::sharding::GramDefaultCost();
  gram.restarts = restarts;
  gram.symmetric = ns.symmetric;
  if (const absl::Status s = normuon::sharding::ValidateNsCost(gram); !s.ok()) {
    return Fail(absl::StrCat("--ns_restarts: ", s.message()));
  }
  if (ns.method == normuon::sharding::NsMethod::kGram) ns.restarts = restarts;

  const int tp = absl::GetFlag(FLAGS_tp);
  if (tp < 0) return Fail("--tp must be >= 1 (or 0: no mesh comparison)");
  std::vector<int> mesh_worlds = {world};
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_mesh_worlds), ',', absl::SkipWhitespace())) {
    int w = 0;
    if (!absl::SimpleAtoi(part, &w) || w < 1 || w > (1 << 20)) {
      return Fail(absl::StrCat("--mesh_worlds: '", part, "' is not a world size in [1, 1048576]"));
    }
    if (tp < 1) return Fail("--mesh_worlds needs --tp");
    if (w % tp != 0) {
      return Fail(absl::StrCat("--mesh_worlds: ", w, " is not a multiple of --tp=", tp));
    }
    if (w != world) mesh_worlds.push_back(w);
  }
  const int split_k = absl::GetFlag(FLAGS_split_k);
  if (split_k < 0 || (split_k & (split_k - 1)) != 0) {
    return Fail("--split_k must be 0 or a power of two");
  }
  if (tp >= 1) {
    if (!cluster) return Fail("--tp needs --machine=cluster");
    if (world % tp != 0) {
      return Fail(absl::StrCat("--tp=", tp, " does not divide --world=", world));
    }
    for (int w : mesh_worlds) {
      if (split_k > w) {
        return Fail(absl::StrCat("--split_k=", split_k, " is larger than the world ", w));
      }
    }
  }

  const std::string shapes_path = absl::GetFlag(FLAGS_shapes);
  in.model = shapes_path.empty() ? absl::GetFlag(FLAGS_model) : shapes_path;
  absl::StatusOr<normuon_tools::ModelShapes> shapes =
      shapes_path.empty() ? normuon_tools::LoadModel(in.model, argv[0])
                          : normuon_tools::ReadModelShapesFile(shapes_path);
  if (!shapes.ok()) {
    return Fail(absl::StrCat(shapes_path.empty() ? "--model: " : "--shapes: ",
                             shapes.status().message()));
  }
  in.shapes = *std::move(shapes);

  if (tp >= 1) {
    std::string text, json;
    for (int w : mesh_worlds) {
      normuon::plan::MeshOptions mo;
      mo.world = w;
      mo.tp = tp;
      mo.wire_bytes = in.options.wire_bytes;
      mo.ns_cost = in.options.ns_cost;
      mo.gram_cost = gram;
      mo.split_k = split_k;
      absl::StatusOr<std::vector<normuon::plan::MeshStrategyResult>> results =
          normuon::plan::CompareMeshStrategies(in.shapes, mo, in.sim.machine, in.sim.rates);
      if (!results.ok()) return Fail(std::string(results.status().message()));
      absl::StrAppend(&text, normuon::plan::MeshReportText(*results, mo));
      absl::StrAppend(&json, json.empty() ? "" : ", ", "{\"world\": ", w, ", \"tp\": ", tp,
                      ", \"strategies\": ", normuon::plan::MeshReportJson(*results), "}");
    }
    const std::string out =
        absl::GetFlag(FLAGS_json)
            ? absl::StrCat("{\"model\": ", normuon_tools::JsonQuote(in.model), ", \"ns_cost\": ",
                           normuon_tools::JsonQuote(normuon::sharding::NsCostDescription(in.options.ns_cost)),
                           ", \"split_gram_cost\": ",
                           normuon_tools::JsonQuote(normuon::sharding::NsCostDescription(gram)),
                           ", \"rates\": ", normuon_tools::JsonQuote(in.sim.rates.source),
                           ", \"mesh\": [", json, "]}\n")
            : absl::StrCat("model ", in.model, ", rates: ", in.sim.rates.source, "\n", text);
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  }

  absl::StatusOr<normuon::plan::Report> report = normuon::plan::MakeReport(std::move(in));
  if (!report.ok()) return Fail(std::string(report.status().message()));
  const bool verbose = absl::GetFlag(FLAGS_verbose);
  const std::string out = absl::GetFlag(FLAGS_json)
                              ? normuon::plan::ReportJson(*report, verbose) + "\n"
                              : normuon::plan::ReportText(*report, verbose, max_rank_lines);
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}
