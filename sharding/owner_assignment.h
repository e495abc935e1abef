// Which rank orthogonalizes each matrix (its owner: it gathers the full matrix, runs
// Newton-Schulz on it and scatters the rows back; docs/ARCHITECTURE.md section 2).
//
// Both policies are deterministic functions of the shapes, their registration order and the
// world size, computed in exact integer arithmetic, so every rank derives the same owners
// without communicating, whatever its compiler's floating-point flags.
#ifndef NORMUON_SHARDING_OWNER_ASSIGNMENT_H_
#define NORMUON_SHARDING_OWNER_ASSIGNMENT_H_

#include <cstdint>
#include <vector>

#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sharding/ns_cost.h"
#include "sharding/shard.h"

namespace normuon::sharding {

enum class OwnerPolicy {
  // Matrices sorted by element count, descending (ties: lower registration index first), dealt to
  // ranks 0, 1, 2, ... in that order. The paper's and Muon's assignment.
  kRoundRobin,
  // Greedy longest-processing-time on the Newton-Schulz FLOP count: matrices sorted by
  // NsFlopsExact under the step's NsCost (ns_cost.h; by default standard NS, Ns5FlopsExact),
  // descending (ties: lower registration index first); each goes to the rank with the least cost
  // assigned so far (ties: lowest rank). Max load <= 4/3 of the optimum.
  kCostBalanced,
};

// "round_robin" / "cost_balanced", and the inverse (for flags and JSON).
absl::string_view OwnerPolicyName(OwnerPolicy policy);
absl::StatusOr<OwnerPolicy> ParseOwnerPolicy(absl::string_view name);

// FLOPs of `steps` quintic Newton-Schulz iterations on a rows x cols matrix:
// steps * (4 * s^2 * l + 2 * s^3), s = min(rows, cols), l = max(rows, cols) (per iteration: the
// s x s Gram matrix, its square, and the s x l product). Exact for any shape that passes
// ValidateShape and 0 <= steps <= 2^20 (a negative count counts as 0); the double version rounds
// it for reporting. NsFlopsExact (ns_cost.h) generalizes it to Gram NS and symmetric products;
// with the default NsCost the two agree.
absl::uint128 Ns5FlopsExact(int64_t rows, int64_t cols, int steps = 5);
double Ns5Flops(int64_t rows, int64_t cols, int steps = 5);

// The owner (a rank in [0, world)) of every matrix, indexed by registration order. Every shape
// must pass ValidateShape; world >= 1. An empty list gives an empty result; with fewer matrices
// than ranks some ranks own nothing. cost says how the step orthogonalizes (kCostBalanced's
// weights; kRoundRobin ignores it); it must pass ValidateNsCost.
absl::StatusOr<std::vector<int>> AssignOwners(const std::vector<MatrixShape>& shapes, int world,
                                              OwnerPolicy policy, const NsCost& cost = NsCost{});

// What AssignOwnersOfSubset carries from one call to the next, so that subsets assigned one after
// another (the buckets of buckets.h) stay balanced overall: the round-robin cursor and each rank's
// total cost so far. Start from OwnerTally(world).
struct OwnerTally {
  explicit OwnerTally(int world) : total_cost(world > 0 ? world : 0) {}
  int next_rank = 0;                      // kRoundRobin: the rank the next matrix is dealt to
  std::vector<absl::uint128> total_cost;  // per rank, NsFlopsExact of everything assigned
};

// Assigns an owner to each matrix in subset (registration indices into shapes, each at most
// once) and writes it to (*owners)[k]; other entries are left alone. The policy runs on the
// subset alone, with the sort keys above; kRoundRobin deals from tally->next_rank on, and
// kCostBalanced picks the rank with the least cost within this subset, ties broken by the least
// tally->total_cost, then the lowest rank. Updates *tally. owners must have one entry per shape.
// AssignOwners is this with every matrix in the subset and a fresh tally. Costs are
// NsFlopsExact(rows, cols, cost); cost must pass ValidateNsCost (the error names its field).
absl::Status AssignOwnersOfSubset(const std::vector<MatrixShape>& shapes,
                                  const std::vector<int>& subset, int world, OwnerPolicy policy,
                                  OwnerTally* tally, std::vector<int>* owners,
                                  const NsCost& cost = NsCost{});

// The cost of each rank's owned matrices (sum of NsFlopsExact under cost), for reports and
// tests. owners[k] must be in [0, world).
absl::StatusOr<std::vector<absl::uint128>> OwnerLoads(const std::vector<MatrixShape>& shapes,
                                                      const std::vector<int>& owners, int world,
                                                      const NsCost& cost = NsCost{});

}  // namespace normuon::sharding

#endif  // NORMUON_SHARDING_OWNER_ASSIGNMENT_H_
