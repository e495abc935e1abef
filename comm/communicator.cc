// The adapter over a caller's normuon_comm_ops_t and the single-rank communicator; see
// communicator.h.
#include "comm/communicator.h"

#include <atomic>
#include <cstddef>
#include <cstring>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/c_status.h"
#include "comm/exchange_match.h"

namespace normuon {
namespace {

// The first failure of a communicator; later collectives are refused with it.
class StickyFailure {
 public:
  absl::Status Get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return first_;
  }
  void Set(const absl::Status& s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (first_.ok()) first_ = s;
  }
  // Aborted naming the collective that was refused and the failure that ended the communicator.
  absl::Status Refusal(absl::string_view who, int64_t collective, absl::string_view kind) const {
    absl::Status first = Get();
    if (first.ok()) return first;
    return absl::AbortedError(absl::StrCat(who, ", collective #", collective, " (", kind,
                                           ") refused: the communicator failed earlier: ",
                                           first.message()));
  }

 private:
  mutable std::mutex mu_;
  absl::Status first_;
};

// ---- The adapter over normuon_comm_ops_t ----

class CustomOpsCommunicator final : public Communicator {
 public:
  explicit CustomOpsCommunicator(const normuon_comm_ops_t& ops) : ops_(ops) {}
  ~CustomOpsCommunicator() override {
    if (owns_ctx_.load() && ops_.destroy != nullptr) ops_.destroy(ops_.ctx);
  }

  void ReleaseContext() { owns_ctx_.store(false); }

  int rank() const override { return ops_.rank; }
  int world_size() const override { return ops_.world_size; }
  std::string Describe() const override {
    return absl::StrCat("custom communicator rank ", ops_.rank, " of ", ops_.world_size,
                        ops_.device_memory ? " (device memory)" : "");
  }
  bool UsesDeviceMemory() const override { return ops_.device_memory != 0; }

  absl::Status Exchange(absl::Span<const P2p> sends, absl::Span<const P2p> recvs,
                        void* stream) override {
    std::lock_guard<std::mutex> lock(call_mu_);
    const int64_t collective = next_collective_++;
    absl::Status refused = failure_.Refusal(Describe(), collective, "exchange");
    if (!refused.ok()) return refused;
    constexpr size_t kMax = static_cast<size_t>(std::numeric_limits<int32_t>::max());
    if (sends.size() > kMax || recvs.size() > kMax) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat(Describe(), ", collective #", collective, " (exchange): ", sends.size(),
                       " sends and ", recvs.size(), " receives; at most 2^31-1 each")));
    }
    const normuon_status_t s =
        ops_.exchange(ops_.ctx, sends.data(), static_cast<int32_t>(sends.size()), recvs.data(),
                      static_cast<int32_t>(recvs.size()), stream);
    return Finish(s, collective, "exchange");
  }

  absl::Status AllReduceSum(const float* in, float* out, size_t count, void* stream) override {
    std::lock_guard<std::mutex> lock(call_mu_);
    const int64_t collective = next_collective_++;
    absl::Status refused = failure_.Refusal(Describe(), collective, "all_reduce_sum");
    if (!refused.ok()) return refused;
    return Finish(ops_.all_reduce_sum_f32(ops_.ctx, in, out, count, stream), collective,
                  "all_reduce_sum");
  }

  absl::Status AllGather(const void* in, void* out, size_t bytes_per_rank,
                         void* stream) override {
    std::lock_guard<std::mutex> lock(call_mu_);
    const int64_t collective = next_collective_++;
    absl::Status refused = failure_.Refusal(Describe(), collective, "all_gather");
    if (!refused.ok()) return refused;
    return Finish(ops_.all_gather(ops_.ctx, in, out, bytes_per_rank, stream), collective,
                  "all_gather");
  }

  // Does not take call_mu_: abort must reach the backend while a collective is in flight.
  absl::Status Abort() override {
    failure_.Set(absl::AbortedError(absl::StrCat(Describe(), " was aborted")));
    if (ops_.abort == nullptr) return absl::OkStatus();
    const normuon_status_t s = ops_.abort(ops_.ctx);
    if (s == NORMUON_SUCCESS) return absl::OkStatus();
    return StatusFromC(s, absl::StrCat(Describe(), ": abort returned ", StatusName(s), ": ",
                                       ErrorText()));
  }

  absl::Status AsyncError() const override { return failure_.Get(); }

 private:
  std::string ErrorText() const {
    if (ops_.last_error == nullptr) return "(no message: ops.last_error is not set)";
    const char* text = ops_.last_error(ops_.ctx);
    if (text == nullptr || text[0] == '\0') return "(no message from ops.last_error)";
    return text;
  }

  absl::Status Fail(absl::Status s) {
    failure_.Set(s);
    return s;
  }

  // A timeout ends the communicator: the adapter cannot know whether the peers are still inside
  // that collective, and the next one could be matched against it. Any other error is the
  // transport's to judge (normuon/comm.h, "After a failure"): the runtime goes on calling it, so
  // that a rank whose call failed one-sidedly still takes part in the rest of the step and the
  // runtime can tell every rank what happened.
  absl::Status Finish(normuon_status_t s, int64_t collective, absl::string_view kind) {
    if (s == NORMUON_SUCCESS) return absl::OkStatus();
    absl::Status status = StatusFromC(s, absl::StrCat(Describe(), ", collective #", collective,
                                                      " (", kind, ") returned ", StatusName(s),
                                                      ": ", ErrorText()));
    return s == NORMUON_ERROR_TIMEOUT ? Fail(std::move(status)) : status;
  }

  const normuon_comm_ops_t ops_;
  std::atomic<bool> owns_ctx_{true};  // false: destruction leaves ctx to the caller
  std::mutex call_mu_;  // serializes collectives; guards next_collective_
  int64_t next_collective_ = 0;
  StickyFailure failure_;
};

