// Unit tests of the checkpoint file format (runtime/checkpoint_format.h): round trips that keep
// every bit, the documented byte layout rebuilt independently here, and rejection of every kind
// of damage: truncation at every offset, a flipped byte anywhere, wrong magic, another version,
// inconsistent contents behind valid checksums, and rank files that do not belong to their
// index. Also a checkpoint saved by an earlier build (tests/data/checkpoint_v1) still decodes
// with the values it was saved with. (The file reader and writer are tested in tests/base.)
#include "runtime/checkpoint_format.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "base/crc32.h"
#include "base/file_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace normuon::checkpoint {
namespace {

using ::testing::HasSubstr;

// ---- Independent little-endian helpers (the test's own, to check the documented layout) ----

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutF32(std::string* out, float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  PutU32(out, u);
}
uint32_t GetU32(const std::string& b, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
}
uint64_t GetU64(const std::string& b, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
}
void SetU32(std::string* b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*b)[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
void SetU64(std::string* b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) (*b)[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

// A section as the documented layout places it.
struct Span {
  std::string tag;
  size_t start;    // tag
  size_t payload;  // first payload byte
  size_t length;   // payload bytes
  size_t crc;      // the CRC's offset
};

// Walks a well-formed file's sections from the header's count and each section's length.
std::vector<Span> Sections(const std::string& b) {
  std::vector<Span> out;
  const uint32_t count = GetU32(b, 12);
  size_t at = 20;
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t length = GetU64(b, at + 8);
    out.push_back({b.substr(at, 4), at, at + 16, static_cast<size_t>(length),
                   at + 16 + static_cast<size_t>(length)});
    at += 16 + static_cast<size_t>(length) + 4;
  }
  EXPECT_EQ(at, b.size());
  return out;
}

// Recomputes every checksum (sections, then header), so a deliberate edit of the contents
// reaches the decoder's consistency checks instead of its checksum check.
void Reseal(std::string* b) {
  for (const Span& s : Sections(*b)) {
    SetU32(b, s.crc, Crc32(absl::string_view(b->data() + s.start, s.crc - s.start)));
  }
  SetU32(b, 16, Crc32(absl::string_view(b->data(), 16)));
}

// ---- Sample contents ----

// Three saved ranks, two groups, three parameters; rank 2 holds no rows of 'e' nor of 'b'.
Index SampleIndex() {
  Index x;
  x.save_id = 0x0123456789abcdefull;
  x.world_size = 3;
  x.variant = 0;
  x.ns_dtype = 1;
  x.ns_steps = 5;
  x.nesterov = 1;
  x.ns_eps = 1e-7f;
  x.matrix_second_moment = 1;
  x.steps_taken = 12;
  x.steps_skipped = 2;
  x.groups = {{GroupKind::kNorMuon, 0.95f, 0.95f, 1e-10f}, {GroupKind::kAdamW, 0.9f, 0.95f, 1e-8f}};
  x.params = {{"layers.0.w", ParamKind::kMatrix, 0, 6, 4, 0},
              {"bias", ParamKind::kAdamW, 1, 5, 1, 7},
              {"emb \xc3\xa9", ParamKind::kMatrix, 0, 3, 2, 0}};
  x.ranges = {{{0, 2}, {3, 2}, {0, 0}},
              {{2, 3}, {0, 3}, {0, 3}},
              {{5, 1}, {5, 0}, {3, 0}}};
  return x;
}

// Values that must survive bit for bit: a NaN with a payload, -0, infinities, a denormal.
float Special(size_t i) {
  const uint32_t bits[] = {0x7fc12345u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x00000001u};
  if (i % 7 < 5) {
    float f;
    std::memcpy(&f, &bits[i % 7], 4);
    return f;
  }
  return static_cast<float>(i) * 0.37f - 1.0f;
}

// The rank file of `rank` in SampleIndex.
RankFile SampleRankFile(const Index& x, uint32_t rank) {
  RankFile f;
  f.save_id = x.save_id;
  f.rank = rank;
  f.world_size = x.world_size;
  f.param_count = static_cast<uint32_t>(x.params.size());
  f.matrix_second_moment = x.matrix_second_moment;
  size_t k = rank * 1000;
  for (uint32_t p = 0; p < x.params.size(); ++p) {
    const RowRange& g = x.ranges[rank][p];
    if (g.count == 0) continue;
    ShardState s;
    s.param = p;
    s.kind = x.params[p].kind;
    s.name = x.params[p].name;
    s.row_begin = g.begin;
    s.row_count = g.count;
    s.cols = x.params[p].cols;
    s.step = s.kind == ParamKind::kAdamW ? x.params[p].adamw_step : 0;
    for (int64_t i = 0; i < g.count * s.cols; ++i) s.first.push_back(Special(k++));
    const int64_t n = s.kind == ParamKind::kAdamW ? g.count * s.cols : g.count;
    for (int64_t i = 0; i < n; ++i) s.second.push_back(Special(k++));
    f.shards.push_back(s);
  }
  return f;
}

// SampleIndex with the column neuron axis (matrix_second_moment 3).
Index SampleColumnIndex() {
  Index x = SampleIndex();
  x.matrix_second_moment = kSecondMomentPerColumn;
  return x;
}

// Row blocks of SampleIndex's matrices under the column axis: 'layers.0.w' (6 rows) is two
// blocks, 'emb \xc3\xa9' (3 rows) one.
int64_t SampleBlocks(uint32_t param) { return param == 0 ? 2 : 1; }

// The rank file of `rank` in SampleColumnIndex: each matrix entry holds the whole replicated v
// (blocks * cols values, the same on every rank).
RankFile SampleColumnRankFile(const Index& x, uint32_t rank) {
  RankFile f = SampleRankFile(x, rank);
  f.matrix_second_moment = kSecondMomentPerColumn;
  for (ShardState& s : f.shards) {
    if (s.kind != ParamKind::kMatrix) continue;
    s.second.clear();
    for (int64_t i = 0; i < SampleBlocks(s.param) * s.cols; ++i) {
      s.second.push_back(Special(5000 + 100 * s.param + static_cast<size_t>(i)));
    }
  }
  return f;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

void ExpectSameIndex(const Index& a, const Index& b) {
  EXPECT_EQ(a.save_id, b.save_id);
  EXPECT_EQ(a.world_size, b.world_size);
  EXPECT_EQ(a.variant, b.variant);
  EXPECT_EQ(a.ns_dtype, b.ns_dtype);
  EXPECT_EQ(a.ns_steps, b.ns_steps);
  EXPECT_EQ(a.nesterov, b.nesterov);
  EXPECT_EQ(std::memcmp(&a.ns_eps, &b.ns_eps, 4), 0);
  EXPECT_EQ(a.matrix_second_moment, b.matrix_second_moment);
  EXPECT_EQ(a.steps_taken, b.steps_taken);
  EXPECT_EQ(a.steps_skipped, b.steps_skipped);
  ASSERT_EQ(a.groups.size(), b.groups.size());
  for (size_t g = 0; g < a.groups.size(); ++g) {
    EXPECT_EQ(a.groups[g].kind, b.groups[g].kind);
    EXPECT_EQ(a.groups[g].beta1, b.groups[g].beta1);
    EXPECT_EQ(a.groups[g].beta2, b.groups[g].beta2);
    EXPECT_EQ(a.groups[g].eps, b.groups[g].eps);
  }
  ASSERT_EQ(a.params.size(), b.params.size());
  for (size_t p = 0; p < a.params.size(); ++p) {
    EXPECT_EQ(a.params[p].name, b.params[p].name);
    EXPECT_EQ(a.params[p].kind, b.params[p].kind);
    EXPECT_EQ(a.params[p].group, b.params[p].group);
    EXPECT_EQ(a.params[p].rows, b.params[p].rows);
    EXPECT_EQ(a.params[p].cols, b.params[p].cols);
    EXPECT_EQ(a.params[p].adamw_step, b.params[p].adamw_step);
  }
  ASSERT_EQ(a.ranges.size(), b.ranges.size());
  for (size_t r = 0; r < a.ranges.size(); ++r) {
    ASSERT_EQ(a.ranges[r].size(), b.ranges[r].size());
    for (size_t p = 0; p < a.ranges[r].size(); ++p) {
      EXPECT_EQ(a.ranges[r][p].begin, b.ranges[r][p].begin);
      EXPECT_EQ(a.ranges[r][p].count, b.ranges[r][p].count);
    }
  }
}

// ---- CRC ----

TEST(Crc32Test, MatchesTheStandardCheckValueAndChains) {
  EXPECT_EQ(Crc32(""), 0u);
  EXPECT_EQ(Crc32("123456789"), 0xCBF43926u);  // the CRC-32/ISO-HDLC (zlib) check value
  EXPECT_EQ(Crc32("The quick brown fox jumps over the lazy dog"), 0x414FA339u);
  EXPECT_EQ(Crc32("6789", Crc32("12345")), Crc32("123456789"));
}

// ---- Round trips ----

TEST(CheckpointFormatTest, IndexRoundTripsAndReencodesToTheSameBytes) {
  const Index x = SampleIndex();
  ASSERT_TRUE(ValidateIndex(x, "sample").ok()) << ValidateIndex(x, "sample");
  const std::string bytes = EncodeIndex(x);
  absl::StatusOr<Index> back = DecodeIndex(bytes, "index.nmck");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameIndex(x, *back);
  EXPECT_EQ(EncodeIndex(*back), bytes);
}

TEST(CheckpointFormatTest, RankFilesRoundTripEveryBitAndMatchTheirIndex) {
  const Index x = SampleIndex();
  for (uint32_t rank = 0; rank < x.world_size; ++rank) {
    const RankFile f = SampleRankFile(x, rank);
    ASSERT_TRUE(ValidateRankFile(f, "sample").ok()) << ValidateRankFile(f, "sample");
    const std::string bytes = EncodeRankFile(f);
    absl::StatusOr<RankFile> back = DecodeRankFile(bytes, RankFileName(rank, 3));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->save_id, f.save_id);
    EXPECT_EQ(back->rank, rank);
    EXPECT_EQ(back->world_size, 3u);
    EXPECT_EQ(back->param_count, 3u);
    EXPECT_EQ(back->matrix_second_moment, 1u);
    ASSERT_EQ(back->shards.size(), f.shards.size());
    for (size_t i = 0; i < f.shards.size(); ++i) {
      const ShardState& a = f.shards[i];
      const ShardState& b = back->shards[i];
      EXPECT_EQ(a.param, b.param);
      EXPECT_EQ(a.kind, b.kind);
      EXPECT_EQ(a.name, b.name);
      EXPECT_EQ(a.row_begin, b.row_begin);
      EXPECT_EQ(a.row_count, b.row_count);
      EXPECT_EQ(a.cols, b.cols);
      EXPECT_EQ(a.step, b.step);
      EXPECT_TRUE(SameBits(a.first, b.first)) << a.name;
      EXPECT_TRUE(SameBits(a.second, b.second)) << a.name;
    }
    EXPECT_EQ(EncodeRankFile(*back), bytes);
    EXPECT_TRUE(CheckRankFileMatchesIndex(*back, x, rank, "f").ok())
        << CheckRankFileMatchesIndex(*back, x, rank, "f");
  }
}

TEST(CheckpointFormatTest, MuonRankFilesCarryNoSecondMoment) {
  Index x = SampleIndex();
  x.matrix_second_moment = 0;
  RankFile f = SampleRankFile(x, 1);
  for (ShardState& s : f.shards) {
    if (s.kind == ParamKind::kMatrix) s.second.clear();
  }
  absl::StatusOr<RankFile> back = DecodeRankFile(EncodeRankFile(f), "muon");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->shards[0].second.empty());
  EXPECT_EQ(back->shards[1].second.size(), 3u);  // AdamW keeps exp_avg_sq
  EXPECT_TRUE(CheckRankFileMatchesIndex(*back, x, 1, "muon").ok());
}

TEST(CheckpointFormatTest, ColumnAxisRankFilesRoundTripTheWholeReplicatedV) {
  const Index x = SampleColumnIndex();
  ASSERT_TRUE(ValidateIndex(x, "sample").ok()) << ValidateIndex(x, "sample");
  const std::string index_bytes = EncodeIndex(x);
  absl::StatusOr<Index> index = DecodeIndex(index_bytes, "index.nmck");
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->matrix_second_moment, 3u);
  EXPECT_EQ(EncodeIndex(*index), index_bytes);
  for (uint32_t rank = 0; rank < x.world_size; ++rank) {
    const RankFile f = SampleColumnRankFile(x, rank);
    ASSERT_TRUE(ValidateRankFile(f, "sample").ok()) << ValidateRankFile(f, "sample");
    const std::string bytes = EncodeRankFile(f);
    absl::StatusOr<RankFile> back = DecodeRankFile(bytes, RankFileName(rank, 3));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->matrix_second_moment, 3u);
    ASSERT_EQ(back->shards.size(), f.shards.size());
    for (size_t i = 0; i < f.shards.size(); ++i) {
      const ShardState& a = f.shards[i];
      const ShardState& b = back->shards[i];
      EXPECT_EQ(a.param, b.param);
      EXPECT_EQ(a.row_count, b.row_count);
      EXPECT_TRUE(SameBits(a.first, b.first)) << a.name;
      EXPECT_TRUE(SameBits(a.second, b.second)) << a.name;
      // A matrix's v is blocks * cols whatever rows the rank held; AdamW is per element.
      EXPECT_EQ(b.second.size(), static_cast<size_t>(b.kind == ParamKind::kMatrix
                                                         ? SampleBlocks(b.param) * b.cols
                                                         : b.row_count * b.cols))
          << a.name;
    }
    EXPECT_EQ(EncodeRankFile(*back), bytes);
    EXPECT_TRUE(CheckRankFileMatchesIndex(*back, x, rank, "f").ok())
        << CheckRankFileMatchesIndex(*back, x, rank, "f");
  }
  // The same v with one row or many: rank 2 holds one row of 'layers.0.w', rank 1 three.
  EXPECT_TRUE(SameBits(SampleColumnRankFile(x, 2).shards[0].second,
                       SampleColumnRankFile(x, 1).shards[0].second));
}

