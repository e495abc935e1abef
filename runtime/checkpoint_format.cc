// The checkpoint file format (layout and rules in checkpoint_format.h). Encoding appends fields
// byte by byte, little-endian; decoding first frames the file (header, then every section's
// length and CRC) and only then parses payloads, with a bounds check before every field, so no
// read ever leaves the buffer and no vector is sized from an unchecked length. Every failure is
// InvalidArgument (the checkpoint the caller pointed at is unusable) with a message that names
// the file, the section and, where there is one, the parameter and the values seen.
#include "runtime/checkpoint_format.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/crc32.h"
#include "base/status_macros.h"
#include "runtime/checkpoint_checks.h"

namespace normuon::checkpoint {
namespace {

using namespace internal;  // NOLINT: the shared checks of checkpoint_checks.h

constexpr uint32_t kHeaderCrcBytes = 16;  // magic, version, section_count
constexpr size_t kSectionHeaderBytes = 16;  // tag, flags, length
constexpr size_t kMagicBytes = 8;


uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));  // a scalar bit cast; the bytes are then written in order
  return u;
}

float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

uint32_t LoadU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

uint64_t LoadU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void StoreU32(uint32_t v, char* p) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xffu);
}

void StoreU64(uint64_t v, char* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xffu);
}

// A tag or magic for messages: printable ASCII as is, other bytes as \xNN.
std::string Printable(absl::string_view bytes) {
  std::string out;
  for (char c : bytes) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\'' && c != '\\') {
      out.push_back(c);
    } else {
      out += absl::StrFormat("\\x%02x", u);
    }
  }
  return out;
}

// Appends fields to a file image, little-endian, byte by byte.
class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}

  void U32(uint32_t v) {
    char b[4];
    StoreU32(v, b);
    out_->append(b, 4);
  }
  void U64(uint64_t v) {
    char b[8];
    StoreU64(v, b);
    out_->append(b, 8);
  }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void F32(float f) { U32(FloatBits(f)); }
  void Bytes(absl::string_view s) { out_->append(s.data(), s.size()); }
  void Floats(const std::vector<float>& v) {
    const size_t at = out_->size();
    out_->resize(at + 4 * v.size());
    char* p = &(*out_)[at];
    for (size_t i = 0; i < v.size(); ++i) StoreU32(FloatBits(v[i]), p + 4 * i);
  }
  // A name: u32 length, then the bytes.
  void Name(const std::string& name) {
    U32(static_cast<uint32_t>(name.size()));
    Bytes(name);
  }

  // Sections: BeginSection writes tag, flags and a length placeholder; EndSection patches the
  // length and appends the CRC of the whole section.
  size_t BeginSection(const char* tag) {
    const size_t at = out_->size();
    Bytes(absl::string_view(tag, 4));
    U32(0);  // flags
    U64(0);  // length, patched by EndSection
    return at;
  }
  void EndSection(size_t at) {
    const uint64_t length = out_->size() - at - kSectionHeaderBytes;
    StoreU64(length, &(*out_)[at + 8]);
    U32(Crc32(absl::string_view(out_->data() + at, out_->size() - at)));
  }

  void Header(const char* magic, uint32_t section_count) {
    Bytes(absl::string_view(magic, kMagicBytes));
    U32(kFormatVersion);
    U32(section_count);
    U32(Crc32(absl::string_view(out_->data() + out_->size() - kHeaderCrcBytes, kHeaderCrcBytes)));
  }

 private:
  std::string* out_;
};

// One framed section: its tag, payload, number and where it starts in the file.
struct Section {
  std::string tag;
  absl::string_view payload;
  uint32_t number = 0;
  size_t offset = 0;
};

// "checkpoint file 'f', section #1 'CONF' (at byte 20)".
std::string Where(absl::string_view file, const Section& s) {
  return absl::StrCat("checkpoint file '", file, "', section #", s.number, " '", Printable(s.tag),
                      "' (at byte ", s.offset, ")");
}


