// The TP x DP strategy comparison of mesh_model.h.
#include "tools/plan/mesh_model.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "sharding/shard.h"

namespace normuon::plan {
namespace {

using sharding::NsCost;
using sharding::NsMethod;

// A rank's piece of a matrix: rows [r0, r1) x cols [c0, c1).
struct Rect {
  int64_t r0 = 0, r1 = 0, c0 = 0, c1 = 0;
  int64_t area() const { return std::max<int64_t>(0, r1 - r0) * std::max<int64_t>(0, c1 - c0); }
};

struct Mat {
  std::string name;
  int64_t rows = 0, cols = 0;
  bool row_parallel = false;  // TP splits columns (else rows)
  int64_t n() const { return std::min(rows, cols); }
  int64_t m() const { return std::max(rows, cols); }
};

// The mesh's pieces of one matrix, indexed by rank (d * tp + t).
class Mesh {
 public:
  Mesh(int tp, int dp) : tp_(tp), dp_(dp) {}
  int world() const { return tp_ * dp_; }
  int Rank(int t, int d) const { return d * tp_ + t; }

  // The TP block t: an even split of the split dimension (Megatron requires divisibility; with
  // remainders the first blocks are one shorter).
  Rect TpBlock(const Mat& m, int t) const {
    const int64_t len = m.row_parallel ? m.cols : m.rows;
    const int64_t b = len * t / tp_, e = len * (t + 1) / tp_;
    return m.row_parallel ? Rect{0, m.rows, b, e} : Rect{b, e, 0, m.cols};
  }
  // FSDP2 rows of TP block t on data-parallel index d: ceil(rows / dp) per rank.
  Rect Piece(const Mat& m, int t, int d) const {
    Rect r = TpBlock(m, t);
    const int64_t rows = r.r1 - r.r0;
    const int64_t chunk = (rows + dp_ - 1) / dp_;
    const int64_t b = std::min(rows, chunk * d), e = std::min(rows, chunk * (d + 1));
    r.r1 = r.r0 + e;
    r.r0 = r.r0 + b;
    return r;
  }

 private:
  int tp_, dp_;
};

double Seconds(double flops, double tflops) { return flops / (tflops * 1e12); }

// What a rank spends around its NS on the segments a point-to-point gather brought it, as the
// event simulation charges the runtime's owner (step_model.cc): one unpack and one pack kernel
// per segment, and a copy of the received bytes each way.
double UnpackSeconds(const ClusterExchange& x, int rank, const Machine& machine,
                     const KernelRates& rates) {
  return 2.0 * static_cast<double>(x.segments_received(rank)) * machine.kernel_us * 1e-6 +
         2.0 * static_cast<double>(CopyBytes(x.received(rank))) / (rates.Gbps(Kernel::kCopy) * 1e9);
}

// ns_ms and allreduce_ms from per-rank NS seconds (with their all-reduces) plus each rank's
// unpack of the gather: the slowest rank decides.
void SlowestRank(const std::vector<double>& ns_s, const std::vector<double>& allreduce_s,
                 const ClusterExchange& gather, const Machine& machine, const KernelRates& rates,
                 MeshStrategyResult* out) {
  double worst = -1.0;
  for (size_t r = 0; r < ns_s.size(); ++r) {
    const double t = ns_s[r] + UnpackSeconds(gather, static_cast<int>(r), machine, rates);
    if (t > worst) {
      worst = t;
      out->ns_ms = t * 1e3;
      out->allreduce_ms = allreduce_s[r] * 1e3;
    }
  }
}

int64_t StandardLaunches(int steps) { return 3 * static_cast<int64_t>(steps); }
int64_t GramLaunches(const NsCost& c) {
  const int64_t t = c.steps, r = static_cast<int64_t>(c.restarts.size());
  if (t == 0) return 0;
  return 2 * (1 + r) + t + 3 * (t - 1 - r);
}
int64_t Launches(const Mat& m, const NsCost& c) {
  return c.method == NsMethod::kGram && m.rows != m.cols ? GramLaunches(c)
                                                          : StandardLaunches(c.steps);
}

// Per-rank bookkeeping shared by the strategies.
struct Tally {
  explicit Tally(int world) : flops(world, 0.0), bytes(world, 0) {}
  std::vector<double> flops;
  std::vector<int64_t> bytes;  // sent + received
  int64_t total_bytes = 0;     // sent, all ranks

