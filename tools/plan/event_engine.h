// event_engine.h: the discrete-event engine under the planner's simulation (step_model.cc). A job
// either lasts a fixed time or needs an amount of work on a shared resource (a GPU, or the cores
// of a machine), which it receives by processor sharing: while the jobs on a resource demand more
// than its capacity, each one progresses at its share.
#ifndef NORMUON_TOOLS_PLAN_EVENT_ENGINE_H_
#define NORMUON_TOOLS_PLAN_EVENT_ENGINE_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

namespace normuon::plan {

class EventEngine {
 public:
  using Callback = std::function<void()>;

  int AddResource(double capacity) {
    resources_.push_back(Resource{capacity, {}});
    return static_cast<int>(resources_.size()) - 1;
  }

  // resource < 0: done after `work` seconds. Otherwise the job needs `work` seconds of one unit
  // of the resource and can use up to `width` units at once. `done` runs at its completion, from
  // Next(), never from Start.
  void Start(int resource, double work, double width, Callback done) {
    int id;
    if (!free_.empty()) {
      id = free_.back();
      free_.pop_back();
    } else {
      id = static_cast<int>(jobs_.size());
      jobs_.emplace_back();
    }
    Job& j = jobs_[id];
    j.resource = resource;
    j.remaining = std::max(0.0, work);
    j.width = width;
    j.rate = 0.0;
    j.updated = now_;
    j.done = std::move(done);
    j.live = true;
    if (resource < 0) {
      Push(now_ + j.remaining, id);
      return;
    }
    Settle(resource);
    resources_[resource].jobs.push_back(id);
    Rebalance(resource);
  }

  // Completes the next job (running its callback); false when none is left.
  bool Next() {
    while (!events_.empty()) {
      const Event e = events_.top();
      events_.pop();
      Job& j = jobs_[e.job];
      if (!j.live || j.version != e.version) continue;  // superseded by a rebalance
      now_ = std::max(now_, e.time);
      if (j.resource >= 0) {
        Settle(j.resource);
        std::vector<int>& list = resources_[j.resource].jobs;
        list.erase(std::find(list.begin(), list.end(), e.job));
        Rebalance(j.resource);
      }
      j.live = false;
      Callback done = std::move(j.done);
      j.done = nullptr;
      free_.push_back(e.job);
      done();
      return true;
    }
    return false;
  }

  double now() const { return now_; }

 private:
  struct Job {
    int resource = -1;
    double remaining = 0.0, width = 1.0, rate = 0.0, updated = 0.0;
    uint64_t version = 0;
    Callback done;
    bool live = false;
  };
  struct Resource {
    double capacity;
    std::vector<int> jobs;
  };
  struct Event {
    double time;
    uint64_t seq;
    int job;
    uint64_t version;
    bool operator>(const Event& o) const {
      return time != o.time ? time > o.time : seq > o.seq;
    }
  };

  void Push(double time, int id) {
    Job& j = jobs_[id];
    ++j.version;
    events_.push(Event{time, seq_++, id, j.version});
  }

  // Brings every job of the resource's remaining work up to now at its current rate.
  void Settle(int resource) {
    for (int id : resources_[resource].jobs) {
      Job& j = jobs_[id];
      j.remaining = std::max(0.0, j.remaining - j.rate * (now_ - j.updated));
      j.updated = now_;
    }
  }

  // New shares after the set of jobs changed, and new completion times.
  void Rebalance(int resource) {
    Resource& res = resources_[resource];
    double demand = 0.0;
    for (int id : res.jobs) demand += jobs_[id].width;
    const double scale = demand > res.capacity ? res.capacity / demand : 1.0;
    for (int id : res.jobs) {
      Job& j = jobs_[id];
      j.rate = j.width * scale;
      Push(now_ + j.remaining / j.rate, id);
    }
  }

  double now_ = 0.0;
  uint64_t seq_ = 0;
  std::vector<Job> jobs_;
  std::vector<int> free_;
  std::vector<Resource> resources_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
};

}  // namespace normuon::plan

#endif  // NORMUON_TOOLS_PLAN_EVENT_ENGINE_H_
