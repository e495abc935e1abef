// BucketPipeline: runs the per-bucket stages of a step on two worker threads, so that one
// bucket's communication overlaps another bucket's Newton-Schulz (docs/ARCHITECTURE.md section 3, the
// per-matrix and bucketed schedules) and so that a bucket can start as soon as its gradients
// are final (issue "overlap with the backward pass").
//
// Stages of bucket k, and who runs them:
//   momentum(k)       compute thread   momentum + Nesterov + cast into the send buffer
//   gather(k)         comm thread      the exchange of U rows to the owners
//   newton_schulz(k)  compute thread   unpack, Newton-Schulz of the owned matrices, pack
//   scatter(k)        comm thread      the exchange of O rows back
//   row_stats(k)      compute thread   row statistics of this rank's rows
// The comm thread issues collectives in one fixed order, the same on every rank, given at
// construction (sharding/pipeline_order.h: gathers run ahead of scatters, at least one bucket
// and as many as it takes for every rank to own a matrix in flight), so later buckets' gathers
// and earlier buckets' scatters run while compute(k) does. A bucket's momentum stage waits until the
// bucket is marked ready and every earlier bucket's has run (buckets start in order).
//
// The threads exist from construction to destruction; a step is MarkReady calls (any order, any
// thread) followed by one Wait, which returns when stats ran for every bucket or, after the
// first failure, once the drain (Stages::drain) is done; it re-arms the pipeline for the next
// step. No allocation per step.
#ifndef NORMUON_BUCKET_PIPELINE_H_
#define NORMUON_BUCKET_PIPELINE_H_

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "sharding/pipeline_order.h"

namespace normuon {

class BucketPipeline {
 public:
  struct Stages {
    std::function<absl::Status(int)> momentum, gather, newton_schulz, scatter, row_stats;
    // After a failure, the comm thread issues the collectives of the fixed order it has not
    // issued yet through drain(bucket, is_gather), once the compute thread has stopped, and
    // ignores their outcome: every rank then issues every collective of the step, whatever
    // failed where (docs/ARCHITECTURE.md section 6, "One-sided failures"). Empty: no drain.
    std::function<absl::Status(int, bool)> drain;
  };

  // order: every bucket's gather and scatter once (sharding::PipelineOrder).
  BucketPipeline(int buckets, Stages stages, std::vector<sharding::PipelineCollective> order);
  ~BucketPipeline();
  BucketPipeline(const BucketPipeline&) = delete;
  BucketPipeline& operator=(const BucketPipeline&) = delete;

  // Bucket k's gradients are final: its work may start. Idempotent within a step.
  void MarkReady(int k);

  // Marks every bucket ready, waits for the step's work and returns the first stage failure (the
  // compute stages then stop; the remaining collectives are drained). *exposed_comm_ms: the time the compute thread spent blocked on
  // communication with no other work (every bucket's momentum stage had run). Re-arms.
  absl::Status Wait(double* exposed_comm_ms);

 private:
  void ComputeLoop();
  void CommLoop();
  void ActivateLocked();  // mu_ held: the first MarkReady of a step starts the workers
  void Fail(const absl::Status& s);  // mu_ held

  const int buckets_;
  const Stages stages_;
  const std::vector<sharding::PipelineCollective> comm_order_;  // the fixed collective order
  std::mutex mu_;
  std::condition_variable cv_;
  // Per-step state, guarded by mu_.
  std::vector<char> ready_, momentum_done_, gathered_, computed_, scattered_;
  bool active_ = false;                      // a step is in progress
  bool compute_done_ = false, comm_done_ = false;
  int generation_ = 0;                       // steps completed by Wait
  bool stop_ = false;
  absl::Status error_;
  double exposed_comm_ms_ = 0.0;
  std::thread compute_, comm_;
};

}  // namespace normuon

#endif  // NORMUON_BUCKET_PIPELINE_H_
