// The JSON reading and quoting of json.h.
#include "tools/common/json.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace normuon_tools {
namespace {

constexpr int kMaxDepth = 200;

bool IsWordByte(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
}

// The bare non-finite words Google Benchmark (and printf) write, longest first.
constexpr absl::string_view kNonFinite[] = {"-infinity", "infinity", "-nan", "-inf", "nan", "inf"};

// The byte of `text` that byte `at` of the rewritten text came from; grown[k] is the rewritten
// offset just after the k-th word that grew (each by one byte).
size_t SourceByte(size_t at, const std::vector<size_t>& grown) {
  size_t shift = 0;
  while (shift < grown.size() && grown[shift] <= at) ++shift;
  return at - shift;
}

}  // namespace

absl::StatusOr<nlohmann::json> ParseJson(absl::string_view text) {
  // One pass outside strings: non-finite words become null (padded with spaces to their length;
  // the three-letter ones grow by one byte, remembered for error offsets), and the depth is
  // checked before nlohmann builds anything.
  std::string rewritten;
  rewritten.reserve(text.size() + 16);
  std::vector<size_t> grown;
  bool in_string = false;
  int depth = 0;
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\' && i + 1 < text.size()) {
        rewritten.append(text.data() + i, 2);
        i += 2;
        continue;
      }
      in_string = c != '"';
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxDepth) {
        return absl::InvalidArgumentError(
            absl::StrCat("JSON nested deeper than ", kMaxDepth, " at byte ", i));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    } else if ((c == '-' || absl::ascii_isalpha(static_cast<unsigned char>(c))) &&
               (i == 0 || !IsWordByte(text[i - 1]))) {
      bool replaced = false;
      for (absl::string_view word : kNonFinite) {
        const absl::string_view rest = text.substr(i);
        if (absl::StartsWithIgnoreCase(rest, word) &&
            (rest.size() == word.size() || !IsWordByte(rest[word.size()]))) {
          rewritten += "null";
          if (word.size() < 4) grown.push_back(rewritten.size());
          if (word.size() > 4) rewritten.append(word.size() - 4, ' ');
          i += word.size();
          replaced = true;
          break;
        }
      }
      if (replaced) continue;
    }
    rewritten.push_back(c);
    ++i;
  }
  try {
    return nlohmann::json::parse(rewritten);
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte counts from 1; the message after nlohmann's "[json.exception...] " prefix.
    absl::string_view what = e.what();
    const size_t bracket = what.find("] ");
    if (bracket != absl::string_view::npos) what.remove_prefix(bracket + 2);
    const size_t at = SourceByte(e.byte > 0 ? e.byte - 1 : 0, grown);
    return absl::InvalidArgumentError(absl::StrCat("JSON error at byte ", at, ": ", what));
  }
}

std::string JsonQuote(absl::string_view s) {
  return nlohmann::json(std::string(s)).dump(-1, ' ', false,
                                              nlohmann::json::error_handler_t::replace);
}

}  // namespace normuon_tools