// Reads one section's payload; every read checks that the field fits in what is left.
class Reader {
 public:
  Reader(absl::string_view payload, std::string where) : p_(payload), where_(std::move(where)) {}

  const std::string& where() const { return where_; }
  uint64_t remaining() const { return p_.size() - at_; }

  absl::Status U32(uint32_t* v, absl::string_view field) {
    NORMUON_RETURN_IF_ERROR(Need(4, field));
    *v = LoadU32(p_.data() + at_);
    at_ += 4;
    return absl::OkStatus();
  }
  absl::Status U64(uint64_t* v, absl::string_view field) {
    NORMUON_RETURN_IF_ERROR(Need(8, field));
    *v = LoadU64(p_.data() + at_);
    at_ += 8;
    return absl::OkStatus();
  }
  absl::Status I64(int64_t* v, absl::string_view field) {
    uint64_t u;
    NORMUON_RETURN_IF_ERROR(U64(&u, field));
    *v = static_cast<int64_t>(u);
    return absl::OkStatus();
  }
  absl::Status F32(float* v, absl::string_view field) {
    uint32_t u;
    NORMUON_RETURN_IF_ERROR(U32(&u, field));
    *v = BitsFloat(u);
    return absl::OkStatus();
  }
  // A u32 length (at most kMaxNameBytes) followed by that many bytes.
  absl::Status Name(std::string* name, absl::string_view field) {
    uint32_t length;
    NORMUON_RETURN_IF_ERROR(U32(&length, absl::StrCat(field, " length")));
    if (length > kMaxNameBytes) {
      return Bad(absl::StrCat(where_, ": ", field, " length = ", length, " exceeds the limit of ",
                              kMaxNameBytes, " bytes: the file is inconsistent"));
    }
    NORMUON_RETURN_IF_ERROR(Need(length, field));
    name->assign(p_.data() + at_, length);
    at_ += length;
    return absl::OkStatus();
  }
  // count floats; the caller has checked count against remaining() already, this re-checks.
  absl::Status Floats(uint64_t count, std::vector<float>* out, absl::string_view field) {
    if (count > remaining() / 4) return Need(count * 4, field);
    out->resize(count);
    const char* p = p_.data() + at_;
    for (uint64_t i = 0; i < count; ++i) (*out)[i] = BitsFloat(LoadU32(p + 4 * i));
    at_ += count * 4;
    return absl::OkStatus();
  }
  // Every byte of the payload must have been read.
  absl::Status ExpectEnd() const {
    if (remaining() == 0) return absl::OkStatus();
    return Bad(absl::StrCat(where_, ": ", remaining(), " bytes left after the last field (payload ",
                            p_.size(), " bytes): the file is inconsistent"));
  }

 private:
  absl::Status Need(uint64_t bytes, absl::string_view field) const {
    if (bytes <= remaining()) return absl::OkStatus();
    return Bad(absl::StrCat(where_, ": field '", field, "' needs ", bytes,
                            " bytes at payload offset ", at_, " but only ", remaining(),
                            " remain: the file is inconsistent"));
  }

  absl::string_view p_;
  uint64_t at_ = 0;
  std::string where_;
};

