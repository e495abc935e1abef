#include "sharding/ns_cost.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace normuon::sharding {

absl::string_view NsMethodName(NsMethod method) {
  switch (method) {
    case NsMethod::kStandard:
      return "standard";
    case NsMethod::kGram:
      return "gram";
  }
  return "unknown";
}

absl::StatusOr<NsMethod> ParseNsMethod(absl::string_view name) {
  if (name == "standard") return NsMethod::kStandard;
  if (name == "gram") return NsMethod::kGram;
  return absl::InvalidArgumentError(
      absl::StrCat("ns method '", name, "' is not one of 'standard', 'gram'"));
}

NsCost GramDefaultCost() {
  NsCost cost;
  cost.method = NsMethod::kGram;
  cost.restarts = {2};
  return cost;
}

absl::Status ValidateNsCost(const NsCost& cost) {
  if (cost.steps < 0 || cost.steps > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ns steps = ", cost.steps, " is outside [0, 1048576]"));
  }
  if (cost.method != NsMethod::kStandard && cost.method != NsMethod::kGram) {
    return absl::InvalidArgumentError(
        absl::StrCat("ns method = ", static_cast<int>(cost.method), " is unknown"));
  }
  if (cost.method == NsMethod::kGram) {
    int previous = 0;
    for (int i : cost.restarts) {
      if (i < 1 || i >= cost.steps) {
        return absl::InvalidArgumentError(
            absl::StrCat("ns restarts: iteration ", i, " is outside [1, ", cost.steps,
                         ") (restarts come before an iteration other than the first)"));
      }
      if (i <= previous) {
        return absl::InvalidArgumentError(absl::StrCat(
            "ns restarts: ", absl::StrJoin(cost.restarts, ","), " is not strictly increasing"));
      }
      previous = i;
    }
  }
  return absl::OkStatus();
}

std::string NsCostDescription(const NsCost& cost) {
  std::string out(NsMethodName(cost.method));
  if (cost.method == NsMethod::kGram) {
    absl::StrAppend(&out, ", restarts {", absl::StrJoin(cost.restarts, ","), "}");
  }
  if (cost.steps != 5) absl::StrAppend(&out, ", ", cost.steps, " iterations");
  absl::StrAppend(&out, cost.symmetric ? ", symmetric products" : ", dense products");
  return out;
}

absl::uint128 NsFlopsExact(int64_t rows, int64_t cols, const NsCost& cost) {
  if (rows <= 0 || cols <= 0 || !ValidateNsCost(cost).ok() || cost.steps == 0) return 0;
  const absl::uint128 n = static_cast<uint64_t>(std::min(rows, cols));
  const absl::uint128 m = static_cast<uint64_t>(std::max(rows, cols));
  const absl::uint128 t = static_cast<uint64_t>(cost.steps);
  const absl::uint128 nnm = n * n * m;
  const absl::uint128 nnn = n * n * n;
  // Products of a symmetric result cost `sym` per unit of n^2 m or n^3 (2 dense, 1 triangle);
  // the others always cost 2.
  const absl::uint128 sym = cost.symmetric ? 1 : 2;
  // Square matrices and single rows or columns run the standard iteration.
  if (!UsesGram(cost.method, rows, cols)) {
    // Per iteration: X X^T and A A symmetric, B X not.
    return t * (sym * nnm + sym * nnn + 2 * nnm);
  }
  const absl::uint128 r = static_cast<uint64_t>(cost.restarts.size());
  const absl::uint128 grams = 1 + r;          // R = X X^T
  const absl::uint128 qx = 1 + r;             // Q X at each restart and for the output
  const absl::uint128 squares = t;            // R R
  const absl::uint128 q_updates = t - 1 - r;  // Q Z' (validated: r <= t - 1)
  const absl::uint128 r_updates = t - 1 - r;  // R Z' and Z' (R Z' + a R): two products each
  return grams * sym * nnm + qx * 2 * nnm + (squares + q_updates + 2 * r_updates) * sym * nnn;
}

double NsFlops(int64_t rows, int64_t cols, const NsCost& cost) {
  return static_cast<double>(NsFlopsExact(rows, cols, cost));
}

}  // namespace normuon::sharding
