// Two-dimensional pieces on the CUDA backend (issue 15; docs/ARCHITECTURE.md section 2,
// "Two-dimensional pieces"): tensor parallel x FSDP meshes through the public C API, every rank a
// thread on CUDA device 0 with its own non-blocking stream and cudaMalloc'd parameter and
// gradient rectangles (row stride ld, longer than the piece: the padding is filled with a marker
// that must survive), joined by a device-memory in-process group.
//
// The model has four matrices of distinct shapes (so no Newton-Schulz batch holds two matrices
// at any world size: the owners' cuBLAS calls are the single rank's): two column-parallel (TP
// splits rows) and two row-parallel (TP splits columns, rows split across column pieces; one
// with row splits of its own), plus an AdamW bias. What it checks, in bf16 and fp32
// Newton-Schulz, over three steps:
//  - world 1: strided parameters (ld > cols) and graph mode (config.cuda_graph) with them give
//    the bits of the packed eager run;
//  - TP2 x DP2, TP4 x DP1 with a ragged cut and an empty piece, and TP2 x DP2 with the per-matrix
//    schedule and grad_ready (two streams): parameters, momentum, v and the AdamW bias bitwise
//    equal to the row-only layout at the same world size (DP4; the same owners and batches),
//    which is what the CPU backend guarantees for every layout;
//  - against the single-rank CUDA run: bitwise in bf16 (the row-only layout is bitwise there:
//    bench/RESULTS.md), and in fp32 wherever this run's row-only layout is (printed either way);
//  - Muon and neuron axis = columns with column pieces (fp32): bitwise the row-only layout;
//  - config.check_finite with a strided gradient: a NaN in the padding past a piece is not read
//    (the step is taken); a NaN inside a piece skips the step on every rank and writes nothing;
//  - checkpoints: TP2 x DP2 saved (the column-split state gathered to one rank through the device
//    communicator), loaded as TP2 x DP2 and DP4, continue bitwise;
//  - several pieces per rank (desc.pieces: the non-interleaved GQA QKV, three row ranges per TP
//    rank, and two row ranges of a column half of "out"), TP2 x DP2, with grad_ready on the
//    two-stream schedule: bitwise the row-only layout and (bf16) the single rank; at world 1 in
//    graph mode with normuon_bind_piece between steps; their checkpoints reshard bitwise;
//  - AdaMuon with column pieces (ElementSecondMoment on each piece, the owner's RowStats in
//    place over the whole v), one and several pieces per rank: bitwise as above.
// Without a CUDA device, and in the CPU-only build, the GPU cases skip (saying so); the layout's
// own check (the rectangles tile every matrix) runs everywhere.
#include <gtest/gtest.h>

#ifdef NORMUON_WITH_CUDA
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "normuon/comm.h"
#include "normuon/normuon.h"

