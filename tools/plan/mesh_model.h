// mesh_model.h: the planner's comparison of orthogonalization strategies on a tensor-parallel x
// data-parallel mesh (issue 15, "Meshes in the tools" and "Scale beyond one owner per matrix").
//
// The mesh: world = tp x dp GPUs, rank = d * tp + t (the tp ranks of a data-parallel index are
// consecutive, so a TP group sits inside a node when tp divides gpus_per_node). Megatron's
// layout: column-parallel matrices (attention QKV, MLP up/gate, and every matrix not named
// below) are split by rows over TP, row-parallel ones (names containing o_proj, down_proj,
// c_proj, out_proj or fc2) by columns; each TP piece is then split by rows over DP as FSDP2 does
// (ceil(rows / dp) rows per rank, the last ranks possibly short or empty). Rows x cols is
// out x in, as in tools/models.
//
// Four strategies, each the Newton-Schulz phase of a step after the gradients are reduced:
//  a. kGatherToOwner (ours): each matrix's pieces go to one owner rank over the whole TP x DP
//     domain (owners: sharding::AssignOwners, cost-balanced on the step's NsCost), NS runs there,
//     the result is scattered back. Exchanges: gather, scatter.
//  b. kDuplicatedTp (Megatron, NS duplicated on every TP rank): whole matrices are dealt over the
//     dp data-parallel indices (cost-balanced on NsCost, like a layer-wise distributed
//     optimizer); each TP piece is gathered over DP to its matrix's index, the TP group there
//     all-gathers the full matrix, and every one of its tp ranks runs NS on it, keeping its own
//     piece of the result, which goes back over DP. Exchanges: DP gather, TP all-gather, DP
//     scatter. tp times the FLOPs of (a).
//  c. kGramAllReduceTp (Megatron, a Gram all-reduce per iteration): as (b) over DP (but dealt
//     cost-balanced on c's own predicted time per matrix), then each TP
//     rank keeps its TP block; every iteration each computes its partial Gram matrix over the
//     dimension TP split (g x g, g = the unsplit side), the partial Grams are all-reduced within
//     the TP group (g^2 wire elements), the polynomial in the Gram matrix is computed on every
//     TP rank and each updates its own block. Standard NS (the step's steps and product kind).
//     When TP splits the short side, g is the long side and the replicated g^3 work is large.
//  d. kSplitGram (issue 15's fourth strategy): each non-square matrix's orthogonalization is
//     split over a group of k consecutive ranks with Gram NS: each holds a block of the long
//     side (n x m/k), computes its partial Gram matrix, the n x n Gram matrix is all-reduced in
//     the group at the start and at each restart, the n x n iterations are replicated, and each
//     multiplies its own block (Q X_j) at each restart and at the end. A square matrix runs
//     standard NS on its group's first rank unless the split costs each rank no more FLOPs
//     ((28 + 8 / k) n^3 against 30 n^3 dense: k >= 4), when it is split too. Groups (world / k of them) take matrices
//     cost-balanced on their predicted time and work through them one after another. k is a
//     power of two up to world (and up to m); with split_k = 0 the one with the least predicted
//     step is reported.
//
// Times (the planner's transport and rate models, transport_model.h and cost_model.h): an
// exchange is ClusterExchangeSeconds of its flows (latency + the busiest port's bytes /
// bandwidth); an all-reduce within a group is NCCL's ring over the group's slowest link class
// (ClusterGroupAllReduceSeconds); NS FLOPs (sharding/ns_cost.h) run at the rate table's TFLOP/s
// for the shape each rank multiplies (the full matrix in a and b, the local block in c and d),
// plus kernel_us per product launched, plus, on every rank a point-to-point gather feeds, what
// the event simulation charges the runtime's owner for it: an unpack and a pack kernel per
// segment received (one segment per source rank and matrix) and a copy of the bytes each way
// (NCCL's all-gather and all-reduce write in place and are not charged). Step = the exchanges before NS + the slowest rank's NS
// (with its in-NS all-reduces) + the exchanges after; all communication is exposed (a
// bulk-synchronous phase: nothing overlaps). The memory-bound kernels and the slot all-reduce,
// the same in every strategy, are left out; normuon_plan's event simulation gives the whole
// step of (a).
#ifndef NORMUON_TOOLS_PLAN_MESH_MODEL_H_
#define NORMUON_TOOLS_PLAN_MESH_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "sharding/ns_cost.h"
#include "sharding/owner_assignment.h"
#include "tools/model_shapes.h"
#include "tools/plan/cost_model.h"
#include "tools/plan/transport_model.h"

