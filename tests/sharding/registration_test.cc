#include "sharding/registration.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "sharding/shard.h"
#include "tests/sharding/test_util.h"

namespace normuon::sharding {
namespace {

using ::normuon::sharding::testing::IsInvalidWith;

struct Param {
  std::string name;
  int64_t rows, cols;
  ParamKind kind;
};

const std::vector<Param>& Params() {
  static const std::vector<Param>* params = new std::vector<Param>{
      {"wte.weight", 50, 8, ParamKind::kAdamW},
      {"h.0.ln_1.weight", 8, 1, ParamKind::kAdamW},
      {"h.0.attn", 24, 8, ParamKind::kMatrix},
      {"h.0.mlp", 64, 64, ParamKind::kMatrix},
  };
  return *params;
}

// What `rank` registers when every parameter is split FSDP2-style over `world` ranks.
std::vector<RegistrationRecord> Fsdp2Records(int rank, int world) {
  std::vector<RegistrationRecord> records;
  for (const Param& p : Params()) {
    const RowShard shard = (*Fsdp2Split(p.rows, world))[rank];
    records.push_back({p.name, p.rows, p.cols, shard.row_begin, shard.row_count, p.kind});
  }
  return records;
}

std::vector<std::vector<RegistrationRecord>> AllRanks(int world) {
  std::vector<std::vector<RegistrationRecord>> all;
  for (int r = 0; r < world; ++r) all.push_back(Fsdp2Records(r, world));
  return all;
}

std::vector<std::string> Encode(const std::vector<std::vector<RegistrationRecord>>& all) {
  std::vector<std::string> out;
  for (const auto& records : all) out.push_back(EncodeRegistration(records));
  return out;
}

TEST(EncodeRegistrationTest, UsesAFixedSizePerRecord) {
  EXPECT_EQ(EncodeRegistration({}).size(), kRegistrationHeaderBytes);
  EXPECT_EQ(EncodeRegistration(Fsdp2Records(0, 3)).size(),
            kRegistrationHeaderBytes + 4 * kRegistrationRecordBytes);
}

TEST(EncodeRegistrationTest, WritesIntegersLittleEndian) {
  const std::string bytes = EncodeRegistration({{"w", 0x0102, 3, 0, 0x0102, ParamKind::kAdamW}});
  EXPECT_EQ(bytes.substr(0, 4), "NMRG");
  EXPECT_EQ(bytes[16], 1);  // count
  EXPECT_EQ(bytes[17], 0);
  const size_t record = kRegistrationHeaderBytes;
  EXPECT_EQ(bytes[record], 1);          // kind: adamw
  EXPECT_EQ(bytes[record + 4], 1);      // name length
  EXPECT_EQ(bytes[record + 16], 0x02);  // rows, low byte first
  EXPECT_EQ(bytes[record + 17], 0x01);
  EXPECT_EQ(bytes[record + 48], 0);     // col_begin
  EXPECT_EQ(static_cast<uint8_t>(bytes[record + 56]), 0xff);  // col_count: kAllColumns (-1)
  EXPECT_EQ(static_cast<uint8_t>(bytes[record + 64]), 0xff);  // piece: -1
  EXPECT_EQ(static_cast<uint8_t>(bytes[record + 68]), 0xff);  // extra_of: -1
  EXPECT_EQ(bytes[record + 72], 'w');
}

// Several pieces on one rank (normuon_param_desc_t.pieces): extra records after the parameters',
// counted in the header, pointing at their parameter's record.
RegistrationRecord Piece(int64_t row_begin, int64_t row_count, int64_t col_begin,
                         int64_t col_count, int32_t piece, int32_t extra_of = -1) {
  RegistrationRecord r{"w", 8, 6, row_begin, row_count, ParamKind::kMatrix};
  r.col_begin = col_begin;
  r.col_count = col_count;
  r.piece = piece;
  r.extra_of = extra_of;
  return r;
}

TEST(ExtraPiecesTest, RoundTripAndCountInTheHeader) {
  const std::string bytes =
      EncodeRegistration({Piece(0, 4, 0, 6, 0)}, {Piece(4, 4, 0, 3, 2, 0), Piece(4, 4, 3, 3, 1, 0)});
  EXPECT_EQ(bytes[12], 2);  // extra count
  auto length = EncodedRegistrationBytes(bytes.substr(0, kRegistrationHeaderBytes));
  ASSERT_TRUE(length.ok()) << length.status();
  EXPECT_EQ(*length, bytes.size());
  auto decoded = DecodeRegistration(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->size(), 3u);
  EXPECT_EQ((*decoded)[0].record.extra_of, -1);
  EXPECT_EQ((*decoded)[1].record.extra_of, 0);
  EXPECT_EQ((*decoded)[1].record.piece, 2);
  EXPECT_EQ((*decoded)[2].record.col_begin, 3);
  // An extra piece pointing past the parameters is refused.
  EXPECT_TRUE(IsInvalidWith(
      DecodeRegistration(EncodeRegistration({Piece(0, 8, 0, 6, 0)}, {Piece(0, 0, 0, 6, 1, 1)}))
          .status(),
      {"extra_of = 1"}));
}

TEST(ExtraPiecesTest, TilesWithOtherRanksAndNamesPieceIndicesOnOverlap) {
  // Rank 0: rows 0..3 and the left half of rows 4..7; rank 1: the right half of rows 4..7.
  const std::string r0 = EncodeRegistration({Piece(0, 4, 0, 6, 0)}, {Piece(4, 4, 0, 3, 1, 0)});
  const std::string r1 = EncodeRegistration({Piece(4, 4, 3, 3, 0)});
  EXPECT_TRUE(CheckRegistrationsAgree({r0, r1}).ok());
  // Rank 1's second piece overlaps its first.
  const std::string bad = EncodeRegistration({Piece(4, 4, 3, 3, 0)}, {Piece(5, 1, 4, 2, 1, 0)});
  EXPECT_TRUE(IsInvalidWith(CheckRegistrationsAgree({r0, bad}),
                            {"parameter 0", "rank 1's piece 0 (rows [4, 8) x cols [3, 6))",
                             "overlaps rank 1's piece 1 (rows [5, 6) x cols [4, 6))"}));
  // An extra piece of an AdamW parameter is refused naming the rank.
  RegistrationRecord adamw{"b", 8, 6, 0, 8, ParamKind::kAdamW};
  const std::string ra = EncodeRegistration({adamw}, {Piece(0, 0, 0, 6, 1, 0)});
  const std::string rb = EncodeRegistration({{"b", 8, 6, 0, 0, ParamKind::kAdamW}});
  EXPECT_TRUE(IsInvalidWith(CheckRegistrationsAgree({ra, rb}), {"rank 0", "extra piece"}));
}

TEST(DecodeRegistrationTest, ReadsBackWhatWasEncoded) {
  const std::vector<RegistrationRecord> records = Fsdp2Records(1, 3);
  auto decoded = DecodeRegistration(EncodeRegistration(records));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const RegistrationRecord& d = (*decoded)[i].record;
    EXPECT_EQ(d.name, records[i].name);
    EXPECT_EQ(d.rows, records[i].rows);
    EXPECT_EQ(d.cols, records[i].cols);
    EXPECT_EQ(d.row_begin, records[i].row_begin);
    EXPECT_EQ(d.row_count, records[i].row_count);
    EXPECT_EQ(d.kind, records[i].kind);
    EXPECT_EQ((*decoded)[i].name_hash, NameHash(records[i].name));
  }
}

TEST(DecodeRegistrationTest, KeepsALongNamesPrefixLengthAndHash) {
  const std::string name(100, 'x');
  auto decoded = DecodeRegistration(EncodeRegistration({{name, 4, 4, 0, 4, ParamKind::kMatrix}}));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ((*decoded)[0].record.name, std::string(kRegistrationNamePrefix, 'x'));
  EXPECT_EQ((*decoded)[0].name_length, 100u);
  EXPECT_EQ((*decoded)[0].name_hash, NameHash(name));
}

TEST(DecodeRegistrationTest, RejectsAWrongMagic) {
  std::string bytes = EncodeRegistration(Fsdp2Records(0, 1));
  bytes[0] = 'X';
  EXPECT_TRUE(IsInvalidWith(DecodeRegistration(bytes).status(), {"magic"}));
}

TEST(DecodeRegistrationTest, RejectsATruncatedEncoding) {
  std::string bytes = EncodeRegistration(Fsdp2Records(0, 1));
  bytes.pop_back();
  EXPECT_TRUE(IsInvalidWith(DecodeRegistration(bytes).status(), {"declares 4 records"}));
}

TEST(DecodeRegistrationTest, RejectsAnUnknownKind) {
  std::string bytes = EncodeRegistration(Fsdp2Records(0, 1));
  bytes[kRegistrationHeaderBytes + kRegistrationRecordBytes] = 9;
  EXPECT_TRUE(IsInvalidWith(DecodeRegistration(bytes).status(), {"record 1", "kind 9"}));
}

TEST(NameHashTest, IsFnv1a64) {
  EXPECT_EQ(NameHash(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(NameHash("a"), 0xaf63dc4c8601ec8cull);
}

TEST(CheckRegistrationsAgreeTest, AcceptsConsistentFsdp2RegistrationsAtEveryWorldSize) {
  for (int world : {1, 2, 3, 4, 8, 64}) {
    EXPECT_TRUE(CheckRegistrationsAgree(Encode(AllRanks(world))).ok()) << "world " << world;
  }
}

TEST(CheckRegistrationsAgreeTest, ReportsACountMismatchNamingTheRank) {
  auto all = AllRanks(3);
  all[2].pop_back();
  EXPECT_TRUE(IsInvalidWith(CheckRegistrationsAgree(Encode(all)),
                            {"rank 2 registered 3 parameters but rank 0 registered 4"}));
}

TEST(CheckRegistrationsAgreeTest, ReportsADifferentNameAndShape) {
  auto all = AllRanks(3);
  all[2][3].name = "h.0.attn";
  all[2][3].cols = 48;
  EXPECT_TRUE(IsInvalidWith(
      CheckRegistrationsAgree(Encode(all)),
      {"rank 2 registered parameter 3 as matrix 'h.0.attn' 64x48 but rank 0 has matrix "
       "'h.0.mlp' 64x64"}));
}

TEST(CheckRegistrationsAgreeTest, ReportsADifferentKind) {
  auto all = AllRanks(2);
  all[1][0].kind = ParamKind::kMatrix;
  EXPECT_TRUE(IsInvalidWith(
      CheckRegistrationsAgree(Encode(all)),
      {"rank 1 registered parameter 0 as matrix 'wte.weight' 50x8 but rank 0 has adamw"}));
}

TEST(CheckRegistrationsAgreeTest, ReportsTheFirstMismatchInRegistrationOrder) {
  auto all = AllRanks(3);
  all[1][3].rows = 65;  // later parameter, earlier rank
  all[2][1].cols = 2;   // earlier parameter, later rank
  EXPECT_TRUE(
      IsInvalidWith(CheckRegistrationsAgree(Encode(all)), {"rank 2 registered parameter 1"}));
}

TEST(CheckRegistrationsAgreeTest, TellsApartLongNamesThatShareTheirPrefix) {
  const std::string prefix(kRegistrationNamePrefix, 'p');
  const std::vector<std::string> encodings = {
      EncodeRegistration({{prefix + ".a", 4, 4, 0, 4, ParamKind::kMatrix}}),
      EncodeRegistration({{prefix + ".b", 4, 4, 4, 0, ParamKind::kMatrix}}),
  };
  EXPECT_TRUE(IsInvalidWith(CheckRegistrationsAgree(encodings),
                            {"rank 1 registered parameter 0", prefix + "...'"}));
}

TEST(CheckRegistrationsAgreeTest, ReportsOverlappingRowRangesNamingParameterAndRank) {
  auto all = AllRanks(3);
  all[1][2].row_begin -= 1;  // h.0.attn: rank 1 now starts inside rank 0's rows
  EXPECT_TRUE(IsInvalidWith(CheckRegistrationsAgree(Encode(all)),
                            {"parameter 2", "'h.0.attn'", "rank 1", "overlap rank 0"}));
}

TEST(CheckRegistrationsAgreeTest, ReportsRowsThatNoRankHolds) {
  auto all = AllRanks(2);
  all[1][3].row_count -= 1;  // h.0.mlp: the last row is held by no one
  EXPECT_TRUE(IsInvalidWith(CheckRegistrationsAgree(Encode(all)),
                            {"parameter 3", "[63, 64)", "held by no rank"}));
}

TEST(CheckRegistrationsAgreeTest, AcceptsARaggedCoverWithZeroRowRanks) {
  auto all = AllRanks(3);
  // h.0.mlp (64 rows): rank 0 takes everything, ranks 1 and 2 hold none.
  all[0][3].row_begin = 0;
  all[0][3].row_count = 64;
  all[1][3].row_begin = 64;
  all[1][3].row_count = 0;
  all[2][3].row_begin = 0;
  all[2][3].row_count = 0;
  EXPECT_TRUE(CheckRegistrationsAgree(Encode(all)).ok());
}

TEST(CheckRegistrationsAgreeTest, NamesTheRankWhoseEncodingIsCorrupt) {
  std::vector<std::string> encodings = Encode(AllRanks(3));
  encodings[1][0] = 'X';
  EXPECT_TRUE(IsInvalidWith(CheckRegistrationsAgree(encodings), {"rank 1", "magic"}));
}

TEST(CheckRegistrationsAgreeTest, RejectsAnEmptyRankList) {
  EXPECT_TRUE(IsInvalidWith(CheckRegistrationsAgree({}), {"no ranks"}));
}

TEST(CheckRegistrationHeadersAgreeTest, ComparesCountsFromTheHeadersAlone) {
  auto all = AllRanks(2);
  all[0].pop_back();
  std::vector<std::string> headers;
  for (const std::string& e : Encode(all)) headers.push_back(e.substr(0, kRegistrationHeaderBytes));
  EXPECT_TRUE(IsInvalidWith(CheckRegistrationHeadersAgree(headers),
                            {"rank 1 registered 4 parameters but rank 0 registered 3"}));
}

TEST(CheckRegistrationHeadersAgreeTest, RejectsAHeaderCutShort) {
  EXPECT_TRUE(IsInvalidWith(CheckRegistrationHeadersAgree({EncodeRegistration({}), "NMRG"}),
                            {"rank 1", "shorter"}));
}

}  // namespace
}  // namespace normuon::sharding
