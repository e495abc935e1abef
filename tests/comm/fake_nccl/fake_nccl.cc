// A stand-in libnccl for CI: the NCCL functions normuon's NCCL communicator calls, exported
// with NCCL's names and C ABI (the types of comm/nccl_types.h), implemented on host memory with
// threads. Two NCCL ranks cannot share one GPU, and CI machines have none, so the adapter's own
// logic (grouping, polling of non-blocking calls, async errors, abort, timeouts, ownership) is
// tested against this library instead (docs/ARCHITECTURE.md section 6). It is not a model of NCCL's
// performance or of its device-side behaviour; streams are ignored and buffers are host memory.
//
// Model:
// - ncclGetUniqueId makes an id that names a process-local group; ncclCommInitRankConfig joins
//   it as one rank. Init completes when every rank has joined.
// - Each communicator has a worker thread that runs its asynchronous operations (init, groups,
//   finalize) in order. On a non-blocking communicator (config.blocking = 0) such a call
//   returns ncclInProgress and ncclCommGetAsyncError reports ncclInProgress until the worker is
//   done, then ncclSuccess or the error. On a blocking one the call waits for the worker.
// - ncclGroupStart/End record the operations of the calling thread and hand each
//   communicator's list to its worker at the outermost ncclGroupEnd (a call outside a group is a
//   group of one). Sends and receives meet in per-(sender, receiver) queues, matched in order,
//   so, as in NCCL, point-to-point involves only the two ranks; unlike NCCL, a byte-count
//   mismatch is reported (ncclInvalidUsage on both sides) instead of being undefined.
//   ncclAllReduce (float32 sum) and ncclAllGather run on normuon's in-process group
//   (comm/inprocess_group.h), which sums in rank order.
// - Faults for tests (fake_nccl.h): an async error, a hang, a failing call, a wrong version.
// - Rules NCCL states are checked and counted as misuses: no call on a destroyed or aborted
//   communicator, none while its previous operation is still ncclInProgress, no destroy with
//   work in flight, no ncclGroupEnd without ncclGroupStart.
// - Communicator structs are never freed, so a test can ask what became of one afterwards.
#include "tests/comm/fake_nccl/fake_nccl.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "comm/inprocess_group.h"
#include "comm/nccl_types.h"

#define FAKE_NCCL_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

using normuon::nccl::CommHandle;
using normuon::nccl::Config;
using normuon::nccl::DataType;
using normuon::nccl::RedOp;
using normuon::nccl::Result;
using normuon::nccl::UniqueId;
namespace nc = normuon::nccl;
using Clock = std::chrono::steady_clock;

constexpr int kDefaultVersion = nc::VersionCode(2, 28, 9);
constexpr double kDefaultPeerTimeout = 60.0;
constexpr char kIdMagic[8] = {'F', 'A', 'K', 'E', 'N', 'C', 'C', 'L'};

// ---- Process-wide state of the library ----

std::atomic<int> g_version{kDefaultVersion};
std::atomic<long> g_inits{0}, g_finalizes{0}, g_destroys{0}, g_aborts{0}, g_misuses{0};

struct Globals {
  std::mutex mu;
  std::map<int, int> faults;  // rank -> FakeNcclFault
  double peer_timeout = kDefaultPeerTimeout;
  std::string last_misuse;
  uint64_t next_id = 1;
};

Globals& G() {
  static Globals* g = new Globals();  // never destroyed: worker threads may outlive main
  return *g;
}

thread_local std::string t_last_error;  // ncclGetLastError(NULL) and failures without a comm
thread_local std::string t_returned;    // the string ncclGetLastError returns

void Misuse(const std::string& what) {
  g_misuses.fetch_add(1);
  std::lock_guard<std::mutex> lock(G().mu);
  G().last_misuse = what;
}

int TakeFault(int rank) {
  std::lock_guard<std::mutex> lock(G().mu);
  auto it = G().faults.find(rank);
  if (it == G().faults.end()) return FAKE_NCCL_NONE;
  const int fault = it->second;
  G().faults.erase(it);
  return fault;
}

