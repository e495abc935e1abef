#include "sharding/registration.h"

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "sharding/shard.h"

namespace normuon::sharding {
namespace {

constexpr char kMagic[4] = {'N', 'M', 'R', 'G'};

void PutU32(uint32_t v, std::string* out) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutU64(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t GetU32(absl::string_view b, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<uint8_t>(b[at + i])) << (8 * i);
  return v;
}

uint64_t GetU64(absl::string_view b, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<uint64_t>(static_cast<uint8_t>(b[at + i])) << (8 * i);
  return v;
}

struct Header {
  uint64_t count = 0;
  uint32_t extras = 0;
};

absl::StatusOr<Header> ReadHeader(absl::string_view bytes) {
  if (bytes.size() < kRegistrationHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the encoding is ", bytes.size(),
                                                   " bytes, shorter than its ",
                                                   kRegistrationHeaderBytes, "-byte header"));
  }
  if (bytes.substr(0, 4) != absl::string_view(kMagic, 4)) {
    return absl::InvalidArgumentError("the encoding does not start with the magic 'NMRG'");
  }
  const uint32_t version = GetU32(bytes, 4);
  if (version != kRegistrationVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the encoding has version ", version, "; this build reads version ", kRegistrationVersion));
  }
  const uint32_t record_bytes = GetU32(bytes, 8);
  if (record_bytes != kRegistrationRecordBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the encoding has ", record_bytes, "-byte records; expected ", kRegistrationRecordBytes));
  }
  return Header{GetU64(bytes, 16), GetU32(bytes, 12)};
}

// Names compare by stored prefix, full length and hash (see the header comment).
bool SameName(const DecodedRecord& a, const DecodedRecord& b) {
  return a.name_length == b.name_length && a.name_hash == b.name_hash &&
         a.record.name == b.record.name;
}

std::string Describe(const DecodedRecord& d) {
  const std::string ellipsis = d.name_length > kRegistrationNamePrefix ? "..." : "";
  return absl::StrCat(ParamKindName(d.record.kind), " '", d.record.name, ellipsis, "' ",
                      d.record.rows, "x", d.record.cols);
}

}  // namespace

PieceRect RecordPiece(const RegistrationRecord& r) {
  if (r.col_count == kAllColumns && r.col_begin == 0) {
    return PieceRect{r.row_begin, r.row_count, 0, r.cols};
  }
  return PieceRect{r.row_begin, r.row_count, r.col_begin, r.col_count};
}

uint64_t NameHash(absl::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : name) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string EncodeRegistration(const std::vector<RegistrationRecord>& records,
                               const std::vector<RegistrationRecord>& extras) {
  std::string out;
  out.reserve(kRegistrationHeaderBytes +
              (records.size() + extras.size()) * kRegistrationRecordBytes);
  out.append(kMagic, 4);
  PutU32(kRegistrationVersion, &out);
  PutU32(static_cast<uint32_t>(kRegistrationRecordBytes), &out);
  PutU32(static_cast<uint32_t>(extras.size()), &out);
  PutU64(records.size(), &out);
  for (const std::vector<RegistrationRecord>* list : {&records, &extras}) {
    for (const RegistrationRecord& r : *list) {
      const uint64_t length =
          std::min<uint64_t>(r.name.size(), std::numeric_limits<uint32_t>::max());
      PutU32(static_cast<uint32_t>(r.kind), &out);
      PutU32(static_cast<uint32_t>(length), &out);
      PutU64(NameHash(r.name), &out);
      PutU64(static_cast<uint64_t>(r.rows), &out);
      PutU64(static_cast<uint64_t>(r.cols), &out);
      PutU64(static_cast<uint64_t>(r.row_begin), &out);
      PutU64(static_cast<uint64_t>(r.row_count), &out);
      PutU64(static_cast<uint64_t>(r.col_begin), &out);
      PutU64(static_cast<uint64_t>(r.col_count), &out);
      PutU32(static_cast<uint32_t>(r.piece), &out);
      PutU32(static_cast<uint32_t>(list == &extras ? r.extra_of : -1), &out);
      const size_t prefix = std::min(r.name.size(), kRegistrationNamePrefix);
      out.append(r.name, 0, prefix);
      out.append(kRegistrationNamePrefix - prefix, '\0');
    }
  }
  return out;
}

