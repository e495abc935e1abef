// Tests of the CUDA backend (kernels/cuda) against the CPU backend, the readable reference of
// the same contract (kernels/backend.h): every call of a step op by op on random data, for a
// wide (48x64), a tall (64x48) and a one-row (1x64) matrix, then whole matrix steps, the skip
// rule and run-to-run determinism; and the calls on two-dimensional pieces against the same
// backend's calls on the packed rectangle, and AdaMuon's ElementSecondMoment on a column piece
// against the owner's in-place RowStats (PieceOpsTest, on the CPU backend everywhere).
//
// Without a CUDA device (CI, CPU-only builds) every comparison skips; only the factory test
// runs. Tolerances follow docs/ARCHITECTURE.md section 6: elementwise stages agree to a few fp32 roundings
// (the GPU contracts a*b+c into one FMA, the CPU does not), fp32 Newton-Schulz to 1e-4 (cuBLAS
// sums in another order than OpenBLAS), bf16 Newton-Schulz to 7e-2 of the fp32 result.
#include <gtest/gtest.h>

#ifdef NORMUON_WITH_CUDA
#include <cuda_runtime.h>
#endif

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "base/bf16.h"
#include "base/status_macros.h"

namespace normuon {
namespace {

#define ASSERT_OK(expr)                                                        \
  do {                                                                         \
    const ::absl::Status assert_ok_status_ = (expr);                           \
    ASSERT_TRUE(assert_ok_status_.ok()) << #expr << ": " << assert_ok_status_; \
  } while (0)

#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(NORMUON_CONCAT_(assert_statusor_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr)        \
  auto tmp = (expr);                                      \
  ASSERT_TRUE(tmp.ok()) << #expr << ": " << tmp.status(); \
  lhs = std::move(tmp).value()

struct Shape {
  int64_t rows, cols;
};
const Shape kShapes[] = {{48, 64}, {64, 48}, {1, 64}};
// Matrices per Newton-Schulz batch in these tests.
constexpr int64_t kBatch = 2;
constexpr float kNsEps = 1e-7f;

std::vector<std::array<float, 3>> MuonCoefficients() {
  return std::vector<std::array<float, 3>>(5, {3.4445f, -4.7750f, 2.0315f});
}

// Group 0: NorMuon (lr, wd, b1, b2, eps); group 1: AdamW.
constexpr GroupScalars kMatrixGroup = {0.02f, 0.01f, 0.95f, 0.95f, 1e-10f, {0, 0, 0}};
constexpr GroupScalars kAdamWGroup = {3e-4f, 0.01f, 0.9f, 0.95f, 1e-10f, {0, 0, 0}};

std::vector<float> Randn(size_t n, uint32_t seed, float scale) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> x(n);
  for (float& e : x) e = dist(gen);
  return x;
}

std::vector<float> Uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> x(n);
  for (float& e : x) e = dist(gen);
  return x;
}

// x as stored in dtype d and read back (bf16: rounded).
std::vector<float> RoundTo(const std::vector<float>& x, DType d) {
  if (d == DType::kF32) return x;
  std::vector<float> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = RoundToBf16(x[i]);
  return r;
}

double Norm(const std::vector<float>& x, size_t begin = 0, size_t end = SIZE_MAX) {
  end = std::min(end, x.size());
  double s = 0.0;
  for (size_t i = begin; i < end; ++i) s += static_cast<double>(x[i]) * x[i];
  return std::sqrt(s);
}

// ||got - want|| / ||want|| over [begin, end); 0 when both are zero.
double RelError(const std::vector<float>& got, const std::vector<float>& want, size_t begin = 0,
                size_t end = SIZE_MAX) {
  end = std::min(end, want.size());
  double diff = 0.0;
  for (size_t i = begin; i < end; ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    diff += d * d;
  }
  const double ref = Norm(want, begin, end);
  return ref == 0.0 ? std::sqrt(diff) : std::sqrt(diff) / ref;
}

std::vector<float> Minus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

// The update check of docs/ARCHITECTURE.md section 6: ||ours - ref|| <= tol * ||ref|| + 2.4e-7 * ||W_after||, on the
// updates (W after minus W before).
void ExpectUpdateNear(const std::vector<float>& before, const std::vector<float>& got_after,
                      const std::vector<float>& want_after, double tol, const std::string& what) {
  const std::vector<float> got = Minus(got_after, before);
  const std::vector<float> want = Minus(want_after, before);
  double diff = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    diff += d * d;
  }
  EXPECT_LE(std::sqrt(diff), tol * Norm(want) + 2.4e-7 * Norm(want_after)) << what;
}

bool BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// One backend with the state of a step: the scalars of both groups and the control block, in
// backend memory. Frees what it allocated.
class Side {
 public:
  Side(Backend* backend, void* stream) : backend_(backend), stream_(stream) {}
  ~Side() {
    for (void* p : allocations_) backend_->Free(p);
  }
  Side(const Side&) = delete;
  Side& operator=(const Side&) = delete;

  absl::Status Init() {
    NORMUON_ASSIGN_OR_RETURN(void* scalars, Alloc(2 * sizeof(GroupScalars)));
    scalars_ = static_cast<GroupScalars*>(scalars);
    NORMUON_ASSIGN_OR_RETURN(void* control, Alloc(sizeof(StepControl)));
    control_ = static_cast<StepControl*>(control);
    return absl::OkStatus();
  }

  Backend* backend() { return backend_; }
  const GroupScalars* matrix_group() const { return scalars_; }
  const GroupScalars* adamw_group() const { return scalars_ + 1; }
  StepControl* control() { return control_; }

  absl::StatusOr<void*> Alloc(size_t bytes) {
    NORMUON_ASSIGN_OR_RETURN(void* p, backend_->Alloc(bytes));
    allocations_.push_back(p);
    return p;
  }

  // x stored as dtype d in new backend memory.
  absl::StatusOr<void*> Upload(const std::vector<float>& x, DType d) {
    NORMUON_ASSIGN_OR_RETURN(void* p, Alloc(x.size() * SizeOf(d)));
    if (d == DType::kF32) {
      NORMUON_RETURN_IF_ERROR(backend_->CopyFromHost(p, x.data(), x.size() * sizeof(float)));
    } else {
      std::vector<Bf16> h(x.size());
      for (size_t i = 0; i < x.size(); ++i) h[i] = FloatToBf16(x[i]);
      NORMUON_RETURN_IF_ERROR(backend_->CopyFromHost(p, h.data(), h.size() * sizeof(Bf16)));
    }
    return p;
  }
  absl::StatusOr<float*> UploadF32(const std::vector<float>& x) {
    NORMUON_ASSIGN_OR_RETURN(void* p, Upload(x, DType::kF32));
    return static_cast<float*>(p);
  }

