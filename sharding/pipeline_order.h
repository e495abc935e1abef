// The order in which the pipelined schedules issue their collectives (docs/ARCHITECTURE.md section 3),
// shared by the runtime's BucketPipeline and the planner's simulation so both follow one rule.
//
// Every rank must issue the same collectives in the same order, so the order is a pure function
// of global facts: the number of matrices in each bucket and the world size. Gathers run ahead
// of scatters: before scatter(k), the gathers of buckets k+1 .. j(k) are issued, where j(k) is
// the first bucket such that buckets k..j(k) hold at least `world` matrices (so every rank can
// own one of the matrices whose Newton-Schulz may run at once), at least k+1 (so bucket k+1's
// gather overlaps bucket k's Newton-Schulz), at most the last bucket. With buckets of `world`
// matrices or more this is gather(0), then gather(k+1), scatter(k) for each k.
#ifndef NORMUON_SHARDING_PIPELINE_ORDER_H_
#define NORMUON_SHARDING_PIPELINE_ORDER_H_

#include <cstdint>
#include <vector>

namespace normuon::sharding {

struct PipelineCollective {
  bool gather;  // gather (U rows to owners) or scatter (O rows back)
  int bucket;
};

// Every bucket's gather and scatter once, gathers in bucket order, scatters in bucket order,
// scatter(k) after gather(k). matrices_per_bucket[k] >= 1; world >= 1.
std::vector<PipelineCollective> PipelineOrder(const std::vector<int64_t>& matrices_per_bucket,
                                              int world);

}  // namespace normuon::sharding

#endif  // NORMUON_SHARDING_PIPELINE_ORDER_H_
