// Several pieces of one matrix on one rank (issue 15; normuon_param_desc_t.pieces;
// docs/ARCHITECTURE.md section 2, "Two-dimensional pieces"), on the CPU backend through the
// in-process group: Megatron tensor parallelism on a fused QKV under grouped-query attention
// without interleaving (each TP rank holds its q, k and v heads: three row ranges), FSDP2's
// strided sharding, a rank with three pieces next to one with none, column pieces crossing row
// splits and heads. Every run must end bitwise equal to the single-rank run (parameters,
// momentum and v), for every schedule with grad_ready and both neuron axes; checkpoints reshard
// between multi-piece and one-piece layouts; bad tilings fail on every rank naming ranks and
// piece indices.
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"
#include "tests/testing/row_layouts.h"

namespace {

using normuon::testing::Random;

struct Rect {
  int64_t row_begin = 0, row_count = 0, col_begin = 0, col_count = 0;
};

struct Matrix {
  std::string name;
  int64_t rows, cols;
  std::vector<int64_t> splits = {};
  int32_t num_heads = 0;
};

// pieces(matrix index, rank, world): that rank's rectangles, in its order.
using PieceLayout = std::function<std::vector<Rect>(size_t, int, int)>;

struct Result;

struct Options {
  int world = 1;
  PieceLayout pieces;  // unset: one rank holds everything (desc fields, no list)
  normuon_schedule_t schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  bool grad_ready = false;
  normuon_neuron_axis_t axis = NORMUON_NEURON_ROWS;
  normuon_variant_t variant = NORMUON_VARIANT_NORMUON;
  int steps = 3;
  int64_t ld_pad = 0;
  bool rebind = false;  // before each step, move every piece to fresh buffers (bind_piece)
  int first_step = 0;
  const Result* init = nullptr;
  std::string load_dir, save_dir;
};

struct Result {
  std::vector<std::vector<float>> param, momentum, v;
  std::vector<std::string> errors;
};

std::vector<float> Full(const Matrix& m, uint32_t seed, float scale) {
  return Random(static_cast<size_t>(m.rows * m.cols), seed, scale);
}

// One piece's buffers.
struct Held {
  Rect r;
  int64_t ld = 0;
  std::vector<float> param, grad;
};

Result RunRanks(const std::vector<Matrix>& ms, const Options& o) {
  const int world = o.world;
  std::vector<normuon_comm_t> comms(world);
  EXPECT_EQ(normuon_comm_create_inprocess_group(world, 30.0, comms.data()), NORMUON_SUCCESS);
  Result res;
  res.errors.assign(world, "");
  for (const Matrix& m : ms) {
    res.param.emplace_back(m.rows * m.cols, 0.0f);
    res.momentum.emplace_back(m.rows * m.cols, 0.0f);
    const int64_t blocks = m.num_heads > 0 ? m.num_heads : std::max<int64_t>(1, m.splits.size());
    res.v.emplace_back(o.variant == NORMUON_VARIANT_ADAMUON ? m.rows * m.cols
                       : o.axis == NORMUON_NEURON_COLUMNS   ? blocks * m.cols
                                                            : m.rows,
                       0.0f);
  }
  std::mutex mu;
  auto rank_main = [&](int rank) {
    auto fail = [&](const std::string& what) {
      std::lock_guard<std::mutex> lock(mu);
      if (res.errors[rank].empty()) res.errors[rank] = what;
    };
    normuon_config_t c;
    normuon_config_init(&c);
    c.ns_dtype = NORMUON_NS_FP32;
    c.schedule = o.schedule;
    c.bucket_bytes = 3000;
    c.neuron_axis = o.axis;
    c.variant = o.variant;
    c.weight_decay = 0.01f;
    normuon_runtime_t rt = 0;
    if (normuon_create(&c, comms[rank], &rt) != NORMUON_SUCCESS) return fail(normuon_last_error(0));
    std::vector<std::vector<Held>> held(ms.size());
    for (size_t i = 0; i < ms.size(); ++i) {
      const Matrix& m = ms[i];
      const std::vector<Rect> rects =
          o.pieces ? o.pieces(i, rank, world) : std::vector<Rect>{{0, m.rows, 0, m.cols}};
      const std::vector<float> init =
          o.init != nullptr ? o.init->param[i] : Full(m, 100 + static_cast<uint32_t>(i), 0.05f);
      std::vector<normuon_piece_t> list;
      for (const Rect& given : rects) {
        Held h;
        h.r = given;
        if (h.r.col_count == 0) h.r.col_count = m.cols;  // 0: every column
        h.ld = h.r.col_count + o.ld_pad;
        h.param.assign(static_cast<size_t>(std::max<int64_t>(1, h.r.row_count * h.ld)), -7.0f);
        h.grad.assign(h.param.size(), 0.0f);
        for (int64_t a = 0; a < h.r.row_count; ++a)
          for (int64_t b = 0; b < h.r.col_count; ++b)
            h.param[a * h.ld + b] = init[(h.r.row_begin + a) * m.cols + h.r.col_begin + b];
        held[i].push_back(std::move(h));
      }
      for (size_t j = 0; j < rects.size(); ++j) {
        Held& h = held[i][j];
        list.push_back(normuon_piece_t{h.r.row_begin, h.r.row_count, h.r.col_begin,
                                       rects[j].col_count, h.ld, h.param.data(), h.grad.data()});
      }
      normuon_param_desc_t d;
      normuon_param_desc_init(&d);
      d.name = m.name.c_str();
      d.rows = m.rows;
      d.cols = m.cols;
      if (o.pieces) {
        d.pieces = list.data();
        d.num_pieces = static_cast<int32_t>(list.size());
      } else {
        d.row_count = m.rows;
        d.param = held[i][0].param.data();
        d.grad = held[i][0].grad.data();
      }
      d.row_splits = m.splits.empty() ? nullptr : m.splits.data();
      d.num_row_splits = static_cast<int32_t>(m.splits.size());
      d.num_heads = m.num_heads;
      normuon_param_t id;
      if (normuon_register_matrix(rt, &d, &id) != NORMUON_SUCCESS) {
        fail(normuon_last_error(rt));
        normuon_destroy(rt);
        return;
      }
    }
    if (normuon_finalize(rt) != NORMUON_SUCCESS) {
      fail(normuon_last_error(rt));
      normuon_destroy(rt);
      return;
    }
    if (!o.load_dir.empty() && normuon_load_checkpoint(rt, o.load_dir.c_str()) != NORMUON_SUCCESS) {
      fail(normuon_last_error(rt));
      normuon_destroy(rt);
      return;
    }
    for (int s = o.first_step; s < o.first_step + o.steps; ++s) {
      for (size_t i = 0; i < ms.size(); ++i) {
        const std::vector<float> g = Full(ms[i], 1000 + 97 * s + static_cast<uint32_t>(i), 1.0f);
        for (size_t j = 0; j < held[i].size(); ++j) {
          Held& h = held[i][j];
          if (o.rebind) {  // fresh buffers, same values: bind_piece must follow them
            std::vector<float> moved = h.param;
            h.param.swap(moved);
            h.grad.assign(h.param.size(), 0.0f);
            if (normuon_bind_piece(rt, static_cast<int32_t>(i), static_cast<int32_t>(j),
                                   h.param.data(), h.grad.data()) != NORMUON_SUCCESS) {
              fail(normuon_last_error(rt));
            }
          }
          for (int64_t a = 0; a < h.r.row_count; ++a)
            for (int64_t b = 0; b < h.r.col_count; ++b)
              h.grad[a * h.ld + b] = g[(h.r.row_begin + a) * ms[i].cols + h.r.col_begin + b];
        }
      }
      if (o.grad_ready) {
        for (int i = static_cast<int>(ms.size()) - 1; i >= 0; --i) {
          const normuon_param_t p = i;
          if (normuon_grad_ready(rt, &p, 1, nullptr) != NORMUON_SUCCESS) {
            fail(normuon_last_error(rt));
            break;
          }
        }
      }
      if (normuon_step(rt, 0.02f, -1.0f, nullptr) != NORMUON_SUCCESS) {
        fail(normuon_last_error(rt));
        break;
      }
    }
    if (!o.save_dir.empty() && normuon_save_checkpoint(rt, o.save_dir.c_str()) != NORMUON_SUCCESS) {
      fail(normuon_last_error(rt));
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      for (size_t i = 0; i < ms.size(); ++i) {
        const Matrix& m = ms[i];
        uint64_t mb = 0, vb = 0;
        EXPECT_EQ(normuon_state_size(rt, static_cast<int32_t>(i), NORMUON_STATE_MOMENTUM, &mb),
                  NORMUON_SUCCESS);
        normuon_state_size(rt, static_cast<int32_t>(i), NORMUON_STATE_SECOND_MOMENT, &vb);
        int64_t elements = 0, rows = 0;
        for (const Held& h : held[i]) {
          elements += h.r.row_count * h.r.col_count;
          rows += h.r.row_count;
        }
        // The state of the pieces, back to back in piece order.
        EXPECT_EQ(mb, static_cast<uint64_t>(elements) * 4) << m.name;
        std::vector<float> mom(mb / 4 + 1), v(vb / 4 + 1);
        if (mb > 0) {
          EXPECT_EQ(normuon_get_state(rt, static_cast<int32_t>(i), NORMUON_STATE_MOMENTUM,
                                      mom.data(), mb), NORMUON_SUCCESS);
        }
        if (vb > 0) {
          EXPECT_EQ(normuon_get_state(rt, static_cast<int32_t>(i), NORMUON_STATE_SECOND_MOMENT,
                                      v.data(), vb), NORMUON_SUCCESS);
        }
        int64_t at = 0, vat = 0;
        for (const Held& h : held[i]) {
          for (int64_t a = 0; a < h.r.row_count; ++a) {
            for (int64_t b = 0; b < h.r.col_count; ++b) {
              const size_t g = static_cast<size_t>((h.r.row_begin + a) * m.cols + h.r.col_begin + b);
              res.param[i][g] = h.param[a * h.ld + b];
              if (o.variant == NORMUON_VARIANT_ADAMUON) res.v[i][g] = v[at];  // per element
              res.momentum[i][g] = mom[at++];
            }
            for (int64_t b = h.r.col_count; b < h.ld; ++b) EXPECT_EQ(h.param[a * h.ld + b], -7.0f);
            if (o.axis == NORMUON_NEURON_ROWS && o.variant != NORMUON_VARIANT_MUON &&
                o.variant != NORMUON_VARIANT_ADAMUON) {
              res.v[i][h.r.row_begin + a] = v[vat++];
            }
          }
        }
        if (o.variant == NORMUON_VARIANT_ADAMUON) {
          EXPECT_EQ(vb, static_cast<uint64_t>(elements) * 4) << m.name;
        } else if (o.axis == NORMUON_NEURON_ROWS && o.variant != NORMUON_VARIANT_MUON) {
          EXPECT_EQ(vb, static_cast<uint64_t>(rows) * 4) << m.name;
        }
        if (o.axis == NORMUON_NEURON_COLUMNS && vb > 0) {
          std::copy(v.begin(), v.begin() + vb / 4, res.v[i].begin());
        }
      }
    }
    normuon_destroy(rt);
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(rank_main, r);
  for (std::thread& t : threads) t.join();
  for (normuon_comm_t comm : comms) normuon_comm_destroy(comm);
  return res;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

void ExpectBitwise(const std::vector<Matrix>& ms, const Result& one, const Result& got,
                   const std::string& what) {
  for (const std::string& e : one.errors) ASSERT_EQ(e, "") << what << " (single rank)";
  for (size_t r = 0; r < got.errors.size(); ++r) ASSERT_EQ(got.errors[r], "") << what << " rank " << r;
  for (size_t i = 0; i < ms.size(); ++i) {
    EXPECT_TRUE(SameBits(one.param[i], got.param[i])) << what << ": param of " << ms[i].name;
    EXPECT_TRUE(SameBits(one.momentum[i], got.momentum[i])) << what << ": momentum of " << ms[i].name;
    EXPECT_TRUE(SameBits(one.v[i], got.v[i])) << what << ": v of " << ms[i].name;
  }
}

// ---- Layouts ----

// Fused QKV under grouped-query attention, not interleaved: 4 q heads, 2 kv heads of head size 4
// (q rows 0..15, k rows 16..23, v rows 24..31), 16 columns. TP2 x DP2, rank = t * 2 + d: TP rank
// t holds q heads 2t, 2t+1, k head t and v head t (three row ranges); FSDP2 then gives DP rank d
// half of each range. Two more matrices: an MLP up-projection under FSDP2's strided sharding
// (TP and DP both on dim 0: rank r holds every 4th pair of rows), and a row-parallel output
// projection whose TP column halves each rank holds as two pieces of different rows.
std::vector<Matrix> GqaBlock(int32_t qkv_heads) {
  return {{"attn.qkv", 32, 16, {}, qkv_heads}, {"mlp.up", 16, 12}, {"attn.out", 12, 16}};
}

std::vector<Rect> GqaPieces(size_t i, int rank, int /*world*/) {
  const int t = rank / 2, d = rank % 2;
  if (i == 0) {
    return {{8 * t + 4 * d, 4, 0, 0}, {16 + 4 * t + 2 * d, 2, 0, 0}, {24 + 4 * t + 2 * d, 2, 0, 0}};
  }
  if (i == 1) {  // rows {2r, 2r+1} + 8k
    return {{2 * rank, 2, 0, 0}, {8 + 2 * rank, 2, 0, 12}};
  }
  // attn.out, 12 x 16: TP rank t holds columns [8t, 8t + 8); its DP ranks split rows in thirds
  // and rank d holds the thirds d and d + 2 (uneven: 4 + 4 rows vs 4 rows).
  const int64_t c = 8 * t;
  if (d == 0) return {{0, 4, c, 8}, {8, 4, c, 8}};
  return {{4, 4, c, 8}};
}

TEST(MultiPiece, GqaQkvTp2xDp2MatchesOneRankForEveryScheduleAndAxis) {
  for (int32_t heads : {8, 0}) {
    const std::vector<Matrix> ms = GqaBlock(heads);
    for (normuon_neuron_axis_t axis : {NORMUON_NEURON_ROWS, NORMUON_NEURON_COLUMNS}) {
      Options one;
      one.axis = axis;
      const Result base = RunRanks(ms, one);
      for (normuon_schedule_t schedule : {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX,
                                          NORMUON_SCHEDULE_BUCKETED}) {
        for (bool ready : {false, true}) {
          if (axis == NORMUON_NEURON_COLUMNS && !ready && schedule != NORMUON_SCHEDULE_SEQUENTIAL) {
            continue;  // keeps the test short; the rows axis runs every combination
          }
          Options o = one;
          o.world = 4;
          o.pieces = GqaPieces;
          o.schedule = schedule;
          o.grad_ready = ready;
          o.ld_pad = heads == 0 ? 2 : 0;
          ExpectBitwise(ms, base, RunRanks(ms, o),
                        "GQA heads " + std::to_string(heads) + " axis " + std::to_string(axis) +
                            " schedule " + std::to_string(schedule) + (ready ? " grad_ready" : ""));
        }
      }
    }
  }
}

// AdaMuon keeps v per element: with pieces of whole rows (no column split) each piece's v lies
// with its momentum, in piece order.
TEST(MultiPiece, AdaMuonWithRowPiecesMatchesOneRank) {
  std::vector<Matrix> ms = GqaBlock(8);
  ms.pop_back();  // attn.out is split into column pieces
  Options one;
  one.variant = NORMUON_VARIANT_ADAMUON;
  const Result base = RunRanks(ms, one);
  Options o = one;
  o.world = 4;
  o.pieces = GqaPieces;
  o.schedule = NORMUON_SCHEDULE_BUCKETED;
  o.grad_ready = true;
  ExpectBitwise(ms, base, RunRanks(ms, o), "AdaMuon, row pieces");
}

// World 3: rank 0 holds three pieces (two of them column halves of one row range), rank 1 the
// rest, rank 2 nothing (an empty list). Column pieces cross the row splits' and heads' edges.
std::vector<Matrix> Ragged() {
  return {{"w", 12, 10, {5, 7}}, {"heads", 24, 12, {}, 3}};
}

std::vector<Rect> RaggedPieces(size_t i, int rank, int /*world*/) {
  if (i == 0) {
    if (rank == 0) return {{0, 4, 0, 0}, {4, 4, 0, 5}, {8, 4, 0, 0}};
    if (rank == 1) return {{4, 4, 5, 5}};
    return {};
  }
  // heads: 8 rows per head; column halves cut at rows 10 and 14.
  if (rank == 0) return {{0, 10, 0, 6}, {14, 10, 6, 6}, {10, 0, 0, 0}};
  if (rank == 1) return {{10, 14, 0, 6}, {0, 14, 6, 6}};
  return {};
}

TEST(MultiPiece, ThreePiecesNextToAnEmptyRankWithColumnAndRowSplitsMatchOneRank) {
  const std::vector<Matrix> ms = Ragged();
  for (normuon_neuron_axis_t axis : {NORMUON_NEURON_ROWS, NORMUON_NEURON_COLUMNS}) {
    Options one;
    one.axis = axis;
    const Result base = RunRanks(ms, one);
    for (normuon_schedule_t schedule : {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_BUCKETED}) {
      Options o = one;
      o.world = 3;
      o.pieces = RaggedPieces;
      o.schedule = schedule;
      o.grad_ready = schedule != NORMUON_SCHEDULE_SEQUENTIAL;
      o.ld_pad = 3;
      o.rebind = true;
      ExpectBitwise(ms, base, RunRanks(ms, o),
                    "ragged axis " + std::to_string(axis) + " schedule " + std::to_string(schedule));
    }
  }
  Options muon;
  muon.variant = NORMUON_VARIANT_MUON;
  const Result base = RunRanks(ms, muon);
  Options o = muon;
  o.world = 3;
  o.pieces = RaggedPieces;
  ExpectBitwise(ms, base, RunRanks(ms, o), "ragged Muon");
}

// A one-rank list of pieces (no peers) is the single-rank step too.
// AdaMuon on several pieces that include column pieces (its per-element v travels to the owner
// part by part): the GQA layout with the column-split attention output, and the ragged layout
// (a rank with three pieces, two of them column halves, next to an empty rank).
TEST(MultiPiece, AdaMuonWithColumnPiecesAmongSeveralMatchesOneRank) {
  Options one;
  one.variant = NORMUON_VARIANT_ADAMUON;
  const std::vector<Matrix> gqa = GqaBlock(8);
  const Result gqa_base = RunRanks(gqa, one);
  Options o = one;
  o.world = 4;
  o.pieces = GqaPieces;
  o.schedule = NORMUON_SCHEDULE_BUCKETED;
  o.grad_ready = true;
  ExpectBitwise(gqa, gqa_base, RunRanks(gqa, o), "AdaMuon, GQA pieces with column pieces");
  const std::vector<Matrix> ragged = Ragged();
  const Result ragged_base = RunRanks(ragged, one);
  for (normuon_schedule_t schedule : {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX}) {
    Options r = one;
    r.world = 3;
    r.pieces = RaggedPieces;
    r.schedule = schedule;
    r.ld_pad = 3;
    ExpectBitwise(ragged, ragged_base, RunRanks(ragged, r),
                  "AdaMuon, ragged pieces, schedule " + std::to_string(schedule));
  }
}

// NorMuon, and AdaMuon (one rank holding column pieces: its per-element v goes to its own
// owner buffer, the in-place RowStats and each piece's ElementSecondMoment, with no exchange).
TEST(MultiPiece, OneRankWithSeveralPiecesMatchesOnePiece) {
  const std::vector<Matrix> ms = Ragged();
  for (normuon_variant_t variant : {NORMUON_VARIANT_NORMUON, NORMUON_VARIANT_ADAMUON}) {
    Options one;
    one.variant = variant;
    const Result base = RunRanks(ms, one);
    Options o = one;
    o.pieces = [](size_t i, int, int) {
      std::vector<Rect> all;
      for (int r = 0; r < 3; ++r) {
        for (const Rect& x : RaggedPieces(i, r, 3)) all.push_back(x);
      }
      return all;
    };
    o.schedule = NORMUON_SCHEDULE_PER_MATRIX;
    o.grad_ready = true;
    ExpectBitwise(ms, base, RunRanks(ms, o),
                  "one rank, every piece, variant " + std::to_string(variant));
  }
}

// Checkpoints reshard: saved from the multi-piece layout, loaded on one rank and on a row-only
// layout (and back), continuing bitwise.
TEST(MultiPiece, CheckpointsReshardBetweenMultiPieceAndOnePieceLayouts) {
  const std::vector<Matrix> ms = GqaBlock(8);
  // NorMuon on both neuron axes, and AdaMuon (per-element v, also of the column pieces).
  for (const auto& [axis, variant] : std::vector<std::pair<normuon_neuron_axis_t, normuon_variant_t>>{
           {NORMUON_NEURON_ROWS, NORMUON_VARIANT_NORMUON},
           {NORMUON_NEURON_COLUMNS, NORMUON_VARIANT_NORMUON},
           {NORMUON_NEURON_ROWS, NORMUON_VARIANT_ADAMUON}}) {
    Options straight;
    straight.axis = axis;
    straight.variant = variant;
    straight.steps = 4;
    const Result want = RunRanks(ms, straight);
    const PieceLayout rows_only = [&](size_t i, int rank, int world) {
      const int64_t n = ms[i].rows, chunk = (n + world - 1) / world;
      const int64_t b = std::min<int64_t>(n, rank * chunk);
      return std::vector<Rect>{{b, std::min(chunk, n - b), 0, 0}};
    };
    struct Way {
      int world;
      PieceLayout pieces;
      std::string name;
    };
    const Way multi{4, GqaPieces, "GQA TP2 x DP2 pieces"};
    const std::vector<std::pair<Way, Way>> ways = {
        {multi, {1, nullptr, "one rank"}},
        {multi, {3, rows_only, "rows over 3 ranks"}},
        {{2, rows_only, "rows over 2 ranks"}, multi},
    };
    for (size_t w = 0; w < ways.size(); ++w) {
      const Way& from = ways[w].first;
      const Way& to = ways[w].second;
      const std::string dir =
          ::testing::TempDir() + "/multi_piece_ck_" + std::to_string(axis) + "_" +
          std::to_string(variant) + "_" + std::to_string(w);
      ASSERT_EQ(system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str()), 0);
      Options save = straight;
      save.world = from.world;
      save.pieces = from.pieces;
      save.steps = 2;
      save.save_dir = dir;
      const Result saved = RunRanks(ms, save);
      for (const std::string& e : saved.errors) ASSERT_EQ(e, "") << from.name;
      Options load = straight;
      load.world = to.world;
      load.pieces = to.pieces;
      load.steps = 2;
      load.first_step = 2;
      load.init = &saved;
      load.load_dir = dir;
      ExpectBitwise(ms, want, RunRanks(ms, load),
                    "checkpoint " + from.name + " -> " + to.name + " variant " +
                        std::to_string(variant));
    }
  }
}

// ---- Bad tilings and descriptors ----

void ExpectEveryRankFails(const Result& r, const std::vector<std::string>& parts) {
  for (size_t rank = 0; rank < r.errors.size(); ++rank) {
    for (const std::string& p : parts) {
      EXPECT_NE(r.errors[rank].find(p), std::string::npos)
          << "rank " << rank << ": '" << r.errors[rank] << "' lacks '" << p << "'";
    }
  }
}

TEST(MultiPiece, OverlapsAndGapsFailOnEveryRankNamingRanksAndPieces) {
  const std::vector<Matrix> ms = {{"w", 8, 6}};
  Options o;
  o.world = 2;
  o.steps = 1;
  // Rank 1's pieces 0 and 1 overlap each other (rows 4..5 of columns 0..2).
  o.pieces = [](size_t, int rank, int) {
    if (rank == 0) return std::vector<Rect>{{0, 4, 0, 0}};
    return std::vector<Rect>{{4, 2, 0, 3}, {4, 4, 0, 3}, {4, 4, 3, 3}};
  };
  ExpectEveryRankFails(RunRanks(ms, o), {"rank 1's piece 0 (rows [4, 6) x cols [0, 3))",
                                    "overlaps rank 1's piece 1 (rows [4, 8) x cols [0, 3))"});
  // A gap: nobody holds rows 6..7 of columns 3..5.
  o.pieces = [](size_t, int rank, int) {
    if (rank == 0) return std::vector<Rect>{{0, 4, 0, 0}, {4, 4, 0, 3}};
    return std::vector<Rect>{{4, 2, 3, 3}};
  };
  ExpectEveryRankFails(RunRanks(ms, o), {"element (6, 3)", "held by no piece"});
  // Across ranks: rank 0's piece 1 overlaps rank 1's piece 0.
  o.pieces = [](size_t, int rank, int) {
    if (rank == 0) return std::vector<Rect>{{0, 4, 0, 0}, {4, 2, 0, 0}};
    return std::vector<Rect>{{5, 3, 0, 0}};
  };
  ExpectEveryRankFails(RunRanks(ms, o), {"rank 0's piece 1 (rows [4, 6) x cols [0, 6))",
                                    "rank 1's piece 0 (rows [5, 8) x cols [0, 6))"});
}

normuon_param_desc_t PieceDesc(const normuon_piece_t* pieces, int32_t n) {
  normuon_param_desc_t d;
  normuon_param_desc_init(&d);
  d.name = "w";
  d.rows = 8;
  d.cols = 6;
  d.pieces = pieces;
  d.num_pieces = n;
  return d;
}

TEST(MultiPiece, DescriptorsWithPiecesAreCheckedFieldByField) {
  normuon_config_t c;
  normuon_config_init(&c);
  normuon_runtime_t rt = 0;
  ASSERT_EQ(normuon_create(&c, 0, &rt), NORMUON_SUCCESS);
  std::vector<float> a(48), b(48);
  normuon_piece_t pieces[2] = {{0, 4, 0, 0, 0, a.data(), b.data()},
                               {4, 4, 0, 0, 0, a.data() + 24, b.data() + 24}};
  normuon_param_t id;
  auto expect_refused = [&](normuon_param_desc_t d, const std::string& field, bool adamw = false) {
    const normuon_status_t s = adamw ? normuon_register_adamw(rt, &d, &id)
                                     : normuon_register_matrix(rt, &d, &id);
    EXPECT_EQ(s, NORMUON_ERROR_INVALID_ARGUMENT) << field;
    EXPECT_NE(std::string(normuon_last_error(rt)).find(field), std::string::npos)
        << normuon_last_error(rt);
  };
  normuon_param_desc_t d = PieceDesc(pieces, 2);
  d.row_count = 8;
  expect_refused(d, "desc.row_count is set together with desc.pieces");
  d = PieceDesc(pieces, 2);
  d.param = a.data();
  expect_refused(d, "desc.param is set together with desc.pieces");
  d = PieceDesc(pieces, 2);
  d.ld = 6;
  expect_refused(d, "desc.ld");
  expect_refused(PieceDesc(nullptr, 2), "desc.pieces is NULL");
  expect_refused(PieceDesc(pieces, -1), "desc.num_pieces = -1");
  expect_refused(PieceDesc(pieces, 2), "desc.pieces is for matrices", /*adamw=*/true);
  normuon_piece_t bad[2] = {pieces[0], {4, 5, 0, 0, 0, a.data(), b.data()}};
  expect_refused(PieceDesc(bad, 2), "desc.pieces[1].row_count = 5");
  bad[1] = {4, 4, 2, 5, 0, a.data(), b.data()};
  expect_refused(PieceDesc(bad, 2), "desc.pieces[1].col_count = 5");
  bad[1] = {4, 4, 0, 3, 2, a.data(), b.data()};
  expect_refused(PieceDesc(bad, 2), "desc.pieces[1].ld = 2");
  bad[1] = {4, 4, 0, 0, 0, nullptr, b.data()};
  expect_refused(PieceDesc(bad, 2), "desc.pieces[1]: param is null");
  // Accepted, then bound piece by piece only.
  ASSERT_EQ(normuon_register_matrix(rt, &d, &id), NORMUON_ERROR_INVALID_ARGUMENT);  // ld still set
  normuon_param_desc_t good = PieceDesc(pieces, 2);
  ASSERT_EQ(normuon_register_matrix(rt, &good, &id), NORMUON_SUCCESS) << normuon_last_error(rt);
  uint64_t bytes = 0;
  ASSERT_EQ(normuon_state_size(rt, id, NORMUON_STATE_MOMENTUM, &bytes), NORMUON_SUCCESS);
  EXPECT_EQ(bytes, 48u * 4);
  ASSERT_EQ(normuon_state_size(rt, id, NORMUON_STATE_SECOND_MOMENT, &bytes), NORMUON_SUCCESS);
  EXPECT_EQ(bytes, 8u * 4);
  EXPECT_EQ(normuon_param_state_size(&c, &good, 1, NORMUON_STATE_MOMENTUM, &bytes),
            NORMUON_SUCCESS);
  EXPECT_EQ(bytes, 48u * 4);
  EXPECT_EQ(normuon_bind(rt, id, a.data(), b.data()), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(normuon_last_error(rt)).find("normuon_bind_piece"), std::string::npos);
  EXPECT_EQ(normuon_bind_piece(rt, id, 2, a.data(), b.data()), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(normuon_last_error(rt)).find("piece = 2"), std::string::npos);
  EXPECT_EQ(normuon_bind_piece(rt, id, 1, a.data() + 24, nullptr), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_finalize(rt), NORMUON_SUCCESS) << normuon_last_error(rt);
  EXPECT_EQ(normuon_step(rt, 0.02f, -1.0f, nullptr), NORMUON_SUCCESS) << normuon_last_error(rt);
  normuon_destroy(rt);
}

}  // namespace