  // n elements of dtype d at p, as floats.
  absl::StatusOr<std::vector<float>> Download(const void* p, size_t n, DType d = DType::kF32) {
    std::vector<float> x(n);
    if (d == DType::kF32) {
      NORMUON_RETURN_IF_ERROR(backend_->CopyToHost(x.data(), p, n * sizeof(float)));
    } else {
      std::vector<Bf16> h(n);
      NORMUON_RETURN_IF_ERROR(backend_->CopyToHost(h.data(), p, n * sizeof(Bf16)));
      for (size_t i = 0; i < n; ++i) x[i] = Bf16ToFloat(h[i]);
    }
    return x;
  }

  absl::StatusOr<StepControl> Control() {
    StepControl c;
    NORMUON_RETURN_IF_ERROR(backend_->CopyToHost(&c, control_, sizeof(c)));
    return c;
  }

  absl::Status Begin() {
    const GroupScalars host[2] = {kMatrixGroup, kAdamWGroup};
    return backend_->BeginStep(stream_, host, scalars_, sizeof(host), control_);
  }
  // EndStep, then wait for the step.
  absl::Status End(int64_t* adamw_steps = nullptr, int64_t n = 0) {
    NORMUON_RETURN_IF_ERROR(backend_->EndStep(adamw_steps, n, control_));
    return backend_->WaitStep();
  }

 private:
  Backend* backend_;
  void* stream_;
  GroupScalars* scalars_ = nullptr;
  StepControl* control_ = nullptr;
  std::vector<void*> allocations_;
};

// Host data of one matrix parameter for a single-rank step.
struct MatrixData {
  Shape shape;
  std::vector<float> param, grad, momentum, v;
};

MatrixData RandomMatrix(Shape shape, uint32_t seed) {
  const size_t n = static_cast<size_t>(shape.rows * shape.cols);
  MatrixData d;
  d.shape = shape;
  d.param = Randn(n, seed, 0.1f);
  d.grad = Randn(n, seed + 1, 1.0f);
  d.momentum = Randn(n, seed + 2, 0.1f);
  d.v = Uniform(static_cast<size_t>(shape.rows), seed + 3, 0.005f, 0.03f);
  return d;
}

// Backend buffers of one matrix on one side, and the MatrixWork that points at them.
struct MatrixBuffers {
  MatrixWork work;
  size_t elems = 0;
};

absl::StatusOr<MatrixBuffers> UploadMatrix(Side& side, const MatrixData& d, DType param_dtype,
                                           DType grad_dtype, bool has_grad, DType ns_dtype,
                                           Variant variant) {
  MatrixBuffers b;
  b.elems = d.param.size();
  MatrixWork& w = b.work;
  w.index = 0;
  w.rows = d.shape.rows;
  w.cols = d.shape.cols;
  w.row_begin = 0;
  w.row_count = d.shape.rows;
  NORMUON_ASSIGN_OR_RETURN(w.param, side.Upload(d.param, param_dtype));
  w.param_dtype = param_dtype;
  if (has_grad) {
    NORMUON_ASSIGN_OR_RETURN(void* g, side.Upload(d.grad, grad_dtype));
    w.grad = g;
  }
  w.grad_dtype = grad_dtype;
  NORMUON_ASSIGN_OR_RETURN(w.momentum, side.UploadF32(d.momentum));
  NORMUON_ASSIGN_OR_RETURN(w.v, side.UploadF32(d.v));
  NORMUON_ASSIGN_OR_RETURN(void* v_new, side.Alloc(d.v.size() * sizeof(float)));
  w.v_new = static_cast<float*>(v_new);
  NORMUON_ASSIGN_OR_RETURN(w.u_rows, side.Alloc(b.elems * SizeOf(ns_dtype)));
  NORMUON_ASSIGN_OR_RETURN(void* o, side.Alloc(b.elems * SizeOf(ns_dtype)));
  w.o_rows = o;
  NORMUON_ASSIGN_OR_RETURN(void* slots, side.Alloc(2 * d.v.size() * sizeof(float)));
  w.row_slots = static_cast<float*>(slots);
  w.row_slots_total = w.row_slots;  // one rank: its slots are the complete ones
  NORMUON_ASSIGN_OR_RETURN(void* scale, side.Alloc(sizeof(float)));
  w.scale = static_cast<float*>(scale);
  w.scalars = side.matrix_group();
  w.variant = variant;
  w.nesterov = true;
  w.ns_dtype = ns_dtype;
  return b;
}

NsBatch BatchOf(const MatrixWork& w) {
  NsBatch b;
  b.rows = w.rows;
  b.cols = w.cols;
  b.count = 1;
  b.u = w.u_rows;
  b.o = const_cast<void*>(w.o_rows);
  b.dtype = w.ns_dtype;
  b.ns_eps = kNsEps;
  b.coefficients = MuonCoefficients();
  return b;
}

// What a matrix step leaves behind.
struct MatrixResult {
  std::vector<float> param, momentum, v, o;
  float scale = 0.0f;
};

absl::StatusOr<MatrixResult> ReadMatrix(Side& side, const MatrixBuffers& b) {
  MatrixResult r;
  const MatrixWork& w = b.work;
  NORMUON_ASSIGN_OR_RETURN(r.param, side.Download(w.param, b.elems, w.param_dtype));
  NORMUON_ASSIGN_OR_RETURN(r.momentum, side.Download(w.momentum, b.elems));
  NORMUON_ASSIGN_OR_RETURN(r.v, side.Download(w.v, static_cast<size_t>(w.rows)));
  NORMUON_ASSIGN_OR_RETURN(r.o, side.Download(w.o_rows, b.elems, w.ns_dtype));
  NORMUON_ASSIGN_OR_RETURN(std::vector<float> scale, side.Download(w.scale, 1));
  r.scale = scale[0];
  return r;
}

// A whole single-rank step of one matrix: Blend, Newton-Schulz, RowStats, FinishNorms, commit.
absl::StatusOr<MatrixResult> MatrixStep(Side& side, const MatrixData& d, DType ns_dtype,
                                        Variant variant) {
  NORMUON_ASSIGN_OR_RETURN(MatrixBuffers b,
                   UploadMatrix(side, d, DType::kF32, DType::kF32, true, ns_dtype, variant));
  Backend* be = side.backend();
  NORMUON_RETURN_IF_ERROR(side.Begin());
  NORMUON_RETURN_IF_ERROR(be->Blend(b.work));
  NORMUON_RETURN_IF_ERROR(be->NewtonSchulz(BatchOf(b.work)));
  NORMUON_RETURN_IF_ERROR(be->RowStats(b.work));
  NORMUON_RETURN_IF_ERROR(be->FinishNorms(b.work));
  NORMUON_RETURN_IF_ERROR(be->CommitMatrix(b.work, side.control()));
  NORMUON_RETURN_IF_ERROR(side.End());
  return ReadMatrix(side, b);
}

