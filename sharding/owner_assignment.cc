#include "sharding/owner_assignment.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace normuon::sharding {

absl::string_view OwnerPolicyName(OwnerPolicy policy) {
  switch (policy) {
    case OwnerPolicy::kRoundRobin:
      return "round_robin";
    case OwnerPolicy::kCostBalanced:
      return "cost_balanced";
  }
  return "unknown";
}

absl::StatusOr<OwnerPolicy> ParseOwnerPolicy(absl::string_view name) {
  if (name == "round_robin") return OwnerPolicy::kRoundRobin;
  if (name == "cost_balanced") return OwnerPolicy::kCostBalanced;
  return absl::InvalidArgumentError(
      absl::StrCat("owner policy '", name, "' is not one of 'round_robin', 'cost_balanced'"));
}

absl::uint128 Ns5FlopsExact(int64_t rows, int64_t cols, int steps) {
  if (rows <= 0 || cols <= 0 || steps <= 0) return 0;
  const absl::uint128 s = static_cast<uint64_t>(std::min(rows, cols));
  const absl::uint128 l = static_cast<uint64_t>(std::max(rows, cols));
  return static_cast<uint64_t>(steps) * (4 * s * s * l + 2 * s * s * s);
}

double Ns5Flops(int64_t rows, int64_t cols, int steps) {
  return static_cast<double>(Ns5FlopsExact(rows, cols, steps));
}

absl::Status AssignOwnersOfSubset(const std::vector<MatrixShape>& shapes,
                                  const std::vector<int>& subset, int world, OwnerPolicy policy,
                                  OwnerTally* tally, std::vector<int>* owners,
                                  const NsCost& cost) {
  if (world < 1) {
    return absl::InvalidArgumentError(absl::StrCat("owner assignment: world = ", world, " < 1"));
  }
  if (static_cast<int>(tally->total_cost.size()) != world || tally->next_rank < 0 ||
      tally->next_rank >= world) {
    return absl::InvalidArgumentError(
        absl::StrCat("owner assignment: tally is for ", tally->total_cost.size(),
                     " ranks with next rank ", tally->next_rank, ", but world = ", world));
  }
  if (owners->size() != shapes.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "owner assignment: ", owners->size(), " owner slots for ", shapes.size(), " matrices"));
  }
  if (absl::Status s = ValidateNsCost(cost); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("owner assignment: ", s.message()));
  }
  std::vector<bool> seen(shapes.size(), false);
  for (int k : subset) {
    if (k < 0 || k >= static_cast<int>(shapes.size())) {
      return absl::InvalidArgumentError(absl::StrCat("owner assignment: matrix index ", k,
                                                     " is outside [0, ", shapes.size(), ")"));
    }
    if (seen[k]) {
      return absl::InvalidArgumentError(absl::StrCat("owner assignment: matrix ", k, " ('",
                                                     shapes[k].name, "') is listed twice"));
    }
    seen[k] = true;
    NORMUON_RETURN_IF_ERROR(ValidateShape(shapes[k]));
  }

  // Sort keys, computed once: element count (round-robin) or NS cost (cost-balanced).
  std::vector<absl::uint128> key(shapes.size(), 0);
  for (int k : subset) {
    key[k] = policy == OwnerPolicy::kRoundRobin
                 ? absl::uint128(static_cast<uint64_t>(shapes[k].rows * shapes[k].cols))
                 : NsFlopsExact(shapes[k].rows, shapes[k].cols, cost);
  }
  std::vector<int> order = subset;
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    if (key[a] != key[b]) return key[a] > key[b];
    return a < b;
  });

  std::vector<absl::uint128> subset_cost(world, 0);
  for (int k : order) {
    int owner = 0;
    if (policy == OwnerPolicy::kRoundRobin) {
      owner = tally->next_rank;
      tally->next_rank = (tally->next_rank + 1) % world;
    } else {
      for (int r = 1; r < world; ++r) {
        if (subset_cost[r] < subset_cost[owner] ||
            (subset_cost[r] == subset_cost[owner] &&
             tally->total_cost[r] < tally->total_cost[owner])) {
          owner = r;
        }
      }
    }
    const absl::uint128 flops = NsFlopsExact(shapes[k].rows, shapes[k].cols, cost);
    subset_cost[owner] += flops;
    tally->total_cost[owner] += flops;
    (*owners)[k] = owner;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> AssignOwners(const std::vector<MatrixShape>& shapes, int world,
                                              OwnerPolicy policy, const NsCost& cost) {
  if (world < 1) {
    return absl::InvalidArgumentError(absl::StrCat("owner assignment: world = ", world, " < 1"));
  }
  std::vector<int> all(shapes.size());
  for (size_t k = 0; k < shapes.size(); ++k) all[k] = static_cast<int>(k);
  std::vector<int> owners(shapes.size(), 0);
  OwnerTally tally(world);
  NORMUON_RETURN_IF_ERROR(
      AssignOwnersOfSubset(shapes, all, world, policy, &tally, &owners, cost));
  return owners;
}

absl::StatusOr<std::vector<absl::uint128>> OwnerLoads(const std::vector<MatrixShape>& shapes,
                                                      const std::vector<int>& owners, int world,
                                                      const NsCost& cost) {
  if (world < 1) {
    return absl::InvalidArgumentError(absl::StrCat("owner loads: world = ", world, " < 1"));
  }
  if (owners.size() != shapes.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("owner loads: ", owners.size(), " owners for ", shapes.size(), " matrices"));
  }
  if (absl::Status s = ValidateNsCost(cost); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("owner loads: ", s.message()));
  }
  std::vector<absl::uint128> loads(world, 0);
  for (size_t k = 0; k < shapes.size(); ++k) {
    if (owners[k] < 0 || owners[k] >= world) {
      return absl::InvalidArgumentError(absl::StrCat("owner loads: matrix ", k, " ('",
                                                     shapes[k].name, "') has owner ", owners[k],
                                                     ", outside [0, ", world, ")"));
    }
    loads[owners[k]] += NsFlopsExact(shapes[k].rows, shapes[k].cols, cost);
  }
  return loads;
}

}  // namespace normuon::sharding