double PeerTimeout() {
  std::lock_guard<std::mutex> lock(G().mu);
  return G().peer_timeout;
}

Clock::time_point DeadlineIn(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// ---- Groups of ranks (one per unique id) ----

// A send posted by its rank's worker, waiting for the matching receive.
struct PostedSend {
  const void* buf;
  size_t bytes;
  bool done = false;         // the receiver has copied it (or refused it)
  std::string mismatch;      // set by the receiver when the byte counts disagree
};

struct FakeGroup {
  FakeGroup(int n, double peer_timeout) : world(n), joined_ranks(n, false) {
    auto made = normuon::CreateInProcessGroup(n, peer_timeout);
    if (made.ok()) collective_ranks = *std::move(made);
  }

  const int world;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<bool> joined_ranks;
  int joined = 0;
  // Each joining rank takes its member of the in-process group (for the collectives) from here.
  std::vector<std::shared_ptr<normuon::InProcessRank>> collective_ranks;
  // Point-to-point: (sender, receiver) -> sends not yet received, in posting order.
  std::map<std::pair<int, int>, std::deque<std::shared_ptr<PostedSend>>> channels;
  bool failed = false;  // a rank aborted or failed: every waiting operation gives up
  std::string failure;
};

std::mutex g_groups_mu;
std::map<std::string, std::shared_ptr<FakeGroup>>& Groups() {
  static auto* groups = new std::map<std::string, std::shared_ptr<FakeGroup>>();
  return *groups;
}

// ---- Operations and jobs ----

struct Op {
  enum Kind { kSend, kRecv, kAllReduce, kAllGather } kind;
  const void* in = nullptr;
  void* out = nullptr;
  size_t bytes = 0;  // send/recv bytes, all-gather bytes per rank
  size_t count = 0;  // all-reduce floats
  int peer = -1;
};

struct Job {
  enum Kind { kInitWait, kGroup, kFinalize, kHang, kFail, kStop } kind;
  std::vector<Op> ops;
  std::string text;
};

enum Life { kLive = 0, kDestroyed = 1, kAborted = 2 };

}  // namespace

// The communicator struct behind ncclComm_t (declared opaque in comm/nccl_types.h).
struct normuon::nccl::Comm {
  int rank = 0;
  int nranks = 0;
  bool blocking = true;
  std::shared_ptr<FakeGroup> group;
  std::shared_ptr<normuon::InProcessRank> member;  // for ncclAllReduce / ncclAllGather

  std::mutex mu;  // guards everything below
  std::condition_variable cv;
  Result state = nc::kInProgress;
  std::string last_error;
  std::deque<Job> jobs;
  bool busy = false;  // the worker is running a job
  Life life = kLive;
  long groups = 0;
  long last_group_ops = 0;
  std::atomic<bool> aborting{false};
  std::thread worker;
};

