// Gram Newton-Schulz (kernels/ns_method.h, docs/ARCHITECTURE.md section 1): the same map as the
// standard iteration (float64), its fp32 accuracy against the standard fp32 iteration (both
// measured against float64 standard Newton-Schulz), the divergence check and its fallback, the
// bits whatever the thread count, and the config checks of the C API.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/newton_schulz_cpu.h"
#include "normuon/normuon.h"
#include "tools/common/ns_inputs.h"

namespace {

using normuon::NewtonSchulzCpu;
using normuon::NewtonSchulzCpuF64;
using normuon::NsCpuOptions;
using normuon::NsCpuWorkspace;
using normuon::NsFallback;
using normuon::NsMethod;

using Coefficients = std::vector<std::array<float, 3>>;

Coefficients Quintic(int steps = 5) { return normuon::QuinticCoefficients(steps); }
Coefficients PolarExpress() { return normuon::PolarExpressCoefficients(5); }

NsCpuOptions Options(NsMethod method, const Coefficients& coefficients,
                     std::vector<int32_t> restarts, bool polar) {
  NsCpuOptions o;
  o.coefficients = coefficients;
  o.method = method;
  o.restarts = std::move(restarts);
  o.ns_eps = polar ? 1e-6f : 1e-7f;
  o.norm_scale = polar ? 1.02f : 1.0f;
  return o;
}

using normuon_tools::AdversarialMatrices;
using normuon_tools::FrobeniusNorm;
using normuon_tools::GaussianMatrix;
using normuon_tools::Matrix;
using normuon_tools::NamedMatrix;
using normuon_tools::NorMuonUpdate;
using normuon_tools::RelativeError;
using normuon_tools::WithSingularValues;

std::vector<double> RunF64(const Matrix& m, const NsCpuOptions& o, bool symmetric = true) {
  std::vector<double> out(m.v.size());
  NewtonSchulzCpuF64(m.v.data(), out.data(), m.rows, m.cols, o, symmetric);
  return out;
}

std::vector<double> RunF32(const Matrix& m, const NsCpuOptions& o, NsFallback* why = nullptr,
                           int threads = 0) {
  std::vector<float> u(m.v.begin(), m.v.end()), out(m.v.size());
  NsCpuWorkspace ws;
  ws.threads = threads;
  const NsFallback w = NewtonSchulzCpu(u.data(), out.data(), m.rows, m.cols, o, &ws);
  if (why != nullptr) *why = w;
  return std::vector<double>(out.begin(), out.end());
}

const std::vector<std::vector<int32_t>>& RestartChoices() {
  static const auto* r = new std::vector<std::vector<int32_t>>{{}, {1}, {2}, {1, 3}};
  return *r;
}

TEST(GramSameMapTest, Float64GramEqualsFloat64StandardOnRandomAndAdversarialMatrices) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{24, 80}, {80, 24}, {33, 50}, {1, 9}};
  for (const auto& [rows, cols] : shapes) {
    std::vector<NamedMatrix> inputs = AdversarialMatrices(rows, cols);
    inputs.push_back({"gaussian", GaussianMatrix(rows, cols, 7)});
    for (bool polar : {false, true}) {
      const Coefficients co = polar ? PolarExpress() : Quintic();
      for (const NamedMatrix& in : inputs) {
        const std::vector<double> ref = RunF64(in.m, Options(NsMethod::kStandard, co, {}, polar));
        for (const auto& restarts : RestartChoices()) {
          for (bool symmetric : {true, false}) {
            const std::vector<double> gram =
                RunF64(in.m, Options(NsMethod::kGram, co, restarts, polar), symmetric);
            EXPECT_LE(RelativeError(gram, ref), 1e-10)
                << in.name << " " << rows << "x" << cols << (polar ? " polar" : " quintic")
                << " restarts " << restarts.size() << (symmetric ? " symmetric" : " dense");
          }
        }
      }
    }
  }
}

