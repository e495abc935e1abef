// See file_io.h.
#include "base/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace normuon {
namespace {

// A system error as a status (file_io.h: which errors the caller can fix).
absl::Status IoError(int err, absl::string_view what) {
  const std::string message =
      absl::StrCat(what, ": ", std::error_code(err, std::generic_category()).message());
  switch (err) {
    case ENOENT:
    case ENOTDIR:
    case EISDIR:
    case EACCES:
    case EPERM:
    case EROFS:
    case ENAMETOOLONG:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat("'", path, "' does not exist"));
    return IoError(err, absl::StrCat("cannot open '", path, "'"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return IoError(err, absl::StrCat("cannot stat '", path, "'"));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a regular file"));
  }
  std::string out;
  out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return IoError(err, absl::StrCat("cannot read '", path, "'"));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return IoError(errno, absl::StrCat("cannot create '", tmp, "'"));
  auto fail = [&](int err, absl::string_view what) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return IoError(err, absl::StrCat(what, " '", tmp, "'"));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const size_t chunk = std::min<size_t>(bytes.size() - done, size_t{1} << 30);
    const ssize_t n = ::write(fd, bytes.data() + done, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(errno, "cannot write");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail(errno, "cannot fsync");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return IoError(err, absl::StrCat("cannot close '", tmp, "'"));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return IoError(err, absl::StrCat("cannot rename '", tmp, "' to '", path, "'"));
  }
  // The rename is durable once the directory entry is.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0                ? "/"
                                                      : path.substr(0, slash);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return IoError(errno, absl::StrCat("cannot open directory '", dir, "'"));
  if (::fsync(dfd) != 0) {
    const int err = errno;
    ::close(dfd);
    return IoError(err, absl::StrCat("cannot fsync directory '", dir, "'"));
  }
  ::close(dfd);
  return absl::OkStatus();
}

absl::Status RemoveFileIfPresent(const std::string& path) {
  if (::unlink(path.c_str()) == 0 || errno == ENOENT) return absl::OkStatus();
  return IoError(errno, absl::StrCat("cannot remove '", path, "'"));
}

absl::Status CheckDirectory(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return IoError(errno, absl::StrCat("'", path, "'"));
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a directory"));
  }
  return absl::OkStatus();
}

}  // namespace normuon
