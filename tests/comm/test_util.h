// Helpers for the communicator tests: run one function per rank, each on its own thread, and
// collect what every rank returned.
#ifndef NORMUON_TESTS_COMM_TEST_UTIL_H_
#define NORMUON_TESTS_COMM_TEST_UTIL_H_

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "comm/inprocess_group.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace normuon {
namespace testing_util {

// A new group; fails the test (and returns an empty vector) if creation fails.
inline std::vector<std::shared_ptr<InProcessRank>> MakeGroup(int world_size, double timeout_s) {
  absl::StatusOr<std::vector<std::shared_ptr<InProcessRank>>> group =
      CreateInProcessGroup(world_size, timeout_s);
  EXPECT_TRUE(group.ok()) << group.status();
  if (!group.ok()) return {};
  return *std::move(group);
}

// Runs fn(rank_index, communicator) on one thread per rank; returns each rank's status.
template <typename Fn>
std::vector<absl::Status> RunRanks(const std::vector<std::shared_ptr<InProcessRank>>& ranks,
                                   Fn fn) {
  std::vector<absl::Status> results(ranks.size());
  std::vector<std::thread> threads;
  threads.reserve(ranks.size());
  for (size_t r = 0; r < ranks.size(); ++r) {
    threads.emplace_back([&, r] { results[r] = fn(static_cast<int>(r), *ranks[r]); });
  }
  for (std::thread& t : threads) t.join();
  return results;
}

// Seconds since `start`.
inline double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace testing_util
}  // namespace normuon

#endif  // NORMUON_TESTS_COMM_TEST_UTIL_H_
