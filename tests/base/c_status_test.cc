// base/c_status.h: every C status round-trips through absl::Status, the names, and what the
// codes without a C counterpart become.
#include "base/c_status.h"

#include <string>

#include "gtest/gtest.h"

namespace normuon {
namespace {

TEST(CStatusTest, EveryCStatusRoundTripsWithItsMessage) {
  for (int v = NORMUON_SUCCESS; v <= NORMUON_ERROR_INTERNAL; ++v) {
    const auto c = static_cast<normuon_status_t>(v);
    const absl::Status s = StatusFromC(c, "the message");
    EXPECT_EQ(StatusToC(s), c) << StatusName(c);
    if (c != NORMUON_SUCCESS) EXPECT_EQ(s.message(), "the message") << StatusName(c);
  }
}

TEST(CStatusTest, NamesAreTheEnumeratorsAndNeverNull) {
  EXPECT_STREQ(StatusName(NORMUON_SUCCESS), "NORMUON_SUCCESS");
  EXPECT_STREQ(StatusName(NORMUON_ERROR_TIMEOUT), "NORMUON_ERROR_TIMEOUT");
  EXPECT_STREQ(StatusName(NORMUON_ERROR_INVALID_HANDLE), "NORMUON_ERROR_INVALID_HANDLE");
  EXPECT_STREQ(StatusName(static_cast<normuon_status_t>(99)), "NORMUON_ERROR_UNKNOWN_STATUS");
  EXPECT_STREQ(StatusName(NORMUON_STATUS_MIN_ENUM), "NORMUON_ERROR_UNKNOWN_STATUS");
}

TEST(CStatusTest, AnUnknownCValueIsInternalAndNamedInTheMessage) {
  const absl::Status s = StatusFromC(static_cast<normuon_status_t>(-3), "exchange failed");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(std::string(s.message()).find("exchange failed [unknown status value -3]"),
            std::string::npos)
      << s;
}

TEST(CStatusTest, CodesWithoutACCounterpartMapAsDocumented) {
  EXPECT_EQ(StatusToC(absl::OutOfRangeError("x")), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(StatusToC(absl::AlreadyExistsError("x")), NORMUON_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(StatusToC(absl::UnavailableError("x")), NORMUON_ERROR_UNSUPPORTED);
  EXPECT_EQ(StatusToC(absl::CancelledError("x")), NORMUON_ERROR_INTERNAL);
  EXPECT_EQ(StatusToC(absl::PermissionDeniedError("x")), NORMUON_ERROR_INTERNAL);
}

}  // namespace
}  // namespace normuon
