// A small JSON reader and the string quoting the planner's writer needs.
//
// The planner reads Google Benchmark's JSON output (--rates) and its tests read back the JSON it
// writes; no JSON library is available offline, and both documents are small (kilobytes), so
// this is a plain recursive-descent parser into a tree of values. It accepts RFC 8259 JSON plus
// the bare tokens `nan`, `inf` and `-inf` (any case) as numbers, because Google Benchmark may
// print a non-finite counter that way; everything else that is not JSON is an error naming the
// byte offset.
#ifndef NORMUON_TOOLS_PLAN_JSON_H_
#define NORMUON_TOOLS_PLAN_JSON_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace normuon::plan {

class JsonValue {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  JsonValue() = default;
  static JsonValue Bool(bool b);
  static JsonValue Number(double d);
  static JsonValue String(std::string s);
  static JsonValue Array();
  static JsonValue Object();

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  // The payload; meaningful only for the matching type (others give false, 0, "" or empty).
  bool bool_value() const { return bool_; }
  double number() const { return number_; }
  const std::string& string() const { return string_; }
  const std::vector<JsonValue>& items() const { return items_; }  // array elements
  // Object members in document order (duplicate keys are kept; Find returns the first).
  const std::vector<std::pair<std::string, JsonValue>>& members() const { return members_; }

  // The member named key of an object, or nullptr (also for non-objects).
  const JsonValue* Find(absl::string_view key) const;

  void Append(JsonValue v) { items_.push_back(std::move(v)); }
  void Set(std::string key, JsonValue v) { members_.emplace_back(std::move(key), std::move(v)); }

 private:
  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<JsonValue> items_;
  std::vector<std::pair<std::string, JsonValue>> members_;
};

// Parses one JSON document (surrounding whitespace allowed, nothing else after it). Nesting is
// limited to 200 levels so a hostile file cannot overflow the stack.
absl::StatusOr<JsonValue> ParseJson(absl::string_view text);

// s as a JSON string literal, quotes included: ", \ and control characters escaped; other bytes
// (UTF-8 included) copied as they are.
std::string JsonQuote(absl::string_view s);

}  // namespace normuon::plan

#endif  // NORMUON_TOOLS_PLAN_JSON_H_
