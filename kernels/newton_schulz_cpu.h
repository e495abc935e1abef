// Newton-Schulz orthogonalization on the CPU: the readable reference of the NS step
// (docs/ARCHITECTURE.md section 1), on OpenBLAS sgemm. fp32 mode keeps every value in fp32; bf16 mode
// rounds the GEMM inputs and every stored intermediate (X, A, B) to bf16 as the CUDA bf16 path
// stores them, with fp32 accumulation inside each product.
//
// Bitwise whatever the thread count (docs/ARCHITECTURE.md section 6, Determinism). A threaded
// OpenBLAS sgemm (measured on 0.3.21) does not give a single-threaded call's bits: it cuts C
// into pieces per thread, and with the Haswell/Zen (AVX2) kernels the elements at the cuts go
// through the kernel's edge paths (128x128x128: 18% of the elements differ at 2 threads, 36% at
// 4); and with every kernel its threaded driver blocks K differently (200x200xK with the AVX-512
// kernels: 70-80% differ at 2 threads for most K >= 328 not a multiple of 32). A single-threaded
// call's bits depend on its shape and data only. So every GEMM here is cut into a fixed grid of
// output tiles (kNsTile square, set by the shape alone), each tile is one single-threaded sgemm
// call, and the tiles run on the workspace's own threads: the result depends on the shapes and
// the data only, not on how many threads run the tiles nor on OpenBLAS's thread setting. See
// NsCpuWorkspace for the one process-wide effect this has on OpenBLAS.
#ifndef NORMUON_NEWTON_SCHULZ_CPU_H_
#define NORMUON_NEWTON_SCHULZ_CPU_H_

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/ns_method.h"

namespace normuon {

class WorkerPool;

// The side of the square output tiles each GEMM is cut into (edge tiles are smaller). Changing
// it changes the bits of every result with a matrix side above it. Each tile packs its rows and
// columns of the two factors again, so smaller tiles cost more (one thread, OpenBLAS 0.3.21,
// GPT-2 shapes: +7-16% time at 192, +1-6% at 384, against one untiled call) but leave more
// tiles to share among threads (a 768 x 768 product has 4 tiles of 384).
inline constexpr int64_t kNsTile = 384;
// The tile of the Gram iteration's products known to be symmetric, which compute only the tiles
// on and below the diagonal: smaller, so that less of the upper triangle is computed. Measured on
// one GPT-2 124M layer (bench/newton_schulz_cpu_bench, 2 cores, OpenBLAS 0.3.21), Gram's
// speed-up over the standard iteration: 1.36x at 384, 1.45x at 256, 1.54x at 192, 1.53x at 128,
// 1.38x at 96.
inline constexpr int64_t kNsSymmetricTile = 192;

// Scratch for one matrix of up to max_short x max_long (short side squared), and the threads that
// run the tiles.
//
// OpenBLAS: while any NewtonSchulzCpu call is running in the process, OpenBLAS is set to one
// thread (openblas_set_num_threads(1), a process-wide setting: other BLAS calls the program
// makes meanwhile run on one thread too), and the setting found before the first of the
// overlapping calls is put back when the last one returns. Changing OpenBLAS's setting while a
// call runs is not supported (its GEMMs could then be threaded, and the result change bits).
struct NsCpuWorkspace {
  NsCpuWorkspace();
  ~NsCpuWorkspace();
  NsCpuWorkspace(const NsCpuWorkspace&) = delete;
  NsCpuWorkspace& operator=(const NsCpuWorkspace&) = delete;

  // Standard: X, X_next (s x l), A, B (s x s). Gram adds Q, Q_next and R Z (s x s), and uses A
  // for R, B for Z'.
  std::vector<float> x, x_next, a, b, q, q_next, rz;
  // How many threads run the tiles, the caller included. 0 (the default): OpenBLAS's thread
  // setting (outside NewtonSchulzCpu calls) when the first Reserve runs. Only the speed depends
  // on it. Set it before the first Reserve.
  int threads = 0;
  // Gram: products known to be symmetric compute the tiles on and below the diagonal only (Gram
  // products X X^T and R R through ssyrk on the diagonal tiles) and mirror the rest. false: every
  // tile through sgemm (the dense variant, kept to measure against). Changes bits.
  bool symmetric_products = true;
  std::unique_ptr<WorkerPool> pool;  // started by the first Reserve

  // Sizes the buffers (gram: the Gram iteration's too) and starts the threads (no allocation
  // afterwards for matrices this size).
  void Reserve(int64_t short_side, int64_t long_side, bool gram = false);
  // Bytes held by the buffers above.
  uint64_t Bytes() const;
};

// What NewtonSchulzCpu computes and how.
struct NsCpuOptions {
  std::vector<std::array<float, 3>> coefficients;  // (a, b, c) per iteration
  float ns_eps = 1e-7f;
  float norm_scale = 1.0f;
  bool round_bf16 = false;  // emulate bf16 storage of every stored intermediate
  NsMethod method = NsMethod::kStandard;
  // Gram: the iterations (0-based, in [1, iterations)) before which it restarts, ascending.
  std::vector<int32_t> restarts;
};

// o = NS(u): u and o are rows x cols row-major fp32 (o may not alias u). Works on u^T when
// rows > cols. X0 = u / (||u||_F * norm_scale + ns_eps); per (a, b, c): A = X X^T,
// B = b A + c A A, X = a X + B X (standard; Gram computes the same polynomial, ns_method.h).
// round_bf16: emulate bf16 storage of X, A, B (see the file comment). Calls on different
// workspaces may run at once (in-process ranks).
//
// Gram results are checked before they are returned: a non-finite result, or one whose Frobenius
// norm exceeds NsOutputNormBound, is computed again with the standard iteration, and the return
// value says why (kNone otherwise; always kNone for the standard method and square matrices).
// A non-finite input runs the standard iteration directly (there is nothing to protect).
NsFallback NewtonSchulzCpu(const float* u, float* o, int64_t rows, int64_t cols,
                           const NsCpuOptions& options, NsCpuWorkspace* ws);

// The standard iteration (the form the tests and benchmarks of the standard method call).
void NewtonSchulzCpu(const float* u, float* o, int64_t rows, int64_t cols,
                     const std::vector<std::array<float, 3>>& coefficients, float ns_eps,
                     float norm_scale, bool round_bf16, NsCpuWorkspace* ws);

// The same algorithms in float64 (same tiles, same product order, dgemm/dsyrk), without the
// divergence check: the tests' "same map" check of the Gram iteration against the standard one.
// Allocates; runs on the calling thread.
void NewtonSchulzCpuF64(const double* u, double* o, int64_t rows, int64_t cols,
                        const NsCpuOptions& options, bool symmetric_products);

}  // namespace normuon

#endif  // NORMUON_NEWTON_SCHULZ_CPU_H_
