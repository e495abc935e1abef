// The CPU backend: the readable reference of every stage of a step (docs/ARCHITECTURE.md section 1),
// executed to completion on each call. Newton-Schulz runs on OpenBLAS (newton_schulz_cpu.cc: fixed
// output tiles on the backend's own threads, so its bits do not depend on any thread count);
// the elementwise stages are plain loops over the formulas of kernels/elementwise_math.h, which
// the CUDA kernels share. Reductions run in a fixed order in double, so results
// are bitwise reproducible and do not depend on how rows are split across ranks.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "base/bf16.h"
#include "kernels/elementwise_math.h"
#include "kernels/newton_schulz_cpu.h"

namespace normuon {
namespace {

float Load(const void* p, DType d, int64_t i) {
  if (d == DType::kF32) return static_cast<const float*>(p)[i];
  return Bf16ToFloat(static_cast<const Bf16*>(p)[i]);
}

void Store(void* p, DType d, int64_t i, float v) {
  if (d == DType::kF32) {
    static_cast<float*>(p)[i] = v;
  } else {
    static_cast<Bf16*>(p)[i] = FloatToBf16(v);
  }
}

// The gradient element, or 0 when the parameter has no gradient this step.
float Grad(const void* g, DType d, int64_t i) { return g == nullptr ? 0.0f : Load(g, d, i); }

// AdaMuon's bias correction of v for this step (1 for the other variants).
float BiasCorrection2(const MatrixWork& w) {
  return VarianceBiasCorrection(w.variant, w.scalars->beta2, w.control->steps_taken);
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) { ws_.threads = threads; }

  const char* name() const override { return "cpu"; }
  bool IsSynchronous() const override { return true; }

  absl::StatusOr<void*> Alloc(size_t bytes) override {
    if (bytes == 0) bytes = 1;
    void* p = std::calloc(1, bytes);
    if (p == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
    }
    return p;
  }
  void Free(void* p) override { std::free(p); }

  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyFromHost(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status CheckPointer(const void* p, absl::string_view field) override {
    if (p == nullptr) return absl::InvalidArgumentError(absl::StrCat(field, " is null"));
    return absl::OkStatus();
  }

  uint64_t NsWorkspaceBytes(const std::vector<NsBatch>& batches) const override {
    if (batches.empty()) return 0;
    int64_t s = 1, l = 1, max_elems = 0;
    bool gram = false;
    for (const NsBatch& b : batches) {  // as Prepare sizes them
      gram = gram || UsesGram(b.method, b.rows, b.cols);
      s = std::max(s, std::min(b.rows, b.cols));
      l = std::max(l, std::max(b.rows, b.cols));
      max_elems = std::max(max_elems, b.rows * b.cols);
    }
    const uint64_t square = static_cast<uint64_t>(s * s);
    return sizeof(float) * (2 * static_cast<uint64_t>(s * l) + (gram ? 5 : 2) * square +
                            2 * static_cast<uint64_t>(max_elems));
  }
  uint64_t NsWorkspaceHeld() const override {
    return ws_.Bytes() + sizeof(float) * (u32_.size() + o32_.size());
  }

  absl::Status Prepare(const std::vector<NsBatch>& batches) override {
    int64_t s = 1, l = 1;
    bool gram = false;
    for (const NsBatch& b : batches) {
      gram = gram || UsesGram(b.method, b.rows, b.cols);
      s = std::max(s, std::min(b.rows, b.cols));
      l = std::max(l, std::max(b.rows, b.cols));
      max_elems_ = std::max(max_elems_, b.rows * b.cols);
    }
    if (batches.empty()) return absl::OkStatus();  // no matrices: no workspace, no threads
    try {
      ws_.Reserve(s, l, gram);
      if (!batches.empty()) {  // the step's options; assigning them later reuses this storage
        ns_options_.coefficients = batches[0].coefficients;
        ns_options_.restarts = batches[0].restarts;
      }
      u32_.resize(static_cast<size_t>(max_elems_));
      o32_.resize(static_cast<size_t>(max_elems_));
    } catch (const std::bad_alloc&) {
      return absl::ResourceExhaustedError("cannot allocate the Newton-Schulz workspace");
    } catch (const std::system_error& e) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot start the Newton-Schulz threads: ", e.what()));
    }
    return absl::OkStatus();
  }

