// Two-dimensional shards (issue 15; docs/ARCHITECTURE.md section 2, "Two-dimensional pieces"):
// tensor parallel x FSDP meshes on the CPU backend through the in-process group. Every rank
// holds one rectangle of each matrix (column-parallel layers: TP splits rows; row-parallel: TP
// splits columns; FSDP2 then splits each TP piece's rows over the data-parallel ranks), and the
// run must end bitwise equal to the single-rank run: parameters, momentum and v, for every mesh,
// schedule, arrival order, neuron axis, ragged splits (ranks with no piece), row splits and
// per-head blocks, NorMuon and AdaMuon (whose per-element v travels to the owner). Also: the
// tiling check's failures on every rank, the descriptor checks, and float64 models of per-head
// NorMuon and of row-split AdaMuon on column-split layouts.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"
#include "tests/normuon/reference_math.h"
#include "tests/testing/row_layouts.h"

namespace {

using normuon::testing::Random;

struct Rect {
  int64_t row_begin = 0, row_count = 0, col_begin = 0, col_count = 0;
};

enum class Tp { kColumnParallel, kRowParallel };  // TP splits rows / columns

struct Matrix {
  std::string name;
  int64_t rows, cols;
  Tp tp = Tp::kColumnParallel;
  std::vector<int64_t> splits = {};  // row_splits
  int32_t num_heads = 0;
};

// A small transformer block: fused QKV under grouped-query attention (q heads 4, kv heads 2,
// head size 4: 32 rows, one block per head), the attention output, the MLP up and down
// projections (row-parallel with row splits too), and an AdamW bias.
std::vector<Matrix> Block() {
  return {
      {"attn.qkv", 32, 16, Tp::kColumnParallel, {}, 8},
      {"attn.out", 16, 16, Tp::kRowParallel},
      {"mlp.up", 24, 16, Tp::kColumnParallel},
      {"mlp.down", 16, 24, Tp::kRowParallel, {8, 4, 4}},
  };
}

struct Result;

struct Options {
  int tp = 1, dp = 1;
  bool ragged = false;  // uneven TP cuts, one TP piece empty when tp > 2
  int64_t ld_pad = 0;   // param/grad rows are this much longer than the piece
  normuon_schedule_t schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  bool grad_ready = false;
  normuon_neuron_axis_t axis = NORMUON_NEURON_ROWS;
  normuon_variant_t variant = NORMUON_VARIANT_NORMUON;
  int steps = 3;
  bool empty_rank = false;  // the last rank holds nothing of any matrix (DP split skips it)
  // Checkpoints: the gradients of steps first_step.. are used; parameters start from `init`
  // (a Result's whole matrices) when given; load_dir is loaded after finalize, save_dir saved
  // after the last step.
  int first_step = 0;
  const Result* init = nullptr;
  std::string load_dir, save_dir;
  normuon_ns_dtype_t ns_dtype = NORMUON_NS_FP32;
  normuon_ns_method_t ns_method = NORMUON_NS_METHOD_STANDARD;
  bool cancel_first = false;  // the first step is begun by grad_ready (two matrices), cancelled
  int nonfinite_step = -1;  // the gradient of element (0, 0) of the first matrix is NaN then
  int fault_rank = -1;  // this rank's collective #fault_call fails (NORMUON_FAULT_ERROR)
  int64_t fault_call = 0;
};

// TP cuts of n over tp ranks (cuts[a], cuts[a + 1]) for TP rank a.
std::vector<int64_t> TpCuts(int64_t n, int tp, bool ragged) {
  std::vector<int64_t> cuts = {0};
  for (int i = 1; i < tp; ++i) {
    int64_t c = n * i / tp;
    // Ragged: a 3-wide first piece, an empty second one (tp > 2), then even cuts.
    if (ragged && i <= 2) c = std::min<int64_t>(n, 3);
    cuts.push_back(std::max(c, cuts.back()));
  }
  cuts.push_back(n);
  return cuts;
}

// Rank r = t * dp + d holds FSDP2 chunk d of TP piece t.
std::vector<Rect> Layout(const Matrix& m, const Options& o) {
  const int world = o.tp * o.dp;
  std::vector<Rect> out(world);
  const bool cols = m.tp == Tp::kRowParallel;
  const std::vector<int64_t> t = TpCuts(cols ? m.cols : m.rows, o.tp, o.ragged);
  for (int a = 0; a < o.tp; ++a) {
    Rect piece = cols ? Rect{0, m.rows, t[a], t[a + 1] - t[a]}
                      : Rect{t[a], t[a + 1] - t[a], 0, m.cols};
    const int dp = o.empty_rank && a == o.tp - 1 ? o.dp - 1 : o.dp;
    const int64_t chunk = dp > 0 ? (piece.row_count + dp - 1) / dp : 0;
    for (int d = 0; d < o.dp; ++d) {
      Rect r = piece;
      const int64_t b = d < dp ? std::min(piece.row_count, d * chunk) : piece.row_count;
      r.row_begin = piece.row_begin + b;
      r.row_count = d < dp ? std::min(chunk, piece.row_count - b) : 0;
      if (r.row_count == 0 || r.col_count == 0) r = Rect{0, 0, 0, 0};
      out[a * o.dp + d] = r;
    }
  }
  return out;
}

struct Result {
  std::vector<std::vector<float>> param, momentum, v;  // whole matrices, v per row/col
  std::vector<std::string> errors;
  std::vector<float> bias;
};

std::vector<float> Full(const Matrix& m, uint32_t seed, float scale) {
  return Random(static_cast<size_t>(m.rows * m.cols), seed, scale);
}

Result RunMesh(const std::vector<Matrix>& ms, const Options& o) {
  const int world = o.tp * o.dp;
  std::vector<normuon_comm_t> comms(world);
  EXPECT_EQ(normuon_comm_create_inprocess_group(world, 30.0, comms.data()), NORMUON_SUCCESS);
  Result res;
  res.errors.assign(world, "");
  for (const Matrix& m : ms) {
    res.param.push_back(std::vector<float>(m.rows * m.cols, 0.0f));
    res.momentum.push_back(std::vector<float>(m.rows * m.cols, 0.0f));
    const int64_t blocks = m.num_heads > 0 ? m.num_heads : std::max<int64_t>(1, m.splits.size());
    res.v.push_back(std::vector<float>(o.variant == NORMUON_VARIANT_ADAMUON ? m.rows * m.cols
                                       : o.axis == NORMUON_NEURON_COLUMNS   ? blocks * m.cols
                                                                            : m.rows,
                                       0.0f));
  }
  std::mutex mu;
  auto rank_main = [&](int rank) {
    auto fail = [&](const std::string& what) {
      std::lock_guard<std::mutex> lock(mu);
      res.errors[rank] = what;
    };
    normuon_config_t c;
    normuon_config_init(&c);
    c.ns_dtype = o.ns_dtype;
    c.ns_method = o.ns_method;
    c.schedule = o.schedule;
    c.bucket_bytes = 3000;
    c.neuron_axis = o.axis;
    c.variant = o.variant;
    c.weight_decay = 0.01f;
    c.check_finite = o.nonfinite_step >= 0 ? 1 : 0;
    normuon_runtime_t rt = 0;
    if (normuon_create(&c, comms[rank], &rt) != NORMUON_SUCCESS) {
      return fail(normuon_last_error(0));
    }
    std::vector<Rect> mine;
    std::vector<std::vector<float>> params(ms.size()), grads(ms.size());
    std::vector<int64_t> lds;
    for (size_t i = 0; i < ms.size(); ++i) {
      const Matrix& m = ms[i];
      const Rect r = world == 1 ? Rect{0, m.rows, 0, m.cols} : Layout(m, o)[rank];
      mine.push_back(r);
      const int64_t ld = r.col_count + o.ld_pad;
      lds.push_back(ld);
      params[i].assign(static_cast<size_t>(std::max<int64_t>(1, r.row_count * ld)), -7.0f);
      grads[i].assign(params[i].size(), 0.0f);
      const std::vector<float> init =
          o.init != nullptr ? o.init->param[i] : Full(m, 100 + static_cast<uint32_t>(i), 0.05f);
      for (int64_t a = 0; a < r.row_count; ++a)
        for (int64_t b = 0; b < r.col_count; ++b)
          params[i][a * ld + b] = init[(r.row_begin + a) * m.cols + r.col_begin + b];
      normuon_param_desc_t d;
      normuon_param_desc_init(&d);
      d.name = m.name.c_str();
      d.rows = m.rows;
      d.cols = m.cols;
      d.row_begin = r.row_begin;
      d.row_count = r.row_count;
      d.col_begin = r.col_begin;
      d.col_count = r.col_count;  // 0 for a rank with no piece: "every column", no rows
      d.ld = r.row_count > 0 ? ld : 0;
      d.param = params[i].data();
      d.grad = grads[i].data();
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
    // An AdamW bias, replicated over TP, FSDP2 over all ranks (rows only).
    std::vector<float> bias = o.init != nullptr ? o.init->bias : Random(10, 7, 0.1f);
    std::vector<float> bias_grad(10, 0.0f);
    const int64_t bchunk = (10 + world - 1) / world;
    const int64_t bb = std::min<int64_t>(10, rank * bchunk), bc = std::min<int64_t>(bchunk, 10 - bb);
    normuon_param_desc_t bd;
    normuon_param_desc_init(&bd);
    bd.name = "bias";
    bd.rows = 10;
    bd.cols = 1;
    bd.row_begin = bb;
    bd.row_count = bc;
    bd.param = bias.data() + bb;
    bd.grad = bias_grad.data() + bb;
    normuon_param_t bid;
    if (normuon_register_adamw(rt, &bd, &bid) != NORMUON_SUCCESS) {
      fail(normuon_last_error(rt));
      normuon_destroy(rt);
      return;
    }
    if (o.fault_rank == rank &&
        normuon_comm_inject_fault(comms[rank], NORMUON_FAULT_ERROR, o.fault_call) !=
            NORMUON_SUCCESS) {
      fail("inject_fault failed");
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
        const Matrix& m = ms[i];
        const Rect& r = mine[i];
        const std::vector<float> g = Full(m, 1000 + 97 * s + static_cast<uint32_t>(i), 1.0f);
        for (int64_t a = 0; a < r.row_count; ++a)
          for (int64_t b = 0; b < r.col_count; ++b)
            grads[i][a * lds[i] + b] = g[(r.row_begin + a) * m.cols + r.col_begin + b];
      }
      const bool nonfinite = s == o.nonfinite_step;
      if (nonfinite && mine[0].row_begin == 0 && mine[0].col_begin == 0 && mine[0].row_count > 0) {
        grads[0][0] = std::nanf("");
      }
      if (o.cancel_first && s == o.first_step) {
        const normuon_param_t ready[2] = {3, 2};
        if (normuon_grad_ready(rt, ready, 2, nullptr) != NORMUON_SUCCESS ||
            normuon_step_cancel(rt) != NORMUON_SUCCESS) {
          fail(std::string("grad_ready + step_cancel: ") + normuon_last_error(rt));
          break;
        }
      }
      const std::vector<float> bg = Random(10, 55 + s, 1.0f);
      std::copy(bg.begin(), bg.end(), bias_grad.begin());
      if (o.grad_ready) {
        for (int i = static_cast<int>(ms.size()) - 1; i >= 0; --i) {
          const normuon_param_t p = i;
          if (normuon_grad_ready(rt, &p, 1, nullptr) != NORMUON_SUCCESS) {
            fail(normuon_last_error(rt));
            break;
          }
        }
      }
      const normuon_status_t stepped = normuon_step(rt, 0.02f, -1.0f, nullptr);
      if (nonfinite) {  // skipped on every rank, nothing updated; the run goes on
        normuon_step_info_t info;
        normuon_step_info_init(&info);
        const std::string why = normuon_last_error(rt);
        if (stepped == NORMUON_SUCCESS ||
            normuon_step_result(rt, &info) != NORMUON_SUCCESS || info.last_skipped != 1) {
          fail("the step with a NaN gradient was not skipped: " + std::to_string(stepped) + " " +
               why + " / " + normuon_last_error(rt));
          break;
        }
      } else if (stepped != NORMUON_SUCCESS) {
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
        const Rect& r = mine[i];
        uint64_t mb = 0, vb = 0;
        normuon_state_size(rt, static_cast<int32_t>(i), NORMUON_STATE_MOMENTUM, &mb);
        normuon_state_size(rt, static_cast<int32_t>(i), NORMUON_STATE_SECOND_MOMENT, &vb);
        EXPECT_EQ(mb, static_cast<uint64_t>(r.row_count * r.col_count) * 4) << m.name;
        std::vector<float> mom(mb / 4 + 1), v(vb / 4 + 1);
        if (mb > 0) {
          EXPECT_EQ(normuon_get_state(rt, static_cast<int32_t>(i), NORMUON_STATE_MOMENTUM,
                                      mom.data(), mb),
                    NORMUON_SUCCESS);
        }
        if (vb > 0) {
          EXPECT_EQ(normuon_get_state(rt, static_cast<int32_t>(i), NORMUON_STATE_SECOND_MOMENT,
                                      v.data(), vb),
                    NORMUON_SUCCESS);
        }
        for (int64_t a = 0; a < r.row_count; ++a) {
          for (int64_t b = 0; b < r.col_count; ++b) {
            const size_t at = static_cast<size_t>((r.row_begin + a) * m.cols + r.col_begin + b);
            res.param[i][at] = params[i][a * lds[i] + b];
            res.momentum[i][at] = mom[a * r.col_count + b];
          }
          // Padding past the piece is never written.
          for (int64_t b = r.col_count; b < lds[i]; ++b) EXPECT_EQ(params[i][a * lds[i] + b], -7.0f);
        }
        if (o.variant == NORMUON_VARIANT_ADAMUON) {  // one v per element of the piece
          EXPECT_EQ(vb, mb) << m.name;
          for (int64_t a = 0; a < r.row_count; ++a)
            for (int64_t b = 0; b < r.col_count; ++b)
              res.v[i][(r.row_begin + a) * m.cols + r.col_begin + b] = v[a * r.col_count + b];
        } else if (o.axis == NORMUON_NEURON_COLUMNS) {
          if (vb > 0) std::copy(v.begin(), v.begin() + vb / 4, res.v[i].begin());
        } else {
          for (int64_t a = 0; a < static_cast<int64_t>(vb / 4); ++a) res.v[i][r.row_begin + a] = v[a];
        }
      }
      res.bias.resize(10);
      if (bc > 0) {
        std::copy(bias.begin() + bb, bias.begin() + bb + bc, res.bias.begin() + bb);
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
  EXPECT_TRUE(SameBits(one.bias, got.bias)) << what << ": bias";
}

std::string Name(const Options& o) {
  return "TP" + std::to_string(o.tp) + " x DP" + std::to_string(o.dp) + " schedule " +
         std::to_string(o.schedule) + (o.grad_ready ? " grad_ready" : "") +
         (o.ragged ? " ragged" : "") + (o.ld_pad ? " ld+pad" : "") +
         (o.axis == NORMUON_NEURON_COLUMNS ? " columns" : " rows") +
         (o.empty_rank ? " empty rank" : "") + " variant " + std::to_string(o.variant);
}

TEST(TwoDShards, MeshesMatchOneRankBitwiseForEverySchedule) {
  const std::vector<Matrix> ms = Block();
  Options one;
  const Result base = RunMesh(ms, one);
  const int meshes[5][2] = {{1, 4}, {2, 2}, {4, 1}, {2, 4}, {4, 2}};
  for (const auto& mesh : meshes) {
    for (normuon_schedule_t schedule : {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX,
                                        NORMUON_SCHEDULE_BUCKETED}) {
      Options o;
      o.tp = mesh[0];
      o.dp = mesh[1];
      o.schedule = schedule;
      o.grad_ready = schedule != NORMUON_SCHEDULE_SEQUENTIAL;
      ExpectBitwise(ms, base, RunMesh(ms, o), Name(o));
    }
  }
}

TEST(TwoDShards, RaggedSplitsStridedBuffersAndAnEmptyRankMatchOneRank) {
  const std::vector<Matrix> ms = Block();
  const Result base = RunMesh(ms, Options{});
  for (const auto& mesh : {std::pair{4, 2}, std::pair{3, 2}, std::pair{2, 3}}) {
    Options o;
    o.tp = mesh.first;
    o.dp = mesh.second;
    o.ragged = true;
    o.ld_pad = 3;
    o.empty_rank = true;
    o.schedule = NORMUON_SCHEDULE_BUCKETED;
    o.grad_ready = true;
    ExpectBitwise(ms, base, RunMesh(ms, o), Name(o));
  }
}

// Gram Newton-Schulz on column pieces: the owner runs the same iteration on the gathered matrix,
// so the Gram step is bitwise the single-rank Gram step (and not the standard one: the test
// would pass vacuously if ns_method were ignored).
TEST(TwoDShards, GramNewtonSchulzMeshesMatchOneRankGram) {
  const std::vector<Matrix> ms = Block();
  Options one;
  one.ns_method = NORMUON_NS_METHOD_GRAM;
  const Result base = RunMesh(ms, one);
  const Result standard = RunMesh(ms, Options{});
  ASSERT_EQ(standard.errors[0], "");
  EXPECT_FALSE(SameBits(base.param[2], standard.param[2])) << "mlp.up (24 x 16) ran Gram";
  for (const auto& mesh : {std::pair{2, 2}, std::pair{4, 2}}) {
    for (normuon_variant_t variant : {NORMUON_VARIANT_NORMUON, NORMUON_VARIANT_ADAMUON}) {
      Options o = one;
      o.tp = mesh.first;
      o.dp = mesh.second;
      o.ragged = mesh.first == 4;
      o.empty_rank = mesh.first == 4;
      o.schedule = NORMUON_SCHEDULE_BUCKETED;
      o.grad_ready = true;
      o.variant = variant;
      Options single = one;
      single.variant = variant;
      ExpectBitwise(ms, variant == NORMUON_VARIANT_NORMUON ? base : RunMesh(ms, single),
                    RunMesh(ms, o), Name(o) + " gram");
    }
  }
}

TEST(TwoDShards, NeuronAxisColumnsAndMuonMatchOneRank) {
  const std::vector<Matrix> ms = Block();
  for (normuon_neuron_axis_t axis : {NORMUON_NEURON_COLUMNS}) {
    Options one;
    one.axis = axis;
    const Result base = RunMesh(ms, one);
    for (const auto& mesh : {std::pair{2, 2}, std::pair{4, 2}}) {
      Options o = one;
      o.tp = mesh.first;
      o.dp = mesh.second;
      o.ragged = mesh.first == 4;
      o.schedule = NORMUON_SCHEDULE_PER_MATRIX;
      o.grad_ready = true;
      ExpectBitwise(ms, base, RunMesh(ms, o), Name(o));
    }
  }
  for (normuon_variant_t variant : {NORMUON_VARIANT_MUON, NORMUON_VARIANT_NORMUON_PAPER}) {
    Options one;
    one.variant = variant;
    const Result base = RunMesh(ms, one);
    Options o = one;
    o.tp = 2;
    o.dp = 2;
    ExpectBitwise(ms, base, RunMesh(ms, o), Name(o));
  }
}

// AdaMuon (one v per element) on column pieces: the owner gathers every piece's v with U and
// makes the row sums of the whole O' in one rank's order; each piece holder updates its own v.
// Every mesh and schedule (grad_ready with the overlapping ones) gives one rank's bits.
TEST(TwoDShards, AdaMuonMeshesMatchOneRankBitwiseForEverySchedule) {
  const std::vector<Matrix> ms = Block();
  Options one;
  one.variant = NORMUON_VARIANT_ADAMUON;
  const Result base = RunMesh(ms, one);
  // The run does something: v is not all zero and the parameters moved.
  EXPECT_FALSE(SameBits(base.v[3], std::vector<float>(base.v[3].size(), 0.0f)));
  // Every mesh, and every schedule on two of them (half the product: CI time, sanitizers).
  const struct {
    int tp, dp;
    normuon_schedule_t schedule;
  } cases[] = {{1, 4, NORMUON_SCHEDULE_SEQUENTIAL}, {2, 2, NORMUON_SCHEDULE_SEQUENTIAL},
               {2, 2, NORMUON_SCHEDULE_PER_MATRIX}, {4, 1, NORMUON_SCHEDULE_BUCKETED},
               {2, 4, NORMUON_SCHEDULE_PER_MATRIX}, {2, 4, NORMUON_SCHEDULE_BUCKETED}};
  for (const auto& c : cases) {
    Options o = one;
    o.tp = c.tp;
    o.dp = c.dp;
    o.schedule = c.schedule;
    o.grad_ready = c.schedule != NORMUON_SCHEDULE_SEQUENTIAL;
    ExpectBitwise(ms, base, RunMesh(ms, o), Name(o));
  }
}

// A skipped step (a NaN gradient) leaves v as it was while the owner's whole v has moved on:
// the next step must still start from the committed v of every piece.
TEST(TwoDShards, AdaMuonAfterASkippedStepMatchesOneRank) {
  const std::vector<Matrix> ms = Block();
  Options one;
  one.variant = NORMUON_VARIANT_ADAMUON;
  one.steps = 4;
  one.nonfinite_step = 1;
  const Result base = RunMesh(ms, one);
  Options o = one;
  o.tp = 2;
  o.dp = 2;
  o.schedule = NORMUON_SCHEDULE_PER_MATRIX;
  o.grad_ready = true;
  ExpectBitwise(ms, base, RunMesh(ms, o), Name(o) + " with a skipped step");
}

// A step begun by grad_ready and cancelled (its exchanges drained, the v messages included)
// leaves nothing behind: the run is one rank's.
TEST(TwoDShards, AdaMuonAfterACancelledStepMatchesOneRank) {
  const std::vector<Matrix> ms = Block();
  Options one;
  one.variant = NORMUON_VARIANT_ADAMUON;
  const Result base = RunMesh(ms, one);
  for (normuon_schedule_t schedule : {NORMUON_SCHEDULE_PER_MATRIX, NORMUON_SCHEDULE_BUCKETED}) {
    Options o = one;
    o.tp = 2;
    o.dp = 2;
    o.schedule = schedule;
    o.grad_ready = true;
    o.cancel_first = true;
    ExpectBitwise(ms, base, RunMesh(ms, o), Name(o) + " after a cancelled step");
  }
}

// bf16 Newton-Schulz: O travels and is read as bf16 on the owner and on every piece alike.
TEST(TwoDShards, AdaMuonWithBf16NewtonSchulzMatchesOneRank) {
  const std::vector<Matrix> ms = Block();
  Options one;
  one.variant = NORMUON_VARIANT_ADAMUON;
  one.ns_dtype = NORMUON_NS_BF16;
  const Result base = RunMesh(ms, one);
  Options o = one;
  o.tp = 4;
  o.dp = 2;
  o.ragged = true;
  o.schedule = NORMUON_SCHEDULE_BUCKETED;
  o.grad_ready = true;
  ExpectBitwise(ms, base, RunMesh(ms, o), Name(o) + " bf16");
}

TEST(TwoDShards, AdaMuonRaggedSplitsStridedBuffersAndAnEmptyRankMatchOneRank) {
  const std::vector<Matrix> ms = Block();
  Options one;
  one.variant = NORMUON_VARIANT_ADAMUON;
  const Result base = RunMesh(ms, one);
  for (const auto& mesh : {std::pair{4, 2}, std::pair{3, 2}, std::pair{2, 3}}) {
    Options o = one;
    o.tp = mesh.first;
    o.dp = mesh.second;
    o.ragged = true;
    o.ld_pad = 3;
    o.empty_rank = true;
    o.schedule = mesh.first == 3 ? NORMUON_SCHEDULE_PER_MATRIX : NORMUON_SCHEDULE_BUCKETED;
    o.grad_ready = true;
    ExpectBitwise(ms, base, RunMesh(ms, o), Name(o));
  }
}

// AdaMuon on a column-split layout with row splits against the float64 model, over two steps
// (the bias correction of v changes with t): each row block is its own matrix.
TEST(TwoDShards, AdaMuonColumnSplitMatchesTheFloat64Model) {
  const std::vector<Matrix> ms = {{"blocks", 24, 12, Tp::kRowParallel, {8, 16}}};
  Options o;
  o.tp = 2;
  o.dp = 2;
  o.steps = 2;
  o.variant = NORMUON_VARIANT_ADAMUON;
  const Result got = RunMesh(ms, o);
  for (const std::string& e : got.errors) ASSERT_EQ(e, "");
  const std::vector<float> init = Full(ms[0], 100, 0.05f);
  normuon::testing::RefHyper h;
  h.wd = 0.01;
  h.variant = normuon::testing::RefVariant::kAdaMuon;
  const int cols = 12;
  std::vector<double> ours, want;
  int first = 0;
  for (int rows : {8, 16}) {
    normuon::testing::RefMatrixState st;
    st.rows = rows;
    st.cols = cols;
    st.momentum.assign(rows * cols, 0.0);
    st.v.assign(rows * cols, 0.0);
    for (int i = 0; i < rows * cols; ++i) st.param.push_back(init[first * cols + i]);
    const std::vector<double> before = st.param;
    for (int s = 0; s < 2; ++s) {
      const std::vector<float> g = Full(ms[0], 1000 + 97 * s, 1.0f);
      normuon::testing::Mat gd(g.begin() + first * cols, g.begin() + (first + rows) * cols);
      normuon::testing::RefStep(st, &gd, h);
    }
    for (int i = 0; i < rows * cols; ++i) {
      want.push_back(st.param[i] - before[i]);
      ours.push_back(static_cast<double>(got.param[0][first * cols + i]) - before[i]);
    }
    first += rows;
  }
  // DESIGN section 6: fp32 CPU within 1e-5 of the update (plus the parameter's fp32 floor).
  double num = 0, den = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (ours[i] - want[i]) * (ours[i] - want[i]);
    den += want[i] * want[i];
    norm += static_cast<double>(got.param[0][i]) * got.param[0][i];
  }
  EXPECT_LE(std::sqrt(num), 1e-5 * std::sqrt(den) + 2.4e-7 * std::sqrt(norm));
  EXPECT_GT(den, 0.0);
}

// Per-head NorMuon on a column-split layout against the float64 model: each head (row block)
// is its own matrix.
TEST(TwoDShards, PerHeadColumnSplitMatchesTheFloat64Model) {
  // Heads split across TP ranks by columns (a row-parallel layer, per-head blocks).
  const std::vector<Matrix> ms = {{"heads", 24, 12, Tp::kRowParallel, {}, 3}};
  Options o;
  o.tp = 2;
  o.dp = 2;
  o.steps = 1;
  const Result got = RunMesh(ms, o);
  for (const std::string& e : got.errors) ASSERT_EQ(e, "");
  const std::vector<float> init = Full(ms[0], 100, 0.05f);
  const std::vector<float> g = Full(ms[0], 1000, 1.0f);
  normuon::testing::RefHyper h;
  h.wd = 0.01;
  const int head_rows = 8, cols = 12;
  std::vector<double> ours, want;
  for (int head = 0; head < 3; ++head) {
    normuon::testing::RefMatrixState st;
    st.rows = head_rows;
    st.cols = cols;
    st.momentum.assign(head_rows * cols, 0.0);
    st.v.assign(head_rows, 0.0);
    normuon::testing::Mat gd;
    for (int i = 0; i < head_rows * cols; ++i) {
      st.param.push_back(init[head * head_rows * cols + i]);
      gd.push_back(g[head * head_rows * cols + i]);
    }
    const std::vector<double> before = st.param;
    normuon::testing::RefStep(st, &gd, h);
    for (int i = 0; i < head_rows * cols; ++i) {
      want.push_back(st.param[i] - before[i]);
      ours.push_back(static_cast<double>(got.param[0][head * head_rows * cols + i]) - before[i]);
    }
  }
  // DESIGN section 6: fp32 CPU within 1e-5 of the update (plus the parameter's fp32 floor).
  double num = 0, den = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (ours[i] - want[i]) * (ours[i] - want[i]);
    den += want[i] * want[i];
    norm += static_cast<double>(got.param[0][i]) * got.param[0][i];
  }
  EXPECT_LE(std::sqrt(num), 1e-5 * std::sqrt(den) + 2.4e-7 * std::sqrt(norm));
  EXPECT_GT(den, 0.0);
}

// TP2 x DP2 saved after two steps, then loaded as DP4, TP4 and one rank: two more steps give the
// bits of four uninterrupted single-rank steps (state and parameters).
TEST(TwoDShards, CheckpointsReshardBetweenMeshesBitwise) {
  const std::vector<Matrix> ms = Block();
  const struct {
    normuon_neuron_axis_t axis;
    normuon_variant_t variant;
  } cases[] = {{NORMUON_NEURON_ROWS, NORMUON_VARIANT_NORMUON},
               {NORMUON_NEURON_COLUMNS, NORMUON_VARIANT_NORMUON},
               {NORMUON_NEURON_ROWS, NORMUON_VARIANT_ADAMUON}};
  for (const auto& c : cases) {
    const normuon_neuron_axis_t axis = c.axis;
    Options straight;
    straight.axis = axis;
    straight.variant = c.variant;
    straight.steps = 4;
    const Result want = RunMesh(ms, straight);
    const std::string dir = ::testing::TempDir() + "/two_d_ck_" + std::to_string(axis) + "_" +
                            std::to_string(c.variant);
    ASSERT_EQ(system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str()), 0);
    Options save = straight;
    save.tp = 2;
    save.dp = 2;
    save.steps = 2;
    save.save_dir = dir;
    const Result saved = RunMesh(ms, save);
    for (const std::string& e : saved.errors) ASSERT_EQ(e, "");
    for (const auto& mesh : {std::pair{1, 4}, std::pair{4, 1}, std::pair{1, 1}, std::pair{2, 2}}) {
      Options load = straight;
      load.tp = mesh.first;
      load.dp = mesh.second;
      load.steps = 2;
      load.first_step = 2;
      load.init = &saved;
      load.load_dir = dir;
      ExpectBitwise(ms, want, RunMesh(ms, load),
                    "checkpoint TP2 x DP2 -> " + Name(load));
    }
  }
}

// The v all-reduce at the start of a step is a collective like the others: when it fails, the
// step fails on every rank and changes nothing.
TEST(TwoDShards, AFailedVAllReduceFailsTheStepOnEveryRankAndChangesNothing) {
  const std::vector<Matrix> ms = Block();
  Options o;
  o.tp = 2;
  o.dp = 2;
  o.steps = 0;
  const Result untouched = RunMesh(ms, o);
  o.steps = 1;
  o.fault_rank = 3;
  o.fault_call = 2;  // #0 and #1 are finalize's all-gathers; #2 the step's v all-reduce
  const Result r = RunMesh(ms, o);
  for (int k = 0; k < 4; ++k) {
    EXPECT_NE(r.errors[k].find("step skipped"), std::string::npos) << "rank " << k << ": " << r.errors[k];
  }
  for (size_t i = 0; i < ms.size(); ++i) {
    EXPECT_TRUE(SameBits(r.param[i], untouched.param[i])) << ms[i].name;
    EXPECT_TRUE(SameBits(r.momentum[i], untouched.momentum[i])) << ms[i].name;
    EXPECT_TRUE(SameBits(r.v[i], untouched.v[i])) << ms[i].name;
  }
}

// AdaMuon: the v message of a column-split bucket is an exchange like the gather: when it fails
// on one rank, the step fails on every rank and changes nothing.
TEST(TwoDShards, AFailedVMessageFailsTheAdaMuonStepOnEveryRankAndChangesNothing) {
  const std::vector<Matrix> ms = Block();
  Options o;
  o.variant = NORMUON_VARIANT_ADAMUON;
  o.tp = 2;
  o.dp = 2;
  o.steps = 0;
  const Result untouched = RunMesh(ms, o);
  o.steps = 1;
  o.fault_rank = 1;
  o.fault_call = 3;  // #0, #1 finalize's all-gathers; one bucket: #2 its gather, #3 the v message
  const Result r = RunMesh(ms, o);
  for (int k = 0; k < 4; ++k) {
    EXPECT_NE(r.errors[k].find("step skipped"), std::string::npos) << "rank " << k << ": " << r.errors[k];
  }
  for (size_t i = 0; i < ms.size(); ++i) {
    EXPECT_TRUE(SameBits(r.param[i], untouched.param[i])) << ms[i].name;
    EXPECT_TRUE(SameBits(r.momentum[i], untouched.momentum[i])) << ms[i].name;
    EXPECT_TRUE(SameBits(r.v[i], untouched.v[i])) << ms[i].name;
  }
}

// One registration per rank, returning every rank's finalize message ("" on success).
std::vector<std::string> FinalizeWith(int64_t rows, int64_t cols, const std::vector<Rect>& pieces) {
  const int world = static_cast<int>(pieces.size());
  std::vector<normuon_comm_t> comms(world);
  EXPECT_EQ(normuon_comm_create_inprocess_group(world, 10.0, comms.data()), NORMUON_SUCCESS);
  std::vector<std::string> out(world);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      normuon_config_t c;
      normuon_config_init(&c);
      normuon_runtime_t rt = 0;
      ASSERT_EQ(normuon_create(&c, comms[rank], &rt), NORMUON_SUCCESS);
      const Rect& r = pieces[rank];
      std::vector<float> buf(static_cast<size_t>(std::max<int64_t>(1, r.row_count * r.col_count)));
      normuon_param_desc_t d;
      normuon_param_desc_init(&d);
      d.name = "w";
      d.rows = rows;
      d.cols = cols;
      d.row_begin = r.row_begin;
      d.row_count = r.row_count;
      d.col_begin = r.col_begin;
      d.col_count = r.col_count;
      d.param = buf.data();
      normuon_param_t id;
      ASSERT_EQ(normuon_register_matrix(rt, &d, &id), NORMUON_SUCCESS) << normuon_last_error(rt);
      out[rank] = normuon_finalize(rt) == NORMUON_SUCCESS ? "" : normuon_last_error(rt);
      normuon_destroy(rt);
    });
  }
  for (std::thread& t : threads) t.join();
  for (normuon_comm_t comm : comms) normuon_comm_destroy(comm);
  return out;
}