// Every batch the tests run, for Prepare.
std::vector<NsBatch> AllBatches() {
  std::vector<NsBatch> batches;
  for (const Shape& s : kShapes) {
    for (DType d : {DType::kF32, DType::kBF16}) {
      NsBatch b;
      b.rows = s.rows;
      b.cols = s.cols;
      b.count = kBatch;
      b.dtype = d;
      b.ns_eps = kNsEps;
      b.coefficients = MuonCoefficients();
      batches.push_back(b);
    }
  }
  return batches;
}

std::string Describe(Shape s) { return std::to_string(s.rows) + "x" + std::to_string(s.cols); }

// ---- Two-dimensional pieces (backend.h MatrixWork: col_begin, col_count, ld, u_ld) ----
//
// On one backend, a piece (6 rows, columns [8, 28) of 40; param and grad rows 27 apart, the
// padding NaN in the gradient and a marker in the parameter; U and O rows 40 apart, inside a full
// buffer) must give the bits of the same backend's packed call on the rectangle cut out of it:
// Blend, CommitMatrix (NorMuon per row, Muon, AdaMuon per element, the column neuron axis with
// v per global column), and write nothing outside the piece; CheckFiniteRows reads the piece and
// not the padding; CopyRectAsync packs and unpacks a rectangle exactly. Runs on the CPU backend
// everywhere (the defaults of CheckFiniteRows and CopyRectAsync) and on the CUDA backend with a
// device.
constexpr int64_t kPieceRows = 6, kPieceCols = 20, kFullCols = 40, kColBegin = 8, kLd = 27;
constexpr float kMarker = -7.0f;

// The rectangle [0, rows) x [col_begin, col_begin + count) of a row-major buffer with pitch ld.
std::vector<float> Cut(const std::vector<float>& x, int64_t ld, int64_t col_begin, int64_t count,
                       int64_t rows) {
  std::vector<float> out;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < count; ++j) out.push_back(x[r * ld + col_begin + j]);
  }
  return out;
}

