// The in-process group's rendezvous, cross-rank checks, copies and fault injection; see
// inprocess_group.h.
#include "comm/inprocess_group.h"

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "comm/device_binding.h"
#include "comm/exchange_match.h"

namespace normuon {

namespace {

enum class Kind { kExchange, kAllReduceSum, kAllGather };

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kExchange: return "exchange";
    case Kind::kAllReduceSum: return "all_reduce_sum";
    case Kind::kAllGather: return "all_gather";
  }
  return "unknown";
}

const char* FaultName(normuon_fault_t f) {
  switch (f) {
    case NORMUON_FAULT_NONE: return "NORMUON_FAULT_NONE";
    case NORMUON_FAULT_ERROR: return "NORMUON_FAULT_ERROR";
    case NORMUON_FAULT_NEVER_ARRIVE: return "NORMUON_FAULT_NEVER_ARRIVE";
    case NORMUON_FAULT_WRONG_SIZE: return "NORMUON_FAULT_WRONG_SIZE";
    case NORMUON_FAULT_MIN_ENUM:
    case NORMUON_FAULT_MAX_ENUM: break;
  }
  return "unknown fault";
}

// One rank's part of one collective. Pointers are the caller's; valid while it waits in Run.
struct Post {
  Kind kind = Kind::kExchange;
  ExchangePost exchange;      // kExchange
  const void* in = nullptr;   // kAllReduceSum (floats), kAllGather
  void* out = nullptr;
  uint64_t count = 0;         // floats for kAllReduceSum, bytes per rank for kAllGather
  void* stream = nullptr;     // device mode: the rank's stream (copies run on it)

  std::string Describe() const {
    switch (kind) {
      case Kind::kExchange:
        return absl::StrCat("exchange (", exchange.sends.size(), " sends, ",
                            exchange.recvs.size(), " receives)");
      case Kind::kAllReduceSum: return absl::StrCat("all_reduce_sum (count ", count, ")");
      case Kind::kAllGather: return absl::StrCat("all_gather (", count, " bytes per rank)");
    }
    return "unknown";
  }
};

struct ArmedFault {
  normuon_fault_t fault = NORMUON_FAULT_NONE;
  int64_t at = 0;
};

}  // namespace

class InProcessGroupState {
 public:
  InProcessGroupState(int world_size, double timeout_seconds, bool device_memory)
      : world_(world_size),
        timeout_seconds_(timeout_seconds),
        device_memory_(device_memory),
        next_(world_size, 0),
        posted_(world_size, -1),
        done_(world_size, -1),
        posts_(world_size),
        exchange_posts_(world_size),
        matcher_(world_size),
        faults_(world_size) {}

  int world_size() const { return world_; }
  bool device_memory() const { return device_memory_; }

  absl::Status Run(int rank, Post post);
  void FailFromOutside(std::string message);
  absl::Status AsyncError();
  absl::Status InjectFault(int rank, normuon_fault_t fault, int64_t at_call);
  int64_t NextCollective(int rank);