  absl::Status BeginStep(void*, const void* host_scalars, void* dev_scalars, size_t bytes,
                         StepControl* control) override {
    std::memcpy(dev_scalars, host_scalars, bytes);
    control->nonfinite_param = kNoParam;
    control->comm_error = 0;
    control->ns_fallback_param = kNoParam;
    control->ns_fallback_reason = 0;
    return absl::OkStatus();
  }

  absl::Status WriteStepFlags(float* flags, int rank, int world, uint32_t marked_hash,
                              const StepControl* control) override {
    WriteStepFlagsOf(flags, rank, world, marked_hash, *control);
    return absl::OkStatus();
  }

  absl::Status FoldStepFlags(const float* flags, int world, StepControl* control) override {
    FoldStepFlagsOf(flags, world, control);
    return absl::OkStatus();
  }

  absl::Status SetCommError(StepControl* control) override {
    control->comm_error = kCommFailed;
    return absl::OkStatus();
  }

  absl::Status RefreshScalars(const void* host_scalars, void* dev_scalars,
                              size_t bytes) override {
    std::memcpy(dev_scalars, host_scalars, bytes);
    return absl::OkStatus();
  }

  absl::Status CheckFinite(int32_t index, const void* grad, DType dtype, int64_t count,
                           StepControl* control) override {
    if (grad == nullptr) return absl::OkStatus();
    for (int64_t i = 0; i < count; ++i) {
      if (!std::isfinite(Load(grad, dtype, i))) {
        control->nonfinite_param = std::min(control->nonfinite_param, index);
        break;
      }
    }
    return absl::OkStatus();
  }

  absl::Status Blend(const MatrixWork& w) override {
    const float b1 = w.scalars->beta1;
    // A piece of pc columns: momentum packed, grad with stride ld, U with stride u_ld (whole
    // packed rows: all three are cols, the flat loop of the row-only layout).
    const int64_t pc = PieceCols(w), gl = ParamLd(w), ul = URowsLd(w);
    for (int64_t r = 0; r < w.row_count; ++r) {
      for (int64_t j = 0; j < pc; ++j) {
        const float g = Grad(w.grad, w.grad_dtype, r * gl + j);
        const float m = Ema(w.momentum[r * pc + j], g, b1);
        Store(w.u_rows, w.ns_dtype, r * ul + j, BlendedUpdate(g, m, b1, w.nesterov));
      }
    }
    return absl::OkStatus();
  }

  absl::Status CopyAsync(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }

  absl::Status NewtonSchulz(const NsBatch& b) override {
    const int64_t n = b.rows * b.cols;
    const bool bf16 = b.dtype == DType::kBF16;
    ns_options_.coefficients = b.coefficients;  // capacity kept: no allocation after the first
    ns_options_.ns_eps = b.ns_eps;
    ns_options_.norm_scale = b.ns_norm_scale;
    ns_options_.round_bf16 = bf16;
    ns_options_.method = b.method;
    ns_options_.restarts = b.restarts;
    for (int64_t k = 0; k < b.count; ++k) {
      const float* u;
      float* o;
      if (bf16) {
        const Bf16* src = static_cast<const Bf16*>(b.u) + k * n;
        for (int64_t i = 0; i < n; ++i) u32_[i] = Bf16ToFloat(src[i]);
        u = u32_.data();
        o = o32_.data();
      } else {
        u = static_cast<const float*>(b.u) + k * n;
        o = static_cast<float*>(b.o) + k * n;
      }
      const NsFallback why = NewtonSchulzCpu(u, o, b.rows, b.cols, ns_options_, &ws_);
      if (why != NsFallback::kNone && b.control != nullptr) {
        StepControl* c = b.control;
        const int32_t param = k < static_cast<int64_t>(b.params.size()) ? b.params[k] : kNoParam;
        if (c->ns_fallback_param == kNoParam || param < c->ns_fallback_param) {
          c->ns_fallback_param = param;
          c->ns_fallback_reason = static_cast<int32_t>(why);
        }
        ++c->ns_fallbacks;
      }
      if (bf16) {
        Bf16* dst = static_cast<Bf16*>(b.o) + k * n;
        for (int64_t i = 0; i < n; ++i) dst[i] = FloatToBf16(o[i]);
      }
    }
    return absl::OkStatus();
  }

