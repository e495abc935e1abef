// Handle registry, status conversion, the adapter over a caller's normuon_comm_ops_t and the
// single-rank communicator; see communicator.h.
#include "comm/communicator.h"

#include <cstddef>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/exchange_match.h"

namespace normuon {
namespace {

// ---- Registry ----

constexpr uint64_t kCommTag = uint64_t{0xC0} << 56;
constexpr uint32_t kMaxGeneration = 0xFFFFFF;  // 24 bits between the tag and the slot

class CommRegistry {
 public:
  normuon_comm_t Add(std::shared_ptr<Communicator> comm) {
    auto entry = std::make_shared<CommHandle>();
    entry->comm = std::move(comm);
    std::lock_guard<std::mutex> lock(mu_);
    uint32_t slot;
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
      ++slots_[slot].generation;
    } else {
      slot = static_cast<uint32_t>(slots_.size());
      slots_.push_back(Slot{1, nullptr});
    }
    slots_[slot].entry = std::move(entry);
    return kCommTag | (uint64_t{slots_[slot].generation} << 32) | slot;
  }

  absl::StatusOr<std::shared_ptr<CommHandle>> Find(normuon_comm_t handle) {
    std::lock_guard<std::mutex> lock(mu_);
    uint32_t slot;
    absl::Status s = Decode(handle, &slot);
    if (!s.ok()) return s;
    return slots_[slot].entry;
  }

  absl::StatusOr<std::shared_ptr<CommHandle>> Remove(normuon_comm_t handle) {
    std::lock_guard<std::mutex> lock(mu_);
    uint32_t slot;
    absl::Status s = Decode(handle, &slot);
    if (!s.ok()) return s;
    std::shared_ptr<CommHandle> entry = std::move(slots_[slot].entry);
    slots_[slot].entry = nullptr;
    // A slot whose generation would wrap is retired, so no handle value ever comes back.
    if (slots_[slot].generation < kMaxGeneration) free_.push_back(slot);
    return entry;
  }

 private:
  struct Slot {
    uint32_t generation;
    std::shared_ptr<CommHandle> entry;
  };

  // Requires mu_.
  absl::Status Decode(normuon_comm_t handle, uint32_t* slot) const {
    if (handle == 0) {
      return absl::NotFoundError(
          "communicator handle 0 is not a communicator (0 stands for \"single rank, no "
          "communicator\" in normuon_create only)");
    }
    const uint32_t s = static_cast<uint32_t>(handle & 0xffffffffu);
    const uint32_t generation = static_cast<uint32_t>((handle >> 32) & kMaxGeneration);
    if ((handle & ~((uint64_t{1} << 56) - 1)) != kCommTag) {
      return absl::NotFoundError(absl::StrCat("handle 0x", absl::Hex(handle),
                                              " is not a communicator handle"));
    }
    if (s >= slots_.size() || slots_[s].generation != generation ||
        slots_[s].entry == nullptr) {
      return absl::NotFoundError(absl::StrCat("communicator handle 0x", absl::Hex(handle),
                                              " is not live (never created, or already "
                                              "destroyed)"));
    }
    *slot = s;
    return absl::OkStatus();
  }

  std::mutex mu_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
};

CommRegistry& Registry() {
  static CommRegistry* registry = new CommRegistry();  // never destroyed: used at exit
  return *registry;
}

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
    if (ops_.destroy != nullptr) ops_.destroy(ops_.ctx);
  }

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

  absl::Status Finish(normuon_status_t s, int64_t collective, absl::string_view kind) {
    if (s == NORMUON_SUCCESS) return absl::OkStatus();
    return Fail(StatusFromC(s, absl::StrCat(Describe(), ", collective #", collective, " (", kind,
                                            ") returned ", StatusName(s), ": ", ErrorText())));
  }

  const normuon_comm_ops_t ops_;
  std::mutex call_mu_;  // serializes collectives; guards next_collective_
  int64_t next_collective_ = 0;
  StickyFailure failure_;
};

