// text_file.h: reading a whole input file (shape lists, golden files, benchmark JSON).
#ifndef NORMUON_TOOLS_COMMON_TEXT_FILE_H_
#define NORMUON_TOOLS_COMMON_TEXT_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace normuon_tools {

// The bytes of the file at path. NotFound "cannot open WHAT 'PATH'" when it cannot be opened,
// DataLoss "error reading 'PATH'" when reading fails.
absl::StatusOr<std::string> ReadTextFile(const std::string& path, absl::string_view what);

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_COMMON_TEXT_FILE_H_