TEST(TwoDShards, FinalizeNamesOverlapsAndGapsOnEveryRank) {
  // Rank 2's columns [2, 4) overlap rank 0's [0, 3) (first at element (0, 2)) and rank 1's.
  const auto overlap = FinalizeWith(8, 6, {{0, 8, 0, 3}, {0, 8, 3, 3}, {0, 8, 2, 2}});
  for (const std::string& m : overlap) {
    EXPECT_NE(m.find("rank 0's piece rows [0, 8) x cols [0, 3) overlaps rank 2's piece rows "
                     "[0, 8) x cols [2, 4) (both hold element (0, 2))"),
              std::string::npos)
        << m;
    EXPECT_EQ(m, overlap[0]);
  }
  // Nobody holds row 5 of columns [3, 6).
  const auto gap = FinalizeWith(8, 6, {{0, 8, 0, 3}, {0, 5, 3, 3}, {6, 2, 3, 3}});
  for (const std::string& m : gap) {
    EXPECT_NE(m.find("element (5, 3)"), std::string::npos) << m;
    EXPECT_NE(m.find("held by no piece"), std::string::npos) << m;
  }
  // A valid TP2 x DP1 with a third rank holding no piece finalizes.
  for (const std::string& m : FinalizeWith(8, 6, {{0, 8, 0, 3}, {0, 0, 0, 0}, {0, 8, 3, 3}})) {
    EXPECT_EQ(m, "");
  }
}

