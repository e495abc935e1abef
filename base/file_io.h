// Whole-file reads, atomic file writes and the few other file-system calls of the library
// (checkpoints), with messages that name the path and the system error. POSIX.
//
// Status codes: what the caller can fix (a missing file or directory, a permission, a read-only
// file system, a name too long) is InvalidArgument, except a missing file in ReadWholeFile,
// which is NotFound so that a caller can tell it apart; anything else (EIO, ENOSPC) is Internal.
#ifndef NORMUON_BASE_FILE_IO_H_
#define NORMUON_BASE_FILE_IO_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace normuon {

// The whole file at path. NotFound when it does not exist; InvalidArgument when it is not a
// regular file.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// Writes bytes to path so that path holds either its old contents or all of the new ones: writes
// path + ".tmp", fsyncs it, renames it over path and fsyncs the directory. Removes the temporary
// file on failure.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view bytes);

// Removes the file at path; a file that does not exist is not an error.
absl::Status RemoveFileIfPresent(const std::string& path);

// OkStatus when path names an existing directory ("'<path>': No such file or directory",
// "'<path>' is not a directory" otherwise).
absl::Status CheckDirectory(const std::string& path);

}  // namespace normuon

#endif  // NORMUON_BASE_FILE_IO_H_
