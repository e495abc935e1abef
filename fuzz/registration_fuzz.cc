// registration_fuzz: the registration decoder and the cross-rank check of finalize
// (sharding/registration.h). At finalize every rank decodes bytes that other ranks sent, so the
// decoder must survive any bytes, and the check must give the same verdict whatever they hold.
//
// Input, first byte even: raw mode. Then a u32 split point s (little-endian; taken modulo the
// bytes left + 1): the next s bytes are rank 0's encoding, the rest rank 1's. Checks: decoding
// never crashes; a decoded count matches the length; a decoded record holds the bytes at its
// offsets; CheckRegistrationsAgree({a}) passes only if every record of a is a valid shape held
// whole by rank 0; CheckRegistrationsAgree({a, b}) passes only if both decode, agree on every
// kind, name and shape, and their row ranges cover each parameter; and it gives the same verdict
// for {b, a}.
//
// First byte odd: structured mode, records built from the input and encoded with
// EncodeRegistration, one list per rank:
//   u8 world (1 + value % 4), u8 count (value % 6), then per parameter: u8 kind (bit 0),
//   name (u8 length <= 72, then the bytes), ShapeInt rows, ShapeInt cols (see fuzz_input.h),
//   then per rank and parameter: ShapeInt row_begin, ShapeInt row_count, u8 change (bit 0:
//   rename, bit 1: one more row, bit 2: other kind; applied to ranks > 0 only).
// Records keep col_count = kAllColumns (whole rows); raw mode reaches column pieces.
// Checks: DecodeRegistration(EncodeRegistration(x)) gives x back (name: its first 48 bytes,
// length and FNV-1a hash); CheckRegistrationsAgree passes exactly when the ranks agree on kinds,
// names and shapes and every parameter's row ranges pass ValidateCover.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "fuzz/fuzz_input.h"
#include "sharding/registration.h"
#include "sharding/shard.h"

namespace {

using normuon_fuzz::FuzzInput;
using normuon::sharding::CheckRegistrationHeadersAgree;
using normuon::sharding::CheckRegistrationsAgree;
using normuon::sharding::DecodedRecord;
using normuon::sharding::DecodeRegistration;
using normuon::sharding::EncodeRegistration;
using normuon::sharding::kRegistrationHeaderBytes;
using normuon::sharding::kRegistrationNamePrefix;
using normuon::sharding::kRegistrationRecordBytes;
using normuon::sharding::MatrixShape;
using normuon::sharding::NameHash;
using normuon::sharding::ParamKind;
using normuon::sharding::RegistrationRecord;
using normuon::sharding::kAllColumns;
using normuon::sharding::PieceRect;
using normuon::sharding::RankPiece;
using normuon::sharding::RecordPiece;
using normuon::sharding::RowShard;
using normuon::sharding::ValidateTiling;
using normuon::sharding::ValidateCover;
using normuon::sharding::ValidateShape;

uint64_t ReadU64(absl::string_view b, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(b[at + i])) << (8 * i);
  }
  return v;
}

// The decoded records of one encoding hold exactly the bytes at their offsets.
void CheckDecodedAgainstBytes(absl::string_view bytes, const std::vector<DecodedRecord>& records) {
  FUZZ_CHECK(bytes.size() == kRegistrationHeaderBytes + records.size() * kRegistrationRecordBytes);
  for (size_t i = 0; i < records.size(); ++i) {
    const size_t at = kRegistrationHeaderBytes + i * kRegistrationRecordBytes;
    const DecodedRecord& d = records[i];
    FUZZ_CHECK(d.record.kind == ParamKind::kMatrix || d.record.kind == ParamKind::kAdamW);
    FUZZ_CHECK(d.name_hash == ReadU64(bytes, at + 8));
    FUZZ_CHECK(static_cast<uint64_t>(d.record.rows) == ReadU64(bytes, at + 16));
    FUZZ_CHECK(static_cast<uint64_t>(d.record.cols) == ReadU64(bytes, at + 24));
    FUZZ_CHECK(static_cast<uint64_t>(d.record.row_begin) == ReadU64(bytes, at + 32));
    FUZZ_CHECK(static_cast<uint64_t>(d.record.row_count) == ReadU64(bytes, at + 40));
    FUZZ_CHECK(static_cast<uint64_t>(d.record.col_begin) == ReadU64(bytes, at + 48));
    FUZZ_CHECK(static_cast<uint64_t>(d.record.col_count) == ReadU64(bytes, at + 56));
    const size_t prefix = std::min<size_t>(d.name_length, kRegistrationNamePrefix);
    FUZZ_CHECK(d.record.name == bytes.substr(at + 64, prefix));
  }
}

bool SameIdentity(const DecodedRecord& a, const DecodedRecord& b) {
  return a.record.kind == b.record.kind && a.record.name == b.record.name &&
         a.name_length == b.name_length && a.name_hash == b.name_hash &&
         a.record.rows == b.record.rows && a.record.cols == b.record.cols;
}

