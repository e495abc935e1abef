// base/crc32.h: zlib's CRC-32, the checkpoint format's checksum: standard check values, and
// chaining across pieces of any size.
#include "base/crc32.h"

#include <string>

#include "gtest/gtest.h"

namespace normuon {
namespace {

TEST(Crc32Test, MatchesTheStandardCheckValues) {
  EXPECT_EQ(Crc32(""), 0u);
  EXPECT_EQ(Crc32("123456789"), 0xCBF43926u);  // the CRC-32/ISO-HDLC (zlib) check value
  EXPECT_EQ(Crc32("The quick brown fox jumps over the lazy dog"), 0x414FA339u);
  EXPECT_EQ(Crc32(std::string(1, '\0')), 0xD202EF8Du);
}

TEST(Crc32Test, ChainsAcrossPiecesOfAnySize) {
  std::string bytes(100000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 2654435761u) >> 24);
  const uint32_t whole = Crc32(bytes);
  for (size_t cut : {size_t{0}, size_t{1}, size_t{4095}, size_t{65536}, bytes.size()}) {
    const absl::string_view v(bytes);
    EXPECT_EQ(Crc32(v.substr(cut), Crc32(v.substr(0, cut))), whole) << cut;
  }
  EXPECT_EQ(Crc32("", 0x12345678u), 0x12345678u);  // nothing more: the CRC so far
}

}  // namespace
}  // namespace normuon