TEST(CheckpointFormatTest, ColumnAxisVMustBeAPositiveMultipleOfCols) {
  const Index x = SampleColumnIndex();
  auto error = [](const RankFile& f) {
    const absl::Status validated = ValidateRankFile(f, "rank-1-of-3.nmck");
    EXPECT_FALSE(validated.ok());
    const absl::Status st = DecodeRankFile(EncodeRankFile(f), "rank-1-of-3.nmck").status();
    EXPECT_FALSE(st.ok());
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    return std::make_pair(std::string(st.message()), std::string(validated.message()));
  };
  RankFile f = SampleColumnRankFile(x, 1);
  f.shards[0].second.pop_back();  // 7 values for 4 cols
  auto [decoded, validated] = error(f);
  EXPECT_THAT(decoded, HasSubstr("rank-1-of-3.nmck', section #1 'MATX' (at byte "));
  EXPECT_THAT(decoded, HasSubstr("parameter 0 'layers.0.w': after the momentum of 3 rows x 4 "
                                 "cols the section holds 7 values of v, not a multiple of cols "
                                 "= 4"));
  EXPECT_THAT(validated, HasSubstr("entry 0: parameter 0 'layers.0.w': holds 7 values of v, not "
                                   "a multiple of cols = 4"));
  f = SampleColumnRankFile(x, 1);
  f.shards[0].second.clear();
  std::tie(decoded, validated) = error(f);
  EXPECT_THAT(decoded, HasSubstr("parameter 0 'layers.0.w': after the momentum of 3 rows x 4 cols "
                                 "the section holds no v (matrix_second_moment = 3 keeps cols = 4 "
                                 "values of v per row block)"));
  EXPECT_THAT(validated, HasSubstr("holds no v"));
  // Momentum short of its rows (and no v): the section cannot hold the momentum.
  f = SampleColumnRankFile(x, 1);
  f.shards[0].second.clear();
  f.shards[0].first.pop_back();
  std::tie(decoded, validated) = error(f);
  EXPECT_THAT(decoded, HasSubstr("3 rows x 4 cols need 48 bytes of momentum followed by whole "
                                 "floats of v, the section holds 44"));
  EXPECT_THAT(validated, HasSubstr("holds 11 momentum values, 3 rows x 4 cols need 12"));
  // A section whose state is not whole floats (behind valid checksums).
  std::string bytes = EncodeRankFile(SampleColumnRankFile(x, 1));
  const Span sp = Sections(bytes)[1];
  bytes.insert(sp.crc, 1, '\x7f');
  SetU64(&bytes, sp.start + 8, sp.length + 1);
  Reseal(&bytes);
  EXPECT_THAT(std::string(DecodeRankFile(bytes, "r").status().message()),
              HasSubstr("need 48 bytes of momentum followed by whole floats of v, the section "
                        "holds 81"));
  // More row blocks than the matrix has rows: 4 blocks of 2 columns for the 3 rows of 'emb'.
  f = SampleColumnRankFile(x, 1);
  f.shards[2].second.resize(8, 0.5f);
  ASSERT_TRUE(ValidateRankFile(f, "f").ok()) << ValidateRankFile(f, "f");
  const absl::Status st = CheckRankFileMatchesIndex(f, x, 1, "rank-1-of-3.nmck");
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("the entry of parameter 2 'emb \xc3\xa9' holds v for 4 row blocks of 2 "
                        "columns, but the parameter has 3 rows"));
  // The layout must agree with the index's, both ways.
  EXPECT_THAT(std::string(CheckRankFileMatchesIndex(SampleRankFile(SampleIndex(), 1), x, 1, "f")
                              .message()),
              HasSubstr("matrix_second_moment = 1, the index has 3"));
  EXPECT_THAT(std::string(CheckRankFileMatchesIndex(SampleColumnRankFile(x, 1), SampleIndex(), 1,
                                                    "f")
                              .message()),
              HasSubstr("matrix_second_moment = 3, the index has 1"));
  // A column-axis file read as a rows-axis one (the header's value changed behind a valid
  // checksum) no longer frames its entries.
  f = SampleColumnRankFile(x, 1);
  f.matrix_second_moment = kSecondMomentPerRow;
  EXPECT_THAT(std::string(DecodeRankFile(EncodeRankFile(f), "r").status().message()),
              HasSubstr("3 rows x 4 cols need 60 bytes of state, the section holds 80"));
}

