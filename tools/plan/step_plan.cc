// The static plan of step_plan.h.
#include "tools/plan/step_plan.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "sharding/buckets.h"
#include "sharding/plan.h"
#include "tools/common/model_layout.h"

namespace normuon::plan {

absl::StatusOr<StepPlan> BuildStepPlan(const normuon_tools::ModelShapes& model,
                                       const PlanOptions& options) {
  if (options.world < 1 || options.world > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("world = ", options.world, ", must be in [1, 1048576]"));
  }
  if (options.wire_bytes != 2 && options.wire_bytes != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("wire_bytes = ", options.wire_bytes, ", must be 2 (bf16) or 4 (fp32)"));
  }
  if (options.bucket_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("bucket_bytes = ", options.bucket_bytes, ", must be >= 1"));
  }
  NORMUON_RETURN_IF_ERROR(sharding::ValidateNsCost(options.ns_cost));
  if (model.entries.empty()) return absl::InvalidArgumentError("the model has no parameters");
  const int world = options.world;
  NORMUON_ASSIGN_OR_RETURN(std::vector<std::vector<sharding::RowShard>> layout,
                           normuon_tools::Fsdp2Layout(model, world));

  StepPlan plan;
  plan.options = options;
  plan.ranks.resize(world);
  std::vector<sharding::MatrixShape> shapes;
  for (size_t i = 0; i < model.entries.size(); ++i) {
    const normuon_tools::ModelShape& e = model.entries[i];
    std::vector<sharding::RowShard>& shards = layout[i];
    if (e.kind == ParamKind::kMatrix) {
      MatrixInfo m;
      m.name = e.name;
      m.rows = e.rows;
      m.cols = e.cols;
      m.shards = std::move(shards);
      shapes.push_back({e.name, e.rows, e.cols});
      plan.matrices.push_back(std::move(m));
    } else {
      for (int r = 0; r < world; ++r) {
        const int64_t n = shards[r].row_count * e.cols;
        RankSummary& rs = plan.ranks[r];
        rs.adamw_elements += n;
        rs.adamw_with_elements += n > 0;
        rs.adam_bytes += 2 * 4 * n;  // exp_avg and exp_avg_sq, fp32
      }
    }
  }
  NORMUON_ASSIGN_OR_RETURN(sharding::RowSlots slots, sharding::MatrixSlotOffsets(shapes));
  plan.total_rows = slots.total_rows;
  // The step flags: kStepFlagsPerRank (kernels/backend.h) = 6 floats per rank
  // (tests/plan/runtime_agreement_test holds the two together).
  plan.slot_floats = 2 * slots.total_rows + 6 * static_cast<int64_t>(world);

  // Buckets and owners exactly as Runtime::Finalize makes them.
  NORMUON_ASSIGN_OR_RETURN(
      std::vector<std::vector<int>> members,
      sharding::ScheduleBuckets(shapes, options.wire_bytes,
                                options.schedule == NORMUON_SCHEDULE_SEQUENTIAL
                                    ? sharding::BucketRule::kAll
                                : options.schedule == NORMUON_SCHEDULE_PER_MATRIX
                                    ? sharding::BucketRule::kPerMatrix
                                    : sharding::BucketRule::kBytes,
                                options.bucket_bytes, world));
  std::vector<int> owners;
  if (!members.empty()) {
    NORMUON_ASSIGN_OR_RETURN(owners, sharding::AssignOwnersPerBucket(shapes, members, world,
                                                             options.policy, options.ns_cost));
  }

  for (size_t b = 0; b < members.size(); ++b) {
    BucketPlan bp;
    bp.matrices = members[b];
    bp.ranks.resize(world);
    std::vector<int> bucket_owners;
    for (int k : members[b]) {
      MatrixInfo& m = plan.matrices[k];
      m.owner = owners[k];
      m.bucket = static_cast<int>(b);
      bucket_owners.push_back(m.owner);
      for (int r = 0; r < world; ++r) {
        const int64_t rc = m.shards[r].row_count;
        if (rc == 0) continue;
        RankBucket& rb = bp.ranks[r];
        rb.elements += rc * m.cols;
        rb.rows += rc;
        rb.matrices_with_rows += 1;
      }
    }
    std::sort(bucket_owners.begin(), bucket_owners.end());
    bucket_owners.erase(std::unique(bucket_owners.begin(), bucket_owners.end()),
                        bucket_owners.end());
    // One sharding plan per owner, over the matrices it owns in this bucket (in bucket order):
    // its receive lists are those of the whole bucket's plan (only owned matrices are received,
    // laid out in plan order), and what peer p sends it is, by the plan's construction, what it
    // expects from p. So every rank's sends and receives come from the library without building
    // world plans over the whole bucket (which validates world x world shards per bucket).
    for (int q : bucket_owners) {
      sharding::PlanInputs in;
      in.world = world;
      in.rank = q;
      in.wire_bytes_per_element = options.wire_bytes;
      std::vector<int> local;
      for (int k : members[b]) {
        if (owners[k] != q) continue;
        local.push_back(static_cast<int>(in.shapes.size()));
        in.shapes.push_back(shapes[k]);
        in.shards.push_back(plan.matrices[k].shards);
        in.owners.push_back(q);
      }
      NORMUON_ASSIGN_OR_RETURN(sharding::RankPlan rp, sharding::MakeRankPlanForMatrices(in, local));
      for (int p = 0; p < world; ++p) {
        const int64_t bytes = rp.gather_recv_bytes[p];
        if (bytes == 0) continue;
        bp.gather.push_back(Flow{p, q, bytes});
        bp.ranks[p].send_bytes += bytes;
        bp.ranks[q].recv_bytes += bytes;
        bp.ranks[q].recv_segments += static_cast<int32_t>(rp.gather_recvs[p].size());
      }
      for (const sharding::ShapeBatch& sb : rp.batches) {
        bp.batches.push_back(OwnedBatch{q, sb.rows, sb.cols, static_cast<int>(sb.matrices.size())});
      }
      // Owned matrices in bucket order (rp.owned indexes `in`, which follows members[b]).
      RankSummary& rs = plan.ranks[q];
      for (int k : members[b]) {
        if (owners[k] != q) continue;
        rs.owned.push_back(k);
        rs.ns5_flops += sharding::NsFlops(shapes[k].rows, shapes[k].cols, options.ns_cost);
      }
    }
    for (int r = 0; r < world; ++r) {
      const RankBucket& rb = bp.ranks[r];
      RankSummary& rs = plan.ranks[r];
      // Gather out and scatter back, as Runtime::RunBuckets counts them.
      rs.bytes_sent += rb.send_bytes + rb.recv_bytes;
      rs.bytes_received += rb.recv_bytes + rb.send_bytes;
    }
    plan.buckets.push_back(std::move(bp));
  }

  for (const MatrixInfo& m : plan.matrices) {
    for (int r = 0; r < world; ++r) {
      const int64_t rc = m.shards[r].row_count;
      RankSummary& rs = plan.ranks[r];
      rs.momentum_bytes += 4 * rc * m.cols;
      rs.v_bytes += 4 * rc;
      rs.matrix_elements += rc * m.cols;
      rs.matrix_rows += rc;
      rs.matrices_with_rows += rc > 0;
    }
  }
  if (world > 1) {
    for (RankSummary& rs : plan.ranks) {
      rs.bytes_sent += 4 * plan.slot_floats;
      rs.bytes_received += 4 * plan.slot_floats;
    }
  }
  return plan;
}

}  // namespace normuon::plan
