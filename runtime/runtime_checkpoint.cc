// Runtime::SaveCheckpoint / LoadCheckpoint: the optimizer checkpoints of normuon.h, in the file
// format of checkpoint_format.h (issue 5, "Checkpoints").
//
// Both are collective over comm_ and run between steps only (not after grad_ready has begun a
// step: the pipeline may then be using comm_ and reading the state). They keep every rank on the
// same path: each local phase (file I/O, checks) ends in Agree, an all-gather of every rank's
// outcome, and every rank then takes the same branch, so a failure on one rank is an error on
// every rank, with the same message.
//
// Save: the ranks exchange their row ranges and rank 0's save id; rank 0 removes the old index;
// every rank writes its rank file atomically; once all rank files are known to be complete, rank
// 0 writes the index. The index is the commit record: a save that failed part-way leaves no
// index, and a rank file from another save is recognized by its save id, so a load never mixes
// two saves. dir must be one directory all ranks see (a shared file system across nodes).
//
// Load: every rank reads the index and the files of the saved ranks whose rows overlap the rows
// it holds now (so any world size and row split can load any checkpoint), checks everything
// against its own registration and config, and stages the state in host memory. Only after every
// rank has agreed that its staging succeeded does any rank write state (backend CopyFromHost):
// on any failure, no rank has changed anything.
//
// Neuron axis = columns (matrix_second_moment 3): a matrix's v (one value per column of each row
// block) is replicated, so every rank, including one with no rows of the matrix, saves its copy in
// its entry and needs the whole of it at load. Each loading rank takes it from the same place:
// the lowest saved rank that held rows of the matrix (that rank file is read even when none of
// its rows overlap this rank's), so every rank loads the same bits. Its length must be the
// SecondMomentCount of this runtime (row blocks x cols): a checkpoint saved under other
// row_splits is refused.

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/file_io.h"
#include "base/status_macros.h"
#include "runtime/checkpoint_format.h"
#include "runtime/runtime.h"

namespace normuon {
namespace {

namespace ck = checkpoint;

// Bytes per rank in the outcome all-gather: u32 status code (0 = OK), then the message,
// truncated and NUL-padded.
constexpr size_t kOutcomeBytes = 1024;

std::string EncodeOutcome(const absl::Status& s) {
  std::string b(kOutcomeBytes, '\0');
  const uint32_t code = static_cast<uint32_t>(s.code());
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((code >> (8 * i)) & 0xffu);
  const size_t n = std::min(s.message().size(), kOutcomeBytes - 5);
  if (n > 0) std::memcpy(&b[4], s.message().data(), n);  // an OK status's data() may be null
  return b;
}

// All-gathers every rank's outcome of a local phase. OK when every rank succeeded; otherwise the
// same error on every rank: the lowest failing rank's code and message, how many ranks failed,
// and `consequence`. A failed all-gather is reported as such (with this rank's own error).
// `all_gather` is Runtime::AllGatherHostBytes (host bytes on any communicator).
using HostAllGather = absl::FunctionRef<absl::Status(const void*, void*, size_t)>;

absl::Status Agree(HostAllGather all_gather, int world, const absl::Status& mine,
                   absl::string_view what, absl::string_view consequence) {
  const std::string out = EncodeOutcome(mine);
  std::string all(kOutcomeBytes * static_cast<size_t>(world), '\0');
  const absl::Status gathered = all_gather(out.data(), all.data(), kOutcomeBytes);
  if (!gathered.ok()) {
    return absl::Status(gathered.code(),
                        absl::StrCat(what, " failed: the ranks could not agree on the outcome (",
                                     gathered.message(), ")",
                                     mine.ok() ? "" : absl::StrCat("; this rank's own error: ",
                                                                   mine.message()),
                                     consequence));
  }
  int first = -1, failed = 0;
  uint32_t first_code = 0;
  for (int r = 0; r < world; ++r) {
    uint32_t code = 0;
    for (int i = 3; i >= 0; --i) {
      code = (code << 8) | static_cast<unsigned char>(all[r * kOutcomeBytes + i]);
    }
    if (code == 0) continue;
    ++failed;
    if (first < 0) {
      first = r;
      first_code = code;
    }
  }
  if (failed == 0) return absl::OkStatus();
  const char* msg = all.data() + first * kOutcomeBytes + 4;
  const std::string message(msg, strnlen(msg, kOutcomeBytes - 4));
  return absl::Status(static_cast<absl::StatusCode>(first_code),
                      absl::StrCat(what, " failed on rank ", first,
                                   failed > 1 ? absl::StrCat(" (and on ", failed - 1, " other rank",
                                                             failed > 2 ? "s" : "", ")")
                                              : "",
                                   ": ", message, consequence));
}

// base/file_io's checks, with the checkpoint's words in the message.
absl::Status CheckCheckpointDirectory(const std::string& dir) {
  const absl::Status s = CheckDirectory(dir);
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("checkpoint directory ", s.message()));
}

absl::Status RemoveOldIndex(const std::string& path) {
  const absl::Status s = RemoveFileIfPresent(path);
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("the old index: ", s.message()));
}

