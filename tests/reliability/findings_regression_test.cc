// Regression tests of the reliability findings (RELIABILITY.md, "Findings"), all fixed: each
// states the guarantee it checks. Also run under ASan+UBSan and TSan by tools/test.sh.
#include <atomic>
#include <cstdint>
#include <cstddef>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "normuon/normuon.h"
#include "tests/reliability/test_util.h"
#include "tools/golden_format.h"

namespace normuon_reliability {
namespace {

// Finding F1 (fixed), negative values: every public enum's enumerators are non-negative, so in C++
// its values are 0 .. 0x7fffffff and a negative int a C caller passes (legal C) is undefined
// behaviour to load; UBSan (--config=asan, --config=fuzz) reports it in the validation itself.
// Guarantee: a negative enum value is rejected naming the field, with no undefined behaviour.
// Run under --config=asan to see the difference.
TEST(FindingsRegressionTest, NegativeEnumValuesAreRejectedNamingTheField) {
  normuon_config_t cfg;
  normuon_config_init(&cfg);
  const int32_t minus_one = -1;
  std::memcpy(&cfg.backend, &minus_one, sizeof(minus_one));
  normuon_runtime_t rt = 0;
  EXPECT_EQ(normuon_create(&cfg, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(0), "config.backend"));
  normuon_config_init(&cfg);
  std::memcpy(&cfg.variant, &minus_one, sizeof(minus_one));
  EXPECT_EQ(normuon_create(&cfg, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(0), "config.variant"));
  normuon_status_t status;
  const int32_t minus_five = -5;
  std::memcpy(&status, &minus_five, sizeof(minus_five));
  EXPECT_NE(normuon_status_string(status), nullptr);
}

// Finding F4: config.schedule is not validated by normuon_create (runtime/runtime.cc,
// Runtime::Create): any value other than SEQUENTIAL and PER_MATRIX runs the bucketed schedule.
// Guarantee: an out-of-range enum gives INVALID_ARGUMENT naming the field.
TEST(FindingsRegressionTest, OutOfRangeScheduleIsRejectedNamingTheField) {
  normuon_config_t cfg;
  normuon_config_init(&cfg);
  const int32_t bad = 7;
  std::memcpy(&cfg.schedule, &bad, sizeof(bad));
  normuon_runtime_t rt = 0;
  EXPECT_EQ(normuon_create(&cfg, 0, &rt), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(0), "config.schedule"));
  if (rt != 0) normuon_destroy(rt);
}

// Finding F7 (capi_fuzz, session 2): normuon_create accepted a config.struct_size that ends
// inside a field and copied that many bytes over the defaults, so a size cutting
// ns_coefficients left a pointer made of the caller's low bytes and the default's zeros, which
// the CUSTOM-orthogonalizer check then read (a SEGV). Guarantee: a size inside any field, or
// below the first version of the struct (80 bytes), is INVALID_ARGUMENT naming
// config.struct_size; sizes on field boundaries from the first version on still work.
TEST(FindingsRegressionTest, AConfigSizeInsideAFieldIsRejected) {
  std::vector<float> coefficients(15, 1.0f);
  const size_t first_version = offsetof(normuon_config_t, adamw_weight_decay) + 4;
  for (uint32_t size = 0; size < sizeof(normuon_config_t); ++size) {
    normuon_config_t cfg;
    normuon_config_init(&cfg);
    cfg.orthogonalizer = NORMUON_ORTHO_CUSTOM;
    cfg.ns_coefficients = coefficients.data();
    cfg.struct_size = size;
    normuon_runtime_t rt = 0;
    const normuon_status_t st = normuon_create(&cfg, 0, &rt);
    const size_t coeff_at = offsetof(normuon_config_t, ns_coefficients);
    const size_t bucket_at = offsetof(normuon_config_t, bucket_bytes);
    const size_t restarts_at = offsetof(normuon_config_t, ns_restarts);
    // Past the last field (the int32 ns_symmetric_products) is the struct's tail padding: a
    // size there ends in no field and is accepted.
    const size_t last_end = offsetof(normuon_config_t, ns_symmetric_products) + 4;
    const bool inside = size <= last_end &&
                        (size % 4 != 0 || (size > coeff_at && size < coeff_at + 8) ||
                         (size > bucket_at && size < bucket_at + 8) ||
                         (size > restarts_at && size < restarts_at + 8));
    if (size < first_version) {
      EXPECT_EQ(st, NORMUON_ERROR_INVALID_ARGUMENT) << "struct_size " << size;
      EXPECT_TRUE(Contains(LastError(0), "config.struct_size " + std::to_string(size) +
                                             " is smaller than the first version (80 bytes)"))
          << LastError(0);
      EXPECT_EQ(rt, 0u);
    } else if (inside) {
      EXPECT_EQ(st, NORMUON_ERROR_INVALID_ARGUMENT) << "struct_size " << size;
      EXPECT_TRUE(Contains(LastError(0), "config.struct_size " + std::to_string(size) +
                                             " ends inside field"))
          << LastError(0);
      EXPECT_EQ(rt, 0u);
    } else if (size >= coeff_at + 8) {
      // The whole pointer was given: the custom coefficients are used.
      EXPECT_EQ(st, NORMUON_SUCCESS) << "struct_size " << size << ": " << LastError(0);
    } else {
      // The fields from orthogonalizer or ns_coefficients on keep their defaults: either the
      // quintic (a success) or CUSTOM without coefficients (an error naming them), never a crash.
      EXPECT_TRUE(st == NORMUON_SUCCESS || Contains(LastError(0), "ns_coefficients"))
          << "struct_size " << size << ": " << LastError(0);
    }
    if (rt != 0) normuon_destroy(rt);
  }
}

// Finding F2: a call that looked its handle up before normuon_destroy removed it, and takes the
// handle's lock after destroy released it, runs on a destroyed runtime (capi/api.cc,
// WithRuntime: `fn(*e->runtime)` after `e->runtime.reset()` in normuon_destroy): a null
// dereference. Guarantee: every call on a handle being destroyed returns SUCCESS (it ran first)
// or INVALID_HANDLE, never crashes.
TEST(FindingsRegressionTest, CallsRacingDestroyOnTheSameHandleNeverCrash) {
  // The window is between the registry lookup and the handle's lock of a call, so many short
  // trials with callers that never stop calling.
  for (int trial = 0; trial < 3000; ++trial) {
    SmallModel m(8, 4);
    m.Build(/*finalize=*/true);
    const normuon_runtime_t rt = m.rt;
    std::atomic<int> bad_status{0};
    std::atomic<int> started{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < 3; ++t) {
      callers.emplace_back([rt, &bad_status, &started] {
        started.fetch_add(1);
        for (;;) {
          uint64_t bytes = 0;
          const normuon_status_t s = normuon_memory_required(rt, &bytes);
          if (s == NORMUON_ERROR_INVALID_HANDLE) return;
          if (s != NORMUON_SUCCESS) ++bad_status;
        }
      });
    }
    while (started.load() < 3) std::this_thread::yield();
    EXPECT_EQ(normuon_destroy(rt), NORMUON_SUCCESS);
    m.rt = 0;
    for (std::thread& t : callers) t.join();
    EXPECT_EQ(bad_status.load(), 0);
  }
}

// Finding F5: a golden-file case name may end in '\r' (tools/golden_format.cc splits tokens on
// spaces and tabs and strips one '\r' per line), and FormatGolden cannot write such a name back.
// Guarantee: what ParseGolden accepts, FormatGolden writes back to the same cases.
TEST(FindingsRegressionTest, EveryAcceptedGoldenCaseNameSurvivesFormatting) {
  const std::string text =
      "case tiny\r\r\nkind adamw\nlr 0.001\nbeta1 0.9\nbeta2 0.95\nweight_decay 0\n"
      "eps 1e-8\nsteps 1\nparam_init 1 1 1\ngrad_0 1 1 0.5\nparam_0 1 1 0.99\nend\n";
  auto parsed = normuon_tools::ParseGolden(text, "cr.txt");
  if (!parsed.ok()) return;  // rejecting the name is a fix too
  auto again = normuon_tools::ParseGolden(normuon_tools::FormatGolden(*parsed), "again");
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].name, (*parsed)[0].name);
}

}  // namespace
}  // namespace normuon_reliability
