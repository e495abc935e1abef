// The CUDA backend: normuon::Backend (kernels/backend.h) on one GPU. Every call of a step is
// queued on the step's stream (the one given to BeginStep) and returns without waiting; nothing
// between BeginStep and EndStep allocates or synchronizes with the host (docs/ARCHITECTURE.md section 5), so
// a step can be captured in a CUDA graph. The kernels live in elementwise.cu and
// newton_schulz.cu, the Gram iteration in gram_newton_schulz.cu; this file holds the memory entry
// points, the standard cuBLAS Newton-Schulz driver and the error handling.
//
// Newton-Schulz without transposes: a row-major m x n matrix is, byte for byte, a column-major
// n x m matrix. With s = min(m, n), l = max(m, n) and X the s x l (short, wide) matrix the
// iteration works on:
// - tall (m > n): X = U^T, and the buffer read column-major with leading dimension s IS X.
//     A = X X^T            gemm(N, T)  s x s, k = l
//     X' = B X + a X       gemm(N, N)  s x l, k = s
// - wide (m <= n): X = U, and the buffer read column-major (ld l) is Y = X^T (l x s).
//     A = X X^T = Y^T Y    gemm(T, N)  s x s, k = l
//     Y' = X'^T = Y B^T + a Y   gemm(N, T)  l x s, k = s
// In both cases the result read back row-major is O (m x n), so no transpose kernel is needed.
// B = b A + c A A is column-major in both cases. cuBLAS's C is read and written, so the beta
// terms use copies: B-buffer = A, then C = c A A + b C; X-next = X, then C = B X + a C. X
// ping-pongs between the batch's output buffer and one workspace, arranged so the last iteration
// writes the output buffer.
//
// Determinism: one cuBLAS handle with a fixed workspace (set again after every cublasSetStream,
// which would otherwise reset it to the default pool), atomics not allowed, and kernels without
// float atomics; the same inputs give the same bits run to run.
//
// Graph mode (config.cuda_graph): BeginCapture .. EndCapture records the calls of one step into a
// CUDA graph (thread-local stream capture; the fixed cuBLAS workspace keeps cuBLAS from
// allocating inside it, and alpha/beta in host pointer mode are baked in, as the NS coefficients
// are constants); LaunchGraph replays it. The per-step scalars stay outside the graph: each launch
// first copies them from a ring of pinned staging buffers into their device buffer on the launch's
// stream, so the graph's kernels read the current values. A slot is rewritten only after its last
// copy has completed (an event per slot), so a copy still pending never reads a changed buffer.
#include <cublas_v2.h>
#include <nvtx3/nvToolsExt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/backend.h"
#include "kernels/cuda/cublas_util.cuh"
#include "kernels/cuda/gram_newton_schulz.cuh"
#include "kernels/cuda/kernels.cuh"
#include "base/status_macros.h"

namespace normuon {
namespace {

using gpu::CudaStatus;
using gpu::CudaType;

// An NVTX range for the lifetime of the object, so Nsight Systems shows each stage the backend
// issues (host side; Nsight maps it to the kernels it launched). Header-only NVTX 3.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace
namespace {

// cuBLAS workspace: the size NVIDIA recommends for Hopper (smaller GPUs use part of it).
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

// As CudaStatus, for a call whose failure must not linger as the runtime's "last error" (the next
// launch check, cudaGetLastError, would report it again).
absl::Status CudaStatusCleared(cudaError_t e, absl::string_view call) {
  if (e != cudaSuccess) cudaGetLastError();
  return CudaStatus(e, call);
}

// Workspace needs of one Newton-Schulz batch, in bytes.
struct NsNeeds {
  size_t x = 0;         // one copy of the batch's X
  size_t square = 0;    // the batch's s x s matrices (A or B)
  size_t partials = 0;  // norm partial sums
  size_t gram_square = 0;  // Gram: the batch's s x s matrices (Q, Q', R Z), 0 without Gram
};

NsNeeds NeedsOf(const NsBatch& b) {
  NsNeeds n;
  if (b.rows <= 0 || b.cols <= 0 || b.count <= 0) return n;
  const size_t elem = SizeOf(b.dtype);
  const size_t count = static_cast<size_t>(b.count);
  const size_t s = static_cast<size_t>(std::min(b.rows, b.cols));
  n.x = count * static_cast<size_t>(b.rows) * static_cast<size_t>(b.cols) * elem;
  n.square = count * s * s * elem;
  n.partials =
      count * static_cast<size_t>(gpu::NormPartialBlocks(b.rows * b.cols)) * sizeof(double);
  if (UsesGram(b.method, b.rows, b.cols)) n.gram_square = n.square;
  return n;
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {}

  ~CudaBackend() override {
    if (cudaSetDevice(device_) != cudaSuccess) return;
    if (capturing_) {  // a capture left open by a failure: end it, keep nothing
      cudaGraph_t graph = nullptr;
      if (cudaStreamEndCapture(capture_stream_, &graph) == cudaSuccess && graph != nullptr) {
        cudaGraphDestroy(graph);
      }
      cudaGetLastError();
      capturing_ = false;
    }
    // Nothing may still run on our buffers: wait for the last step (errors are moot here).
    if (done_event_ != nullptr) {
      cudaEventSynchronize(done_event_);
      cudaEventDestroy(done_event_);
    }
    DropGraph();
    FreeStaging();
    for (cudaEvent_t e : marks_) cudaEventDestroy(e);
    if (comm_stream_ != nullptr) {
      cudaStreamSynchronize(comm_stream_);
      cudaStreamDestroy(comm_stream_);
    }
    for (cudaEvent_t e : handoffs_) cudaEventDestroy(e);
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    FreeWorkspaces();
    cudaFree(cublas_workspace_);
  }

  // Second half of construction (MakeCudaBackend): what can fail.
  absl::Status Init() {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(cudaEventCreateWithFlags(&done_event_, cudaEventDisableTiming));
    return absl::OkStatus();
  }

  const char* name() const override { return "cuda"; }

  absl::StatusOr<void*> Alloc(size_t bytes) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    // Never hand out null for a size of 0: null means "no buffer" to the runtime.
    const size_t n = std::max<size_t>(bytes, 1);
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, n);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear it, so the next launch check does not report it again
      if (e == cudaErrorMemoryAllocation) {
        return absl::ResourceExhaustedError(
            absl::StrCat("cudaMalloc of ", bytes, " bytes on device ", device_, ": out of memory"));
      }
      return CudaStatus(e, "cudaMalloc");
    }
    // cudaMemset may return before the device is done; the memory may next be used on any
    // stream (also a non-blocking one), so wait for the zeros here (set-up time, not a step).
    const char* call = "cudaMemsetAsync";
    cudaError_t zero = cudaMemsetAsync(p, 0, n, nullptr);
    if (zero == cudaSuccess) {
      call = "cudaStreamSynchronize";
      zero = cudaStreamSynchronize(nullptr);
    }
    if (zero != cudaSuccess) {
      cudaFree(p);
      return CudaStatus(zero, call);
    }
    return p;
  }