absl::StatusOr<uint64_t> EncodedRegistrationBytes(absl::string_view header) {
  NORMUON_ASSIGN_OR_RETURN(const Header h, ReadHeader(header));
  // Both counts are bounded so that the product cannot overflow (2^40 records is far beyond any
  // registration).
  if (h.count > (uint64_t{1} << 40)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the encoding declares ", h.count, " records, more than any registration"));
  }
  return kRegistrationHeaderBytes + (h.count + h.extras) * kRegistrationRecordBytes;
}

absl::StatusOr<std::vector<DecodedRecord>> DecodeRegistration(absl::string_view bytes) {
  NORMUON_ASSIGN_OR_RETURN(const Header header, ReadHeader(bytes));
  const uint64_t body = bytes.size() - kRegistrationHeaderBytes;
  const uint64_t total = header.count + header.extras;
  if (header.count > body || body % kRegistrationRecordBytes != 0 ||
      body / kRegistrationRecordBytes != total) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the encoding declares ", header.count, " records and ", header.extras,
        " extra pieces but holds ", body, " bytes after its header (", kRegistrationRecordBytes,
        " bytes per record)"));
  }
  std::vector<DecodedRecord> records(total);
  for (uint64_t i = 0; i < total; ++i) {
    const size_t at = kRegistrationHeaderBytes + i * kRegistrationRecordBytes;
    DecodedRecord& d = records[i];
    const uint32_t kind = GetU32(bytes, at);
    if (kind != static_cast<uint32_t>(ParamKind::kMatrix) &&
        kind != static_cast<uint32_t>(ParamKind::kAdamW)) {
      return absl::InvalidArgumentError(
          absl::StrCat("record ", i, " has kind ", kind, ", neither matrix (0) nor adamw (1)"));
    }
    d.record.kind = static_cast<ParamKind>(kind);
    d.name_length = GetU32(bytes, at + 4);
    d.name_hash = GetU64(bytes, at + 8);
    d.record.rows = static_cast<int64_t>(GetU64(bytes, at + 16));
    d.record.cols = static_cast<int64_t>(GetU64(bytes, at + 24));
    d.record.row_begin = static_cast<int64_t>(GetU64(bytes, at + 32));
    d.record.row_count = static_cast<int64_t>(GetU64(bytes, at + 40));
    d.record.col_begin = static_cast<int64_t>(GetU64(bytes, at + 48));
    d.record.col_count = static_cast<int64_t>(GetU64(bytes, at + 56));
    d.record.piece = static_cast<int32_t>(GetU32(bytes, at + 64));
    d.record.extra_of = static_cast<int32_t>(GetU32(bytes, at + 68));
    const bool extra = i >= header.count;
    if (extra ? (d.record.extra_of < 0 || static_cast<uint64_t>(d.record.extra_of) >= header.count)
              : d.record.extra_of != -1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "record ", i, " has extra_of = ", d.record.extra_of,
          extra ? absl::StrCat(", not a parameter's record in [0, ", header.count, ")")
                : ", but a parameter's record has -1"));
    }
    const size_t prefix = std::min<size_t>(d.name_length, kRegistrationNamePrefix);
    d.record.name = std::string(bytes.substr(at + 72, prefix));
  }
  return records;
}

