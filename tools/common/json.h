// json.h: reading JSON documents (Google Benchmark output, the tools' own reports) with
// nlohmann-json, and the one JSON string quoting of the tools' hand-formatted writers.
#ifndef NORMUON_TOOLS_COMMON_JSON_H_
#define NORMUON_TOOLS_COMMON_JSON_H_

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace normuon_tools {

// Parses one JSON document (RFC 8259; surrounding whitespace allowed, nothing after it). Google
// Benchmark writes a non-finite counter as a bare NaN, Infinity or -Infinity, which JSON cannot
// hold: those words (and nan, inf, -inf, -nan in any case) outside strings read as null, as a
// JSON writer would have written them. Nesting deeper than 200 arrays or objects is refused.
// Errors say "at byte N" (0-based, of `text`) and what was wrong there.
absl::StatusOr<nlohmann::json> ParseJson(absl::string_view text);

// s as a JSON string literal, quotes included: ", \ and control characters escaped; bytes that
// are not UTF-8 become U+FFFD.
std::string JsonQuote(absl::string_view s);

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_COMMON_JSON_H_
