// Helpers shared by the sharding tests: an error-message assertion (the system GoogleTest target
// has no gmock matchers) and GPT-2 small's matrix list.
#ifndef NORMUON_TESTS_SHARDING_TEST_UTIL_H_
#define NORMUON_TESTS_SHARDING_TEST_UTIL_H_

#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "sharding/shard.h"

namespace normuon::sharding::testing {

// Passes when status is INVALID_ARGUMENT and its message contains every needle.
inline ::testing::AssertionResult IsInvalidWith(const absl::Status& status,
                                                std::initializer_list<absl::string_view> needles) {
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "expected INVALID_ARGUMENT, got " << status.ToString();
  }
  for (absl::string_view needle : needles) {
    if (status.message().find(needle) == absl::string_view::npos) {
      return ::testing::AssertionFailure()
             << "message \"" << status.message() << "\" lacks \"" << needle << "\"";
    }
  }
  return ::testing::AssertionSuccess();
}

// GPT-2 small's 48 NorMuon matrices in registration order (shared/models/gpt2-124m.txt; the
// embeddings go to AdamW): per layer c_attn 2304x768, attn.c_proj 768x768, c_fc 3072x768,
// mlp.c_proj 768x3072.
inline std::vector<MatrixShape> Gpt2SmallMatrices() {
  std::vector<MatrixShape> shapes;
  for (int layer = 0; layer < 12; ++layer) {
    const std::string h = absl::StrCat("h.", layer, ".");
    shapes.push_back({h + "attn.c_attn.weight", 2304, 768});
    shapes.push_back({h + "attn.c_proj.weight", 768, 768});
    shapes.push_back({h + "mlp.c_fc.weight", 3072, 768});
    shapes.push_back({h + "mlp.c_proj.weight", 768, 3072});
  }
  return shapes;
}

}  // namespace normuon::sharding::testing

#endif  // NORMUON_TESTS_SHARDING_TEST_UTIL_H_