  void AddExchange(const ClusterExchange& x, int times = 1) {
    for (size_t r = 0; r < bytes.size(); ++r) {
      bytes[r] += times * (x.sent(static_cast<int>(r)) + x.received(static_cast<int>(r)));
    }
    total_bytes += times * x.total_bytes();
  }
  // A ring all-reduce of `payload` bytes over `ranks` consecutive ranks: each sends and
  // receives 2 (P - 1) / P of it.
  void AddAllReduce(int first, int ranks, int64_t payload, int times) {
    if (ranks <= 1 || times <= 0) return;
    const int64_t each = 2 * (ranks - 1) * payload / ranks;
    for (int r = first; r < first + ranks; ++r) bytes[r] += 2 * each * times;
    total_bytes += static_cast<int64_t>(ranks) * each * times;
  }
  void Finish(MeshStrategyResult* out) const {
    const int world = static_cast<int>(flops.size());
    out->busy_ranks = 0;
    for (int r = 0; r < world; ++r) {
      if (flops[r] > 0.0) ++out->busy_ranks;
      out->total_flops += flops[r];
      out->max_rank_flops = std::max(out->max_rank_flops, flops[r]);
      out->max_rank_bytes = std::max(out->max_rank_bytes, bytes[r]);
    }
    out->idle_ranks = world - out->busy_ranks;
    out->total_bytes = total_bytes;
  }
};

// Cost-balanced greedy (longest first, ties by index; to the least-loaded bin, ties lowest) on
// doubles: the split-Gram groups' assignment by predicted time.
std::vector<int> BalanceByTime(const std::vector<double>& cost, int bins) {
  std::vector<int> order(cost.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = static_cast<int>(k);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return cost[a] > cost[b]; });
  std::vector<double> load(bins, 0.0);
  std::vector<int> bin(cost.size(), 0);
  for (int k : order) {
    int best = 0;
    for (int g = 1; g < bins; ++g) {
      if (load[g] < load[best]) best = g;
    }
    bin[k] = best;
    load[best] += cost[k];
  }
  return bin;
}

std::vector<sharding::MatrixShape> Shapes(const std::vector<Mat>& mats) {
  std::vector<sharding::MatrixShape> shapes;
  for (const Mat& m : mats) shapes.push_back({m.name, m.rows, m.cols});
  return shapes;
}

// a: gather to one owner over the whole domain.
absl::StatusOr<MeshStrategyResult> GatherToOwner(const std::vector<Mat>& mats, const Mesh& mesh,
                                                 const MeshOptions& o, const Machine& machine,
                                                 const KernelRates& rates) {
  MeshStrategyResult out;
  out.strategy = MeshStrategy::kGatherToOwner;
  const int world = mesh.world();
  NORMUON_ASSIGN_OR_RETURN(std::vector<int> owner,
                           sharding::AssignOwners(Shapes(mats), world,
                                                  sharding::OwnerPolicy::kCostBalanced, o.ns_cost));
  ClusterExchange gather(world, machine);
  Tally tally(world);
  std::vector<double> ns_s(world, 0.0);
  for (size_t k = 0; k < mats.size(); ++k) {
    const Mat& m = mats[k];
    for (int d = 0; d < o.world / o.tp; ++d) {
      for (int t = 0; t < o.tp; ++t) {
        gather.Add(mesh.Rank(t, d), owner[k], mesh.Piece(m, t, d).area() * o.wire_bytes);
      }
    }
    const double f = sharding::NsFlops(m.rows, m.cols, o.ns_cost);
    tally.flops[owner[k]] += f;
    ns_s[owner[k]] += Seconds(f, rates.ns.TflopsFor(m.rows, m.cols)) +
                      Launches(m, o.ns_cost) * machine.kernel_us * 1e-6;
  }
  tally.AddExchange(gather, 2);  // the scatter moves the same bytes back
  tally.Finish(&out);
  out.before_ms = out.after_ms = gather.Seconds() * 1e3;
  SlowestRank(ns_s, std::vector<double>(world, 0.0), gather, machine, rates, &out);
  return out;
}

// b and c: whole matrices dealt over DP; each TP piece gathered to the matrix's DP index.
absl::StatusOr<MeshStrategyResult> TpStrategy(MeshStrategy which, const std::vector<Mat>& mats,
                                              const Mesh& mesh, const MeshOptions& o,
                                              const Machine& machine, const KernelRates& rates) {
  MeshStrategyResult out;
  out.strategy = which;
  const int world = mesh.world(), tp = o.tp, dp = o.world / o.tp;
  // c's cost per matrix, before the matrices are dealt: per iteration, each TP rank's partial
  // Gram matrix over the dimension TP split (g x g, g the other side), its all-reduce in the TP
  // group, the polynomial replicated, each block updated (standard NS, the step's iteration
  // count and product kind). With tp = 1 nothing is split and g is the short side.
  const double sym = o.ns_cost.symmetric ? 1.0 : 2.0;
  std::vector<std::vector<double>> c_flops(mats.size(), std::vector<double>(tp, 0.0));
  std::vector<double> c_time(mats.size(), 0.0), c_allreduce(mats.size(), 0.0);
  std::vector<int64_t> c_gram(mats.size(), 0);
  if (which == MeshStrategy::kGramAllReduceTp) {
    for (size_t k = 0; k < mats.size(); ++k) {
      const Mat& m = mats[k];
      const int64_t split_len = m.row_parallel ? m.cols : m.rows;
      const int64_t g = tp == 1 ? m.n() : (m.row_parallel ? m.rows : m.cols);
      double slowest = 0.0;
      int64_t widest = 0;
      for (int t = 0; t < tp; ++t) {
        const int64_t kt = tp == 1 ? m.m() : split_len * (t + 1) / tp - split_len * t / tp;
        const double gd = static_cast<double>(g), kd = static_cast<double>(kt);
        c_flops[k][t] =
            o.ns_cost.steps * (sym * gd * gd * kd + sym * gd * gd * gd + 2 * gd * gd * kd);
        if (c_flops[k][t] > slowest) {
          slowest = c_flops[k][t];
          widest = kt;
        }
      }
      // TP groups are aligned blocks of tp ranks: one all-reduce time serves them all.
      c_allreduce[k] = o.ns_cost.steps *
                       ClusterGroupAllReduceSeconds(g * g * o.wire_bytes, 0, tp, machine);
      c_gram[k] = g;
      c_time[k] = Seconds(slowest, rates.ns.TflopsFor(g, std::max<int64_t>(widest, 1))) +
                  StandardLaunches(o.ns_cost.steps) * machine.kernel_us * 1e-6 + c_allreduce[k];
    }
  }
  // b deals whole matrices over DP as the runtime deals them over ranks (cost-balanced on the
  // step's NS FLOPs); c by its own predicted time per matrix.
  std::vector<int> home;
  if (which == MeshStrategy::kDuplicatedTp) {
    NORMUON_ASSIGN_OR_RETURN(home, sharding::AssignOwners(Shapes(mats), dp,
                                                          sharding::OwnerPolicy::kCostBalanced,
                                                          o.ns_cost));
  } else {
    home = BalanceByTime(c_time, dp);
  }
  ClusterExchange dp_gather(world, machine), tp_gather(world, machine);
  Tally tally(world);
  std::vector<double> group_s(dp, 0.0), group_allreduce_s(dp, 0.0);
  for (size_t k = 0; k < mats.size(); ++k) {
    const Mat& m = mats[k];
    const int h = home[k];
    for (int t = 0; t < tp; ++t) {
      for (int d = 0; d < dp; ++d) {
        dp_gather.Add(mesh.Rank(t, d), mesh.Rank(t, h), mesh.Piece(m, t, d).area() * o.wire_bytes);
      }
    }
    if (which == MeshStrategy::kDuplicatedTp) {
      for (int t = 0; t < tp; ++t) {
        for (int u = 0; u < tp; ++u) {
          tp_gather.Add(mesh.Rank(t, h), mesh.Rank(u, h), mesh.TpBlock(m, t).area() * o.wire_bytes);
        }
      }
      const double f = sharding::NsFlops(m.rows, m.cols, o.ns_cost);
      for (int t = 0; t < tp; ++t) tally.flops[mesh.Rank(t, h)] += f;
      group_s[h] += Seconds(f, rates.ns.TflopsFor(m.rows, m.cols)) +
                    Launches(m, o.ns_cost) * machine.kernel_us * 1e-6;
      continue;
    }
    for (int t = 0; t < tp; ++t) tally.flops[mesh.Rank(t, h)] += c_flops[k][t];
    group_s[h] += c_time[k];
    group_allreduce_s[h] += c_allreduce[k];
    tally.AddAllReduce(mesh.Rank(0, h), tp, c_gram[k] * c_gram[k] * o.wire_bytes,
                       o.ns_cost.steps);
  }
  tally.AddExchange(dp_gather, 2);
  tally.AddExchange(tp_gather);
  tally.Finish(&out);
  out.before_ms = (dp_gather.Seconds() + tp_gather.Seconds()) * 1e3;
  out.after_ms = dp_gather.Seconds() * 1e3;
  // Every rank of a DP index's TP group works through that index's matrices.
  std::vector<double> rank_s(world), rank_allreduce_s(world);
  for (int r = 0; r < world; ++r) {
    rank_s[r] = group_s[r / tp];
    rank_allreduce_s[r] = group_allreduce_s[r / tp];
  }
  SlowestRank(rank_s, rank_allreduce_s, dp_gather, machine, rates, &out);
  return out;
}

// d with a given group size k.
MeshStrategyResult SplitGram(const std::vector<Mat>& mats, const Mesh& mesh, const MeshOptions& o,
                             int k, const Machine& machine, const KernelRates& rates) {
  MeshStrategyResult out;
  out.strategy = MeshStrategy::kSplitGram;
  out.split_k = k;
  const int world = mesh.world(), groups = world / k, dp = o.world / o.tp;
  NsCost square_cost = o.gram_cost;
  square_cost.method = NsMethod::kStandard;
  // Each matrix's time in a group, its all-reduce part and its per-member FLOPs.
  std::vector<double> time(mats.size()), allreduce(mats.size());
  std::vector<SplitGramFlops> flops(mats.size());
  // A square matrix gains nothing from Gram on one rank, so it runs standard NS on its group's
  // first rank, unless splitting it over the group costs each rank no more FLOPs than that
  // ((28 + 8 / k) n^3 against 30 n^3 with dense products: k >= 4).
  std::vector<bool> split(mats.size(), true);
  for (size_t i = 0; i < mats.size(); ++i) {
    const Mat& m = mats[i];
    if (m.rows == m.cols) {
      const double single = sharding::NsFlops(m.rows, m.cols, square_cost);
      const SplitGramFlops shared = SplitGramRankFlops(m.rows, m.cols, k, o.gram_cost);
      split[i] = k > 1 && shared.block + shared.replicated <= single;
    }
    if (!split[i]) {
      const double f = sharding::NsFlops(m.rows, m.cols, square_cost);
      flops[i] = SplitGramFlops{f, 0.0, 0};
      time[i] = Seconds(f, rates.ns.TflopsFor(m.rows, m.cols)) +
                StandardLaunches(square_cost.steps) * machine.kernel_us * 1e-6;
      allreduce[i] = 0.0;
      continue;
    }
    flops[i] = SplitGramRankFlops(m.rows, m.cols, k, o.gram_cost);
    const int64_t block = (m.m() + k - 1) / k;
    // Groups are aligned blocks of k ranks, so one all-reduce time serves every group.
    allreduce[i] = flops[i].allreduces *
                   ClusterGroupAllReduceSeconds(m.n() * m.n() * o.wire_bytes, 0, k, machine);
    time[i] = Seconds(flops[i].block + flops[i].replicated, rates.ns.TflopsFor(m.n(), block)) +
              GramLaunches(o.gram_cost) * machine.kernel_us * 1e-6 + allreduce[i];
  }
  const std::vector<int> group = BalanceByTime(time, groups);
  ClusterExchange gather(world, machine);
  Tally tally(world);
  std::vector<double> group_s(groups, 0.0), group_allreduce_s(groups, 0.0);
  for (size_t i = 0; i < mats.size(); ++i) {
    const Mat& m = mats[i];
    const int first = group[i] * k;
    group_s[group[i]] += time[i];
    group_allreduce_s[group[i]] += allreduce[i];
    const int members = split[i] ? k : 1;
    for (int j = 0; j < members; ++j) {
      tally.flops[first + j] += flops[i].block + flops[i].replicated;
    }
    if (split[i]) tally.AddAllReduce(first, k, m.n() * m.n() * o.wire_bytes, flops[i].allreduces);
    // Receivers' blocks of the long side: ceil(m / members) each.
    const int64_t chunk = (m.m() + members - 1) / members;
    // A square matrix's blocks may run either way: along the side TP split, so that each
    // receiver's block comes from as few pieces as possible.
    const bool long_is_cols = m.cols > m.rows || (m.cols == m.rows && m.row_parallel);
    for (int d = 0; d < dp; ++d) {
      for (int t = 0; t < o.tp; ++t) {
        const Rect p = mesh.Piece(m, t, d);
        if (p.area() == 0) continue;
        const int64_t b = long_is_cols ? p.c0 : p.r0, e = long_is_cols ? p.c1 : p.r1;
        const int64_t other = long_is_cols ? p.r1 - p.r0 : p.c1 - p.c0;
        for (int64_t j = b / chunk; j < members && j * chunk < e; ++j) {
          const int64_t lo = std::max(b, j * chunk), hi = std::min(e, (j + 1) * chunk);
          if (hi > lo) {
            gather.Add(mesh.Rank(t, d), first + static_cast<int>(j),
                       (hi - lo) * other * o.wire_bytes);
          }
        }
      }
    }
  }
  tally.AddExchange(gather, 2);
  tally.Finish(&out);
  out.before_ms = out.after_ms = gather.Seconds() * 1e3;
  std::vector<double> rank_s(world), rank_allreduce_s(world);
  for (int r = 0; r < world; ++r) {
    rank_s[r] = group_s[r / k];
    rank_allreduce_s[r] = group_allreduce_s[r / k];
  }
  SlowestRank(rank_s, rank_allreduce_s, gather, machine, rates, &out);
  return out;
}

void Totals(MeshStrategyResult* r) {
  r->step_ms = r->before_ms + r->ns_ms + r->after_ms;
  r->exposed_comm_ms = r->before_ms + r->allreduce_ms + r->after_ms;
}

bool PowerOfTwo(int k) { return k >= 1 && (k & (k - 1)) == 0; }

}  // namespace

