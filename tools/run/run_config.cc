// normuon_run's flags and their reading into a RunSetup (run_config.h).
#include "tools/run/run_config.h"

#include <optional>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tools/common/api_flags.h"
#include "tools/common/enum_flags.h"
#include "tools/common/model_layout.h"

ABSL_FLAG(std::string, model, "gpt2-124m",
          "model shape list by name (tiny, gpt2-124m, gpt2-350m, llama-1b-layer, llama-1b, "
          "llama-8b-layer, llama-8b); ignored when --shapes is given");
ABSL_FLAG(std::string, shapes, "", "path of a shape-list file (instead of --model)");
ABSL_FLAG(normuon_backend_t, backend, NORMUON_BACKEND_CPU, "cpu or cuda");
ABSL_FLAG(int, device, 0, "CUDA device ordinal (--backend=cuda)");
ABSL_FLAG(int, steps, 3, "optimizer steps to run");
ABSL_FLAG(normuon_ns_dtype_t, ns_dtype, NORMUON_NS_DEFAULT,
          "Newton-Schulz precision: default (fp32 on cpu, bf16 on cuda), fp32, bf16 or fp16 "
          "(cuda only)");
ABSL_FLAG(normuon_ns_method_t, ns_method, NORMUON_NS_METHOD_STANDARD,
          "orthogonalization: standard, or gram (Gram Newton-Schulz with the library's default "
          "restarts)");
ABSL_FLAG(bool, ns_symmetric_products, false,
          "gram on cuda: compute the symmetric products over their lower-triangle tiles "
          "(config.ns_symmetric_products = 1); the cpu backend always uses its triangle products");
ABSL_FLAG(uint64_t, seed, 1, "seed of the parameters and gradients");
ABSL_FLAG(double, lr, 0.02, "NorMuon learning rate");
ABSL_FLAG(double, weight_decay, 0.01, "NorMuon weight decay");
ABSL_FLAG(bool, json, false, "print one JSON object instead of text");
ABSL_FLAG(int, ranks, 1,
          "in-process ranks (threads) of the sharded step, FSDP2 row split (CUDA: the ranks share "
          "one GPU through a device-memory in-process group)");
ABSL_FLAG(int, tp, 1,
          "tensor-parallel size: the Megatron layout on --ranks ranks, --tp per TP group (must "
          "divide --ranks): attention QKV, MLP up/gate, embeddings and head split by rows over "
          "the TP ranks (column-parallel), attention output and MLP down projections by columns "
          "(row-parallel); FSDP2 rows inside each TP piece over the --ranks / --tp data-parallel "
          "ranks; AdamW entries FSDP2 rows over all ranks. Both backends (CUDA column pieces: not yet "
          "run on a GPU)");
ABSL_FLAG(std::string, qkv_layout, "interleaved",
          "with --tp: how a fused attention QKV (GPT-2's c_attn) is split over the TP ranks: "
          "interleaved (Megatron's: each TP rank's q, k and v rows are one range) or separate "
          "(q, k and v blocks one after the other, each TP rank holding its rows of each: three "
          "pieces per rank, registered as a list of rectangles, normuon_param_desc_t.pieces; "
          "both backends (CUDA: compiled, not yet run on a GPU))");
ABSL_FLAG(normuon_tools::run::CommKind, comm, normuon_tools::run::CommKind::kInProcess,
          "how the ranks are joined: inprocess (--ranks threads of this process) or mpi (one "
          "rank per process, started by mpirun; needs the MPI build: "
          "bazel-bin/tools/normuon_run_mpi)");
ABSL_FLAG(double, timeout, 600.0,
          "--comm=mpi: seconds the MPI communicator waits for any collective before it fails the "
          "step with NORMUON_ERROR_TIMEOUT");
ABSL_FLAG(normuon_owner_policy_t, owner_policy, NORMUON_OWNER_ROUND_ROBIN,
          "which rank orthogonalizes each matrix: round_robin or cost_balanced");
ABSL_FLAG(std::optional<normuon_schedule_t>, schedule, std::nullopt,
          "communication schedule: sequential, per_matrix or bucketed; default sequential, or "
          "bucketed with --overlap_backward (as the PyTorch front end)");
ABSL_FLAG(double, bucket_mb, 32.0, "bucketed schedule: MiB of wire data per bucket");
ABSL_FLAG(std::string, trace, "",
          "write a Chrome trace (Perfetto) of the last step of every rank to this file");
