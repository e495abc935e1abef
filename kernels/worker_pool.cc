#include "kernels/worker_pool.h"

namespace normuon {

WorkerPool::WorkerPool(int threads) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { WorkerMain(); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

int64_t WorkerPool::RunTasks(void (*task)(void*, int64_t), void* context, int64_t count) {
  int64_t ran = 0;
  for (int64_t i = next_.fetch_add(1, std::memory_order_relaxed); i < count;
       i = next_.fetch_add(1, std::memory_order_relaxed)) {
    task(context, i);
    ++ran;
  }
  return ran;
}

void WorkerPool::Run(int64_t count, void (*task)(void*, int64_t), void* context) {
  if (count <= 0) return;
  if (workers_.empty() || count == 1) {
    for (int64_t i = 0; i < count; ++i) task(context, i);
    return;
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    // A worker still inside the previous job (it woke after that job's tasks were all claimed)
    // must leave it before the job's fields and the task counter change under it.
    idle_.wait(lock, [&] { return active_ == 0; });
    task_ = task;
    context_ = context;
    count_ = count;
    finished_ = 0;
    next_.store(0, std::memory_order_relaxed);
    ++generation_;
  }
  wake_.notify_all();
  const int64_t ran = RunTasks(task, context, count);
  std::unique_lock<std::mutex> lock(mu_);
  finished_ += ran;
  // The tasks' writes happen before this returns: each worker adds to finished_ under mu_ after
  // its tasks.
  idle_.wait(lock, [&] { return finished_ == count_; });
}

void WorkerPool::WorkerMain() {
  int64_t seen = 0;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    void (*task)(void*, int64_t) = task_;
    void* context = context_;
    const int64_t count = count_;
    ++active_;
    lock.unlock();
    const int64_t ran = RunTasks(task, context, count);
    lock.lock();
    finished_ += ran;
    --active_;
    idle_.notify_all();
  }
}

}  // namespace normuon
