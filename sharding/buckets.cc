#include "sharding/buckets.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace normuon::sharding {

absl::StatusOr<std::vector<std::vector<int>>> MakeBuckets(const std::vector<MatrixShape>& shapes,
                                                          int64_t bytes_per_element,
                                                          int64_t bucket_bytes) {
  if (bytes_per_element < 1 || bytes_per_element > kMaxElementBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("buckets: bytes_per_element = ", bytes_per_element, ", must be in [1, ",
                     kMaxElementBytes, "]"));
  }
  if (bucket_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("buckets: bucket_bytes = ", bucket_bytes, ", must be >= 1"));
  }
  for (const MatrixShape& shape : shapes) {
    NORMUON_RETURN_IF_ERROR(ValidateShape(shape));
  }
  std::vector<std::vector<int>> buckets;
  std::vector<int> current;
  int64_t current_bytes = 0;
  for (int k = static_cast<int>(shapes.size()) - 1; k >= 0; --k) {
    // Cannot overflow: ValidateShape bounds rows * cols * kMaxElementBytes.
    const int64_t bytes = shapes[k].rows * shapes[k].cols * bytes_per_element;
    // Both operands of the subtraction lie in [0, INT64_MAX], so it cannot overflow; the sum
    // below then stays <= bucket_bytes, or is a lone matrix's own size.
    if (!current.empty() && bytes > bucket_bytes - current_bytes) {
      buckets.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(k);
    current_bytes += bytes;
  }
  if (!current.empty()) buckets.push_back(std::move(current));
  return buckets;
}

absl::Status ValidateBuckets(const std::vector<MatrixShape>& shapes,
                             const std::vector<std::vector<int>>& buckets) {
  std::vector<int> bucket_of(shapes.size(), -1);
  for (size_t b = 0; b < buckets.size(); ++b) {
    if (buckets[b].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("buckets: bucket ", b, " is empty"));
    }
    for (int k : buckets[b]) {
      if (k < 0 || k >= static_cast<int>(shapes.size())) {
        return absl::InvalidArgumentError(absl::StrCat("buckets: bucket ", b, " lists matrix ", k,
                                                       ", outside [0, ", shapes.size(), ")"));
      }
      if (bucket_of[k] >= 0) {
        return absl::InvalidArgumentError(absl::StrCat("buckets: matrix ", k, " ('", shapes[k].name,
                                                       "') is in bucket ", bucket_of[k],
                                                       " and again in bucket ", b));
      }
      bucket_of[k] = static_cast<int>(b);
    }
  }
  for (size_t k = 0; k < shapes.size(); ++k) {
    if (bucket_of[k] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("buckets: matrix ", k, " ('", shapes[k].name, "') is in no bucket"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> AssignOwnersPerBucket(const std::vector<MatrixShape>& shapes,
                                                       const std::vector<std::vector<int>>& buckets,
                                                       int world, OwnerPolicy policy,
                                                       const NsCost& cost) {
  if (world < 1) {
    return absl::InvalidArgumentError(absl::StrCat("owner assignment: world = ", world, " < 1"));
  }
  NORMUON_RETURN_IF_ERROR(ValidateBuckets(shapes, buckets));
  std::vector<int> owners(shapes.size(), 0);
  OwnerTally tally(world);
  for (const std::vector<int>& bucket : buckets) {
    NORMUON_RETURN_IF_ERROR(
        AssignOwnersOfSubset(shapes, bucket, world, policy, &tally, &owners, cost));
  }
  return owners;
}

absl::StatusOr<std::vector<std::vector<int>>> ScheduleBuckets(const std::vector<MatrixShape>& shapes,
                                                              int64_t bytes_per_element,
                                                              BucketRule rule, int64_t bucket_bytes,
                                                              int world) {
  std::vector<std::vector<int>> buckets;
  if (shapes.empty()) return buckets;
  if (world < 1) return absl::InvalidArgumentError(absl::StrCat("world = ", world, " must be >= 1"));
  if (rule == BucketRule::kAll) {
    buckets.emplace_back();
    for (int k = static_cast<int>(shapes.size()) - 1; k >= 0; --k) buckets[0].push_back(k);
    return buckets;
  }
  const int64_t limit = rule == BucketRule::kPerMatrix ? 1 : bucket_bytes;
  std::vector<std::vector<int>> by_bytes;
  {
    auto made = MakeBuckets(shapes, bytes_per_element, limit);
    if (!made.ok()) return made.status();
    by_bytes = *std::move(made);
  }
  if (rule == BucketRule::kPerMatrix) return by_bytes;
  for (std::vector<int>& b : by_bytes) {
    if (buckets.empty() || static_cast<int64_t>(buckets.back().size()) >= world) {
      buckets.push_back(std::move(b));
    } else {
      buckets.back().insert(buckets.back().end(), b.begin(), b.end());
    }
  }
  // A short tail joins the bucket before it.
  if (buckets.size() >= 2 && static_cast<int64_t>(buckets.back().size()) < world) {
    std::vector<int> tail = std::move(buckets.back());
    buckets.pop_back();
    buckets.back().insert(buckets.back().end(), tail.begin(), tail.end());
  }
  return buckets;
}

}  // namespace normuon::sharding