absl::Status CheckOps(const normuon_comm_ops_t& ops) {
  if (ops.world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("normuon_comm_ops_t.world_size is ",
                                                   ops.world_size, ", must be >= 1"));
  }
  if (ops.rank < 0 || ops.rank >= ops.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("normuon_comm_ops_t.rank is ", ops.rank,
                                                   ", must be in [0, world_size = ",
                                                   ops.world_size, ")"));
  }
  if (ops.exchange == nullptr) {
    return absl::InvalidArgumentError("normuon_comm_ops_t.exchange is NULL (required)");
  }
  if (ops.all_reduce_sum_f32 == nullptr) {
    return absl::InvalidArgumentError(
        "normuon_comm_ops_t.all_reduce_sum_f32 is NULL (required)");
  }
  if (ops.all_gather == nullptr) {
    return absl::InvalidArgumentError("normuon_comm_ops_t.all_gather is NULL (required)");
  }
  if (ops.device_memory != 0 && ops.device_memory != 1) {
    return absl::InvalidArgumentError(absl::StrCat("normuon_comm_ops_t.device_memory is ",
                                                   ops.device_memory, ", must be 0 or 1"));
  }
  return absl::OkStatus();
}

// ---- Single rank ----

class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string Describe() const override { return "single rank"; }

  absl::Status Exchange(absl::Span<const P2p> sends, absl::Span<const P2p> recvs,
                        void*) override {
    std::lock_guard<std::mutex> lock(call_mu_);
    const int64_t collective = next_collective_++;
    absl::Status s = failure_.Refusal(Describe(), collective, "exchange");
    if (!s.ok()) return s;
    s = CheckExchangeArgs(0, 1, collective, sends, recvs);
    if (!s.ok()) return Fail(s);
    const ExchangePost post{sends, recvs};
    s = matcher_.Match(absl::MakeConstSpan(&post, 1), collective);
    if (!s.ok()) return Fail(s);
    for (const TransferCopy& c : matcher_.plan(0)) {
      if (c.bytes > 0 && c.dst != c.src) std::memmove(c.dst, c.src, c.bytes);
    }
    return absl::OkStatus();
  }

  absl::Status AllReduceSum(const float* in, float* out, size_t count, void*) override {
    std::lock_guard<std::mutex> lock(call_mu_);
    const int64_t collective = next_collective_++;
    absl::Status s = failure_.Refusal(Describe(), collective, "all_reduce_sum");
    if (!s.ok()) return s;
    if (count > 0 && (in == nullptr || out == nullptr)) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "rank 0, collective #", collective, " (all_reduce_sum): null buffer with count ",
          count)));
    }
    if (count > 0 && in != out) std::memmove(out, in, count * sizeof(float));
    return absl::OkStatus();
  }

  absl::Status AllGather(const void* in, void* out, size_t bytes_per_rank, void*) override {
    std::lock_guard<std::mutex> lock(call_mu_);
    const int64_t collective = next_collective_++;
    absl::Status s = failure_.Refusal(Describe(), collective, "all_gather");
    if (!s.ok()) return s;
    if (bytes_per_rank > 0 && (in == nullptr || out == nullptr)) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "rank 0, collective #", collective, " (all_gather): null buffer with ",
          bytes_per_rank, " bytes per rank")));
    }
    if (bytes_per_rank > 0 && in != out) std::memmove(out, in, bytes_per_rank);
    return absl::OkStatus();
  }

  absl::Status Abort() override {
    failure_.Set(absl::AbortedError("single rank communicator was aborted"));
    return absl::OkStatus();
  }

  absl::Status AsyncError() const override { return failure_.Get(); }

 private:
  absl::Status Fail(absl::Status s) {
    failure_.Set(s);
    return s;
  }

  std::mutex call_mu_;  // serializes collectives; guards next_collective_ and matcher_
  int64_t next_collective_ = 0;
  ExchangeMatcher matcher_{1};
  StickyFailure failure_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<Communicator>> MakeCustomOpsCommunicator(
    const normuon_comm_ops_t& ops) {
  absl::Status s = CheckOps(ops);
  if (!s.ok()) return s;
  return std::shared_ptr<Communicator>(std::make_shared<CustomOpsCommunicator>(ops));
}

void ReleaseCustomOpsContext(Communicator& comm) {
  if (auto* custom = dynamic_cast<CustomOpsCommunicator*>(&comm)) custom->ReleaseContext();
}

std::shared_ptr<Communicator> MakeSingleRankCommunicator() {
  return std::make_shared<SingleRankCommunicator>();
}

}  // namespace normuon