 private:
  // All of the helpers below require mu_.
  bool AllPosted(int64_t collective) const {
    for (int64_t p : posted_) {
      if (p != collective) return false;
    }
    return true;
  }
  bool AllDone(int64_t collective) const {
    for (int64_t d : done_) {
      if (d != collective) return false;
    }
    return true;
  }
  // Records the group's first failure and wakes every waiting rank.
  void Fail(int64_t collective, absl::Status status) {
    if (!failed_) {
      failed_ = true;
      failed_collective_ = collective;
      failure_ = std::move(status);
    }
    cv_.notify_all();
  }
  // The error for `rank`'s collective when the group has failed: the failure's own code for the
  // collective it happened in, Aborted for any other.
  absl::Status Refusal(int rank, int64_t collective, Kind kind) const {
    if (failed_collective_ == collective) {
      return absl::Status(failure_.code(),
                          absl::StrCat("rank ", rank, ", collective #", collective, " (",
                                       KindName(kind), ") failed: ", failure_.message()));
    }
    return absl::AbortedError(absl::StrCat("rank ", rank, ", collective #", collective, " (",
                                           KindName(kind), ") refused: the group has failed: ",
                                           failure_.message()));
  }
  absl::Status CheckLocal(int rank, int64_t collective, const Post& post) const;
  // Run by the last rank to post `collective`: the cross-rank checks, and the sum (device
  // mode: the inputs are read on `stream`, the completing rank's).
  absl::Status Complete(int64_t collective, void* stream);
  // Outside mu_: the copies of `rank`'s part, after Complete succeeded. Host mode never fails;
  // device mode returns a failed CUDA copy.
  absl::Status Execute(int rank, const Post& post);
  // dst = src: memcpy (host mode), or a copy on `stream` that is complete on return (device).
  absl::Status Copy(void* dst, const void* src, size_t bytes, void* stream) const {
    if (bytes == 0) return absl::OkStatus();
    if (device_memory_) return DeviceCopySync(dst, src, bytes, stream);
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  const int world_;
  const double timeout_seconds_;
  const bool device_memory_;
  std::vector<int64_t> next_;    // per rank: number of its next collective
  std::vector<int64_t> posted_;  // per rank: number of the collective it has posted, or -1
  std::vector<int64_t> done_;    // per rank: last collective whose copies it finished, or -1
  std::vector<Post> posts_;
  std::vector<ExchangePost> exchange_posts_;  // scratch for the matcher
  ExchangeMatcher matcher_;
  std::vector<float> sum_;  // the all-reduce result every rank copies
  std::vector<float> staged_;  // device mode: one rank's all-reduce input, read to the host
  absl::Status result_;     // outcome of Complete for the collective all ranks posted last
  std::vector<ArmedFault> faults_;
  bool failed_ = false;
  int64_t failed_collective_ = -1;  // -1: abort or teardown outside any collective
  absl::Status failure_;
};

absl::Status InProcessGroupState::CheckLocal(int rank, int64_t collective,
                                             const Post& post) const {
  switch (post.kind) {
    case Kind::kExchange:
      return CheckExchangeArgs(rank, world_, collective, post.exchange.sends,
                               post.exchange.recvs);
    case Kind::kAllReduceSum:
      if (post.count > std::numeric_limits<size_t>::max() / sizeof(float)) {
        return absl::InvalidArgumentError(absl::StrCat("rank ", rank, ", collective #",
                                                       collective, " (all_reduce_sum): count ",
                                                       post.count, " is too large"));
      }
      if (post.count > 0 && (post.in == nullptr || post.out == nullptr)) {
        return absl::InvalidArgumentError(absl::StrCat("rank ", rank, ", collective #",
                                                       collective,
                                                       " (all_reduce_sum): null buffer with "
                                                       "count ",
                                                       post.count));
      }
      return absl::OkStatus();
    case Kind::kAllGather:
      if (post.count > std::numeric_limits<size_t>::max() / static_cast<size_t>(world_)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "rank ", rank, ", collective #", collective, " (all_gather): ", post.count,
            " bytes per rank times ", world_, " ranks overflows"));
      }
      if (post.count > 0 && (post.in == nullptr || post.out == nullptr)) {
        return absl::InvalidArgumentError(absl::StrCat("rank ", rank, ", collective #",
                                                       collective,
                                                       " (all_gather): null buffer with ",
                                                       post.count, " bytes per rank"));
      }
      return absl::OkStatus();
  }
  return absl::InternalError("unknown collective kind");
}