namespace {

struct Rect {
  int64_t row_begin = 0, row_count = 0, col_begin = 0, col_count = 0;
};

struct Matrix {
  const char* name;
  int64_t rows, cols;
  bool tp_splits_columns;        // row-parallel (TP cuts columns) or column-parallel (rows)
  std::vector<int64_t> splits;   // row_splits (empty: one block)
};

// Distinct shapes, also of the row blocks of "down" (10 x 24 and 6 x 24).
const std::vector<Matrix>& Model() {
  static const auto* m = new std::vector<Matrix>{
      {"qkv", 32, 16, false, {}},
      {"out", 16, 16, true, {}},
      {"up", 24, 16, false, {}},
      {"down", 16, 24, true, {10, 6}},
  };
  return *m;
}
constexpr int kOut = 1;  // index of "out"
constexpr int64_t kBiasRows = 10;

// TP cuts of n over tp ranks: TP rank a holds [cuts[a], cuts[a + 1]). Ragged: a first piece
// 3 wide and an empty second one (tp > 2), then even cuts.
std::vector<int64_t> TpCuts(int64_t n, int tp, bool ragged) {
  std::vector<int64_t> cuts = {0};
  for (int a = 1; a < tp; ++a) {
    int64_t c = n * a / tp;
    if (ragged && a <= 2) c = std::min<int64_t>(n, 3);
    cuts.push_back(std::max(c, cuts.back()));
  }
  cuts.push_back(n);
  return cuts;
}

// Rank r = a * dp + d holds FSDP2 chunk d (of the rows) of TP piece a; an empty rectangle is
// all zeros.
std::vector<Rect> MeshLayout(const Matrix& m, int tp, int dp, bool ragged) {
  std::vector<Rect> out(static_cast<size_t>(tp * dp));
  const std::vector<int64_t> cuts = TpCuts(m.tp_splits_columns ? m.cols : m.rows, tp, ragged);
  for (int a = 0; a < tp; ++a) {
    const int64_t width = cuts[a + 1] - cuts[a];
    const Rect piece = m.tp_splits_columns ? Rect{0, m.rows, cuts[a], width}
                                           : Rect{cuts[a], width, 0, m.cols};
    const int64_t chunk = (piece.row_count + dp - 1) / dp;
    for (int d = 0; d < dp; ++d) {
      Rect r = piece;
      const int64_t begin = std::min(piece.row_count, d * chunk);
      r.row_begin = piece.row_begin + begin;
      r.row_count = std::min(chunk, piece.row_count - begin);
      if (r.row_count == 0 || r.col_count == 0) r = Rect{};
      out[static_cast<size_t>(a * dp + d)] = r;
    }
  }
  return out;
}

// Needs no device: the meshes the GPU cases use tile every matrix exactly (each element once),
// and the ragged one has a rank without a piece.
TEST(TwoDShardsCudaLayoutTest, MeshesTileEveryMatrixExactly) {
  const int meshes[3][3] = {{2, 2, 0}, {4, 1, 1}, {1, 4, 0}};
  for (const auto& mesh : meshes) {
    bool some_rank_empty = false;
    for (const Matrix& m : Model()) {
      std::vector<int> hits(static_cast<size_t>(m.rows * m.cols), 0);
      for (const Rect& r : MeshLayout(m, mesh[0], mesh[1], mesh[2] != 0)) {
        some_rank_empty = some_rank_empty || r.row_count == 0;
        for (int64_t i = 0; i < r.row_count; ++i) {
          for (int64_t j = 0; j < r.col_count; ++j) {
            ++hits[static_cast<size_t>((r.row_begin + i) * m.cols + r.col_begin + j)];
          }
        }
      }
      EXPECT_EQ(std::count(hits.begin(), hits.end(), 1), m.rows * m.cols)
          << "TP" << mesh[0] << " x DP" << mesh[1] << ": " << m.name;
    }
    if (mesh[2] != 0) {
      EXPECT_TRUE(some_rank_empty) << "the ragged mesh has an empty piece";
    }
  }
}

#ifndef NORMUON_WITH_CUDA

TEST(TwoDShardsCudaTest, NeedsTheCudaBuild) {
  GTEST_SKIP() << "the CPU-only build (--define=cuda=off) has no CUDA backend: the column-piece "
                  "GPU checks did not run";
}

#else  // NORMUON_WITH_CUDA

constexpr float kPad = -7.0f;  // the padding past each piece's columns

// splitmix64, for values that are pure functions of their coordinates.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [-1, 1) from (param, step, global row, col); step -1 is the initial parameter.
float Value(size_t param, int step, int64_t row, int64_t col) {
  uint64_t h = Mix(static_cast<uint64_t>(param) * 1000003ull + 29);
  h = Mix(h ^ static_cast<uint64_t>(step + 1));
  h = Mix(h ^ static_cast<uint64_t>(row) * 65599ull);
  h = Mix(h ^ static_cast<uint64_t>(col));
  return static_cast<float>(h >> 40) * (2.0f / 16777216.0f) - 1.0f;
}
// Rows of different scale, so v differs per row.
float Grad(size_t param, int step, int64_t row, int64_t col) {
  return Value(param, step, row, col) * (0.5f + 0.25f * static_cast<float>(row % 5));
}
float Init(size_t param, int64_t row, int64_t col) { return 0.05f * Value(param, -1, row, col); }

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

struct Result {
  std::vector<std::vector<float>> param, momentum, v;  // whole matrices; v per row or column
  std::vector<float> bias;
  std::vector<std::vector<normuon_step_info_t>> info;  // [rank][step]
  std::vector<std::string> errors;                     // per rank: "" or the first failure
};

struct Options {
  int tp = 1, dp = 1;
  bool ragged = false;
  int64_t ld_pad = 0;  // param/grad rows this much longer than the piece
  normuon_ns_dtype_t ns_dtype = NORMUON_NS_BF16;
  normuon_variant_t variant = NORMUON_VARIANT_NORMUON;
  normuon_neuron_axis_t axis = NORMUON_NEURON_ROWS;
  normuon_schedule_t schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  bool grad_ready = false;
  bool cuda_graph = false;
  int steps = 3;
  int check_finite = 0;
  // At step nan_step, rank nan_rank writes a NaN into its gradient of nan_param: into the first
  // padding element (nan_in_padding) or the first element of its piece.
  int nan_rank = -1, nan_step = -1, nan_param = -1;
  bool nan_in_padding = false;
  // Checkpoints: the steps use the gradients of steps first_step..; parameters start from
  // `init` (a Result's whole matrices) when given; load_dir is loaded after finalize, save_dir
  // saved after the last step.
  int first_step = 0;
  const Result* init = nullptr;
  std::string load_dir, save_dir;
  // Several pieces per rank (PiecesOf), registered through desc.pieces; rebind_pieces: before
  // the second step, every piece moves to new buffers through normuon_bind_piece.
  bool multi_piece = false;
  bool rebind_pieces = false;
};

std::string Describe(const Options& o) {
  std::string s = "TP" + std::to_string(o.tp) + " x DP" + std::to_string(o.dp);
  s += o.ns_dtype == NORMUON_NS_BF16 ? " bf16" : " fp32";
  if (o.ragged) s += " ragged";
  if (o.ld_pad > 0) s += " ld+" + std::to_string(o.ld_pad);
  if (o.variant == NORMUON_VARIANT_MUON) s += " muon";
  if (o.axis == NORMUON_NEURON_COLUMNS) s += " neuron-axis-columns";
  if (o.schedule == NORMUON_SCHEDULE_PER_MATRIX) s += " per-matrix";
  if (o.grad_ready) s += " grad_ready";
  if (o.cuda_graph) s += " cuda_graph";
  if (o.variant == NORMUON_VARIANT_ADAMUON) s += " adamuon";
  if (o.multi_piece) s += " multi-piece";
  if (o.rebind_pieces) s += " bind_piece";
  return s;
}


// This rank's rectangles of matrix i. One piece each (the mesh, or the whole matrix at world 1)
// unless o.multi_piece: then, through desc.pieces, "qkv" is a GQA QKV that is not interleaved
// (q rows 0..15, k 16..23, v 24..31; TP rank t holds its share of each, split again over the DP
// ranks: three row ranges per rank, as tests/normuon/multi_piece_test.cc's GqaPieces) and "out"
// (TP cuts columns in halves) has two row ranges per DP rank (quarters d and d + dp); at world 1,
// "out" is its two column halves. "up" and "down" keep their one mesh rectangle.
std::vector<Rect> PiecesOf(const Options& o, size_t i, int rank) {
  const Matrix& m = Model()[i];
  const int world = o.tp * o.dp;
  if (!o.multi_piece || i >= 2) {
    if (world == 1) return {Rect{0, m.rows, 0, m.cols}};
    return {MeshLayout(m, o.tp, o.dp, o.ragged)[rank]};
  }
  const int t = rank / o.dp, d = rank % o.dp;
  if (i == 0) {  // q 16 rows, k 8, v 8
    std::vector<Rect> out;
    for (const auto& [begin, count] : {std::pair<int64_t, int64_t>{0, 16}, {16, 8}, {24, 8}}) {
      const int64_t share = count / (o.tp * o.dp);
      out.push_back(Rect{begin + (t * o.dp + d) * share, share, 0, m.cols});
    }
    return out;
  }
  if (world == 1) return {Rect{0, m.rows, 0, m.cols / 2}, Rect{0, m.rows, m.cols / 2, m.cols / 2}};
  const int64_t width = m.cols / o.tp, quarter = m.rows / (2 * o.dp);
  return {Rect{d * quarter, quarter, t * width, width},
          Rect{(d + o.dp) * quarter, quarter, t * width, width}};
}

Result RunMesh(const Options& o) {
  const std::vector<Matrix>& ms = Model();
  const int world = o.tp * o.dp;
  const bool per_element = o.variant == NORMUON_VARIANT_ADAMUON;
  Result res;
  res.errors.assign(world, "");
  res.info.assign(world, std::vector<normuon_step_info_t>(o.steps));
  res.bias.assign(kBiasRows, 0.0f);
  for (const Matrix& m : ms) {
    res.param.emplace_back(static_cast<size_t>(m.rows * m.cols), 0.0f);
    res.momentum.emplace_back(static_cast<size_t>(m.rows * m.cols), 0.0f);
    const int64_t blocks = std::max<int64_t>(1, static_cast<int64_t>(m.splits.size()));
    const int64_t v_len = o.axis == NORMUON_NEURON_COLUMNS ? blocks * m.cols
                          : per_element                     ? m.rows * m.cols
                                                            : m.rows;
    res.v.emplace_back(static_cast<size_t>(v_len), 0.0f);
  }
  std::vector<normuon_comm_t> comms(world, 0);
  if (world > 1 && normuon_comm_create_inprocess_group_ex(world, 60.0, NORMUON_COMM_MEMORY_DEVICE,
                                                          comms.data()) != NORMUON_SUCCESS) {
    res.errors[0] = std::string("device group: ") + normuon_comm_last_error(0);
    return res;
  }
  std::mutex mu;
  std::vector<std::vector<char>> v_seen;  // per row v written by some rank (under mu)
  for (const std::vector<float>& v : res.v) v_seen.emplace_back(v.size(), 0);
  auto rank_main = [&](int rank) {
    auto fail = [&](const std::string& what) {
      if (comms[rank] != 0) normuon_comm_abort(comms[rank]);  // the others fail fast
      std::lock_guard<std::mutex> lock(mu);
      if (res.errors[rank].empty()) res.errors[rank] = what;
    };
    auto cuda_ok = [&](cudaError_t e, const char* what) {
      if (e == cudaSuccess) return true;
      fail(std::string(what) + ": " + cudaGetErrorString(e));
      return false;
    };
    cudaStream_t stream = nullptr;
    if (!cuda_ok(cudaSetDevice(0), "cudaSetDevice") ||
        !cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream")) {
      return;
    }
    std::vector<void*> device;  // freed at the end, after the runtime
    auto alloc = [&](size_t bytes) -> float* {
      void* p = nullptr;
      if (bytes == 0 || !cuda_ok(cudaMalloc(&p, bytes), "cudaMalloc")) return nullptr;
      device.push_back(p);
      return static_cast<float*>(p);
    };
    normuon_runtime_t rt = 0;
    auto finish = [&]() {
      if (rt != 0) normuon_destroy(rt);
      for (void* p : device) cudaFree(p);
      cudaStreamDestroy(stream);
    };

    // This rank's rectangles; host images of param and grad per piece (row stride ld, padding
    // kPad).
    const size_t n = ms.size();
    std::vector<std::vector<Rect>> mine(n);
    std::vector<std::vector<int64_t>> ld(n);
    std::vector<std::vector<std::vector<float>>> host_param(n), host_grad(n);
    std::vector<std::vector<float*>> param(n), grad(n);
    for (size_t i = 0; i < n; ++i) {
      mine[i] = PiecesOf(o, i, rank);
      const size_t np = mine[i].size();
      ld[i].assign(np, 0);
      host_param[i].assign(np, {});
      host_grad[i].assign(np, {});
      param[i].assign(np, nullptr);
      grad[i].assign(np, nullptr);
      for (size_t q = 0; q < np; ++q) {
        const Rect& r = mine[i][q];
        ld[i][q] = r.col_count + o.ld_pad;
        const size_t elems = static_cast<size_t>(r.row_count * ld[i][q]);
        host_param[i][q].assign(elems, kPad);
        host_grad[i][q].assign(elems, kPad);
        for (int64_t a = 0; a < r.row_count; ++a) {
          for (int64_t b = 0; b < r.col_count; ++b) {
            const int64_t row = r.row_begin + a, col = r.col_begin + b;
            host_param[i][q][a * ld[i][q] + b] =
                o.init != nullptr ? o.init->param[i][row * ms[i].cols + col] : Init(i, row, col);
          }
        }
        if (elems == 0) continue;
        param[i][q] = alloc(elems * 4);
        grad[i][q] = alloc(elems * 4);
        if (param[i][q] == nullptr || grad[i][q] == nullptr ||
            !cuda_ok(cudaMemcpy(param[i][q], host_param[i][q].data(), elems * 4,
                                cudaMemcpyHostToDevice),
                     "upload")) {
          return finish();
        }
      }
    }
    // The AdamW bias: FSDP2 rows over all ranks.
    const int64_t bchunk = (kBiasRows + world - 1) / world;
    const int64_t bb = std::min<int64_t>(kBiasRows, rank * bchunk);
    const int64_t bc = std::min<int64_t>(bchunk, kBiasRows - bb);
    std::vector<float> host_bias(static_cast<size_t>(bc)), host_bias_grad(static_cast<size_t>(bc));
    for (int64_t a = 0; a < bc; ++a) {
      host_bias[a] = o.init != nullptr ? o.init->bias[bb + a] : Init(n, bb + a, 0);
    }
    float* bias = alloc(static_cast<size_t>(bc) * 4);
    float* bias_grad = alloc(static_cast<size_t>(bc) * 4);
    if (bc > 0 && (bias == nullptr || bias_grad == nullptr ||
                   !cuda_ok(cudaMemcpy(bias, host_bias.data(), bc * 4, cudaMemcpyHostToDevice),
                            "upload"))) {
      return finish();
    }

    normuon_config_t c;
    normuon_config_init(&c);
    c.backend = NORMUON_BACKEND_CUDA;
    c.device = 0;
    c.ns_dtype = o.ns_dtype;
    c.variant = o.variant;
    c.neuron_axis = o.axis;
    c.schedule = o.schedule;
    c.bucket_bytes = 3000;  // several buckets under the pipelined schedules
    c.check_finite = o.check_finite;
    c.cuda_graph = o.cuda_graph ? 1 : 0;
    c.weight_decay = 0.01f;
    if (normuon_create(&c, comms[rank], &rt) != NORMUON_SUCCESS) {
      fail(std::string("normuon_create: ") + normuon_last_error(0));
      return finish();
    }
    for (size_t i = 0; i < n; ++i) {
      const Matrix& m = ms[i];
      normuon_param_desc_t d;
      normuon_param_desc_init(&d);
      d.name = m.name;
      d.rows = m.rows;
      d.cols = m.cols;
      d.row_splits = m.splits.empty() ? nullptr : m.splits.data();
      d.num_row_splits = static_cast<int32_t>(m.splits.size());
      // A piece of every column is passed as whole rows (col_count 0), so the DP-only mesh is
      // the row-only layout; so is a rank without a piece (no rows).
      std::vector<normuon_piece_t> pieces;
      for (size_t q = 0; q < mine[i].size(); ++q) {
        const Rect& r = mine[i][q];
        const bool whole_rows = r.col_count == m.cols || r.row_count == 0;
        normuon_piece_t p{};
        p.row_begin = r.row_begin;
        p.row_count = r.row_count;
        p.col_begin = whole_rows ? 0 : r.col_begin;
        p.col_count = whole_rows ? 0 : r.col_count;
        p.ld = r.row_count > 0 ? ld[i][q] : 0;
        p.param = param[i][q];
        p.grad = grad[i][q];
        pieces.push_back(p);
      }
      if (o.multi_piece) {
        d.pieces = pieces.data();
        d.num_pieces = static_cast<int32_t>(pieces.size());
      } else {
        d.row_begin = pieces[0].row_begin;
        d.row_count = pieces[0].row_count;
        d.col_begin = pieces[0].col_begin;
        d.col_count = pieces[0].col_count;
        d.ld = pieces[0].ld;
        d.param = pieces[0].param;
        d.grad = pieces[0].grad;
      }
      normuon_param_t id = -1;
      if (normuon_register_matrix(rt, &d, &id) != NORMUON_SUCCESS) {
        fail(std::string("register ") + m.name + ": " + normuon_last_error(rt));
        return finish();
      }
    }
    normuon_param_desc_t bd;
    normuon_param_desc_init(&bd);
    bd.name = "bias";
    bd.rows = kBiasRows;
    bd.cols = 1;
    bd.row_begin = bb;
    bd.row_count = bc;
    bd.param = bias;
    bd.grad = bias_grad;
    normuon_param_t bias_id = -1;
    if (normuon_register_adamw(rt, &bd, &bias_id) != NORMUON_SUCCESS) {
      fail(std::string("register bias: ") + normuon_last_error(rt));
      return finish();
    }
    if (normuon_finalize(rt) != NORMUON_SUCCESS) {
      fail(std::string("finalize: ") + normuon_last_error(rt));
      return finish();
    }
    if (!o.load_dir.empty() && normuon_load_checkpoint(rt, o.load_dir.c_str()) != NORMUON_SUCCESS) {
      fail(std::string("load_checkpoint: ") + normuon_last_error(rt));
      return finish();
    }

    std::vector<std::pair<float*, size_t>> old_buffers;  // rebound away from (rebind_pieces)
    for (int k = 0; k < o.steps; ++k) {
      const int s = o.first_step + k;  // the step whose gradients are used
      if (o.rebind_pieces && k == 1) {
        // normuon_bind_piece between steps: every piece moves to new device buffers (the
        // parameter copied on the step's stream, after the last step's commit); graph mode
        // captures again. A host pointer is refused first, naming the piece.
        for (size_t i = 0; i < n && o.multi_piece; ++i) {
          for (size_t q = 0; q < mine[i].size(); ++q) {
            if (param[i][q] == nullptr) continue;
            const normuon_param_t p = static_cast<normuon_param_t>(i);
            const int32_t piece = static_cast<int32_t>(q);
            if (normuon_bind_piece(rt, p, piece, host_param[i][q].data(), grad[i][q]) !=
                NORMUON_ERROR_INVALID_ARGUMENT) {
              fail(std::string(ms[i].name) + ": bind_piece took a host pointer");
              return finish();
            }
            const size_t bytes = host_param[i][q].size() * 4;
            float* np = alloc(bytes);
            float* ng = alloc(bytes);
            if (np == nullptr || ng == nullptr ||
                !cuda_ok(cudaMemcpyAsync(np, param[i][q], bytes, cudaMemcpyDeviceToDevice, stream),
                         "rebind copy")) {
              return finish();
            }
            if (normuon_bind_piece(rt, p, piece, np, ng) != NORMUON_SUCCESS) {
              fail(std::string("bind_piece: ") + normuon_last_error(rt));
              return finish();
            }
            // The old buffer is zeroed: no later step may write it (checked at the end).
            if (!cuda_ok(cudaMemsetAsync(param[i][q], 0, bytes, stream), "clear old buffer")) {
              return finish();
            }
            old_buffers.push_back({param[i][q], bytes});
            param[i][q] = np;
            grad[i][q] = ng;
          }
        }
      }
      for (size_t i = 0; i < n; ++i) {
        for (size_t q = 0; q < mine[i].size(); ++q) {
          const Rect& r = mine[i][q];
          std::vector<float>& hg = host_grad[i][q];
          if (r.row_count == 0) continue;
          for (int64_t a = 0; a < r.row_count; ++a) {
            for (int64_t b = 0; b < r.col_count; ++b) {
              hg[a * ld[i][q] + b] = Grad(i, s, r.row_begin + a, r.col_begin + b);
            }
          }
          const bool nan_here = rank == o.nan_rank && s == o.nan_step &&
                                static_cast<int>(i) == o.nan_param && q == 0;
          if (nan_here) {
            hg[o.nan_in_padding ? r.col_count : 0] = std::numeric_limits<float>::quiet_NaN();
          }
          // Queued on the step's stream, as a backward pass writes its gradients; the pageable
          // source is staged before the call returns.
          if (!cuda_ok(cudaMemcpyAsync(grad[i][q], hg.data(), hg.size() * 4,
                                       cudaMemcpyHostToDevice, stream),
                       "gradient upload")) {
            return finish();
          }
          // The padding goes back to the marker for the next step.
          if (nan_here && o.nan_in_padding) hg[r.col_count] = kPad;
        }
      }
      for (int64_t a = 0; a < bc; ++a) host_bias_grad[a] = Grad(n, s, bb + a, 0);
      if (bc > 0 && !cuda_ok(cudaMemcpyAsync(bias_grad, host_bias_grad.data(), bc * 4,
                                             cudaMemcpyHostToDevice, stream),
                             "bias gradient upload")) {
        return finish();
      }
      if (o.grad_ready) {
        for (int i = static_cast<int>(n) - 1; i >= 0; --i) {
          const normuon_param_t p = i;
          if (normuon_grad_ready(rt, &p, 1, stream) != NORMUON_SUCCESS) {
            fail(std::string("grad_ready: ") + normuon_last_error(rt));
            return finish();
          }
        }
      }
      if (normuon_step(rt, 0.02f, -1.0f, stream) != NORMUON_SUCCESS) {
        fail(std::string("step ") + std::to_string(s) + ": " + normuon_last_error(rt));
        return finish();
      }
      if (normuon_step_result(rt, &res.info[rank][k]) != NORMUON_SUCCESS) {
        fail(std::string("step_result: ") + normuon_last_error(rt));
        return finish();
      }
    }
    if (!cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize")) return finish();
    for (const auto& [old, bytes] : old_buffers) {
      std::vector<float> h(bytes / 4, 1.0f);
      if (!cuda_ok(cudaMemcpy(h.data(), old, bytes, cudaMemcpyDeviceToHost), "download")) {
        return finish();
      }
      if (std::any_of(h.begin(), h.end(), [](float x) { return x != 0.0f; })) {
        fail("a step wrote a piece's buffer after normuon_bind_piece moved it");
        return finish();
      }
    }
    if (!o.save_dir.empty() && normuon_save_checkpoint(rt, o.save_dir.c_str()) != NORMUON_SUCCESS) {
      fail(std::string("save_checkpoint: ") + normuon_last_error(rt));
      return finish();
    }

    // Read back: parameters (the padding must still be the marker), momentum and v (this
    // rank's pieces' states concatenated in piece order).
    std::vector<std::vector<float>> mom(n), v(n);
    for (size_t i = 0; i < n; ++i) {
      int64_t elems = 0;
      for (size_t q = 0; q < mine[i].size(); ++q) {
        const Rect& r = mine[i][q];
        elems += r.row_count * r.col_count;
        if (r.row_count > 0 &&
            !cuda_ok(cudaMemcpy(host_param[i][q].data(), param[i][q],
                                host_param[i][q].size() * 4, cudaMemcpyDeviceToHost),
                     "download")) {
          return finish();
        }
      }
      for (auto [kind, dst] : {std::make_pair(NORMUON_STATE_MOMENTUM, &mom[i]),
                               std::make_pair(NORMUON_STATE_SECOND_MOMENT, &v[i])}) {
        uint64_t bytes = 0;
        if (normuon_state_size(rt, static_cast<int32_t>(i), kind, &bytes) != NORMUON_SUCCESS) {
          fail(std::string("state_size: ") + normuon_last_error(rt));
          return finish();
        }
        dst->resize(bytes / 4);
        if (bytes > 0 && normuon_get_state(rt, static_cast<int32_t>(i), kind, dst->data(),
                                           bytes) != NORMUON_SUCCESS) {
          fail(std::string("get_state: ") + normuon_last_error(rt));
          return finish();
        }
      }
      if (mom[i].size() != static_cast<size_t>(elems)) {
        fail(std::string(ms[i].name) + ": momentum holds " + std::to_string(mom[i].size()) +
             " floats, the pieces " + std::to_string(elems));
        return finish();
      }
    }
    if (bc > 0 && !cuda_ok(cudaMemcpy(host_bias.data(), bias, bc * 4, cudaMemcpyDeviceToHost),
                           "bias download")) {
      return finish();
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      for (size_t i = 0; i < n; ++i) {
        const Matrix& m = ms[i];
        size_t state_at = 0, v_at = 0;  // this piece's first float in mom[i] and v[i]
        for (size_t q = 0; q < mine[i].size(); ++q) {
          const Rect& r = mine[i][q];
          const std::vector<float>& hp = host_param[i][q];
          for (int64_t a = 0; a < r.row_count; ++a) {
            for (int64_t b = 0; b < r.col_count; ++b) {
              const size_t at = static_cast<size_t>((r.row_begin + a) * m.cols + r.col_begin + b);
              const size_t packed = state_at + static_cast<size_t>(a * r.col_count + b);
              res.param[i][at] = hp[a * ld[i][q] + b];
              res.momentum[i][at] = mom[i][packed];
              if (per_element && o.axis != NORMUON_NEURON_COLUMNS) res.v[i][at] = v[i][packed];
            }
            for (int64_t b = r.col_count; b < ld[i][q]; ++b) {
              if (hp[a * ld[i][q] + b] != kPad && res.errors[rank].empty()) {
                res.errors[rank] = std::string(m.name) + ": the padding past the piece was written";
              }
            }
          }
          state_at += static_cast<size_t>(r.row_count * r.col_count);
          if (o.axis == NORMUON_NEURON_COLUMNS || per_element) continue;
          // Ranks (or pieces) holding the same rows (other columns) must hold the same v.
          for (int64_t a = 0; a < r.row_count; ++a, ++v_at) {
            const size_t at = static_cast<size_t>(r.row_begin + a);
            if (v_at >= v[i].size()) {
              if (res.errors[rank].empty()) res.errors[rank] = std::string(m.name) + ": short v";
              break;
            }
            if (v_seen[i][at] && std::memcmp(&res.v[i][at], &v[i][v_at], 4) != 0 &&
                res.errors[rank].empty()) {
              res.errors[rank] = std::string(m.name) + ": v of row " + std::to_string(at) +
                                 " differs between the ranks holding it";
            }
            res.v[i][at] = v[i][v_at];
            v_seen[i][at] = 1;
          }
        }
        if (o.axis == NORMUON_NEURON_COLUMNS && !v[i].empty()) {
          std::copy(v[i].begin(), v[i].end(), res.v[i].begin());
        }
      }
      std::copy(host_bias.begin(), host_bias.end(), res.bias.begin() + bb);
    }
    finish();
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(rank_main, r);
  for (std::thread& t : threads) t.join();
  for (normuon_comm_t comm : comms) {
    if (comm != 0) normuon_comm_destroy(comm);
  }
  return res;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

bool AllSameBits(const Result& a, const Result& b) {
  for (size_t i = 0; i < Model().size(); ++i) {
    if (!SameBits(a.param[i], b.param[i]) || !SameBits(a.momentum[i], b.momentum[i]) ||
        !SameBits(a.v[i], b.v[i])) {
      return false;
    }
  }
  return SameBits(a.bias, b.bias);
}

double MaxAbsDiff(const Result& a, const Result& b) {
  double d = 0.0;
  for (size_t i = 0; i < Model().size(); ++i) {
    for (size_t k = 0; k < a.param[i].size(); ++k) {
      d = std::max(d, static_cast<double>(std::fabs(a.param[i][k] - b.param[i][k])));
    }
  }
  return d;
}

void ExpectOk(const Result& r, const std::string& what) {
  for (size_t k = 0; k < r.errors.size(); ++k) {
    ASSERT_EQ(r.errors[k], "") << what << ": rank " << k;
  }
}

// Every field, naming the first that differs.
void ExpectBitwise(const Result& want, const Result& got, const std::string& what) {
  for (size_t i = 0; i < Model().size(); ++i) {
    const std::string who = what + ", " + Model()[i].name;
    EXPECT_TRUE(SameBits(want.param[i], got.param[i]))
        << who << ": parameter (max |difference| " << MaxAbsDiff(want, got) << ")";
    EXPECT_TRUE(SameBits(want.momentum[i], got.momentum[i])) << who << ": momentum";
    EXPECT_TRUE(SameBits(want.v[i], got.v[i])) << who << ": v";
  }
  EXPECT_TRUE(SameBits(want.bias, got.bias)) << what << ": AdamW bias";
}

class TwoDShardsCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (DeviceCount() == 0) {
      std::cout << "two_d_shards_cuda_test: no CUDA device, the column-piece GPU checks skip\n";
      GTEST_SKIP() << "no CUDA device: the CUDA column-piece step cannot run";
    }
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  }
};

TEST_F(TwoDShardsCudaTest, StridedPiecesAndGraphModeAtWorldOneAreBitwiseThePackedRun) {
  for (normuon_ns_dtype_t dtype : {NORMUON_NS_BF16, NORMUON_NS_FP32}) {
    Options packed;
    packed.ns_dtype = dtype;
    const Result base = RunMesh(packed);
    ExpectOk(base, Describe(packed));
    Options strided = packed;
    strided.ld_pad = 5;
    const Result s = RunMesh(strided);
    ExpectOk(s, Describe(strided));
    ExpectBitwise(base, s, Describe(strided));
    Options graph = strided;
    graph.cuda_graph = true;
    const Result g = RunMesh(graph);
    ExpectOk(g, Describe(graph));
    ExpectBitwise(base, g, Describe(graph));
  }
}

TEST_F(TwoDShardsCudaTest, ColumnPiecesAreBitwiseTheRowLayoutAndTheSingleRank) {
  for (normuon_ns_dtype_t dtype : {NORMUON_NS_BF16, NORMUON_NS_FP32}) {
    Options one;
    one.ns_dtype = dtype;
    const Result single = RunMesh(one);
    ExpectOk(single, "single rank");
    Options rows = one;  // the row-only layout at world 4
    rows.dp = 4;
    const Result row_layout = RunMesh(rows);
    ExpectOk(row_layout, Describe(rows));
    if (HasFatalFailure()) return;
    const bool rows_bitwise = AllSameBits(single, row_layout);
    std::cout << Describe(rows) << " vs single rank: "
              << (rows_bitwise ? "bitwise" : "not bitwise") << ", max |difference| "
              << MaxAbsDiff(single, row_layout) << "\n";
    if (dtype == NORMUON_NS_BF16) {
      // bench/RESULTS.md: the bf16 row-only layout is bitwise the single rank at every world.
      ExpectBitwise(single, row_layout, Describe(rows) + " vs single rank");
    }
    std::vector<Options> meshes;
    Options m = one;
    m.tp = 2;
    m.dp = 2;
    m.ld_pad = 3;
    meshes.push_back(m);
    m = one;
    m.tp = 4;
    m.ragged = true;
    meshes.push_back(m);
    m = one;
    m.tp = 2;
    m.dp = 2;
    m.ld_pad = 1;
    m.schedule = NORMUON_SCHEDULE_PER_MATRIX;
    m.grad_ready = true;
    meshes.push_back(m);
    for (const Options& mesh : meshes) {
      const Result got = RunMesh(mesh);
      ExpectOk(got, Describe(mesh));
      if (HasFatalFailure()) return;
      ExpectBitwise(row_layout, got, Describe(mesh) + " vs " + Describe(rows));
      std::cout << Describe(mesh) << " vs single rank: max |difference| "
                << MaxAbsDiff(single, got) << "\n";
      if (dtype == NORMUON_NS_BF16 || rows_bitwise) {
        ExpectBitwise(single, got, Describe(mesh) + " vs single rank");
      }
      ::testing::Test::RecordProperty(
          "max_abs_diff_vs_world1." + Describe(mesh), std::to_string(MaxAbsDiff(single, got)));
    }
  }
}

TEST_F(TwoDShardsCudaTest, MuonAndTheColumnNeuronAxisWithColumnPiecesAreBitwiseTheRowLayout) {
  for (int variant_case = 0; variant_case < 2; ++variant_case) {
    Options rows;
    rows.ns_dtype = NORMUON_NS_FP32;
    rows.dp = 4;
    if (variant_case == 0) {
      rows.variant = NORMUON_VARIANT_MUON;
    } else {
      rows.axis = NORMUON_NEURON_COLUMNS;
    }
    const Result row_layout = RunMesh(rows);
    ExpectOk(row_layout, Describe(rows));
    Options mesh = rows;
    mesh.tp = 2;
    mesh.dp = 2;
    mesh.ld_pad = 2;
    const Result got = RunMesh(mesh);
    ExpectOk(got, Describe(mesh));
    if (HasFatalFailure()) return;
    ExpectBitwise(row_layout, got, Describe(mesh) + " vs " + Describe(rows));
  }
}

// A column-split parameter is saved whole by one rank (its pieces' momentum and rows' v travel
// to it through the device communicator, staged in device memory). TP2 x DP2 saved after two
// steps, loaded as TP2 x DP2 and as DP4: one more step gives the bits of three uninterrupted
// steps of that layout.
TEST_F(TwoDShardsCudaTest, CheckpointsOfColumnPiecesReshardBitwise) {
  const std::string dir = ::testing::TempDir() + "/two_d_cuda_ck";
  ASSERT_EQ(system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str()), 0);
  Options save;
  save.ns_dtype = NORMUON_NS_FP32;
  save.tp = 2;
  save.dp = 2;
  save.ld_pad = 2;
  save.steps = 2;
  save.save_dir = dir;
  const Result saved = RunMesh(save);
  ExpectOk(saved, Describe(save) + " save");
  if (HasFatalFailure()) return;
  for (const auto& mesh : {std::pair{2, 2}, std::pair{1, 4}}) {
    Options straight;
    straight.ns_dtype = NORMUON_NS_FP32;
    straight.tp = mesh.first;
    straight.dp = mesh.second;
    straight.steps = 3;
    const Result want = RunMesh(straight);
    ExpectOk(want, Describe(straight));
    Options load = straight;
    load.steps = 1;
    load.first_step = 2;
    load.init = &saved;
    load.load_dir = dir;
    const Result got = RunMesh(load);
    ExpectOk(got, Describe(load) + " load");
    if (HasFatalFailure()) return;
    ExpectBitwise(want, got, "checkpoint TP2 x DP2 -> " + Describe(load));
  }
}

TEST_F(TwoDShardsCudaTest, TheFiniteCheckReadsThePieceNotThePadding) {
  Options o;
  o.tp = 2;
  o.dp = 2;
  o.ld_pad = 3;
  o.check_finite = 1;
  o.steps = 2;
  o.nan_rank = 1;  // TP piece 0, FSDP2 chunk 1: rows 8..15, columns 0..7 of "out"
  o.nan_param = kOut;
  // Step 0: a NaN in the padding of rank 1's gradient: not part of the piece, the step is taken.
  o.nan_step = 0;
  o.nan_in_padding = true;
  const Result padded = RunMesh(o);
  ExpectOk(padded, Describe(o) + " NaN in the padding");
  Options clean = o;
  clean.nan_rank = -1;
  const Result base = RunMesh(clean);
  ExpectOk(base, Describe(clean));
  if (HasFatalFailure()) return;
  for (int r = 0; r < o.tp * o.dp; ++r) {
    EXPECT_EQ(padded.info[r][0].last_skipped, 0) << "rank " << r << ": the padding was read";
  }
  ExpectBitwise(base, padded, "NaN in the padding");
  // Step 1: a NaN inside the piece: skipped on every rank, naming "out"; nothing written, so the
  // state is that of one clean step.
  o.nan_step = 1;
  o.nan_in_padding = false;
  const Result bad = RunMesh(o);
  ExpectOk(bad, Describe(o) + " NaN in the piece");
  Options one_step = clean;
  one_step.steps = 1;
  const Result after_one = RunMesh(one_step);
  ExpectOk(after_one, Describe(one_step));
  if (HasFatalFailure()) return;
  for (int r = 0; r < o.tp * o.dp; ++r) {
    EXPECT_EQ(bad.info[r][0].last_skipped, 0) << "rank " << r;
    EXPECT_EQ(bad.info[r][1].last_skipped, 1) << "rank " << r;
    EXPECT_EQ(bad.info[r][1].nonfinite_param, kOut) << "rank " << r;
  }
  ExpectBitwise(after_one, bad, "NaN in the piece at step 1 vs one clean step");
  EXPECT_FALSE(AllSameBits(after_one, base)) << "the second clean step changed nothing";
}

// Several rectangles of one matrix per rank (desc.pieces; PiecesOf): the non-interleaved GQA QKV
// (three row ranges per TP rank) and the row-parallel "out" (two row ranges of a column half per
// rank) at TP2 x DP2, sequential and with the per-matrix schedule and grad_ready (two streams):
// bitwise the row-only layout at world 4 (the same owners and batches), and the single-rank CUDA
// step in bf16 (and in fp32 wherever the row-only layout is).
TEST_F(TwoDShardsCudaTest, SeveralPiecesPerRankAreBitwiseTheRowLayoutAndTheSingleRank) {
  for (normuon_ns_dtype_t dtype : {NORMUON_NS_BF16, NORMUON_NS_FP32}) {
    Options one;
    one.ns_dtype = dtype;
    const Result single = RunMesh(one);
    ExpectOk(single, "single rank");
    Options rows = one;
    rows.dp = 4;
    const Result row_layout = RunMesh(rows);
    ExpectOk(row_layout, Describe(rows));
    if (HasFatalFailure()) return;
    const bool rows_bitwise = AllSameBits(single, row_layout);
    for (bool ready : {false, true}) {
      Options mesh = one;
      mesh.tp = 2;
      mesh.dp = 2;
      mesh.multi_piece = true;
      mesh.ld_pad = ready ? 1 : 0;
      if (ready) {
        mesh.schedule = NORMUON_SCHEDULE_PER_MATRIX;
        mesh.grad_ready = true;
      }
      const Result got = RunMesh(mesh);
      ExpectOk(got, Describe(mesh));
      if (HasFatalFailure()) return;
      ExpectBitwise(row_layout, got, Describe(mesh) + " vs " + Describe(rows));
      std::cout << Describe(mesh) << " vs single rank: max |difference| "
                << MaxAbsDiff(single, got) << "\n";
      if (dtype == NORMUON_NS_BF16 || rows_bitwise) {
        ExpectBitwise(single, got, Describe(mesh) + " vs single rank");
      }
    }
  }
}

// World 1 holding "qkv" as three row pieces and "out" as two column halves: bitwise the one-piece
// run, eagerly and in graph mode with every piece moved by normuon_bind_piece before the second
// step (the captured graph is dropped and captured again; a host pointer is refused); NorMuon in
// bf16 and fp32, AdaMuon (column halves at world 1) in bf16.
TEST_F(TwoDShardsCudaTest, SeveralPiecesAtWorldOneWithGraphModeAndBindPieceAreBitwise) {
  for (normuon_ns_dtype_t dtype : {NORMUON_NS_BF16, NORMUON_NS_FP32}) {
    for (normuon_variant_t variant : {NORMUON_VARIANT_NORMUON, NORMUON_VARIANT_ADAMUON}) {
      // AdaMuon in bf16 only (keeps the device check's smoke tier short).
      if (variant == NORMUON_VARIANT_ADAMUON && dtype != NORMUON_NS_BF16) continue;
      Options one;
      one.ns_dtype = dtype;
      one.variant = variant;
      const Result base = RunMesh(one);
      ExpectOk(base, Describe(one));
      Options pieces = one;
      pieces.multi_piece = true;
      pieces.ld_pad = 2;
      const Result eager = RunMesh(pieces);
      ExpectOk(eager, Describe(pieces));
      Options graph = pieces;
      graph.cuda_graph = true;
      graph.rebind_pieces = true;
      const Result g = RunMesh(graph);
      ExpectOk(g, Describe(graph));
      if (HasFatalFailure()) return;
      ExpectBitwise(base, eager, Describe(pieces));
      ExpectBitwise(base, g, Describe(graph));
    }
  }
}

// AdaMuon with column pieces: each piece's per-element v travels to the owner with U (a second
// exchange per bucket), the owner's RowStats writes v_new over the whole v in place, and each
// piece holder makes its own v_new with ElementSecondMoment. TP2 x DP2 (one piece per rank) and
// the several-pieces layout: bitwise the row-only layout at world 4, and the single-rank CUDA
// step in bf16 (in fp32 wherever the row-only layout is).
TEST_F(TwoDShardsCudaTest, AdaMuonWithColumnPiecesIsBitwiseTheRowLayoutAndTheSingleRank) {
  for (normuon_ns_dtype_t dtype : {NORMUON_NS_BF16, NORMUON_NS_FP32}) {
    Options one;
    one.ns_dtype = dtype;
    one.variant = NORMUON_VARIANT_ADAMUON;
    const Result single = RunMesh(one);
    ExpectOk(single, Describe(one));
    Options rows = one;
    rows.dp = 4;
    const Result row_layout = RunMesh(rows);
    ExpectOk(row_layout, Describe(rows));
    if (HasFatalFailure()) return;
    const bool rows_bitwise = AllSameBits(single, row_layout);
    std::cout << Describe(rows) << " vs single rank: "
              << (rows_bitwise ? "bitwise" : "not bitwise") << "\n";
    std::vector<Options> meshes;
    Options m = one;
    m.tp = 2;
    m.dp = 2;
    m.ld_pad = 3;
    meshes.push_back(m);
    m.schedule = NORMUON_SCHEDULE_PER_MATRIX;
    m.grad_ready = true;
    m.multi_piece = true;
    meshes.push_back(m);
    for (const Options& mesh : meshes) {
      const Result got = RunMesh(mesh);
      ExpectOk(got, Describe(mesh));
      if (HasFatalFailure()) return;
      ExpectBitwise(row_layout, got, Describe(mesh) + " vs " + Describe(rows));
      std::cout << Describe(mesh) << " vs single rank: max |difference| "
                << MaxAbsDiff(single, got) << "\n";
      if (dtype == NORMUON_NS_BF16 || rows_bitwise) {
        ExpectBitwise(single, got, Describe(mesh) + " vs single rank");
      }
    }
  }
}

// Checkpoints of several pieces per rank (their momentum and v rectangles gathered to the saving
// rank through the device communicator, host bytes staged in device memory): the multi-piece
// TP2 x DP2 layout saved after two steps (NorMuon and AdaMuon), loaded as itself, as DP4 and
// (NorMuon) as one rank: one more step gives the bits of three uninterrupted steps of that
// layout.
TEST_F(TwoDShardsCudaTest, CheckpointsOfSeveralPiecesPerRankReshardBitwise) {
  for (normuon_variant_t variant : {NORMUON_VARIANT_NORMUON, NORMUON_VARIANT_ADAMUON}) {
    const std::string dir = ::testing::TempDir() + "/two_d_cuda_multi_ck" +
                            std::to_string(static_cast<int>(variant));
    ASSERT_EQ(system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str()), 0);
    Options save;
    save.ns_dtype = NORMUON_NS_FP32;
    save.variant = variant;
    save.tp = 2;
    save.dp = 2;
    save.multi_piece = true;
    save.ld_pad = 2;
    save.steps = 2;
    save.save_dir = dir;
    const Result saved = RunMesh(save);
    ExpectOk(saved, Describe(save) + " save");
    if (HasFatalFailure()) return;
    for (int layout = 0; layout < 3; ++layout) {
      // AdaMuon: into itself and DP4 (the one-rank load is the CPU tests' too).
      if (variant == NORMUON_VARIANT_ADAMUON && layout == 2) continue;
      Options straight;
      straight.ns_dtype = NORMUON_NS_FP32;
      straight.variant = variant;
      straight.steps = 3;
      if (layout == 0) {
        straight.tp = 2;
        straight.dp = 2;
        straight.multi_piece = true;
      } else if (layout == 1) {
        straight.dp = 4;
      }
      const Result want = RunMesh(straight);
      ExpectOk(want, Describe(straight));
      Options load = straight;
      load.steps = 1;
      load.first_step = 2;
      load.init = &saved;
      load.load_dir = dir;
      const Result got = RunMesh(load);
      ExpectOk(got, Describe(load) + " load");
      if (HasFatalFailure()) return;
      ExpectBitwise(want, got, "checkpoint " + Describe(save) + " -> " + Describe(load));
    }
  }
}

#endif  // NORMUON_WITH_CUDA

}  // namespace
