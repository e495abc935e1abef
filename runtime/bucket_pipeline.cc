#include "runtime/bucket_pipeline.h"

#include <algorithm>
#include <utility>

namespace normuon {
namespace {

using Clock = std::chrono::steady_clock;

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

BucketPipeline::BucketPipeline(int buckets, Stages stages,
                               std::vector<sharding::PipelineCollective> order)
    : buckets_(buckets),
      stages_(std::move(stages)),
      comm_order_(std::move(order)),
      ready_(buckets, 0),
      momentum_done_(buckets, 0),
      gathered_(buckets, 0),
      computed_(buckets, 0),
      scattered_(buckets, 0) {
  compute_ = std::thread([this] { ComputeLoop(); });
  comm_ = std::thread([this] { CommLoop(); });
}

BucketPipeline::~BucketPipeline() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  compute_.join();
  comm_.join();
}

void BucketPipeline::ActivateLocked() {
  if (active_) return;
  active_ = true;
  compute_done_ = false;
  comm_done_ = false;
}

void BucketPipeline::MarkReady(int k) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ActivateLocked();
    ready_[k] = 1;
  }
  cv_.notify_all();
}

void BucketPipeline::Fail(const absl::Status& s) {
  if (error_.ok()) error_ = s;
}

void BucketPipeline::ComputeLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  int seen = -1;  // the generation this thread last worked on
  while (true) {
    cv_.wait(lock, [&] { return stop_ || (active_ && seen != generation_); });
    if (stop_) return;
    seen = generation_;
    int next_momentum = 0, next_newton_schulz = 0, next_row_stats = 0;
    while (next_row_stats < buckets_ && error_.ok() && !stop_) {
      // Momentum stages first (they unblock the gathers), then Newton-Schulz, then row statistics.
      int action = 0;
      if (next_momentum < buckets_ && ready_[next_momentum]) {
        action = 1;
      } else if (next_newton_schulz < next_momentum && gathered_[next_newton_schulz]) {
        action = 2;
      } else if (next_row_stats < next_newton_schulz && scattered_[next_row_stats]) {
        action = 3;
      }
      if (action == 0) {
        // Blocked: communication is in the way when no bucket still waits for its gradients.
        const bool on_comm = next_momentum == buckets_;
        const Clock::time_point t0 = Clock::now();
        cv_.wait(lock);
        if (on_comm) exposed_comm_ms_ += MsBetween(t0, Clock::now());
        continue;
      }
      const int k = action == 1 ? next_momentum : action == 2 ? next_newton_schulz : next_row_stats;
      lock.unlock();
      const absl::Status s = action == 1   ? stages_.momentum(k)
                             : action == 2 ? stages_.newton_schulz(k)
                                           : stages_.row_stats(k);
      lock.lock();
      if (!s.ok()) {
        Fail(s);
        cv_.notify_all();  // the comm thread drains
        break;
      }
      if (action == 1) {
        momentum_done_[next_momentum++] = 1;
      } else if (action == 2) {
        computed_[next_newton_schulz++] = 1;
      } else {
        ++next_row_stats;
      }
      cv_.notify_all();
    }
    compute_done_ = true;
    cv_.notify_all();
  }
}

void BucketPipeline::CommLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  int seen = -1;
  while (true) {
    cv_.wait(lock, [&] { return stop_ || (active_ && seen != generation_); });
    if (stop_) return;
    seen = generation_;
    size_t next = 0;  // the first collective of comm_order_ not issued yet
    for (; next < comm_order_.size(); ++next) {
      const sharding::PipelineCollective& c = comm_order_[next];
      cv_.wait(lock, [&] {
        return stop_ || !error_.ok() ||
               (c.gather ? momentum_done_[c.bucket] != 0 : computed_[c.bucket] != 0);
      });
      if (stop_ || !error_.ok()) break;
      lock.unlock();
      const absl::Status s = c.gather ? stages_.gather(c.bucket) : stages_.scatter(c.bucket);
      lock.lock();
      if (!s.ok()) {
        Fail(s);
        ++next;
        cv_.notify_all();  // the compute thread stops at the failure
        break;
      }
      (c.gather ? gathered_ : scattered_)[c.bucket] = 1;
      cv_.notify_all();
    }
    if (!stop_ && !error_.ok() && stages_.drain) {
      // A failure (here or in a compute stage): issue the rest of the fixed order, once the
      // compute thread has stopped touching the buffers, so that the peers' collectives complete.
      cv_.wait(lock, [&] { return stop_ || compute_done_; });
      for (; next < comm_order_.size() && !stop_; ++next) {
        const sharding::PipelineCollective& c = comm_order_[next];
        lock.unlock();
        stages_.drain(c.bucket, c.gather).IgnoreError();
        lock.lock();
      }
    }
    comm_done_ = true;
    cv_.notify_all();
  }
}

absl::Status BucketPipeline::Wait(double* exposed_comm_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  ActivateLocked();
  std::fill(ready_.begin(), ready_.end(), 1);
  cv_.notify_all();
  cv_.wait(lock, [&] { return compute_done_ && comm_done_; });
  const absl::Status result = error_;
  if (exposed_comm_ms != nullptr) *exposed_comm_ms = exposed_comm_ms_;
  // Re-arm for the next step.
  for (std::vector<char>* v : {&ready_, &momentum_done_, &gathered_, &computed_, &scattered_}) {
    std::fill(v->begin(), v->end(), 0);
  }
  error_ = absl::OkStatus();
  exposed_comm_ms_ = 0.0;
  active_ = false;
  ++generation_;
  return result;
}

}  // namespace normuon