const char* MeshStrategyName(MeshStrategy s) {
  switch (s) {
    case MeshStrategy::kGatherToOwner:
      return "gather_to_owner";
    case MeshStrategy::kDuplicatedTp:
      return "duplicated_tp";
    case MeshStrategy::kGramAllReduceTp:
      return "gram_allreduce_tp";
    case MeshStrategy::kSplitGram:
      return "split_gram";
  }
  return "unknown";
}

bool IsRowParallel(const std::string& name) {
  for (const char* part : {"o_proj", "down_proj", "c_proj", "out_proj", "fc2"}) {
    if (absl::StrContains(name, part)) return true;
  }
  return false;
}

SplitGramFlops SplitGramRankFlops(int64_t rows, int64_t cols, int k, const NsCost& gram_cost) {
  SplitGramFlops out;
  if (rows <= 0 || cols <= 0 || k < 1 || gram_cost.steps <= 0) return out;
  const double n = static_cast<double>(std::min(rows, cols));
  const double block = static_cast<double>((std::max(rows, cols) + k - 1) / k);
  const double t = gram_cost.steps, r = static_cast<double>(gram_cost.restarts.size());
  const double sym = gram_cost.symmetric ? 1.0 : 2.0;
  // ns_cost.h's Gram count with m replaced by the block: X_j X_j^T (1 + r) times, Q X_j
  // (1 + r) times; the n x n products replicated.
  out.block = (1 + r) * sym * n * n * block + (1 + r) * 2 * n * n * block;
  out.replicated = (t + (t - 1 - r) + 2 * (t - 1 - r)) * sym * n * n * n;
  out.allreduces = 1 + static_cast<int>(gram_cost.restarts.size());
  return out;
}

