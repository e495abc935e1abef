// Every versioned struct of normuon.h through the C API (base/versioned_struct.h, applied at the
// C edge): a size of 0, sizes below the first version, sizes inside a field, older versions
// (their later fields keep the *_init defaults and are never read), and newer, larger structs
// (accepted with their extra bytes zero, refused otherwise; outputs written only up to the
// caller's size). normuon_comm_ops_t has the same tests in tests/comm/c_api_test.cc.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "normuon/normuon.h"
#include "tests/reliability/test_util.h"

namespace normuon_reliability {
namespace {

// Where each struct's first version ended (normuon.h, "Versions").
constexpr size_t kConfigV1 = offsetof(normuon_config_t, adamw_weight_decay) + 4;
constexpr size_t kGroupDescV1 = sizeof(normuon_group_desc_t);
constexpr size_t kParamDescV1 = offsetof(normuon_param_desc_t, group) + 4;
constexpr size_t kStepInfoV1 = offsetof(normuon_step_info_t, nonfinite_param) + 4;
constexpr size_t kStepProfileV1 = offsetof(normuon_step_profile_t, adamw_ms) + 8;
static_assert(kConfigV1 == 80 && kParamDescV1 == 80 && kStepProfileV1 == 80 && kStepInfoV1 == 32,
              "LP64 layouts");

std::string Below(const std::string& arg, size_t size, size_t first) {
  return arg + ".struct_size " + std::to_string(size) + " is smaller than the first version (" +
         std::to_string(first) + " bytes)";
}

// ---- normuon_config_t ----

normuon_status_t Create(const normuon_config_t* c) {
  normuon_runtime_t rt = 0;
  const normuon_status_t s = normuon_create(c, 0, &rt);
  if (s == NORMUON_SUCCESS) EXPECT_EQ(normuon_destroy(rt), NORMUON_SUCCESS);
  if (s != NORMUON_SUCCESS) EXPECT_EQ(rt, 0u);
  return s;
}

TEST(ConfigVersionTest, SmallAndBelowTheFirstVersionAreRefused) {
  for (uint32_t size : {0u, 8u, static_cast<uint32_t>(kConfigV1 - 4)}) {
    normuon_config_t c;
    normuon_config_init(&c);
    c.struct_size = size;
    EXPECT_EQ(Create(&c), NORMUON_ERROR_INVALID_ARGUMENT) << size;
    EXPECT_TRUE(Contains(LastError(0), Below("config", size, kConfigV1)));
    EXPECT_TRUE(Contains(LastError(0), "fill the struct with normuon_config_init"));
  }
}

TEST(ConfigVersionTest, ASizeInsideAFieldIsRefusedNamingIt) {
  normuon_config_t c;
  normuon_config_init(&c);
  c.struct_size = static_cast<uint32_t>(offsetof(normuon_config_t, bucket_bytes) + 2);
  EXPECT_EQ(Create(&c), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(0), "ends inside field bucket_bytes"));
}

TEST(ConfigVersionTest, OlderVersionsKeepTheDefaultsOfTheLaterFields) {
  // The first version: every later field is invalid here, and never read.
  normuon_config_t c;
  normuon_config_init(&c);
  c.struct_size = kConfigV1;
  c.owner_policy = static_cast<normuon_owner_policy_t>(99);
  c.schedule = static_cast<normuon_schedule_t>(99);
  c.cuda_graph = 7;
  EXPECT_EQ(Create(&c), NORMUON_SUCCESS) << LastError(0);

  // A version through schedule: the bucketed schedule is read, bucket_bytes is not and keeps its
  // default (32 MiB); read, its 0 would be refused.
  normuon_config_init(&c);
  c.struct_size = static_cast<uint32_t>(offsetof(normuon_config_t, bucket_bytes));
  c.schedule = NORMUON_SCHEDULE_BUCKETED;
  c.bucket_bytes = 0;
  EXPECT_EQ(Create(&c), NORMUON_SUCCESS) << LastError(0);
  c.struct_size = sizeof(c);  // the same values in this version's struct: bucket_bytes is read
  EXPECT_EQ(Create(&c), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(0), "config.bucket_bytes"));