// Checks the header and splits the file into sections, verifying each section's length and CRC.
// kind / magic: what the caller expects; other_kind / other_magic: the other file kind, named in
// the message when the caller got the wrong one.
absl::StatusOr<std::vector<Section>> Frame(absl::string_view bytes, absl::string_view file,
                                           absl::string_view kind, const char* magic,
                                           absl::string_view other_kind, const char* other_magic) {
  const std::string who = absl::StrCat("checkpoint file '", file, "'");
  if (bytes.size() >= kMagicBytes) {
    const absl::string_view found = bytes.substr(0, kMagicBytes);
    if (found == absl::string_view(other_magic, kMagicBytes)) {
      return Bad(absl::StrCat(who, " is a checkpoint ", other_kind, ", not a checkpoint ", kind));
    }
    if (found != absl::string_view(magic, kMagicBytes)) {
      return Bad(absl::StrCat(who, " does not start with the magic '", magic, "' of a checkpoint ",
                              kind, " (found '", Printable(found),
                              "'): not a normuon checkpoint file"));
    }
  }
  // magic and version sit at the same offsets in every version: the version is judged before
  // the rest of the header, whose layout a later version may change.
  if (bytes.size() >= kMagicBytes + 4) {
    const uint32_t version = LoadU32(bytes.data() + kMagicBytes);
    if (version != kFormatVersion) {
      return Bad(absl::StrCat(who, " has format version ", version,
                              "; this build reads version ", kFormatVersion));
    }
  }
  if (bytes.size() < kHeaderBytes) {
    return Bad(absl::StrCat(who, " is truncated: ", bytes.size(), " bytes, the header alone is ",
                            kHeaderBytes));
  }
  const uint32_t stored_header_crc = LoadU32(bytes.data() + kHeaderCrcBytes);
  const uint32_t header_crc = Crc32(bytes.substr(0, kHeaderCrcBytes));
  if (stored_header_crc != header_crc) {
    return Bad(absl::StrFormat("%s: header checksum mismatch (stored 0x%08x, computed 0x%08x): "
                               "the file is corrupt",
                               who, stored_header_crc, header_crc));
  }
  const uint32_t count = LoadU32(bytes.data() + 12);
  const uint64_t body = bytes.size() - kHeaderBytes;
  if (count > body / kSectionOverheadBytes) {
    return Bad(absl::StrCat(who, " is truncated: the header declares ", count,
                            " sections but the remaining ", body, " bytes can hold at most ",
                            body / kSectionOverheadBytes));
  }
  std::vector<Section> sections;
  sections.reserve(count);
  size_t at = kHeaderBytes;
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t left = bytes.size() - at;
    if (left < kSectionHeaderBytes) {
      return Bad(absl::StrCat(who, " is truncated: section #", i, " of ", count, " at byte ", at,
                              " needs a ", kSectionHeaderBytes, "-byte section header, ", left,
                              " bytes remain"));
    }
    Section s;
    s.tag.assign(bytes.data() + at, 4);
    s.number = i;
    s.offset = at;
    const uint32_t flags = LoadU32(bytes.data() + at + 4);
    const uint64_t length = LoadU64(bytes.data() + at + 8);
    const uint64_t room = left - kSectionHeaderBytes;
    if (room < 4 || length > room - 4) {
      return Bad(absl::StrCat(Where(file, s), " declares ", length, " payload bytes but only ",
                              room, " bytes remain for the payload and its 4-byte checksum: "
                              "the file is truncated or corrupt"));
    }
    const size_t section_bytes = kSectionHeaderBytes + static_cast<size_t>(length);
    const uint32_t stored = LoadU32(bytes.data() + at + section_bytes);
    const uint32_t computed = Crc32(bytes.substr(at, section_bytes));
    if (stored != computed) {
      return Bad(absl::StrFormat("%s: checksum mismatch (stored 0x%08x, computed 0x%08x): the "
                                 "file is corrupt",
                                 Where(file, s), stored, computed));
    }
    if (flags != 0) {
      return Bad(absl::StrCat(Where(file, s), ": flags = ", flags, ", format version ",
                              kFormatVersion, " writes 0"));
    }
    s.payload = bytes.substr(at + kSectionHeaderBytes, static_cast<size_t>(length));
    sections.push_back(s);
    at += section_bytes + 4;
  }
  if (at != bytes.size()) {
    return Bad(absl::StrCat(who, ": ", bytes.size() - at,
                            " unexpected bytes after the last of its ",
                            count, " sections (at byte ", at, ")"));
  }
  return sections;
}