namespace {

std::mutex g_comms_mu;
std::unordered_set<const void*>& Comms() {
  static auto* comms = new std::unordered_set<const void*>();
  return *comms;
}

nc::Comm* Known(const void* comm) {
  std::lock_guard<std::mutex> lock(g_comms_mu);
  return Comms().count(comm) != 0 ? static_cast<nc::Comm*>(const_cast<void*>(comm)) : nullptr;
}

// The communicator if it may be used by `call`; otherwise counts the misuse and returns null.
nc::Comm* Usable(CommHandle comm, const char* call, bool allow_in_progress) {
  nc::Comm* c = Known(comm);
  if (c == nullptr) {
    Misuse(absl::StrCat(call, " on a pointer that is not a communicator"));
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(c->mu);
  if (c->life != kLive) {
    Misuse(absl::StrCat(call, " on rank ", c->rank, "'s communicator after ",
                        c->life == kDestroyed ? "ncclCommDestroy" : "ncclCommAbort"));
    return nullptr;
  }
  if (!allow_in_progress && c->state == nc::kInProgress) {
    Misuse(absl::StrCat(call, " on rank ", c->rank,
                        "'s communicator while its previous operation is still ncclInProgress"));
    return nullptr;
  }
  return c;
}

size_t TypeSize(DataType type) {
  switch (type) {
    case nc::kInt8:
    case nc::kUint8: return 1;
    case nc::kFloat32: return 4;
  }
  return 0;
}

Result FromStatus(const absl::Status& s) {
  if (s.ok()) return nc::kSuccess;
  if (s.code() == absl::StatusCode::kInvalidArgument) return nc::kInvalidArgument;
  return nc::kRemoteError;
}

// Marks the group failed (a rank aborted or met an error) and wakes every waiting operation.
void FailGroup(FakeGroup& g, const std::string& why) {
  std::lock_guard<std::mutex> lock(g.mu);
  if (!g.failed) {
    g.failed = true;
    g.failure = why;
  }
  g.cv.notify_all();
}

// The sends and receives of one group on one rank: post every send, take every receive in
// order, then wait until every send was taken.
Result RunPointToPoint(nc::Comm& c, const std::vector<Op>& ops, std::string* error) {
  FakeGroup& g = *c.group;
  const Clock::time_point deadline = DeadlineIn(PeerTimeout());
  std::vector<std::shared_ptr<PostedSend>> mine;
  std::unique_lock<std::mutex> lock(g.mu);
  for (const Op& op : ops) {
    if (op.kind != Op::kSend) continue;
    auto posted = std::make_shared<PostedSend>();
    posted->buf = op.in;
    posted->bytes = op.bytes;
    g.channels[{c.rank, op.peer}].push_back(posted);
    mine.push_back(std::move(posted));
  }
  g.cv.notify_all();
  auto gone = [&] { return g.failed || c.aborting.load(); };
  for (const Op& op : ops) {
    if (op.kind != Op::kRecv) continue;
    auto& queue = g.channels[{op.peer, c.rank}];
    if (!g.cv.wait_until(lock, deadline, [&] { return gone() || !queue.empty(); })) {
      *error = absl::StrCat("fake NCCL rank ", c.rank, ": no send from rank ", op.peer,
                            " arrived within the peer timeout");
      return nc::kRemoteError;
    }
    if (gone()) {
      *error = absl::StrCat("fake NCCL rank ", c.rank, ": ", g.failed ? g.failure : "aborted");
      return nc::kRemoteError;
    }
    std::shared_ptr<PostedSend> send = queue.front();
    queue.pop_front();
    send->done = true;
    g.cv.notify_all();
    if (send->bytes != op.bytes) {
      send->mismatch = absl::StrCat("fake NCCL: rank ", op.peer, " sent ", send->bytes,
                                    " bytes to rank ", c.rank, ", which receives ", op.bytes);
      *error = send->mismatch;
      return nc::kInvalidUsage;
    }
    if (op.bytes > 0) std::memcpy(op.out, send->buf, op.bytes);
  }
  const bool all_taken = g.cv.wait_until(lock, deadline, [&] {
    return gone() || std::all_of(mine.begin(), mine.end(),
                                 [](const std::shared_ptr<PostedSend>& s) { return s->done; });
  });
  if (gone()) {
    *error = absl::StrCat("fake NCCL rank ", c.rank, ": ", g.failed ? g.failure : "aborted");
    return nc::kRemoteError;
  }
  if (!all_taken) {
    *error = absl::StrCat("fake NCCL rank ", c.rank,
                          ": a send was not received within the peer timeout");
    return nc::kRemoteError;
  }
  for (const auto& s : mine) {
    if (!s->mismatch.empty()) {
      *error = s->mismatch;
      return nc::kInvalidUsage;
    }
  }
  return nc::kSuccess;
}

Result RunGroup(nc::Comm& c, const std::vector<Op>& ops, std::string* error) {
  const bool p2p_only = std::all_of(ops.begin(), ops.end(), [](const Op& op) {
    return op.kind == Op::kSend || op.kind == Op::kRecv;
  });
  if (p2p_only) return RunPointToPoint(c, ops, error);
  if (ops.size() != 1) {
    *error = "fake NCCL runs a group of sends and receives, or a single collective";
    return nc::kInvalidUsage;
  }
  if (c.member == nullptr) {
    *error = "fake NCCL: the in-process group could not be made";
    return nc::kInternalError;
  }
  const Op& op = ops[0];
  absl::Status s = op.kind == Op::kAllReduce
                       ? c.member->AllReduceSum(static_cast<const float*>(op.in),
                                                static_cast<float*>(op.out), op.count, nullptr)
                       : c.member->AllGather(op.in, op.out, op.bytes, nullptr);
  if (!s.ok()) *error = absl::StrCat("fake NCCL rank ", c.rank, ": ", s.message());
  return FromStatus(s);
}

void Worker(nc::Comm* c) {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(c->mu);
      c->cv.wait(lock, [&] { return !c->jobs.empty(); });
      job = std::move(c->jobs.front());
      c->jobs.pop_front();
      if (job.kind == Job::kStop) return;
      c->busy = true;
    }
    Result result = nc::kSuccess;
    std::string error;
    FakeGroup& g = *c->group;
    switch (job.kind) {
      case Job::kInitWait: {
        std::unique_lock<std::mutex> lock(g.mu);
        const bool all = g.cv.wait_until(lock, DeadlineIn(PeerTimeout()), [&] {
          return g.joined == g.world || g.failed || c->aborting.load();
        });
        if (!all || g.joined != g.world) {
          result = nc::kRemoteError;
          error = absl::StrCat("fake NCCL rank ", c->rank, ": only ", g.joined, " of ", g.world,
                               " ranks joined");
        }
        break;
      }
      case Job::kGroup:
        result = RunGroup(*c, job.ops, &error);
        break;
      case Job::kFinalize:
        break;
      case Job::kHang: {
        std::unique_lock<std::mutex> lock(c->mu);
        c->cv.wait(lock, [&] { return c->aborting.load(); });
        break;
      }
      case Job::kFail:
        result = nc::kRemoteError;
        error = job.text;
        // As after a network error, the peers see it as well.
        FailGroup(g, job.text);
        if (c->member != nullptr) (void)c->member->Abort();
        break;
      case Job::kStop:
        break;
    }
    std::lock_guard<std::mutex> lock(c->mu);
    c->busy = false;
    if (!c->aborting.load()) {
      c->state = result;
      if (result != nc::kSuccess) c->last_error = error;
    }
    c->cv.notify_all();
  }
}

