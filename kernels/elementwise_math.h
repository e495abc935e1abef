// The per-element and per-row formulas of a step (docs/ARCHITECTURE.md section 1), each written
// once and called by both backends: the CPU backend's loops (kernels/cpu_backend.cc) and the CUDA
// kernels (kernels/cuda/elementwise.cu, newton_schulz.cu). What stays in each backend is the loop
// structure and the order of its reductions; what a value is made of lives here.
//
// Exactness (docs/ARCHITECTURE.md section 6): the CPU backend is the bitwise reference, so every
// function fixes the order of its operations and the type (float or double) of every
// intermediate, and callers pass values in the types written here. On the host nothing is
// contracted (x86-64 without -mfma; FLT_EVAL_METHOD 0), so these give the CPU backend the bits it
// had when the formulas were written inline. nvcc contracts a*b + c into an FMA on the device by
// default (-fmad=true); the CUDA backend is held to tolerances against the CPU, not to bits.
#ifndef NORMUON_KERNELS_ELEMENTWISE_MATH_H_
#define NORMUON_KERNELS_ELEMENTWISE_MATH_H_

#include <math.h>

#include <cstdint>

#include "kernels/backend.h"

namespace normuon {

// An exponential moving average step, old + (1 - beta)*(x - old): torch's lerp_(x, 1 - beta).
// The momentum (x = G), NorMuon's v (x = the row or column mean of O^2), AdaMuon's v (x = O^2)
// and AdamW's two moments (x = G, G^2).
NORMUON_HOST_DEVICE inline float Ema(float old, float x, float beta) {
  return old + (1.0f - beta) * (x - old);
}

// start + weight * (end - start), evaluated as torch's lerp does: from the nearer end, so the
// Nesterov blend (weight b1 = 0.95) keeps its precision (g + b1*(m - g) loses ~3 bits).
NORMUON_HOST_DEVICE inline float Lerp(float start, float end, float weight) {
  return weight < 0.5f ? start + weight * (end - start) : end - (end - start) * (1.0f - weight);
}

// U, the input of the orthogonalization: the Nesterov blend lerp(G, M', b1), or M' itself.
// m_next is M' = Ema(M, G, b1).
NORMUON_HOST_DEVICE inline float BlendedUpdate(float g, float m_next, float b1, bool nesterov) {
  return nesterov ? Lerp(g, m_next, b1) : m_next;
}

// The Newton-Schulz pre-scaling 1 / (||U||_F * norm_scale + eps), from sum_sq = ||U||_F^2 summed
// in double; X0 = U * this (a float multiply per element).
NORMUON_HOST_DEVICE inline float NsInputScale(double sum_sq, float norm_scale, float eps) {
  return static_cast<float>(
      1.0 / (sqrt(sum_sq) * static_cast<double>(norm_scale) + static_cast<double>(eps)));
}

// A mean of squares summed in double over n values, rounded once to float: the row mean
// r_i = mean_j O_ij^2 (or the column mean) that v is updated with.
NORMUON_HOST_DEVICE inline float MeanOf(double sum, int64_t n) {
  return static_cast<float>(sum / static_cast<double>(n));
}

// 1 / (sqrt(v) + eps): the normalization factor of a row (NorMuon) or of a column (neuron axis =
// columns).
NORMUON_HOST_DEVICE inline float InverseRootPlusEps(float v, float eps) {
  return 1.0f / (sqrtf(v) + eps);
}

// Adam's bias correction 1 - beta^t, in double, rounded once to float (t >= 1).
NORMUON_HOST_DEVICE inline float BiasCorrection(float beta, int64_t t) {
  return static_cast<float>(1.0 - pow(static_cast<double>(beta), static_cast<double>(t)));
}

// AdaMuon's bias correction of v for the step that takes committed step number
// steps_taken + 1; 1 for the other variants.
NORMUON_HOST_DEVICE inline float VarianceBiasCorrection(Variant variant, float beta2,
                                                        int64_t steps_taken) {
  return variant == Variant::kAdaMuon ? BiasCorrection(beta2, steps_taken + 1) : 1.0f;
}

// The normalization factor f of one row (or, for AdaMuon, one element): 1/(sqrt(v) + eps) with
// AdaMuon's v bias-corrected by bc2 = 1 - b2^t (VarianceBiasCorrection); 1 for Muon.
NORMUON_HOST_DEVICE inline float NormFactor(Variant variant, float v_new, float eps, float bc2) {
  if (variant == Variant::kMuon) return 1.0f;
  if (variant == Variant::kAdaMuon) return InverseRootPlusEps(v_new / bc2, eps);
  return InverseRootPlusEps(v_new, eps);
}

// The multiplier of O'_ij in the update, from the Frobenius norms squared of O (sum_sq) and of
// O' = O * f (sum_sq_scaled), summed in double: the variant's norm part times the shape factor
// (which the runtime chose: the variant's own or the lr-adjust switch's):
//   NorMuon  ||O|| / (||O'|| + eps)         NorMuon paper  1 / (||O'|| + eps)
//   AdaMuon  sqrt(min(m, n)) / (||O'|| + eps)   Muon        1
NORMUON_HOST_DEVICE inline float UpdateScale(Variant variant, double sum_sq, double sum_sq_scaled,
                                             float eps, int64_t rows, int64_t cols,
                                             float shape_factor) {
  const double e = static_cast<double>(eps);
  const double m = static_cast<double>(rows), n = static_cast<double>(cols);
  double norm_part = 1.0;  // Muon
  if (variant == Variant::kNorMuon) {
    norm_part = sqrt(sum_sq) / (sqrt(sum_sq_scaled) + e);
  } else if (variant == Variant::kNorMuonPaper) {
    norm_part = 1.0 / (sqrt(sum_sq_scaled) + e);
  } else if (variant == Variant::kAdaMuon) {
    norm_part = sqrt(m < n ? m : n) / (sqrt(sum_sq_scaled) + e);
  }
  return static_cast<float>(norm_part * static_cast<double>(shape_factor));
}

// The decoupled weight-decay multiplier 1 - lr*wd, or 1 for a parameter without a gradient this
// step (the official code skips it).
NORMUON_HOST_DEVICE inline float DecayMultiplier(bool has_grad, float lr, float weight_decay) {
  return has_grad ? 1.0f - lr * weight_decay : 1.0f;
}

// The new value of one weight p with update d: p * decay - d, where cautious weight decay keeps
// p undecayed unless d and p agree in sign (d * p > 0).
NORMUON_HOST_DEVICE inline float DecayedStep(float p, float decay, bool cautious, float d) {
  const float k = cautious && !(d * p > 0.0f) ? 1.0f : decay;
  return p * k - d;
}

// A matrix element's update d = (lr * scale) * (O_ij * f_ij); step = MatrixStepSize(lr, scale)
// is computed once per matrix.
NORMUON_HOST_DEVICE inline float MatrixStepSize(float lr, float scale) { return lr * scale; }
NORMUON_HOST_DEVICE inline float MatrixDelta(float step, float o, float f) {
  return step * (o * f);
}

// AdamW's update of one element from the new moments m, v and the bias corrections bc1, bc2
// (BiasCorrection of beta1, beta2 at t = the step count after this step):
// lr * (m / bc1) / (sqrt(v / bc2) + eps).
NORMUON_HOST_DEVICE inline float AdamWDelta(float lr, float m, float v, float bc1, float bc2,
                                            float eps) {
  return lr * ((m / bc1) / (sqrtf(v / bc2) + eps));
}

}  // namespace normuon

#endif  // NORMUON_KERNELS_ELEMENTWISE_MATH_H_