  absl::Status RowStats(const MatrixWork& w) override {
    const float b2 = w.scalars->beta2;
    const float eps = w.scalars->eps;
    const float bc2 = BiasCorrection2(w);
    for (int64_t r = 0; r < w.row_count; ++r) {
      double sq = 0.0;
      for (int64_t j = 0; j < w.cols; ++j) {
        const double o = Load(w.o_rows, w.ns_dtype, r * w.cols + j);
        sq += o * o;
      }
      double sq_scaled = 0.0;
      if (PerElementV(w.variant)) {
        for (int64_t j = 0; j < w.cols; ++j) {
          const int64_t i = r * w.cols + j;
          const float o = Load(w.o_rows, w.ns_dtype, i);
          const float v_new = Ema(w.v[i], o * o, b2);
          w.v_new[i] = v_new;
          const double x = o * NormFactor(w.variant, v_new, eps, bc2);
          sq_scaled += x * x;
        }
      } else {
        float v_new = 0.0f;
        if (w.variant != Variant::kMuon) {
          v_new = Ema(w.v[r], MeanOf(sq, w.cols), b2);
          w.v_new[r] = v_new;
        }
        const float f = NormFactor(w.variant, v_new, eps, bc2);
        for (int64_t j = 0; j < w.cols; ++j) {
          const double o = Load(w.o_rows, w.ns_dtype, r * w.cols + j) * f;
          sq_scaled += o * o;
        }
      }
      w.row_slots[w.row_begin + r] = static_cast<float>(sq);
      w.row_slots[w.rows + w.row_begin + r] = static_cast<float>(sq_scaled);
    }
    return absl::OkStatus();
  }

  absl::Status ElementSecondMoment(const MatrixWork& w) override {
    const float b2 = w.scalars->beta2;
    const int64_t pc = PieceCols(w), ul = URowsLd(w);
    for (int64_t r = 0; r < w.row_count; ++r) {
      for (int64_t j = 0; j < pc; ++j) {
        const float o = Load(w.o_rows, w.ns_dtype, r * ul + j);
        w.v_new[r * pc + j] = Ema(w.v[r * pc + j], o * o, b2);
      }
    }
    return absl::OkStatus();
  }

  absl::Status ColumnStats(const MatrixWork& w, const void* o_full) override {
    const float b2 = w.scalars->beta2;
    const float eps = w.scalars->eps;
    float* means = w.row_slots + 2 * w.rows;
    col_f_.assign(static_cast<size_t>(w.cols), 0.0f);
    for (int64_t j = 0; j < w.cols; ++j) {
      double sq = 0.0;
      for (int64_t i = 0; i < w.rows; ++i) {
        const double o = Load(o_full, w.ns_dtype, i * w.cols + j);
        sq += o * o;
      }
      means[j] = MeanOf(sq, w.rows);
      col_f_[j] = InverseRootPlusEps(Ema(w.v[j], means[j], b2), eps);
    }
    for (int64_t r = 0; r < w.rows; ++r) {
      double sq = 0.0, sq_scaled = 0.0;
      for (int64_t j = 0; j < w.cols; ++j) {
        const double o = Load(o_full, w.ns_dtype, r * w.cols + j);
        sq += o * o;
        const double x = static_cast<float>(o) * col_f_[j];
        sq_scaled += x * x;
      }
      w.row_slots[r] = static_cast<float>(sq);
      w.row_slots[w.rows + r] = static_cast<float>(sq_scaled);
    }
    return absl::OkStatus();
  }

  absl::Status ColumnUpdate(const MatrixWork& w) override {
    const float b2 = w.scalars->beta2;
    const float* means = w.row_slots_total + 2 * w.rows;
    for (int64_t j = 0; j < w.cols; ++j) w.v_new[j] = Ema(w.v[j], means[j], b2);
    return absl::OkStatus();
  }

  absl::Status FinishNorms(const MatrixWork& w) override {
    double sq = 0.0, sq_scaled = 0.0;
    for (int64_t r = 0; r < w.rows; ++r) {
      sq += w.row_slots_total[r];
      sq_scaled += w.row_slots_total[w.rows + r];
    }
    *w.scale = UpdateScale(w.variant, sq, sq_scaled, w.scalars->eps, w.rows, w.cols,
                           w.shape_factor);
    return absl::OkStatus();
  }