  // A field this version reads is still checked: lr is in the first version.
  normuon_config_init(&c);
  c.struct_size = kConfigV1;
  c.lr = -1.0f;
  EXPECT_EQ(Create(&c), NORMUON_ERROR_INVALID_ARGUMENT);
}

// ns_symmetric_products, the last field: a config of the version before it (ending after
// ns_restarts) never reads it, so a bad value there is ignored; the whole struct reads and checks
// it, naming it.
TEST(ConfigVersionTest, TheVersionBeforeNsSymmetricProductsDoesNotReadIt) {
  normuon_config_t c;
  normuon_config_init(&c);
  EXPECT_EQ(c.ns_symmetric_products, 0);
  c.ns_symmetric_products = 5;
  c.struct_size = static_cast<uint32_t>(offsetof(normuon_config_t, ns_restarts) + sizeof(void*));
  EXPECT_EQ(Create(&c), NORMUON_SUCCESS) << LastError(0);
  c.struct_size = sizeof(c);
  EXPECT_EQ(Create(&c), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(0), "config.ns_symmetric_products = 5"));
  c.ns_symmetric_products = 1;  // accepted on CPU, where it changes nothing
  EXPECT_EQ(Create(&c), NORMUON_SUCCESS) << LastError(0);
}

TEST(ConfigVersionTest, ANewerConfigIsAcceptedOnlyWithItsNewFieldsZero) {
  struct Newer {
    normuon_config_t c;
    uint64_t more[2];
  } n;
  std::memset(&n, 0, sizeof(n));
  normuon_config_init(&n.c);
  n.c.struct_size = sizeof(n);
  EXPECT_EQ(Create(&n.c), NORMUON_SUCCESS) << LastError(0);
  n.more[1] = 1;
  EXPECT_EQ(Create(&n.c), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(0), "is larger than this library's normuon_config_t"));
  EXPECT_TRUE(Contains(LastError(0), "byte " + std::to_string(sizeof(normuon_config_t) + 8)));
}

// ---- normuon_group_desc_t (one version) ----

TEST(GroupDescVersionTest, SmallBelowFirstAndNewerSizes) {
  SmallModel m;
  m.Build(/*finalize=*/false);
  normuon_group_t id = -1;
  for (uint32_t size : {0u, 8u, static_cast<uint32_t>(kGroupDescV1 - 4)}) {
    normuon_group_desc_t d;
    normuon_group_desc_init(&d, NORMUON_GROUP_ADAMW);
    d.struct_size = size;
    EXPECT_EQ(normuon_add_group(m.rt, &d, &id), NORMUON_ERROR_INVALID_ARGUMENT) << size;
    EXPECT_TRUE(Contains(LastError(m.rt), Below("desc", size, kGroupDescV1)));
  }
  // The first version is the whole struct, so no size between it and sizeof can cut a field.
  struct Newer {
    normuon_group_desc_t d;
    float more[3];
  } n;
  std::memset(&n, 0, sizeof(n));
  normuon_group_desc_init(&n.d, NORMUON_GROUP_ADAMW);
  n.d.struct_size = sizeof(n);
  ASSERT_EQ(normuon_add_group(m.rt, &n.d, &id), NORMUON_SUCCESS) << LastError(m.rt);
  EXPECT_EQ(id, 2);
  n.more[2] = 1.0f;
  id = -1;
  EXPECT_EQ(normuon_add_group(m.rt, &n.d, &id), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "is larger than this library's normuon_group_desc_t"));
  EXPECT_EQ(id, -1);
}

// ---- normuon_param_desc_t ----

