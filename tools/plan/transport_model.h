// transport_model.h: the planner's machines (step_model.h): how long an exchange of messages and
// the slot all-reduce take on a cluster's links.
#ifndef NORMUON_TOOLS_PLAN_TRANSPORT_MODEL_H_
#define NORMUON_TOOLS_PLAN_TRANSPORT_MODEL_H_

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

namespace normuon::plan {

// ---------------------------------------------------------------------------------------------
// Machines.

struct Link {
  double gbps = 0.0;        // per direction, GB/s (1e9 bytes/s)
  double latency_us = 0.0;  // per message exchange
};

enum class MachineKind { kCluster, kCpuInprocess };
enum class LinkModel { kPort, kPeer };

const char* MachineKindName(MachineKind k);  // "cluster", "cpu_inprocess"
const char* LinkModelName(LinkModel m);      // "port", "peer"

struct Machine {
  MachineKind kind = MachineKind::kCluster;
  // kCluster:
  int gpus_per_node = 8;
  Link intra{300.0, 3.0};  // NVLink-class
  Link inter{50.0, 10.0};  // InfiniBand-class, per GPU
  LinkModel link_model = LinkModel::kPort;
  double kernel_us = 0.0;               // added per kernel launched
  bool backward_shares_compute = true;  // the simulated backward competes for the GPU
  // kCpuInprocess:
  int cores = 2;
  int blas_threads = 1;  // cores one Newton-Schulz call may use (OpenBLAS threads)
  // Fixed time of every collective between the last rank's arrival and its copies: the thread
  // hand-off of the in-process group, or for ranks that are processes on this machine (MPI
  // over shared memory) the message protocol and the adapter's polling. 0: not modelled.
  double collective_us = 0.0;
};

// A message of the gather: rank src's rows of matrices dst owns, in one bucket. The scatter
// sends the same bytes from dst back to src. One flow per (src, dst) pair and bucket.
struct Flow {
  int src = 0, dst = 0;
  int64_t bytes = 0;
};

// The building blocks, exposed for tests: the duration in seconds of bucket b's gather on a
// kCluster machine (the scatter moves the same bytes the other way and takes as long), and of
// the slot all-reduce of `bytes` per rank.
double ClusterExchangeSeconds(const std::vector<Flow>& flows, int world, const Machine& machine);
double ClusterAllReduceSeconds(int64_t bytes, int world, const Machine& machine);

// The all-reduce of `bytes` per rank within the `ranks` consecutive ranks from first_rank (a TP
// group, a split-Gram group; mesh_model.h): the same ring as ClusterAllReduceSeconds, over the
// inter-node link when the group spans nodes, else the intra-node one.
double ClusterGroupAllReduceSeconds(int64_t bytes, int first_rank, int ranks,
                                    const Machine& machine);

// One exchange accumulated message by message, without keeping the messages (the mesh model's
// exchanges have millions): Seconds() is ClusterExchangeSeconds of the same messages, with the
// bytes between one (src, dst) pair summed into one flow.
class ClusterExchange {
 public:
  ClusterExchange(int world, const Machine& machine);
  // src, dst in [0, world); a message to itself or of no bytes moves nothing and is ignored.
  void Add(int src, int dst, int64_t bytes);
  double Seconds() const;
  int64_t sent(int rank) const { return intra_out_[rank] + inter_out_[rank]; }
  int64_t received(int rank) const { return intra_in_[rank] + inter_in_[rank]; }
  int64_t segments_received(int rank) const { return segments_in_[rank]; }  // Add calls
  int64_t total_bytes() const { return total_; }

 private:
  int world_;
  Machine machine_;
  std::vector<int64_t> intra_out_, intra_in_, inter_out_, inter_in_, segments_in_;
  std::map<std::pair<int, int>, int64_t> pairs_;  // LinkModel::kPeer only
  int64_t total_ = 0;
};

}  // namespace normuon::plan

#endif  // NORMUON_TOOLS_PLAN_TRANSPORT_MODEL_H_