// Several output tiles in each direction (kNsTile = 384): the lower-triangle tiles and their
// mirror images.
TEST(GramSameMapTest, Float64GramEqualsStandardAcrossSeveralTiles) {
  const int64_t rows = normuon::kNsTile + 40, cols = 2 * normuon::kNsTile + 17;
  const Matrix m = GaussianMatrix(rows, cols, 3);
  const std::vector<double> ref = RunF64(m, Options(NsMethod::kStandard, Quintic(), {}, false));
  const std::vector<double> gram = RunF64(m, Options(NsMethod::kGram, Quintic(), {2}, false));
  EXPECT_LE(RelativeError(gram, ref), 1e-10);
}

struct Errors {
  double standard = 0.0, gram = 0.0;
};

// The NorMuon update's relative error of fp32 standard and fp32 Gram (the default restarts), each
// against float64 standard Newton-Schulz.
Errors UpdateErrors(const Matrix& m, bool polar) {
  const std::vector<int32_t> restarts = normuon::DefaultGramRestarts(5, polar);
  const Coefficients co = polar ? PolarExpress() : Quintic();
  const auto update = [&](const std::vector<double>& o) {
    return NorMuonUpdate(o, m.rows, m.cols);
  };
  const std::vector<double> ref = update(RunF64(m, Options(NsMethod::kStandard, co, {}, polar)));
  Errors e;
  e.standard = RelativeError(update(RunF32(m, Options(NsMethod::kStandard, co, {}, polar))), ref);
  NsFallback why = NsFallback::kNone;
  e.gram = RelativeError(update(RunF32(m, Options(NsMethod::kGram, co, restarts, polar), &why)),
                         ref);
  EXPECT_EQ(why, NsFallback::kNone) << "a correct result was flagged as diverged";
  return e;
}

TEST(GramAccuracyTest, Fp32GramOnGaussianInputsIsWithinOneAndAHalfTimesStandard) {
  for (const auto& [rows, cols] :
       std::vector<std::pair<int64_t, int64_t>>{{64, 256}, {256, 64}, {96, 288}, {48, 200}}) {
    for (bool polar : {false, true}) {
      const Errors e = UpdateErrors(GaussianMatrix(rows, cols, 21), polar);
      EXPECT_LE(e.gram, 1.5 * e.standard) << rows << "x" << cols << (polar ? " polar" : "");
      EXPECT_LT(e.gram, 1e-4);
    }
  }
}

TEST(GramAccuracyTest, Fp32GramOnAdversarialInputsIsWithinFiveTimesStandardAndBelow1e4) {
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{64, 256}, {200, 72}}) {
    for (const NamedMatrix& in : AdversarialMatrices(rows, cols)) {
      for (bool polar : {false, true}) {
        const Errors e = UpdateErrors(in.m, polar);
        // Tiny floor: at 1e-30 both methods are exact up to a few ulps of zero-ish values.
        EXPECT_LE(e.gram, 5.0 * e.standard + 1e-7)
            << in.name << " " << rows << "x" << cols << (polar ? " polar" : " quintic")
            << ": gram " << e.gram << " standard " << e.standard;
        EXPECT_LT(e.gram, 1e-4) << in.name;
      }
    }
  }
}

TEST(GramFallbackTest, ADivergingGramIterationIsRedoneWithTheStandardOneAndSaysWhy) {
  // Rank-deficient input, 30 quintic iterations, no restart: rounding puts spurious eigenvalues
  // into R's null space, which the Gram iteration grows without bound (the standard iteration
  // keeps them bounded). The check catches it and the standard result comes back instead.
  std::vector<double> sigma(48, 0.0);
  for (int i = 0; i < 8; ++i) sigma[i] = 1.0;
  const Matrix m = WithSingularValues(48, 160, sigma, 5);
  NsFallback why = NsFallback::kNone;
  const std::vector<double> gram = RunF32(m, Options(NsMethod::kGram, Quintic(30), {}, false), &why);
  EXPECT_NE(why, NsFallback::kNone);
  const std::vector<double> standard =
      RunF32(m, Options(NsMethod::kStandard, Quintic(30), {}, false));
  EXPECT_EQ(gram, standard);  // bitwise: the standard iteration's own result
  // With restarts every few iterations the same input stays within the bound.
  NsFallback why2 = NsFallback::kNone;
  RunF32(m, Options(NsMethod::kGram, Quintic(30), {2, 5, 8, 11, 14, 17, 20, 23}, false), &why2);
  EXPECT_EQ(why2, NsFallback::kNone);
}

