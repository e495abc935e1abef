// The on-disk format of optimizer checkpoints (issue 5, "Checkpoints"): one index file per
// checkpoint and one rank file per rank that saved it. Pure C++: encoding, decoding and
// validation, with no dependency on the runtime, so every corner of the format is unit-tested on
// its own (tests/checkpoint/checkpoint_format_test.cc). runtime_checkpoint.cc fills these
// structs from backend memory and applies them back, reading and writing the files with
// base/file_io.h.
//
// Format version 1. Every integer is little-endian whatever the host, written and read byte by
// byte (never a memcpy of a struct); floats are their IEEE-754 binary32 bit patterns written as
// u32, so NaN payloads, -0 and denormals survive bit for bit.
//
//   file    := header section{section_count}            (nothing may follow the last section)
//   header  := magic[8] u32 version u32 section_count u32 header_crc          (20 bytes)
//              magic "NMCKINDX" (index) or "NMCKRANK" (rank file); header_crc = CRC32 of the
//              16 bytes before it. magic and version are at these offsets in every version.
//   section := tag[4] u32 flags(=0) u64 length payload[length] u32 crc
//              crc = CRC32 of tag, flags, length and payload (everything but itself)
//   CRC32 is the IEEE 802.3 / zlib polynomial (reflected 0xEDB88320, init and final xor
//   0xFFFFFFFF), computed by zlib itself (base/crc32.h): Python's zlib.crc32 gives the same
//   value.
//
// Index ("index.nmck"), exactly 3 sections in this order:
//   "CONF": u64 save_id  u32 world_size  u32 variant  u32 ns_dtype  u32 ns_steps  u32 nesterov
//           f32 ns_eps  u32 matrix_second_moment  i64 steps_taken  i64 steps_skipped
//           u32 group_count, then per group: u32 kind (0 NorMuon, 1 AdamW) f32 beta1 f32 beta2
//           f32 eps
//   "PARM": u32 param_count, then per parameter in registration order: u32 name_length
//           name[name_length] (UTF-8, no terminator)  u32 kind (0 matrix, 1 AdamW)  u32 group
//           i64 rows  i64 cols  i64 adamw_step (rank 0's AdamW step count; 0 for matrices)
//   "SHRD": for each saved rank r = 0..world_size-1, for each parameter: i64 row_begin
//           i64 row_count (the rows rank r held; length = world_size * param_count * 16)
// Rank file ("rank-<r>-of-<W>.nmck"), 1 + entry_count sections:
//   "RANK": u64 save_id  u32 rank  u32 world_size  u32 param_count  u32 entry_count
//           u32 matrix_second_moment
//   then one section per parameter the rank held rows of (row_count > 0), in increasing
//   parameter order, with tag "MATX" (matrix) or "ADMW" (AdamW):
//           u32 param  u32 name_length  name  i64 row_begin  i64 row_count  i64 cols
//           i64 step (AdamW bias-correction count; 0 for matrices)
//           f32 first[row_count * cols]   matrix: momentum; AdamW: exp_avg
//           f32 second[n]                 matrix: v, n = row_count when matrix_second_moment
//                                         is 1, row_count * cols when it is 2, 0 when it is 0,
//                                         and when it is 3 the rest of the section (see below);
//                                         AdamW: exp_avg_sq, n = row_count * cols
//
// save_id is one random value per save, shared by the index and every rank file of that save, so
// a rank file left over from an earlier save in the same directory is recognized. variant and
// ns_dtype are the values of normuon_variant_t / normuon_ns_dtype_t; the format stores them but
// does not interpret them. matrix_second_moment (the layout of a matrix's v) is:
//   0  none (Muon);
//   1  one v per row (NorMuon variants, neuron axis = rows): a shard holds the v of its rows;
//   2  one v per element (AdaMuon): a shard holds the v of its elements;
//   3  one v per column of each row block (NorMuon variants, neuron axis = columns): v is
//      replicated, the same on every rank, so every MATX entry holds the whole v of its matrix,
//      blocks * cols values (block b's cols values at b * cols; blocks is the number of row
//      blocks, normuon_param_desc_t.num_row_splits, or 1). n is not derived from row_count:
//      it is what the section holds after `first`, n = (length - fixed fields) / 4 - row_count *
//      cols, and must be a positive multiple of cols with n / cols <= the matrix's rows. The
//      format does not record the row splits themselves: a reader compares n with the v it
//      keeps (a different number of blocks is a different row split). Rank files that held no
//      rows of a matrix hold no entry for it (their copy of v is the same); a loader takes the
//      v of each matrix from one saved rank that held rows of it.
// A reader that predates value 3 rejects such files by their matrix_second_moment.
//
// Decoders check the length of every field before reading it and reject, with a message naming
// the file, the section (tag, number, byte offset), the parameter and the values: truncated
// files, wrong magic, other versions, checksum mismatches, and inconsistent contents (ranges
// that overlap, leave gaps or leave the matrix, duplicate names, sizes that disagree, a rank
// file that does not belong to its index).
#ifndef NORMUON_CHECKPOINT_FORMAT_H_
#define NORMUON_CHECKPOINT_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/param_kind.h"