// Hands `job` to c's worker; the non-blocking answer is ncclInProgress, the blocking one waits.
Result Submit(nc::Comm* c, Job job) {
  std::unique_lock<std::mutex> lock(c->mu);
  c->state = nc::kInProgress;
  c->jobs.push_back(std::move(job));
  c->cv.notify_all();
  if (!c->blocking) return nc::kInProgress;
  c->cv.wait(lock, [&] { return c->state != nc::kInProgress; });
  return c->state;
}

// A job for the next asynchronous operation of c, with c's armed fault applied.
Result SubmitWithFault(nc::Comm* c, Job job, const char* call) {
  switch (TakeFault(c->rank)) {
    case FAKE_NCCL_ASYNC_ERROR:
      job.kind = Job::kFail;
      job.text = absl::StrCat("fake NCCL rank ", c->rank,
                              ": injected asynchronous error (FAKE_NCCL_ASYNC_ERROR) in ", call);
      break;
    case FAKE_NCCL_HANG:
      job.kind = Job::kHang;
      break;
    case FAKE_NCCL_CALL_ERROR: {
      std::lock_guard<std::mutex> lock(c->mu);
      c->state = nc::kInternalError;
      c->last_error = absl::StrCat("fake NCCL rank ", c->rank,
                                   ": injected call error (FAKE_NCCL_CALL_ERROR) in ", call);
      t_last_error = c->last_error;
      return nc::kInternalError;
    }
    default:
      break;
  }
  return Submit(c, std::move(job));
}

// ---- Groups of calls on this thread ----

thread_local int t_group_depth = 0;
thread_local std::vector<std::pair<nc::Comm*, Op>> t_group_ops;