absl::Status CheckRegistrationHeadersAgree(const std::vector<std::string>& per_rank_headers) {
  if (per_rank_headers.empty()) {
    return absl::InvalidArgumentError("registration check: no ranks given");
  }
  std::vector<uint64_t> counts;
  for (size_t r = 0; r < per_rank_headers.size(); ++r) {
    absl::StatusOr<Header> header = ReadHeader(per_rank_headers[r]);
    if (!header.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("registration check: rank ", r, ": ", header.status().message()));
    }
    counts.push_back(header->count);
  }
  for (size_t r = 1; r < counts.size(); ++r) {
    if (counts[r] != counts[0]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rank ", r, " registered ", counts[r], " parameters but rank 0 registered ", counts[0]));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckRegistrationsAgree(const std::vector<std::string>& per_rank_encodings) {
  NORMUON_RETURN_IF_ERROR(CheckRegistrationHeadersAgree(per_rank_encodings));
  const size_t world = per_rank_encodings.size();
  std::vector<std::vector<DecodedRecord>> decoded(world);
  for (size_t r = 0; r < world; ++r) {
    absl::StatusOr<std::vector<DecodedRecord>> d = DecodeRegistration(per_rank_encodings[r]);
    if (!d.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("registration check: rank ", r, ": ", d.status().message()));
    }
    decoded[r] = *std::move(d);
  }
  // The parameters' records (the headers agree on their number); the extra pieces follow.
  NORMUON_ASSIGN_OR_RETURN(const Header first, ReadHeader(per_rank_encodings[0]));
  const size_t count = static_cast<size_t>(first.count);
  for (size_t i = 0; i < count; ++i) {
    const DecodedRecord& ref = decoded[0][i];
    for (size_t r = 1; r < world; ++r) {
      const DecodedRecord& d = decoded[r][i];
      if (d.record.kind != ref.record.kind || !SameName(d, ref) ||
          d.record.rows != ref.record.rows || d.record.cols != ref.record.cols) {
        return absl::InvalidArgumentError(absl::StrCat("rank ", r, " registered parameter ", i,
                                                       " as ", Describe(d), " but rank 0 has ",
                                                       Describe(ref)));
      }
    }
  }
  // Each rank's extra pieces, by parameter, in the rank's order; an extra piece is of a matrix
  // and has its parameter's shape.
  std::vector<std::vector<std::vector<const RegistrationRecord*>>> extras(
      world, std::vector<std::vector<const RegistrationRecord*>>(count));
  for (size_t r = 0; r < world; ++r) {
    for (size_t e = count; e < decoded[r].size(); ++e) {
      const RegistrationRecord& x = decoded[r][e].record;
      const RegistrationRecord& of = decoded[r][static_cast<size_t>(x.extra_of)].record;
      if (of.kind != ParamKind::kMatrix || x.kind != ParamKind::kMatrix || x.rows != of.rows ||
          x.cols != of.cols) {
        return absl::InvalidArgumentError(absl::StrCat(
            "rank ", r, " registered an extra piece of parameter ", x.extra_of, " as ",
            Describe(decoded[r][e]), " but the parameter is ", Describe(decoded[r][x.extra_of]),
            " (extra pieces are of matrices, with their shape)"));
      }
      extras[r][static_cast<size_t>(x.extra_of)].push_back(&x);
    }
  }
  for (size_t i = 0; i < count; ++i) {
    const DecodedRecord& ref = decoded[0][i];
    MatrixShape shape{ref.record.name, ref.record.rows, ref.record.cols};
    if (ref.name_length > kRegistrationNamePrefix) shape.name += "...";
    // One piece of whole rows everywhere: the row cover check and its messages. Any column
    // piece, or several pieces on a rank: the tiling.
    bool whole_rows = true;
    std::vector<RankPiece> pieces;
    for (size_t r = 0; r < world; ++r) {
      const RegistrationRecord& rec = decoded[r][i].record;
      if (!(rec.col_begin == 0 && rec.col_count == kAllColumns) || !extras[r][i].empty()) {
        whole_rows = false;
      }
      pieces.push_back(RankPiece{static_cast<int>(r), RecordPiece(rec), rec.piece});
      for (const RegistrationRecord* x : extras[r][i]) {
        pieces.push_back(RankPiece{static_cast<int>(r), RecordPiece(*x), x->piece});
      }
    }
    absl::Status s;
    if (whole_rows) {
      std::vector<RowShard> shards(world);
      for (size_t r = 0; r < world; ++r) {
        shards[r] = RowShard{decoded[r][i].record.row_begin, decoded[r][i].record.row_count};
      }
      s = ValidateCover(shape, shards);
    } else {
      s = ValidateTiling(shape, pieces);
    }
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter ", i, " (", ParamKindName(ref.record.kind), "): ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace normuon::sharding
