// Helpers of the reliability tests: a small runtime with one matrix and one AdamW parameter, the
// last error as a std::string, and the process's virtual memory size.
#ifndef NORMUON_TESTS_RELIABILITY_TEST_UTIL_H_
#define NORMUON_TESTS_RELIABILITY_TEST_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "normuon/normuon.h"

namespace normuon_reliability {

inline std::string LastError(normuon_runtime_t rt) {
  const char* m = normuon_last_error(rt);
  return m == nullptr ? std::string("<null>") : std::string(m);
}

// gtest's HasSubstr without GoogleMock.
inline ::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

// A runtime with matrix "w" (rows x cols) and AdamW parameter "b" (rows x 1), fp32, whole rows
// on this single rank, deterministic parameters and gradients.
struct SmallModel {
  int64_t rows = 8, cols = 4;
  std::vector<float> w, gw, b, gb;
  normuon_runtime_t rt = 0;
  normuon_param_t w_id = -1, b_id = -1;

  SmallModel(int64_t r = 8, int64_t c = 4) : rows(r), cols(c) {
    w.resize(rows * cols);
    gw.resize(rows * cols);
    b.resize(rows);
    gb.resize(rows);
    for (int64_t i = 0; i < rows * cols; ++i) {
      w[i] = 0.01f * static_cast<float>((i * 7) % 19) - 0.09f;
      gw[i] = 0.1f * static_cast<float>((i * 5) % 13) - 0.6f;
    }
    for (int64_t i = 0; i < rows; ++i) {
      b[i] = 0.5f - 0.03f * static_cast<float>(i);
      gb[i] = 0.2f * static_cast<float>(i % 3) - 0.2f;
    }
  }

  normuon_param_desc_t MatrixDesc() {
    normuon_param_desc_t d;
    normuon_param_desc_init(&d);
    d.name = "w";
    d.rows = rows;
    d.cols = cols;
    d.row_begin = 0;
    d.row_count = rows;
    d.param = w.data();
    d.grad = gw.data();
    d.group = NORMUON_GROUP_MATRIX_DEFAULT;
    return d;
  }

  normuon_param_desc_t AdamwDesc() {
    normuon_param_desc_t d;
    normuon_param_desc_init(&d);
    d.name = "b";
    d.rows = rows;
    d.cols = 1;
    d.row_begin = 0;
    d.row_count = rows;
    d.param = b.data();
    d.grad = gb.data();
    d.group = NORMUON_GROUP_ADAMW_DEFAULT;
    return d;
  }

  // Creates, registers both parameters and (optionally) finalizes; fails the test otherwise.
  void Build(bool finalize, const normuon_config_t* config = nullptr) {
    normuon_config_t cfg;
    normuon_config_init(&cfg);
    ASSERT_EQ(normuon_create(config != nullptr ? config : &cfg, 0, &rt), NORMUON_SUCCESS)
        << LastError(0);
    normuon_param_desc_t dw = MatrixDesc(), db = AdamwDesc();
    ASSERT_EQ(normuon_register_matrix(rt, &dw, &w_id), NORMUON_SUCCESS) << LastError(rt);
    ASSERT_EQ(normuon_register_adamw(rt, &db, &b_id), NORMUON_SUCCESS) << LastError(rt);
    if (finalize) {
      ASSERT_EQ(normuon_finalize(rt), NORMUON_SUCCESS) << LastError(rt);
    }
  }

  ~SmallModel() {
    if (rt != 0) normuon_destroy(rt);
  }

  // The momentum of "w" after finalize.
  std::vector<float> Momentum() {
    std::vector<float> m(rows * cols);
    EXPECT_EQ(normuon_get_state(rt, w_id, NORMUON_STATE_MOMENTUM, m.data(), m.size() * 4),
              NORMUON_SUCCESS)
        << LastError(rt);
    return m;
  }
};

// The process's virtual size in bytes (/proc/self/statm), or 0 if it cannot be read.
inline uint64_t VirtualBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long long pages = 0;
  const int n = std::fscanf(f, "%llu", &pages);
  std::fclose(f);
  return n == 1 ? pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) : 0;
}

}  // namespace normuon_reliability

#endif  // NORMUON_TESTS_RELIABILITY_TEST_UTIL_H_