// Dispatches the recorded operations, one job per communicator, in first-use order.
Result Dispatch(std::vector<std::pair<nc::Comm*, Op>> ops) {
  std::vector<nc::Comm*> order;
  for (const auto& entry : ops) {
    if (std::find(order.begin(), order.end(), entry.first) == order.end()) {
      order.push_back(entry.first);
    }
  }
  Result overall = nc::kSuccess;
  for (nc::Comm* c : order) {
    Job job;
    job.kind = Job::kGroup;
    for (const auto& entry : ops) {
      if (entry.first == c) job.ops.push_back(entry.second);
    }
    {
      std::lock_guard<std::mutex> lock(c->mu);
      ++c->groups;
      c->last_group_ops = static_cast<long>(job.ops.size());
    }
    const Result r = SubmitWithFault(c, std::move(job), "ncclGroupEnd");
    if (r != nc::kSuccess && (overall == nc::kSuccess || overall == nc::kInProgress)) overall = r;
  }
  return overall;
}

// Records one operation: inside a group until ncclGroupEnd, alone otherwise.
Result Record(nc::Comm* c, const Op& op) {
  if (t_group_depth > 0) {
    t_group_ops.emplace_back(c, op);
    return nc::kSuccess;
  }
  return Dispatch({{c, op}});
}

// The failure state of a usable communicator, which NCCL returns from later calls.
Result ErrorState(nc::Comm* c) {
  std::lock_guard<std::mutex> lock(c->mu);
  return c->state;
}

void StopWorker(nc::Comm* c) {
  {
    std::lock_guard<std::mutex> lock(c->mu);
    Job stop;
    stop.kind = Job::kStop;
    c->jobs.push_back(std::move(stop));
    c->cv.notify_all();
  }
  if (c->worker.joinable()) c->worker.join();
}

}  // namespace

// ---- The NCCL functions ----

FAKE_NCCL_EXPORT Result ncclGetVersion(int* version) {
  if (version == nullptr) return nc::kInvalidArgument;
  *version = g_version.load();
  return nc::kSuccess;
}

FAKE_NCCL_EXPORT Result ncclGetUniqueId(UniqueId* id) {
  if (id == nullptr) return nc::kInvalidArgument;
  std::memset(id, 0, sizeof(*id));
  std::memcpy(id->internal, kIdMagic, sizeof(kIdMagic));
  uint64_t n;
  {
    std::lock_guard<std::mutex> lock(G().mu);
    n = G().next_id++;
  }
  std::memcpy(id->internal + sizeof(kIdMagic), &n, sizeof(n));
  return nc::kSuccess;
}

FAKE_NCCL_EXPORT const char* ncclGetErrorString(Result result) {
  switch (result) {
    case nc::kSuccess: return "no error";
    case nc::kUnhandledCudaError: return "unhandled cuda error";
    case nc::kSystemError: return "unhandled system error";
    case nc::kInternalError: return "internal error";
    case nc::kInvalidArgument: return "invalid argument";
    case nc::kInvalidUsage: return "invalid usage";
    case nc::kRemoteError: return "remote process exited or there was a network error";
    case nc::kInProgress: return "NCCL operation in progress";
  }
  return "unknown result code";
}

FAKE_NCCL_EXPORT const char* ncclGetLastError(CommHandle comm) {
  nc::Comm* c = comm != nullptr ? Known(comm) : nullptr;
  if (c != nullptr) {
    std::lock_guard<std::mutex> lock(c->mu);
    t_returned = c->last_error.empty() ? t_last_error : c->last_error;
  } else {
    t_returned = t_last_error;
  }
  return t_returned.c_str();
}