ABSL_FLAG(bool, overlap_backward, false,
          "after the plain steps, run the same number of steps with a simulated backward pass: "
          "per layer (last first) a timed wait, then normuon_grad_ready for that layer's "
          "matrices; reports the optimizer time still exposed after the last gradient. Needs a "
          "pipelined schedule: bucketed unless --schedule says per_matrix");
ABSL_FLAG(double, backward_ms_per_layer, 0.0,
          "--overlap_backward: duration of one layer's backward; 0 = twice the plain step time "
          "spread over the layers");
ABSL_FLAG(bool, check, false,
          "also run the single-rank step and report the largest difference (exit 1 if not 0 on "
          "CPU)");
ABSL_FLAG(double, check_tol, -1.0,
          "with --check and --backend=cuda: exit 1 when the largest difference is over this "
          "(< 0: report only). The CPU backend must always be exact");
ABSL_FLAG(normuon_tools::run::CheckAgainst, check_against, normuon_tools::run::CheckAgainst::kSame,
          "with --check: the single-rank run to compare with, on the same backend ('same') or on "
          "the CPU backend with the same Newton-Schulz precision ('cpu')");

namespace normuon_tools::run {

namespace {
constexpr CheckAgainst kCheckAgainst[] = {CheckAgainst::kSame, CheckAgainst::kCpu};
constexpr CommKind kCommKinds[] = {CommKind::kInProcess, CommKind::kMpi};
}  // namespace

absl::string_view CommKindName(CommKind c) {
  return c == CommKind::kInProcess ? "inprocess" : "mpi";
}

bool AbslParseFlag(absl::string_view text, CommKind* out, std::string* error) {
  return ParseEnumFlag(text, "comm", kCommKinds, CommKindName, out, error);
}

std::string AbslUnparseFlag(CommKind value) { return std::string(CommKindName(value)); }

CommKind CommFromFlags() { return absl::GetFlag(FLAGS_comm); }

absl::string_view CheckAgainstName(CheckAgainst c) {
  return c == CheckAgainst::kSame ? "same" : "cpu";
}

bool AbslParseFlag(absl::string_view text, CheckAgainst* out, std::string* error) {
  return ParseEnumFlag(text, "check_against", kCheckAgainst, CheckAgainstName, out, error);
}

std::string AbslUnparseFlag(CheckAgainst value) { return std::string(CheckAgainstName(value)); }

absl::StatusOr<std::unique_ptr<RunSetup>> SetupFromFlags(absl::string_view argv0,
                                                         int process_world) {
  auto setup = std::make_unique<RunSetup>();
  RankConfig& rc = setup->rank;
  rc.backend = absl::GetFlag(FLAGS_backend);
  if (rc.backend == NORMUON_BACKEND_CUDA && !normuon_has_cuda()) {
    return absl::FailedPreconditionError("the normuon library was built without CUDA");
  }
  rc.device = absl::GetFlag(FLAGS_device);
  rc.ns_dtype = absl::GetFlag(FLAGS_ns_dtype);
  rc.ns_method = absl::GetFlag(FLAGS_ns_method);
  rc.ns_symmetric_products = absl::GetFlag(FLAGS_ns_symmetric_products) ? 1 : 0;
  rc.steps = absl::GetFlag(FLAGS_steps);
  if (rc.steps < 1) return absl::InvalidArgumentError("--steps must be at least 1");
  setup->ranks = absl::GetFlag(FLAGS_ranks);
  if (setup->ranks < 1 || setup->ranks > 4096) {
    return absl::InvalidArgumentError("--ranks must be in [1, 4096]");
  }
  setup->comm = absl::GetFlag(FLAGS_comm);
  setup->timeout_s = absl::GetFlag(FLAGS_timeout);
  if (!(setup->timeout_s > 0.0 && setup->timeout_s <= 1e7)) {
    return absl::InvalidArgumentError("--timeout must be > 0 and <= 1e7 seconds");
  }
  if (setup->comm == CommKind::kMpi) {
    if (process_world < 1) {
      return absl::FailedPreconditionError(
          "--comm=mpi: this normuon_run is built without MPI; build //tools:normuon_run_mpi and "
          "start it with mpirun (mpirun -np 4 bazel-bin/tools/normuon_run_mpi --comm=mpi ...)");
    }
    // One rank per process: --ranks may only repeat the number of processes.
    if (setup->ranks != 1 && setup->ranks != process_world) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--ranks=", setup->ranks, " disagrees with --comm=mpi's ", process_world,
          " processes: with --comm=mpi every process is one rank (leave --ranks out)"));
    }
    setup->ranks = process_world;
  }
  rc.policy = absl::GetFlag(FLAGS_owner_policy);
  setup->check = absl::GetFlag(FLAGS_check);
  setup->check_against = absl::GetFlag(FLAGS_check_against);
  setup->check_tol = absl::GetFlag(FLAGS_check_tol);
  const double bucket_mb = absl::GetFlag(FLAGS_bucket_mb);
  if (!(bucket_mb > 0.0 && bucket_mb < 1e7)) {
    return absl::InvalidArgumentError("--bucket_mb must be > 0");
  }
  rc.bucket_bytes = static_cast<uint64_t>(bucket_mb * 1048576.0);
  setup->trace_path = absl::GetFlag(FLAGS_trace);
  rc.trace = !setup->trace_path.empty();
  const bool overlap = absl::GetFlag(FLAGS_overlap_backward);
  rc.backward_ms_per_layer = absl::GetFlag(FLAGS_backward_ms_per_layer);
  if (rc.backward_ms_per_layer < 0.0) {
    return absl::InvalidArgumentError("--backward_ms_per_layer must be >= 0");
  }
  // Under the sequential schedule nothing starts before the step is called, so an overlapped
  // backward hides nothing; the PyTorch front end picks the bucketed schedule for
  // overlap_backward, and so does this tool unless told otherwise.
  const std::optional<normuon_schedule_t> schedule = absl::GetFlag(FLAGS_schedule);
  if (overlap && schedule == NORMUON_SCHEDULE_SEQUENTIAL) {
    return absl::InvalidArgumentError(
        "--overlap_backward needs a pipelined schedule: under --schedule=sequential no work "
        "starts before the last gradient (use --schedule=bucketed or per_matrix, or leave "
        "--schedule out for bucketed)");
  }
  if (overlap && !schedule.has_value()) {
    rc.schedule = NORMUON_SCHEDULE_BUCKETED;
    setup->notes.push_back(
        "--overlap_backward without --schedule: using the bucketed schedule, as the PyTorch "
        "front end does (under sequential nothing starts before the last gradient)");
  } else {
    rc.schedule = schedule.value_or(NORMUON_SCHEDULE_SEQUENTIAL);
  }
  setup->json = absl::GetFlag(FLAGS_json);

  const std::string shapes_path = absl::GetFlag(FLAGS_shapes);
  setup->model = shapes_path.empty() ? absl::GetFlag(FLAGS_model) : shapes_path;
  absl::StatusOr<ModelShapes> shapes = shapes_path.empty()
                                           ? LoadModel(setup->model, argv0)
                                           : ReadModelShapesFile(shapes_path);
  if (!shapes.ok()) {
    return absl::Status(shapes.status().code(),
                        absl::StrCat(shapes_path.empty() ? "--model: " : "--shapes: ",
                                     shapes.status().message()));
  }
  setup->shapes = *std::move(shapes);
  setup->tp = absl::GetFlag(FLAGS_tp);
  if (setup->tp < 1 || setup->ranks % setup->tp != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--tp = ", setup->tp,
                                                   " must be >= 1 and divide --ranks = ",
                                                   setup->ranks));
  }
  const std::string qkv_layout = absl::GetFlag(FLAGS_qkv_layout);
  if (qkv_layout != "interleaved" && qkv_layout != "separate") {
    return absl::InvalidArgumentError(absl::StrCat("--qkv_layout = '", qkv_layout,
                                                   "': expected interleaved or separate"));
  }
  setup->separate_qkv = qkv_layout == "separate";
  absl::StatusOr<PieceLists> layout =
      MegatronPieces(setup->shapes, setup->tp, setup->ranks, setup->separate_qkv);
  if (!layout.ok()) return absl::InvalidArgumentError(absl::StrCat("--tp: ", layout.status().message()));
  setup->layout = *std::move(layout);

  rc.model = &setup->shapes;
  rc.layout = &setup->layout;
  rc.seed = absl::GetFlag(FLAGS_seed);
  rc.lr = static_cast<float>(absl::GetFlag(FLAGS_lr));
  rc.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  rc.keep_params = setup->check;
  rc.verbose = !setup->json && setup->ranks == 1;
  rc.overlap_steps = overlap ? rc.steps : 0;
  rc.layers = BackwardLayers(setup->shapes);
  return setup;
}

}  // namespace normuon_tools::run
