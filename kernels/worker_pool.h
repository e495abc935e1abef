// A fixed set of threads that run the numbered tasks of one job together with the calling thread:
// the CPU Newton-Schulz runs the output tiles of each GEMM on it (newton_schulz_cpu.cc).
//
// Which thread runs which task is not fixed (tasks are claimed in order, first come first
// served), so a job's tasks must write disjoint memory and their results must not depend on the
// thread that runs them. Run allocates nothing: the threads start in the constructor.
#ifndef NORMUON_KERNELS_WORKER_POOL_H_
#define NORMUON_KERNELS_WORKER_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace normuon {

class WorkerPool {
 public:
  // threads: how many threads run a job, the caller of Run included (threads - 1 are started
  // here); values below 1 count as 1 (Run then runs every task on the caller).
  explicit WorkerPool(int threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs task(context, i) for every i in [0, count) and returns when all have finished. One job
  // at a time: Run must not be called from two threads at once, nor from inside a task.
  void Run(int64_t count, void (*task)(void* context, int64_t i), void* context);

  // The same, for any callable f(int64_t) (a lambda; no copy, no allocation).
  template <typename F>
  void Run(int64_t count, F& f) {
    Run(count, [](void* c, int64_t i) { (*static_cast<F*>(c))(i); }, &f);
  }

 private:
  void WorkerMain();
  // Claims and runs tasks of the current job until none is left; returns how many it ran.
  int64_t RunTasks(void (*task)(void*, int64_t), void* context, int64_t count);

  std::mutex mu_;
  std::condition_variable wake_;  // a new job, or stop
  std::condition_variable idle_;  // tasks finished, or a worker left a job
  // The current job, written under mu_ while no worker is inside a job (active_ == 0).
  void (*task_)(void*, int64_t) = nullptr;
  void* context_ = nullptr;
  int64_t count_ = 0;
  int64_t generation_ = 0;
  int64_t finished_ = 0;  // tasks of the current job that have returned
  int active_ = 0;        // workers between picking up a job and leaving it
  bool stop_ = false;
  std::atomic<int64_t> next_{0};  // the next task to claim
  std::vector<std::thread> workers_;
};

}  // namespace normuon

#endif  // NORMUON_KERNELS_WORKER_POOL_H_
