// run_config.h: normuon_run's command line (the flags are defined in run_config.cc) and the run
// it describes: the model, its FSDP2 layout on the ranks, and what every rank does.
#ifndef NORMUON_TOOLS_RUN_RUN_CONFIG_H_
#define NORMUON_TOOLS_RUN_RUN_CONFIG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "normuon/normuon.h"
#include "sharding/shard.h"
#include "tools/model_shapes.h"

namespace normuon_tools::run {

// --check_against: the single-rank run a --check compares with.
enum class CheckAgainst { kSame, kCpu };
absl::string_view CheckAgainstName(CheckAgainst c);  // "same", "cpu"
bool AbslParseFlag(absl::string_view text, CheckAgainst* out, std::string* error);
std::string AbslUnparseFlag(CheckAgainst value);

// --comm: how the ranks of a run are joined.
//   kInProcess  --ranks threads of this process, joined by the in-process group;
//   kMpi        one rank per process, started by mpirun, joined by the MPI communicator
//               (include/normuon/mpi.h); only in the MPI build, //tools:normuon_run_mpi.
enum class CommKind { kInProcess, kMpi };
absl::string_view CommKindName(CommKind c);  // "inprocess", "mpi"
bool AbslParseFlag(absl::string_view text, CommKind* out, std::string* error);
std::string AbslUnparseFlag(CommKind value);

// What every rank of a run does (RunRank, rank_run.h).
struct RankConfig {
  const ModelShapes* model = nullptr;
  // Every rank's pieces of every entry: [entry][rank][piece] (MegatronPieces: FSDP2 rows, inside
  // the TP pieces with --tp; with --qkv_layout=separate three pieces of a fused QKV per rank).
  const std::vector<std::vector<std::vector<normuon::sharding::PieceRect>>>* layout = nullptr;
  normuon_backend_t backend = NORMUON_BACKEND_CPU;
  int device = 0;
  normuon_ns_dtype_t ns_dtype = NORMUON_NS_DEFAULT;
  normuon_ns_method_t ns_method = NORMUON_NS_METHOD_STANDARD;
  int32_t ns_symmetric_products = 0;  // config.ns_symmetric_products
  normuon_owner_policy_t policy = NORMUON_OWNER_ROUND_ROBIN;
  normuon_schedule_t schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  uint64_t bucket_bytes = uint64_t{32} << 20;
  int steps = 1;
  uint64_t seed = 1;
  float lr = 0.02f, weight_decay = 0.01f;
  bool keep_params = false;  // keep this rank's rows of every parameter (--check)
  bool verbose = false;      // print each step as it ends
  bool trace = false;        // keep the last step's Chrome trace
  // --overlap_backward: after the plain steps, this many steps with a simulated backward pass.
  int overlap_steps = 0;
  double backward_ms_per_layer = 0.0;    // 0: twice the plain steady step time over the layers
  std::vector<std::vector<int>> layers;  // matrix ordinals per layer, backward order
};

// The whole run of normuon_run. Not copyable: rank.model and rank.layout point into it.
struct RunSetup {
  RunSetup() = default;
  RunSetup(const RunSetup&) = delete;
  RunSetup& operator=(const RunSetup&) = delete;

  ModelShapes shapes;
  std::vector<std::vector<std::vector<normuon::sharding::PieceRect>>> layout;  // on `ranks` ranks
  std::string model;  // the --model name, or the --shapes path
  int ranks = 1;
  int tp = 1;  // --tp: tensor-parallel ranks per group (divides ranks)
  bool separate_qkv = false;  // --qkv_layout=separate
  CommKind comm = CommKind::kInProcess;
  double timeout_s = 600.0;  // --timeout: the MPI communicator's bound on every collective
  RankConfig rank;
  bool json = false;
  bool check = false;
  CheckAgainst check_against = CheckAgainst::kSame;
  double check_tol = -1.0;
  std::string trace_path;
  // Lines to print before the run (to stderr): choices the flags left to the tool.
  std::vector<std::string> notes;
};

// The parsed --comm flag.
CommKind CommFromFlags();

// Reads the parsed flags (absl::ParseCommandLine first) into a run; argv0 finds the models.
// process_world: with --comm=mpi, the number of MPI processes, which becomes the run's ranks
// (--ranks must then be left out or equal it); 0 for --comm=inprocess. An error names the flag
// at fault.
absl::StatusOr<std::unique_ptr<RunSetup>> SetupFromFlags(absl::string_view argv0,
                                                         int process_world = 0);

}  // namespace normuon_tools::run

#endif  // NORMUON_TOOLS_RUN_RUN_CONFIG_H_
