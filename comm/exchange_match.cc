// Send/receive matching for host exchanges; see exchange_match.h.
#include "comm/exchange_match.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"

namespace normuon {
namespace {

absl::Status CheckList(int rank, int world_size, int64_t collective, absl::Span<const P2p> list,
                       const char* what) {
  if (list.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, ", collective #", collective,
                                                   " (exchange): ", list.size(), " ", what,
                                                   " entries, more than 2^31-1"));
  }
  for (size_t i = 0; i < list.size(); ++i) {
    const P2p& p = list[i];
    if (p.peer < 0 || p.peer >= world_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", rank, ", collective #", collective, " (exchange): ", what, "[", i,
                       "].peer is ", p.peer, ", must be in [0, ", world_size, ")"));
    }
    if (p.bytes > 0 && p.buf == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", rank, ", collective #", collective, " (exchange): ", what, "[", i,
                       "] (peer ", p.peer, ", ", p.bytes, " bytes) has a null buffer"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckExchangeArgs(int rank, int world_size, int64_t collective,
                               absl::Span<const P2p> sends, absl::Span<const P2p> recvs) {
  absl::Status s = CheckList(rank, world_size, collective, sends, "sends");
  if (!s.ok()) return s;
  return CheckList(rank, world_size, collective, recvs, "recvs");
}

ExchangeMatcher::ExchangeMatcher(int world_size)
    : world_(world_size),
      sends_to_(static_cast<size_t>(world_size) * world_size),
      taken_(world_size),
      plans_(world_size) {}

absl::Status ExchangeMatcher::Match(absl::Span<const ExchangePost> posts, int64_t collective) {
  const size_t w = static_cast<size_t>(world_);
  for (auto& list : sends_to_) list.clear();
  for (auto& plan : plans_) plan.clear();
  for (size_t src = 0; src < w; ++src) {
    const ExchangePost& post = posts[src];
    for (size_t i = 0; i < post.sends.size(); ++i) {
      sends_to_[src * w + post.sends[i].peer].push_back(static_cast<uint32_t>(i));
    }
  }

  std::string first;
  int64_t mismatches = 0;
  auto note = [&](std::string message) {
    if (mismatches++ == 0) first = std::move(message);
  };
  for (size_t dst = 0; dst < w; ++dst) {
    std::fill(taken_.begin(), taken_.end(), 0u);
    const ExchangePost& receiver = posts[dst];
    for (const P2p& recv : receiver.recvs) {
      const size_t src = static_cast<size_t>(recv.peer);
      const uint32_t k = taken_[src]++;
      const std::vector<uint32_t>& sent = sends_to_[src * w + dst];
      if (k >= sent.size()) {
        note(absl::StrCat("rank ", dst, " posts receive #", k, " from rank ", src, " (",
                          recv.bytes, " bytes) but rank ", src, " posts only ", sent.size(),
                          " sends to rank ", dst));
        continue;
      }
      const ExchangePost& sender = posts[src];
      const uint32_t i = sent[k];
      const uint64_t sent_bytes = sender.PostedSendBytes(i);
      if (sent_bytes != recv.bytes) {
        note(absl::StrCat("rank ", src, " sends ", sent_bytes, " bytes to rank ", dst,
                          " but rank ", dst, " expects ", recv.bytes, " bytes from rank ", src,
                          " (transfer #", k, " from ", src, " to ", dst, ")"));
        continue;
      }
      plans_[dst].push_back(TransferCopy{recv.buf, sender.sends[i].buf, recv.bytes});
    }
    for (size_t src = 0; src < w; ++src) {
      const size_t sent = sends_to_[src * w + dst].size();
      if (taken_[src] < sent) {
        note(absl::StrCat("rank ", src, " posts ", sent, " sends to rank ", dst, " but rank ",
                          dst, " posts only ", taken_[src], " receives from rank ", src));
      }
    }
  }
  if (mismatches == 0) return absl::OkStatus();
  for (auto& plan : plans_) plan.clear();
  return absl::InvalidArgumentError(
      absl::StrCat("collective #", collective, " (exchange): ", first,
                   mismatches > 1 ? absl::StrCat(" (", mismatches, " mismatches in all)") : ""));
}

}  // namespace normuon
