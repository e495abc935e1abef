// The contract between the runtime (which plans and orders a step) and the two backends that
// execute it: the CPU backend (the readable reference, runs each call to completion) and the
// CUDA backend (queues kernels and cuBLAS calls on the step's stream and never blocks).
//
// Every pointer in the work structs below is backend memory (host memory for CPU, device memory
// for CUDA), allocated by Backend::Alloc at finalize, except param/grad, which are the caller's.
// The math of each call is docs/ARCHITECTURE.md section 1; the commit rule is section 6: nothing writes
// parameters or optimizer state before Commit*, and Commit* do nothing when the step's control
// block says the step is skipped.
#ifndef NORMUON_BACKEND_H_
#define NORMUON_BACKEND_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/ns_method.h"

// Functions of this header and of kernels/elementwise_math.h that the CUDA kernels call too.
#ifdef __CUDACC__
#define NORMUON_HOST_DEVICE __host__ __device__
#else
#define NORMUON_HOST_DEVICE
#endif

namespace normuon {

enum class DType : int32_t { kF32 = 0, kBF16 = 1, kF16 = 2 };  // kF16: CUDA Newton-Schulz only

inline size_t SizeOf(DType d) { return d == DType::kF32 ? 4 : 2; }

// The dtype of U (the momentum-blended update Newton-Schulz reads) for Newton-Schulz dtype `ns`:
// the same, except fp16, whose range cannot hold U (gradient-sized elements of 1e-6 are
// subnormal there, large ones overflow): U is then bf16 (same size, so the buffers and the
// exchanges are unchanged), and the normalization writes X = U / ||U|| in fp16, where every
// element is at most 1 in magnitude. O and the iteration are fp16.
inline DType NsInputDType(DType ns) { return ns == DType::kF16 ? DType::kBF16 : ns; }

enum class Variant : int32_t { kNorMuon = 0, kNorMuonPaper = 1, kMuon = 2, kAdaMuon = 3 };

// v holds one value per element (AdaMuon) or per row (NorMuon variants); Muon has none.
NORMUON_HOST_DEVICE inline bool PerElementV(Variant v) { return v == Variant::kAdaMuon; }

// Sentinel for StepControl::nonfinite_param: no non-finite gradient seen.
inline constexpr int32_t kNoParam = 0x7fffffff;

// Per-step values of one hyper-parameter group, in backend memory, written at the start of every
// step so that kernels (and a captured CUDA graph) read the current values.
struct GroupScalars {
  float lr;
  float weight_decay;
  float beta1;  // NorMuon: momentum; AdamW: beta1
  float beta2;
  float eps;
  float pad[3];
};

// Device-side outcome of a step, in backend memory. Reset at BeginStep.
struct StepControl {
  int32_t nonfinite_param;  // smallest param index with a NaN/Inf gradient, or kNoParam
  int32_t comm_error;       // non-zero: a collective failed, the commit is skipped
  int64_t steps_taken;      // committed steps so far (kept across steps)
  int64_t steps_skipped;    // skipped steps so far (kept across steps)
  // Gram Newton-Schulz results this rank redid with the standard iteration (ns_method.h): the
  // first such matrix's parameter index this step (kNoParam: none) and why (NsFallback), and how
  // many over all steps (kept across steps). Written on the matrix's owner only.
  int32_t ns_fallback_param;
  int32_t ns_fallback_reason;
  int64_t ns_fallbacks;
};

// A step is skipped when any check failed; Commit* test this on the device.
NORMUON_HOST_DEVICE inline bool StepSkipped(const StepControl& c) {
  return c.nonfinite_param != kNoParam || c.comm_error != 0;
}

// StepControl::comm_error values: a collective or a stage failed on this rank; or (from
// kMarkedSetsDiffer + r) rank r marked another set of parameters with grad_ready than rank 0;
// kPeerFailed: another rank's collective or stage failed in this step (it said so in its
// flags); kEpochsDiffer: the ranks have not committed the same number of steps (a one-sided
// failure of an earlier step's last collective: docs/ARCHITECTURE.md section 6, "One-sided
// failures").
inline constexpr int32_t kCommFailed = 1;
inline constexpr int32_t kMarkedSetsDiffer = 2;
inline constexpr int32_t kPeerFailed = -1;
inline constexpr int32_t kEpochsDiffer = -2;

// The step's flags in a sharded step (kStepFlagsPerRank * world floats after the row slots,
// summed over ranks by the slot all-reduce): [r] = 1 + the first non-finite parameter of rank r
// (0: none); [world + 2r], [world + 2r + 1] = the two 16-bit halves of the hash of the set of
// parameters rank r marked with grad_ready; [3 world + 2r], [3 world + 2r + 1] = the two 16-bit
// halves of rank r's epoch, the low 32 bits of its steps_taken (committed steps) before this
// step; [5 world + r] = 1 when a collective or a stage of this step failed on rank r
// (comm_error set before the all-reduce), else 0. Every value is an integer below 2^24, exact in
// float. Each rank writes only its own values, the others stay 0, so the sum carries every
// rank's values exactly whatever the summation order. One function for both backends.
inline constexpr int kStepFlagsPerRank = 6;

NORMUON_HOST_DEVICE inline void WriteStepFlagsOf(float* flags, int rank, int world,
                                                 uint32_t marked_hash, const StepControl& c) {
  const uint32_t epoch = static_cast<uint32_t>(c.steps_taken);
  flags[rank] = c.nonfinite_param == kNoParam ? 0.0f : static_cast<float>(c.nonfinite_param + 1);
  flags[world + 2 * rank] = static_cast<float>(marked_hash >> 16);
  flags[world + 2 * rank + 1] = static_cast<float>(marked_hash & 0xffffu);
  flags[3 * world + 2 * rank] = static_cast<float>(epoch >> 16);
  flags[3 * world + 2 * rank + 1] = static_cast<float>(epoch & 0xffffu);
  flags[5 * world + rank] = c.comm_error != 0 ? 1.0f : 0.0f;
}

// Rank r's epoch from the summed flags (the low 32 bits of its steps_taken).
NORMUON_HOST_DEVICE inline uint32_t StepFlagsEpochOf(const float* flags, int world, int r) {
  return (static_cast<uint32_t>(flags[3 * world + 2 * r]) << 16) |
         static_cast<uint32_t>(flags[3 * world + 2 * r + 1]);
}

// Whether rank r said that this step failed on it.
NORMUON_HOST_DEVICE inline bool StepFlagsFailedOf(const float* flags, int world, int r) {
  return flags[5 * world + r] != 0.0f;
}

// After the all-reduce, in this order of precedence for c->comm_error: a rank whose epoch
// differs from rank 0's (kEpochsDiffer: nothing may be committed while the ranks' states
// differ); this rank's own failure (kCommFailed, already set); another rank's failure
// (kPeerFailed); the first rank whose marked set differs from rank 0's (kMarkedSetsDiffer + r).
// The first non-finite parameter over all ranks goes to c->nonfinite_param. Every rank folds the
// same sums, so every rank skips the same steps (only a rank's own kCommFailed is its own).
NORMUON_HOST_DEVICE inline void FoldStepFlagsOf(const float* flags, int world, StepControl* c) {
  for (int r = 0; r < world; ++r) {
    const float f = flags[r];
    if (f > 0.0f && static_cast<int32_t>(f) - 1 < c->nonfinite_param) {
      c->nonfinite_param = static_cast<int32_t>(f) - 1;
    }
  }
  for (int r = 1; r < world; ++r) {
    if (StepFlagsEpochOf(flags, world, r) != StepFlagsEpochOf(flags, world, 0)) {
      c->comm_error = kEpochsDiffer;
      return;
    }
  }
  if (c->comm_error != 0) return;
  for (int r = 0; r < world; ++r) {
    if (StepFlagsFailedOf(flags, world, r)) {
      c->comm_error = kPeerFailed;
      return;
    }
  }
  for (int r = 1; r < world; ++r) {
    if (flags[world + 2 * r] != flags[world] || flags[world + 2 * r + 1] != flags[world + 1]) {
      c->comm_error = kMarkedSetsDiffer + r;
      return;
    }
  }
}

// One NorMuon matrix parameter as this rank sees it.
struct MatrixWork {
  int32_t index = 0;                 // param index (registration order)
  int64_t rows = 0, cols = 0;        // global shape m x n, row-major
  int64_t row_begin = 0, row_count = 0;
  void* param = nullptr;             // row_count x cols, param_dtype (caller's)
  DType param_dtype = DType::kF32;
  const void* grad = nullptr;        // row_count x cols, grad_dtype (caller's); null = zero grad
  DType grad_dtype = DType::kF32;
  float* momentum = nullptr;         // row_count x cols
  float* v = nullptr;                // second moment: row_count values, or row_count x cols for
                                     // AdaMuon (PerElementV)
  float* v_new = nullptr;            // same size: scratch, copied to v at commit
  void* u_rows = nullptr;            // row_count x cols, NsInputDType(ns_dtype): where Blend
                                     // writes this rank's rows of U (single rank: inside the
                                     // owner's full U)
  const void* o_rows = nullptr;      // row_count x cols, ns_dtype: this rank's rows of O
  float* row_slots = nullptr;        // 2 * rows: [r] = sum_j O_rj^2, [rows + r] = sum_j O'_rj^2
                                     // for global row r; this rank writes only its own rows
                                     // (the others stay 0, so a sum over ranks is exact)
  const float* row_slots_total = nullptr;  // the complete slots, summed over ranks (single
                                           // rank: == row_slots); FinishNorms reads these
  float* scale = nullptr;            // 1 float: the multiplier of O'_ij in the update
  const GroupScalars* scalars = nullptr;
  Variant variant = Variant::kNorMuon;
  bool nesterov = true;
  DType ns_dtype = DType::kF32;
  float shape_factor = 1.0f;         // the variant's shape factor, or the lr-adjust switch's
  bool cautious_wd = false;          // decay only where sign(update) == sign(W)
  const StepControl* control = nullptr;  // AdaMuon's bias correction: t = steps_taken + 1
  // Neuron axis = columns (NorMuon variants): v and v_new hold one value per column (cols),
  // replicated on every rank; row_slots/row_slots_total then have 2*rows + cols floats, the
  // last cols being the column means of O^2 (written by the owner only).
  bool column_axis = false;
  // Two-dimensional pieces (normuon.h, normuon_param_desc_t): this rank holds the columns
  // [col_begin, col_begin + col_count) of its rows (col_count 0: every column). param and grad
  // step ld elements from row to row, u_rows and o_rows u_ld (0: the piece's columns, packed);
  // momentum and per-element v are packed (row_count x the piece's columns). Blend and
  // CommitMatrix honour these (both backends); RowStats needs whole rows of O (the runtime gives
  // the owner's full O for column-split blocks) and refuses a narrower piece on CUDA.
  int64_t col_begin = 0, col_count = 0, ld = 0, u_ld = 0;
};

// The piece's columns, and the row strides of param/grad and of u_rows/o_rows.
inline int64_t PieceCols(const MatrixWork& w) { return w.col_count > 0 ? w.col_count : w.cols; }
inline int64_t ParamLd(const MatrixWork& w) { return w.ld > 0 ? w.ld : PieceCols(w); }
inline int64_t URowsLd(const MatrixWork& w) { return w.u_ld > 0 ? w.u_ld : PieceCols(w); }
// True when the work is whole, packed rows: what every backend runs.
inline bool WholePackedRows(const MatrixWork& w) {
  return w.col_begin == 0 && PieceCols(w) == w.cols && ParamLd(w) == w.cols &&
         URowsLd(w) == w.cols;
}
// True when o_rows holds whole rows, packed (row stride cols): what RowStats reads.
inline bool WholeORows(const MatrixWork& w) {
  return w.col_begin == 0 && PieceCols(w) == w.cols && URowsLd(w) == w.cols;
}

// A batch of same-shape matrices orthogonalized together. u and o hold `count` matrices of
// rows x cols back to back (u in NsInputDType(dtype), o in dtype). Newton-Schulz reads u, writes
// o; works on X^T when rows > cols, so the short side is the one squared.
struct NsBatch {
  int64_t rows = 0, cols = 0;
  int64_t count = 0;
  const void* u = nullptr;
  void* o = nullptr;
  DType dtype = DType::kF32;
  float ns_eps = 1e-7f;
  float ns_norm_scale = 1.0f;  // X0 = U / (||U||_F * ns_norm_scale + ns_eps); Polar Express: 1.02
  std::vector<std::array<float, 3>> coefficients;  // (a, b, c) per iteration
  NsMethod method = NsMethod::kStandard;
  std::vector<int32_t> restarts;  // Gram: iterations (0-based, ascending) preceded by a restart
  SymmetricProducts symmetric = SymmetricProducts::kDense;  // Gram on CUDA (ns_method.h)
  std::vector<int32_t> params;    // the parameter index of each matrix (fallback reports)
  StepControl* control = nullptr; // where Gram fallbacks are recorded
};

// One AdamW parameter (elementwise, purely local).
struct AdamWWork {
  int32_t index = 0;
  int64_t count = 0;                 // elements held here (row_count * cols)
  void* param = nullptr;
  DType param_dtype = DType::kF32;
  const void* grad = nullptr;        // null = zero gradient, no weight decay
  DType grad_dtype = DType::kF32;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  int64_t* step = nullptr;           // bias-correction count; this step uses *step + 1
  const GroupScalars* scalars = nullptr;
  bool cautious_wd = false;          // decay only where sign(update) == sign(W)
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const = 0;

