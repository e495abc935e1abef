// The link models of transport_model.h.
#include "tools/plan/transport_model.h"

#include <algorithm>
#include <cmath>

namespace normuon::plan {

const char* MachineKindName(MachineKind k) {
  return k == MachineKind::kCluster ? "cluster" : "cpu_inprocess";
}

const char* LinkModelName(LinkModel m) { return m == LinkModel::kPort ? "port" : "peer"; }

// ---------------------------------------------------------------------------------------------
// Link models.

namespace {

bool SameNode(int a, int b, const Machine& m) {
  return a / m.gpus_per_node == b / m.gpus_per_node;
}

double TransferSeconds(int64_t bytes, const Link& link) {
  return link.latency_us * 1e-6 + static_cast<double>(bytes) / (link.gbps * 1e9);
}

}  // namespace

double ClusterExchangeSeconds(const std::vector<Flow>& flows, int world, const Machine& machine) {
  if (flows.empty()) return 0.0;
  double longest = 0.0;
  if (machine.link_model == LinkModel::kPeer) {
    // Every pair has its own full-duplex link: the busiest one decides.
    for (const Flow& f : flows) {
      const Link& link = SameNode(f.src, f.dst, machine) ? machine.intra : machine.inter;
      longest = std::max(longest, TransferSeconds(f.bytes, link));
    }
    return longest;
  }
  // kPort: per rank and link class, the bytes sent and received over all peers of that class.
  std::vector<int64_t> intra_out(world, 0), intra_in(world, 0), inter_out(world, 0),
      inter_in(world, 0);
  for (const Flow& f : flows) {
    if (SameNode(f.src, f.dst, machine)) {
      intra_out[f.src] += f.bytes;
      intra_in[f.dst] += f.bytes;
    } else {
      inter_out[f.src] += f.bytes;
      inter_in[f.dst] += f.bytes;
    }
  }
  for (int r = 0; r < world; ++r) {
    const int64_t intra = std::max(intra_out[r], intra_in[r]);
    const int64_t inter = std::max(inter_out[r], inter_in[r]);
    if (intra > 0) longest = std::max(longest, TransferSeconds(intra, machine.intra));
    if (inter > 0) longest = std::max(longest, TransferSeconds(inter, machine.inter));
  }
  return longest;
}

double ClusterGroupAllReduceSeconds(int64_t bytes, int first_rank, int ranks,
                                    const Machine& machine) {
  if (ranks <= 1) return 0.0;
  const bool multi_node = !SameNode(first_rank, first_rank + ranks - 1, machine);
  const Link& link = multi_node ? machine.inter : machine.intra;
  const double p = ranks;
  const double steps = std::ceil(std::log2(p));
  return 2.0 * (p - 1.0) / p * static_cast<double>(bytes) / (link.gbps * 1e9) +
         2.0 * steps * link.latency_us * 1e-6;
}

ClusterExchange::ClusterExchange(int world, const Machine& machine)
    : world_(world),
      machine_(machine),
      intra_out_(world, 0),
      intra_in_(world, 0),
      inter_out_(world, 0),
      inter_in_(world, 0),
      segments_in_(world, 0) {}

void ClusterExchange::Add(int src, int dst, int64_t bytes) {
  if (src == dst || bytes <= 0) return;
  total_ += bytes;
  ++segments_in_[dst];
  if (SameNode(src, dst, machine_)) {
    intra_out_[src] += bytes;
    intra_in_[dst] += bytes;
  } else {
    inter_out_[src] += bytes;
    inter_in_[dst] += bytes;
  }
  if (machine_.link_model == LinkModel::kPeer) pairs_[{src, dst}] += bytes;
}

double ClusterExchange::Seconds() const {
  double longest = 0.0;
  if (machine_.link_model == LinkModel::kPeer) {
    for (const auto& [pair, bytes] : pairs_) {
      const Link& link = SameNode(pair.first, pair.second, machine_) ? machine_.intra
                                                                      : machine_.inter;
      longest = std::max(longest, TransferSeconds(bytes, link));
    }
    return longest;
  }
  for (int r = 0; r < world_; ++r) {
    const int64_t intra = std::max(intra_out_[r], intra_in_[r]);
    const int64_t inter = std::max(inter_out_[r], inter_in_[r]);
    if (intra > 0) longest = std::max(longest, TransferSeconds(intra, machine_.intra));
    if (inter > 0) longest = std::max(longest, TransferSeconds(inter, machine_.inter));
  }
  return longest;
}

double ClusterAllReduceSeconds(int64_t bytes, int world, const Machine& machine) {
  if (world <= 1) return 0.0;
  const bool multi_node = world > machine.gpus_per_node;
  const Link& link = multi_node ? machine.inter : machine.intra;
  const double p = world;
  const double steps = std::ceil(std::log2(p));
  return 2.0 * (p - 1.0) / p * static_cast<double>(bytes) / (link.gbps * 1e9) +
         2.0 * steps * link.latency_us * 1e-6;
}

}  // namespace normuon::plan
