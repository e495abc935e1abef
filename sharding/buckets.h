// The order of work of the bucketed schedule (docs/ARCHITECTURE.md section 6, "Order of work"): matrices
// grouped into buckets of about B bytes, taken in reverse registration order (the order backward
// produces gradients), and owners balanced within each bucket so that no rank owns a whole
// bucket and every rank has NS5 work while the next bucket's gather is in flight.
//
// All ranks must issue collectives in the same bucket order, so buckets depend only on global
// shapes, never on a rank's own shards.
#ifndef NORMUON_SHARDING_BUCKETS_H_
#define NORMUON_SHARDING_BUCKETS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sharding/owner_assignment.h"
#include "sharding/shard.h"

namespace normuon::sharding {

// Splits the matrices into buckets. Bucket 0 starts at the last registered matrix; each bucket
// lists registration indices in descending order, and the buckets together list n-1, n-2, ..., 0
// once each. A matrix's size is its whole global matrix, rows * cols * bytes_per_element (what
// the gather moves in total). A bucket is closed when adding the next matrix would make it exceed
// bucket_bytes; a matrix larger than bucket_bytes is a bucket of its own. Requires
// bytes_per_element in [1, kMaxElementBytes], bucket_bytes >= 1 and valid shapes.
absl::StatusOr<std::vector<std::vector<int>>> MakeBuckets(const std::vector<MatrixShape>& shapes,
                                                          int64_t bytes_per_element,
                                                          int64_t bucket_bytes);

// How a schedule groups matrices (the runtime's and the planner's one rule).
enum class BucketRule {
  kAll,        // one bucket of every matrix (the sequential schedule)
  kPerMatrix,  // one bucket per matrix
  kBytes,      // MakeBuckets(bucket_bytes), then consecutive buckets merged until each holds at
               // least `world` matrices (a short tail joins the bucket before it), so every rank
               // owns a matrix of every bucket: one collective per bucket uses every rank's link
};

// The buckets of a schedule, in reverse registration order (kAll too).
absl::StatusOr<std::vector<std::vector<int>>> ScheduleBuckets(const std::vector<MatrixShape>& shapes,
                                                              int64_t bytes_per_element,
                                                              BucketRule rule, int64_t bucket_bytes,
                                                              int world);

// Checks that buckets partition the matrices: every index in [0, shapes.size()) appears exactly
// once, and no bucket is empty. Any partition is accepted, not only MakeBuckets's.
absl::Status ValidateBuckets(const std::vector<MatrixShape>& shapes,
                             const std::vector<std::vector<int>>& buckets);

// The owner of every matrix (indexed by registration order), assigned bucket by bucket in bucket
// order with AssignOwnersOfSubset and one OwnerTally carried across buckets: within a bucket the
// policy balances that bucket (round-robin deals from where the previous bucket stopped;
// cost-balanced breaks ties by the total assigned so far), so a bucket of >= 2 matrices is never
// owned by one rank when world >= 2, and the totals stay balanced too. cost: how the step
// orthogonalizes (ns_cost.h; kCostBalanced weighs matrices by NsFlopsExact under it). The
// runtime passes its config's method here (NsCost{method, 5, restarts, symmetric}).
absl::StatusOr<std::vector<int>> AssignOwnersPerBucket(const std::vector<MatrixShape>& shapes,
                                                       const std::vector<std::vector<int>>& buckets,
                                                       int world, OwnerPolicy policy,
                                                       const NsCost& cost = NsCost{});

}  // namespace normuon::sharding

#endif  // NORMUON_SHARDING_BUCKETS_H_