namespace normuon::checkpoint {

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kHeaderBytes = 20;
inline constexpr size_t kSectionOverheadBytes = 20;  // tag, flags, length, crc
inline constexpr char kIndexMagic[] = "NMCKINDX";    // 8 bytes on disk, no terminator
inline constexpr char kRankMagic[] = "NMCKRANK";
inline constexpr char kIndexFileName[] = "index.nmck";
// Limits that keep every size computation far from overflow; a file beyond them is rejected.
inline constexpr uint32_t kMaxWorldSize = 1u << 20;
inline constexpr uint32_t kMaxParams = 1u << 24;
inline constexpr uint32_t kMaxGroups = 1u << 16;
inline constexpr uint32_t kMaxNameBytes = 1u << 16;
inline constexpr int64_t kMaxElements = int64_t{1} << 40;  // rows * cols of one parameter

// The values of matrix_second_moment (the layout of a matrix's v, see above).
inline constexpr uint32_t kSecondMomentNone = 0;        // Muon
inline constexpr uint32_t kSecondMomentPerRow = 1;      // NorMuon variants, neuron axis = rows
inline constexpr uint32_t kSecondMomentPerElement = 2;  // AdaMuon
inline constexpr uint32_t kSecondMomentPerColumn = 3;   // neuron axis = columns, replicated
inline constexpr uint32_t kMaxSecondMoment = 3;

// "0 (no second moment)", "1 (one v per row)", ...: a matrix_second_moment value for messages.
std::string SecondMomentName(uint32_t matrix_second_moment);

// "rank-<rank>-of-<world>.nmck".
std::string RankFileName(int64_t rank, int64_t world);

// dir + "/" + name (no "/" added when dir already ends with one).
std::string JoinPath(absl::string_view dir, absl::string_view name);

// A parameter's kind: the one enum of base/param_kind.h (its values are the format's).
using ::normuon::ParamKind;
enum class GroupKind : uint32_t { kNorMuon = 0, kAdamW = 1 };

// "matrix" / "adamw", or "kind <n>" for a value a file holds outside the enum.
std::string KindName(ParamKind kind);

struct GroupInfo {
  GroupKind kind = GroupKind::kNorMuon;
  float beta1 = 0, beta2 = 0, eps = 0;
};

struct ParamInfo {
  std::string name;
  ParamKind kind = ParamKind::kMatrix;
  uint32_t group = 0;
  int64_t rows = 0, cols = 0;
  int64_t adamw_step = 0;  // AdamW: rank 0's bias-correction step count; matrices: 0
};

struct RowRange {
  int64_t begin = 0, count = 0;
};

// The contents of index.nmck.
struct Index {
  uint64_t save_id = 0;
  uint32_t world_size = 1;
  uint32_t variant = 0;
  uint32_t ns_dtype = 0;
  uint32_t ns_steps = 0;
  uint32_t nesterov = 0;
  float ns_eps = 0;
  uint32_t matrix_second_moment = 1;  // 0 to 3, see above
  int64_t steps_taken = 0, steps_skipped = 0;
  std::vector<GroupInfo> groups;
  std::vector<ParamInfo> params;
  std::vector<std::vector<RowRange>> ranges;  // [saved rank][param]
};

// One parameter's state as one rank held it.
struct ShardState {
  uint32_t param = 0;  // index into Index::params
  ParamKind kind = ParamKind::kMatrix;
  std::string name;
  int64_t row_begin = 0, row_count = 0, cols = 0;
  int64_t step = 0;           // AdamW step count; 0 for matrices
  std::vector<float> first;   // row_count * cols: momentum / exp_avg
  std::vector<float> second;  // matrix: v (row_count, row_count * cols, blocks * cols or
                              // empty, by matrix_second_moment); AdamW: exp_avg_sq
};

// The contents of rank-<r>-of-<W>.nmck.
struct RankFile {
  uint64_t save_id = 0;
  uint32_t rank = 0, world_size = 1, param_count = 0;
  uint32_t matrix_second_moment = 1;
  std::vector<ShardState> shards;  // increasing param order, one per parameter with rows
};

// Checks what the decoders check about an index's contents (everything but the framing):
// world_size in [1, kMaxWorldSize]; nesterov 0 or 1; matrix_second_moment 0 to 3; step
// counts >= 0;
// group kinds known; each parameter's name non-empty, unique and at most kMaxNameBytes, kind
// known, group existing and of the matching kind, rows and cols > 0 with rows * cols <=
// kMaxElements, adamw_step >= 0 (0 for matrices); ranges[r][p] for every saved rank and
// parameter, inside [0, rows], and the non-empty ones of each parameter disjoint and covering
// every row. `file` names the file in messages.
absl::Status ValidateIndex(const Index& index, absl::string_view file);

// Checks a rank file's own consistency: rank < world_size; matrix_second_moment 0 to 3; shards
// in strictly increasing param order, each param < param_count, name non-empty, row_count > 0,
// cols > 0, row_begin >= 0, row_count * cols <= kMaxElements, arrays of the sizes above (with
// matrix_second_moment 3, a matrix's v a positive multiple of cols, at most kMaxElements), step
// >= 0 (0 for matrices).
absl::Status ValidateRankFile(const RankFile& file_contents, absl::string_view file);

// Checks that a rank file belongs to an index and holds what the index says saved rank
// `expected_rank` held: same save_id, world_size, param_count and matrix_second_moment, rank ==
// expected_rank, and exactly one shard for each parameter with rows on that rank, with the
// index's name, kind, cols and row range (and with matrix_second_moment 3, a matrix's v of at
// most rows row blocks).
absl::Status CheckRankFileMatchesIndex(const RankFile& file_contents, const Index& index,
                                       uint32_t expected_rank, absl::string_view file);

// Encode the layout above, values as given (the writer validates first; the tests also encode
// inconsistent contents to check that the decoders reject them).
std::string EncodeIndex(const Index& index);
std::string EncodeRankFile(const RankFile& file_contents);

// Decode and validate (ValidateIndex / ValidateRankFile). `file` names the file in messages.
absl::StatusOr<Index> DecodeIndex(absl::string_view bytes, absl::string_view file);
absl::StatusOr<RankFile> DecodeRankFile(absl::string_view bytes, absl::string_view file);

}  // namespace normuon::checkpoint

#endif  // NORMUON_CHECKPOINT_FORMAT_H_
