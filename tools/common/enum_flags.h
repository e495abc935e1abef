// enum_flags.h: parsing an enum from its name, for the Abseil flag types of the tools
// (AbslParseFlag / AbslUnparseFlag). Each enum keeps one name function; parsing walks its values
// and compares names, so a name is written once, and a bad value is refused with a message that
// names the flag and every accepted value.
#ifndef NORMUON_TOOLS_COMMON_ENUM_FLAGS_H_
#define NORMUON_TOOLS_COMMON_ENUM_FLAGS_H_

#include <cstddef>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace normuon_tools {

// Sets *out to the value among `values` whose name(value) is text. Otherwise false with
// *error = "--FLAG must be one of a, b, c" (Abseil prints it after "Illegal value 'text'
// specified for flag 'FLAG'").
template <typename E, size_t N, typename NameFn>
bool ParseEnumFlag(absl::string_view text, absl::string_view flag, const E (&values)[N],
                   NameFn name, E* out, std::string* error) {
  std::string accepted;
  for (E v : values) {
    if (text == name(v)) {
      *out = v;
      return true;
    }
    absl::StrAppend(&accepted, accepted.empty() ? "" : ", ", name(v));
  }
  *error = absl::StrCat("--", flag, " must be one of ", accepted);
  return false;
}

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_COMMON_ENUM_FLAGS_H_
