// Finding NCCL at run time (comm/nccl_library.h): the messages for a library that is not there,
// one that is not NCCL, and one that is too old, and the version arithmetic. Uses the uncached
// LoadNcclLibrary() throughout; this binary never loads an NCCL successfully through the shared
// (cached) path, so each case sees the environment it sets.
#include "comm/nccl_library.h"

#include <dlfcn.h>

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "normuon/comm.h"
#include "tests/comm/fake_nccl_util.h"

namespace normuon {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class NcclLibraryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const testing_util::FakeNccl& f = testing_util::LoadFakeNccl();
    ASSERT_NE(f.handle, nullptr);
    fake_ = &f;
    fake_->reset();
  }
  void TearDown() override {
    if (fake_ != nullptr) fake_->reset();
    setenv(kNcclLibraryEnv, testing_util::FakeNcclPath().c_str(), 1);
  }
  const testing_util::FakeNccl* fake_ = nullptr;
};

TEST_F(NcclLibraryTest, TheTestProcessHasNoNcclOfItsOwn) {
  // Otherwise the loader would take it before NORMUON_NCCL_LIBRARY and these tests would test
  // nothing: the binary must not link libnccl, and the stand-in is opened privately.
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "ncclGetVersion"), nullptr);
  EXPECT_EQ(dlopen("libnccl.so.2", RTLD_NOW | RTLD_NOLOAD), nullptr);
}

TEST_F(NcclLibraryTest, LoadsTheLibraryNamedByTheEnvironment) {
  absl::StatusOr<std::shared_ptr<const NcclLibrary>> lib = LoadNcclLibrary();
  ASSERT_TRUE(lib.ok()) << lib.status();
  EXPECT_EQ((*lib)->version_code, nccl::VersionCode(2, 28, 9));
  EXPECT_THAT((*lib)->path, HasSubstr("libnccl_fake.so"));
  EXPECT_THAT((*lib)->Describe(),
              AllOf(HasSubstr("NCCL 2.28.9 at "), HasSubstr("(from $NORMUON_NCCL_LIBRARY)")));
  EXPECT_EQ((*lib)->ResultText(nccl::kInProgress), "ncclInProgress (NCCL operation in progress)");
}

TEST_F(NcclLibraryTest, AMissingLibraryIsNamedWithTheLoadersReason) {
  setenv(kNcclLibraryEnv, "/nonexistent/libnccl.so.2", 1);
  absl::StatusOr<std::shared_ptr<const NcclLibrary>> lib = LoadNcclLibrary();
  EXPECT_EQ(lib.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(lib.status().message(),
              AllOf(HasSubstr("NCCL library not found: dlopen(\"/nonexistent/libnccl.so.2\") from "
                              "$NORMUON_NCCL_LIBRARY failed"),
                    HasSubstr("No such file or directory"),
                    HasSubstr("no NCCL is loaded in this process either")));
}

TEST_F(NcclLibraryTest, ALibraryWithoutNcclsFunctionsIsRejected) {
  setenv(kNcclLibraryEnv, "libm.so.6", 1);
  absl::StatusOr<std::shared_ptr<const NcclLibrary>> lib = LoadNcclLibrary();
  EXPECT_EQ(lib.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(lib.status().message(),
              AllOf(HasSubstr("NCCL at "), HasSubstr("has no function ncclGetVersion")));
}

TEST_F(NcclLibraryTest, ATooOldVersionIsNamedWithItsPath) {
  fake_->set_version(nccl::VersionCode(2, 15, 5));
  absl::StatusOr<std::shared_ptr<const NcclLibrary>> lib = LoadNcclLibrary();
  EXPECT_EQ(lib.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(lib.status().message(),
              AllOf(HasSubstr("NCCL 2.15.5 (ncclGetVersion code 21505) at "),
                    HasSubstr("libnccl_fake.so (from $NORMUON_NCCL_LIBRARY) is too old: normuon "
                              "needs NCCL 2.18.0 or newer")));
  // The pre-2.9 encoding reads right too.
  fake_->set_version(2708);
  EXPECT_THAT(LoadNcclLibrary().status().message(), HasSubstr("NCCL 2.7.8 (ncclGetVersion code 2708)"));
  // And the oldest accepted version loads.
  fake_->set_version(kMinNcclVersionCode);
  EXPECT_TRUE(LoadNcclLibrary().ok());
}

TEST(NcclVersionTest, VersionCodesReadAsNcclWritesThem) {
  EXPECT_EQ(NcclVersionString(21809), "2.18.9");
  EXPECT_EQ(NcclVersionString(22809), "2.28.9");
  EXPECT_EQ(NcclVersionString(2708), "2.7.8");
  EXPECT_EQ(NcclVersionString(30102), "3.1.2");
  EXPECT_EQ(NcclResultName(nccl::kRemoteError), "ncclRemoteError");
  EXPECT_EQ(NcclResultName(static_cast<nccl::Result>(42)), "ncclResult_t 42");
}

TEST_F(NcclLibraryTest, TheCApiReportsAnUnusableNcclAsUnsupported) {
  setenv(kNcclLibraryEnv, "/nonexistent/libnccl.so.2", 1);
  unsigned char id[NORMUON_NCCL_UNIQUE_ID_BYTES] = {};
  normuon_comm_t comm = 0;
  EXPECT_EQ(normuon_nccl_get_unique_id(id), NORMUON_ERROR_UNSUPPORTED);
#if defined(NORMUON_TEST_NO_CUDA)
  EXPECT_THAT(normuon_comm_last_error(0), HasSubstr("this build of normuon has no CUDA"));
#else
  EXPECT_THAT(normuon_comm_last_error(0), HasSubstr("NCCL library not found"));
#endif
  EXPECT_EQ(normuon_comm_create_nccl(id, 0, 1, -1, 1.0, &comm), NORMUON_ERROR_UNSUPPORTED);
  EXPECT_EQ(normuon_comm_wrap_nccl(id, 1.0, &comm), NORMUON_ERROR_UNSUPPORTED);
  EXPECT_EQ(comm, 0u);
}

}  // namespace
}  // namespace normuon
