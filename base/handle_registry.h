// The one registry behind every opaque handle of the C API (normuon_runtime_t, normuon_comm_t):
// 64-bit ids with a generation count, so that a destroyed handle is reported, never dereferenced
// (docs/ARCHITECTURE.md section 7, "C API conventions").
//
// A handle is (tag << 56) | (generation << 32) | slot:
// - tag (8 bits, non-zero) names the kind of object, so a handle of one kind passed where
//   another is expected is refused ("... is not a communicator handle") instead of finding an
//   object of the wrong kind; it also makes 0 never a handle.
// - slot (32 bits) indexes the registry's table; a slot is reused after Remove, and
// - generation (24 bits, from 1) grows on every reuse, so a stale handle never reaches the newer
//   object in its slot. A slot whose generation would pass max_generation is retired for good:
//   no handle value is ever issued twice.
// Find and Remove of 0, of another kind's handle, of a handle never issued or already removed
// are NotFound (the C edge's NORMUON_ERROR_INVALID_HANDLE) with a message naming the handle
// ("runtime handle 123 (0x7b) is not a live runtime (never created, or already destroyed)").
//
// Thread-safe: every member may be called from any thread; a std::mutex guards the table (not
// absl::Mutex: Debian's Abseil is not instrumented for ThreadSanitizer). Entries are shared_ptrs:
// an entry found by one thread stays alive while another thread removes it; what a call on a
// removed entry may still do is the caller's business (capi/ marks the entry dead under its
// own lock).
#ifndef NORMUON_BASE_HANDLE_REGISTRY_H_
#define NORMUON_BASE_HANDLE_REGISTRY_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace normuon {

inline constexpr uint32_t kMaxHandleGeneration = 0xFFFFFF;  // 24 bits between tag and slot

template <typename T>
class HandleRegistry {
 public:
  // tag: the top byte of every handle of this registry (non-zero, distinct per kind). kind: how
  // messages name the object ("communicator"). zero_note: appended to the message for handle 0
  // (what 0 means elsewhere, if anything). max_generation: at most kMaxHandleGeneration; tests
  // pass a small value to reach slot retirement quickly.
  HandleRegistry(uint8_t tag, std::string kind, std::string zero_note = "",
                 uint32_t max_generation = kMaxHandleGeneration)
      : tag_(uint64_t{tag} << 56),
        kind_(std::move(kind)),
        zero_note_(std::move(zero_note)),
        max_generation_(max_generation < 1 || max_generation > kMaxHandleGeneration
                            ? kMaxHandleGeneration
                            : max_generation) {}

  HandleRegistry(const HandleRegistry&) = delete;
  HandleRegistry& operator=(const HandleRegistry&) = delete;

  // Registers entry and returns its new handle. ResourceExhausted only when 2^32 - 1 slots are
  // live or retired (never in practice).
  absl::StatusOr<uint64_t> Add(std::shared_ptr<T> entry) {
    std::lock_guard<std::mutex> lock(mu_);
    uint32_t slot;
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
      ++slots_[slot].generation;
    } else {
      if (slots_.size() >= 0xFFFFFFFFu) {
        return absl::ResourceExhaustedError(
            absl::StrCat("no ", kind_, " handle left (every slot is live or retired)"));
      }
      slot = static_cast<uint32_t>(slots_.size());
      slots_.push_back(Slot{1, nullptr});
    }
    slots_[slot].entry = std::move(entry);
    return tag_ | (uint64_t{slots_[slot].generation} << 32) | slot;
  }

  // The entry of a live handle.
  absl::StatusOr<std::shared_ptr<T>> Find(uint64_t handle) const {
    std::lock_guard<std::mutex> lock(mu_);
    uint32_t slot = 0;
    absl::Status s = Decode(handle, &slot);
    if (!s.ok()) return s;
    return slots_[slot].entry;
  }

  // Removes a live handle and returns its entry; the handle is stale from now on.
  absl::StatusOr<std::shared_ptr<T>> Remove(uint64_t handle) {
    std::lock_guard<std::mutex> lock(mu_);
    uint32_t slot = 0;
    absl::Status s = Decode(handle, &slot);
    if (!s.ok()) return s;
    std::shared_ptr<T> entry = std::move(slots_[slot].entry);
    slots_[slot].entry = nullptr;
    if (slots_[slot].generation < max_generation_) {
      free_.push_back(slot);
    } else {
      ++retired_;
    }
    return entry;
  }

  // "12345 (0x3039)": a handle in messages, in decimal as C and Python callers print it and in
  // hex, which shows the tag, generation and slot.
  static std::string Describe(uint64_t handle) {
    return absl::StrCat(handle, " (0x", absl::Hex(handle), ")");
  }

  // Live handles now (for tests and leak checks).
  size_t live() const {
    std::lock_guard<std::mutex> lock(mu_);
    return slots_.size() - free_.size() - retired_;
  }

 private:
  struct Slot {
    uint32_t generation;
    std::shared_ptr<T> entry;  // null: free or retired
  };

  // Requires mu_.
  absl::Status Decode(uint64_t handle, uint32_t* slot) const {
    if (handle == 0) {
      return absl::NotFoundError(absl::StrCat(kind_, " handle 0 is not a live ", kind_,
                                              ": 0 is never a handle",
                                              zero_note_.empty() ? "" : " ", zero_note_));
    }
    if ((handle & ~((uint64_t{1} << 56) - 1)) != tag_) {
      return absl::NotFoundError(
          absl::StrCat("handle ", Describe(handle), " is not a ", kind_, " handle"));
    }
    const uint32_t s = static_cast<uint32_t>(handle & 0xffffffffu);
    const uint32_t generation = static_cast<uint32_t>((handle >> 32) & kMaxHandleGeneration);
    if (s >= slots_.size() || slots_[s].generation != generation ||
        slots_[s].entry == nullptr) {
      return absl::NotFoundError(absl::StrCat(kind_, " handle ", Describe(handle),
                                              " is not a live ", kind_,
                                              " (never created, or already destroyed)"));
    }
    *slot = s;
    return absl::OkStatus();
  }

  const uint64_t tag_;
  const std::string kind_;
  const std::string zero_note_;
  const uint32_t max_generation_;
  mutable std::mutex mu_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
  size_t retired_ = 0;
};

}  // namespace normuon

#endif  // NORMUON_BASE_HANDLE_REGISTRY_H_