absl::Status CheckOps(const normuon_comm_ops_t* ops) {
  if (ops == nullptr) return absl::InvalidArgumentError("ops is NULL");
  if (ops->struct_size < sizeof(normuon_comm_ops_t)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "normuon_comm_ops_t.struct_size is ", ops->struct_size, ", must be at least ",
        sizeof(normuon_comm_ops_t), " (fill the struct with normuon_comm_ops_init)"));
  }
  if (ops->world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("normuon_comm_ops_t.world_size is ",
                                                   ops->world_size, ", must be >= 1"));
  }
  if (ops->rank < 0 || ops->rank >= ops->world_size) {
    return absl::InvalidArgumentError(absl::StrCat("normuon_comm_ops_t.rank is ", ops->rank,
                                                   ", must be in [0, world_size = ",
                                                   ops->world_size, ")"));
  }
  if (ops->exchange == nullptr) {
    return absl::InvalidArgumentError("normuon_comm_ops_t.exchange is NULL (required)");
  }
  if (ops->all_reduce_sum_f32 == nullptr) {
    return absl::InvalidArgumentError(
        "normuon_comm_ops_t.all_reduce_sum_f32 is NULL (required)");
  }
  if (ops->all_gather == nullptr) {
    return absl::InvalidArgumentError("normuon_comm_ops_t.all_gather is NULL (required)");
  }
  if (ops->device_memory != 0 && ops->device_memory != 1) {
    return absl::InvalidArgumentError(absl::StrCat("normuon_comm_ops_t.device_memory is ",
                                                   ops->device_memory, ", must be 0 or 1"));
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

normuon_comm_t RegisterComm(std::shared_ptr<Communicator> comm) {
  return Registry().Add(std::move(comm));
}

absl::StatusOr<std::shared_ptr<Communicator>> LookupComm(normuon_comm_t handle) {
  if (handle == 0) return MakeSingleRankCommunicator();
  absl::StatusOr<std::shared_ptr<CommHandle>> entry = Registry().Find(handle);
  if (!entry.ok()) return entry.status();
  return (*entry)->comm;
}

absl::StatusOr<std::shared_ptr<CommHandle>> LookupCommHandle(normuon_comm_t handle) {
  return Registry().Find(handle);
}

absl::StatusOr<std::shared_ptr<CommHandle>> UnregisterComm(normuon_comm_t handle) {
  return Registry().Remove(handle);
}

const char* StatusName(normuon_status_t status) {
  switch (status) {
    case NORMUON_SUCCESS: return "NORMUON_SUCCESS";
    case NORMUON_ERROR_INVALID_ARGUMENT: return "NORMUON_ERROR_INVALID_ARGUMENT";
    case NORMUON_ERROR_INVALID_HANDLE: return "NORMUON_ERROR_INVALID_HANDLE";
    case NORMUON_ERROR_INVALID_STATE: return "NORMUON_ERROR_INVALID_STATE";
    case NORMUON_ERROR_UNSUPPORTED: return "NORMUON_ERROR_UNSUPPORTED";
    case NORMUON_ERROR_OUT_OF_MEMORY: return "NORMUON_ERROR_OUT_OF_MEMORY";
    case NORMUON_ERROR_CUDA: return "NORMUON_ERROR_CUDA";
    case NORMUON_ERROR_COMM: return "NORMUON_ERROR_COMM";
    case NORMUON_ERROR_NONFINITE: return "NORMUON_ERROR_NONFINITE";
    case NORMUON_ERROR_TIMEOUT: return "NORMUON_ERROR_TIMEOUT";
    case NORMUON_ERROR_INTERNAL: return "NORMUON_ERROR_INTERNAL";
    case NORMUON_STATUS_MIN_ENUM:
    case NORMUON_STATUS_MAX_ENUM: break;
  }
  return "NORMUON_ERROR_UNKNOWN_STATUS";
}

absl::Status StatusFromC(normuon_status_t status, absl::string_view message) {
  switch (status) {
    case NORMUON_SUCCESS: return absl::OkStatus();
    case NORMUON_ERROR_INVALID_ARGUMENT: return absl::InvalidArgumentError(message);
    case NORMUON_ERROR_INVALID_HANDLE: return absl::NotFoundError(message);
    case NORMUON_ERROR_INVALID_STATE: return absl::FailedPreconditionError(message);
    case NORMUON_ERROR_UNSUPPORTED: return absl::UnimplementedError(message);
    case NORMUON_ERROR_OUT_OF_MEMORY: return absl::ResourceExhaustedError(message);
    case NORMUON_ERROR_CUDA: return absl::UnknownError(message);
    case NORMUON_ERROR_COMM: return absl::AbortedError(message);
    case NORMUON_ERROR_NONFINITE: return absl::DataLossError(message);
    case NORMUON_ERROR_TIMEOUT: return absl::DeadlineExceededError(message);
    case NORMUON_ERROR_INTERNAL: return absl::InternalError(message);
    case NORMUON_STATUS_MIN_ENUM:
    case NORMUON_STATUS_MAX_ENUM: break;
  }
  return absl::InternalError(
      absl::StrCat(message, " [unknown status value ", static_cast<int>(status), "]"));
}

normuon_status_t StatusToC(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk: return NORMUON_SUCCESS;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists: return NORMUON_ERROR_INVALID_ARGUMENT;
    case absl::StatusCode::kNotFound: return NORMUON_ERROR_INVALID_HANDLE;
    case absl::StatusCode::kFailedPrecondition: return NORMUON_ERROR_INVALID_STATE;
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kUnavailable: return NORMUON_ERROR_UNSUPPORTED;
    case absl::StatusCode::kResourceExhausted: return NORMUON_ERROR_OUT_OF_MEMORY;
    case absl::StatusCode::kUnknown: return NORMUON_ERROR_CUDA;
    case absl::StatusCode::kAborted: return NORMUON_ERROR_COMM;
    case absl::StatusCode::kDataLoss: return NORMUON_ERROR_NONFINITE;
    case absl::StatusCode::kDeadlineExceeded: return NORMUON_ERROR_TIMEOUT;
    default: return NORMUON_ERROR_INTERNAL;
  }
}

absl::StatusOr<std::shared_ptr<Communicator>> MakeCustomOpsCommunicator(
    const normuon_comm_ops_t* ops) {
  absl::Status s = CheckOps(ops);
  if (!s.ok()) return s;
  // Only the fields of this version are read; a newer caller's larger struct is accepted.
  normuon_comm_ops_t copy;
  std::memcpy(&copy, ops, sizeof(copy));
  return std::shared_ptr<Communicator>(std::make_shared<CustomOpsCommunicator>(copy));
}

std::shared_ptr<Communicator> MakeSingleRankCommunicator() {
  return std::make_shared<SingleRankCommunicator>();
}

}  // namespace normuon