TEST(CheckpointFormatTest, ColumnAxisFilesAreStillChecksummed) {
  const std::string bytes = EncodeRankFile(SampleColumnRankFile(SampleColumnIndex(), 1));
  const Span sp = Sections(bytes)[1];
  std::string bad = bytes;
  bad[sp.crc - 1] ^= 0x01;  // the last byte of the last value of v
  const std::string msg(DecodeRankFile(bad, "rank-1-of-3.nmck").status().message());
  EXPECT_THAT(msg, HasSubstr("rank-1-of-3.nmck', section #1 'MATX' (at byte " +
                             std::to_string(sp.start) + "): checksum mismatch"));
}

TEST(CheckpointFormatTest, FileNames) {
  EXPECT_EQ(RankFileName(2, 16), "rank-2-of-16.nmck");
  EXPECT_EQ(std::string(kIndexFileName), "index.nmck");
  EXPECT_EQ(JoinPath("/a/b", "c"), "/a/b/c");
  EXPECT_EQ(JoinPath("/a/b/", "c"), "/a/b/c");
}

// ---- The documented layout, rebuilt byte by byte ----

// A section as documented: tag, flags 0, u64 length, payload, CRC32 of all before it.
std::string DocSection(const char* tag, const std::string& payload) {
  std::string s(tag, 4);
  PutU32(&s, 0);
  PutU64(&s, payload.size());
  s += payload;
  PutU32(&s, Crc32(s));
  return s;
}