// Through the C API: the step uses the standard result (bitwise a standard runtime's step) and
// normuon_step_result names the matrix and the reason.
TEST(GramFallbackTest, TheRuntimeReportsTheFallbackAndStepsWithTheStandardResult) {
  std::vector<double> sigma(48, 0.0);
  for (int i = 0; i < 8; ++i) sigma[i] = 1.0;
  const Matrix m = WithSingularValues(48, 160, sigma, 5);
  const std::vector<float> grad(m.v.begin(), m.v.end());
  std::vector<std::vector<float>> params;
  std::vector<normuon_step_info_t> infos;
  for (normuon_ns_method_t method : {NORMUON_NS_METHOD_GRAM, NORMUON_NS_METHOD_STANDARD}) {
    normuon_config_t c;
    normuon_config_init(&c);
    c.ns_method = method;
    c.ns_steps = 30;
    c.ns_restart_count = 0;
    normuon_runtime_t rt = 0;
    ASSERT_EQ(normuon_create(&c, 0, &rt), NORMUON_SUCCESS) << normuon_last_error(0);
    std::vector<float> w(grad.size(), 0.01f), b(4, 0.0f), gb(4, 1.0f);
    normuon_param_desc_t d;
    normuon_param_desc_init(&d);
    d.name = "bias";
    d.rows = 4;
    d.cols = 1;
    d.row_count = 4;
    d.param = b.data();
    d.grad = gb.data();
    normuon_param_t id = -1;
    ASSERT_EQ(normuon_register_adamw(rt, &d, &id), NORMUON_SUCCESS) << normuon_last_error(rt);
    d.name = "w";
    d.rows = 48;
    d.cols = 160;
    d.row_count = 48;
    d.param = w.data();
    d.grad = grad.data();
    ASSERT_EQ(normuon_register_matrix(rt, &d, &id), NORMUON_SUCCESS) << normuon_last_error(rt);
    ASSERT_EQ(id, 1);
    ASSERT_EQ(normuon_finalize(rt), NORMUON_SUCCESS) << normuon_last_error(rt);
    ASSERT_EQ(normuon_step(rt, 0.02f, 0.0f, nullptr), NORMUON_SUCCESS) << normuon_last_error(rt);
    normuon_step_info_t info;
    normuon_step_info_init(&info);
    ASSERT_EQ(normuon_step_result(rt, &info), NORMUON_SUCCESS);
    infos.push_back(info);
    params.push_back(w);
    normuon_destroy(rt);
  }
  EXPECT_EQ(infos[0].ns_fallbacks, 1);
  EXPECT_EQ(infos[0].ns_fallback_param, 1);
  EXPECT_TRUE(infos[0].ns_fallback_reason == 1 || infos[0].ns_fallback_reason == 2)
      << infos[0].ns_fallback_reason;
  EXPECT_EQ(infos[0].last_skipped, 0);
  EXPECT_EQ(infos[1].ns_fallbacks, 0);
  EXPECT_EQ(infos[1].ns_fallback_param, -1);
  EXPECT_EQ(params[0], params[1]);
}

TEST(GramFallbackTest, TheBoundHoldsForEveryCorrectOrthogonalization) {
  // The bound is above what the iterated polynomial can reach, for every coefficient set.
  for (bool polar : {false, true}) {
    const Coefficients co = polar ? PolarExpress() : Quintic();
    const double bound = normuon::NsOutputNormBound(co, polar ? 1.02f : 1.0f, 64);
    const Matrix m = GaussianMatrix(64, 64, 9);  // square: the standard iteration
    const std::vector<double> o = RunF64(m, Options(NsMethod::kStandard, co, {}, polar));
    EXPECT_LT(FrobeniusNorm(o), bound);
    EXPECT_GT(bound, 8.0);  // sqrt(64): an orthogonal matrix's norm
  }
}