normuon_status_t RegisterOne(const normuon_param_desc_t& d, bool adamw, std::string* error) {
  normuon_config_t c;
  normuon_config_init(&c);
  normuon_runtime_t rt = 0;
  EXPECT_EQ(normuon_create(&c, 0, &rt), NORMUON_SUCCESS);
  normuon_param_t id;
  const normuon_status_t s =
      adamw ? normuon_register_adamw(rt, &d, &id) : normuon_register_matrix(rt, &d, &id);
  *error = normuon_last_error(rt);
  normuon_destroy(rt);
  return s;
}

TEST(TwoDShards, DescriptorChecksNameTheField) {
  std::vector<float> buf(64);
  normuon_param_desc_t base;
  normuon_param_desc_init(&base);
  base.name = "w";
  base.rows = 8;
  base.cols = 8;
  base.row_count = 8;
  base.param = buf.data();
  struct Case {
    const char* field;
    void (*set)(normuon_param_desc_t*);
    bool adamw;
  };
  const Case cases[] = {
      {"desc.col_begin", [](normuon_param_desc_t* d) { d->col_begin = -1; d->col_count = 2; }, false},
      {"desc.col_begin", [](normuon_param_desc_t* d) { d->col_begin = 9; d->col_count = 1; }, false},
      {"desc.col_count", [](normuon_param_desc_t* d) { d->col_count = -3; }, false},
      {"desc.col_count", [](normuon_param_desc_t* d) { d->col_begin = 4; d->col_count = INT64_MAX; }, false},
      {"desc.col_begin", [](normuon_param_desc_t* d) { d->col_begin = 2; }, false},
      {"desc.ld", [](normuon_param_desc_t* d) { d->col_count = 4; d->ld = 3; }, false},
      {"desc.ld", [](normuon_param_desc_t* d) { d->ld = -1; }, false},
      {"desc.ld", [](normuon_param_desc_t* d) { d->ld = INT64_MAX; }, false},
      {"desc.num_heads", [](normuon_param_desc_t* d) { d->num_heads = 3; }, false},
      {"desc.num_heads", [](normuon_param_desc_t* d) { d->num_heads = -2; }, false},
      {"desc.col_count", [](normuon_param_desc_t* d) { d->col_count = 4; }, true},
      {"desc.num_heads", [](normuon_param_desc_t* d) { d->num_heads = 2; }, true},
  };
  for (const Case& c : cases) {
    normuon_param_desc_t d = base;
    c.set(&d);
    std::string error;
    EXPECT_EQ(RegisterOne(d, c.adamw, &error), NORMUON_ERROR_INVALID_ARGUMENT) << c.field;
    EXPECT_NE(error.find(c.field), std::string::npos) << c.field << ": " << error;
  }
  // num_heads and row_splits together.
  const int64_t splits[2] = {4, 4};
  normuon_param_desc_t d = base;
  d.row_splits = splits;
  d.num_row_splits = 2;
  d.num_heads = 2;
  std::string error;
  EXPECT_EQ(RegisterOne(d, false, &error), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(error.find("desc.num_heads"), std::string::npos) << error;
  // num_heads = 4 on 8 rows is two-row blocks: the state size of v is still per row.
  normuon_config_t c;
  normuon_config_init(&c);
  d = base;
  d.num_heads = 4;
  uint64_t bytes = 0;
  ASSERT_EQ(normuon_param_state_size(&c, &d, 1, NORMUON_STATE_SECOND_MOMENT, &bytes),
            NORMUON_SUCCESS);
  EXPECT_EQ(bytes, 8u * 4);
  // A column piece's momentum is its rectangle.
  d = base;
  d.col_begin = 2;
  d.col_count = 5;
  d.ld = 8;
  ASSERT_EQ(normuon_param_state_size(&c, &d, 1, NORMUON_STATE_MOMENTUM, &bytes), NORMUON_SUCCESS);
  EXPECT_EQ(bytes, 8u * 5 * 4);
}

// num_heads is exactly the shorthand for equal row_splits: the same bits.
TEST(TwoDShards, NumHeadsEqualsEqualRowSplits) {
  std::vector<Matrix> heads = {{"qkv", 32, 16, Tp::kColumnParallel, {}, 8}};
  std::vector<Matrix> splits = {{"qkv", 32, 16, Tp::kColumnParallel, {4, 4, 4, 4, 4, 4, 4, 4}, 0}};
  Options o;
  o.tp = 2;
  o.dp = 2;
  const Result a = RunMesh(heads, o), b = RunMesh(splits, o);
  for (const std::string& e : a.errors) ASSERT_EQ(e, "");
  EXPECT_TRUE(SameBits(a.param[0], b.param[0]));
  EXPECT_TRUE(SameBits(a.v[0], b.v[0]));
  // And per-head differs from one block (the option does something).
  std::vector<Matrix> whole = {{"qkv", 32, 16, Tp::kColumnParallel}};
  EXPECT_FALSE(SameBits(a.param[0], RunMesh(whole, o).param[0]));
}

}  // namespace
