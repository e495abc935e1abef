// The C API on the CPU backend: lifecycle, validation messages, state I/O, and the numbers of a
// step against an independent float64 model (reference_math.h).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "base/bf16.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"
#include "tests/normuon/reference_math.h"

namespace {

using normuon::testing::Mat;
using normuon::testing::RefHyper;
using normuon::testing::RefMatrixState;
using normuon::testing::RefShape;
using normuon::testing::RefVariant;

std::vector<float> RandomVector(size_t n, uint32_t seed, float scale) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

class Runtime {
 public:
  explicit Runtime(const normuon_config_t& c) {
    status_ = normuon_create(&c, 0, &rt_);
  }
  Runtime() {
    normuon_config_t c;
    normuon_config_init(&c);
    status_ = normuon_create(&c, 0, &rt_);
  }
  ~Runtime() {
    if (rt_ != 0) normuon_destroy(rt_);
  }
  normuon_runtime_t get() const { return rt_; }
  normuon_status_t create_status() const { return status_; }
  std::string error() const { return normuon_last_error(rt_); }

 private:
  normuon_runtime_t rt_ = 0;
  normuon_status_t status_;
};

normuon_param_desc_t Desc(const char* name, int64_t rows, int64_t cols, void* p, const void* g,
                          normuon_group_t group = NORMUON_GROUP_MATRIX_DEFAULT) {
  normuon_param_desc_t d;
  normuon_param_desc_init(&d);
  d.name = name;
  d.rows = rows;
  d.cols = cols;
  d.row_begin = 0;
  d.row_count = rows;
  d.param = p;
  d.grad = g;
  d.group = group;
  return d;
}

TEST(ApiTest, ReportsVersionAndNamesEveryStatus) {
  EXPECT_EQ(normuon_version(),
            NORMUON_VERSION_MAJOR * 10000 + NORMUON_VERSION_MINOR * 100 + NORMUON_VERSION_PATCH);
  EXPECT_STREQ(normuon_status_string(NORMUON_ERROR_INVALID_ARGUMENT),
               "NORMUON_ERROR_INVALID_ARGUMENT");
  EXPECT_STREQ(normuon_status_string(static_cast<normuon_status_t>(999)),
               "NORMUON_ERROR_UNKNOWN_STATUS");
}

TEST(ApiTest, ConfigInitHoldsTheReferenceDefaults) {
  normuon_config_t c;
  normuon_config_init(&c);
  EXPECT_EQ(c.struct_size, sizeof(c));
  EXPECT_FLOAT_EQ(c.lr, 0.02f);
  EXPECT_FLOAT_EQ(c.momentum, 0.95f);
  EXPECT_FLOAT_EQ(c.beta2, 0.95f);
  EXPECT_EQ(c.nesterov, 1);
  EXPECT_EQ(c.ns_steps, 5);
  EXPECT_FLOAT_EQ(c.adamw_lr, 3e-4f);
  EXPECT_FLOAT_EQ(c.adamw_beta1, 0.9f);
  EXPECT_FLOAT_EQ(c.adamw_beta2, 0.95f);
  EXPECT_FLOAT_EQ(c.adamw_eps, 1e-10f);
}

TEST(ApiTest, CreateRejectsABadFieldAndNamesIt) {
  struct Case {
    void (*mutate)(normuon_config_t*);
    const char* field;
  } cases[] = {
      {[](normuon_config_t* c) { c->ns_steps = 0; }, "config.ns_steps"},
      {[](normuon_config_t* c) { c->lr = -1; }, "lr"},
      {[](normuon_config_t* c) { c->momentum = 1.5f; }, "beta1"},
      {[](normuon_config_t* c) { c->variant = static_cast<normuon_variant_t>(42); }, "config.variant"},
      {[](normuon_config_t* c) { c->backend = static_cast<normuon_backend_t>(7); }, "config.backend"},
      {[](normuon_config_t* c) { c->struct_size = 0; }, "config.struct_size"},
      {[](normuon_config_t* c) { c->adamw_eps = 0; }, "adamw"},
  };
  for (const Case& k : cases) {
    normuon_config_t c;
    normuon_config_init(&c);
    k.mutate(&c);
    normuon_runtime_t rt = 0;
    EXPECT_EQ(normuon_create(&c, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT) << k.field;
    EXPECT_EQ(rt, 0u);
    EXPECT_NE(std::string(normuon_last_error(0)).find(k.field), std::string::npos)
        << normuon_last_error(0);
  }
}

// config.cuda_graph (graph mode): 0 or 1; 1 needs the CUDA backend and one rank. Checked before
// the backend is created, so these run without a GPU.
TEST(ApiTest, CudaGraphConfigIsValidated) {
  normuon_config_t c;
  normuon_config_init(&c);
  EXPECT_EQ(c.cuda_graph, 0);
  normuon_runtime_t rt = 0;
  for (int32_t bad : {2, -1, 0x7fffffff}) {
    normuon_config_init(&c);
    c.cuda_graph = bad;
    EXPECT_EQ(normuon_create(&c, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT) << bad;
    EXPECT_EQ(rt, 0u);
    EXPECT_NE(std::string(normuon_last_error(0)).find("config.cuda_graph"), std::string::npos)
        << normuon_last_error(0);
  }

  // Graph mode on the CPU backend: nothing to capture.
  normuon_config_init(&c);
  c.cuda_graph = 1;
  EXPECT_EQ(normuon_create(&c, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(rt, 0u);
  EXPECT_NE(std::string(normuon_last_error(0)).find("config.cuda_graph"), std::string::npos)
      << normuon_last_error(0);
  EXPECT_NE(std::string(normuon_last_error(0)).find("NORMUON_BACKEND_CUDA"), std::string::npos)
      << normuon_last_error(0);

  // Graph mode at world size 2: not in this version (refused before any device or collective
  // is touched, so a host group serves here).
  normuon_comm_t comms[2] = {0, 0};
  ASSERT_EQ(normuon_comm_create_inprocess_group(2, 5.0, comms), NORMUON_SUCCESS);
  normuon_config_init(&c);
  c.backend = NORMUON_BACKEND_CUDA;
  c.cuda_graph = 1;
  EXPECT_EQ(normuon_create(&c, comms[0], &rt), NORMUON_ERROR_UNSUPPORTED);
  EXPECT_EQ(rt, 0u);
  EXPECT_NE(std::string(normuon_last_error(0)).find("config.cuda_graph = 1 at world size 2"),
            std::string::npos)
      << normuon_last_error(0);
  for (normuon_comm_t comm : comms) EXPECT_EQ(normuon_comm_destroy(comm), NORMUON_SUCCESS);

  // A caller compiled before the field existed: cuda_graph lies beyond its struct_size, is never
  // read, and keeps its default (off).
  normuon_config_init(&c);
  c.struct_size = static_cast<uint32_t>(offsetof(normuon_config_t, cuda_graph));
  c.cuda_graph = 2;
  ASSERT_EQ(normuon_create(&c, 0, &rt), NORMUON_SUCCESS) << normuon_last_error(0);
  EXPECT_EQ(normuon_destroy(rt), NORMUON_SUCCESS);
}

TEST(ApiTest, DoubleDestroyAndUseAfterDestroyReportInvalidHandle) {
  normuon_config_t c;
  normuon_config_init(&c);
  normuon_runtime_t rt = 0;
  ASSERT_EQ(normuon_create(&c, 0, &rt), NORMUON_SUCCESS);
  EXPECT_EQ(normuon_destroy(rt), NORMUON_SUCCESS);
  EXPECT_EQ(normuon_destroy(rt), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_EQ(normuon_finalize(rt), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_EQ(normuon_step(0, 0.02f, 0.0f, nullptr), NORMUON_ERROR_INVALID_HANDLE);
  EXPECT_NE(std::string(normuon_last_error(rt)).find("not a live runtime"), std::string::npos);
}

TEST(ApiTest, CudaBackendWithoutADeviceFailsCleanly) {
  normuon_config_t c;
  normuon_config_init(&c);
  c.backend = NORMUON_BACKEND_CUDA;
  normuon_runtime_t rt = 0;
  const normuon_status_t s = normuon_create(&c, 0, &rt);
  if (s == NORMUON_SUCCESS) {
    normuon_destroy(rt);
    GTEST_SKIP() << "a CUDA device is present; this test covers machines without one";
  }
  EXPECT_EQ(s, NORMUON_ERROR_UNSUPPORTED) << normuon_last_error(0);
  EXPECT_EQ(rt, 0u);
  EXPECT_GT(std::strlen(normuon_last_error(0)), 0u);
}

TEST(ApiTest, RegistrationRejectsBadDescriptorsAndNamesTheField) {
  Runtime rt;
  ASSERT_EQ(rt.create_status(), NORMUON_SUCCESS);
  std::vector<float> p(64 * 8), g(64 * 8);
  normuon_param_t id;
  struct Case {
    normuon_param_desc_t desc;
    const char* expect;
  };
  std::vector<Case> cases;
  auto base = [&] { return Desc("w", 64, 8, p.data(), g.data()); };
  { auto d = base(); d.name = nullptr; cases.push_back({d, "desc.name"}); }
  { auto d = base(); d.rows = 0; cases.push_back({d, "desc.rows"}); }
  { auto d = base(); d.cols = -3; cases.push_back({d, "desc.cols"}); }
  { auto d = base(); d.row_count = 65; cases.push_back({d, "desc.row_count"}); }
  { auto d = base(); d.row_begin = -1; cases.push_back({d, "desc.row_begin"}); }
  { auto d = base(); d.param = nullptr; cases.push_back({d, "param is null"}); }
  { auto d = base(); d.param = reinterpret_cast<char*>(p.data()) + 1; cases.push_back({d, "not aligned"}); }
  { auto d = base(); d.grad_dtype = static_cast<normuon_dtype_t>(5); cases.push_back({d, "desc.grad_dtype"}); }
  { auto d = base(); d.group = NORMUON_GROUP_ADAMW_DEFAULT; cases.push_back({d, "desc.group"}); }
  { auto d = base(); d.group = 17; cases.push_back({d, "desc.group"}); }
  { auto d = base(); d.rows = int64_t{1} << 40; d.row_count = d.rows; cases.push_back({d, "too large"}); }
  for (const Case& k : cases) {
    EXPECT_EQ(normuon_register_matrix(rt.get(), &k.desc, &id), NORMUON_ERROR_INVALID_ARGUMENT)
        << k.expect;
    EXPECT_NE(rt.error().find(k.expect), std::string::npos) << rt.error();
  }
  auto ok = base();
  ASSERT_EQ(normuon_register_matrix(rt.get(), &ok, &id), NORMUON_SUCCESS) << rt.error();
  EXPECT_EQ(id, 0);
  EXPECT_EQ(normuon_register_matrix(rt.get(), &ok, &id), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(rt.error().find("already registered"), std::string::npos) << rt.error();
}

TEST(ApiTest, FinalizeRejectsRowsThatDoNotCoverTheMatrixOnASingleRank) {
  Runtime rt;
  std::vector<float> p(64 * 8), g(64 * 8);
  auto d = Desc("w", 64, 8, p.data(), g.data());
  d.row_count = 32;  // half the rows, and no other rank holds the rest
  normuon_param_t id;
  ASSERT_EQ(normuon_register_matrix(rt.get(), &d, &id), NORMUON_SUCCESS) << rt.error();
  EXPECT_NE(normuon_finalize(rt.get()), NORMUON_SUCCESS);
  EXPECT_NE(rt.error().find("'w'"), std::string::npos) << rt.error();
  EXPECT_EQ(normuon_step(rt.get(), 0.02f, 0.0f, nullptr), NORMUON_ERROR_INVALID_STATE);
}

TEST(ApiTest, LifecycleOrderIsEnforced) {
  Runtime rt;
  std::vector<float> p(16), g(16);
  EXPECT_EQ(normuon_step(rt.get(), 0.02f, 0.0f, nullptr), NORMUON_ERROR_INVALID_STATE);
  EXPECT_NE(rt.error().find("before finalize"), std::string::npos);
  auto d = Desc("w", 4, 4, p.data(), g.data());
  normuon_param_t id;
  ASSERT_EQ(normuon_register_matrix(rt.get(), &d, &id), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_finalize(rt.get()), NORMUON_SUCCESS);
  auto d2 = Desc("w2", 4, 4, p.data(), g.data());
  EXPECT_EQ(normuon_register_matrix(rt.get(), &d2, &id), NORMUON_ERROR_INVALID_STATE);
  EXPECT_EQ(normuon_finalize(rt.get()), NORMUON_ERROR_INVALID_STATE);
  EXPECT_EQ(normuon_step(rt.get(), 0.02f, 0.0f, nullptr), NORMUON_SUCCESS) << rt.error();
}

// Runs `steps` steps of one matrix through the API and the float64 model; checks every update.
void ExpectMatchesReference(int rows, int cols, const RefHyper& h, normuon_variant_t variant,
                            int steps, bool drop_grad_on_step1 = false,
                            const std::function<void(normuon_config_t*)>& tweak = nullptr) {
  SCOPED_TRACE(testing::Message() << rows << "x" << cols << " variant " << variant);
  normuon_config_t c;
  normuon_config_init(&c);
  c.variant = variant;
  c.nesterov = h.nesterov ? 1 : 0;
  c.momentum = static_cast<float>(h.beta1);
  c.beta2 = static_cast<float>(h.beta2);
  c.eps = static_cast<float>(h.eps);
  c.cautious_weight_decay = h.cautious ? 1 : 0;
  c.neuron_axis = h.columns ? NORMUON_NEURON_COLUMNS : NORMUON_NEURON_ROWS;
  if (tweak) tweak(&c);
  Runtime rt(c);
  ASSERT_EQ(rt.create_status(), NORMUON_SUCCESS) << normuon_last_error(0);
  const size_t n = static_cast<size_t>(rows) * cols;
  std::vector<float> p = RandomVector(n, 1, 0.05f), g(n);
  auto d = Desc("w", rows, cols, p.data(), g.data());
  normuon_param_t id;
  ASSERT_EQ(normuon_register_matrix(rt.get(), &d, &id), NORMUON_SUCCESS) << rt.error();
  ASSERT_EQ(normuon_finalize(rt.get()), NORMUON_SUCCESS) << rt.error();
  RefMatrixState ref;
  ref.rows = rows;
  ref.cols = cols;
  ref.param.assign(p.begin(), p.end());
  ref.momentum.assign(n, 0.0);
  const bool per_element = variant == NORMUON_VARIANT_ADAMUON;
  ref.v.assign(per_element ? n : h.columns ? static_cast<size_t>(cols) : static_cast<size_t>(rows),
               0.0);
  for (int s = 0; s < steps; ++s) {
    g = RandomVector(n, 100 + s, 1.0f);
    const bool no_grad = drop_grad_on_step1 && s == 1;
    ASSERT_EQ(normuon_bind(rt.get(), id, p.data(), no_grad ? nullptr : g.data()), NORMUON_SUCCESS);
    std::vector<double> before(p.begin(), p.end());
    Mat ref_before = ref.param;
    Mat gd(g.begin(), g.end());
    normuon::testing::RefStep(ref, no_grad ? nullptr : &gd, h);
    ASSERT_EQ(normuon_step(rt.get(), static_cast<float>(h.lr), static_cast<float>(h.wd), nullptr),
              NORMUON_SUCCESS)
        << rt.error();
    // Compare updates (after - before); both start from the same fp32 parameter.
    std::vector<double> ours(n), want(n);
    double norm_after = 0;
    for (size_t i = 0; i < n; ++i) {
      ours[i] = p[i] - before[i];
      want[i] = ref.param[i] - ref_before[i];
      norm_after += static_cast<double>(p[i]) * p[i];
    }
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
      num += (ours[i] - want[i]) * (ours[i] - want[i]);
      den += want[i] * want[i];
    }
    const double floor = 2.4e-7 * std::sqrt(norm_after);
    EXPECT_LE(std::sqrt(num), 1e-5 * std::sqrt(den) + floor)
        << "step " << s << " rel err " << std::sqrt(num) / std::sqrt(den);
    ref.param.assign(p.begin(), p.end());  // continue both from our parameter
  }
  std::vector<float> m(n);
  ASSERT_EQ(normuon_get_state(rt.get(), id, NORMUON_STATE_MOMENTUM, m.data(), n * 4),
            NORMUON_SUCCESS);
  EXPECT_LE(normuon::testing::RelErr(std::vector<double>(m.begin(), m.end()), ref.momentum), 1e-6);
  if (variant != NORMUON_VARIANT_MUON) {
    std::vector<float> v(ref.v.size());
    ASSERT_EQ(normuon_get_state(rt.get(), id, NORMUON_STATE_SECOND_MOMENT, v.data(), v.size() * 4),
              NORMUON_SUCCESS);
    EXPECT_LE(normuon::testing::RelErr(std::vector<double>(v.begin(), v.end()), ref.v), 1e-5);
  }
}

TEST(StepTest, MatchesFloat64ModelOnTallWideSquareAndOneRowShapes) {
  RefHyper h;
  h.wd = 0.01;
  for (auto [r, c] : {std::pair{33, 5}, {5, 33}, {16, 16}, {1, 7}, {7, 1}, {96, 40}}) {
    ExpectMatchesReference(r, c, h, NORMUON_VARIANT_NORMUON, 3);
  }
}

TEST(StepTest, MatchesFloat64ModelForPaperScalingAndMuon) {
  RefHyper h;
  h.variant = RefVariant::kNorMuonPaper;
  ExpectMatchesReference(24, 40, h, NORMUON_VARIANT_NORMUON_PAPER, 3);
  h.variant = RefVariant::kMuon;
  ExpectMatchesReference(40, 24, h, NORMUON_VARIANT_MUON, 3);
}

TEST(VariantTest, AdaMuonMatchesItsFloat64Model) {
  RefHyper h;
  h.variant = RefVariant::kAdaMuon;
  h.beta2 = 0.99;  // the authors use 0.999; 0.99 keeps float(1 - beta2) within the 1e-5 budget
  h.eps = 1e-8;
  h.wd = 0.01;
  ExpectMatchesReference(24, 40, h, NORMUON_VARIANT_ADAMUON, 3);
  ExpectMatchesReference(40, 24, h, NORMUON_VARIANT_ADAMUON, 3);
}

TEST(VariantTest, LrAdjustReplacesTheShapeFactorOfEveryVariant) {
  const struct {
    RefVariant ref;
    normuon_variant_t api;
  } variants[] = {{RefVariant::kNorMuon, NORMUON_VARIANT_NORMUON},
                  {RefVariant::kNorMuonPaper, NORMUON_VARIANT_NORMUON_PAPER},
                  {RefVariant::kMuon, NORMUON_VARIANT_MUON},
                  {RefVariant::kAdaMuon, NORMUON_VARIANT_ADAMUON}};
  const struct {
    RefShape ref;
    normuon_lr_adjust_t api;
  } shapes[] = {{RefShape::kNone, NORMUON_LR_ADJUST_NONE},
                {RefShape::kSpectral, NORMUON_LR_ADJUST_SPECTRAL},
                {RefShape::kRms, NORMUON_LR_ADJUST_RMS}};
  for (const auto& v : variants) {
    for (const auto& sh : shapes) {
      RefHyper h;
      h.variant = v.ref;
      h.shape = sh.ref;
      if (v.ref == RefVariant::kAdaMuon) {
        h.beta2 = 0.99;
        h.eps = 1e-8;
      }
      ExpectMatchesReference(36, 20, h, v.api, 2, false,
                             [&](normuon_config_t* c) { c->lr_adjust = sh.api; });
    }
  }
}

TEST(VariantTest, PolarExpressAndCustomCoefficientsMatchTheirFloat64Model) {
  RefHyper polar;
  polar.coefficients = {{8.156554524902461, -22.48329292557795, 15.878769915207462},
                        {4.042929935166739, -2.808917465908714, 0.5000178451051316},
                        {3.8916678022926607, -2.772484153217685, 0.5060648178503393},
                        {3.285753657755655, -2.3681294933425376, 0.46449024233003106},
                        {2.3465413258596377, -1.7097828382687081, 0.42323551169305323}};
  polar.ns_norm_scale = 1.02;
  polar.ns_eps = 1e-6;
  ExpectMatchesReference(32, 48, polar, NORMUON_VARIANT_NORMUON, 3, false, [](normuon_config_t* c) {
    c->orthogonalizer = NORMUON_ORTHO_POLAR_EXPRESS;
  });
  // Three iterations of a caller's own triples.
  static const float kCustom[9] = {3.0f, -3.2f, 1.2f, 2.5f, -2.0f, 0.6f, 2.0f, -1.5f, 0.5f};
  RefHyper custom;
  custom.ns_steps = 3;
  custom.coefficients = {{3.0, -3.2, 1.2}, {2.5, -2.0, 0.6}, {2.0, -1.5, 0.5}};
  for (auto& t : custom.coefficients) {
    for (double& x : t) x = static_cast<float>(x);  // the API takes floats
  }
  ExpectMatchesReference(48, 32, custom, NORMUON_VARIANT_NORMUON, 3, false,
                         [](normuon_config_t* c) {
                           c->orthogonalizer = NORMUON_ORTHO_CUSTOM;
                           c->ns_steps = 3;
                           c->ns_coefficients = kCustom;
                         });
}

TEST(VariantTest, CautiousWeightDecayDecaysOnlyWhereUpdateAndWeightAgree) {
  RefHyper h;
  h.wd = 2.0;  // large, so a wrong mask shows far above the tolerance
  h.cautious = true;
  ExpectMatchesReference(20, 28, h, NORMUON_VARIANT_NORMUON, 3);
  h.variant = RefVariant::kMuon;
  ExpectMatchesReference(28, 20, h, NORMUON_VARIANT_MUON, 2);
}

TEST(VariantTest, ColumnNeuronAxisMatchesItsFloat64Model) {
  RefHyper h;
  h.columns = true;
  h.wd = 0.01;
  ExpectMatchesReference(24, 40, h, NORMUON_VARIANT_NORMUON, 3);
  ExpectMatchesReference(40, 24, h, NORMUON_VARIANT_NORMUON, 3);
  h.variant = RefVariant::kNorMuonPaper;
  ExpectMatchesReference(17, 9, h, NORMUON_VARIANT_NORMUON_PAPER, 2);
}

TEST(VariantTest, BadSwitchesAreRejectedNamingTheField) {
  normuon_config_t c;
  normuon_config_init(&c);
  c.orthogonalizer = NORMUON_ORTHO_CUSTOM;
  normuon_runtime_t rt = 0;
  EXPECT_EQ(normuon_create(&c, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(normuon_last_error(0)).find("ns_coefficients"), std::string::npos);
  normuon_config_init(&c);
  c.lr_adjust = static_cast<normuon_lr_adjust_t>(9);
  EXPECT_EQ(normuon_create(&c, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(normuon_last_error(0)).find("lr_adjust"), std::string::npos);
  normuon_config_init(&c);
  c.variant = NORMUON_VARIANT_MUON;
  c.neuron_axis = NORMUON_NEURON_COLUMNS;
  EXPECT_EQ(normuon_create(&c, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(normuon_last_error(0)).find("neuron_axis"), std::string::npos);
  normuon_config_init(&c);
  const float bad[15] = {1, 2, std::numeric_limits<float>::quiet_NaN()};
  c.orthogonalizer = NORMUON_ORTHO_CUSTOM;
  c.ns_coefficients = bad;
  EXPECT_EQ(normuon_create(&c, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(normuon_last_error(0)).find("ns_coefficients[2]"), std::string::npos);
}

TEST(StepTest, MatchesFloat64ModelWithoutNesterovAndOtherBetas) {
  RefHyper h;
  h.nesterov = false;
  h.beta1 = 0.9;
  h.beta2 = 0.99;
  h.wd = 0.1;
  ExpectMatchesReference(20, 12, h, NORMUON_VARIANT_NORMUON, 4);
}

TEST(StepTest, AMissingGradientIsZeroAndSkipsWeightDecay) {
  RefHyper h;
  h.wd = 0.5;
  ExpectMatchesReference(12, 20, h, NORMUON_VARIANT_NORMUON, 3, /*drop_grad_on_step1=*/true);
}

TEST(StepTest, AdamWMatchesTheBiasCorrectedReference) {
  normuon_config_t c;
  normuon_config_init(&c);
  Runtime rt(c);
  normuon_group_desc_t gd;
  normuon_group_desc_init(&gd, NORMUON_GROUP_ADAMW);
  gd.lr = 1e-3f;
  gd.beta1 = 0.8f;
  gd.beta2 = 0.9f;
  gd.eps = 1e-8f;
  gd.weight_decay = 0.1f;
  normuon_group_t group;
  ASSERT_EQ(normuon_add_group(rt.get(), &gd, &group), NORMUON_SUCCESS) << rt.error();
  const int n = 37;
  std::vector<float> p = RandomVector(n, 3, 0.5f), g(n);
  auto d = Desc("bias", n, 1, p.data(), g.data(), group);
  normuon_param_t id;
  ASSERT_EQ(normuon_register_adamw(rt.get(), &d, &id), NORMUON_SUCCESS) << rt.error();
  ASSERT_EQ(normuon_finalize(rt.get()), NORMUON_SUCCESS);
  std::vector<double> rp(p.begin(), p.end()), m1(n, 0), m2(n, 0);
  for (int s = 1; s <= 4; ++s) {
    const double lr = 1e-3 * s;  // a schedule, set through set_group_lr
    ASSERT_EQ(normuon_set_group_lr(rt.get(), group, static_cast<float>(lr), 0.1f), NORMUON_SUCCESS);
    const std::vector<float> fresh = RandomVector(n, 50 + s, 1.0f);
    std::copy(fresh.begin(), fresh.end(), g.begin());  // the runtime holds g's buffer
    std::vector<double> before(p.begin(), p.end());
    ASSERT_EQ(normuon_step(rt.get(), -1.0f, -1.0f, nullptr), NORMUON_SUCCESS) << rt.error();
    double num = 0, den = 0, norm_after = 0;
    for (int i = 0; i < n; ++i) {
      norm_after += static_cast<double>(p[i]) * p[i];
      m1[i] = 0.8 * m1[i] + 0.2 * g[i];
      m2[i] = 0.9 * m2[i] + 0.1 * g[i] * g[i];
      const double upd = (m1[i] / (1 - std::pow(0.8, s))) /
                         (std::sqrt(m2[i] / (1 - std::pow(0.9, s))) + 1e-8);
      const double want = before[i] * (1 - lr * 0.1) - lr * upd - before[i];
      const double got = p[i] - before[i];
      num += (got - want) * (got - want);
      den += want * want;
    }
    // docs/ARCHITECTURE.md section 6: fp32 storage of W adds up to 2.4e-7 * ||W|| to a small update.
    EXPECT_LE(std::sqrt(num), 1e-5 * std::sqrt(den) + 2.4e-7 * std::sqrt(norm_after))
        << "step " << s << " rel err " << std::sqrt(num) / std::sqrt(den);
  }
  int64_t steps = 0;
  ASSERT_EQ(normuon_get_state(rt.get(), id, NORMUON_STATE_STEP, &steps, 8), NORMUON_SUCCESS);
  EXPECT_EQ(steps, 4);
}

TEST(StepTest, NonFiniteGradientSkipsTheWholeStepAndChangesNothing) {
  normuon_config_t c;
  normuon_config_init(&c);
  c.check_finite = 1;
  Runtime rt(c);
  std::vector<float> p1 = RandomVector(48, 1, 0.1f), g1 = RandomVector(48, 2, 1.0f);
  std::vector<float> p2 = RandomVector(10, 3, 0.1f), g2 = RandomVector(10, 4, 1.0f);
  auto d1 = Desc("w", 6, 8, p1.data(), g1.data());
  auto d2 = Desc("b", 10, 1, p2.data(), g2.data(), NORMUON_GROUP_ADAMW_DEFAULT);
  normuon_param_t id1, id2;
  ASSERT_EQ(normuon_register_matrix(rt.get(), &d1, &id1), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_register_adamw(rt.get(), &d2, &id2), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_finalize(rt.get()), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_step(rt.get(), 0.02f, 0.01f, nullptr), NORMUON_SUCCESS) << rt.error();
  const std::vector<float> p1_before = p1, p2_before = p2;
  std::vector<float> m_before(48), m_after(48);
  ASSERT_EQ(normuon_get_state(rt.get(), id1, NORMUON_STATE_MOMENTUM, m_before.data(), 48 * 4),
            NORMUON_SUCCESS);
  g2[7] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(normuon_step(rt.get(), 0.02f, 0.01f, nullptr), NORMUON_ERROR_NONFINITE);
  EXPECT_NE(rt.error().find("'b'"), std::string::npos) << rt.error();
  EXPECT_EQ(std::memcmp(p1.data(), p1_before.data(), 48 * 4), 0);
  EXPECT_EQ(std::memcmp(p2.data(), p2_before.data(), 10 * 4), 0);
  ASSERT_EQ(normuon_get_state(rt.get(), id1, NORMUON_STATE_MOMENTUM, m_after.data(), 48 * 4),
            NORMUON_SUCCESS);
  EXPECT_EQ(std::memcmp(m_before.data(), m_after.data(), 48 * 4), 0);
  normuon_step_info_t info;
  normuon_step_info_init(&info);
  ASSERT_EQ(normuon_step_result(rt.get(), &info), NORMUON_SUCCESS);
  EXPECT_EQ(info.steps_taken, 1);
  EXPECT_EQ(info.steps_skipped, 1);
  EXPECT_EQ(info.last_skipped, 1);
  EXPECT_EQ(info.nonfinite_param, id2);
  int64_t adam_steps = 0;
  ASSERT_EQ(normuon_get_state(rt.get(), id2, NORMUON_STATE_STEP, &adam_steps, 8), NORMUON_SUCCESS);
  EXPECT_EQ(adam_steps, 1);
  g2[7] = 0.5f;  // a good step afterwards proceeds
  EXPECT_EQ(normuon_step(rt.get(), 0.02f, 0.01f, nullptr), NORMUON_SUCCESS) << rt.error();
  ASSERT_EQ(normuon_step_result(rt.get(), &info), NORMUON_SUCCESS);
  EXPECT_EQ(info.steps_taken, 2);
  EXPECT_EQ(info.last_skipped, 0);
}

TEST(StepTest, SameInputsGiveBitwiseIdenticalResultsAndBatchingChangesNothing) {
  // Two same-shape matrices in one runtime (one batched Newton-Schulz call) versus each alone.
  const size_t n = 24 * 16;
  std::vector<float> a = RandomVector(n, 5, 0.1f), b = RandomVector(n, 6, 0.1f);
  const std::vector<float> ga = RandomVector(n, 7, 1.0f), gb = RandomVector(n, 8, 1.0f);
  std::vector<float> a2 = a, b2 = b;
  {
    Runtime rt;
    auto da = Desc("a", 24, 16, a.data(), ga.data());
    auto db = Desc("b", 24, 16, b.data(), gb.data());
    normuon_param_t id;
    ASSERT_EQ(normuon_register_matrix(rt.get(), &da, &id), NORMUON_SUCCESS);
    ASSERT_EQ(normuon_register_matrix(rt.get(), &db, &id), NORMUON_SUCCESS);
    ASSERT_EQ(normuon_finalize(rt.get()), NORMUON_SUCCESS);
    for (int s = 0; s < 3; ++s) ASSERT_EQ(normuon_step(rt.get(), 0.02f, 0.01f, nullptr), NORMUON_SUCCESS);
  }
  for (auto [p, g] : {std::pair{&a2, &ga}, {&b2, &gb}}) {
    Runtime rt;
    auto d = Desc("x", 24, 16, p->data(), g->data());
    normuon_param_t id;
    ASSERT_EQ(normuon_register_matrix(rt.get(), &d, &id), NORMUON_SUCCESS);
    ASSERT_EQ(normuon_finalize(rt.get()), NORMUON_SUCCESS);
    for (int s = 0; s < 3; ++s) ASSERT_EQ(normuon_step(rt.get(), 0.02f, 0.01f, nullptr), NORMUON_SUCCESS);
  }
  EXPECT_EQ(std::memcmp(a.data(), a2.data(), n * 4), 0);
  EXPECT_EQ(std::memcmp(b.data(), b2.data(), n * 4), 0);
}

TEST(StepTest, Bf16ParametersAndGradientsStayCloseToTheFp32Run) {
  const int rows = 32, cols = 24;
  const size_t n = rows * cols;
  std::vector<float> p32 = RandomVector(n, 9, 0.1f);
  std::vector<float> g32 = RandomVector(n, 10, 1.0f);
  std::vector<normuon::Bf16> p16(n), g16(n);
  for (size_t i = 0; i < n; ++i) {
    p32[i] = normuon::RoundToBf16(p32[i]);
    g32[i] = normuon::RoundToBf16(g32[i]);
    p16[i] = normuon::FloatToBf16(p32[i]);
    g16[i] = normuon::FloatToBf16(g32[i]);
  }
  const std::vector<float> start = p32;
  Runtime r32, r16;
  auto d32 = Desc("w", rows, cols, p32.data(), g32.data());
  auto d16 = Desc("w", rows, cols, p16.data(), g16.data());
  d16.param_dtype = NORMUON_DTYPE_BF16;
  d16.grad_dtype = NORMUON_DTYPE_BF16;
  normuon_param_t id;
  ASSERT_EQ(normuon_register_matrix(r32.get(), &d32, &id), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_register_matrix(r16.get(), &d16, &id), NORMUON_SUCCESS) << r16.error();
  ASSERT_EQ(normuon_finalize(r32.get()), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_finalize(r16.get()), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_step(r32.get(), 0.02f, 0.0f, nullptr), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_step(r16.get(), 0.02f, 0.0f, nullptr), NORMUON_SUCCESS);
  std::vector<double> u32(n), u16(n);
  for (size_t i = 0; i < n; ++i) {
    u32[i] = p32[i] - start[i];
    u16[i] = normuon::Bf16ToFloat(p16[i]) - start[i];
  }
  // One bf16 rounding of the result: the error is about half a bf16 ulp of |W| per element.
  EXPECT_LE(normuon::testing::RelErr(u16, u32), 0.1);
  EXPECT_GT(normuon::testing::RelErr(u16, u32), 0.0);  // it really ran in bf16
}

TEST(StepTest, Bf16NewtonSchulzOnCpuStaysWithinTheBf16Band) {
  normuon_config_t c;
  normuon_config_init(&c);
  c.ns_dtype = NORMUON_NS_BF16;
  Runtime rt(c);
  const int rows = 48, cols = 64;
  const size_t n = rows * cols;
  std::vector<float> p = RandomVector(n, 11, 0.1f), g = RandomVector(n, 12, 1.0f);
  const std::vector<float> start = p;
  auto d = Desc("w", rows, cols, p.data(), g.data());
  normuon_param_t id;
  ASSERT_EQ(normuon_register_matrix(rt.get(), &d, &id), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_finalize(rt.get()), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_step(rt.get(), 0.02f, 0.0f, nullptr), NORMUON_SUCCESS);
  RefMatrixState ref{rows, cols, Mat(start.begin(), start.end()), Mat(n, 0.0),
                     std::vector<double>(rows, 0.0)};
  Mat gd(g.begin(), g.end());
  normuon::testing::RefStep(ref, &gd, RefHyper{});
  std::vector<double> ours(n), want(n);
  for (size_t i = 0; i < n; ++i) {
    ours[i] = p[i] - start[i];
    want[i] = ref.param[i] - start[i];
  }
  const double err = normuon::testing::RelErr(ours, want);
  EXPECT_LE(err, 7e-2);
  EXPECT_GT(err, 1e-4);  // bf16 rounding is visible: the mode is not silently fp32
}

TEST(StateTest, StateRoundTripsAndSizesAreChecked) {
  Runtime rt;
  std::vector<float> p(40), g(40), b(5), gb(5);
  auto d = Desc("w", 8, 5, p.data(), g.data());
  auto db = Desc("b", 5, 1, b.data(), gb.data(), NORMUON_GROUP_ADAMW_DEFAULT);
  normuon_param_t w, bias;
  ASSERT_EQ(normuon_register_matrix(rt.get(), &d, &w), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_register_adamw(rt.get(), &db, &bias), NORMUON_SUCCESS);
  std::vector<float> m(40, 1.5f);
  EXPECT_EQ(normuon_set_state(rt.get(), w, NORMUON_STATE_MOMENTUM, m.data(), 160),
            NORMUON_ERROR_INVALID_STATE);
  ASSERT_EQ(normuon_finalize(rt.get()), NORMUON_SUCCESS);
  uint64_t bytes = 0;
  ASSERT_EQ(normuon_state_size(rt.get(), w, NORMUON_STATE_SECOND_MOMENT, &bytes), NORMUON_SUCCESS);
  EXPECT_EQ(bytes, 8u * 4);
  ASSERT_EQ(normuon_state_size(rt.get(), w, NORMUON_STATE_EXP_AVG, &bytes), NORMUON_SUCCESS);
  EXPECT_EQ(bytes, 0u);
  ASSERT_EQ(normuon_set_state(rt.get(), w, NORMUON_STATE_MOMENTUM, m.data(), 160), NORMUON_SUCCESS);
  std::vector<float> back(40);
  ASSERT_EQ(normuon_get_state(rt.get(), w, NORMUON_STATE_MOMENTUM, back.data(), 160), NORMUON_SUCCESS);
  EXPECT_EQ(back, m);
  EXPECT_EQ(normuon_get_state(rt.get(), w, NORMUON_STATE_MOMENTUM, back.data(), 156),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(rt.error().find("bytes = 156"), std::string::npos) << rt.error();
  EXPECT_EQ(normuon_get_state(rt.get(), w, NORMUON_STATE_EXP_AVG, back.data(), 160),
            NORMUON_ERROR_INVALID_ARGUMENT);
  const int64_t negative = -2;
  EXPECT_EQ(normuon_set_state(rt.get(), bias, NORMUON_STATE_STEP, &negative, 8),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(normuon_get_state(rt.get(), 99, NORMUON_STATE_STEP, back.data(), 8),
            NORMUON_ERROR_INVALID_ARGUMENT);
}

TEST(StepTest, ProfileReportsEveryPhaseOfTheLastStep) {
  Runtime rt;
  std::vector<float> p = RandomVector(64 * 48, 1, 0.1f), g = RandomVector(64 * 48, 2, 1.0f);
  auto d = Desc("w", 64, 48, p.data(), g.data());
  normuon_param_t id;
  ASSERT_EQ(normuon_register_matrix(rt.get(), &d, &id), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_finalize(rt.get()), NORMUON_SUCCESS);
  normuon_step_profile_t prof;
  normuon_step_profile_init(&prof);
  EXPECT_EQ(normuon_last_step_profile(rt.get(), &prof), NORMUON_ERROR_INVALID_STATE);
  ASSERT_EQ(normuon_step(rt.get(), 0.02f, 0.0f, nullptr), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_last_step_profile(rt.get(), &prof), NORMUON_SUCCESS) << rt.error();
  EXPECT_GT(prof.newton_schulz_ms, 0.0);
  EXPECT_GE(prof.total_ms, prof.momentum_ms + prof.newton_schulz_ms + prof.row_stats_ms +
                               prof.update_ms + prof.adamw_ms);
  EXPECT_EQ(prof.gather_ms, 0.0);  // single rank: nothing moves
}

TEST(GradReadyTest, MisuseIsRejectedAndMarksNothing) {
  normuon_config_t c;
  normuon_config_init(&c);
  c.schedule = NORMUON_SCHEDULE_PER_MATRIX;
  Runtime rt(c);
  std::vector<float> a = RandomVector(48, 1, 0.1f), ga = RandomVector(48, 2, 1.0f);
  std::vector<float> b = RandomVector(6, 3, 0.1f), gb = RandomVector(6, 4, 1.0f);
  auto da = Desc("a", 6, 8, a.data(), ga.data());
  auto db = Desc("b", 6, 1, b.data(), gb.data(), NORMUON_GROUP_ADAMW_DEFAULT);
  normuon_param_t ia, ib;
  ASSERT_EQ(normuon_register_matrix(rt.get(), &da, &ia), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_register_adamw(rt.get(), &db, &ib), NORMUON_SUCCESS);
  EXPECT_EQ(normuon_grad_ready(rt.get(), &ia, 1, nullptr), NORMUON_ERROR_INVALID_STATE);
  ASSERT_EQ(normuon_finalize(rt.get()), NORMUON_SUCCESS);
  EXPECT_EQ(normuon_grad_ready(rt.get(), &ib, 1, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(rt.error().find("AdamW"), std::string::npos) << rt.error();
  const normuon_param_t unknown = 7;
  EXPECT_EQ(normuon_grad_ready(rt.get(), &unknown, 1, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  const normuon_param_t twice[2] = {ia, ia};
  EXPECT_EQ(normuon_grad_ready(rt.get(), twice, 2, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(rt.error().find("listed twice"), std::string::npos) << rt.error();
  ASSERT_EQ(normuon_grad_ready(rt.get(), &ia, 1, nullptr), NORMUON_SUCCESS) << rt.error();
  EXPECT_EQ(normuon_grad_ready(rt.get(), &ia, 1, nullptr), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(rt.error().find("already marked"), std::string::npos) << rt.error();
  EXPECT_EQ(normuon_bind(rt.get(), ia, a.data(), ga.data()), NORMUON_ERROR_INVALID_STATE);
  EXPECT_NE(rt.error().find("after its normuon_grad_ready"), std::string::npos) << rt.error();
  // Parameters not marked yet (here the AdamW one) may still be bound inside the step.
  EXPECT_EQ(normuon_bind(rt.get(), ib, b.data(), gb.data()), NORMUON_SUCCESS) << rt.error();
  ASSERT_EQ(normuon_step(rt.get(), 0.02f, 0.0f, nullptr), NORMUON_SUCCESS) << rt.error();
  // A new step: marking again is fine.
  EXPECT_EQ(normuon_grad_ready(rt.get(), &ia, 1, nullptr), NORMUON_SUCCESS) << rt.error();
  EXPECT_EQ(normuon_step(rt.get(), 0.02f, 0.0f, nullptr), NORMUON_SUCCESS) << rt.error();
}

TEST(StepTest, TraceListsEveryPhaseAsChromeTraceEvents) {
  normuon_config_t c;
  normuon_config_init(&c);
  c.schedule = NORMUON_SCHEDULE_PER_MATRIX;
  Runtime rt(c);
  std::vector<float> a = RandomVector(48, 1, 0.1f), ga = RandomVector(48, 2, 1.0f);
  std::vector<float> b = RandomVector(6, 3, 0.1f), gb = RandomVector(6, 4, 1.0f);
  auto da = Desc("a", 6, 8, a.data(), ga.data());
  auto db = Desc("b", 6, 1, b.data(), gb.data(), NORMUON_GROUP_ADAMW_DEFAULT);
  normuon_param_t id;
  ASSERT_EQ(normuon_register_matrix(rt.get(), &da, &id), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_register_adamw(rt.get(), &db, &id), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_finalize(rt.get()), NORMUON_SUCCESS);
  uint64_t needed = 0;
  EXPECT_EQ(normuon_last_step_trace(rt.get(), nullptr, 0, &needed), NORMUON_ERROR_INVALID_STATE);
  ASSERT_EQ(normuon_step(rt.get(), 0.02f, 0.0f, nullptr), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_last_step_trace(rt.get(), nullptr, 0, &needed), NORMUON_SUCCESS);
  std::string trace(needed, '\0');
  ASSERT_EQ(normuon_last_step_trace(rt.get(), trace.data(), needed, &needed), NORMUON_SUCCESS);
  for (const char* phase : {"\"momentum\"", "\"newton_schulz\"", "\"row_stats\"", "\"update\"",
                            "\"adamw\"", "\"communication\"", "\"ph\":\"X\""}) {
    EXPECT_NE(trace.find(phase), std::string::npos) << phase << " missing in " << trace;
  }
  // A short buffer gets a truncated, terminated prefix and the full size.
  char small[8];
  ASSERT_EQ(normuon_last_step_trace(rt.get(), small, sizeof(small), &needed), NORMUON_SUCCESS);
  EXPECT_EQ(small[7], '\0');
  EXPECT_EQ(needed, trace.size());
}

TEST(StateTest, MemoryQueryCountsStateBeforeFinalize) {
  Runtime rt;
  uint64_t empty = 0, one = 0;
  ASSERT_EQ(normuon_memory_required(rt.get(), &empty), NORMUON_SUCCESS);
  std::vector<float> p(100 * 30), g(100 * 30);
  auto d = Desc("w", 100, 30, p.data(), g.data());
  normuon_param_t id;
  ASSERT_EQ(normuon_register_matrix(rt.get(), &d, &id), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_memory_required(rt.get(), &one), NORMUON_SUCCESS);
  // momentum (fp32) + U and O (fp32 on CPU) at least.
  EXPECT_GE(one - empty, 3u * 100 * 30 * 4);
}

}  // namespace

namespace {

// normuon_param_state_size (no runtime) and normuon_state_size (registered) are one rule: every
// kind, for matrices (row blocks too) and AdamW parameters, under every variant and both axes.
TEST(ApiTest, StateSizeWithoutARuntimeIsTheRegisteredOne) {
  struct Case {
    normuon_variant_t variant;
    normuon_neuron_axis_t axis;
  };
  const std::vector<Case> cases = {{NORMUON_VARIANT_NORMUON, NORMUON_NEURON_ROWS},
                                   {NORMUON_VARIANT_NORMUON, NORMUON_NEURON_COLUMNS},
                                   {NORMUON_VARIANT_NORMUON_PAPER, NORMUON_NEURON_COLUMNS},
                                   {NORMUON_VARIANT_MUON, NORMUON_NEURON_ROWS},
                                   {NORMUON_VARIANT_ADAMUON, NORMUON_NEURON_ROWS}};
  for (const Case& c : cases) {
    normuon_config_t cfg;
    normuon_config_init(&cfg);
    cfg.variant = c.variant;
    cfg.neuron_axis = c.axis;
    normuon_runtime_t rt = 0;
    ASSERT_EQ(normuon_create(&cfg, 0, &rt), NORMUON_SUCCESS);
    std::vector<float> w(12 * 5), g(12 * 5);
    int64_t splits[3] = {4, 4, 4};
    std::vector<normuon_param_desc_t> descs(3);
    for (int i = 0; i < 3; ++i) {
      normuon_param_desc_init(&descs[i]);
      descs[i].name = i == 0 ? "plain" : i == 1 ? "blocks" : "bias";
      descs[i].rows = 12;
      descs[i].cols = i == 2 ? 1 : 5;
      descs[i].row_count = 12;
      descs[i].param = w.data();
      descs[i].grad = g.data();
    }
    descs[1].row_splits = splits;
    descs[1].num_row_splits = 3;
    normuon_param_t ids[3];
    ASSERT_EQ(normuon_register_matrix(rt, &descs[0], &ids[0]), NORMUON_SUCCESS);
    ASSERT_EQ(normuon_register_matrix(rt, &descs[1], &ids[1]), NORMUON_SUCCESS);
    ASSERT_EQ(normuon_register_adamw(rt, &descs[2], &ids[2]), NORMUON_SUCCESS);
    for (int i = 0; i < 3; ++i) {
      for (normuon_state_kind_t kind :
           {NORMUON_STATE_MOMENTUM, NORMUON_STATE_SECOND_MOMENT, NORMUON_STATE_EXP_AVG,
            NORMUON_STATE_EXP_AVG_SQ, NORMUON_STATE_STEP}) {
        uint64_t registered = 1, described = 2;
        ASSERT_EQ(normuon_state_size(rt, ids[i], kind, &registered), NORMUON_SUCCESS);
        ASSERT_EQ(normuon_param_state_size(&cfg, &descs[i], i < 2 ? 1 : 0, kind, &described),
                  NORMUON_SUCCESS)
            << normuon_last_error(0);
        EXPECT_EQ(described, registered) << "variant " << c.variant << " axis " << c.axis
                                         << " param " << i << " kind " << kind;
      }
    }
    normuon_destroy(rt);
  }
  // AdaMuon keeps one v per element; the column axis one per column of each row block.
  normuon_config_t cfg;
  normuon_config_init(&cfg);
  normuon_param_desc_t d;
  normuon_param_desc_init(&d);
  d.name = "m";
  d.rows = 12;
  d.cols = 5;
  d.row_count = 6;
  uint64_t bytes = 0;
  cfg.variant = NORMUON_VARIANT_ADAMUON;
  ASSERT_EQ(normuon_param_state_size(&cfg, &d, 1, NORMUON_STATE_SECOND_MOMENT, &bytes),
            NORMUON_SUCCESS);
  EXPECT_EQ(bytes, 6u * 5u * 4u);
  // Bad input is named.
  d.cols = 0;
  EXPECT_EQ(normuon_param_state_size(&cfg, &d, 1, NORMUON_STATE_MOMENTUM, &bytes),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(normuon_last_error(0)).find("desc.cols"), std::string::npos);
  d.cols = 5;
  EXPECT_EQ(normuon_param_state_size(&cfg, &d, 2, NORMUON_STATE_MOMENTUM, &bytes),
            NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(normuon_last_error(0)).find("is_matrix"), std::string::npos);
}

}  // namespace