std::string DocFile(const char* magic, const std::vector<std::string>& sections) {
  std::string f(magic, 8);
  PutU32(&f, 1);
  PutU32(&f, static_cast<uint32_t>(sections.size()));
  PutU32(&f, Crc32(f));
  for (const std::string& s : sections) f += s;
  return f;
}

TEST(CheckpointFormatTest, IndexBytesAreExactlyTheDocumentedLittleEndianLayout) {
  Index x;
  x.save_id = 0x1122334455667788ull;
  x.world_size = 2;
  x.variant = 1;
  x.ns_dtype = 2;
  x.ns_steps = 5;
  x.nesterov = 0;
  x.ns_eps = 1e-7f;
  x.matrix_second_moment = 1;
  x.steps_taken = 3;
  x.steps_skipped = 1;
  x.groups = {{GroupKind::kNorMuon, 0.95f, 0.9f, 1e-10f}};
  x.params = {{"w", ParamKind::kMatrix, 0, 3, 2, 0}};
  x.ranges = {{{0, 1}}, {{1, 2}}};

  std::string conf;
  PutU64(&conf, x.save_id);
  for (uint32_t v : {2u, 1u, 2u, 5u, 0u}) PutU32(&conf, v);
  PutF32(&conf, 1e-7f);
  PutU32(&conf, 1);
  PutU64(&conf, 3);
  PutU64(&conf, 1);
  PutU32(&conf, 1);
  PutU32(&conf, 0);
  PutF32(&conf, 0.95f);
  PutF32(&conf, 0.9f);
  PutF32(&conf, 1e-10f);
  std::string parm;
  PutU32(&parm, 1);
  PutU32(&parm, 1);
  parm += "w";
  PutU32(&parm, 0);
  PutU32(&parm, 0);
  PutU64(&parm, 3);
  PutU64(&parm, 2);
  PutU64(&parm, 0);
  std::string shrd;
  for (uint64_t v : {0, 1, 1, 2}) PutU64(&shrd, v);
  const std::string doc = DocFile("NMCKINDX", {DocSection("CONF", conf), DocSection("PARM", parm),
                                               DocSection("SHRD", shrd)});
  EXPECT_EQ(EncodeIndex(x), doc);
  // Spot checks of byte order: the version and the save id's low byte first.
  EXPECT_EQ(doc.substr(8, 4), std::string("\x01\x00\x00\x00", 4));
  EXPECT_EQ(static_cast<unsigned char>(doc[20 + 16]), 0x88);
  absl::StatusOr<Index> back = DecodeIndex(doc, "doc");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameIndex(x, *back);
}

TEST(CheckpointFormatTest, RankFileBytesAreExactlyTheDocumentedLittleEndianLayout) {
  RankFile f;
  f.save_id = 42;
  f.rank = 1;
  f.world_size = 2;
  f.param_count = 2;
  f.matrix_second_moment = 1;
  ShardState m;
  m.param = 0;
  m.kind = ParamKind::kMatrix;
  m.name = "w";
  m.row_begin = 1;
  m.row_count = 2;
  m.cols = 2;
  m.first = {1.0f, -2.0f, 0.5f, 3.0f};
  m.second = {0.25f, 4.0f};
  ShardState a;
  a.param = 1;
  a.kind = ParamKind::kAdamW;
  a.name = "b";
  a.row_begin = 0;
  a.row_count = 1;
  a.cols = 1;
  a.step = 9;
  a.first = {7.0f};
  a.second = {8.0f};
  f.shards = {m, a};

  std::string head;
  PutU64(&head, 42);
  for (uint32_t v : {1u, 2u, 2u, 2u, 1u}) PutU32(&head, v);
  std::string mat;
  PutU32(&mat, 0);
  PutU32(&mat, 1);
  mat += "w";
  for (uint64_t v : {1, 2, 2, 0}) PutU64(&mat, v);
  for (float v : {1.0f, -2.0f, 0.5f, 3.0f, 0.25f, 4.0f}) PutF32(&mat, v);
  std::string adam;
  PutU32(&adam, 1);
  PutU32(&adam, 1);
  adam += "b";
  for (uint64_t v : {0, 1, 1, 9}) PutU64(&adam, v);
  PutF32(&adam, 7.0f);
  PutF32(&adam, 8.0f);
  const std::string doc = DocFile(
      "NMCKRANK", {DocSection("RANK", head), DocSection("MATX", mat), DocSection("ADMW", adam)});
  EXPECT_EQ(EncodeRankFile(f), doc);
  // 1.0f is 0x3f800000: little-endian 00 00 80 3f, right after the MATX entry's fixed fields.
  const size_t momentum_at = 20 + (16 + head.size() + 4) + 16 + 4 + 4 + 1 + 4 * 8;
  EXPECT_EQ(doc.substr(momentum_at, 4), std::string("\x00\x00\x80\x3f", 4));
  absl::StatusOr<RankFile> back = DecodeRankFile(doc, "doc");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->shards[1].step, 9);
  EXPECT_TRUE(SameBits(back->shards[0].second, m.second));
}