TEST(ParamDescVersionTest, SmallBelowFirstAndInsideAFieldAreRefused) {
  SmallModel m;
  m.Build(/*finalize=*/false);
  std::vector<float> w(32), g(32);
  normuon_param_desc_t d = m.MatrixDesc();
  d.name = "w2";
  d.param = w.data();
  d.grad = g.data();
  normuon_param_t id = -1;
  for (uint32_t size : {0u, 4u, static_cast<uint32_t>(kParamDescV1 - 8)}) {
    d.struct_size = size;
    EXPECT_EQ(normuon_register_matrix(m.rt, &d, &id), NORMUON_ERROR_INVALID_ARGUMENT) << size;
    EXPECT_TRUE(Contains(LastError(m.rt), Below("desc", size, kParamDescV1)));
  }
  d.struct_size = static_cast<uint32_t>(offsetof(normuon_param_desc_t, row_splits) + 4);
  EXPECT_EQ(normuon_register_adamw(m.rt, &d, &id), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "ends inside field row_splits"));
  EXPECT_EQ(id, -1);
}

TEST(ParamDescVersionTest, TheFirstVersionIsOneBlockWhateverLiesPastIt) {
  SmallModel m;
  m.Build(/*finalize=*/false);
  std::vector<float> w(32), g(32);
  normuon_param_desc_t d = m.MatrixDesc();
  d.name = "w2";
  d.param = w.data();
  d.grad = g.data();
  d.struct_size = kParamDescV1;
  const int64_t bogus_splits[] = {1, 1, 1};  // would not sum to rows if it were read
  d.row_splits = bogus_splits;
  d.num_row_splits = 3;
  normuon_param_t id = -1;
  ASSERT_EQ(normuon_register_matrix(m.rt, &d, &id), NORMUON_SUCCESS) << LastError(m.rt);
  EXPECT_EQ(id, 2);
  // This version's struct reads them and refuses them.
  d.name = "w3";
  d.struct_size = sizeof(d);
  EXPECT_EQ(normuon_register_matrix(m.rt, &d, &id), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "row_splits"));
}

TEST(ParamDescVersionTest, ANewerDescIsAcceptedOnlyWithItsNewFieldsZero) {
  SmallModel m;
  m.Build(/*finalize=*/false);
  std::vector<float> w(32), g(32);
  struct Newer {
    normuon_param_desc_t d;
    void* more;
  } n;
  std::memset(&n, 0, sizeof(n));
  n.d = m.MatrixDesc();
  n.d.name = "w2";
  n.d.param = w.data();
  n.d.grad = g.data();
  n.d.struct_size = sizeof(n);
  normuon_param_t id = -1;
  ASSERT_EQ(normuon_register_matrix(m.rt, &n.d, &id), NORMUON_SUCCESS) << LastError(m.rt);
  n.d.name = "w3";
  n.more = &n;
  id = -1;
  EXPECT_EQ(normuon_register_matrix(m.rt, &n.d, &id), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "is larger than this library's normuon_param_desc_t"));
  EXPECT_EQ(id, -1);
}