// ReadWholeFile, with a missing file as InvalidArgument (NotFound means a bad handle at the C
// edge).
absl::StatusOr<std::string> ReadCheckpointFile(const std::string& path, absl::string_view what) {
  absl::StatusOr<std::string> bytes = ReadWholeFile(path);
  if (bytes.ok()) return bytes;
  if (absl::IsNotFound(bytes.status())) {
    return absl::InvalidArgumentError(
        absl::StrCat("the checkpoint ", what, " '", path, "' does not exist"));
  }
  return bytes.status();
}

// Runs a local phase; an allocation failure becomes a status, so the rank still joins the
// agreement that follows instead of leaving its peers waiting.
template <typename Fn>
absl::Status Guarded(Fn fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of host memory while staging the checkpoint");
  }
}

// One random id per save (ties the rank files of a save to its index); never 0.
uint64_t NewSaveId() {
  uint64_t id = static_cast<uint64_t>(
                    std::chrono::steady_clock::now().time_since_epoch().count()) *
                0x9E3779B97F4A7C15ull;
  try {
    std::random_device rd;
    id ^= (static_cast<uint64_t>(rd()) << 32) ^ rd();
  } catch (...) {
    // No entropy source: the clock alone still differs between saves.
  }
  return id == 0 ? 1 : id;
}

const char* VariantName(uint32_t v) {
  switch (v) {
    case NORMUON_VARIANT_NORMUON:
      return "NORMUON";
    case NORMUON_VARIANT_NORMUON_PAPER:
      return "NORMUON_PAPER";
    case NORMUON_VARIANT_MUON:
      return "MUON";
    case NORMUON_VARIANT_ADAMUON:
      return "ADAMUON";
  }
  return "unknown";
}

bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof(a)) == 0; }

// The format's matrix_second_moment for a config: none (Muon), v per element (AdaMuon), per
// column of each row block (neuron axis = columns) or per row.
uint32_t SecondMomentLayout(const normuon_config_t& c) {
  if (c.variant == NORMUON_VARIANT_MUON) return ck::kSecondMomentNone;
  if (PerElementV(static_cast<Variant>(c.variant))) return ck::kSecondMomentPerElement;
  if (c.neuron_axis == NORMUON_NEURON_COLUMNS) return ck::kSecondMomentPerColumn;
  return ck::kSecondMomentPerRow;
}

// Rows [begin, begin + count) of a parameter.
struct Rows {
  int64_t begin, count;
};

// OK when every rank that knows its count (>= 0) has committed the same number of steps;
// otherwise the error every rank returns, naming the ranks and their counts.
absl::Status CommittedStepsAgree(const std::vector<int64_t>& committed, absl::string_view what) {
  std::map<int64_t, std::vector<int>> by_count;
  for (int r = 0; r < static_cast<int>(committed.size()); ++r) {
    if (committed[r] >= 0) by_count[committed[r]].push_back(r);
  }
  if (by_count.size() <= 1) return absl::OkStatus();
  std::vector<std::string> parts;
  for (const auto& [count, ranks] : by_count) {
    parts.push_back(absl::StrCat(ranks.size() == 1 ? "rank " : "ranks ",
                                 absl::StrJoin(ranks, ", "), " committed ", count));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      what, " failed: the ranks' optimizer states have diverged (", absl::StrJoin(parts, "; "),
      " steps: a step failed on some ranks after the others had committed it); nothing was "
      "written or removed: restore the state on every rank from an earlier checkpoint "
      "(normuon_load_checkpoint)"));
}

}  // namespace