TEST(CheckpointFormatTest, ColumnAxisRankFileBytesAreTheDocumentedLayout) {
  RankFile f;
  f.save_id = 7;
  f.rank = 0;
  f.world_size = 1;
  f.param_count = 1;
  f.matrix_second_moment = 3;
  ShardState m;
  m.param = 0;
  m.kind = ParamKind::kMatrix;
  m.name = "qkv";
  m.row_begin = 0;
  m.row_count = 1;
  m.cols = 2;
  m.first = {1.0f, 2.0f};
  m.second = {0.5f, 0.25f, 0.125f, 4.0f, 8.0f, 16.0f};  // three row blocks of two columns
  f.shards = {m};
  std::string head;
  PutU64(&head, 7);
  for (uint32_t v : {0u, 1u, 1u, 1u, 3u}) PutU32(&head, v);
  std::string mat;
  PutU32(&mat, 0);
  PutU32(&mat, 3);
  mat += "qkv";
  for (uint64_t v : {0, 1, 2, 0}) PutU64(&mat, v);
  for (float v : {1.0f, 2.0f, 0.5f, 0.25f, 0.125f, 4.0f, 8.0f, 16.0f}) PutF32(&mat, v);
  const std::string doc = DocFile("NMCKRANK", {DocSection("RANK", head), DocSection("MATX", mat)});
  EXPECT_EQ(EncodeRankFile(f), doc);
  absl::StatusOr<RankFile> back = DecodeRankFile(doc, "doc");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(SameBits(back->shards[0].first, m.first));
  EXPECT_TRUE(SameBits(back->shards[0].second, m.second));
}

// ---- Damage ----

struct Sample {
  std::string name;
  std::string bytes;
  bool index;
};

std::vector<Sample> Samples() {
  const Index x = SampleIndex();
  return {{"index.nmck", EncodeIndex(x), true},
          {"rank-0-of-3.nmck", EncodeRankFile(SampleRankFile(x, 0)), false},
          {"rank-1-of-3.nmck", EncodeRankFile(SampleRankFile(x, 1)), false},
          // The column axis: each matrix entry's v is the rest of its section.
          {"rank-1-of-3.cols.nmck", EncodeRankFile(SampleColumnRankFile(SampleColumnIndex(), 1)),
           false}};
}

absl::Status Decode(const Sample& s, const std::string& bytes) {
  if (s.index) return DecodeIndex(bytes, s.name).status();
  return DecodeRankFile(bytes, s.name).status();
}

TEST(CheckpointFormatTest, TruncationAtEveryOffsetIsRejectedAsTruncated) {
  for (const Sample& s : Samples()) {
    ASSERT_TRUE(Decode(s, s.bytes).ok()) << s.name;
    for (size_t n = 0; n < s.bytes.size(); ++n) {
      const absl::Status st = Decode(s, s.bytes.substr(0, n));
      ASSERT_FALSE(st.ok()) << s.name << " cut at " << n;
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(st.message()), HasSubstr(s.name)) << n;
      EXPECT_THAT(std::string(st.message()), HasSubstr("truncated")) << n << ": " << st;
    }
  }
}

TEST(CheckpointFormatTest, AFlippedByteAnywhereIsRejectedAndNamesTheSection) {
  for (const Sample& s : Samples()) {
    const std::vector<Span> spans = Sections(s.bytes);
    for (size_t at = 0; at < s.bytes.size(); ++at) {
      for (unsigned char mask : {0x01, 0x80, 0xff}) {
        std::string bad = s.bytes;
        bad[at] = static_cast<char>(bad[at] ^ mask);
        const absl::Status st = Decode(s, bad);
        ASSERT_FALSE(st.ok()) << s.name << " byte " << at << " ^ " << int{mask};
        const std::string msg(st.message());
        EXPECT_THAT(msg, HasSubstr(s.name));
        if (at < 8) {
          EXPECT_THAT(msg, HasSubstr("magic")) << msg;
        } else if (at < 12) {
          EXPECT_THAT(msg, HasSubstr("format version")) << msg;
        } else if (at < 20) {
          EXPECT_THAT(msg, HasSubstr("header checksum mismatch")) << msg;
        }
        for (size_t i = 0; i < spans.size(); ++i) {
          const Span& sp = spans[i];
          const bool in_length = at >= sp.start + 8 && at < sp.start + 16;
          if (at >= sp.start && at < sp.crc + 4 && !in_length) {
            // A tag, flags, payload or CRC byte: the section's checksum no longer matches.
            EXPECT_THAT(msg, HasSubstr("section #" + std::to_string(i))) << at << ": " << msg;
            EXPECT_THAT(msg, HasSubstr("checksum mismatch")) << at << ": " << msg;
            if (at >= sp.payload) {
              EXPECT_THAT(msg, HasSubstr("'" + sp.tag + "'")) << msg;
            }
          } else if (in_length) {
            // A wrong length reads past the end or checksums the wrong bytes.
            EXPECT_THAT(msg, HasSubstr("section #" + std::to_string(i))) << at << ": " << msg;
          }
        }
      }
    }
  }
}

