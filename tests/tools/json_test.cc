// Tests of tools/common/json: reading valid and invalid documents (Google Benchmark's non-finite
// counters included), the nesting limit, the byte offsets of errors, and that JsonQuote's output
// reads back as the same string.
#include "tools/common/json.h"

#include <string>

#include "gtest/gtest.h"

namespace normuon_tools {
namespace {

TEST(JsonTest, ParsesValues) {
  absl::StatusOr<nlohmann::json> v = ParseJson(
      R"( {"a": 1, "b": [true, false, null, -2.5e3, 0], "c": {"d": "x\"y\\z\n\u00e9\ud83d\ude00"},
          "e": [], "f": {}} )");
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_TRUE(v->is_object());
  EXPECT_EQ(v->at("a").get<double>(), 1.0);
  const nlohmann::json& b = v->at("b");
  ASSERT_TRUE(b.is_array());
  ASSERT_EQ(b.size(), 5u);
  EXPECT_TRUE(b[0].get<bool>());
  EXPECT_TRUE(b[1].is_boolean());
  EXPECT_FALSE(b[1].get<bool>());
  EXPECT_TRUE(b[2].is_null());
  EXPECT_EQ(b[3].get<double>(), -2500.0);
  EXPECT_EQ(v->at("c").at("d").get<std::string>(), "x\"y\\z\n\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_TRUE(v->at("e").empty());
  EXPECT_TRUE(v->at("f").empty());
  EXPECT_FALSE(v->contains("missing"));
}

// Google Benchmark 1.7 writes NaN, Infinity and -Infinity bare; those read as null, and so do
// the lower-case spellings, but not inside strings or as parts of other words.
TEST(JsonTest, NonFiniteCountersReadAsNull) {
  absl::StatusOr<nlohmann::json> v = ParseJson(
      R"({"a": NaN, "b": -Infinity, "c": Infinity, "d": [nan, -inf, INF, -nan], "e": "NaN"})");
  ASSERT_TRUE(v.ok()) << v.status();
  for (const char* key : {"a", "b", "c"}) EXPECT_TRUE(v->at(key).is_null()) << key;
  ASSERT_EQ(v->at("d").size(), 4u);
  for (const nlohmann::json& x : v->at("d")) EXPECT_TRUE(x.is_null());
  EXPECT_EQ(v->at("e").get<std::string>(), "NaN");
  EXPECT_FALSE(ParseJson(R"({"a": NaNa})").ok());
  EXPECT_FALSE(ParseJson(R"({"a": infinite})").ok());
}

TEST(JsonTest, RejectsMalformed) {
  for (const char* bad : {"", "{", "[1,]", "{\"a\" 1}", "{\"a\": 1,}", "01", "1.", "1e",
                          "\"abc", "\"\\q\"", "\"\\ud800\"", "[1] 2", "{a: 1}", "-", "tru",
                          "\"a\nb\""}) {
    SCOPED_TRACE(bad);
    absl::StatusOr<nlohmann::json> v = ParseJson(bad);
    EXPECT_FALSE(v.ok());
    if (!v.ok()) {
      EXPECT_NE(v.status().message().find("at byte"), std::string::npos) << v.status();
    }
  }
}

// The offset is the input's, also after non-finite words that were rewritten.
TEST(JsonTest, ErrorOffsetsAreTheInputs) {
  absl::StatusOr<nlohmann::json> v = ParseJson("[1, 2 3]");
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("at byte 6:"), std::string::npos) << v.status();
  v = ParseJson("[nan, inf, 2 3]");
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("at byte 13:"), std::string::npos) << v.status();
}

TEST(JsonTest, LimitsNesting) {
  EXPECT_TRUE(ParseJson(std::string(150, '[') + std::string(150, ']')).ok());
  absl::StatusOr<nlohmann::json> deep = ParseJson(std::string(300, '[') + std::string(300, ']'));
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.status().message().find("at byte 200"), std::string::npos) << deep.status();
  // Brackets inside strings do not count.
  EXPECT_TRUE(ParseJson("\"" + std::string(300, '[') + "\"").ok());
}

TEST(JsonTest, QuoteRoundTrips) {
  const std::string s = "tab\there \"q\" back\\slash \x01 ctl\nnl \xc3\xa9";
  absl::StatusOr<nlohmann::json> v = ParseJson(JsonQuote(s));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->get<std::string>(), s);
  EXPECT_EQ(JsonQuote("a\"b"), "\"a\\\"b\"");
  EXPECT_EQ(JsonQuote("\x01"), "\"\\u0001\"");
  // Bytes that are not UTF-8 become U+FFFD rather than invalid JSON.
  EXPECT_EQ(JsonQuote("a\xff"), "\"a\xef\xbf\xbd\"");
}

}  // namespace
}  // namespace normuon_tools