FAKE_NCCL_EXPORT Result ncclCommInitRankConfig(CommHandle* comm, int nranks, UniqueId id,
                                               int rank, Config* config) {
  if (comm == nullptr || nranks < 1 || rank < 0 || rank >= nranks) {
    t_last_error = absl::StrCat("fake NCCL: bad arguments to ncclCommInitRankConfig (nranks ",
                                nranks, ", rank ", rank, ")");
    return nc::kInvalidArgument;
  }
  bool blocking = true;
  if (config != nullptr) {
    if (config->magic != nc::kConfigMagic) {
      t_last_error = "fake NCCL: ncclConfig_t not initialized (bad magic)";
      return nc::kInvalidArgument;
    }
    // As NCCL does: only fields the caller's struct has and its version knows are read.
    if (config->size >= offsetof(Config, blocking) + sizeof(int) &&
        config->version >= static_cast<unsigned>(nc::VersionCode(2, 14, 0)) &&
        config->blocking != nc::kConfigUndefInt) {
      blocking = config->blocking != 0;
    }
  }
  const std::string key(id.internal, sizeof(id.internal));
  std::shared_ptr<FakeGroup> group;
  {
    std::lock_guard<std::mutex> lock(g_groups_mu);
    std::shared_ptr<FakeGroup>& slot = Groups()[key];
    if (slot == nullptr) slot = std::make_shared<FakeGroup>(nranks, PeerTimeout());
    group = slot;
  }
  std::shared_ptr<normuon::InProcessRank> member;
  {
    std::lock_guard<std::mutex> lock(group->mu);
    if (group->world != nranks || group->joined_ranks[rank]) {
      t_last_error = group->world != nranks
                         ? absl::StrCat("fake NCCL: nranks ", nranks, " but the id's group has ",
                                        group->world)
                         : absl::StrCat("fake NCCL: rank ", rank, " joined twice");
      return nc::kInvalidArgument;
    }
    group->joined_ranks[rank] = true;
    ++group->joined;
    if (rank < static_cast<int>(group->collective_ranks.size())) {
      member = std::move(group->collective_ranks[rank]);
    }
    group->cv.notify_all();
    if (group->joined == group->world) {
      std::lock_guard<std::mutex> groups_lock(g_groups_mu);
      Groups().erase(key);  // an id makes one communicator
    }
  }

  auto* c = new nc::Comm();
  c->rank = rank;
  c->nranks = nranks;
  c->blocking = blocking;
  c->group = std::move(group);
  c->member = std::move(member);
  {
    std::lock_guard<std::mutex> lock(g_comms_mu);
    Comms().insert(c);
  }
  c->worker = std::thread(Worker, c);
  g_inits.fetch_add(1);
  *comm = c;
  Job job;
  job.kind = Job::kInitWait;
  return SubmitWithFault(c, std::move(job), "ncclCommInitRankConfig");
}

FAKE_NCCL_EXPORT Result ncclCommGetAsyncError(CommHandle comm, Result* async_error) {
  nc::Comm* c = Usable(comm, "ncclCommGetAsyncError", /*allow_in_progress=*/true);
  if (c == nullptr) return nc::kInvalidArgument;
  if (async_error == nullptr) return nc::kInvalidArgument;
  std::lock_guard<std::mutex> lock(c->mu);
  *async_error = c->state;
  return nc::kSuccess;
}

FAKE_NCCL_EXPORT Result ncclCommCount(CommHandle comm, int* count) {
  nc::Comm* c = Usable(comm, "ncclCommCount", /*allow_in_progress=*/true);
  if (c == nullptr || count == nullptr) return nc::kInvalidArgument;
  *count = c->nranks;
  return nc::kSuccess;
}

FAKE_NCCL_EXPORT Result ncclCommUserRank(CommHandle comm, int* rank) {
  nc::Comm* c = Usable(comm, "ncclCommUserRank", /*allow_in_progress=*/true);
  if (c == nullptr || rank == nullptr) return nc::kInvalidArgument;
  *rank = c->rank;
  return nc::kSuccess;
}

FAKE_NCCL_EXPORT Result ncclCommFinalize(CommHandle comm) {
  nc::Comm* c = Usable(comm, "ncclCommFinalize", /*allow_in_progress=*/false);
  if (c == nullptr) return nc::kInvalidArgument;
  g_finalizes.fetch_add(1);
  Job job;
  job.kind = Job::kFinalize;
  return SubmitWithFault(c, std::move(job), "ncclCommFinalize");
}