void CheckPieceOps(Backend* backend, void* stream) {
  Side side(backend, stream);
  ASSERT_OK(side.Init());
  const std::string who = backend->name();
  const float nan = std::nanf("");
  // Strided param (marker padding) and grad (NaN padding): the piece's elements at [r * kLd + j].
  std::vector<float> param(kPieceRows * kLd, kMarker), grad(kPieceRows * kLd, nan);
  const std::vector<float> p0 = Randn(kPieceRows * kPieceCols, 81, 0.1f);
  const std::vector<float> g0 = Randn(kPieceRows * kPieceCols, 82, 1.0f);
  for (int64_t r = 0; r < kPieceRows; ++r) {
    for (int64_t j = 0; j < kPieceCols; ++j) {
      param[r * kLd + j] = p0[r * kPieceCols + j];
      grad[r * kLd + j] = g0[r * kPieceCols + j];
    }
  }
  const std::vector<float> momentum = Randn(kPieceRows * kPieceCols, 83, 0.1f);
  const std::vector<float> o_full = Randn(kPieceRows * kFullCols, 84, 0.125f);

  // CheckFiniteRows: the NaN padding is not part of the piece; a NaN inside is.
  {
    std::vector<float> bad = grad;
    bad[(kPieceRows - 1) * kLd + kPieceCols - 1] = nan;
    ASSERT_OK_AND_ASSIGN(void* g_dev, side.Upload(grad, DType::kF32));
    ASSERT_OK_AND_ASSIGN(void* bad_dev, side.Upload(bad, DType::kBF16));
    ASSERT_OK(side.Begin());
    ASSERT_OK(backend->CheckFiniteRows(4, g_dev, DType::kF32, kPieceRows, kPieceCols, kLd,
                                       side.control()));
    ASSERT_OK(backend->CheckFiniteRows(2, nullptr, DType::kF32, kPieceRows, kPieceCols, kLd,
                                       side.control()));
    ASSERT_OK(side.End());
    ASSERT_OK_AND_ASSIGN(StepControl c, side.Control());
    EXPECT_EQ(c.nonfinite_param, kNoParam) << who << ": the padding was read";
    ASSERT_OK(side.Begin());
    ASSERT_OK(backend->CheckFiniteRows(6, bad_dev, DType::kBF16, kPieceRows, kPieceCols, kLd,
                                       side.control()));
    ASSERT_OK(side.End());
    ASSERT_OK_AND_ASSIGN(c, side.Control());
    EXPECT_EQ(c.nonfinite_param, 6) << who << ": the last element of the piece was not checked";
  }

  // CopyRectAsync: pack the piece's columns of o_full, then unpack them at column 3 of a zeroed
  // buffer of pitch 31.
  {
    ASSERT_OK_AND_ASSIGN(void* full, side.Upload(o_full, DType::kF32));
    ASSERT_OK_AND_ASSIGN(void* packed, side.Alloc(kPieceRows * kPieceCols * 4));
    ASSERT_OK_AND_ASSIGN(void* back, side.Alloc(kPieceRows * 31 * 4));
    ASSERT_OK(side.Begin());
    ASSERT_OK(backend->CopyRectAsync(packed, kPieceCols * 4,
                                     static_cast<float*>(full) + kColBegin, kFullCols * 4,
                                     kPieceCols * 4, kPieceRows));
    ASSERT_OK(backend->CopyRectAsync(static_cast<float*>(back) + 3, 31 * 4, packed, kPieceCols * 4,
                                     kPieceCols * 4, kPieceRows));
    ASSERT_OK(side.End());
    const std::vector<float> want = Cut(o_full, kFullCols, kColBegin, kPieceCols, kPieceRows);
    ASSERT_OK_AND_ASSIGN(std::vector<float> got, side.Download(packed, want.size()));
    EXPECT_TRUE(BitwiseEqual(got, want)) << who << ": CopyRectAsync packing";
    ASSERT_OK_AND_ASSIGN(std::vector<float> unpacked, side.Download(back, kPieceRows * 31));
    std::vector<float> want_back(kPieceRows * 31, 0.0f);
    for (int64_t r = 0; r < kPieceRows; ++r) {
      for (int64_t j = 0; j < kPieceCols; ++j) want_back[r * 31 + 3 + j] = want[r * kPieceCols + j];
    }
    EXPECT_TRUE(BitwiseEqual(unpacked, want_back)) << who << ": CopyRectAsync unpacking";
  }

  for (DType ns : {DType::kF32, DType::kBF16}) {
    for (Variant variant : {Variant::kNorMuon, Variant::kMuon, Variant::kAdaMuon}) {
      for (bool column_axis : {false, true}) {
        if (column_axis && variant != Variant::kNorMuon) continue;
        const std::string what = who + " ns " + std::to_string(static_cast<int>(ns)) +
                                 " variant " + std::to_string(static_cast<int>(variant)) +
                                 (column_axis ? " column axis" : "");
        const bool per_element = PerElementV(variant);
        // v (and v_new): per element of the piece, per global column, or per row.
        const int64_t v_len = per_element   ? kPieceRows * kPieceCols
                              : column_axis ? kFullCols
                                            : kPieceRows;
        const std::vector<float> v = Uniform(v_len, 85, 0.005f, 0.03f);
        const std::vector<float> v_new = Uniform(v_len, 86, 0.005f, 0.03f);
        // piece = 0: the strided piece; 1: the packed rectangle as whole rows.
        std::vector<float> u_out[2], p_out[2], m_out[2], v_out[2];
        for (int piece = 0; piece < 2; ++piece) {
          MatrixWork w;
          w.index = 1;
          w.rows = kPieceRows;
          w.row_begin = 0;
          w.row_count = kPieceRows;
          w.variant = variant;
          w.nesterov = true;
          w.ns_dtype = ns;
          w.column_axis = column_axis;
          w.scalars = side.matrix_group();
          w.control = side.control();
          void* u_buf = nullptr;
          void* o_buf = nullptr;
          if (piece == 0) {
            w.cols = kFullCols;
            w.col_begin = kColBegin;
            w.col_count = kPieceCols;
            w.ld = kLd;
            w.u_ld = kFullCols;
            ASSERT_OK_AND_ASSIGN(w.param, side.Upload(param, DType::kF32));
            ASSERT_OK_AND_ASSIGN(void* g, side.Upload(grad, DType::kF32));
            w.grad = g;
            ASSERT_OK_AND_ASSIGN(u_buf, side.Alloc(kPieceRows * kFullCols * SizeOf(ns)));
            ASSERT_OK_AND_ASSIGN(o_buf, side.Upload(o_full, ns));
            w.u_rows = static_cast<char*>(u_buf) + kColBegin * SizeOf(ns);
            w.o_rows = static_cast<char*>(o_buf) + kColBegin * SizeOf(ns);
          } else {
            w.cols = kPieceCols;
            ASSERT_OK_AND_ASSIGN(w.param, side.Upload(p0, DType::kF32));
            ASSERT_OK_AND_ASSIGN(void* g, side.Upload(g0, DType::kF32));
            w.grad = g;
            ASSERT_OK_AND_ASSIGN(u_buf, side.Alloc(kPieceRows * kPieceCols * SizeOf(ns)));
            ASSERT_OK_AND_ASSIGN(
                o_buf, side.Upload(Cut(o_full, kFullCols, kColBegin, kPieceCols, kPieceRows), ns));
            w.u_rows = u_buf;
            w.o_rows = o_buf;
          }
          ASSERT_OK_AND_ASSIGN(w.momentum, side.UploadF32(momentum));
          // The column axis's packed equivalent sees the piece's columns of v and v_new.
          const bool slice = column_axis && piece == 1;
          ASSERT_OK_AND_ASSIGN(
              w.v, side.UploadF32(slice ? Cut(v, kFullCols, kColBegin, kPieceCols, 1) : v));
          ASSERT_OK_AND_ASSIGN(
              w.v_new,
              side.UploadF32(slice ? Cut(v_new, kFullCols, kColBegin, kPieceCols, 1) : v_new));
          ASSERT_OK_AND_ASSIGN(w.scale, side.UploadF32({0.7f}));
          ASSERT_OK(side.Begin());
          ASSERT_OK(backend->Blend(w));
          ASSERT_OK(backend->CommitMatrix(w, side.control()));
          // No EndStep: both calls see the same steps_taken (AdaMuon's bias correction).
          ASSERT_OK(backend->WaitStep());
          const int64_t u_cols = piece == 0 ? kFullCols : kPieceCols;
          ASSERT_OK_AND_ASSIGN(u_out[piece], side.Download(u_buf, kPieceRows * u_cols, ns));
          ASSERT_OK_AND_ASSIGN(p_out[piece],
                               side.Download(w.param, piece == 0 ? param.size() : p0.size()));
          ASSERT_OK_AND_ASSIGN(m_out[piece], side.Download(w.momentum, momentum.size()));
          ASSERT_OK_AND_ASSIGN(v_out[piece],
                               side.Download(w.v, slice ? kPieceCols : static_cast<size_t>(v_len)));
        }
        // U: the piece's columns are the packed call's; the rest of the full buffer stays 0.
        EXPECT_TRUE(BitwiseEqual(Cut(u_out[0], kFullCols, kColBegin, kPieceCols, kPieceRows),
                                 u_out[1]))
            << what << ": Blend";
        std::vector<float> outside = u_out[0];
        for (int64_t r = 0; r < kPieceRows; ++r) {
          for (int64_t j = 0; j < kPieceCols; ++j) outside[r * kFullCols + kColBegin + j] = 0.0f;
        }
        EXPECT_TRUE(BitwiseEqual(outside, std::vector<float>(outside.size(), 0.0f)))
            << what << ": Blend wrote outside the piece";
        // W: the piece's elements are the packed call's; the padding keeps the marker.
        EXPECT_TRUE(BitwiseEqual(Cut(p_out[0], kLd, 0, kPieceCols, kPieceRows), p_out[1]))
            << what << ": CommitMatrix parameter";
        EXPECT_FALSE(BitwiseEqual(p_out[1], p0)) << what << ": the commit changed nothing";
        for (int64_t r = 0; r < kPieceRows; ++r) {
          for (int64_t j = kPieceCols; j < kLd; ++j) {
            EXPECT_EQ(p_out[0][r * kLd + j], kMarker) << what << ": padding written";
          }
        }
        EXPECT_TRUE(BitwiseEqual(m_out[0], m_out[1])) << what << ": CommitMatrix momentum";
        if (variant != Variant::kMuon) {
          const std::vector<float> v_piece =
              column_axis ? Cut(v_out[0], kFullCols, kColBegin, kPieceCols, 1) : v_out[0];
          EXPECT_TRUE(BitwiseEqual(v_piece, v_out[1])) << what << ": CommitMatrix v";
        }
      }
    }
  }
}

