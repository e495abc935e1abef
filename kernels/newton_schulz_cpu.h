// Newton-Schulz orthogonalization on the CPU: the readable reference of the NS step
// (DESIGN.md section 1), on OpenBLAS sgemm. fp32 mode keeps every value in fp32; bf16 mode
// rounds the GEMM inputs and every stored intermediate (X, A, B) to bf16 as the CUDA bf16 path
// stores them, with fp32 accumulation inside each product.
#ifndef NORMUON_NEWTON_SCHULZ_CPU_H_
#define NORMUON_NEWTON_SCHULZ_CPU_H_

#include <array>
#include <cstdint>
#include <vector>

namespace normuon {

// Scratch for one matrix of up to max_short x max_long (short side squared).
struct NsCpuWorkspace {
  std::vector<float> x, x_next, a, b;
  void Reserve(int64_t short_side, int64_t long_side);
};

// o = NS(u): u and o are rows x cols row-major fp32 (o may not alias u). Works on u^T when
// rows > cols. X0 = u / (||u||_F * norm_scale + ns_eps); per (a, b, c): A = X X^T,
// B = b A + c A A, X = a X + B X. round_bf16: emulate bf16 storage of X, A, B (see the file
// comment).
void NewtonSchulzCpu(const float* u, float* o, int64_t rows, int64_t cols,
                     const std::vector<std::array<float, 3>>& coefficients, float ns_eps,
                     float norm_scale, bool round_bf16, NsCpuWorkspace* ws);

}  // namespace normuon

#endif  // NORMUON_NEWTON_SCHULZ_CPU_H_
