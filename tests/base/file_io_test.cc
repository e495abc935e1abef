// base/file_io.h: atomic writes, whole-file reads, removal and the directory check, and that
// every failure names the path and the system error.
#include "base/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace normuon {
namespace {

using ::testing::HasSubstr;

std::string TempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ = std::string(base != nullptr ? base : "/tmp") + "/fileioXXXXXX";
  EXPECT_NE(mkdtemp(templ.data()), nullptr);
  return templ;
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

TEST(FileIoTest, AtomicWriteReplacesTheFileAndLeavesNoTemporary) {
  const std::string dir = TempDir();
  const std::string path = dir + "/f.bin";
  ASSERT_TRUE(WriteFileAtomically(path, "first").ok());
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131);
  ASSERT_TRUE(WriteFileAtomically(path, big).ok());
  absl::StatusOr<std::string> back = ReadWholeFile(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, big);
  EXPECT_FALSE(Exists(path + ".tmp"));
  ASSERT_TRUE(WriteFileAtomically(path, "").ok());
  EXPECT_EQ(*ReadWholeFile(path), "");
}

TEST(FileIoTest, FailuresNameThePathAndTheSystemError) {
  const std::string dir = TempDir();
  absl::Status st = WriteFileAtomically(dir + "/missing/f.bin", "x");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("cannot create '" + dir + "/missing/f.bin.tmp': No such file"));
  absl::StatusOr<std::string> read = ReadWholeFile(dir + "/nothing");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(read.status().message()),
              HasSubstr("'" + dir + "/nothing' does not exist"));
  read = ReadWholeFile(dir);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("is not a regular file"));
  // Renaming over a directory fails and leaves no temporary behind.
  ASSERT_EQ(::mkdir((dir + "/taken").c_str(), 0755), 0);
  st = WriteFileAtomically(dir + "/taken", "x");
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("cannot rename '" + dir + "/taken.tmp'"));
  EXPECT_FALSE(Exists(dir + "/taken.tmp"));
}

TEST(FileIoTest, RemoveFileIfPresentAcceptsAMissingFile) {
  const std::string dir = TempDir();
  const std::string path = dir + "/f";
  ASSERT_TRUE(WriteFileAtomically(path, "x").ok());
  ASSERT_TRUE(RemoveFileIfPresent(path).ok());
  EXPECT_FALSE(Exists(path));
  EXPECT_TRUE(RemoveFileIfPresent(path).ok());
  ASSERT_EQ(::mkdir((dir + "/d").c_str(), 0755), 0);
  absl::Status st = RemoveFileIfPresent(dir + "/d");  // a directory is not a file
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("cannot remove '" + dir + "/d'"));
}

TEST(FileIoTest, CheckDirectoryNamesWhatIsWrong) {
  const std::string dir = TempDir();
  EXPECT_TRUE(CheckDirectory(dir).ok());
  absl::Status st = CheckDirectory(dir + "/no/such");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(st.message()), "'" + dir + "/no/such': No such file or directory");
  ASSERT_TRUE(WriteFileAtomically(dir + "/f", "x").ok());
  st = CheckDirectory(dir + "/f");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(st.message()), "'" + dir + "/f' is not a directory");
}

}  // namespace
}  // namespace normuon