  absl::Status CommitMatrix(const MatrixWork& w, const StepControl* control) override {
    if (StepSkipped(*control)) return absl::OkStatus();
    const GroupScalars& s = *w.scalars;
    const float decay = DecayMultiplier(w.grad != nullptr, s.lr, s.weight_decay);
    const float step = MatrixStepSize(s.lr, *w.scale);
    const float bc2 = BiasCorrection2(w);
    const bool per_element = PerElementV(w.variant);
    if (w.column_axis) {
      col_f_.resize(static_cast<size_t>(w.cols));
      for (int64_t j = 0; j < w.cols; ++j) col_f_[j] = InverseRootPlusEps(w.v_new[j], s.eps);
    }
    const int64_t pc = PieceCols(w), gl = ParamLd(w), ul = URowsLd(w);
    for (int64_t r = 0; r < w.row_count; ++r) {
      const float row_f =
          per_element || w.column_axis
              ? 0.0f
              : NormFactor(w.variant, w.variant == Variant::kMuon ? 0.0f : w.v_new[r], s.eps,
                           bc2);
      for (int64_t j = 0; j < pc; ++j) {
        const int64_t i = r * pc + j;   // packed state
        const int64_t gi = r * gl + j;  // param and grad
        const float g = Grad(w.grad, w.grad_dtype, gi);
        w.momentum[i] = Ema(w.momentum[i], g, s.beta1);
        const float f = per_element     ? NormFactor(w.variant, w.v_new[i], s.eps, bc2)
                        : w.column_axis ? col_f_[w.col_begin + j]
                                        : row_f;
        const float d = MatrixDelta(step, Load(w.o_rows, w.ns_dtype, r * ul + j), f);
        const float p = Load(w.param, w.param_dtype, gi);
        Store(w.param, w.param_dtype, gi, DecayedStep(p, decay, w.cautious_wd, d));
        if (per_element) w.v[i] = w.v_new[i];
      }
      if (w.variant != Variant::kMuon && !per_element && !w.column_axis) w.v[r] = w.v_new[r];
    }
    // The column v is replicated: every rank holding rows of the matrix or not keeps it.
    if (w.column_axis) std::copy(w.v_new, w.v_new + w.cols, w.v);
    return absl::OkStatus();
  }

  absl::Status CommitAdamW(const AdamWWork& w, const StepControl* control) override {
    if (StepSkipped(*control)) return absl::OkStatus();
    const GroupScalars& s = *w.scalars;
    const float bc1 = BiasCorrection(s.beta1, *w.step + 1);
    const float bc2 = BiasCorrection(s.beta2, *w.step + 1);
    const float decay = DecayMultiplier(w.grad != nullptr, s.lr, s.weight_decay);
    for (int64_t i = 0; i < w.count; ++i) {
      const float g = Grad(w.grad, w.grad_dtype, i);
      w.exp_avg[i] = Ema(w.exp_avg[i], g, s.beta1);
      w.exp_avg_sq[i] = Ema(w.exp_avg_sq[i], g * g, s.beta2);
      const float d = AdamWDelta(s.lr, w.exp_avg[i], w.exp_avg_sq[i], bc1, bc2, s.eps);
      const float p = Load(w.param, w.param_dtype, i);
      Store(w.param, w.param_dtype, i, DecayedStep(p, decay, w.cautious_wd, d));
    }
    return absl::OkStatus();
  }

  absl::Status EndStep(int64_t* adamw_steps, int64_t n, StepControl* control) override {
    if (StepSkipped(*control)) {
      ++control->steps_skipped;
    } else {
      ++control->steps_taken;
      for (int64_t i = 0; i < n; ++i) ++adamw_steps[i];
    }
    return absl::OkStatus();
  }

  absl::Status WaitStep() override { return absl::OkStatus(); }

 private:
  NsCpuWorkspace ws_;
  NsCpuOptions ns_options_;
  int64_t max_elems_ = 0;
  std::vector<float> u32_, o32_;  // fp32 staging for bf16 batches
  std::vector<float> col_f_;      // per-column normalization factors (neuron axis = columns)
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace normuon
