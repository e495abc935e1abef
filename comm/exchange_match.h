// Matching of an exchange's sends and receives across ranks, shared by the host communicators
// (single rank and in-process group): checks every rank's arguments, pairs each send with its
// receive, and turns the pairs into a copy plan per receiving rank, or explains the first
// mismatch. Nothing is copied here: a caller copies only after Match succeeded for every rank,
// so a mismatch anywhere leaves every buffer untouched.
#ifndef NORMUON_COMM_EXCHANGE_MATCH_H_
#define NORMUON_COMM_EXCHANGE_MATCH_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "comm/communicator.h"

namespace normuon {

// One rank's part of an exchange as posted to the matcher. The spans are the caller's and must
// stay valid until the matcher's plan has been executed.
struct ExchangePost {
  absl::Span<const P2p> sends;
  absl::Span<const P2p> recvs;
  // Fault injection (NORMUON_FAULT_WRONG_SIZE): the send at this index is posted with one byte
  // more than listed; -1 for none. Safe because a mismatch copies nothing.
  int64_t inflated_send = -1;

  uint64_t PostedSendBytes(size_t i) const {
    return sends[i].bytes + (static_cast<int64_t>(i) == inflated_send ? 1 : 0);
  }
};

// A receive, resolved: copy `bytes` from the sender's buffer to the receiver's.
struct TransferCopy {
  void* dst;
  const void* src;
  uint64_t bytes;
};

// Checks one rank's own arguments (peers in range, buffers present for non-empty transfers,
// list lengths fit the C API's int32). InvalidArgument naming the rank, the collective, the
// list, the entry and the value.
absl::Status CheckExchangeArgs(int rank, int world_size, int64_t collective,
                               absl::Span<const P2p> sends, absl::Span<const P2p> recvs);

// Reusable across collectives: the scratch lists keep their capacity, so a steady stream of
// exchanges of the same shape does not allocate.
class ExchangeMatcher {
 public:
  explicit ExchangeMatcher(int world_size);

  // posts[r] is rank r's part (each already passed CheckExchangeArgs). The k-th send from s to
  // d pairs with the k-th receive on d from s; the counts of such transfers and the byte counts
  // of each pair must agree. On success plan(d) lists d's receives as copies, in d's receive-list
  // order. On a mismatch returns InvalidArgument naming both ranks and both counts of the first
  // mismatch (receivers in rank order, then their receive lists in order) and how many there
  // were, and every plan is empty.
  absl::Status Match(absl::Span<const ExchangePost> posts, int64_t collective);

  absl::Span<const TransferCopy> plan(int rank) const { return plans_[rank]; }

 private:
  int world_;
  std::vector<std::vector<uint32_t>> sends_to_;  // [src * world + dst]: indices into src's sends
  std::vector<uint32_t> taken_;                  // per src: receives from src matched so far
  std::vector<std::vector<TransferCopy>> plans_;  // per receiving rank
};

}  // namespace normuon

#endif  // NORMUON_COMM_EXCHANGE_MATCH_H_