// The verdict CheckRegistrationsAgree must give for encodings that all decode.
bool ExpectAgree(const std::vector<std::vector<DecodedRecord>>& ranks) {
  for (const auto& r : ranks) {
    if (r.size() != ranks[0].size()) return false;
  }
  for (size_t i = 0; i < ranks[0].size(); ++i) {
    for (size_t r = 1; r < ranks.size(); ++r) {
      if (!SameIdentity(ranks[r][i], ranks[0][i])) return false;
    }
  }
  for (size_t i = 0; i < ranks[0].size(); ++i) {
    const DecodedRecord& ref = ranks[0][i];
    MatrixShape shape{ref.record.name, ref.record.rows, ref.record.cols};
    bool whole_rows = true;
    std::vector<RowShard> shards;
    std::vector<RankPiece> pieces;
    for (const auto& r : ranks) {
      const RegistrationRecord& rec = r[i].record;
      if (!(rec.col_begin == 0 && rec.col_count == kAllColumns)) whole_rows = false;
      shards.push_back({rec.row_begin, rec.row_count});
      pieces.push_back({static_cast<int>(pieces.size()), RecordPiece(rec)});
    }
    // Column pieces: the tiling check, whose own model is tiling_fuzz's.
    if (!(whole_rows ? ValidateCover(shape, shards) : ValidateTiling(shape, pieces)).ok()) {
      return false;
    }
  }
  return true;
}

void RawMode(FuzzInput& in) {
  const uint32_t split = in.U32();
  std::string rest = in.Rest();
  const size_t s = split % (rest.size() + 1);
  const std::string a = rest.substr(0, s);
  const std::string b = rest.substr(s);

  auto da = DecodeRegistration(a);
  auto db = DecodeRegistration(b);
  if (da.ok()) CheckDecodedAgainstBytes(a, *da);
  if (db.ok()) CheckDecodedAgainstBytes(b, *db);

  // One rank: passes only if every record is a valid shape held whole by rank 0.
  const absl::Status one = CheckRegistrationsAgree({a});
  if (one.ok()) {
    FUZZ_CHECK(da.ok());
    for (const DecodedRecord& d : *da) {
      FUZZ_CHECK(ValidateShape({d.record.name, d.record.rows, d.record.cols}).ok());
      const PieceRect piece = RecordPiece(d.record);
      FUZZ_CHECK(piece.row_begin == 0 && piece.row_count == d.record.rows);
      FUZZ_CHECK(piece.col_begin == 0 && piece.col_count == d.record.cols);
    }
  }

  const absl::Status ab = CheckRegistrationsAgree({a, b});
  const absl::Status ba = CheckRegistrationsAgree({b, a});
  FUZZ_CHECK(ab.ok() == ba.ok());
  if (ab.ok()) {
    FUZZ_CHECK(da.ok() && db.ok());
    FUZZ_CHECK(CheckRegistrationHeadersAgree({a, b}).ok());
  }
  if (da.ok() && db.ok()) FUZZ_CHECK(ab.ok() == ExpectAgree({*da, *db}));
  if (!CheckRegistrationHeadersAgree({a, b}).ok()) FUZZ_CHECK(!ab.ok());
}

void StructuredMode(FuzzInput& in) {
  const int world = 1 + in.U8() % 4;
  const int count = in.U8() % 6;
  std::vector<RegistrationRecord> base(count);
  for (RegistrationRecord& r : base) {
    r.kind = in.Bool() ? ParamKind::kAdamW : ParamKind::kMatrix;
    r.name = in.Bytes(72);
    r.rows = in.ShapeInt();
    r.cols = in.ShapeInt();
  }
  std::vector<std::vector<RegistrationRecord>> per_rank(world, base);
  for (int rank = 0; rank < world; ++rank) {
    for (RegistrationRecord& r : per_rank[rank]) {
      r.row_begin = in.ShapeInt();
      r.row_count = in.ShapeInt();
      const uint8_t change = rank > 0 ? in.U8() : 0;
      if (change & 1) r.name += "'";
      if (change & 2) r.rows = static_cast<int64_t>(static_cast<uint64_t>(r.rows) + 1);
      if (change & 4) {
        r.kind = r.kind == ParamKind::kMatrix ? ParamKind::kAdamW : ParamKind::kMatrix;
      }
    }
  }

  std::vector<std::string> encodings;
  std::vector<std::vector<DecodedRecord>> decoded;
  for (const auto& records : per_rank) {
    encodings.push_back(EncodeRegistration(records));
    auto d = DecodeRegistration(encodings.back());
    FUZZ_CHECK(d.ok());
    FUZZ_CHECK(d->size() == records.size());
    for (size_t i = 0; i < records.size(); ++i) {
      const RegistrationRecord& want = records[i];
      const DecodedRecord& got = (*d)[i];
      FUZZ_CHECK(got.record.kind == want.kind);
      FUZZ_CHECK(got.record.rows == want.rows && got.record.cols == want.cols);
      FUZZ_CHECK(got.record.row_begin == want.row_begin &&
                 got.record.row_count == want.row_count);
      FUZZ_CHECK(got.record.name == want.name.substr(0, kRegistrationNamePrefix));
      FUZZ_CHECK(got.name_length == want.name.size());
      FUZZ_CHECK(got.name_hash == NameHash(want.name));
    }
    decoded.push_back(*std::move(d));
  }
  const absl::Status agree = CheckRegistrationsAgree(encodings);
  FUZZ_CHECK(agree.ok() == ExpectAgree(decoded));
  if (!agree.ok()) FUZZ_CHECK(!agree.message().empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  normuon_fuzz::FuzzInput in(data, size);
  if ((in.U8() & 1) == 0) {
    RawMode(in);
  } else {
    StructuredMode(in);
  }
  return 0;
}