TEST(ParamDescVersionTest, InitLeavesGroupMinusOneTheDefaultGroupOfTheKind) {
  normuon_param_desc_t d;
  normuon_param_desc_init(&d);
  EXPECT_EQ(d.group, -1);
  normuon_config_t c;
  normuon_config_init(&c);
  normuon_runtime_t rt = 0;
  ASSERT_EQ(normuon_create(&c, 0, &rt), NORMUON_SUCCESS) << LastError(0);
  // A custom AdamW group with a learning rate far from the default group's.
  normuon_group_desc_t g;
  normuon_group_desc_init(&g, NORMUON_GROUP_ADAMW);
  g.lr = 0.5f;
  normuon_group_t custom = -1;
  ASSERT_EQ(normuon_add_group(rt, &g, &custom), NORMUON_SUCCESS) << LastError(rt);
  std::vector<float> w(8, 0.5f), gw(8, 0.25f), b(4, 1.0f), gb(4, 1.0f), b2(4, 1.0f);
  d.name = "w";
  d.rows = 2;
  d.cols = 4;
  d.row_count = 2;
  d.param = w.data();
  d.grad = gw.data();
  normuon_param_t pw = -1, pb = -1, pb2 = -1;
  ASSERT_EQ(normuon_register_matrix(rt, &d, &pw), NORMUON_SUCCESS) << LastError(rt);
  normuon_param_desc_init(&d);
  d.name = "b";
  d.rows = 4;
  d.cols = 1;
  d.row_count = 4;
  d.param = b.data();
  d.grad = gb.data();
  ASSERT_EQ(normuon_register_adamw(rt, &d, &pb), NORMUON_SUCCESS) << LastError(rt);
  d.name = "b2";
  d.param = b2.data();
  d.group = custom;
  ASSERT_EQ(normuon_register_adamw(rt, &d, &pb2), NORMUON_SUCCESS) << LastError(rt);
  // -1 is the default group of the kind, not a wildcard: a matrix in an AdamW group is refused.
  normuon_param_desc_init(&d);
  d.name = "w2";
  d.rows = 2;
  d.cols = 4;
  d.row_count = 2;
  d.param = w.data();
  d.group = NORMUON_GROUP_ADAMW_DEFAULT;
  normuon_param_t bad = -7;
  EXPECT_EQ(normuon_register_matrix(rt, &d, &bad), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(bad, -7);
  ASSERT_EQ(normuon_finalize(rt), NORMUON_SUCCESS) << LastError(rt);
  ASSERT_EQ(normuon_step(rt, 0.02f, 0.0f, nullptr), NORMUON_SUCCESS) << LastError(rt);
  // Same gradients, lr 3e-4 (the default AdamW group) against lr 0.5: the first AdamW step
  // moves each element by about lr.
  EXPECT_NEAR(1.0f - b[0], 3e-4f, 1e-5f);
  EXPECT_NEAR(1.0f - b2[0], 0.5f, 1e-3f);
  EXPECT_NE(w[0], 0.5f);  // the matrix went through group 0's step
  EXPECT_EQ(normuon_destroy(rt), NORMUON_SUCCESS);
}

// ---- normuon_step_info_t (output; the ns_fallback fields came later) ----

TEST(StepInfoVersionTest, SizesAreCheckedAndANewerStructIsWrittenOnlyUpToThisVersion) {
  SmallModel m;
  m.Build(/*finalize=*/true);
  ASSERT_EQ(normuon_step(m.rt, 0.01f, 0.0f, nullptr), NORMUON_SUCCESS) << LastError(m.rt);
  for (uint32_t size : {0u, 8u, static_cast<uint32_t>(kStepInfoV1 - 8)}) {
    normuon_step_info_t info;
    normuon_step_info_init(&info);
    info.struct_size = size;
    EXPECT_EQ(normuon_step_result(m.rt, &info), NORMUON_ERROR_INVALID_ARGUMENT) << size;
    EXPECT_TRUE(Contains(LastError(m.rt), Below("info", size, kStepInfoV1)));
    EXPECT_EQ(info.steps_taken, 0);  // nothing written on failure
  }
  struct Newer {
    normuon_step_info_t info;
    unsigned char more[16];
  } n;
  std::memset(&n, 0x77, sizeof(n));
  n.info.struct_size = sizeof(n);
  ASSERT_EQ(normuon_step_result(m.rt, &n.info), NORMUON_SUCCESS) << LastError(m.rt);
  EXPECT_EQ(n.info.struct_size, sizeof(n));
  EXPECT_EQ(n.info.steps_taken, 1);
  EXPECT_EQ(n.info.steps_skipped, 0);
  EXPECT_EQ(n.info.nonfinite_param, -1);
  EXPECT_EQ(n.info.ns_fallbacks, 0);
  EXPECT_EQ(n.info.ns_fallback_param, -1);
  for (unsigned char b : n.more) EXPECT_EQ(b, 0x77);
  // A first-version caller (32 bytes) gets its fields and nothing past them.
  normuon_step_info_t old;
  std::memset(&old, 0x55, sizeof(old));
  old.struct_size = static_cast<uint32_t>(kStepInfoV1);
  ASSERT_EQ(normuon_step_result(m.rt, &old), NORMUON_SUCCESS) << LastError(m.rt);
  EXPECT_EQ(old.steps_taken, 1);
  const auto* tail = reinterpret_cast<const unsigned char*>(&old) + kStepInfoV1;
  for (size_t i = 0; i < sizeof(old) - kStepInfoV1; ++i) EXPECT_EQ(tail[i], 0x55) << i;
}

// ---- normuon_step_profile_t (output) ----

TEST(StepProfileVersionTest, SmallBelowFirstAndInsideAFieldAreRefused) {
  SmallModel m;
  m.Build(/*finalize=*/true);
  ASSERT_EQ(normuon_step(m.rt, 0.01f, 0.0f, nullptr), NORMUON_SUCCESS) << LastError(m.rt);
  normuon_step_profile_t p;
  for (uint32_t size : {0u, 8u, static_cast<uint32_t>(kStepProfileV1 - 8)}) {
    normuon_step_profile_init(&p);
    p.struct_size = size;
    EXPECT_EQ(normuon_last_step_profile(m.rt, &p), NORMUON_ERROR_INVALID_ARGUMENT) << size;
    EXPECT_TRUE(Contains(LastError(m.rt), Below("profile", size, kStepProfileV1)));
  }
  normuon_step_profile_init(&p);
  p.struct_size = static_cast<uint32_t>(offsetof(normuon_step_profile_t, bytes_sent) + 4);
  EXPECT_EQ(normuon_last_step_profile(m.rt, &p), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(m.rt), "ends inside field bytes_sent"));
  EXPECT_EQ(p.total_ms, 0.0);
}