// AdaMuon with column pieces (runtime/step.cc NewtonSchulzBucket, RowStatsBucket): the owner runs
// RowStats over the whole O with v_new == v (in place), and each piece holder runs
// ElementSecondMoment over its columns of O (rows kFullCols apart, v packed). The piece's v_new
// must be the bits of the owner's in-place RowStats on its columns, and the in-place RowStats
// the bits of RowStats into a separate v_new (the same row slots too).
void CheckElementSecondMoment(Backend* backend, void* stream) {
  Side side(backend, stream);
  ASSERT_OK(side.Init());
  const std::string who = backend->name();
  const std::vector<float> o_full = Randn(kPieceRows * kFullCols, 91, 0.125f);
  const std::vector<float> v_full = Uniform(kPieceRows * kFullCols, 92, 0.005f, 0.03f);
  for (DType ns : {DType::kF32, DType::kBF16}) {
    const std::string what = who + " ns " + std::to_string(static_cast<int>(ns));
    ASSERT_OK_AND_ASSIGN(void* o_dev, side.Upload(o_full, ns));
    MatrixWork w;  // the owner's whole matrix
    w.index = 2;
    w.rows = kPieceRows;
    w.cols = kFullCols;
    w.row_begin = 0;
    w.row_count = kPieceRows;
    w.variant = Variant::kAdaMuon;
    w.ns_dtype = ns;
    w.scalars = side.matrix_group();
    w.control = side.control();
    w.o_rows = o_dev;
    std::vector<float> slots[2], v_after[2];
    for (int in_place = 0; in_place < 2; ++in_place) {
      ASSERT_OK_AND_ASSIGN(w.v, side.UploadF32(v_full));
      if (in_place == 1) {
        w.v_new = w.v;
      } else {
        ASSERT_OK_AND_ASSIGN(w.v_new, side.UploadF32(std::vector<float>(v_full.size(), 0.0f)));
      }
      ASSERT_OK_AND_ASSIGN(w.row_slots, side.UploadF32(std::vector<float>(2 * kPieceRows, 0.0f)));
      ASSERT_OK(side.Begin());
      ASSERT_OK(backend->RowStats(w));
      ASSERT_OK(backend->WaitStep());
      ASSERT_OK_AND_ASSIGN(slots[in_place], side.Download(w.row_slots, 2 * kPieceRows));
      ASSERT_OK_AND_ASSIGN(v_after[in_place], side.Download(w.v_new, v_full.size()));
    }
    EXPECT_TRUE(BitwiseEqual(v_after[0], v_after[1])) << what << ": RowStats with v_new == v";
    EXPECT_TRUE(BitwiseEqual(slots[0], slots[1])) << what << ": RowStats slots in place";
    EXPECT_FALSE(BitwiseEqual(v_after[1], v_full)) << what << ": RowStats changed no v";

    // The piece: columns [kColBegin, kColBegin + kPieceCols), O inside the full buffer.
    MatrixWork p = w;
    p.col_begin = kColBegin;
    p.col_count = kPieceCols;
    p.u_ld = kFullCols;
    p.o_rows = static_cast<char*>(o_dev) + kColBegin * SizeOf(ns);
    p.row_slots = nullptr;
    const std::vector<float> v_piece = Cut(v_full, kFullCols, kColBegin, kPieceCols, kPieceRows);
    ASSERT_OK_AND_ASSIGN(p.v, side.UploadF32(v_piece));
    ASSERT_OK_AND_ASSIGN(p.v_new, side.UploadF32(std::vector<float>(v_piece.size(), 0.0f)));
    ASSERT_OK(side.Begin());
    ASSERT_OK(backend->ElementSecondMoment(p));
    ASSERT_OK(backend->WaitStep());
    ASSERT_OK_AND_ASSIGN(std::vector<float> got, side.Download(p.v_new, v_piece.size()));
    EXPECT_TRUE(BitwiseEqual(got, Cut(v_after[1], kFullCols, kColBegin, kPieceCols, kPieceRows)))
        << what << ": ElementSecondMoment vs the owner's RowStats";
    ASSERT_OK_AND_ASSIGN(std::vector<float> v_kept, side.Download(p.v, v_piece.size()));
    EXPECT_TRUE(BitwiseEqual(v_kept, v_piece)) << what << ": ElementSecondMoment wrote v";
  }
}

TEST(PieceOpsTest, CpuBackendPieceCallsAreThePackedCallsOnTheRectangle) {
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  ASSERT_OK(cpu->Prepare({}));
  CheckPieceOps(cpu.get(), nullptr);
  CheckElementSecondMoment(cpu.get(), nullptr);
}

TEST(PieceOpsTest, CudaBackendPieceCallsAreThePackedCallsOnTheRectangle) {
  absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend(0);
  if (!cuda.ok()) GTEST_SKIP() << "no CUDA device: " << cuda.status().message();
#ifdef NORMUON_WITH_CUDA
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_OK((*cuda)->Prepare({}));
  CheckPieceOps(cuda->get(), stream);
  CheckElementSecondMoment(cuda->get(), stream);
  cuda->reset();
  cudaStreamDestroy(stream);
#endif
}

TEST(CudaBackendFactoryTest, RejectsDevicesThatDoNotExist) {
  for (int device : {-1, 1 << 20}) {
    absl::StatusOr<std::unique_ptr<Backend>> b = MakeCudaBackend(device);
    EXPECT_FALSE(b.ok()) << "device " << device;
    if (!b.ok()) {
      EXPECT_NE(b.status().message().find("CUDA"), absl::string_view::npos) << b.status();
    }
  }
}

class CudaVsCpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend(0);
    if (!cuda.ok()) GTEST_SKIP() << "no CUDA device: " << cuda.status().message();
    gpu_backend_ = std::move(cuda).value();
    cpu_backend_ = MakeCpuBackend();
#ifdef NORMUON_WITH_CUDA
    // A non-blocking stream: nothing orders it with the default stream, so any work the backend
    // queued elsewhere would show up as a race.
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
#endif
    cpu_ = std::make_unique<Side>(cpu_backend_.get(), nullptr);
    gpu_ = std::make_unique<Side>(gpu_backend_.get(), stream_);
    ASSERT_OK(cpu_->Init());
    ASSERT_OK(gpu_->Init());
    ASSERT_OK(cpu_backend_->Prepare(AllBatches()));
    ASSERT_OK(gpu_backend_->Prepare(AllBatches()));
  }

  void TearDown() override {
    cpu_.reset();
    gpu_.reset();
    gpu_backend_.reset();
#ifdef NORMUON_WITH_CUDA
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
#endif
  }

  std::unique_ptr<Backend> cpu_backend_, gpu_backend_;
#ifdef NORMUON_WITH_CUDA
  cudaStream_t stream_ = nullptr;
#else
  void* stream_ = nullptr;
#endif
  std::unique_ptr<Side> cpu_, gpu_;
};