  void Free(void* p) override {
    if (p == nullptr) return;
    if (cudaSetDevice(device_) != cudaSuccess) return;
    cudaFree(p);  // waits for work on the device; an error here has no one to report to
  }

  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    NORMUON_RETURN_IF_ERROR(WaitStep());
    if (bytes == 0) return absl::OkStatus();
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, nullptr));
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(nullptr));
    return absl::OkStatus();
  }

  absl::Status CopyFromHost(void* dst, const void* src, size_t bytes) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    NORMUON_RETURN_IF_ERROR(WaitStep());
    if (bytes == 0) return absl::OkStatus();
    // A copy from pageable memory may return before it lands in device memory; wait for it, so
    // the data is in place for work on any stream afterwards.
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, nullptr));
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(nullptr));
    return absl::OkStatus();
  }

  absl::Status CheckPointer(const void* p, absl::string_view field) override {
    if (p == nullptr) return absl::InvalidArgumentError(absl::StrCat(field, " is null"));
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    cudaPointerAttributes attr{};
    const cudaError_t e = cudaPointerGetAttributes(&attr, p);
    if (e != cudaSuccess) {
      cudaGetLastError();  // older drivers report unknown host pointers as an error: clear it
      return absl::InvalidArgumentError(absl::StrCat(
          field, " is not CUDA device memory (cudaPointerGetAttributes: ", cudaGetErrorString(e),
          ")"));
    }
    if (attr.type == cudaMemoryTypeManaged) return absl::OkStatus();
    if (attr.type != cudaMemoryTypeDevice) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, " is host memory; the CUDA backend needs device memory of device ", device_));
    }
    if (attr.device != device_) {
      return absl::InvalidArgumentError(absl::StrCat(field, " is memory of CUDA device ",
                                                     attr.device, ", not of device ", device_));
    }
    return absl::OkStatus();
  }

  // What Prepare(batches) allocates for Newton-Schulz, buffer by buffer as Prepare and
  // PrepareGramTiles do (each at least 1 byte, as Alloc), plus the fixed cuBLAS workspace.
  uint64_t NsWorkspaceBytes(const std::vector<NsBatch>& batches) const override {
    NsNeeds need;
    uint64_t gram_params = 0, offsets = 0;
    int64_t most = 0;
    for (const NsBatch& b : batches) {
      const NsNeeds n = NeedsOf(b);
      need.x = std::max(need.x, n.x);
      need.square = std::max(need.square, n.square);
      need.partials = std::max(need.partials, n.partials);
      need.gram_square = std::max(need.gram_square, n.gram_square);
      if (!UsesGram(b.method, b.rows, b.cols)) continue;
      gram_params += static_cast<uint64_t>(std::max<int64_t>(b.count, 0));
      if (b.symmetric != SymmetricProducts::kTiles) continue;
      const GramProductPlans p = PlanGramProducts(b.rows, b.cols, b.count,
                                                  SymmetricTile(std::min(b.rows, b.cols)));
      most = std::max({most, p.gram.gemms(), p.square.gemms()});
      offsets += 3 * static_cast<uint64_t>(p.gram.gemms() + p.square.gemms());
    }
    auto alloc = [](uint64_t bytes) { return std::max<uint64_t>(bytes, 1); };
    uint64_t total = kCublasWorkspaceBytes;
    if (need.x > 0) {
      total += alloc(need.x) + 2 * alloc(need.square) + alloc(need.partials);
    }
    if (need.gram_square > 0) {
      total += 3 * alloc(need.gram_square) + alloc(gram_params * sizeof(int32_t));
      if (offsets > 0) {
        total += alloc(offsets * sizeof(int64_t)) +
                 alloc(static_cast<uint64_t>(3 * most) * sizeof(void*));
      }
    }
    return total;
  }
  uint64_t NsWorkspaceHeld() const override {
    return ns_held_ + (cublas_workspace_ != nullptr ? kCublasWorkspaceBytes : 0);
  }

  absl::Status Prepare(const std::vector<NsBatch>& batches) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    NORMUON_RETURN_IF_ERROR(WaitStep());  // the old workspaces may be in use by the last step
    NsNeeds need;
    for (const NsBatch& b : batches) {
      NORMUON_RETURN_IF_ERROR(CheckBatchShape(b));
      const NsNeeds n = NeedsOf(b);
      need.x = std::max(need.x, n.x);
      need.square = std::max(need.square, n.square);
      need.partials = std::max(need.partials, n.partials);
      need.gram_square = std::max(need.gram_square, n.gram_square);
    }
    if (cublas_ == nullptr) {
      RETURN_IF_CUBLAS_ERROR(cublasCreate(&cublas_));
      // Host alpha/beta (the NS coefficients); plain fp32 math: no TF32 (CUBLAS_COMPUTE_32F
      // below), and split reductions stay in fp32 even for bf16 outputs; no atomics, so the
      // GEMMs are deterministic.
      RETURN_IF_CUBLAS_ERROR(cublasSetPointerMode(cublas_, CUBLAS_POINTER_MODE_HOST));
      RETURN_IF_CUBLAS_ERROR(cublasSetMathMode(
          cublas_, static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                             CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
      RETURN_IF_CUBLAS_ERROR(cublasSetAtomicsMode(cublas_, CUBLAS_ATOMICS_NOT_ALLOWED));
    }
    if (cublas_workspace_ == nullptr) {
      NORMUON_ASSIGN_OR_RETURN(cublas_workspace_, Alloc(kCublasWorkspaceBytes));
    }
    FreeWorkspaces();
    if (need.x > 0) {
      NORMUON_ASSIGN_OR_RETURN(ns_x_, AllocNs(need.x));
      NORMUON_ASSIGN_OR_RETURN(ns_a_, AllocNs(need.square));
      NORMUON_ASSIGN_OR_RETURN(ns_b_, AllocNs(need.square));
      NORMUON_ASSIGN_OR_RETURN(void* partials, AllocNs(need.partials));
      ns_partials_ = static_cast<double*>(partials);
    }
    if (need.gram_square > 0) {
      NORMUON_ASSIGN_OR_RETURN(ns_q_, AllocNs(need.gram_square));
      NORMUON_ASSIGN_OR_RETURN(ns_qn_, AllocNs(need.gram_square));
      NORMUON_ASSIGN_OR_RETURN(ns_rz_, AllocNs(need.gram_square));
      // Every Gram batch's parameter indices on the device, for the divergence check.
      std::vector<int32_t> params;
      for (const NsBatch& b : batches) {
        if (!UsesGram(b.method, b.rows, b.cols)) continue;
        gram_params_at_[b.u] = static_cast<int64_t>(params.size());
        params.insert(params.end(), b.params.begin(), b.params.end());
        params.resize(gram_params_at_[b.u] + b.count, kNoParam);
      }
      NORMUON_ASSIGN_OR_RETURN(void* dev, AllocNs(params.size() * sizeof(int32_t)));
      gram_params_ = static_cast<int32_t*>(dev);
      NORMUON_RETURN_IF_ERROR(CopyFromHost(gram_params_, params.data(),
                                           params.size() * sizeof(int32_t)));
      NORMUON_RETURN_IF_ERROR(PrepareGramTiles(batches));
    }
    capacity_ = need;
    return BindStream(stream_);
  }

  absl::Status BeginStep(void* stream, const void* host_scalars, void* dev_scalars, size_t bytes,
                         StepControl* control) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    if (capturing_ && (bytes > 0 || static_cast<cudaStream_t>(stream) != capture_stream_)) {
      // A copy from pageable host memory must not be baked into a graph; LaunchGraph copies the
      // scalars. And the step's calls must go to the stream being captured.
      return absl::InternalError(
          "BeginStep during a capture: needs bytes = 0 and the captured stream");
    }
    NORMUON_RETURN_IF_ERROR(BindStream(static_cast<cudaStream_t>(stream)));
    if (bytes > 0) {
      RETURN_IF_CUDA_ERROR(
          cudaMemcpyAsync(dev_scalars, host_scalars, bytes, cudaMemcpyHostToDevice, stream_));
    }
    RETURN_IF_CUDA_ERROR(gpu::LaunchResetControl(control, stream_));
    return absl::OkStatus();
  }

  absl::Status RefreshScalars(const void* host_scalars, void* dev_scalars,
                              size_t bytes) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    if (bytes == 0) return absl::OkStatus();
    // From pageable memory the call returns once the bytes are staged, so the caller may change
    // host_scalars at once; the copy lands in stream order, after BeginStep's.
    RETURN_IF_CUDA_ERROR(
        cudaMemcpyAsync(dev_scalars, host_scalars, bytes, cudaMemcpyHostToDevice, stream_));
    return absl::OkStatus();
  }

  absl::Status CheckFinite(int32_t index, const void* grad, DType dtype, int64_t count,
                           StepControl* control) override {
    NvtxRange nvtx("normuon/finite_check");
    if (grad == nullptr || count <= 0) return absl::OkStatus();
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(gpu::LaunchCheckFinite(index, grad, dtype, count, control, stream_));
    return absl::OkStatus();
  }

  absl::Status CheckFiniteRows(int32_t index, const void* grad, DType dtype, int64_t rows,
                               int64_t cols, int64_t ld, StepControl* control) override {
    NvtxRange nvtx("normuon/finite_check");
    if (grad == nullptr || rows <= 0 || cols <= 0) return absl::OkStatus();
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(
        gpu::LaunchCheckFiniteRows(index, grad, dtype, rows, cols, ld, control, stream_));
    return absl::OkStatus();
  }

  // A piece of PieceCols(w) columns: grad rows ParamLd(w) apart, U rows URowsLd(w) apart,
  // momentum packed (backend.h MatrixWork).
  absl::Status Blend(const MatrixWork& w) override {
    NvtxRange nvtx("normuon/momentum");
    const int64_t pc = PieceCols(w);
    if (w.row_count <= 0 || pc <= 0) return absl::OkStatus();
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(gpu::LaunchBlend(w.grad, w.grad_dtype, ParamLd(w), w.momentum, w.u_rows,
                                          NsInputDType(w.ns_dtype), URowsLd(w), w.row_count, pc,
                                          w.scalars, w.nesterov, stream_));
    return absl::OkStatus();
  }

  absl::Status CopyAsync(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
    return absl::OkStatus();
  }

  absl::Status CopyRectAsync(void* dst, size_t dst_pitch, const void* src, size_t src_pitch,
                             size_t row_bytes, int64_t rows) override {
    if (rows <= 0 || row_bytes == 0) return absl::OkStatus();
    RETURN_IF_CUDA_ERROR(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, row_bytes,
                                           static_cast<size_t>(rows), cudaMemcpyDeviceToDevice,
                                           stream_));
    return absl::OkStatus();
  }

  absl::Status NewtonSchulz(const NsBatch& b) override {
    NvtxRange nvtx("normuon/newton_schulz");
    if (b.rows <= 0 || b.cols <= 0 || b.count <= 0) return absl::OkStatus();
    NORMUON_RETURN_IF_ERROR(CheckBatchShape(b));
    const NsNeeds need = NeedsOf(b);
    if (cublas_ == nullptr || need.x > capacity_.x || need.square > capacity_.square ||
        need.partials > capacity_.partials || need.gram_square > capacity_.gram_square ||
        (need.gram_square > 0 && gram_params_at_.count(b.u) == 0) ||
        (need.gram_square > 0 && b.symmetric == SymmetricProducts::kTiles &&
         gram_tiles_.count(b.u) == 0)) {
      return absl::FailedPreconditionError(
          absl::StrCat("NewtonSchulz: batch of ", b.count, " x ", b.rows, " x ", b.cols,
                       " was not passed to Prepare (its workspace is not allocated)"));
    }
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));

    const bool tall = b.rows > b.cols;
    const int s = static_cast<int>(std::min(b.rows, b.cols));
    const int l = static_cast<int>(std::max(b.rows, b.cols));
    const int count = static_cast<int>(b.count);
    const long long x_stride = static_cast<long long>(b.rows) * b.cols;
    const long long sq_stride = static_cast<long long>(s) * s;
    const size_t elem = SizeOf(b.dtype);
    const size_t x_bytes = static_cast<size_t>(count) * x_stride * elem;
    const size_t sq_bytes = static_cast<size_t>(count) * sq_stride * elem;
    const cudaDataType type = CudaType(b.dtype);
    if (UsesGram(b.method, b.rows, b.cols)) return GramNewtonSchulz(b);

    // X ping-pongs between b.o and the workspace; start where an even number of swaps ends in
    // b.o. (Normalizing straight into b.o is fine even if b.o aliases b.u: elementwise.)
    const size_t iterations = b.coefficients.size();
    void* x = iterations % 2 == 0 ? b.o : ns_x_;
    void* x_next = iterations % 2 == 0 ? ns_x_ : b.o;
    RETURN_IF_CUDA_ERROR(
        gpu::LaunchNormalize(b.u, x, b.dtype, x_stride, b.count, b.ns_eps, b.ns_norm_scale,
                             ns_partials_, stream_));

    for (const std::array<float, 3>& abc : b.coefficients) {
      const float coef_a = abc[0], coef_b = abc[1], coef_c = abc[2];
      // A = X X^T
      if (tall) {
        NORMUON_RETURN_IF_ERROR(Gemm(CUBLAS_OP_N, CUBLAS_OP_T, s, s, l, 1.0f, x, s, x_stride, x, s,
                             x_stride, 0.0f, ns_a_, s, sq_stride, count, type));
      } else {
        NORMUON_RETURN_IF_ERROR(Gemm(CUBLAS_OP_T, CUBLAS_OP_N, s, s, l, 1.0f, x, l, x_stride, x, l,
                             x_stride, 0.0f, ns_a_, s, sq_stride, count, type));
      }
      // B = b A + c A A
      RETURN_IF_CUDA_ERROR(
          cudaMemcpyAsync(ns_b_, ns_a_, sq_bytes, cudaMemcpyDeviceToDevice, stream_));
      NORMUON_RETURN_IF_ERROR(Gemm(CUBLAS_OP_N, CUBLAS_OP_N, s, s, s, coef_c, ns_a_, s, sq_stride, ns_a_, s,
                           sq_stride, coef_b, ns_b_, s, sq_stride, count, type));
      // X' = a X + B X
      RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(x_next, x, x_bytes, cudaMemcpyDeviceToDevice, stream_));
      if (tall) {
        NORMUON_RETURN_IF_ERROR(Gemm(CUBLAS_OP_N, CUBLAS_OP_N, s, l, s, 1.0f, ns_b_, s, sq_stride, x, s,
                             x_stride, coef_a, x_next, s, x_stride, count, type));
      } else {
        NORMUON_RETURN_IF_ERROR(Gemm(CUBLAS_OP_N, CUBLAS_OP_T, l, s, s, 1.0f, x, l, x_stride, ns_b_, s,
                             sq_stride, coef_a, x_next, l, x_stride, count, type));
      }
      std::swap(x, x_next);
    }
    return absl::OkStatus();
  }

  // The Gram iteration (gram_newton_schulz.cuh) on this backend's workspaces.
  absl::Status GramNewtonSchulz(const NsBatch& b) {
    gpu::GramWorkspace w;
    w.cublas = cublas_;
    w.stream = stream_;
    w.x = ns_x_;
    w.r = ns_a_;
    w.z = ns_b_;
    w.q = ns_q_;
    w.qn = ns_qn_;
    w.rz = ns_rz_;
    w.partials = ns_partials_;
    w.params = gram_params_ + gram_params_at_.at(b.u);
    if (b.symmetric == SymmetricProducts::kTiles) {
      const auto& plans = gram_tiles_.at(b.u);
      w.gram_tiles = &plans.first;
      w.square_tiles = &plans.second;
      w.pointers = gram_tile_pointers_;
    }
    return gpu::GramNewtonSchulz(b, w);
  }

  // Symmetric products: every tiled Gram batch's two plans (kernels/symmetric_plan.h), their
  // offsets uploaded into one device buffer, and the pointer arrays the grouped GEMMs read.
  absl::Status PrepareGramTiles(const std::vector<NsBatch>& batches) {
    std::vector<int64_t> offsets;
    std::vector<std::pair<const void*, std::pair<SymmetricPlan, SymmetricPlan>>> plans;
    int64_t most = 0;
    for (const NsBatch& b : batches) {
      if (!UsesGram(b.method, b.rows, b.cols) || b.symmetric != SymmetricProducts::kTiles) continue;
      const int64_t tile = SymmetricTile(std::min(b.rows, b.cols));
      GramProductPlans p = PlanGramProducts(b.rows, b.cols, b.count, tile);
      most = std::max({most, p.gram.gemms(), p.square.gemms()});
      plans.push_back({b.u, {std::move(p.gram), std::move(p.square)}});
    }
    if (plans.empty()) return absl::OkStatus();
    std::vector<std::pair<size_t, size_t>> at;  // each plan pair's offsets start in `offsets`
    for (const auto& [u, pair] : plans) {
      const size_t first = offsets.size();
      std::vector<int64_t> o = gpu::OffsetsOf(pair.first);
      offsets.insert(offsets.end(), o.begin(), o.end());
      const size_t second = offsets.size();
      o = gpu::OffsetsOf(pair.second);
      offsets.insert(offsets.end(), o.begin(), o.end());
      at.push_back({first, second});
    }
    NORMUON_ASSIGN_OR_RETURN(void* dev, AllocNs(offsets.size() * sizeof(int64_t)));
    gram_tile_offsets_ = static_cast<int64_t*>(dev);
    NORMUON_RETURN_IF_ERROR(
        CopyFromHost(gram_tile_offsets_, offsets.data(), offsets.size() * sizeof(int64_t)));
    NORMUON_ASSIGN_OR_RETURN(void* ptrs, AllocNs(static_cast<size_t>(3 * most) * sizeof(void*)));
    gram_tile_pointers_ = static_cast<void**>(ptrs);
    for (size_t i = 0; i < plans.size(); ++i) {
      gram_tiles_[plans[i].first] = {
          gpu::DescribePlan(plans[i].second.first, gram_tile_offsets_ + at[i].first),
          gpu::DescribePlan(plans[i].second.second, gram_tile_offsets_ + at[i].second)};
    }
    return absl::OkStatus();
  }

  absl::Status RowStats(const MatrixWork& w) override {
    NvtxRange nvtx("normuon/row_stats");
    if (w.row_count <= 0 || w.cols <= 0) return absl::OkStatus();
    if (!WholeORows(w)) {
      // The runtime gives the owner's whole O for rows split across column pieces.
      return absl::InvalidArgumentError(absl::StrCat(
          "RowStats of param ", w.index, ": needs whole rows of O, got col_begin = ", w.col_begin,
          ", col_count = ", w.col_count, ", u_ld = ", w.u_ld, " of ", w.cols, " columns"));
    }
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(gpu::LaunchRowStats(w.o_rows, w.ns_dtype, w.rows, w.cols, w.row_begin,
                                             w.row_count, w.v, w.v_new, w.row_slots, w.scalars,
                                             w.variant, w.control, stream_));
    return absl::OkStatus();
  }

  // AdaMuon on a column piece: this piece's v_new from its O (row stride URowsLd(w)), with
  // RowStats's per-element arithmetic (elementwise.cu ElementV), so the bits are the owner's.
  absl::Status ElementSecondMoment(const MatrixWork& w) override {
    NvtxRange nvtx("normuon/row_stats");
    const int64_t pc = PieceCols(w);
    if (w.row_count <= 0 || pc <= 0) return absl::OkStatus();
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(gpu::LaunchElementSecondMoment(w.o_rows, w.ns_dtype, URowsLd(w), w.v,
                                                        w.v_new, w.row_count, pc, w.scalars,
                                                        stream_));
    return absl::OkStatus();
  }

  absl::Status ColumnStats(const MatrixWork& w, const void* o_full) override {
    NvtxRange nvtx("normuon/column_stats");
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(gpu::LaunchColumnStats(o_full, w.ns_dtype, w.rows, w.cols, w.v,
                                                w.row_slots, w.scalars, stream_));
    return absl::OkStatus();
  }

  absl::Status ColumnUpdate(const MatrixWork& w) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(gpu::LaunchColumnUpdate(w.v, w.v_new, w.row_slots_total + 2 * w.rows,
                                                 w.cols, w.scalars, stream_));
    return absl::OkStatus();
  }

  absl::Status FinishNorms(const MatrixWork& w) override {
    NvtxRange nvtx("normuon/norms");
    if (w.rows <= 0 || w.cols <= 0 || w.scale == nullptr) return absl::OkStatus();
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(gpu::LaunchFinishNorms(w.row_slots_total, w.rows, w.cols, w.variant,
                                                w.shape_factor, w.scalars, w.scale, stream_));
    return absl::OkStatus();
  }

  absl::Status CommitMatrix(const MatrixWork& w, const StepControl* control) override {
    NvtxRange nvtx("normuon/update");
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    if (w.column_axis) {
      // The replicated column v changes on every rank, rows or not.
      RETURN_IF_CUDA_ERROR(gpu::LaunchCopyUnlessSkipped(w.v, w.v_new, w.cols, control, stream_));
    }
    const int64_t pc = PieceCols(w);
    if (w.row_count <= 0 || pc <= 0) return absl::OkStatus();
    gpu::CommitMatrixArgs a;
    a.param = w.param;
    a.param_dtype = w.param_dtype;
    a.grad = w.grad;
    a.grad_dtype = w.grad_dtype;
    a.momentum = w.momentum;
    a.v = w.v;
    a.v_new = w.v_new;
    a.o = w.o_rows;
    a.o_dtype = w.ns_dtype;
    a.row_count = w.row_count;
    a.cols = pc;  // the piece's columns (backend.h MatrixWork)
    a.ld = ParamLd(w);
    a.o_ld = URowsLd(w);
    a.col_begin = w.col_begin;
    a.scalars = w.scalars;
    a.scale = w.scale;
    a.control = control;
    a.variant = w.variant;
    a.cautious_wd = w.cautious_wd;
    a.column_axis = w.column_axis;
    RETURN_IF_CUDA_ERROR(gpu::LaunchCommitMatrix(a, stream_));
    return absl::OkStatus();
  }

  absl::Status CommitAdamW(const AdamWWork& w, const StepControl* control) override {
    NvtxRange nvtx("normuon/adamw");
    if (w.count <= 0) return absl::OkStatus();
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(gpu::LaunchCommitAdamW(w.param, w.param_dtype, w.grad, w.grad_dtype,
                                                w.exp_avg, w.exp_avg_sq, w.count, w.step, w.scalars,
                                                control, w.cautious_wd, stream_));
    return absl::OkStatus();
  }

  absl::Status WriteStepFlags(float* flags, int rank, int world, uint32_t marked_hash,
                              const StepControl* control) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(
        gpu::LaunchWriteStepFlags(flags, rank, world, marked_hash, control, stream_));
    return absl::OkStatus();
  }

  absl::Status FoldStepFlags(const float* flags, int world, StepControl* control) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(gpu::LaunchFoldStepFlags(flags, world, control, stream_));
    return absl::OkStatus();
  }

  absl::Status SetCommError(StepControl* control) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(gpu::LaunchSetCommError(control, stream_));
    return absl::OkStatus();
  }

  absl::Status EndStep(int64_t* adamw_steps, int64_t n, StepControl* control) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(gpu::LaunchEndStep(adamw_steps, n, control, stream_));
    // While capturing, the completion is recorded by each LaunchGraph, after the graph: an event
    // recorded inside a capture is no event the host could wait on.
    if (!capturing_) RETURN_IF_CUDA_ERROR(cudaEventRecord(done_event_, stream_));
    return absl::OkStatus();
  }

  absl::Status PrepareMarks(int count) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    while (static_cast<int>(marks_.size()) < count) {
      cudaEvent_t e = nullptr;
      RETURN_IF_CUDA_ERROR(cudaEventCreate(&e));  // timing enabled
      marks_.push_back(e);
    }
    return absl::OkStatus();
  }

  absl::Status Mark(int slot) override { return RecordMark(slot, stream_); }

  absl::Status MarkComm(int slot) override {
    if (comm_stream_ == nullptr) return absl::InternalError("comm mark without a comm stream");
    return RecordMark(slot, comm_stream_);
  }

  absl::Status PrepareCommStream(int events) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    if (comm_stream_ == nullptr) {
      // The highest priority: the exchanges' copies (or NCCL's kernels) get SMs ahead of the
      // Newton-Schulz GEMMs they overlap.
      int least = 0, greatest = 0;
      RETURN_IF_CUDA_ERROR(cudaDeviceGetStreamPriorityRange(&least, &greatest));
      RETURN_IF_CUDA_ERROR(
          cudaStreamCreateWithPriority(&comm_stream_, cudaStreamNonBlocking, greatest));
    }
    while (static_cast<int>(handoffs_.size()) < events) {
      cudaEvent_t e = nullptr;
      RETURN_IF_CUDA_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      handoffs_.push_back(e);
    }
    return absl::OkStatus();
  }

  void* CommStream() override { return comm_stream_; }

  absl::Status RecordHandoff(int slot, bool on_comm) override {
    NORMUON_RETURN_IF_ERROR(CheckHandoff(slot));
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(cudaEventRecord(handoffs_[slot], on_comm ? comm_stream_ : stream_));
    return absl::OkStatus();
  }

  absl::Status WaitHandoff(int slot, bool on_comm) override {
    NORMUON_RETURN_IF_ERROR(CheckHandoff(slot));
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(
        cudaStreamWaitEvent(on_comm ? comm_stream_ : stream_, handoffs_[slot], 0));
    return absl::OkStatus();
  }

  absl::StatusOr<double> MarkElapsedMs(int from, int to) override {
    const int n = static_cast<int>(marks_.size());
    if (from < 0 || to < 0 || from >= n || to >= n) {
      return absl::InternalError(absl::StrCat("mark slots ", from, ", ", to, " of ", n));
    }
    float ms = 0.0f;
    RETURN_IF_CUDA_ERROR(cudaEventElapsedTime(&ms, marks_[from], marks_[to]));
    return static_cast<double>(ms);
  }

  absl::Status WaitStep() override {
    // An event never recorded counts as complete.
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(cudaEventSynchronize(done_event_));
    return absl::OkStatus();
  }

  absl::Status PrepareGraph(size_t scalar_bytes) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    if (staging_[0].host != nullptr && staging_bytes_ >= scalar_bytes) return absl::OkStatus();
    FreeStaging();
    for (StagingSlot& slot : staging_) {
      // Pinned, so that the copy is asynchronous and reads the buffer when it runs (which is why a
      // slot is not rewritten before its event says the copy is done).
      const cudaError_t e = cudaMallocHost(&slot.host, std::max<size_t>(scalar_bytes, 1));
      if (e != cudaSuccess) {
        slot.host = nullptr;
        cudaGetLastError();
        FreeStaging();
        if (e == cudaErrorMemoryAllocation) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "cudaMallocHost of ", scalar_bytes, " bytes (graph-mode scalar staging) failed"));
        }
        return CudaStatus(e, "cudaMallocHost");
      }
      const cudaError_t ev = cudaEventCreateWithFlags(&slot.copied, cudaEventDisableTiming);
      if (ev != cudaSuccess) {
        slot.copied = nullptr;
        FreeStaging();
        return CudaStatusCleared(ev, "cudaEventCreateWithFlags");
      }
    }
    staging_bytes_ = scalar_bytes;
    next_slot_ = 0;
    return absl::OkStatus();
  }

  absl::Status BeginCapture(void* stream) override {
    if (capturing_) return absl::FailedPreconditionError("BeginCapture: a capture is open");
    if (staging_[0].host == nullptr) {
      return absl::FailedPreconditionError("BeginCapture before PrepareGraph");
    }
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    NORMUON_RETURN_IF_ERROR(BindStream(s));
    // Thread-local: only this thread's unsafe calls (none are made) could invalidate it; other
    // threads of the process (a trainer's data loader, say) stay free to use CUDA.
    NORMUON_RETURN_IF_ERROR(CudaStatusCleared(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal),
                                      "cudaStreamBeginCapture"));
    capturing_ = true;
    capture_stream_ = s;
    return absl::OkStatus();
  }

  absl::Status EndCapture(bool instantiate) override {
    if (!capturing_) return absl::FailedPreconditionError("EndCapture without BeginCapture");
    // The capture ends whatever happens below, so that the stream is usable again.
    const cudaError_t device = cudaSetDevice(device_);
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(capture_stream_, &graph);
    capture_stream_ = nullptr;
    if (end != cudaSuccess) {  // e.g. cudaErrorStreamCaptureInvalidated
      if (graph != nullptr) cudaGraphDestroy(graph);
      return CudaStatusCleared(end, "cudaStreamEndCapture");
    }
    if (graph == nullptr) return absl::InternalError("cudaStreamEndCapture returned no graph");
    if (device != cudaSuccess) {
      cudaGraphDestroy(graph);
      return CudaStatusCleared(device, "cudaSetDevice");
    }
    if (!instantiate) {
      return CudaStatusCleared(cudaGraphDestroy(graph), "cudaGraphDestroy");
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);  // the executable graph does not need it
    if (inst != cudaSuccess) return CudaStatusCleared(inst, "cudaGraphInstantiate");
    DropGraph();
    graph_exec_ = exec;
    return absl::OkStatus();
  }

  absl::Status LaunchGraph(void* stream, const void* host_scalars, void* dev_scalars,
                           size_t bytes) override {
    if (capturing_) return absl::FailedPreconditionError("LaunchGraph during a capture");
    if (graph_exec_ == nullptr) return absl::FailedPreconditionError("LaunchGraph: no graph");
    if (bytes > staging_bytes_) {
      return absl::InternalError(absl::StrCat("LaunchGraph: ", bytes, " bytes of scalars, ",
                                              staging_bytes_, " staged"));
    }
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (bytes > 0) {
      StagingSlot& slot = staging_[next_slot_];
      next_slot_ = (next_slot_ + 1) % kStagingSlots;
      // The copy that last read this slot (kStagingSlots launches ago) must be done before the
      // slot changes; an event never recorded counts as complete.
      RETURN_IF_CUDA_ERROR(cudaEventSynchronize(slot.copied));
      std::memcpy(slot.host, host_scalars, bytes);
      RETURN_IF_CUDA_ERROR(
          cudaMemcpyAsync(dev_scalars, slot.host, bytes, cudaMemcpyHostToDevice, s));
      RETURN_IF_CUDA_ERROR(cudaEventRecord(slot.copied, s));
    }
    RETURN_IF_CUDA_ERROR(cudaGraphLaunch(graph_exec_, s));
    RETURN_IF_CUDA_ERROR(cudaEventRecord(done_event_, s));
    return absl::OkStatus();
  }

  void DropGraph() override {
    if (graph_exec_ == nullptr) return;
    // A launch still in flight is not cut short: CUDA frees the graph when it completes.
    if (cudaSetDevice(device_) == cudaSuccess) {
      cudaGraphExecDestroy(graph_exec_);
      cudaGetLastError();
    }
    graph_exec_ = nullptr;
  }

  bool HasGraph() const override { return graph_exec_ != nullptr; }

 private:
  // cuBLAS takes int sizes and batch counts.
  static absl::Status CheckBatchShape(const NsBatch& b) {
    if (b.rows > INT_MAX || b.cols > INT_MAX || b.count > INT_MAX) {
      return absl::InvalidArgumentError(absl::StrCat("NewtonSchulz batch of ", b.count, " x ",
                                                     b.rows, " x ", b.cols,
                                                     " exceeds cuBLAS's int sizes"));
    }
    return absl::OkStatus();
  }

  // Records mark `slot` on `stream`; inside a capture as an event record node of the graph, so
  // the mark is recorded again at every launch.
  absl::Status RecordMark(int slot, cudaStream_t stream) {
    if (slot < 0 || slot >= static_cast<int>(marks_.size())) {
      return absl::InternalError(absl::StrCat("mark slot ", slot, " of ", marks_.size()));
    }
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    if (capturing_) {
      RETURN_IF_CUDA_ERROR(cudaEventRecordWithFlags(marks_[slot], stream, cudaEventRecordExternal));
    } else {
      RETURN_IF_CUDA_ERROR(cudaEventRecord(marks_[slot], stream));
    }
    return absl::OkStatus();
  }

  absl::Status CheckHandoff(int slot) const {
    if (slot < 0 || slot >= static_cast<int>(handoffs_.size()) || comm_stream_ == nullptr) {
      return absl::InternalError(absl::StrCat("hand-off slot ", slot, " of ", handoffs_.size(),
                                              comm_stream_ == nullptr ? " (no comm stream)" : ""));
    }
    return absl::OkStatus();
  }

  // Makes cuBLAS queue on `stream`. cublasSetStream resets the workspace to cuBLAS's own pool,
  // so our fixed workspace is set again every time.
  absl::Status BindStream(cudaStream_t stream) {
    stream_ = stream;
    if (cublas_ == nullptr || cublas_workspace_ == nullptr) return absl::OkStatus();
    RETURN_IF_CUBLAS_ERROR(cublasSetStream(cublas_, stream_));
    RETURN_IF_CUBLAS_ERROR(cublasSetWorkspace(cublas_, cublas_workspace_, kCublasWorkspaceBytes));
    return absl::OkStatus();
  }

  // C = alpha op(A) op(B) + beta C for `batch` column-major matrices, fp32 compute.
  absl::Status Gemm(cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k,
                    float alpha, const void* a, int lda, long long stride_a, const void* b, int ldb,
                    long long stride_b, float beta, void* c, int ldc, long long stride_c, int batch,
                    cudaDataType type) {
    return gpu::BatchedGemm(cublas_, op_a, op_b, m, n, k, alpha, a, lda, stride_a, b, ldb,
                            stride_b, beta, c, ldc, stride_c, batch, type);
  }

  // Graph mode's pinned scalar staging (waits for each slot's last copy first).
  void FreeStaging() {
    for (StagingSlot& slot : staging_) {
      if (slot.copied != nullptr) {
        cudaEventSynchronize(slot.copied);
        cudaEventDestroy(slot.copied);
      }
      if (slot.host != nullptr) cudaFreeHost(slot.host);
      slot = StagingSlot();
    }
    cudaGetLastError();
    staging_bytes_ = 0;
  }

  // Alloc for a Newton-Schulz workspace buffer, counted in ns_held_ (freed by FreeWorkspaces).
  absl::StatusOr<void*> AllocNs(size_t bytes) {
    absl::StatusOr<void*> p = Alloc(bytes);
    if (p.ok()) ns_held_ += std::max<size_t>(bytes, 1);
    return p;
  }

  void FreeWorkspaces() {
    ns_held_ = 0;
    cudaFree(ns_x_);
    cudaFree(ns_a_);
    cudaFree(ns_b_);
    cudaFree(ns_partials_);
    cudaFree(ns_q_);
    cudaFree(ns_qn_);
    cudaFree(ns_rz_);
    cudaFree(gram_params_);
    cudaFree(gram_tile_offsets_);
    cudaFree(gram_tile_pointers_);
    ns_q_ = ns_qn_ = ns_rz_ = nullptr;
    gram_params_ = nullptr;
    gram_params_at_.clear();
    gram_tile_offsets_ = nullptr;
    gram_tile_pointers_ = nullptr;
    gram_tiles_.clear();
    ns_x_ = ns_a_ = ns_b_ = nullptr;
    ns_partials_ = nullptr;
    capacity_ = NsNeeds();
  }

  const int device_;
  cudaStream_t stream_ = nullptr;  // the current step's stream
  std::vector<cudaEvent_t> marks_;  // device-side timing marks (Mark / MarkElapsedMs)
  cudaEvent_t done_event_ = nullptr;
  // Two-stream pipelining: the collectives' stream and the stage hand-off events.
  cudaStream_t comm_stream_ = nullptr;
  std::vector<cudaEvent_t> handoffs_;
  cublasHandle_t cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;
  // Newton-Schulz workspaces, sized in Prepare for the largest batch.
  void* ns_x_ = nullptr;
  void* ns_a_ = nullptr;
  void* ns_b_ = nullptr;
  double* ns_partials_ = nullptr;
  // Gram: Q, Q', R Z, and every Gram batch's parameter indices (offset per batch, by its u).
  void* ns_q_ = nullptr;
  void* ns_qn_ = nullptr;
  void* ns_rz_ = nullptr;
  int32_t* gram_params_ = nullptr;
  std::map<const void*, int64_t> gram_params_at_;
  // Gram with symmetric products: each tiled batch's plans (by its u), their device offsets, and
  // the grouped GEMMs' pointer arrays.
  std::map<const void*, std::pair<gpu::DevicePlan, gpu::DevicePlan>> gram_tiles_;
  int64_t* gram_tile_offsets_ = nullptr;
  void** gram_tile_pointers_ = nullptr;
  NsNeeds capacity_;
  uint64_t ns_held_ = 0;  // bytes of the buffers AllocNs made since the last FreeWorkspaces
  // Graph mode: the open capture, the executable graph, and the scalar staging ring.
  bool capturing_ = false;
  cudaStream_t capture_stream_ = nullptr;
  cudaGraphExec_t graph_exec_ = nullptr;
  struct StagingSlot {
    void* host = nullptr;          // pinned, staging_bytes_
    cudaEvent_t copied = nullptr;  // recorded after the last copy from this slot
  };
  static constexpr int kStagingSlots = 4;
  std::array<StagingSlot, kStagingSlots> staging_{};
  size_t staging_bytes_ = 0;
  int next_slot_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return absl::UnavailableError(absl::StrCat("no CUDA device: cudaGetDeviceCount failed: ",
                                               cudaGetErrorName(e), ": ", cudaGetErrorString(e)));
  }
  if (device < 0 || device >= count) {
    return absl::UnavailableError(
        absl::StrCat("no CUDA device ", device, ": this machine has ", count, " CUDA device(s)"));
  }
  auto backend = std::make_unique<CudaBackend>(device);
  NORMUON_RETURN_IF_ERROR(backend->Init());
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace normuon
