// normuon_run's ranks as MPI processes (mpi_world.h).
#include "tools/run/mpi_world.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "normuon/mpi.h"

namespace normuon_tools::run {
namespace {

// The tool's own messages (outcomes to rank 0) travel on a duplicate of MPI_COMM_WORLD, apart
// from the trainer-side world and from normuon's own duplicate.
MPI_Comm g_tool_comm = MPI_COMM_NULL;

std::string MpiErrorText(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return absl::StrCat("MPI error ", code);
  return std::string(text, static_cast<size_t>(len));
}

// Waits for a request, sleeping between polls (from 20 us up to 1 ms): a rank waiting for rank 0
// (which may be computing the --check reference) must not spin on a shared core.
int WaitGently(MPI_Request* request) {
  auto pause = std::chrono::microseconds(20);
  for (;;) {
    int done = 0;
    const int rc = MPI_Test(request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS || done) return rc;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

// A rank's outcome as bytes (the same binary runs on every rank: fixed-size fields travel as they
// are in memory).
class Writer {
 public:
  void Raw(const void* p, size_t n) {
    if (n > 0) bytes_.append(static_cast<const char*>(p), n);  // p may be null when n is 0
  }
  template <typename T>
  void Value(const T& v) {
    Raw(&v, sizeof v);
  }
  template <typename T>
  void Vector(const std::vector<T>& v) {
    Value<uint64_t>(v.size());
    Raw(v.data(), v.size() * sizeof(T));
  }
  void String(const std::string& s) {
    Value<uint64_t>(s.size());
    Raw(s.data(), s.size());
  }
  std::string& bytes() { return bytes_; }

 private:
  std::string bytes_;
};

class Reader {
 public:
  explicit Reader(const std::string& bytes) : p_(bytes.data()), left_(bytes.size()) {}
  bool ok() const { return ok_; }
  void Raw(void* dst, size_t n) {
    if (n == 0) return;  // dst may be null (an empty vector's data())
    if (!ok_ || n > left_) {
      ok_ = false;
      return;
    }
    std::memcpy(dst, p_, n);
    p_ += n;
    left_ -= n;
  }
  template <typename T>
  void Value(T* v) {
    Raw(v, sizeof *v);
  }
  template <typename T>
  void Vector(std::vector<T>* v) {
    uint64_t n = 0;
    Value(&n);
    if (!ok_ || n > left_ / sizeof(T)) {
      ok_ = false;
      return;
    }
    v->resize(n);
    Raw(v->data(), n * sizeof(T));
  }
  void String(std::string* s) {
    uint64_t n = 0;
    Value(&n);
    if (!ok_ || n > left_) {
      ok_ = false;
      return;
    }
    s->assign(p_, n);
    p_ += n;
    left_ -= n;
  }

 private:
  const char* p_;
  size_t left_;
  bool ok_ = true;
};

std::string Serialize(const RankOutcome& o) {
  Writer w;
  w.String(o.error);
  w.Vector(o.step_ms);
  w.Value(o.phases);
  w.Value<uint8_t>(o.have_phases ? 1 : 0);
  w.Value<uint64_t>(o.params.size());
  for (const std::vector<float>& p : o.params) w.Vector(p);
  w.Value(o.sum);
  w.Value(o.sum_sq);
  w.Value(o.state_bytes);
  w.Value(o.setup_ms);
  w.Value(o.grad_ms);
  w.String(o.trace);
  w.Vector(o.exposed_ms);
  w.Vector(o.backward_ms);
  return std::move(w.bytes());
}

bool Deserialize(const std::string& bytes, RankOutcome* o) {
  Reader r(bytes);
  uint8_t have_phases = 0;
  uint64_t entries = 0;
  r.String(&o->error);
  r.Vector(&o->step_ms);
  r.Value(&o->phases);
  r.Value(&have_phases);
  o->have_phases = have_phases != 0;
  r.Value(&entries);
  if (!r.ok() || entries > bytes.size()) return false;
  o->params.resize(entries);
  for (std::vector<float>& p : o->params) r.Vector(&p);
  r.Value(&o->sum);
  r.Value(&o->sum_sq);
  r.Value(&o->state_bytes);
  r.Value(&o->setup_ms);
  r.Value(&o->grad_ms);
  r.String(&o->trace);
  r.Vector(&o->exposed_ms);
  r.Vector(&o->backward_ms);
  return r.ok();
}

// Messages of at most 1 GiB (MPI counts are int).
constexpr uint64_t kChunk = uint64_t{1} << 30;
constexpr int kTagSize = 1, kTagData = 2;

absl::Status SendTo0(const std::string& bytes) {
  uint64_t size = bytes.size();
  MPI_Request request;
  int rc = MPI_Isend(&size, 1, MPI_UINT64_T, 0, kTagSize, g_tool_comm, &request);
  if (rc == MPI_SUCCESS) rc = WaitGently(&request);
  for (uint64_t at = 0; rc == MPI_SUCCESS && at < size; at += kChunk) {
    const int n = static_cast<int>(std::min(kChunk, size - at));
    rc = MPI_Isend(bytes.data() + at, n, MPI_BYTE, 0, kTagData, g_tool_comm, &request);
    if (rc == MPI_SUCCESS) rc = WaitGently(&request);
  }
  if (rc != MPI_SUCCESS) {
    return absl::UnavailableError(
        absl::StrCat("sending this rank's outcome to rank 0: ", MpiErrorText(rc)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReceiveFrom(int rank) {
  uint64_t size = 0;
  MPI_Request request;
  int rc = MPI_Irecv(&size, 1, MPI_UINT64_T, rank, kTagSize, g_tool_comm, &request);
  if (rc == MPI_SUCCESS) rc = WaitGently(&request);
  std::string bytes;
  if (rc == MPI_SUCCESS) bytes.resize(size);
  for (uint64_t at = 0; rc == MPI_SUCCESS && at < size; at += kChunk) {
    const int n = static_cast<int>(std::min(kChunk, size - at));
    rc = MPI_Irecv(bytes.data() + at, n, MPI_BYTE, rank, kTagData, g_tool_comm, &request);
    if (rc == MPI_SUCCESS) rc = WaitGently(&request);
  }
  if (rc != MPI_SUCCESS) {
    return absl::UnavailableError(
        absl::StrCat("receiving the outcome of rank ", rank, ": ", MpiErrorText(rc)));
  }
  return bytes;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MpiWorld>> MpiWorld::Start() {
  int provided = 0;
  // MULTIPLE: the pipelined schedules call MPI from the runtime's worker thread while this thread
  // may be elsewhere (mpi.h, "Threads").
  int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) {
    return absl::UnavailableError(absl::StrCat("MPI_Init_thread: ", MpiErrorText(rc)));
  }
  std::unique_ptr<MpiWorld> w(new MpiWorld());
  MPI_Comm_rank(MPI_COMM_WORLD, &w->rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &w->world_);
  rc = MPI_Comm_dup(MPI_COMM_WORLD, &g_tool_comm);
  if (rc != MPI_SUCCESS) {
    return absl::UnavailableError(absl::StrCat("MPI_Comm_dup: ", MpiErrorText(rc)));
  }
  MPI_Comm_set_errhandler(g_tool_comm, MPI_ERRORS_RETURN);
  return w;
}

MpiWorld::~MpiWorld() {
  MPI_Request request;
  if (MPI_Ibarrier(g_tool_comm, &request) == MPI_SUCCESS) WaitGently(&request);
  MPI_Comm_free(&g_tool_comm);
  MPI_Finalize();
}

int MpiWorld::FirstFailed(bool ok) {
  int mine = ok ? world_ : rank_, lowest = mine;
  MPI_Request request;
  if (MPI_Iallreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, g_tool_comm, &request) != MPI_SUCCESS ||
      WaitGently(&request) != MPI_SUCCESS) {
    return ok ? 0 : rank_;  // cannot agree: stop
  }
  return lowest == world_ ? -1 : lowest;
}

void MpiWorld::Abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; in case it does
}

absl::StatusOr<std::vector<RankOutcome>> MpiWorld::Run(const RunSetup& setup) {
  if (setup.ranks != world_) {
    return absl::InternalError(
        absl::StrCat("the run has ", setup.ranks, " ranks for ", world_, " MPI processes"));
  }
  normuon_comm_t comm = 0;
  char why[1024];
  const normuon_status_t st =
      normuon_comm_create_mpi(MPI_COMM_WORLD, setup.timeout_s, &comm, why, sizeof why);
  if (st != NORMUON_SUCCESS) {
    return absl::UnavailableError(absl::StrCat(
        "rank ", rank_, ": normuon_comm_create_mpi: ", normuon_status_string(st), ": ", why));
  }
  RankOutcome mine = RunRank(setup.rank, comm, rank_, world_);
  if (mine.error.empty()) {
    normuon_comm_destroy(comm);
  } else {
    // A failed collective ends the communicator; its duplicate and any request MPI could not
    // cancel stay as they are (the job ends with Abort).
    normuon_comm_abort(comm);
  }
  std::vector<RankOutcome> outcomes;
  if (rank_ != 0) {
    const absl::Status sent = SendTo0(Serialize(mine));
    if (!sent.ok()) return sent;
    return outcomes;
  }
  outcomes.resize(world_);
  outcomes[0] = std::move(mine);
  for (int r = 1; r < world_; ++r) {
    absl::StatusOr<std::string> bytes = ReceiveFrom(r);
    if (!bytes.ok()) return bytes.status();
    if (!Deserialize(*bytes, &outcomes[r])) {
      return absl::DataLossError(absl::StrCat("the outcome of rank ", r, " is malformed"));
    }
  }
  return outcomes;
}

}  // namespace normuon_tools::run