absl::Status Runtime::SaveCheckpoint(const std::string& dir) {
  const auto host_all_gather = [this](const void* in, void* out, size_t bytes) {
    return AllGatherHostBytes(in, out, bytes);
  };
  if (!finalized_) return absl::FailedPreconditionError("save_checkpoint before finalize");
  // Inside a step begun by grad_ready the pipeline may be using comm_ and reading the state.
  if (step_begun_) {
    return absl::FailedPreconditionError(
        "save_checkpoint inside a step (after grad_ready, before step): checkpoints are taken "
        "between steps");
  }
  const std::string what = absl::StrCat("checkpoint save to '", dir, "'");
  const int32_t np = static_cast<int32_t>(params_.size());
  const uint32_t second_kind = SecondMomentLayout(config_);

  absl::Status local = CheckCheckpointDirectory(dir);

  StepControl control{};
  if (local.ok()) local = backend_->CopyToHost(&control, control_, sizeof(control));

  // Rank 0's save id, every rank's committed steps (-1: unknown, this rank failed already) and
  // every rank's rows of every parameter (the index lists them all).
  const size_t per_rank = 2 + 2 * static_cast<size_t>(np);
  std::vector<int64_t> mine(per_rank), all(per_rank * static_cast<size_t>(world_));
  mine[0] = rank_ == 0 ? static_cast<int64_t>(NewSaveId()) : 0;
  mine[1] = local.ok() ? control.steps_taken : -1;
  for (int32_t p = 0; p < np; ++p) {
    mine[2 + 2 * p] = params_[p].row_begin;
    mine[3 + 2 * p] = params_[p].row_count;
  }
  const absl::Status gathered =
      AllGatherHostBytes(mine.data(), all.data(), per_rank * sizeof(int64_t));
  if (!gathered.ok()) {
    return absl::Status(gathered.code(), absl::StrCat(what, " failed: ", gathered.message()));
  }
  // Ranks that have not committed the same steps (a one-sided failure: docs/ARCHITECTURE.md
  // section 6) hold states of different steps: a checkpoint of them would mix the two. Every
  // rank sees the same counts and fails alike, before anything is written or removed (the last
  // good checkpoint is what they need).
  std::vector<int64_t> committed(world_);
  for (int r = 0; r < world_; ++r) committed[r] = all[r * per_rank + 1];
  NORMUON_RETURN_IF_ERROR(CommittedStepsAgree(committed, what));
  const uint64_t save_id = static_cast<uint64_t>(all[0]);
  // Parameters split into column pieces are saved whole by one rank, as the row-only layout
  // would hold them; the index and rank files then never record columns (section 8).
  std::vector<WholeState> whole;
  {
    const absl::Status gathered_whole = GatherColumnSplitState(&whole);
    if (!gathered_whole.ok()) {
      return absl::Status(gathered_whole.code(),
                          absl::StrCat(what, " failed: ", gathered_whole.message()));
    }
  }
  for (const WholeState& w : whole) {
    for (int r = 0; r < world_; ++r) {
      all[r * per_rank + 2 + 2 * w.param] = 0;
      all[r * per_rank + 3 + 2 * w.param] = r == w.holder ? params_[w.param].rows : 0;
    }
  }
  // The index is the commit record, written last; the old one goes first, so that a save that
  // stops part-way leaves no index rather than one that names other rank files.
  if (local.ok() && rank_ == 0) local = RemoveOldIndex(ck::JoinPath(dir, ck::kIndexFileName));

  std::vector<int64_t> adamw_steps(adamw_.size());
  if (local.ok() && !adamw_steps.empty()) {
    local = backend_->CopyToHost(adamw_steps.data(), adamw_steps_,
                                 adamw_steps.size() * sizeof(int64_t));
  }

  // This rank's file: the state of every parameter it holds rows of.
  if (local.ok()) {
    local = Guarded([&]() -> absl::Status {
      ck::RankFile f;
      f.save_id = save_id;
      f.rank = static_cast<uint32_t>(rank_);
      f.world_size = static_cast<uint32_t>(world_);
      f.param_count = static_cast<uint32_t>(np);
      f.matrix_second_moment = second_kind;
      for (int32_t i = 0; i < np; ++i) {
        const Param& p = params_[i];
        const WholeState* w = nullptr;
        for (const WholeState& c : whole) {
          if (c.param == i) w = &c;
        }
        if (w != nullptr) {
          if (w->holder != rank_) continue;
          ck::ShardState s;
          s.param = static_cast<uint32_t>(i);
          s.kind = ck::ParamKind::kMatrix;
          s.name = p.name;
          s.row_begin = 0;
          s.row_count = p.rows;
          s.cols = p.cols;
          s.first = w->first;
          s.second = w->second;
          f.shards.push_back(std::move(s));
          continue;
        }
        if (p.row_count == 0) continue;
        ck::ShardState s;
        s.param = static_cast<uint32_t>(i);
        s.kind = p.kind == Kind::kMatrix ? ck::ParamKind::kMatrix : ck::ParamKind::kAdamW;
        s.name = p.name;
        s.row_begin = p.row_begin;
        s.row_count = p.row_count;
        s.cols = p.cols;
        s.first.resize(static_cast<size_t>(p.row_count * p.cols));
        // AdamW: exp_avg_sq; a matrix: all of the v this rank keeps (its rows' or elements', or
        // with the column axis the whole replicated v).
        s.second.resize(static_cast<size_t>(SecondStateCount(p)));
        s.step = p.kind == Kind::kAdamW ? adamw_steps[p.work] : 0;
        NORMUON_RETURN_IF_ERROR(backend_->CopyToHost(s.first.data(), p.momentum, s.first.size() * 4));
        if (!s.second.empty()) {
          NORMUON_RETURN_IF_ERROR(backend_->CopyToHost(s.second.data(), p.second, s.second.size() * 4));
        }
        f.shards.push_back(std::move(s));
      }
      const std::string path = ck::JoinPath(dir, ck::RankFileName(rank_, world_));
      NORMUON_RETURN_IF_ERROR(ck::ValidateRankFile(f, path));
      std::string bytes = ck::EncodeRankFile(f);
      f.shards.clear();
      f.shards.shrink_to_fit();
      return WriteFileAtomically(path, bytes);
    });
  }
  NORMUON_RETURN_IF_ERROR(Agree(host_all_gather, world_, local, what, "; no index was written"));

  // Every rank file is complete: rank 0 commits the save by writing the index.
  if (rank_ == 0) {
    local = Guarded([&]() -> absl::Status {
      ck::Index x;
      x.save_id = save_id;
      x.world_size = static_cast<uint32_t>(world_);
      x.variant = static_cast<uint32_t>(config_.variant);
      x.ns_dtype = static_cast<uint32_t>(config_.ns_dtype);
      x.ns_steps = static_cast<uint32_t>(config_.ns_steps);
      x.nesterov = static_cast<uint32_t>(config_.nesterov);
      x.ns_eps = config_.ns_eps;
      x.matrix_second_moment = second_kind;
      x.steps_taken = control.steps_taken;
      x.steps_skipped = control.steps_skipped;
      for (const Group& g : groups_) {
        x.groups.push_back({g.desc.kind == NORMUON_GROUP_NORMUON ? ck::GroupKind::kNorMuon
                                                                 : ck::GroupKind::kAdamW,
                            g.desc.beta1, g.desc.beta2, g.desc.eps});
      }
      for (const Param& p : params_) {
        ck::ParamInfo q;
        q.name = p.name;
        q.kind = p.kind == Kind::kMatrix ? ck::ParamKind::kMatrix : ck::ParamKind::kAdamW;
        q.group = static_cast<uint32_t>(p.group);
        q.rows = p.rows;
        q.cols = p.cols;
        q.adamw_step = p.kind == Kind::kAdamW ? adamw_steps[p.work] : 0;
        x.params.push_back(std::move(q));
      }
      x.ranges.assign(world_, std::vector<ck::RowRange>(np));
      for (int r = 0; r < world_; ++r) {
        for (int32_t p = 0; p < np; ++p) {
          x.ranges[r][p] = {all[r * per_rank + 2 + 2 * p], all[r * per_rank + 3 + 2 * p]};
        }
      }
      const std::string path = ck::JoinPath(dir, ck::kIndexFileName);
      NORMUON_RETURN_IF_ERROR(ck::ValidateIndex(x, path));
      return WriteFileAtomically(path, ck::EncodeIndex(x));
    });
  }
  return Agree(host_all_gather, world_, local, what, "; the rank files are written but the index is not");
}

