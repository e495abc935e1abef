// base/handle_registry.h: the handle encoding, stale and foreign handles, slot reuse and
// retirement, and concurrent use.
#include "base/handle_registry.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace normuon {
namespace {

bool Contains(const absl::Status& s, const std::string& part) {
  return std::string(s.message()).find(part) != std::string::npos;
}

TEST(HandleRegistryTest, HandlesCarryTagGenerationAndSlot) {
  HandleRegistry<int> r(0x5A, "widget");
  absl::StatusOr<uint64_t> a = r.Add(std::make_shared<int>(1));
  absl::StatusOr<uint64_t> b = r.Add(std::make_shared<int>(2));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, (uint64_t{0x5A} << 56) | (uint64_t{1} << 32) | 0);
  EXPECT_EQ(*b, (uint64_t{0x5A} << 56) | (uint64_t{1} << 32) | 1);
  EXPECT_EQ(**r.Find(*a), 1);
  EXPECT_EQ(**r.Find(*b), 2);
  EXPECT_EQ(r.live(), 2u);
  // Slot 0 comes back with generation 2.
  ASSERT_TRUE(r.Remove(*a).ok());
  absl::StatusOr<uint64_t> c = r.Add(std::make_shared<int>(3));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, (uint64_t{0x5A} << 56) | (uint64_t{2} << 32) | 0);
}

TEST(HandleRegistryTest, StaleHandlesAreNotFoundAfterTheirSlotIsReused) {
  HandleRegistry<int> r(0x5A, "widget");
  const uint64_t first = *r.Add(std::make_shared<int>(1));
  absl::StatusOr<std::shared_ptr<int>> removed = r.Remove(first);
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(**removed, 1);
  const uint64_t second = *r.Add(std::make_shared<int>(2));
  EXPECT_NE(first, second);
  for (const absl::Status& s : {r.Find(first).status(), r.Remove(first).status()}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
    EXPECT_TRUE(Contains(s, "widget handle " + std::to_string(first) + " (0x")) << s;
    EXPECT_TRUE(Contains(s, "is not a live widget (never created, or already destroyed)")) << s;
  }
  EXPECT_EQ(**r.Find(second), 2);
  ASSERT_TRUE(r.Remove(second).ok());
  EXPECT_EQ(r.Remove(second).status().code(), absl::StatusCode::kNotFound);  // double destroy
  EXPECT_EQ(r.live(), 0u);
}

TEST(HandleRegistryTest, ZeroForeignAndNeverIssuedHandlesAreNotFound) {
  HandleRegistry<int> r(0x5A, "widget", "(0 means no widget)");
  const uint64_t h = *r.Add(std::make_shared<int>(1));
  absl::Status s = r.Find(0).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(s, "widget handle 0 is not a live widget: 0 is never a handle (0 means no widget)")) << s;
  s = r.Find(h ^ (uint64_t{0x01} << 56)).status();  // another registry's tag
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(s, "is not a widget handle")) << s;
  s = r.Find(h + 7).status();  // a slot never used
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(s, "is not a live widget")) << s;
  s = r.Find(h + (uint64_t{1} << 32)).status();  // a generation not issued yet
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(**r.Find(h), 1);
}

TEST(HandleRegistryTest, ASlotWhoseGenerationIsSpentIsRetiredAndNoHandleRepeats) {
  HandleRegistry<int> r(0x5A, "widget", "", /*max_generation=*/3);
  std::set<uint64_t> seen;
  uint64_t max_slot = 0;
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<uint64_t> h = r.Add(std::make_shared<int>(i));
    ASSERT_TRUE(h.ok());
    EXPECT_TRUE(seen.insert(*h).second) << "handle issued twice: " << *h;
    EXPECT_LE((*h >> 32) & 0xffffff, 3u);
    max_slot = std::max<uint64_t>(max_slot, *h & 0xffffffffu);
    ASSERT_TRUE(r.Remove(*h).ok());
  }
  // Generations 1..3 of slot 0, then of slot 1, ...: 10 handles need 4 slots.
  EXPECT_EQ(max_slot, 3u);
  EXPECT_EQ(r.live(), 0u);
}

TEST(HandleRegistryTest, MessagesShowHandlesInDecimalAndHex) {
  EXPECT_EQ(HandleRegistry<int>::Describe(0xC000000100000002ull),
            "13835058059577131010 (0xc000000100000002)");
}

TEST(HandleRegistryTest, ConcurrentAddFindRemoveIsSafe) {
  HandleRegistry<int> r(0x5A, "widget", "", /*max_generation=*/5);
  std::atomic<int> found{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&r, &found, t] {
      for (int i = 0; i < 2000; ++i) {
        const uint64_t h = *r.Add(std::make_shared<int>(t));
        absl::StatusOr<std::shared_ptr<int>> e = r.Find(h);
        if (e.ok() && **e == t) found.fetch_add(1);
        // Other threads' handles, live or stale: never another thread's object under ours.
        (void)r.Find(h ^ 1);
        EXPECT_TRUE(r.Remove(h).ok());
        EXPECT_FALSE(r.Find(h).ok());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(found.load(), 4 * 2000);
  EXPECT_EQ(r.live(), 0u);
}

}  // namespace
}  // namespace normuon
