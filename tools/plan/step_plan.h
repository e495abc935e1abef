// step_plan.h: the planner's static plan (step_model.h): what a step moves and computes, per rank
// and per bucket, made by the sharding library's own functions as Runtime::Finalize calls them.
#ifndef NORMUON_TOOLS_PLAN_STEP_PLAN_H_
#define NORMUON_TOOLS_PLAN_STEP_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "normuon/normuon.h"
#include "sharding/ns_cost.h"
#include "sharding/owner_assignment.h"
#include "sharding/shard.h"
#include "tools/model_shapes.h"
#include "tools/plan/transport_model.h"

namespace normuon::plan {

struct PlanOptions {
  int world = 1;
  normuon_schedule_t schedule = NORMUON_SCHEDULE_BUCKETED;
  int64_t bucket_bytes = int64_t{32} << 20;  // bucketed only, as normuon_config_t.bucket_bytes
  sharding::OwnerPolicy policy = sharding::OwnerPolicy::kRoundRobin;
  int64_t wire_bytes = 2;  // 2: bf16, 4: fp32
  // How Newton-Schulz runs (standard or Gram, product kind): the FLOPs charged per owned matrix
  // and the cost-balanced owner assignment's weights (sharding/ns_cost.h).
  sharding::NsCost ns_cost;
};

// What one rank does in one bucket.
struct RankBucket {
  int64_t elements = 0;           // its rows of the bucket's matrices: rows * cols summed
  int64_t rows = 0;               // its rows, summed over the bucket's matrices
  int32_t matrices_with_rows = 0;
  int64_t send_bytes = 0;         // gather: sent (the scatter receives as much back)
  int64_t recv_bytes = 0;         // gather: received (the scatter sends as much)
  int32_t recv_segments = 0;      // segments unpacked and packed again
};

// Owned matrices of one shape in one bucket: one batched Newton-Schulz call.
struct OwnedBatch {
  int rank = 0;
  int64_t rows = 0, cols = 0;
  int count = 0;
};

struct BucketPlan {
  std::vector<int> matrices;  // matrix indices (StepPlan::matrices), in work order
  std::vector<RankBucket> ranks;  // one per rank
  std::vector<Flow> gather;
  std::vector<OwnedBatch> batches;
};

struct MatrixInfo {
  std::string name;
  int64_t rows = 0, cols = 0;
  std::vector<sharding::RowShard> shards;  // one per rank (FSDP2)
  int owner = 0;
  int bucket = 0;
};

// Everything about one rank that does not depend on time.
struct RankSummary {
  std::vector<int> owned;  // matrix indices, in bucket work order
  double ns5_flops = 0.0;  // of its owned matrices (sharding::NsFlops under options.ns_cost;
                           // the name is the JSON key's, kept from the standard-only days)
  int64_t momentum_bytes = 0, v_bytes = 0, adam_bytes = 0;
  int64_t state_bytes() const { return momentum_bytes + v_bytes + adam_bytes; }
  // The runtime's profile accounting: every bucket's gather and scatter messages to and from
  // other ranks, plus the slot all-reduce's 4 * slot_floats each way when world > 1.
  int64_t bytes_sent = 0, bytes_received = 0;
  int64_t matrix_elements = 0, matrix_rows = 0;
  int32_t matrices_with_rows = 0;
  int64_t adamw_elements = 0;
  int32_t adamw_with_elements = 0;
};

struct StepPlan {
  PlanOptions options;
  std::vector<MatrixInfo> matrices;  // the model's `matrix` entries, registration order
  std::vector<BucketPlan> buckets;   // in the order the step works on them
  std::vector<RankSummary> ranks;
  int64_t total_rows = 0;    // rows of all matrices
  int64_t slot_floats = 0;   // the all-reduce's length: 2 per global row + 6 per rank
};

// Validates options (world in [1, 1 << 20], wire 2 or 4, bucket_bytes >= 1, ns_cost valid) and the model (at
// least one parameter), then plans as Runtime::Finalize does. Errors name the field.
absl::StatusOr<StepPlan> BuildStepPlan(const normuon_tools::ModelShapes& model,
                                       const PlanOptions& options);

}  // namespace normuon::plan

#endif  // NORMUON_TOOLS_PLAN_STEP_PLAN_H_