absl::Status Runtime::GatherColumnSplitState(std::vector<WholeState>* out) {
  out->clear();
  const int32_t np = static_cast<int32_t>(params_.size());
  // The same list on every rank (finalize's verdict and agreed pieces): parameters with a block
  // split into column pieces, or held as several pieces by some rank (desc.pieces).
  std::vector<int32_t> split;
  for (int32_t i = 0; i < np; ++i) {
    bool any = false;
    for (int32_t k : params_[i].blocks) {
      any = any || layout_.matrices[k].column_split;
      for (const sharding::RankPiece& q : pieces_of_[k]) any = any || q.piece >= 0;
    }
    if (any) split.push_back(i);
  }
  if (split.empty()) return absl::OkStatus();
  const bool row_v = SecondMomentLayout(config_) == ck::kSecondMomentPerRow;
  const bool element_v = SecondMomentLayout(config_) == ck::kSecondMomentPerElement;
  auto empty = [](const sharding::PieceRect& r) { return r.row_count == 0 || r.col_count == 0; };
  for (int32_t i : split) {
    const Param& p = params_[i];
    // What rank r sends: for each block, each of its pieces' momentum rectangle, then (AdaMuon)
    // its rectangle of v, or (per-row v) the rows' v of a piece holding column 0.
    auto floats = [&](int r) {
      int64_t n = 0;
      for (int32_t k : p.blocks) {
        for (const sharding::RankPiece& q : pieces_of_[k]) {
          if (q.rank != r || empty(q.rect)) continue;
          n += q.rect.row_count * q.rect.col_count * (element_v ? 2 : 1) +
               (row_v && q.rect.col_begin == 0 ? q.rect.row_count : 0);
        }
      }
      return n;
    };
    WholeState w;
    w.param = i;
    w.holder = -1;
    for (const sharding::RankPiece& q : pieces_of_[p.blocks[0]]) {
      if (w.holder < 0 && !empty(q.rect) && q.rect.row_begin == 0 && q.rect.col_begin == 0) {
        w.holder = q.rank;
      }
    }
    if (w.holder < 0) return absl::InternalError("no rank holds element (0, 0) of '" + p.name + "'");
    // This rank's parts, from the backend, in the order the holder reads them.
    std::vector<float> part(static_cast<size_t>(floats(rank_)));
    size_t at = 0;
    for (int32_t k : p.blocks) {
      for (const UnitPart& u : layout_.matrices[k].parts) {
        const size_t rect = static_cast<size_t>(u.mine.row_count * u.col_count);
        if (rect == 0) continue;
        NORMUON_RETURN_IF_ERROR(
            backend_->CopyToHost(part.data() + at, p.momentum + u.state_offset, rect * 4));
        at += rect;
        if (element_v) {  // AdaMuon's v: the same rectangle, at the same offset
          NORMUON_RETURN_IF_ERROR(
              backend_->CopyToHost(part.data() + at, p.second + u.state_offset, rect * 4));
          at += rect;
        }
        if (row_v && u.col_begin == 0) {
          const size_t rows = static_cast<size_t>(u.mine.row_count);
          NORMUON_RETURN_IF_ERROR(
              backend_->CopyToHost(part.data() + at, p.second + u.v_offset, rows * 4));
          at += rows;
        }
      }
    }
    if (at != part.size()) {
      return absl::InternalError("checkpoint: the parts of '" + p.name + "' disagree with finalize");
    }
    std::vector<std::vector<float>> parts(world_);
    std::vector<P2p> sends, recvs;
    if (rank_ != w.holder && !part.empty()) {
      sends.push_back({w.holder, part.data(), part.size() * 4});
    }
    if (rank_ == w.holder) {
      for (int r = 0; r < world_; ++r) {
        if (r == rank_) continue;
        parts[r].resize(static_cast<size_t>(floats(r)));
        if (!parts[r].empty()) recvs.push_back({r, parts[r].data(), parts[r].size() * 4});
      }
    }
    NORMUON_RETURN_IF_ERROR(ExchangeHostBytes(sends, recvs));  // host bytes on any communicator
    if (rank_ == w.holder) {
      parts[rank_] = part;
      w.first.assign(static_cast<size_t>(p.rows * p.cols), 0.0f);
      w.second.assign(static_cast<size_t>(row_v       ? p.rows
                                          : element_v ? p.rows * p.cols
                                                      : SecondStateCount(p)),
                      0.0f);
      if (!row_v && !element_v) {  // replicated (column axis) or none (Muon): this rank's copy
        if (!w.second.empty()) {
          NORMUON_RETURN_IF_ERROR(backend_->CopyToHost(w.second.data(), p.second, w.second.size() * 4));
        }
      }
      for (int r = 0; r < world_; ++r) {
        size_t read = 0;
        for (int32_t k : p.blocks) {
          const int64_t first_row = layout_.matrices[k].first_row;
          for (const sharding::RankPiece& q : pieces_of_[k]) {
            if (q.rank != r || empty(q.rect)) continue;
            const int64_t rb = first_row + q.rect.row_begin, rc = q.rect.row_count;
            const int64_t cb = q.rect.col_begin, cc = q.rect.col_count;
            // The next rectangle of the message into its place among whole rows of `to`.
            auto place = [&](std::vector<float>& to) {
              for (int64_t a = 0; a < rc; ++a) {
                std::copy_n(parts[r].begin() + read + a * cc, cc, to.begin() + (rb + a) * p.cols + cb);
              }
              read += static_cast<size_t>(rc * cc);
            };
            place(w.first);
            if (element_v) place(w.second);
            if (row_v && cb == 0) {
              std::copy_n(parts[r].begin() + read, rc, w.second.begin() + rb);
              read += static_cast<size_t>(rc);
            }
          }
        }
      }
    }
    out->push_back(std::move(w));
  }
  return absl::OkStatus();
}

