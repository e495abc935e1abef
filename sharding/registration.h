// The cross-rank registration check of finalize (docs/ARCHITECTURE.md section 2): every rank encodes what it
// registered as bytes, the ranks all-gather those bytes, and every rank runs the same check on
// the same gathered bytes, so all ranks fail with the same message naming the first mismatch
// instead of hanging in, or corrupting, the first step's collectives.
//
// Encoding, version 3, all integers little-endian whatever the host:
//   header, kRegistrationHeaderBytes = 24:
//     "NMRG"  u32 version  u32 record size (kRegistrationRecordBytes)  u32 extra count
//     u64 record count
//   then one record of kRegistrationRecordBytes = 120 per parameter, in registration order, then
//   `extra count` records of the extra pieces (a rank holding several pieces of one matrix:
//   normuon_param_desc_t.pieces):
//     u32 kind  u32 name length (saturated at 2^32 - 1)  u64 FNV-1a 64 of the whole name
//     i64 rows  i64 cols  i64 row_begin  i64 row_count  i64 col_begin  i64 col_count
//     i32 piece (the rank's piece index, -1: none)  i32 extra_of (an extra piece: the index of
//     its parameter's record; -1 for the records of the parameters)
//     the name's first kRegistrationNamePrefix = 48 bytes, zero-padded
// (Version 1 had no column fields: 96-byte records; version 2 no piece fields and no extra
// records: 112 bytes. Both ends of the exchange are one build, so only the current version is
// read.) col_count = kAllColumns (-1) means all cols columns from col_begin = 0: the row-only
// layout. The record count must agree across ranks; the extra count may differ (ranks hold
// different numbers of pieces), so the all-gather pads every encoding to the longest one and
// each rank's bytes are cut to EncodedRegistrationBytes of its header before decoding.
// Records are fixed size so the message is a plain byte array. Names longer than the prefix are
// kept as prefix + length + hash: two names are taken as equal when all three are; messages show
// the prefix followed by "...".
//
// Usage in finalize: all-gather the first kRegistrationHeaderBytes of each rank's encoding (fixed
// size) and run CheckRegistrationHeadersAgree; once the counts agree every encoding has the same
// length, so all-gather the whole encodings and run CheckRegistrationsAgree.
#ifndef NORMUON_SHARDING_REGISTRATION_H_
#define NORMUON_SHARDING_REGISTRATION_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/param_kind.h"
#include "sharding/shard.h"

namespace normuon::sharding {

// The kind of a record: the one enum of base/param_kind.h (its values are part of the encoding).
using ::normuon::ParamKind;
using ::normuon::ParamKindName;

// col_count of a record that holds every column (the row-only layout).
inline constexpr int64_t kAllColumns = -1;

// One registered parameter as a rank registered it: global shape and this rank's piece, rows
// [row_begin, +row_count) x columns [col_begin, +col_count) (kAllColumns: every column).
struct RegistrationRecord {
  std::string name;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_begin = 0;
  int64_t row_count = 0;
  ParamKind kind = ParamKind::kMatrix;
  int64_t col_begin = 0;
  int64_t col_count = kAllColumns;
  int32_t piece = -1;     // the rank's piece index (desc.pieces); -1: the desc's own piece
  int32_t extra_of = -1;  // an extra piece: its parameter's record index; -1 otherwise
};

// The piece of a record: col_count == kAllColumns (with col_begin 0) resolved to all columns.
// Other values are returned as they are (ValidateLocalPiece judges them).
PieceRect RecordPiece(const RegistrationRecord& record);

inline constexpr uint32_t kRegistrationVersion = 3;
inline constexpr size_t kRegistrationHeaderBytes = 24;
inline constexpr size_t kRegistrationRecordBytes = 120;
inline constexpr size_t kRegistrationNamePrefix = 48;

// The encoding above: `records` (one per parameter), then `extras` (each with extra_of set);
// its size is kRegistrationHeaderBytes + (records + extras) * kRegistrationRecordBytes. Never
// fails: values are encoded as given and judged by the check.
std::string EncodeRegistration(const std::vector<RegistrationRecord>& records,
                               const std::vector<RegistrationRecord>& extras = {});

// The length of the encoding whose header `header` is (at least kRegistrationHeaderBytes); fails
// as the header check does on a bad header or a length that overflows.
absl::StatusOr<uint64_t> EncodedRegistrationBytes(absl::string_view header);

// A record read back. record.name holds the stored prefix (the whole name when name_length <=
// kRegistrationNamePrefix).
struct DecodedRecord {
  RegistrationRecord record;
  uint32_t name_length = 0;
  uint64_t name_hash = 0;
};

// Reads an encoding: the parameters' records, then the extra pieces' records. Fails on a wrong
// magic, version or record size, a length that does not match the counts, an unknown kind, or an
// extra piece whose extra_of is not a parameter's record.
absl::StatusOr<std::vector<DecodedRecord>> DecodeRegistration(absl::string_view bytes);

// The FNV-1a 64-bit hash stored for a name (fixed, so every build and host agrees).
uint64_t NameHash(absl::string_view name);

// Checks the headers (each at least kRegistrationHeaderBytes long; longer is accepted and only
// the header is read): magic, version and record size valid, and every rank's record count
// equal to rank 0's (the extra counts may differ). The message names the first rank that
// differs.
absl::Status CheckRegistrationHeadersAgree(const std::vector<std::string>& per_rank_headers);

// Checks the whole encodings, indexed by rank (their number is the world size): the headers as
// above; then, parameter by parameter in registration order and within one parameter rank by
// rank, that kind, name and global shape equal rank 0's ("rank 2 registered parameter 3 as
// matrix 'h.0.attn' 64x48 but rank 0 has matrix 'h.0.mlp' 64x64"); then, parameter by
// parameter, that the ranks' pieces tile it exactly: ValidateCover (the same messages as
// before the column fields) when every rank holds one piece of whole rows, else ValidateTiling
// over every rank's pieces, extra pieces included (naming the two ranks, piece indices and
// rectangles that overlap, or the first element no rank holds). An extra piece must be of a
// matrix, with its parameter's shape. Returns the first failure.
absl::Status CheckRegistrationsAgree(const std::vector<std::string>& per_rank_encodings);

}  // namespace normuon::sharding

#endif  // NORMUON_SHARDING_REGISTRATION_H_
