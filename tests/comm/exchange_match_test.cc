// Send/receive matching: pairing order, count and size mismatches, argument checks.
#include "comm/exchange_match.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace normuon {
namespace {

using ::testing::HasSubstr;

TEST(ExchangeMatchTest, KthSendPairsWithKthReceiveOfTheSamePair) {
  char a0[2], a1[3], b0[2], b1[3];
  // Rank 0 sends two transfers to rank 1; rank 1 lists them in the same order.
  const P2p s0[] = {{1, a0, 2}, {1, a1, 3}};
  const P2p r1[] = {{0, b0, 2}, {0, b1, 3}};
  const ExchangePost posts[] = {{s0, {}}, {{}, r1}};
  ExchangeMatcher m(2);
  ASSERT_TRUE(m.Match(posts, 0).ok());
  EXPECT_TRUE(m.plan(0).empty());
  ASSERT_EQ(m.plan(1).size(), 2u);
  EXPECT_EQ(m.plan(1)[0].src, a0);
  EXPECT_EQ(m.plan(1)[0].dst, b0);
  EXPECT_EQ(m.plan(1)[1].src, a1);
  EXPECT_EQ(m.plan(1)[1].bytes, 3u);
}

TEST(ExchangeMatchTest, MoreSendsThanReceivesNamesBothCounts) {
  char a[1], b[1];
  const P2p s0[] = {{1, a, 1}, {1, a, 1}};
  const P2p r1[] = {{0, b, 1}};
  const ExchangePost posts[] = {{s0, {}}, {{}, r1}};
  ExchangeMatcher m(2);
  absl::Status s = m.Match(posts, 5);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("collective #5 (exchange): rank 0 posts 2 sends to rank 1 but rank 1 "
                        "posts only 1 receives from rank 0"));
  EXPECT_TRUE(m.plan(1).empty());
}

TEST(ExchangeMatchTest, ReceiveWithoutASendNamesBothRanks) {
  char b[4];
  const P2p r0[] = {{1, b, 4}};
  const ExchangePost posts[] = {{{}, r0}, {{}, {}}};
  ExchangeMatcher m(2);
  absl::Status s = m.Match(posts, 0);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("rank 0 posts receive #0 from rank 1 (4 bytes) but rank 1 posts only 0 "
                        "sends to rank 0"));
}

TEST(ExchangeMatchTest, CountsEveryMismatchAndReportsTheFirst) {
  char a[8], b[8];
  const P2p s0[] = {{1, a, 8}, {2, a, 8}};
  const P2p r1[] = {{0, b, 7}};
  const P2p r2[] = {{0, b, 6}};
  const ExchangePost posts[] = {{s0, {}}, {{}, r1}, {{}, r2}};
  ExchangeMatcher m(3);
  absl::Status s = m.Match(posts, 0);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("rank 0 sends 8 bytes to rank 1 but rank 1 expects 7 bytes"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("(2 mismatches in all)"));
}

TEST(ExchangeMatchTest, ArgumentChecksNameTheEntry) {
  char a[1];
  const P2p bad_peer[] = {{0, a, 1}, {-1, a, 1}};
  absl::Status s = CheckExchangeArgs(2, 4, 9, bad_peer, {});
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("rank 2, collective #9 (exchange): sends[1].peer is -1, must be in "
                        "[0, 4)"));
  const P2p null_buf[] = {{3, nullptr, 16}};
  s = CheckExchangeArgs(2, 4, 9, {}, null_buf);
  EXPECT_THAT(std::string(s.message()), HasSubstr("recvs[0] (peer 3, 16 bytes) has a null buffer"));
  const P2p empty[] = {{3, nullptr, 0}};
  EXPECT_TRUE(CheckExchangeArgs(2, 4, 9, empty, empty).ok());
}

}  // namespace
}  // namespace normuon