absl::Status Runtime::LoadCheckpoint(const std::string& dir) {
  const auto host_all_gather = [this](const void* in, void* out, size_t bytes) {
    return AllGatherHostBytes(in, out, bytes);
  };
  if (!finalized_) return absl::FailedPreconditionError("load_checkpoint before finalize");
  if (step_begun_) {
    return absl::FailedPreconditionError(
        "load_checkpoint inside a step (after grad_ready, before step): checkpoints are loaded "
        "between steps");
  }
  const std::string what = absl::StrCat("checkpoint load from '", dir, "'");
  const int32_t np = static_cast<int32_t>(params_.size());
  const uint32_t second_kind = SecondMomentLayout(config_);

  // Host staging of everything this rank will write, filled and checked before any write.
  std::vector<std::vector<float>> first(np), second(np);
  std::vector<int64_t> step(np, 0);
  StepControl control{};

  const absl::Status staged = Guarded([&]() -> absl::Status {
    const std::string index_path = ck::JoinPath(dir, ck::kIndexFileName);
    NORMUON_ASSIGN_OR_RETURN(std::string bytes, ReadCheckpointFile(index_path, "index"));
    NORMUON_ASSIGN_OR_RETURN(const ck::Index x, ck::DecodeIndex(bytes, index_path));
    bytes.clear();
    bytes.shrink_to_fit();

    // The checkpoint must describe this optimizer: same variant and state-shaping config, same
    // groups, same parameters. World size and row split may differ; so may ns_dtype (a compute
    // precision: a CPU checkpoint loads on CUDA, whose default differs) and lr / weight decay
    // (the caller's schedule sets them).
    const std::string mismatch =
        absl::StrCat("checkpoint file '", index_path, "' does not match this runtime: ");
    if (x.variant != static_cast<uint32_t>(config_.variant)) {
      return absl::InvalidArgumentError(absl::StrCat(
          mismatch, "it was saved with variant ", x.variant, " (", VariantName(x.variant),
          "), this runtime runs variant ", config_.variant, " (", VariantName(config_.variant),
          ")"));
    }
    if (x.matrix_second_moment != second_kind) {
      return absl::InvalidArgumentError(absl::StrCat(
          mismatch, "it was saved with matrix_second_moment = ",
          ck::SecondMomentName(x.matrix_second_moment), ", this runtime (variant ",
          VariantName(config_.variant), ", config.neuron_axis = ",
          config_.neuron_axis == NORMUON_NEURON_COLUMNS ? "COLUMNS" : "ROWS", ") keeps ",
          ck::SecondMomentName(second_kind)));
    }
    if (x.nesterov != static_cast<uint32_t>(config_.nesterov) ||
        x.ns_steps != static_cast<uint32_t>(config_.ns_steps) ||
        !SameBits(x.ns_eps, config_.ns_eps)) {
      return absl::InvalidArgumentError(absl::StrCat(
          mismatch, "it was saved with nesterov = ", x.nesterov, ", ns_steps = ", x.ns_steps,
          ", ns_eps = ", x.ns_eps, "; this runtime has nesterov = ", config_.nesterov,
          ", ns_steps = ", config_.ns_steps, ", ns_eps = ", config_.ns_eps));
    }
    if (x.groups.size() != groups_.size()) {
      return absl::InvalidArgumentError(absl::StrCat(mismatch, "it has ", x.groups.size(),
                                                     " groups, this runtime has ",
                                                     groups_.size()));
    }
    for (size_t g = 0; g < groups_.size(); ++g) {
      const normuon_group_desc_t& d = groups_[g].desc;
      const ck::GroupInfo& s = x.groups[g];
      const uint32_t kind = d.kind == NORMUON_GROUP_NORMUON ? 0u : 1u;
      if (static_cast<uint32_t>(s.kind) != kind || !SameBits(s.beta1, d.beta1) ||
          !SameBits(s.beta2, d.beta2) || !SameBits(s.eps, d.eps)) {
        return absl::InvalidArgumentError(absl::StrCat(
            mismatch, "group ", g, " was saved as kind ", static_cast<uint32_t>(s.kind),
            ", beta1 ", s.beta1, ", beta2 ", s.beta2, ", eps ", s.eps,
            "; this runtime has kind ", kind, ", beta1 ", d.beta1, ", beta2 ", d.beta2,
            ", eps ", d.eps));
      }
    }
    if (x.params.size() != params_.size()) {
      return absl::InvalidArgumentError(absl::StrCat(mismatch, "it has ", x.params.size(),
                                                     " parameters, this runtime registered ",
                                                     params_.size()));
    }
    for (int32_t i = 0; i < np; ++i) {
      const Param& p = params_[i];
      const ck::ParamInfo& q = x.params[i];
      const ck::ParamKind kind =
          p.kind == Kind::kMatrix ? ck::ParamKind::kMatrix : ck::ParamKind::kAdamW;
      if (q.name != p.name || q.kind != kind || q.rows != p.rows || q.cols != p.cols ||
          q.group != static_cast<uint32_t>(p.group)) {
        return absl::InvalidArgumentError(absl::StrCat(
            mismatch, "parameter ", i, " was saved as '", q.name, "' (",
            ck::KindName(q.kind), ", ", q.rows, " x ", q.cols, ", group ", q.group,
            "), this runtime registered '", p.name, "' (", ck::KindName(kind), ", ",
            p.rows, " x ", p.cols, ", group ", p.group, ")"));
      }
    }

    // Staging sized for the rows held now (and the whole replicated v of every matrix with the
    // column axis); each saved rank whose rows overlap them is read, and with the column axis
    // each matrix's v source.
    const bool per_column = second_kind == ck::kSecondMomentPerColumn;
    std::vector<int64_t> filled(np, 0);
    std::vector<int64_t> step_from(np, -1);  // the saved rank the AdamW step count came from
    std::vector<int64_t> v_from(np, -1);     // column axis: the saved rank v comes from
    std::vector<char> v_loaded(np, 0);       // column axis: v staged
    for (int32_t i = 0; i < np; ++i) {
      const Param& p = params_[i];
      // Whole rows, also for a column piece (its columns are taken when written below); with
      // several pieces, each piece's rows in piece order. AdaMuon's v, like the momentum.
      first[i].resize(static_cast<size_t>(LocalRows(p) * p.cols));
      second[i].resize(static_cast<size_t>(
          p.kind == Kind::kMatrix && second_kind == ck::kSecondMomentPerElement
              ? LocalRows(p) * p.cols
              : SecondStateCount(p)));
      step[i] = x.params[i].adamw_step;  // kept for a parameter with no rows here
      if (per_column && p.kind == Kind::kMatrix) {
        // The lowest saved rank that held rows of it (the index's ranges cover every row).
        for (uint32_t s = 0; s < x.world_size && v_from[i] < 0; ++s) {
          if (x.ranges[s][i].count > 0) v_from[i] = s;
        }
      }
    }
    auto overlap = [&](const ck::RowRange& saved, const Rows& held) {
      const int64_t b = std::max(saved.begin, held.begin);
      const int64_t e = std::min(saved.begin + saved.count, held.begin + held.count);
      return Rows{b, std::max<int64_t>(e - b, 0)};
    };
    // The row ranges this rank holds of each parameter (one, or one per piece), each staged at
    // the running sum of the ranges before it.
    std::vector<std::vector<Rows>> held(np);
    for (int32_t i = 0; i < np; ++i) {
      for (const PieceSpec& q : PiecesOf(params_[i])) held[i].push_back({q.row_begin, q.row_count});
    }
    for (uint32_t s = 0; s < x.world_size; ++s) {
      bool needed = false;
      for (int32_t i = 0; i < np && !needed; ++i) {
        needed = v_from[i] == s;
        for (const Rows& h : held[i]) needed = needed || overlap(x.ranges[s][i], h).count > 0;
      }
      if (!needed) continue;
      const std::string path = ck::JoinPath(dir, ck::RankFileName(s, x.world_size));
      NORMUON_ASSIGN_OR_RETURN(std::string file_bytes, ReadCheckpointFile(path, "rank file"));
      NORMUON_ASSIGN_OR_RETURN(const ck::RankFile f, ck::DecodeRankFile(file_bytes, path));
      file_bytes.clear();
      file_bytes.shrink_to_fit();
      NORMUON_RETURN_IF_ERROR(ck::CheckRankFileMatchesIndex(f, x, s, path));
      for (const ck::ShardState& sh : f.shards) {
        const int32_t i = static_cast<int32_t>(sh.param);
        const Param& p = params_[i];
        if (v_from[i] == s) {
          // Column axis: this entry's v is the matrix's whole replicated v.
          if (sh.second.size() != second[i].size()) {
            const auto blocks = [](uint64_t n) {
              return absl::StrCat(n, n == 1 ? " row block" : " row blocks");
            };
            return absl::InvalidArgumentError(absl::StrCat(
                "checkpoint file '", path, "' holds ", sh.second.size(), " values of v for ",
                "parameter ", i, " '", p.name, "' (",
                blocks(sh.second.size() / static_cast<uint64_t>(p.cols)), " x ", p.cols,
                " cols); this runtime keeps ", second[i].size(), " (", blocks(p.splits.size()),
                " x ", p.cols,
                " cols): the checkpoint was saved with a different row split "
                "(normuon_param_desc_t.row_splits)"));
          }
          std::copy(sh.second.begin(), sh.second.end(), second[i].begin());
          v_loaded[i] = 1;
        }
        int64_t staged_at = 0;  // the staging row of the current range
        for (const Rows& h : held[i]) {
          const Rows o = overlap({sh.row_begin, sh.row_count}, h);
          const int64_t src = o.begin - sh.row_begin, dst = staged_at + o.begin - h.begin;
          staged_at += h.count;
          if (o.count == 0) continue;
          std::copy_n(sh.first.begin() + src * p.cols, o.count * p.cols,
                      first[i].begin() + dst * p.cols);
          if (p.kind == Kind::kAdamW) {
            std::copy_n(sh.second.begin() + src * p.cols, o.count * p.cols,
                        second[i].begin() + dst * p.cols);
            if (step_from[i] >= 0 && sh.step != step[i]) {
              return absl::InvalidArgumentError(absl::StrCat(
                  "checkpoint files '", ck::RankFileName(step_from[i], x.world_size), "' and '",
                  ck::RankFileName(s, x.world_size), "' in '", dir,
                  "' hold different AdamW step counts for parameter ", i, " '", p.name, "' (",
                  step[i], " and ", sh.step, "): the checkpoint is inconsistent"));
            }
            step[i] = sh.step;
            step_from[i] = s;
          } else if (second_kind == ck::kSecondMomentPerElement) {
            std::copy_n(sh.second.begin() + src * p.cols, o.count * p.cols,
                        second[i].begin() + dst * p.cols);
          } else if (second_kind == ck::kSecondMomentPerRow) {
            std::copy_n(sh.second.begin() + src, o.count, second[i].begin() + dst);
          }  // per column: copied whole from v_from above
          filled[i] += o.count;
        }
      }
    }
    for (int32_t i = 0; i < np; ++i) {
      if (filled[i] != LocalRows(params_[i])) {
        return absl::InternalError(absl::StrCat(
            "checkpoint load: parameter '", params_[i].name, "': ", filled[i], " of ",
            LocalRows(params_[i]), " rows found in the rank files"));
      }
      if (per_column && params_[i].kind == Kind::kMatrix && !v_loaded[i]) {
        return absl::InternalError(absl::StrCat("checkpoint load: parameter '", params_[i].name,
                                                "': no saved rank held its v"));
      }
    }
    NORMUON_RETURN_IF_ERROR(backend_->CopyToHost(&control, control_, sizeof(control)));
    control.steps_taken = x.steps_taken;
    control.steps_skipped = x.steps_skipped;
    control.nonfinite_param = kNoParam;
    control.comm_error = 0;
    return absl::OkStatus();
  });
  NORMUON_RETURN_IF_ERROR(Agree(host_all_gather, world_, staged, what, "; nothing was changed on any rank"));

  // Every rank has all it needs: write the state.
  const absl::Status written = [&]() -> absl::Status {
    for (int32_t i = 0; i < np; ++i) {
      const Param& p = params_[i];
      if (!first[i].empty() && LocalElements(p) < LocalRows(p) * p.cols) {
        // Column pieces: each piece's columns of its staged whole rows, in piece order (the
        // momentum, and AdaMuon's v).
        auto columns = [&p](std::vector<float>& rows) {
          std::vector<float> pieces(static_cast<size_t>(LocalElements(p)));
          int64_t staged = 0, at = 0;
          for (const PieceSpec& q : PiecesOf(p)) {
            for (int64_t r = 0; r < q.row_count; ++r) {
              std::copy_n(rows.begin() + (staged + r) * p.cols + q.col_begin, q.col_count,
                          pieces.begin() + at);
              at += q.col_count;
            }
            staged += q.row_count;
          }
          rows = std::move(pieces);
        };
        columns(first[i]);
        if (second_kind == ck::kSecondMomentPerElement) columns(second[i]);
      }
      if (!first[i].empty()) {
        NORMUON_RETURN_IF_ERROR(backend_->CopyFromHost(p.momentum, first[i].data(), first[i].size() * 4));
      }
      if (!second[i].empty()) {
        NORMUON_RETURN_IF_ERROR(backend_->CopyFromHost(p.second, second[i].data(), second[i].size() * 4));
      }
    }
    if (!adamw_.empty()) {
      std::vector<int64_t> steps(adamw_.size());
      for (int32_t i = 0; i < np; ++i) {
        if (params_[i].kind == Kind::kAdamW) steps[params_[i].work] = step[i];
      }
      NORMUON_RETURN_IF_ERROR(
          backend_->CopyFromHost(adamw_steps_, steps.data(), steps.size() * sizeof(int64_t)));
    }
    return backend_->CopyFromHost(control_, &control, sizeof(control));
  }();
  return Agree(host_all_gather, world_, written, what,
               " while writing the loaded state: that rank's state may be partly written");
}

}  // namespace normuon
