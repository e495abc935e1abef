// corpus_replay_test.cc: runs a fuzzer's entry point on every file of the directories given as
// arguments (its seed corpus and its regressions: every input a fuzzer ever failed on), as a
// GoogleTest in the normal suite. A broken property aborts the process; the file being run is
// printed first, so the log names the input.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<std::string>* g_dirs = nullptr;

std::vector<std::string> FilesIn(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return files;
  for (const auto& entry : fs::recursive_directory_iterator(dir, ec)) {
    if (entry.is_regular_file() && entry.path().filename().string()[0] != '.') {
      files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST(CorpusReplayTest, EveryCorpusAndRegressionInputRunsCleanly) {
  ASSERT_NE(g_dirs, nullptr);
  ASSERT_FALSE(g_dirs->empty()) << "pass the corpus directories as arguments";
  // The first directory is the seed corpus: it must exist and hold inputs.
  ASSERT_FALSE(FilesIn((*g_dirs)[0]).empty()) << "no seed inputs in " << (*g_dirs)[0];
  int runs = 0;
  for (const std::string& dir : *g_dirs) {
    for (const std::string& path : FilesIn(dir)) {
      std::ifstream in(path, std::ios::binary);
      ASSERT_TRUE(in.good()) << "cannot read " << path;
      std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
      std::fprintf(stderr, "replaying %s (%zu bytes)\n", path.c_str(), bytes.size());
      std::fflush(stderr);
      EXPECT_EQ(LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()),
                                       bytes.size()),
                0)
          << path;
      ++runs;
    }
  }
  std::fprintf(stderr, "%d inputs replayed\n", runs);
}

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  std::vector<std::string> dirs(argv + 1, argv + argc);
  g_dirs = &dirs;
  return RUN_ALL_TESTS();
}