absl::StatusOr<std::vector<MeshStrategyResult>> CompareMeshStrategies(
    const normuon_tools::ModelShapes& model, const MeshOptions& o, const Machine& machine,
    const KernelRates& rates) {
  if (o.world < 1 || o.world > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("mesh: world = ", o.world,
                                                   " is outside [1, 1048576]"));
  }
  if (o.tp < 1 || o.world % o.tp != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("mesh: tp = ", o.tp, " does not divide world = ", o.world));
  }
  if (o.wire_bytes != 2 && o.wire_bytes != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("mesh: wire_bytes = ", o.wire_bytes, " is not 2 or 4"));
  }
  NORMUON_RETURN_IF_ERROR(sharding::ValidateNsCost(o.ns_cost));
  NORMUON_RETURN_IF_ERROR(sharding::ValidateNsCost(o.gram_cost));
  if (o.gram_cost.method != NsMethod::kGram) {
    return absl::InvalidArgumentError("mesh: the split-Gram cost must use the gram method");
  }
  if (o.split_k != 0 && (!PowerOfTwo(o.split_k) || o.split_k > o.world)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mesh: split_k = ", o.split_k, " is not 0 or a power of two <= world = ", o.world));
  }
  std::vector<Mat> mats;
  for (const normuon_tools::ModelShape& e : model.entries) {
    if (e.kind != normuon::ParamKind::kMatrix) continue;
    mats.push_back(Mat{e.name, e.rows, e.cols, IsRowParallel(e.name)});
  }
  if (mats.empty()) return absl::InvalidArgumentError("mesh: the model has no matrix");
  const Mesh mesh(o.tp, o.world / o.tp);

  std::vector<MeshStrategyResult> out;
  NORMUON_ASSIGN_OR_RETURN(MeshStrategyResult a, GatherToOwner(mats, mesh, o, machine, rates));
  out.push_back(a);
  NORMUON_ASSIGN_OR_RETURN(MeshStrategyResult b, TpStrategy(MeshStrategy::kDuplicatedTp, mats,
                                                            mesh, o, machine, rates));
  out.push_back(b);
  NORMUON_ASSIGN_OR_RETURN(MeshStrategyResult c, TpStrategy(MeshStrategy::kGramAllReduceTp, mats,
                                                            mesh, o, machine, rates));
  out.push_back(c);
  int64_t longest = 0;
  for (const Mat& m : mats) longest = std::max(longest, m.m());
  MeshStrategyResult best;
  bool have = false;
  for (int k = 1; k <= o.world; k *= 2) {
    if (o.split_k != 0 && k != o.split_k) continue;
    if (o.split_k == 0 && k > longest) break;
    MeshStrategyResult d = SplitGram(mats, mesh, o, k, machine, rates);
    Totals(&d);
    if (!have || d.step_ms < best.step_ms) best = d;
    have = true;
  }
  out.push_back(best);
  for (MeshStrategyResult& r : out) Totals(&r);
  return out;
}