  // True when every call has finished on return (CPU): the runtime may then read backend
  // memory, such as the control block, right after a call without waiting.
  virtual bool IsSynchronous() const { return false; }

  // Memory of this backend, zero-filled. Free(nullptr) is a no-op.
  virtual absl::StatusOr<void*> Alloc(size_t bytes) = 0;
  virtual void Free(void* p) = 0;
  // Synchronous copies between host memory and backend memory (checkpoint I/O, set-up; never
  // inside a step). They wait for the last step to finish first.
  virtual absl::Status CopyToHost(void* dst, const void* src, size_t bytes) = 0;
  virtual absl::Status CopyFromHost(void* dst, const void* src, size_t bytes) = 0;
  // OK when the backend can read and write bytes at p (CUDA: device memory of our device).
  // `field` names the pointer in the error message.
  virtual absl::Status CheckPointer(const void* p, absl::string_view field) = 0;

  // Called once at finalize, after all state is allocated, with every batch a step will run:
  // cuBLAS handles, workspaces, streams and events are created here.
  virtual absl::Status Prepare(const std::vector<NsBatch>& batches) = 0;

  // The bytes of Newton-Schulz workspace Prepare(batches) holds outside Alloc (the CPU backend's
  // matrices X, A, B and, for Gram, Q, Q', R Z, and its conversion buffers), a pure function of
  // the batches' shapes, dtypes and methods (CUDA: X, A, B, the norm partials, Gram's Q, Q', R Z,
  // its parameter indices and tile plans, and the fixed cuBLAS workspace); 0 when a backend has
  // none. normuon_memory_required adds it.
  virtual uint64_t NsWorkspaceBytes(const std::vector<NsBatch>& batches) const { return 0; }
  // What the backend holds of that workspace now (tests compare it with the above).
  virtual uint64_t NsWorkspaceHeld() const { return 0; }