absl::Status ExpectTag(absl::string_view file, const Section& s, const char* tag) {
  if (s.tag == absl::string_view(tag, 4)) return absl::OkStatus();
  return Bad(absl::StrCat(Where(file, s), ": expected a '", tag, "' section here"));
}

}  // namespace

std::string RankFileName(int64_t rank, int64_t world) {
  return absl::StrCat("rank-", rank, "-of-", world, ".nmck");
}

std::string JoinPath(absl::string_view dir, absl::string_view name) {
  if (dir.empty()) return std::string(name);
  if (dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

std::string SecondMomentName(uint32_t m) {
  switch (m) {
    case kSecondMomentNone:
      return "0 (no second moment)";
    case kSecondMomentPerRow:
      return "1 (one v per row: neuron axis = rows)";
    case kSecondMomentPerElement:
      return "2 (one v per element: AdaMuon)";
    case kSecondMomentPerColumn:
      return "3 (one v per column of each row block, on every rank: neuron axis = columns)";
  }
  return absl::StrCat(m, " (unknown)");
}

std::string KindName(ParamKind kind) {
  switch (kind) {
    case ParamKind::kMatrix:
      return "matrix";
    case ParamKind::kAdamW:
      return "adamw";
  }
  return absl::StrCat("kind ", static_cast<uint32_t>(kind));
}

std::string EncodeIndex(const Index& x) {
  std::string out;
  Writer w(&out);
  w.Header(kIndexMagic, 3);
  size_t at = w.BeginSection(kConfTag);
  w.U64(x.save_id);
  w.U32(x.world_size);
  w.U32(x.variant);
  w.U32(x.ns_dtype);
  w.U32(x.ns_steps);
  w.U32(x.nesterov);
  w.F32(x.ns_eps);
  w.U32(x.matrix_second_moment);
  w.I64(x.steps_taken);
  w.I64(x.steps_skipped);
  w.U32(static_cast<uint32_t>(x.groups.size()));
  for (const GroupInfo& g : x.groups) {
    w.U32(static_cast<uint32_t>(g.kind));
    w.F32(g.beta1);
    w.F32(g.beta2);
    w.F32(g.eps);
  }
  w.EndSection(at);
  at = w.BeginSection(kParmTag);
  w.U32(static_cast<uint32_t>(x.params.size()));
  for (const ParamInfo& q : x.params) {
    w.Name(q.name);
    w.U32(static_cast<uint32_t>(q.kind));
    w.U32(q.group);
    w.I64(q.rows);
    w.I64(q.cols);
    w.I64(q.adamw_step);
  }
  w.EndSection(at);
  at = w.BeginSection(kShrdTag);
  for (const std::vector<RowRange>& rank : x.ranges) {
    for (const RowRange& g : rank) {
      w.I64(g.begin);
      w.I64(g.count);
    }
  }
  w.EndSection(at);
  return out;
}

std::string EncodeRankFile(const RankFile& f) {
  std::string out;
  uint64_t state_bytes = 0;
  for (const ShardState& s : f.shards) state_bytes += 4 * (s.first.size() + s.second.size());
  out.reserve(kHeaderBytes + state_bytes + 128 * (f.shards.size() + 1));
  Writer w(&out);
  w.Header(kRankMagic, static_cast<uint32_t>(1 + f.shards.size()));
  size_t at = w.BeginSection(kRankTag);
  w.U64(f.save_id);
  w.U32(f.rank);
  w.U32(f.world_size);
  w.U32(f.param_count);
  w.U32(static_cast<uint32_t>(f.shards.size()));
  w.U32(f.matrix_second_moment);
  w.EndSection(at);
  for (const ShardState& s : f.shards) {
    at = w.BeginSection(s.kind == ParamKind::kMatrix ? kMatrixTag : kAdamWTag);
    w.U32(s.param);
    w.Name(s.name);
    w.I64(s.row_begin);
    w.I64(s.row_count);
    w.I64(s.cols);
    w.I64(s.step);
    w.Floats(s.first);
    w.Floats(s.second);
    w.EndSection(at);
  }
  return out;
}

absl::StatusOr<Index> DecodeIndex(absl::string_view bytes, absl::string_view file) {
  NORMUON_ASSIGN_OR_RETURN(std::vector<Section> sections,
                   Frame(bytes, file, "index", kIndexMagic, "rank file", kRankMagic));
  if (sections.size() != 3) {
    return Bad(absl::StrCat("checkpoint file '", file, "' has ", sections.size(),
                            " sections; an index has 3 (CONF, PARM, SHRD)"));
  }
  Index x;
  {
    NORMUON_RETURN_IF_ERROR(ExpectTag(file, sections[0], kConfTag));
    Reader r(sections[0].payload, Where(file, sections[0]));
    uint32_t group_count;
    NORMUON_RETURN_IF_ERROR(r.U64(&x.save_id, "save_id"));
    NORMUON_RETURN_IF_ERROR(r.U32(&x.world_size, "world_size"));
    NORMUON_RETURN_IF_ERROR(r.U32(&x.variant, "variant"));
    NORMUON_RETURN_IF_ERROR(r.U32(&x.ns_dtype, "ns_dtype"));
    NORMUON_RETURN_IF_ERROR(r.U32(&x.ns_steps, "ns_steps"));
    NORMUON_RETURN_IF_ERROR(r.U32(&x.nesterov, "nesterov"));
    NORMUON_RETURN_IF_ERROR(r.F32(&x.ns_eps, "ns_eps"));
    NORMUON_RETURN_IF_ERROR(r.U32(&x.matrix_second_moment, "matrix_second_moment"));
    NORMUON_RETURN_IF_ERROR(r.I64(&x.steps_taken, "steps_taken"));
    NORMUON_RETURN_IF_ERROR(r.I64(&x.steps_skipped, "steps_skipped"));
    NORMUON_RETURN_IF_ERROR(r.U32(&group_count, "group_count"));
    if (group_count > kMaxGroups || group_count * kGroupEntryBytes != r.remaining()) {
      return Bad(absl::StrCat(r.where(), ": group_count = ", group_count, " needs ",
                              group_count * kGroupEntryBytes, " bytes, the section has ",
                              r.remaining(), " left: the file is inconsistent"));
    }
    x.groups.resize(group_count);
    for (uint32_t g = 0; g < group_count; ++g) {
      uint32_t kind;
      NORMUON_RETURN_IF_ERROR(r.U32(&kind, absl::StrCat("group ", g, " kind")));
      x.groups[g].kind = static_cast<GroupKind>(kind);
      NORMUON_RETURN_IF_ERROR(r.F32(&x.groups[g].beta1, absl::StrCat("group ", g, " beta1")));
      NORMUON_RETURN_IF_ERROR(r.F32(&x.groups[g].beta2, absl::StrCat("group ", g, " beta2")));
      NORMUON_RETURN_IF_ERROR(r.F32(&x.groups[g].eps, absl::StrCat("group ", g, " eps")));
    }
    NORMUON_RETURN_IF_ERROR(r.ExpectEnd());
  }
  {
    NORMUON_RETURN_IF_ERROR(ExpectTag(file, sections[1], kParmTag));
    Reader r(sections[1].payload, Where(file, sections[1]));
    uint32_t count;
    NORMUON_RETURN_IF_ERROR(r.U32(&count, "param_count"));
    if (count > kMaxParams || count > r.remaining() / (kParamEntryFixedBytes + 1)) {
      return Bad(absl::StrCat(r.where(), ": param_count = ", count, " cannot fit in the ",
                              r.remaining(), " bytes left (limit ", kMaxParams,
                              "): the file is inconsistent"));
    }
    x.params.resize(count);
    for (uint32_t p = 0; p < count; ++p) {
      ParamInfo& q = x.params[p];
      const std::string who = absl::StrCat("parameter ", p);
      NORMUON_RETURN_IF_ERROR(r.Name(&q.name, absl::StrCat(who, " name")));
      const std::string named = ParamWho(p, q.name);
      uint32_t kind;
      NORMUON_RETURN_IF_ERROR(r.U32(&kind, absl::StrCat(named, " kind")));
      q.kind = static_cast<ParamKind>(kind);
      NORMUON_RETURN_IF_ERROR(r.U32(&q.group, absl::StrCat(named, " group")));
      NORMUON_RETURN_IF_ERROR(r.I64(&q.rows, absl::StrCat(named, " rows")));
      NORMUON_RETURN_IF_ERROR(r.I64(&q.cols, absl::StrCat(named, " cols")));
      NORMUON_RETURN_IF_ERROR(r.I64(&q.adamw_step, absl::StrCat(named, " adamw_step")));
    }
    NORMUON_RETURN_IF_ERROR(r.ExpectEnd());
  }
  {
    NORMUON_RETURN_IF_ERROR(ExpectTag(file, sections[2], kShrdTag));
    Reader r(sections[2].payload, Where(file, sections[2]));
    if (x.world_size < 1 || x.world_size > kMaxWorldSize) {
      return Bad(absl::StrCat(WhereSection(file, kConfTag), ": world_size = ", x.world_size,
                              " is outside [1, ", kMaxWorldSize, "]"));
    }
    const uint64_t need = uint64_t{x.world_size} * x.params.size() * kRangeBytes;
    if (need != r.remaining()) {
      return Bad(absl::StrCat(r.where(), ": holds ", r.remaining(), " bytes; world_size ",
                              x.world_size, " x ", x.params.size(), " parameters x ", kRangeBytes,
                              " bytes = ", need, ": the file is inconsistent"));
    }
    x.ranges.assign(x.world_size, std::vector<RowRange>(x.params.size()));
    for (uint32_t rank = 0; rank < x.world_size; ++rank) {
      for (size_t p = 0; p < x.params.size(); ++p) {
        NORMUON_RETURN_IF_ERROR(r.I64(&x.ranges[rank][p].begin, "row_begin"));
        NORMUON_RETURN_IF_ERROR(r.I64(&x.ranges[rank][p].count, "row_count"));
      }
    }
    NORMUON_RETURN_IF_ERROR(r.ExpectEnd());
  }
  NORMUON_RETURN_IF_ERROR(ValidateIndex(x, file));
  return x;
}

absl::StatusOr<RankFile> DecodeRankFile(absl::string_view bytes, absl::string_view file) {
  NORMUON_ASSIGN_OR_RETURN(std::vector<Section> sections,
                   Frame(bytes, file, "rank file", kRankMagic, "index", kIndexMagic));
  if (sections.empty()) {
    return Bad(absl::StrCat("checkpoint file '", file, "' has no sections; a rank file starts "
                            "with a 'RANK' section"));
  }
  RankFile f;
  uint32_t entry_count;
  {
    NORMUON_RETURN_IF_ERROR(ExpectTag(file, sections[0], kRankTag));
    Reader r(sections[0].payload, Where(file, sections[0]));
    NORMUON_RETURN_IF_ERROR(r.U64(&f.save_id, "save_id"));
    NORMUON_RETURN_IF_ERROR(r.U32(&f.rank, "rank"));
    NORMUON_RETURN_IF_ERROR(r.U32(&f.world_size, "world_size"));
    NORMUON_RETURN_IF_ERROR(r.U32(&f.param_count, "param_count"));
    NORMUON_RETURN_IF_ERROR(r.U32(&entry_count, "entry_count"));
    NORMUON_RETURN_IF_ERROR(r.U32(&f.matrix_second_moment, "matrix_second_moment"));
    NORMUON_RETURN_IF_ERROR(r.ExpectEnd());
    if (f.matrix_second_moment > kMaxSecondMoment) {
      return Bad(absl::StrCat(r.where(), ": ", SecondMomentRangeProblem(f.matrix_second_moment)));
    }
  }
  if (sections.size() != uint64_t{entry_count} + 1) {
    return Bad(absl::StrCat(Where(file, sections[0]), ": entry_count = ", entry_count,
                            " but the file has ", sections.size() - 1,
                            " entry sections: the file is inconsistent"));
  }
  f.shards.resize(entry_count);
  for (uint32_t i = 0; i < entry_count; ++i) {
    const Section& sec = sections[i + 1];
    ShardState& s = f.shards[i];
    if (sec.tag == absl::string_view(kMatrixTag, 4)) {
      s.kind = ParamKind::kMatrix;
    } else if (sec.tag == absl::string_view(kAdamWTag, 4)) {
      s.kind = ParamKind::kAdamW;
    } else {
      return Bad(absl::StrCat(Where(file, sec), ": expected a '", kMatrixTag, "' or '", kAdamWTag,
                              "' entry"));
    }
    Reader r(sec.payload, Where(file, sec));
    NORMUON_RETURN_IF_ERROR(r.U32(&s.param, "param"));
    NORMUON_RETURN_IF_ERROR(r.Name(&s.name, "name"));
    const std::string who = absl::StrCat(r.where(), ": ", ParamWho(s.param, s.name));
    NORMUON_RETURN_IF_ERROR(r.I64(&s.row_begin, "row_begin"));
    NORMUON_RETURN_IF_ERROR(r.I64(&s.row_count, "row_count"));
    NORMUON_RETURN_IF_ERROR(r.I64(&s.cols, "cols"));
    NORMUON_RETURN_IF_ERROR(r.I64(&s.step, "step"));
    if (s.row_begin < 0 || !ShapeOk(s.row_count, s.cols)) {
      return Bad(absl::StrCat(who, ": row_begin = ", s.row_begin, ", row_count x cols = ",
                              s.row_count, " x ", s.cols,
                              ": needs row_begin >= 0, both counts > 0, product at most 2^40"));
    }
    // Sizes are checked against the payload before anything is allocated.
    const uint64_t first = static_cast<uint64_t>(s.row_count * s.cols);
    uint64_t second;
    if (SecondIsPerColumn(s.kind, f.matrix_second_moment)) {
      // v's length is the rest of the section: whole floats, after the momentum, a positive
      // multiple of cols.
      const uint64_t left = r.remaining();
      if (left % 4 != 0 || left / 4 < first) {
        return Bad(absl::StrCat(who, ": ", s.row_count, " rows x ", s.cols, " cols need ",
                                first * 4, " bytes of momentum followed by whole floats of v, "
                                "the section holds ",
                                left, ": the file is inconsistent"));
      }
      second = left / 4 - first;
      const std::string problem = PerColumnProblem(second, s.cols);
      if (!problem.empty()) {
        return Bad(absl::StrCat(who, ": after the momentum of ", s.row_count, " rows x ", s.cols,
                                " cols the section ", problem, ": the file is inconsistent"));
      }
    } else {
      second = SecondCount(s.kind, f.matrix_second_moment, s.row_count, s.cols);
    }
    if ((first + second) * 4 != r.remaining()) {
      return Bad(absl::StrCat(who, ": ", s.row_count, " rows x ", s.cols, " cols need ",
                              (first + second) * 4, " bytes of state, the section holds ",
                              r.remaining(), ": the file is inconsistent"));
    }
    const bool matrix = s.kind == ParamKind::kMatrix;
    NORMUON_RETURN_IF_ERROR(r.Floats(first, &s.first, matrix ? "momentum" : "exp_avg"));
    NORMUON_RETURN_IF_ERROR(r.Floats(second, &s.second, matrix ? "v" : "exp_avg_sq"));
    NORMUON_RETURN_IF_ERROR(r.ExpectEnd());
  }
  NORMUON_RETURN_IF_ERROR(ValidateRankFile(f, file));
  return f;
}

}  // namespace normuon::checkpoint