FAKE_NCCL_EXPORT Result ncclCommDestroy(CommHandle comm) {
  nc::Comm* c = Usable(comm, "ncclCommDestroy", /*allow_in_progress=*/true);
  if (c == nullptr) return nc::kInvalidArgument;
  {
    std::lock_guard<std::mutex> lock(c->mu);
    if (c->busy || !c->jobs.empty() || c->state == nc::kInProgress) {
      Misuse(absl::StrCat("ncclCommDestroy on rank ", c->rank,
                          "'s communicator with work in flight (NCCL would wait for it)"));
      c->aborting.store(true);  // the fake does not wait forever: release a hung job
      c->cv.notify_all();
    }
    c->life = kDestroyed;
  }
  StopWorker(c);
  c->member.reset();  // the in-process group fails for the other ranks, as a dead peer would
  g_destroys.fetch_add(1);
  return nc::kSuccess;
}

FAKE_NCCL_EXPORT Result ncclCommAbort(CommHandle comm) {
  if (comm == nullptr) return nc::kSuccess;
  nc::Comm* c = Usable(comm, "ncclCommAbort", /*allow_in_progress=*/true);
  if (c == nullptr) return nc::kInvalidArgument;
  {
    std::lock_guard<std::mutex> lock(c->mu);
    c->life = kAborted;
    c->aborting.store(true);
    c->cv.notify_all();
  }
  FailGroup(*c->group, absl::StrCat("rank ", c->rank, " aborted its communicator"));
  if (c->member != nullptr) (void)c->member->Abort();
  StopWorker(c);
  c->member.reset();
  g_aborts.fetch_add(1);
  return nc::kSuccess;
}

FAKE_NCCL_EXPORT Result ncclGroupStart() {
  ++t_group_depth;
  return nc::kSuccess;
}

FAKE_NCCL_EXPORT Result ncclGroupEnd() {
  if (t_group_depth == 0) {
    Misuse("ncclGroupEnd without ncclGroupStart");
    return nc::kInvalidUsage;
  }
  if (--t_group_depth > 0) return nc::kSuccess;
  std::vector<std::pair<nc::Comm*, Op>> ops;
  ops.swap(t_group_ops);
  return Dispatch(std::move(ops));
}

FAKE_NCCL_EXPORT Result ncclSend(const void* buf, size_t count, DataType type, int peer,
                                 CommHandle comm, void* /*stream*/) {
  nc::Comm* c = Usable(comm, "ncclSend", /*allow_in_progress=*/false);
  if (c == nullptr) return nc::kInvalidArgument;
  if (ErrorState(c) != nc::kSuccess) return ErrorState(c);
  if (peer < 0 || peer >= c->nranks || TypeSize(type) == 0 || (count > 0 && buf == nullptr)) {
    t_last_error = absl::StrCat("fake NCCL: bad ncclSend arguments (peer ", peer, ")");
    return nc::kInvalidArgument;
  }
  Op op;
  op.kind = Op::kSend;
  op.in = buf;
  op.bytes = count * TypeSize(type);
  op.peer = peer;
  return Record(c, op);
}

FAKE_NCCL_EXPORT Result ncclRecv(void* buf, size_t count, DataType type, int peer,
                                 CommHandle comm, void* /*stream*/) {
  nc::Comm* c = Usable(comm, "ncclRecv", /*allow_in_progress=*/false);
  if (c == nullptr) return nc::kInvalidArgument;
  if (ErrorState(c) != nc::kSuccess) return ErrorState(c);
  if (peer < 0 || peer >= c->nranks || TypeSize(type) == 0 || (count > 0 && buf == nullptr)) {
    t_last_error = absl::StrCat("fake NCCL: bad ncclRecv arguments (peer ", peer, ")");
    return nc::kInvalidArgument;
  }
  Op op;
  op.kind = Op::kRecv;
  op.out = buf;
  op.bytes = count * TypeSize(type);
  op.peer = peer;
  return Record(c, op);
}