TEST(CheckpointFormatTest, WrongMagicAndTheWrongFileKindAreNamed) {
  const Index x = SampleIndex();
  const std::string index = EncodeIndex(x);
  const std::string rank = EncodeRankFile(SampleRankFile(x, 0));
  std::string junk = index;
  junk.replace(0, 8, "PK\x03\x04zzzz", 8);
  absl::Status st = DecodeIndex(junk, "model.zip").status();
  EXPECT_THAT(std::string(st.message()), HasSubstr("not a normuon checkpoint file"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("model.zip"));
  st = DecodeRankFile(index, "index.nmck").status();
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("is a checkpoint index, not a checkpoint rank file"));
  st = DecodeIndex(rank, "rank-0-of-3.nmck").status();
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("is a checkpoint rank file, not a checkpoint index"));
  EXPECT_FALSE(DecodeIndex("", "empty").ok());
  EXPECT_FALSE(DecodeRankFile("NMCK", "short").ok());
}

TEST(CheckpointFormatTest, AnotherFormatVersionIsRejectedByNumber) {
  for (const Sample& s : Samples()) {
    for (uint32_t version : {0u, 2u, 0x01000000u}) {
      std::string other = s.bytes;
      SetU32(&other, 8, version);
      SetU32(&other, 16, Crc32(absl::string_view(other.data(), 16)));
      const absl::Status st = Decode(s, other);
      EXPECT_THAT(std::string(st.message()),
                  HasSubstr("format version " + std::to_string(version) +
                            "; this build reads version 1"))
          << st;
    }
  }
  // A newer version's header may be laid out differently after the version: still named.
  std::string future = Samples()[0].bytes.substr(0, 12);
  SetU32(&future, 8, 7);
  EXPECT_THAT(std::string(DecodeIndex(future + "xyz", "f").status().message()),
              HasSubstr("format version 7"));
}

TEST(CheckpointFormatTest, TrailingBytesAndExtraSectionsAreRejected) {
  const std::string index = EncodeIndex(SampleIndex());
  EXPECT_THAT(std::string(DecodeIndex(index + "x", "i").status().message()),
              HasSubstr("1 unexpected bytes after the last of its 3 sections"));
  std::string four = index + DocSection("XTRA", "hello");
  SetU32(&four, 12, 4);
  Reseal(&four);
  EXPECT_THAT(std::string(DecodeIndex(four, "i").status().message()),
              HasSubstr("has 4 sections; an index has 3"));
  // Sections in the wrong order.
  std::string swapped = index;
  const std::vector<Span> sp = Sections(index);
  swapped.replace(sp[0].start, 4, "PARM");
  Reseal(&swapped);
  EXPECT_THAT(std::string(DecodeIndex(swapped, "i").status().message()),
              HasSubstr("section #0 'PARM' (at byte 20): expected a 'CONF' section here"));
  // Non-zero flags behind a valid checksum.
  std::string flagged = index;
  SetU32(&flagged, sp[1].start + 4, 1);
  Reseal(&flagged);
  EXPECT_THAT(std::string(DecodeIndex(flagged, "i").status().message()),
              HasSubstr("flags = 1"));
}

// An index encoded as given and decoded: the decoder's verdict.
std::string IndexError(const Index& x) {
  const absl::Status st = DecodeIndex(EncodeIndex(x), "idx.nmck").status();
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ValidateIndex(x, "idx.nmck").ok());
  return std::string(st.message());
}

TEST(CheckpointFormatTest, InconsistentIndexContentsAreRejectedWithNamesAndValues) {
  Index x = SampleIndex();
  x.ranges[1][0] = {1, 4};  // overlaps rank 0's rows [0, 2)
  EXPECT_THAT(IndexError(x), HasSubstr("section 'SHRD': parameter 0 'layers.0.w': saved rank 0 "
                                       "holds rows [0, 2) and rank 1 holds rows [1, 5): they "
                                       "overlap"));
  x = SampleIndex();
  x.ranges[2][0] = {5, 0};  // row 5 of 'layers.0.w' is held by no one
  EXPECT_THAT(IndexError(x), HasSubstr("parameter 0 'layers.0.w': rows [5, 6) are held by no "
                                       "saved rank"));
  x = SampleIndex();
  x.ranges[0][1] = {4, 2};  // past the 5 rows of 'bias'
  EXPECT_THAT(IndexError(x), HasSubstr("parameter 1 'bias': saved rank 0 has row_begin = 4, "
                                       "row_count = 2, outside the parameter's 5 rows"));
  x = SampleIndex();
  x.ranges[0][0] = {0, 1};
  x.ranges[1][0] = {2, 3};
  EXPECT_THAT(IndexError(x), HasSubstr("rows [1, 2) are held by no saved rank"));
  x = SampleIndex();
  x.params[2].name = "bias";
  EXPECT_THAT(IndexError(x), HasSubstr("section 'PARM': parameter 2 'bias': the name is already "
                                       "used by parameter 1"));
  x = SampleIndex();
  x.params[0].name = "";
  EXPECT_THAT(IndexError(x), HasSubstr("parameter 0 '': the name is 0 bytes long"));
  x = SampleIndex();
  x.params[1].kind = static_cast<ParamKind>(5);
  EXPECT_THAT(IndexError(x), HasSubstr("parameter 1 'bias': kind = 5"));
  x = SampleIndex();
  x.params[1].group = 0;  // an AdamW parameter in the NorMuon group
  EXPECT_THAT(IndexError(x), HasSubstr("kind adamw but its group 0 is of kind 0 (NorMuon)"));
  x = SampleIndex();
  x.params[0].group = 9;
  EXPECT_THAT(IndexError(x), HasSubstr("group = 9 but the index has 2 groups"));
  x = SampleIndex();
  x.params[0].cols = 0;
  EXPECT_THAT(IndexError(x), HasSubstr("rows x cols = 6 x 0"));
  x = SampleIndex();
  x.params[0].rows = int64_t{1} << 30;
  x.params[0].cols = int64_t{1} << 30;
  EXPECT_THAT(IndexError(x), HasSubstr("at most 2^40"));
  x = SampleIndex();
  x.params[0].adamw_step = 3;
  EXPECT_THAT(IndexError(x), HasSubstr("adamw_step = 3"));
  x = SampleIndex();
  x.nesterov = 2;
  EXPECT_THAT(IndexError(x), HasSubstr("section 'CONF': nesterov = 2"));
  x = SampleIndex();
  x.steps_taken = -1;
  EXPECT_THAT(IndexError(x), HasSubstr("steps_taken = -1"));
  x = SampleIndex();
  x.groups[1].kind = static_cast<GroupKind>(3);
  EXPECT_THAT(IndexError(x), HasSubstr("group 1 has kind 3"));
  x = SampleIndex();
  x.ranges.pop_back();  // two ranks' ranges for world size 3: the section has the wrong size
  EXPECT_THAT(IndexError(x), HasSubstr("holds 96 bytes; world_size 3 x 3 parameters x 16 bytes = "
                                       "144"));
  x = SampleIndex();
  x.world_size = 0;
  x.ranges.clear();
  EXPECT_THAT(IndexError(x), HasSubstr("world_size = 0 is outside [1, "));
}