TEST_F(CudaVsCpuTest, Blend) {
  for (const Shape& shape : kShapes) {
    const MatrixData d = RandomMatrix(shape, 11);
    for (int grad_kind = 0; grad_kind < 3; ++grad_kind) {  // fp32, bf16, none
      const DType grad_dtype = grad_kind == 1 ? DType::kBF16 : DType::kF32;
      for (DType ns : {DType::kF32, DType::kBF16}) {
        for (bool nesterov : {true, false}) {
          const std::string what = Describe(shape) + " grad " + std::to_string(grad_kind) + " ns " +
                                   std::to_string(static_cast<int>(ns)) + " nesterov " +
                                   std::to_string(nesterov);
          std::vector<float> u[2];
          Side* sides[2] = {cpu_.get(), gpu_.get()};
          for (int k = 0; k < 2; ++k) {
            ASSERT_OK_AND_ASSIGN(MatrixBuffers b,
                                 UploadMatrix(*sides[k], d, DType::kF32, grad_dtype, grad_kind != 2,
                                              ns, Variant::kNorMuon));
            b.work.nesterov = nesterov;
            ASSERT_OK(sides[k]->Begin());
            ASSERT_OK(sides[k]->backend()->Blend(b.work));
            ASSERT_OK(sides[k]->End());
            ASSERT_OK_AND_ASSIGN(u[k], sides[k]->Download(b.work.u_rows, b.elems, ns));
            ASSERT_OK_AND_ASSIGN(std::vector<float> m,
                                 sides[k]->Download(b.work.momentum, b.elems));
            EXPECT_TRUE(BitwiseEqual(m, d.momentum)) << what << ": Blend wrote the momentum";
          }
          EXPECT_LE(RelError(u[1], u[0]), ns == DType::kF32 ? 1e-6 : 1e-2) << what;
        }
      }
    }
  }
}

TEST_F(CudaVsCpuTest, NewtonSchulz) {
  for (const Shape& shape : kShapes) {
    const size_t per = static_cast<size_t>(shape.rows * shape.cols);
    const std::vector<float> u = RoundTo(Randn(kBatch * per, 21, 0.3f), DType::kBF16);
    // o[dtype][side]
    std::vector<float> o[2][2];
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      Side* sides[2] = {cpu_.get(), gpu_.get()};
      for (int k = 0; k < 2; ++k) {
        NsBatch b;
        b.rows = shape.rows;
        b.cols = shape.cols;
        b.count = kBatch;
        ASSERT_OK_AND_ASSIGN(b.u, sides[k]->Upload(u, dtype));
        ASSERT_OK_AND_ASSIGN(b.o, sides[k]->Alloc(kBatch * per * SizeOf(dtype)));
        b.dtype = dtype;
        b.ns_eps = kNsEps;
        b.coefficients = MuonCoefficients();
        ASSERT_OK(sides[k]->Begin());
        ASSERT_OK(sides[k]->backend()->NewtonSchulz(b));
        ASSERT_OK(sides[k]->End());
        ASSERT_OK_AND_ASSIGN(o[static_cast<int>(dtype)][k],
                             sides[k]->Download(b.o, kBatch * per, dtype));
      }
    }
    const auto& f32 = o[static_cast<int>(DType::kF32)];
    const auto& bf16 = o[static_cast<int>(DType::kBF16)];
    for (int64_t m = 0; m < kBatch; ++m) {
      const size_t begin = m * per, end = (m + 1) * per;
      const std::string what = Describe(shape) + " matrix " + std::to_string(m);
      EXPECT_GT(Norm(f32[0], begin, end), 0.1) << what;
      EXPECT_LE(RelError(f32[1], f32[0], begin, end), 1e-4) << what << " fp32";
      EXPECT_LE(RelError(bf16[1], f32[0], begin, end), 7e-2) << what << " bf16 vs CPU fp32";
      EXPECT_LE(RelError(bf16[1], bf16[0], begin, end), 7e-2) << what << " bf16 vs CPU bf16";
    }
  }
}