TEST(GramThreadsTest, TheBitsDoNotDependOnTheThreadCount) {
  const Matrix m = GaussianMatrix(normuon::kNsTile + 20, 2 * normuon::kNsTile + 5, 17);
  const NsCpuOptions o = Options(NsMethod::kGram, Quintic(), {2}, false);
  const std::vector<double> one = RunF32(m, o, nullptr, 1);
  for (int threads : {2, 3}) EXPECT_EQ(RunF32(m, o, nullptr, threads), one) << threads;
}

TEST(GramThreadsTest, DenseAndSymmetricProductsAgreeClosely) {
  const Matrix m = GaussianMatrix(200, 520, 19);
  const NsCpuOptions o = Options(NsMethod::kGram, Quintic(), {2}, false);
  std::vector<float> u(m.v.begin(), m.v.end()), a(u.size()), b(u.size());
  NsCpuWorkspace sym, dense;
  dense.symmetric_products = false;
  NewtonSchulzCpu(u.data(), a.data(), m.rows, m.cols, o, &sym);
  NewtonSchulzCpu(u.data(), b.data(), m.rows, m.cols, o, &dense);
  EXPECT_LE(RelativeError(std::vector<double>(a.begin(), a.end()),
                          std::vector<double>(b.begin(), b.end())),
            5e-5);
}

// normuon_create's checks of the new config fields: each refusal names the field.
TEST(GramConfigTest, BadValuesAreRefusedNamingTheField) {
  struct Case {
    std::string field;
    std::function<void(normuon_config_t*, std::vector<int32_t>*)> set;
  };
  const std::vector<Case> cases = {
      {"config.ns_method", [](normuon_config_t* c, std::vector<int32_t>*) {
         c->ns_method = static_cast<normuon_ns_method_t>(7);
       }},
      {"config.ns_restarts[0]", [](normuon_config_t* c, std::vector<int32_t>* r) {
         c->ns_method = NORMUON_NS_METHOD_GRAM;
         *r = {5};  // ns_steps = 5: iterations 0..4, a restart can precede 1..4
       }},
      {"config.ns_restarts[0]", [](normuon_config_t* c, std::vector<int32_t>* r) {
         c->ns_method = NORMUON_NS_METHOD_GRAM;
         *r = {0};
       }},
      {"config.ns_restarts[1]", [](normuon_config_t* c, std::vector<int32_t>* r) {
         c->ns_method = NORMUON_NS_METHOD_GRAM;
         *r = {2, 2};
       }},
      {"config.ns_restart_count", [](normuon_config_t* c, std::vector<int32_t>*) {
         c->ns_method = NORMUON_NS_METHOD_GRAM;
         c->ns_restart_count = NORMUON_MAX_NS_RESTARTS + 1;
       }},
      {"config.ns_restarts is null", [](normuon_config_t* c, std::vector<int32_t>*) {
         c->ns_restart_count = 1;
       }},
      {"config.ns_dtype = NORMUON_NS_FP16", [](normuon_config_t* c, std::vector<int32_t>*) {
         c->ns_method = NORMUON_NS_METHOD_GRAM;
         c->ns_dtype = NORMUON_NS_FP16;
       }},
  };
  for (const Case& k : cases) {
    normuon_config_t c;
    normuon_config_init(&c);
    std::vector<int32_t> restarts;
    k.set(&c, &restarts);
    if (!restarts.empty()) {
      c.ns_restart_count = static_cast<int32_t>(restarts.size());
      c.ns_restarts = restarts.data();
    }
    normuon_runtime_t rt = 0;
    EXPECT_EQ(normuon_create(&c, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT) << k.field;
    EXPECT_NE(std::string(normuon_last_error(0)).find(k.field), std::string::npos)
        << normuon_last_error(0);
  }
  // Valid: gram with the default restarts, with none, and with two.
  for (int count : {-1, 0, 2}) {
    normuon_config_t c;
    normuon_config_init(&c);
    c.ns_method = NORMUON_NS_METHOD_GRAM;
    const int32_t restarts[] = {1, 3};
    c.ns_restart_count = count;
    c.ns_restarts = count > 0 ? restarts : nullptr;
    normuon_runtime_t rt = 0;
    ASSERT_EQ(normuon_create(&c, 0, &rt), NORMUON_SUCCESS) << normuon_last_error(0);
    normuon_destroy(rt);
  }
}

}  // namespace