  // A step, in this order, all on `stream` (ignored by CPU):
  // BeginStep copies `bytes` of host_scalars to dev_scalars and clears the control block's
  // per-step fields.
  virtual absl::Status BeginStep(void* stream, const void* host_scalars, void* dev_scalars,
                                 size_t bytes, StepControl* control) = 0;
  // Inside a step begun by grad_ready, at step: copies `bytes` of host_scalars to dev_scalars in
  // the step's stream order (after BeginStep's copy, before the commits), so the values given to
  // step are the ones the commits read. host_scalars may change once this returns.
  virtual absl::Status RefreshScalars(const void* host_scalars, void* dev_scalars,
                                      size_t bytes) = 0;
  // Records `index` in control->nonfinite_param (minimum over calls) if grad holds NaN/Inf.
  virtual absl::Status CheckFinite(int32_t index, const void* grad, DType dtype, int64_t count,
                                   StepControl* control) = 0;
  // CheckFinite over `rows` rows of `cols` elements whose starts are `ld` elements apart (a 2-D
  // piece's gradient; ld == cols: one packed run). The default checks row by row through
  // CheckFinite; the CUDA backend checks the rectangle in one launch.
  virtual absl::Status CheckFiniteRows(int32_t index, const void* grad, DType dtype, int64_t rows,
                                       int64_t cols, int64_t ld, StepControl* control) {
    if (grad == nullptr || rows <= 0 || cols <= 0) return absl::OkStatus();
    if (ld == cols) return CheckFinite(index, grad, dtype, rows * cols, control);
    for (int64_t r = 0; r < rows; ++r) {
      const absl::Status s = CheckFinite(
          index, static_cast<const char*>(grad) + r * ld * static_cast<int64_t>(SizeOf(dtype)),
          dtype, cols, control);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  // u_rows = nesterov ? lerp(G, M', b1) : M', with M' = M + (1-b1)*(G - M); M is not written.
  // lerp is evaluated from the nearer end, as torch's lerp_ (for b1 >= 0.5:
  // M' - (M' - G)*(1 - b1)).
  virtual absl::Status Blend(const MatrixWork& w) = 0;
  // dst = src, bytes of backend memory, on the step's stream: packs and unpacks the messages of
  // the gather and the scatter.
  virtual absl::Status CopyAsync(void* dst, const void* src, size_t bytes) = 0;
  // A rectangle of backend memory on the step's stream: `rows` rows of row_bytes bytes, row r
  // from src + r * src_pitch to dst + r * dst_pitch (both pitches >= row_bytes): packs and
  // unpacks the 2-D pieces' rectangles of the gather and the scatter. The default copies row by
  // row through CopyAsync; the CUDA backend makes one cudaMemcpy2DAsync.
  virtual absl::Status CopyRectAsync(void* dst, size_t dst_pitch, const void* src,
                                     size_t src_pitch, size_t row_bytes, int64_t rows) {
    for (int64_t r = 0; r < rows; ++r) {
      const absl::Status s =
          CopyAsync(static_cast<char*>(dst) + static_cast<size_t>(r) * dst_pitch,
                    static_cast<const char*>(src) + static_cast<size_t>(r) * src_pitch, row_bytes);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  // o = NS(u) for every matrix of the batch.
  virtual absl::Status NewtonSchulz(const NsBatch& b) = 0;
  // From o_rows: v_new_i = v_i + (1-b2)*(mean_j O_ij^2 - v_i) (NorMuon variants; AdaMuon per
  // element: v_new_ij = v_ij + (1-b2)*(O_ij^2 - v_ij); Muon: none), and the row slots of this
  // rank's rows: sum_j O_ij^2 and sum_j (O_ij * f_ij)^2 with f the normalization factor:
  // 1/(sqrt(v_new_i) + eps); AdaMuon 1/(sqrt(v_new_ij / (1 - b2^t)) + eps); Muon 1.
  // For per-element v, v and v_new may be the same buffer (each element is read before it is
  // written): the owner of an AdaMuon column-split block runs it over the whole O that way.
  virtual absl::Status RowStats(const MatrixWork& w) = 0;
  // AdaMuon on a column piece (the owner made the row slots from the whole O): this rank's
  // v_new_ij = v_ij + (1-b2)*(O_ij^2 - v_ij) over its piece (o_rows with row stride u_ld, v and
  // v_new packed), with RowStats's arithmetic, so the bits are the owner's. Writes no slots.
  // Backends without column pieces need not implement it.
  virtual absl::Status ElementSecondMoment(const MatrixWork& w) {
    return absl::UnimplementedError(absl::StrCat("backend '", name(),
                                                 "' runs no AdaMuon column pieces"));
  }
  // Neuron axis = columns, on the matrix's owner, from the full O (rows x cols, ns dtype):
  // column means c_j = mean_i O_ij^2, v_new_j = v_j + (1-b2)*(c_j - v_j), and for every row r
  // the slots sum_j O_rj^2 and sum_j (O_rj / (sqrt(v_new_j) + eps))^2; the column means go to
  // row_slots[2*rows + j]. Deterministic; the same arithmetic as ColumnUpdate.
  virtual absl::Status ColumnStats(const MatrixWork& w, const void* o_full) = 0;
  // Neuron axis = columns, on every rank after the all-reduce: v_new_j from the column means in
  // row_slots_total, bitwise as ColumnStats computed it on the owner.
  virtual absl::Status ColumnUpdate(const MatrixWork& w) = 0;
  // From the complete row_slots_total (summed in global row order, the same function at every world
  // size), writes *w.scale = norm part * w.shape_factor, the norm part being kNorMuon
  // ||O||/(||O'||+eps); kNorMuonPaper 1/(||O'||+eps); kMuon 1; kAdaMuon
  // sqrt(min(m,n))/(||O'||+eps).
  virtual absl::Status FinishNorms(const MatrixWork& w) = 0;
  // Unless the step is skipped: M = M + (1-b1)*(G - M); v = v_new;
  // W = W*(1 - lr*wd) - lr * scale * O_ij * f_ij (f as in RowStats); no weight decay when
  // grad is null; with cautious_wd, decay only the elements where the update and W agree in
  // sign (D_ij * W_ij > 0).
  virtual absl::Status CommitMatrix(const MatrixWork& w, const StepControl* control) = 0;
  // Unless the step is skipped, AdamW as the reference (bias-corrected, decoupled wd).
  virtual absl::Status CommitAdamW(const AdamWWork& w, const StepControl* control) = 0;
  // Sharded steps (world > 1) only, around the all-reduce of the row slots: WriteStepFlags
  // writes this rank's flags (WriteStepFlagsOf) from the control block; FoldStepFlags folds the
  // summed flags of every rank into the control block (FoldStepFlagsOf); on the device, so the
  // step never waits for the host. SetCommError marks the step skipped after a failed collective
  // or stage (comm_error = kCommFailed); the runtime calls it before WriteStepFlags, so the
  // failure travels to the other ranks in the flags.
  virtual absl::Status WriteStepFlags(float* flags, int rank, int world, uint32_t marked_hash,
                                      const StepControl* control) = 0;
  virtual absl::Status FoldStepFlags(const float* flags, int world, StepControl* control) = 0;
  virtual absl::Status SetCommError(StepControl* control) = 0;
  // Counts the step as taken or skipped; increments the n AdamW step counters if taken;
  // records the step's completion.
  virtual absl::Status EndStep(int64_t* adamw_steps, int64_t n, StepControl* control) = 0;
  // Host waits for the last step's completion (CPU: returns at once).
  virtual absl::Status WaitStep() = 0;

  // Device-side timing for asynchronous backends (CUDA: events); synchronous backends are timed
  // on the host and keep these defaults. PrepareMarks at finalize sizes `count` slots; Mark(i)
  // records slot i on the step's stream; after WaitStep, MarkElapsedMs(i, j) is the time from
  // slot i to slot j of the last step.
  virtual absl::Status PrepareMarks(int count) { return absl::OkStatus(); }
  virtual absl::Status Mark(int slot) { return absl::OkStatus(); }
  // Mark(i) on the communication stream of two-stream pipelining (below).
  virtual absl::Status MarkComm(int slot) { return absl::OkStatus(); }
  virtual absl::StatusOr<double> MarkElapsedMs(int from, int to) {
    return absl::UnimplementedError(absl::StrCat(name(), " backend keeps no device marks"));
  }

  // Graph mode (config.cuda_graph; CUDA only, the other backends keep these defaults). The step's
  // device work, from BeginStep (with bytes = 0: the per-step scalars are not part of the graph)
  // to EndStep, is captured once and then replayed:
  //   PrepareGraph   at finalize: staging for scalar_bytes of per-step scalars (pinned host
  //                  memory), so that LaunchGraph allocates nothing.
  //   BeginCapture   starts capturing `stream`: the calls that follow, up to EndCapture, are
  //                  recorded, not run. Marks recorded meanwhile are part of the graph (they are
  //                  recorded again at every launch); EndStep's completion record is not (the
  //                  launch records it).
  //   EndCapture     ends the capture, always (also after a failed call inside it); with
  //                  instantiate, makes the graph the one LaunchGraph launches (replacing any
  //                  earlier one), else discards it. An error (the capture was invalidated, or
  //                  instantiation failed) leaves no graph.
  //   LaunchGraph    on `stream` (any stream): copies `bytes` of host_scalars to dev_scalars
  //                  through the staging, launches the graph, records the step's completion.
  //   DropGraph      forgets the graph (a pointer baked into it changed); a launch still in
  //                  flight completes. HasGraph: whether one is ready to launch.
  // Two-stream pipelining of a sharded step (asynchronous backends; the runtime uses it with a
  // pipelined schedule at world size > 1). The collectives run on a second stream, made with
  // `events` hand-off events by PrepareCommStream at finalize; CommStream() is that stream.
  // RecordHandoff(slot, on_comm) records event `slot` after the work queued so far on the step's
  // stream (on_comm false) or on the communication stream; WaitHandoff(slot, on_comm) makes that
  // stream wait for the event. The pipeline's compute thread calls them for the step's stream
  // while its communication thread calls them for the other, on distinct slots.
  virtual absl::Status PrepareCommStream(int events) { return NoStreams(); }
  virtual void* CommStream() { return nullptr; }
  virtual absl::Status RecordHandoff(int slot, bool on_comm) { return NoStreams(); }
  virtual absl::Status WaitHandoff(int slot, bool on_comm) { return NoStreams(); }

  virtual absl::Status PrepareGraph(size_t scalar_bytes) { return NoGraphs(); }
  virtual absl::Status BeginCapture(void* stream) { return NoGraphs(); }
  virtual absl::Status EndCapture(bool instantiate) { return NoGraphs(); }
  virtual absl::Status LaunchGraph(void* stream, const void* host_scalars, void* dev_scalars,
                                   size_t bytes) {
    return NoGraphs();
  }
  virtual void DropGraph() {}
  virtual bool HasGraph() const { return false; }

 private:
  absl::Status NoStreams() const {
    return absl::UnimplementedError(absl::StrCat(name(), " backend has no streams"));
  }
  absl::Status NoGraphs() const {
    return absl::UnimplementedError(absl::StrCat(name(), " backend cannot capture CUDA graphs"));
  }
};

// The factories keep default visibility: the CUDA objects are compiled with hidden visibility
// (build_defs/cuda.bzl) but are called from the runtime's objects, which may sit in another
// shared object of the build. libnormuon.so still exports only the C API (normuon.lds).
#define NORMUON_INTERNAL_VISIBLE __attribute__((visibility("default")))

// threads: how many threads run the tiles of the CPU Newton-Schulz GEMMs (one OpenBLAS thread
// each; kernels/newton_schulz_cpu.h); 0: as many as OpenBLAS is set to use at Prepare. The results
// are the same bits for every value.
NORMUON_INTERNAL_VISIBLE std::unique_ptr<Backend> MakeCpuBackend(int threads = 0);
// Fails (Unimplemented in a CPU-only build, Unavailable without a device) when there is no
// usable CUDA device.
NORMUON_INTERNAL_VISIBLE absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device);

}  // namespace normuon

#endif  // NORMUON_BACKEND_H_