TEST_F(CudaVsCpuTest, NewtonSchulzNeedsPreparedWorkspace) {
  NsBatch b;
  b.rows = 256;
  b.cols = 256;
  b.count = 4;
  ASSERT_OK_AND_ASSIGN(b.u, gpu_->Alloc(b.rows * b.cols * b.count * sizeof(float)));
  ASSERT_OK_AND_ASSIGN(b.o, gpu_->Alloc(b.rows * b.cols * b.count * sizeof(float)));
  b.coefficients = MuonCoefficients();
  const absl::Status s = gpu_backend_->NewtonSchulz(b);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

TEST_F(CudaVsCpuTest, RowStatsFinishNormsCommitMatrix) {
  for (const Shape& shape : kShapes) {
    for (Variant variant : {Variant::kNorMuon, Variant::kNorMuonPaper, Variant::kMuon}) {
      for (DType ns : {DType::kF32, DType::kBF16}) {
        for (bool has_grad : {true, false}) {
          const DType param_dtype = has_grad && ns == DType::kBF16 ? DType::kBF16 : DType::kF32;
          const std::string what =
              Describe(shape) + " variant " + std::to_string(static_cast<int>(variant)) + " ns " +
              std::to_string(static_cast<int>(ns)) + " grad " + std::to_string(has_grad);
          const MatrixData d = RandomMatrix(shape, 31);
          const std::vector<float> o = Randn(d.param.size(), 37, 0.125f);
          MatrixResult r[2];
          std::vector<float> slots[2];
          Side* sides[2] = {cpu_.get(), gpu_.get()};
          for (int k = 0; k < 2; ++k) {
            ASSERT_OK_AND_ASSIGN(MatrixBuffers b, UploadMatrix(*sides[k], d, param_dtype,
                                                               DType::kF32, has_grad, ns, variant));
            ASSERT_OK_AND_ASSIGN(void* o_dev, sides[k]->Upload(o, ns));
            b.work.o_rows = o_dev;
            Backend* be = sides[k]->backend();
            ASSERT_OK(sides[k]->Begin());
            ASSERT_OK(be->RowStats(b.work));
            ASSERT_OK(be->FinishNorms(b.work));
            ASSERT_OK(be->CommitMatrix(b.work, sides[k]->control()));
            ASSERT_OK(sides[k]->End());
            ASSERT_OK_AND_ASSIGN(r[k], ReadMatrix(*sides[k], b));
            ASSERT_OK_AND_ASSIGN(slots[k], sides[k]->Download(b.work.row_slots, 2 * shape.rows));
          }
          EXPECT_LE(RelError(slots[1], slots[0]), 1e-6) << what;
          EXPECT_NEAR(r[1].scale, r[0].scale, 1e-6 * std::fabs(r[0].scale)) << what;
          EXPECT_LE(RelError(r[1].momentum, r[0].momentum), 1e-6) << what;
          EXPECT_LE(RelError(r[1].v, r[0].v), 1e-6) << what;
          const std::vector<float> before = RoundTo(d.param, param_dtype);
          if (param_dtype == DType::kF32) {
            ExpectUpdateNear(before, r[1].param, r[0].param, 1e-5, what);
          } else {
            // One rounding of W to bf16 on each side; an fp32 difference may round apart.
            EXPECT_LE(RelError(Minus(r[1].param, before), Minus(r[0].param, before)), 5e-2) << what;
          }
        }
      }
    }
  }
}

// The norms must not depend on how rows are split across ranks: two "ranks" writing their rows
// of the same slots give the single-rank scale bit for bit (one of them empty for 1 row).
TEST_F(CudaVsCpuTest, FinishNormsIndependentOfRowSplit) {
  for (const Shape& shape : kShapes) {
    const MatrixData d = RandomMatrix(shape, 41);
    const std::vector<float> o = Randn(d.param.size(), 43, 0.125f);
    float scale[2];
    for (int split = 0; split < 2; ++split) {
      ASSERT_OK_AND_ASSIGN(MatrixBuffers b, UploadMatrix(*gpu_, d, DType::kF32, DType::kF32, true,
                                                         DType::kF32, Variant::kNorMuon));
      ASSERT_OK_AND_ASSIGN(void* o_dev, gpu_->Upload(o, DType::kF32));
      b.work.o_rows = o_dev;
      ASSERT_OK(gpu_->Begin());
      if (split == 0) {
        ASSERT_OK(gpu_backend_->RowStats(b.work));
      } else {
        const int64_t first = (shape.rows + 1) / 2;
        for (int64_t begin : {int64_t{0}, first}) {
          MatrixWork part = b.work;
          part.row_begin = begin;
          part.row_count = begin == 0 ? first : shape.rows - first;
          part.v = b.work.v + begin;
          part.v_new = b.work.v_new + begin;
          part.o_rows = static_cast<const float*>(o_dev) + begin * shape.cols;
          ASSERT_OK(gpu_backend_->RowStats(part));
        }
      }
      ASSERT_OK(gpu_backend_->FinishNorms(b.work));
      ASSERT_OK(gpu_->End());
      ASSERT_OK_AND_ASSIGN(std::vector<float> s, gpu_->Download(b.work.scale, 1));
      scale[split] = s[0];
    }
    EXPECT_EQ(std::memcmp(&scale[0], &scale[1], sizeof(float)), 0)
        << Describe(shape) << ": " << scale[0] << " vs " << scale[1];
  }
}

TEST_F(CudaVsCpuTest, CommitAdamW) {
  constexpr int64_t kCount = 1000;  // not a multiple of the block size
  const std::vector<float> param = Randn(kCount, 51, 0.02f);
  const std::vector<float> grad = Randn(kCount, 52, 1.0f);
  const std::vector<float> exp_avg = Randn(kCount, 53, 0.1f);
  const std::vector<float> exp_avg_sq = Uniform(kCount, 54, 0.0f, 0.01f);
  for (DType param_dtype : {DType::kF32, DType::kBF16}) {
    for (int grad_kind = 0; grad_kind < 3; ++grad_kind) {  // fp32, bf16, none
      const DType grad_dtype = grad_kind == 1 ? DType::kBF16 : DType::kF32;
      const std::string what = "param " + std::to_string(static_cast<int>(param_dtype)) + " grad " +
                               std::to_string(grad_kind);
      std::vector<float> p[2], m[2], v[2];
      int64_t steps[2] = {0, 0};
      Side* sides[2] = {cpu_.get(), gpu_.get()};
      for (int k = 0; k < 2; ++k) {
        AdamWWork w;
        w.index = 1;
        w.count = kCount;
        ASSERT_OK_AND_ASSIGN(w.param, sides[k]->Upload(param, param_dtype));
        w.param_dtype = param_dtype;
        if (grad_kind != 2) {
          ASSERT_OK_AND_ASSIGN(void* g, sides[k]->Upload(grad, grad_dtype));
          w.grad = g;
        }
        w.grad_dtype = grad_dtype;
        ASSERT_OK_AND_ASSIGN(w.exp_avg, sides[k]->UploadF32(exp_avg));
        ASSERT_OK_AND_ASSIGN(w.exp_avg_sq, sides[k]->UploadF32(exp_avg_sq));
        ASSERT_OK_AND_ASSIGN(void* step, sides[k]->Alloc(sizeof(int64_t)));
        const int64_t three = 3;  // this step is t = 4
        ASSERT_OK(sides[k]->backend()->CopyFromHost(step, &three, sizeof(three)));
        w.step = static_cast<int64_t*>(step);
        w.scalars = sides[k]->adamw_group();
        ASSERT_OK(sides[k]->Begin());
        ASSERT_OK(sides[k]->backend()->CommitAdamW(w, sides[k]->control()));
        ASSERT_OK(sides[k]->End(w.step, 1));
        ASSERT_OK_AND_ASSIGN(p[k], sides[k]->Download(w.param, kCount, param_dtype));
        ASSERT_OK_AND_ASSIGN(m[k], sides[k]->Download(w.exp_avg, kCount));
        ASSERT_OK_AND_ASSIGN(v[k], sides[k]->Download(w.exp_avg_sq, kCount));
        ASSERT_OK(sides[k]->backend()->CopyToHost(&steps[k], w.step, sizeof(int64_t)));
      }
      EXPECT_EQ(steps[0], 4) << what;
      EXPECT_EQ(steps[1], 4) << what;
      EXPECT_LE(RelError(m[1], m[0]), 1e-6) << what;
      EXPECT_LE(RelError(v[1], v[0]), 1e-6) << what;
      const std::vector<float> before = RoundTo(param, param_dtype);
      if (param_dtype == DType::kF32) {
        ExpectUpdateNear(before, p[1], p[0], 1e-5, what);
      } else {
        // An AdamW step is far below a bf16 ulp of most weights: compare the stored values.
        EXPECT_LE(RelError(p[1], p[0]), 1e-2) << what;
      }
    }
  }
}

// A NaN or Inf gradient sets the smallest offending index; the commit passes then write nothing
// and EndStep counts a skipped step; the next clean step is taken again.
TEST_F(CudaVsCpuTest, CheckFiniteSkipsTheStep) {
  constexpr int64_t kCount = 100000;  // several blocks of the check
  std::vector<float> finite = Randn(kCount, 61, 1.0f);
  std::vector<float> nan_grad = finite, inf_grad = finite;
  nan_grad[kCount / 2] = std::nanf("");
  inf_grad[kCount - 1] = INFINITY;
  const Shape shape = kShapes[0];
  const MatrixData d = RandomMatrix(shape, 63);
  const std::vector<float> o = Randn(d.param.size(), 64, 0.125f);
  const std::vector<float> adam_param = Randn(16, 65, 0.02f);

  Side* sides[2] = {cpu_.get(), gpu_.get()};
  StepControl control[2];
  for (int k = 0; k < 2; ++k) {
    Backend* be = sides[k]->backend();
    ASSERT_OK_AND_ASSIGN(void* nan_dev, sides[k]->Upload(nan_grad, DType::kF32));
    ASSERT_OK_AND_ASSIGN(void* finite_dev, sides[k]->Upload(finite, DType::kF32));
    ASSERT_OK_AND_ASSIGN(void* inf_dev, sides[k]->Upload(inf_grad, DType::kBF16));
    ASSERT_OK_AND_ASSIGN(MatrixBuffers b, UploadMatrix(*sides[k], d, DType::kF32, DType::kF32, true,
                                                       DType::kF32, Variant::kNorMuon));
    ASSERT_OK_AND_ASSIGN(void* o_dev, sides[k]->Upload(o, DType::kF32));
    b.work.o_rows = o_dev;
    AdamWWork a;
    a.index = 9;
    a.count = static_cast<int64_t>(adam_param.size());
    ASSERT_OK_AND_ASSIGN(a.param, sides[k]->Upload(adam_param, DType::kF32));
    ASSERT_OK_AND_ASSIGN(a.exp_avg, sides[k]->UploadF32(std::vector<float>(16, 0.0f)));
    ASSERT_OK_AND_ASSIGN(a.exp_avg_sq, sides[k]->UploadF32(std::vector<float>(16, 0.0f)));
    ASSERT_OK_AND_ASSIGN(void* step, sides[k]->Alloc(sizeof(int64_t)));
    a.step = static_cast<int64_t*>(step);
    a.scalars = sides[k]->adamw_group();
    ASSERT_OK_AND_ASSIGN(void* adam_grad,
                         sides[k]->Upload(std::vector<float>(16, 1.0f), DType::kF32));
    a.grad = adam_grad;

    ASSERT_OK(sides[k]->Begin());
    ASSERT_OK(be->CheckFinite(7, nan_dev, DType::kF32, kCount, sides[k]->control()));
    ASSERT_OK(be->CheckFinite(3, finite_dev, DType::kF32, kCount, sides[k]->control()));
    ASSERT_OK(be->CheckFinite(5, inf_dev, DType::kBF16, kCount, sides[k]->control()));
    ASSERT_OK(be->CheckFinite(2, nullptr, DType::kF32, kCount, sides[k]->control()));
    ASSERT_OK(be->RowStats(b.work));
    ASSERT_OK(be->FinishNorms(b.work));
    ASSERT_OK(be->CommitMatrix(b.work, sides[k]->control()));
    ASSERT_OK(be->CommitAdamW(a, sides[k]->control()));
    ASSERT_OK(sides[k]->End(a.step, 1));
    ASSERT_OK_AND_ASSIGN(control[k], sides[k]->Control());
    EXPECT_EQ(control[k].nonfinite_param, 5) << k;
    EXPECT_EQ(control[k].comm_error, 0) << k;
    EXPECT_EQ(control[k].steps_taken, 0) << k;
    EXPECT_EQ(control[k].steps_skipped, 1) << k;

    ASSERT_OK_AND_ASSIGN(MatrixResult r, ReadMatrix(*sides[k], b));
    EXPECT_TRUE(BitwiseEqual(r.param, d.param)) << k << ": skipped step wrote W";
    EXPECT_TRUE(BitwiseEqual(r.momentum, d.momentum)) << k << ": skipped step wrote M";
    EXPECT_TRUE(BitwiseEqual(r.v, d.v)) << k << ": skipped step wrote v";
    ASSERT_OK_AND_ASSIGN(std::vector<float> ap, sides[k]->Download(a.param, 16));
    EXPECT_TRUE(BitwiseEqual(ap, adam_param)) << k << ": skipped step wrote the AdamW param";
    int64_t steps = -1;
    ASSERT_OK(be->CopyToHost(&steps, a.step, sizeof(steps)));
    EXPECT_EQ(steps, 0) << k;

    // The next step is clean: BeginStep clears the flag, the commit happens.
    ASSERT_OK(sides[k]->Begin());
    ASSERT_OK(be->CheckFinite(3, finite_dev, DType::kF32, kCount, sides[k]->control()));
    ASSERT_OK(be->CommitMatrix(b.work, sides[k]->control()));
    ASSERT_OK(sides[k]->End(a.step, 1));
    ASSERT_OK_AND_ASSIGN(control[k], sides[k]->Control());
    EXPECT_EQ(control[k].nonfinite_param, kNoParam) << k;
    EXPECT_EQ(control[k].steps_taken, 1) << k;
    EXPECT_EQ(control[k].steps_skipped, 1) << k;
    ASSERT_OK(be->CopyToHost(&steps, a.step, sizeof(steps)));
    EXPECT_EQ(steps, 1) << k;
    ASSERT_OK_AND_ASSIGN(r, ReadMatrix(*sides[k], b));
    EXPECT_FALSE(BitwiseEqual(r.param, d.param)) << k << ": clean step did not write W";
  }
}

// Whole matrix steps: GPU fp32 against CPU fp32 within the NS tolerance, GPU bf16 against CPU
// fp32 within the bf16 tolerance.
TEST_F(CudaVsCpuTest, MatrixStep) {
  for (const Shape& shape : kShapes) {
    for (Variant variant : {Variant::kNorMuon, Variant::kNorMuonPaper, Variant::kMuon}) {
      const std::string what =
          Describe(shape) + " variant " + std::to_string(static_cast<int>(variant));
      const MatrixData d = RandomMatrix(shape, 71);
      ASSERT_OK_AND_ASSIGN(MatrixResult cpu, MatrixStep(*cpu_, d, DType::kF32, variant));
      ASSERT_OK_AND_ASSIGN(MatrixResult gpu32, MatrixStep(*gpu_, d, DType::kF32, variant));
      ASSERT_OK_AND_ASSIGN(MatrixResult gpu16, MatrixStep(*gpu_, d, DType::kBF16, variant));
      ExpectUpdateNear(d.param, gpu32.param, cpu.param, 1e-4, what + " fp32");
      ExpectUpdateNear(d.param, gpu16.param, cpu.param, 7e-2, what + " bf16");
      EXPECT_LE(RelError(gpu32.momentum, cpu.momentum), 1e-6) << what;
      EXPECT_LE(RelError(gpu16.momentum, cpu.momentum), 1e-6) << what;
      EXPECT_LE(RelError(gpu32.v, cpu.v), 1e-4) << what;
      EXPECT_LE(RelError(gpu16.v, cpu.v), 1.5e-1) << what;
    }
  }
}

// The same inputs give the same bits, run to run, in both precisions.
TEST_F(CudaVsCpuTest, Deterministic) {
  for (const Shape& shape : kShapes) {
    const MatrixData d = RandomMatrix(shape, 81);
    for (DType ns : {DType::kF32, DType::kBF16}) {
      ASSERT_OK_AND_ASSIGN(MatrixResult a, MatrixStep(*gpu_, d, ns, Variant::kNorMuon));
      ASSERT_OK_AND_ASSIGN(MatrixResult b, MatrixStep(*gpu_, d, ns, Variant::kNorMuon));
      const std::string what = Describe(shape) + " ns " + std::to_string(static_cast<int>(ns));
      EXPECT_TRUE(BitwiseEqual(a.o, b.o)) << what;
      EXPECT_TRUE(BitwiseEqual(a.param, b.param)) << what;
      EXPECT_TRUE(BitwiseEqual(a.v, b.v)) << what;
      EXPECT_EQ(std::memcmp(&a.scale, &b.scale, sizeof(float)), 0) << what;
    }
  }
}

}  // namespace
}  // namespace normuon