TEST(StepProfileVersionTest, OlderAndNewerStructsAreWrittenOnlyUpToTheirSizes) {
  SmallModel m;
  m.Build(/*finalize=*/true);
  ASSERT_EQ(normuon_step(m.rt, 0.01f, 0.0f, nullptr), NORMUON_SUCCESS) << LastError(m.rt);
  normuon_step_profile_t full;
  normuon_step_profile_init(&full);
  ASSERT_EQ(normuon_last_step_profile(m.rt, &full), NORMUON_SUCCESS) << LastError(m.rt);
  EXPECT_GT(full.total_ms, 0.0);
  EXPECT_EQ(full.buckets, 1);

  // The first version: the phase times up to adamw_ms, nothing past them.
  normuon_step_profile_t old;
  std::memset(&old, 0x77, sizeof(old));
  old.struct_size = kStepProfileV1;
  ASSERT_EQ(normuon_last_step_profile(m.rt, &old), NORMUON_SUCCESS) << LastError(m.rt);
  EXPECT_EQ(old.struct_size, kStepProfileV1);
  EXPECT_EQ(old.total_ms, full.total_ms);
  EXPECT_EQ(old.adamw_ms, full.adamw_ms);
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(&old);
  for (size_t i = kStepProfileV1; i < sizeof(old); ++i) EXPECT_EQ(bytes[i], 0x77) << i;

  struct Newer {
    normuon_step_profile_t p;
    double more[2];
  } n;
  std::memset(&n, 0x77, sizeof(n));
  n.p.struct_size = sizeof(n);
  ASSERT_EQ(normuon_last_step_profile(m.rt, &n.p), NORMUON_SUCCESS) << LastError(m.rt);
  EXPECT_EQ(n.p.struct_size, sizeof(n));
  EXPECT_EQ(n.p.buckets, full.buckets);
  EXPECT_EQ(n.p.bytes_sent, full.bytes_sent);
  const unsigned char* more = reinterpret_cast<const unsigned char*>(n.more);
  for (size_t i = 0; i < sizeof(n.more); ++i) EXPECT_EQ(more[i], 0x77) << i;
}

}  // namespace
}  // namespace normuon_reliability