TEST(CheckpointFormatTest, UnknownSecondMomentLayoutsAreRejected) {
  Index x = SampleIndex();
  x.matrix_second_moment = 4;
  EXPECT_THAT(IndexError(x), HasSubstr("section 'CONF': matrix_second_moment = 4 is not 0, 1, 2 "
                                         "or 3"));
  RankFile f = SampleRankFile(SampleIndex(), 1);
  f.matrix_second_moment = 4;
  EXPECT_THAT(std::string(DecodeRankFile(EncodeRankFile(f), "r").status().message()),
              HasSubstr("section #0 'RANK' (at byte 20): matrix_second_moment = 4 is not 0, 1, 2 "
                        "or 3"));
  EXPECT_THAT(std::string(ValidateRankFile(f, "r").message()),
              HasSubstr("matrix_second_moment = 4 is not 0, 1, 2 or 3"));
  EXPECT_EQ(SecondMomentName(3),
            "3 (one v per column of each row block, on every rank: neuron axis = columns)");
  EXPECT_EQ(SecondMomentName(9), "9 (unknown)");
}

TEST(CheckpointFormatTest, CountsThatCannotFitAreRejectedBeforeAnythingIsAllocated) {
  const std::string index = EncodeIndex(SampleIndex());
  const std::vector<Span> sp = Sections(index);
  std::string many = index;
  SetU32(&many, sp[1].payload, 0xffffffffu);  // param_count
  Reseal(&many);
  EXPECT_THAT(std::string(DecodeIndex(many, "i").status().message()),
              HasSubstr("param_count = 4294967295 cannot fit"));
  std::string groups = index;
  SetU32(&groups, sp[0].payload + 52, 0x7fffffffu);  // group_count
  Reseal(&groups);
  EXPECT_THAT(std::string(DecodeIndex(groups, "i").status().message()),
              HasSubstr("group_count = 2147483647"));
  std::string name = index;
  SetU32(&name, sp[1].payload + 4, 0x10000000u);  // the first name's length
  Reseal(&name);
  EXPECT_THAT(std::string(DecodeIndex(name, "i").status().message()),
              HasSubstr("parameter 0 name length = 268435456 exceeds the limit"));

  const std::string rank = EncodeRankFile(SampleRankFile(SampleIndex(), 0));
  const std::vector<Span> rs = Sections(rank);
  std::string rows = rank;
  // The first entry's row_count (after param, name length, name, row_begin).
  SetU64(&rows, rs[1].payload + 4 + 4 + 10 + 8, uint64_t{1} << 35);
  Reseal(&rows);
  EXPECT_THAT(std::string(DecodeRankFile(rows, "r").status().message()),
              HasSubstr("34359738368 rows x 4 cols need"));
  std::string entries = rank;
  SetU32(&entries, rs[0].payload + 20, 5);  // entry_count
  Reseal(&entries);
  EXPECT_THAT(std::string(DecodeRankFile(entries, "r").status().message()),
              HasSubstr("entry_count = 5 but the file has 2 entry sections"));
  std::string tag = rank;
  tag.replace(rs[1].start, 4, "WXYZ");
  Reseal(&tag);
  EXPECT_THAT(std::string(DecodeRankFile(tag, "r").status().message()),
              HasSubstr("section #1 'WXYZ'"));
}

std::string RankError(const RankFile& f) {
  const absl::Status st = DecodeRankFile(EncodeRankFile(f), "rank-1-of-3.nmck").status();
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(ValidateRankFile(f, "rank-1-of-3.nmck").ok());
  return std::string(st.message());
}

TEST(CheckpointFormatTest, InconsistentRankFilesAreRejected) {
  const Index x = SampleIndex();
  RankFile f = SampleRankFile(x, 1);
  f.shards[0].second.pop_back();  // v one value short
  EXPECT_THAT(RankError(f), HasSubstr("parameter 0 'layers.0.w': 3 rows x 4 cols need 60 bytes "
                                      "of state, the section holds 56"));
  f = SampleRankFile(x, 1);
  std::swap(f.shards[0], f.shards[1]);
  EXPECT_THAT(RankError(f), HasSubstr("increasing parameter order"));
  f = SampleRankFile(x, 1);
  f.rank = 3;
  EXPECT_THAT(RankError(f), HasSubstr("rank = 3, world_size = 3"));
  f = SampleRankFile(x, 1);
  f.shards[2].param = 3;
  EXPECT_THAT(RankError(f), HasSubstr("param = 3 but param_count = 3"));
  f = SampleRankFile(x, 1);
  f.shards[0].step = 4;
  EXPECT_THAT(RankError(f), HasSubstr("step = 4"));
  f = SampleRankFile(x, 1);
  f.shards[1].row_begin = -1;
  EXPECT_THAT(RankError(f), HasSubstr("row_begin = -1"));
}