absl::Status InProcessGroupState::Complete(int64_t collective, void* stream) {
  const Kind kind = posts_[0].kind;
  for (int r = 1; r < world_; ++r) {
    if (posts_[r].kind == kind) continue;
    std::vector<std::string> calls;
    for (int q = 0; q < world_; ++q) calls.push_back(absl::StrCat("rank ", q, " ",
                                                                  posts_[q].Describe()));
    return absl::AbortedError(absl::StrCat("collective #", collective,
                                           ": ranks called different collectives: ",
                                           absl::StrJoin(calls, ", ")));
  }
  switch (kind) {
    case Kind::kExchange: {
      for (int r = 0; r < world_; ++r) exchange_posts_[r] = posts_[r].exchange;
      absl::Status s = matcher_.Match(exchange_posts_, collective);
      if (!s.ok()) return absl::AbortedError(s.message());
      return absl::OkStatus();
    }
    case Kind::kAllReduceSum:
    case Kind::kAllGather: {
      const char* unit = kind == Kind::kAllReduceSum ? "count" : "bytes per rank";
      for (int r = 1; r < world_; ++r) {
        if (posts_[r].count != posts_[0].count) {
          return absl::AbortedError(absl::StrCat(
              "collective #", collective, " (", KindName(kind), "): rank 0 has ", unit, " ",
              posts_[0].count, " but rank ", r, " has ", unit, " ", posts_[r].count));
        }
      }
      if (kind == Kind::kAllGather) return absl::OkStatus();
      // Rank order, one buffer: the same bits on every rank, run after run.
      const size_t n = static_cast<size_t>(posts_[0].count);
      sum_.resize(n);
      if (n == 0) return absl::OkStatus();
      absl::Status copied = Copy(sum_.data(), posts_[0].in, n * sizeof(float), stream);
      if (!copied.ok()) return copied;
      for (int r = 1; r < world_; ++r) {
        const float* in = static_cast<const float*>(posts_[r].in);
        if (device_memory_) {
          staged_.resize(n);
          copied = Copy(staged_.data(), in, n * sizeof(float), stream);
          if (!copied.ok()) return copied;
          in = staged_.data();
        }
        for (size_t i = 0; i < n; ++i) sum_[i] += in[i];
      }
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unknown collective kind");
}

absl::Status InProcessGroupState::Execute(int rank, const Post& post) {
  switch (post.kind) {
    case Kind::kExchange:
      for (const TransferCopy& c : matcher_.plan(rank)) {
        if (c.dst == c.src) continue;
        absl::Status s = Copy(c.dst, c.src, c.bytes, post.stream);
        if (!s.ok()) return s;
      }
      return absl::OkStatus();
    case Kind::kAllReduceSum:
      return Copy(post.out, sum_.data(), post.count * sizeof(float), post.stream);
    case Kind::kAllGather: {
      char* out = static_cast<char*>(post.out);
      for (int q = 0; q < world_; ++q) {
        char* dst = out + static_cast<size_t>(q) * post.count;
        // In place (in == out + rank * bytes) leaves this rank's own slot as it is.
        if (dst == posts_[q].in) continue;
        absl::Status s = Copy(dst, posts_[q].in, post.count, post.stream);
        if (!s.ok()) return s;
      }
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unknown collective kind");
}

absl::Status InProcessGroupState::Run(int rank, Post post) {
  const auto start = std::chrono::steady_clock::now();
  // Device mode: the send buffers are written by work queued on the rank's stream.
  absl::Status synced = device_memory_ ? DeviceStreamSync(post.stream) : absl::OkStatus();
  std::unique_lock<std::mutex> lock(mu_);
  const int64_t collective = next_[rank]++;
  if (failed_) return Refusal(rank, collective, post.kind);
  if (!synced.ok()) {
    absl::Status s = absl::AbortedError(absl::StrCat(
        "rank ", rank, " could not wait for its stream before collective #", collective, " (",
        KindName(post.kind), "): ", synced.message()));
    Fail(collective, s);
    return s;
  }

  ArmedFault& armed = faults_[rank];
  switch (armed.fault) {
    case NORMUON_FAULT_NONE:
    case NORMUON_FAULT_MIN_ENUM:
    case NORMUON_FAULT_MAX_ENUM:  // never armed: inject_fault rejects it
      break;
    case NORMUON_FAULT_ERROR:
      if (armed.at == collective) {
        armed = ArmedFault();
        absl::Status s = absl::AbortedError(
            absl::StrCat("rank ", rank, " failed collective #", collective, " (",
                         KindName(post.kind), "): injected fault NORMUON_FAULT_ERROR"));
        Fail(collective, s);
        return s;
      }
      break;
    case NORMUON_FAULT_NEVER_ARRIVE:
      // The group is not told: the other ranks find out by their timeout, as with a dead peer.
      if (armed.at == collective) {
        armed = ArmedFault();
        return absl::AbortedError(absl::StrCat("rank ", rank, " did not take part in collective #",
                                               collective, " (", KindName(post.kind),
                                               "): injected fault NORMUON_FAULT_NEVER_ARRIVE"));
      }
      break;
    case NORMUON_FAULT_WRONG_SIZE:
      if (armed.at <= collective && post.kind == Kind::kExchange &&
          !post.exchange.sends.empty()) {
        armed = ArmedFault();
        post.exchange.inflated_send = 0;
      }
      break;
  }

  absl::Status local = CheckLocal(rank, collective, post);
  if (!local.ok()) {
    // The peers would otherwise wait out the timeout for a rank that has given up.
    Fail(collective, absl::AbortedError(absl::StrCat("rank ", rank, "'s arguments were rejected: ",
                                                     local.message())));
    return local;
  }

  posts_[rank] = post;
  posted_[rank] = collective;
  if (AllPosted(collective)) {
    result_ = Complete(collective, post.stream);
    if (!result_.ok()) Fail(collective, result_);
    cv_.notify_all();
  } else {
    const auto deadline =
        start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                    std::chrono::duration<double>(timeout_seconds_));
    cv_.wait_until(lock, deadline, [&] { return AllPosted(collective) || failed_; });
    if (!AllPosted(collective)) {
      if (failed_) return Refusal(rank, collective, post.kind);
      std::vector<int> missing;
      for (int q = 0; q < world_; ++q) {
        if (posted_[q] != collective) missing.push_back(q);
      }
      const double waited =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      absl::Status s = absl::DeadlineExceededError(absl::StrFormat(
          "rank %d waited %.2f s for ranks {%s} in collective #%d (%s)", rank, waited,
          absl::StrJoin(missing, ","), collective, KindName(post.kind)));
      Fail(collective, s);
      return s;
    }
  }
  // Every rank posted: result_ belongs to this collective until all ranks are done with it.
  if (!result_.ok()) {
    return absl::Status(result_.code(), absl::StrCat("rank ", rank, ", ", result_.message()));
  }

  lock.unlock();
  const absl::Status copied = Execute(rank, post);
  lock.lock();
  if (!copied.ok()) {
    Fail(collective, absl::AbortedError(absl::StrCat("rank ", rank, "'s copies of collective #",
                                                     collective, " failed: ", copied.message())));
  }
  // No rank leaves before every rank has copied: a sender's buffer is read until then, and the
  // group's plan and sum are reused by the next collective.
  done_[rank] = collective;
  if (AllDone(collective)) {
    cv_.notify_all();
  } else {
    cv_.wait(lock, [&] { return AllDone(collective); });
  }
  if (!copied.ok()) return Refusal(rank, collective, post.kind);
  return absl::OkStatus();
}

void InProcessGroupState::FailFromOutside(std::string message) {
  std::lock_guard<std::mutex> lock(mu_);
  Fail(-1, absl::AbortedError(std::move(message)));
}

absl::Status InProcessGroupState::AsyncError() {
  std::lock_guard<std::mutex> lock(mu_);
  return failed_ ? failure_ : absl::OkStatus();
}

absl::Status InProcessGroupState::InjectFault(int rank, normuon_fault_t fault, int64_t at_call) {
  if (fault < NORMUON_FAULT_NONE || fault > NORMUON_FAULT_WRONG_SIZE) {
    return absl::InvalidArgumentError(
        absl::StrCat("fault is ", static_cast<int>(fault), ", not a normuon_fault_t value"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (fault != NORMUON_FAULT_NONE && at_call < next_[rank]) {
    return absl::InvalidArgumentError(absl::StrCat(
        FaultName(fault), " at_call is ", at_call, ", but rank ", rank,
        "'s next collective is #", next_[rank], " (collectives are numbered from 0)"));
  }
  faults_[rank] = ArmedFault{fault, at_call};
  return absl::OkStatus();
}

int64_t InProcessGroupState::NextCollective(int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  return next_[rank];
}

InProcessRank::InProcessRank(std::shared_ptr<InProcessGroupState> group, int rank)
    : group_(std::move(group)), rank_(rank) {}

InProcessRank::~InProcessRank() {
  group_->FailFromOutside(absl::StrCat("rank ", rank_, "'s communicator was destroyed"));
}

int InProcessRank::world_size() const { return group_->world_size(); }

std::string InProcessRank::Describe() const {
  return absl::StrCat("in-process rank ", rank_, " of ", group_->world_size());
}

absl::Status InProcessRank::Exchange(absl::Span<const P2p> sends, absl::Span<const P2p> recvs,
                                     void* stream) {
  Post post;
  post.stream = stream;
  post.kind = Kind::kExchange;
  post.exchange.sends = sends;
  post.exchange.recvs = recvs;
  return group_->Run(rank_, post);
}

absl::Status InProcessRank::AllReduceSum(const float* in, float* out, size_t count,
                                         void* stream) {
  Post post;
  post.stream = stream;
  post.kind = Kind::kAllReduceSum;
  post.in = in;
  post.out = out;
  post.count = count;
  return group_->Run(rank_, post);
}

absl::Status InProcessRank::AllGather(const void* in, void* out, size_t bytes_per_rank,
                                      void* stream) {
  Post post;
  post.stream = stream;
  post.kind = Kind::kAllGather;
  post.in = in;
  post.out = out;
  post.count = bytes_per_rank;
  return group_->Run(rank_, post);
}

absl::Status InProcessRank::Abort() {
  group_->FailFromOutside(absl::StrCat("rank ", rank_, " aborted the group"));
  return absl::OkStatus();
}

absl::Status InProcessRank::AsyncError() const { return group_->AsyncError(); }

bool InProcessRank::UsesDeviceMemory() const { return group_->device_memory(); }

absl::Status InProcessRank::InjectFault(normuon_fault_t fault, int64_t at_call) {
  return group_->InjectFault(rank_, fault, at_call);
}

int64_t InProcessRank::next_collective() const { return group_->NextCollective(rank_); }

absl::StatusOr<std::vector<std::shared_ptr<InProcessRank>>> CreateInProcessGroup(
    int world_size, double timeout_seconds, InProcessMemory memory) {
  if (world_size < 1 || world_size > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("world_size is ", world_size, ", must be in [1, 4096]"));
  }
  if (!std::isfinite(timeout_seconds) || timeout_seconds <= 0 || timeout_seconds > 1e7) {
    return absl::InvalidArgumentError(absl::StrCat(
        "timeout_seconds is ", timeout_seconds, ", must be finite, > 0 and <= 1e7"));
  }
  if (memory == InProcessMemory::kDevice) {
    // A build without CUDA cannot move device memory: say so now, not at the first collective.
    absl::Status probe = DeviceStreamSync(nullptr);
    if (absl::IsUnimplemented(probe)) return probe;
    if (!probe.ok()) {
      return absl::UnknownError(absl::StrCat(
          "an in-process group on device memory needs a usable CUDA device: ", probe.message()));
    }
  }
  auto group = std::make_shared<InProcessGroupState>(world_size, timeout_seconds,
                                                     memory == InProcessMemory::kDevice);
  std::vector<std::shared_ptr<InProcessRank>> ranks;
  ranks.reserve(world_size);
  for (int r = 0; r < world_size; ++r) ranks.push_back(std::make_shared<InProcessRank>(group, r));
  return ranks;
}

}  // namespace normuon
