// Tests of tools/plan/json: the reader on valid and invalid documents, and that JsonQuote's
// output reads back as the same string.
#include "tools/plan/json.h"

#include <cmath>
#include <string>

#include "gtest/gtest.h"

namespace normuon::plan {
namespace {

TEST(JsonTest, ParsesValues) {
  absl::StatusOr<JsonValue> v = ParseJson(
      R"( {"a": 1, "b": [true, false, null, -2.5e3, 0], "c": {"d": "x\"y\\z\n\u00e9\ud83d\ude00"},
          "e": [], "f": {}} )");
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_TRUE(v->is_object());
  EXPECT_EQ(v->Find("a")->number(), 1.0);
  const JsonValue* b = v->Find("b");
  ASSERT_TRUE(b->is_array());
  ASSERT_EQ(b->items().size(), 5u);
  EXPECT_TRUE(b->items()[0].bool_value());
  EXPECT_TRUE(b->items()[1].is_bool());
  EXPECT_FALSE(b->items()[1].bool_value());
  EXPECT_TRUE(b->items()[2].is_null());
  EXPECT_EQ(b->items()[3].number(), -2500.0);
  EXPECT_EQ(v->Find("c")->Find("d")->string(), "x\"y\\z\n\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_TRUE(v->Find("e")->items().empty());
  EXPECT_TRUE(v->Find("f")->members().empty());
  EXPECT_EQ(v->Find("missing"), nullptr);
  EXPECT_EQ(b->Find("a"), nullptr);  // not an object
}

TEST(JsonTest, AcceptsGoogleBenchmarkNonFinite) {
  absl::StatusOr<JsonValue> v = ParseJson(R"({"a": nan, "b": -inf, "c": INF})");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(std::isnan(v->Find("a")->number()));
  EXPECT_EQ(v->Find("b")->number(), -INFINITY);
  EXPECT_EQ(v->Find("c")->number(), INFINITY);
}

TEST(JsonTest, RejectsMalformed) {
  for (const char* bad : {"", "{", "[1,]", "{\"a\" 1}", "{\"a\": 1,}", "01", "1.", "1e",
                          "\"abc", "\"\\q\"", "\"\\ud800\"", "[1] 2", "{a: 1}", "-", "tru",
                          "\"a\nb\""}) {
    SCOPED_TRACE(bad);
    absl::StatusOr<JsonValue> v = ParseJson(bad);
    EXPECT_FALSE(v.ok());
    if (!v.ok()) EXPECT_NE(v.status().message().find("at byte"), std::string::npos);
  }
}

TEST(JsonTest, LimitsNesting) {
  EXPECT_TRUE(ParseJson(std::string(150, '[') + std::string(150, ']')).ok());
  EXPECT_FALSE(ParseJson(std::string(300, '[') + std::string(300, ']')).ok());
}

TEST(JsonTest, QuoteRoundTrips) {
  const std::string s = "tab\there \"q\" back\\slash \x01 ctl\nnl \xc3\xa9";
  absl::StatusOr<JsonValue> v = ParseJson(JsonQuote(s));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->string(), s);
  EXPECT_EQ(JsonQuote("a\"b"), "\"a\\\"b\"");
}

}  // namespace
}  // namespace normuon::plan