TEST(CheckpointFormatTest, RankFilesThatDoNotBelongToTheirIndexAreRejected) {
  const Index x = SampleIndex();
  auto err = [&](const RankFile& f, uint32_t rank) {
    const absl::Status st = CheckRankFileMatchesIndex(f, x, rank, "rank-1-of-3.nmck");
    EXPECT_FALSE(st.ok());
    return std::string(st.message());
  };
  RankFile f = SampleRankFile(x, 1);
  f.save_id ^= 1;
  EXPECT_THAT(err(f, 1), HasSubstr("belongs to another save"));
  EXPECT_THAT(err(SampleRankFile(x, 1), 2), HasSubstr("holds rank 1 of 3, expected rank 2 of 3"));
  f = SampleRankFile(x, 1);
  f.shards.erase(f.shards.begin() + 1);
  EXPECT_THAT(err(f, 1), HasSubstr("has no entry for parameter 1 'bias'; the index says rank 1 "
                                   "held rows [0, 3)"));
  f = SampleRankFile(x, 0);
  EXPECT_THAT(err(f, 2), HasSubstr("expected rank 2"));
  f = SampleRankFile(x, 2);  // holds only 'layers.0.w'
  f.rank = 1;
  EXPECT_THAT(err(f, 1), HasSubstr("the entry of parameter 0 'layers.0.w'"));
  f = SampleRankFile(x, 1);
  f.shards[2].name = "other";
  EXPECT_THAT(err(f, 1), HasSubstr("is 'other'"));
  f = SampleRankFile(x, 1);
  f.matrix_second_moment = 0;
  EXPECT_THAT(err(f, 1), HasSubstr("matrix_second_moment = 0, the index has 1"));
  f = SampleRankFile(x, 1);
  f.param_count = 4;
  EXPECT_THAT(err(f, 1), HasSubstr("param_count = 4, the index has 3"));
  f = SampleRankFile(x, 2);
  f.shards.push_back(SampleRankFile(x, 1).shards[2]);  // rank 2 held no rows of 'emb'
  EXPECT_THAT(err(f, 2), HasSubstr("has an entry for parameter 2"));
}

// Random edits behind valid checksums must be rejected or accepted, never read out of bounds
// (this test is meant to run under ASan too).
TEST(CheckpointFormatTest, RandomEditsBehindValidChecksumsNeverReadOutOfBounds) {
  std::mt19937 gen(7);
  for (const Sample& s : Samples()) {
    const std::vector<Span> spans = Sections(s.bytes);
    for (int trial = 0; trial < 3000; ++trial) {
      std::string bad = s.bytes;
      const int edits = 1 + trial % 4;
      for (int e = 0; e < edits; ++e) {
        // Edit payload bytes only, so the file still frames and the checksums can be redone.
        const Span& sp = spans[gen() % spans.size()];
        if (sp.length == 0) continue;
        bad[sp.payload + gen() % sp.length] = static_cast<char>(gen());
      }
      Reseal(&bad);
      (void)Decode(s, bad);
    }
  }
}

// ---- A checkpoint saved by an earlier build ----

std::string DataFile(const std::string& name) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return std::string(srcdir != nullptr ? srcdir : ".") + "/normuon/tests/data/checkpoint_v1/" +
         name;
}

uint32_t FloatBitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Saved before the CRC-32 came from zlib (tests/data/BUILD): every header and section checksum
// still matches, and the contents are the values that build printed when it saved them.
TEST(CheckpointFormatTest, ACheckpointOfAnEarlierBuildStillDecodes) {
  absl::StatusOr<std::string> index_bytes = normuon::ReadWholeFile(DataFile(kIndexFileName));
  ASSERT_TRUE(index_bytes.ok()) << index_bytes.status();
  absl::StatusOr<Index> index = DecodeIndex(*index_bytes, "index.nmck");
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->world_size, 1u);
  EXPECT_EQ(index->steps_taken, 2);
  EXPECT_EQ(index->steps_skipped, 0);
  EXPECT_EQ(index->matrix_second_moment, kSecondMomentPerRow);
  ASSERT_EQ(index->params.size(), 2u);
  EXPECT_EQ(index->params[0].name, "layer.weight");
  EXPECT_EQ(index->params[0].rows, 6);
  EXPECT_EQ(index->params[0].cols, 4);
  EXPECT_EQ(index->params[1].name, "layer.bias");
  EXPECT_EQ(index->params[1].kind, ParamKind::kAdamW);
  EXPECT_EQ(index->params[1].adamw_step, 2);

  const std::string rank_name = RankFileName(0, 1);
  absl::StatusOr<std::string> rank_bytes = normuon::ReadWholeFile(DataFile(rank_name));
  ASSERT_TRUE(rank_bytes.ok()) << rank_bytes.status();
  absl::StatusOr<RankFile> rank = DecodeRankFile(*rank_bytes, rank_name);
  ASSERT_TRUE(rank.ok()) << rank.status();
  ASSERT_TRUE(CheckRankFileMatchesIndex(*rank, *index, 0, rank_name).ok());
  ASSERT_EQ(rank->shards.size(), 2u);
  const ShardState& w = rank->shards[0];
  ASSERT_EQ(w.first.size(), 24u);
  ASSERT_EQ(w.second.size(), 6u);
  EXPECT_EQ(FloatBitsOf(w.first[0]), 0xbd6f9db6u);
  EXPECT_EQ(FloatBitsOf(w.first[1]), 0xbc1fbe7cu);
  EXPECT_EQ(FloatBitsOf(w.first[2]), 0x3d1fbe78u);
  EXPECT_EQ(FloatBitsOf(w.first[3]), 0xbd1fbe7au);
  EXPECT_EQ(FloatBitsOf(w.second[0]), 0x3c68ce72u);
  EXPECT_EQ(rank->shards[1].step, 2);

  // Re-encoding gives the same bytes, checksums included: the CRC is unchanged.
  EXPECT_EQ(EncodeIndex(*index), *index_bytes);
  EXPECT_EQ(EncodeRankFile(*rank), *rank_bytes);
  EXPECT_EQ(Crc32(absl::string_view(*index_bytes).substr(0, 16)), GetU32(*index_bytes, 16));
}

}  // namespace
}  // namespace normuon::checkpoint