FAKE_NCCL_EXPORT Result ncclAllReduce(const void* in, void* out, size_t count, DataType type,
                                      RedOp op_kind, CommHandle comm, void* /*stream*/) {
  nc::Comm* c = Usable(comm, "ncclAllReduce", /*allow_in_progress=*/false);
  if (c == nullptr) return nc::kInvalidArgument;
  if (ErrorState(c) != nc::kSuccess) return ErrorState(c);
  if (type != nc::kFloat32 || op_kind != nc::kSum) {
    t_last_error = "fake NCCL: ncclAllReduce supports float32 sum only";
    return nc::kInvalidArgument;
  }
  Op op;
  op.kind = Op::kAllReduce;
  op.in = in;
  op.out = out;
  op.count = count;
  return Record(c, op);
}

FAKE_NCCL_EXPORT Result ncclAllGather(const void* in, void* out, size_t count_per_rank,
                                      DataType type, CommHandle comm, void* /*stream*/) {
  nc::Comm* c = Usable(comm, "ncclAllGather", /*allow_in_progress=*/false);
  if (c == nullptr) return nc::kInvalidArgument;
  if (ErrorState(c) != nc::kSuccess) return ErrorState(c);
  if (TypeSize(type) == 0) {
    t_last_error = "fake NCCL: ncclAllGather with an unsupported type";
    return nc::kInvalidArgument;
  }
  Op op;
  op.kind = Op::kAllGather;
  op.in = in;
  op.out = out;
  op.bytes = count_per_rank * TypeSize(type);
  return Record(c, op);
}

// ---- Test hooks (fake_nccl.h) ----

FAKE_NCCL_EXPORT int fake_nccl_inject(int rank, int kind) {
  if (kind < FAKE_NCCL_NONE || kind > FAKE_NCCL_CALL_ERROR) return -1;
  std::lock_guard<std::mutex> lock(G().mu);
  if (kind == FAKE_NCCL_NONE) {
    G().faults.erase(rank);
  } else {
    G().faults[rank] = kind;
  }
  return 0;
}

FAKE_NCCL_EXPORT void fake_nccl_set_version(int version_code) { g_version.store(version_code); }

FAKE_NCCL_EXPORT void fake_nccl_set_peer_timeout(double seconds) {
  std::lock_guard<std::mutex> lock(G().mu);
  G().peer_timeout = seconds;
}

FAKE_NCCL_EXPORT void fake_nccl_reset(void) {
  g_version.store(kDefaultVersion);
  g_inits.store(0);
  g_finalizes.store(0);
  g_destroys.store(0);
  g_aborts.store(0);
  g_misuses.store(0);
  std::lock_guard<std::mutex> lock(G().mu);
  G().faults.clear();
  G().peer_timeout = kDefaultPeerTimeout;
  G().last_misuse.clear();
}

FAKE_NCCL_EXPORT void fake_nccl_counters(FakeNcclCounters* out) {
  if (out == nullptr) return;
  out->inits = g_inits.load();
  out->finalizes = g_finalizes.load();
  out->destroys = g_destroys.load();
  out->aborts = g_aborts.load();
  out->misuses = g_misuses.load();
}

FAKE_NCCL_EXPORT const char* fake_nccl_last_misuse(void) {
  std::lock_guard<std::mutex> lock(G().mu);
  t_returned = G().last_misuse;
  return t_returned.c_str();
}

FAKE_NCCL_EXPORT int fake_nccl_comm_state(const void* comm) {
  nc::Comm* c = Known(comm);
  if (c == nullptr) return -1;
  std::lock_guard<std::mutex> lock(c->mu);
  return static_cast<int>(c->life);
}

FAKE_NCCL_EXPORT int fake_nccl_group_stats(const void* comm, long* groups, long* last_group_ops) {
  nc::Comm* c = Known(comm);
  if (c == nullptr) return -1;
  std::lock_guard<std::mutex> lock(c->mu);
  if (groups != nullptr) *groups = c->groups;
  if (last_group_ops != nullptr) *last_group_ops = c->last_group_ops;
  return 0;
}