std::string MeshReportText(const std::vector<MeshStrategyResult>& results,
                           const MeshOptions& o) {
  std::string out = absl::StrFormat(
      "mesh: world %d = tp %d x dp %d, wire %s; a-c: %s; d: %s\n", o.world, o.tp, o.world / o.tp,
      o.wire_bytes == 2 ? "bf16" : "fp32", sharding::NsCostDescription(o.ns_cost),
      sharding::NsCostDescription(o.gram_cost));
  absl::StrAppendFormat(&out, "  %-18s %5s %6s %6s %9s %9s %9s %9s %9s %9s %9s %9s %9s %9s\n",
                        "strategy", "k", "busy", "idle", "TFLOP", "TFLOP/rk", "GB", "GB/rk",
                        "before", "NS", "allred", "after", "step", "exposed");
  for (const MeshStrategyResult& r : results) {
    absl::StrAppendFormat(&out,
                          "  %-18s %5d %6d %6d %9.3f %9.4f %9.2f %9.3f %9.3f %9.3f %9.3f %9.3f "
                          "%9.3f %9.3f\n",
                          MeshStrategyName(r.strategy), r.split_k, r.busy_ranks, r.idle_ranks,
                          r.total_flops * 1e-12, r.max_rank_flops * 1e-12, r.total_bytes * 1e-9,
                          r.max_rank_bytes * 1e-9, r.before_ms, r.ns_ms, r.allreduce_ms,
                          r.after_ms, r.step_ms, r.exposed_comm_ms);
  }
  absl::StrAppend(&out,
                  "  (ms; GB = bytes sent by all ranks, GB/rk = the most one rank sends + "
                  "receives; exposed = before + allred + after; Newton-Schulz phase only)\n");
  return out;
}

std::string MeshReportJson(const std::vector<MeshStrategyResult>& results) {
  std::vector<std::string> items;
  for (const MeshStrategyResult& r : results) {
    items.push_back(absl::StrFormat(
        "{\"strategy\": \"%s\", \"split_k\": %d, \"busy_ranks\": %d, \"idle_ranks\": %d, "
        "\"total_flops\": %.17g, \"max_rank_flops\": %.17g, \"total_bytes\": %d, "
        "\"max_rank_bytes\": %d, \"before_ms\": %.6g, \"ns_ms\": %.6g, \"allreduce_ms\": %.6g, "
        "\"after_ms\": %.6g, \"step_ms\": %.6g, \"exposed_comm_ms\": %.6g}",
        MeshStrategyName(r.strategy), r.split_k, r.busy_ranks, r.idle_ranks, r.total_flops,
        r.max_rank_flops, r.total_bytes, r.max_rank_bytes, r.before_ms, r.ns_ms, r.allreduce_ms,
        r.after_ms, r.step_ms, r.exposed_comm_ms));
  }
  return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
}

}  // namespace normuon::plan