namespace normuon::plan {

enum class MeshStrategy { kGatherToOwner, kDuplicatedTp, kGramAllReduceTp, kSplitGram };
inline constexpr MeshStrategy kMeshStrategies[] = {
    MeshStrategy::kGatherToOwner, MeshStrategy::kDuplicatedTp, MeshStrategy::kGramAllReduceTp,
    MeshStrategy::kSplitGram};
// "gather_to_owner", "duplicated_tp", "gram_allreduce_tp", "split_gram".
const char* MeshStrategyName(MeshStrategy s);

struct MeshOptions {
  int world = 64;
  int tp = 8;                  // must divide world
  int64_t wire_bytes = 2;      // bytes per element moved and all-reduced (2 bf16, 4 fp32)
  sharding::NsCost ns_cost;    // a, b, c: how the step orthogonalizes (c uses its steps and
                               // product kind with standard NS)
  sharding::NsCost gram_cost = sharding::GramDefaultCost();  // d (must be kGram)
  int split_k = 0;             // d: ranks per matrix; 0 = the best power of two
};

struct MeshStrategyResult {
  MeshStrategy strategy = MeshStrategy::kGatherToOwner;
  int split_k = 1;            // d: the group size used; 1 otherwise
  int busy_ranks = 0;         // ranks that run Newton-Schulz products
  int idle_ranks = 0;         // world - busy_ranks
  double total_flops = 0.0;   // NS FLOPs summed over ranks (duplicates counted)
  double max_rank_flops = 0.0;
  int64_t total_bytes = 0;    // bytes sent summed over ranks: exchanges and all-reduces
  int64_t max_rank_bytes = 0; // the most bytes one rank sends plus receives
  double before_ms = 0.0;     // exchanges before NS (a, d: gather; b: DP gather + TP all-gather)
  double ns_ms = 0.0;         // the slowest rank's NS, its all-reduces, unpacks and packs included
  double allreduce_ms = 0.0;  // the all-reduces inside that slowest NS
  double after_ms = 0.0;      // the scatter
  double step_ms = 0.0;       // before + ns + after
  double exposed_comm_ms = 0.0;  // before + allreduce + after
};

// A TP-sharded layout of one matrix: whether TP splits rows (column-parallel) or columns.
bool IsRowParallel(const std::string& name);

// FLOPs one rank of a k-rank split-Gram group does for a rows x cols matrix (d above): its block
// products (R = X_j X_j^T partials and Q X_j, on n x ceil(m / k) columns) and the replicated
// n x n iterations. With k = 1 the sum is sharding::NsFlopsExact under gram_cost.
struct SplitGramFlops {
  double block = 0.0;
  double replicated = 0.0;
  int allreduces = 0;  // of the n x n Gram matrix: the start and each restart
};
SplitGramFlops SplitGramRankFlops(int64_t rows, int64_t cols, int k,
                                  const sharding::NsCost& gram_cost);

// Runs the four strategies (in kMeshStrategies order) on a cluster machine. Fails when tp does
// not divide world, world or tp < 1, world > 1 << 20, wire_bytes is not 2 or 4, a cost is
// invalid (or gram_cost is not kGram), split_k is not 0 or a power of two <= world, or the model
// has no matrix; errors name the field.
absl::StatusOr<std::vector<MeshStrategyResult>> CompareMeshStrategies(
    const normuon_tools::ModelShapes& model, const MeshOptions& options, const Machine& machine,
    const KernelRates& rates);

// Text: one line per strategy (idle ranks, GB, TFLOP, times).
std::string MeshReportText(const std::vector<MeshStrategyResult>& results,
                           const MeshOptions& options);
// One JSON object per strategy in an array.
std::string MeshReportJson(const std::vector<MeshStrategyResult>& results);

}  // namespace normuon::plan

#endif  // NORMUON_TOOLS_PLAN_MESH_MODEL_H_
