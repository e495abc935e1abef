// checkpoint_fuzz: the checkpoint loader (runtime/checkpoint_format.h and
// normuon_load_checkpoint). A checkpoint is read back from disk, possibly written by another
// version, another world size, or damaged; the loader must reject anything inconsistent before it
// writes any state.
//
// Input: u8 mode, u8 flags (bit 0: recompute the header and section CRCs before use, so that
// mutations reach the contents instead of stopping at the checksums; bit 1: the runtime of mode
// 2 uses neuron axis = columns, whose v is one value per column of each row block, replicated;
// bit 2: mode 2 registers "w" in two row blocks of 4 rows (row_splits)), then
//   mode % 3 == 0: the bytes of an index file (DecodeIndex);
//   mode % 3 == 1: the bytes of a rank file (DecodeRankFile);
//   mode % 3 == 2: u32 index length, the index, u32 rank-0 length, rank 0's file, then rank 1's
//                  file (the rest): written as index.nmck, rank-0-of-1.nmck, rank-0-of-2.nmck
//                  and rank-1-of-2.nmck into a scratch directory, then loaded with
//                  normuon_load_checkpoint into a finalized CPU runtime holding matrix "w"
//                  (8 x 4, NorMuon group 0) and AdamW parameter "b" (8 x 1, group 1), with the
//                  neuron axis and row split of flags bits 1 and 2.
// Checks: decoding never crashes; what decodes passes ValidateIndex / ValidateRankFile and
// encodes back to the very same bytes; a rank file that decodes is checked against a decoded
// index without crashing; a load that fails leaves every state buffer and the step counters
// bitwise unchanged and names the problem; a load that succeeds leaves a runtime that steps.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "base/crc32.h"
#include "fuzz/fuzz_input.h"
#include "runtime/checkpoint_format.h"
#include "normuon/normuon.h"

namespace {

namespace ck = normuon::checkpoint;
using normuon_fuzz::FuzzInput;

void PutU32(uint32_t v, std::string* b, size_t at) {
  for (int i = 0; i < 4; ++i) (*b)[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint64_t GetU64(const std::string& b, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(b[at + i])) << (8 * i);
  }
  return v;
}

// Rewrites the header CRC and every complete section's CRC (checkpoint_format.h's framing).
void FixChecksums(std::string* b) {
  if (b->size() < ck::kHeaderBytes) return;
  PutU32(normuon::Crc32(absl::string_view(*b).substr(0, 16)), b, 16);
  size_t at = ck::kHeaderBytes;
  while (b->size() - at >= ck::kSectionOverheadBytes) {
    const uint64_t length = GetU64(*b, at + 8);
    if (length > b->size() - at - ck::kSectionOverheadBytes) return;
    const size_t crc_at = at + 16 + static_cast<size_t>(length);
    PutU32(normuon::Crc32(absl::string_view(*b).substr(at, 16 + length)), b, crc_at);
    at = crc_at + 4;
  }
}

std::string Take(FuzzInput& in, bool length_prefixed) {
  if (!length_prefixed) return in.Rest();
  const uint32_t n = in.U32();
  std::string s;
  for (uint32_t i = 0; i < n && !in.empty(); ++i) s.push_back(static_cast<char>(in.U8()));
  return s;
}

void DecodeIndexBytes(const std::string& bytes) {
  auto index = ck::DecodeIndex(bytes, "<fuzz index>");
  if (!index.ok()) {
    FUZZ_CHECK(!index.status().message().empty());
    return;
  }
  FUZZ_CHECK(ck::ValidateIndex(*index, "<fuzz index>").ok());
  FUZZ_CHECK(ck::EncodeIndex(*index) == bytes);
}

void DecodeRankBytes(const std::string& bytes) {
  auto file = ck::DecodeRankFile(bytes, "<fuzz rank>");
  if (!file.ok()) {
    FUZZ_CHECK(!file.status().message().empty());
    return;
  }
  FUZZ_CHECK(ck::ValidateRankFile(*file, "<fuzz rank>").ok());
  FUZZ_CHECK(ck::EncodeRankFile(*file) == bytes);
}

// The scratch directory of this process (removed at exit).
const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/ckfuzz.XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    FUZZ_CHECK(mkdtemp(buf.data()) != nullptr);
    auto* d = new std::string(buf.data());
    std::atexit([] {
      const std::string& s = ScratchDir();
      for (const char* f : {"index.nmck", "rank-0-of-1.nmck", "rank-0-of-2.nmck",
                            "rank-1-of-2.nmck"}) {
        unlink((s + "/" + f).c_str());
      }
      rmdir(s.c_str());
    });
    return d;
  }();
  return *dir;
}

void WriteFile(const std::string& name, const std::string& bytes) {
  const std::string path = ScratchDir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  FUZZ_CHECK(f != nullptr);
  FUZZ_CHECK(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
  FUZZ_CHECK(std::fclose(f) == 0);
}

struct State {
  std::vector<float> momentum, v, exp_avg, exp_avg_sq;
  int64_t adamw_step = 0;
  normuon_step_info_t info;
  bool operator==(const State& o) const {
    auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
    };
    return same(momentum, o.momentum) && same(v, o.v) && same(exp_avg, o.exp_avg) &&
           same(exp_avg_sq, o.exp_avg_sq) && adamw_step == o.adamw_step &&
           info.steps_taken == o.info.steps_taken && info.steps_skipped == o.info.steps_skipped;
  }
};

// v_count: 8 (one per row), or with the column axis 4 per row block.
State ReadState(normuon_runtime_t rt, size_t v_count) {
  State s;
  s.momentum.resize(32);
  s.v.resize(v_count);
  s.exp_avg.resize(8);
  s.exp_avg_sq.resize(8);
  FUZZ_CHECK(normuon_get_state(rt, 0, NORMUON_STATE_MOMENTUM, s.momentum.data(), 128) == 0);
  FUZZ_CHECK(normuon_get_state(rt, 0, NORMUON_STATE_SECOND_MOMENT, s.v.data(), v_count * 4) ==
             0);
  FUZZ_CHECK(normuon_get_state(rt, 1, NORMUON_STATE_EXP_AVG, s.exp_avg.data(), 32) == 0);
  FUZZ_CHECK(normuon_get_state(rt, 1, NORMUON_STATE_EXP_AVG_SQ, s.exp_avg_sq.data(), 32) == 0);
  FUZZ_CHECK(normuon_get_state(rt, 1, NORMUON_STATE_STEP, &s.adamw_step, 8) == 0);
  normuon_step_info_init(&s.info);
  FUZZ_CHECK(normuon_step_result(rt, &s.info) == 0);
  return s;
}

void LoadFiles(const std::string& index, const std::string& rank0, const std::string& rank1,
               bool column_axis, bool two_blocks) {
  // The decoders first, on their own.
  DecodeIndexBytes(index);
  DecodeRankBytes(rank0);
  auto x = ck::DecodeIndex(index, "index");
  auto r = ck::DecodeRankFile(rank0, "rank 0");
  if (x.ok() && r.ok()) {
    for (uint32_t s = 0; s < 2; ++s) ck::CheckRankFileMatchesIndex(*r, *x, s, "rank").IgnoreError();
  }

  WriteFile("index.nmck", index);
  WriteFile("rank-0-of-1.nmck", rank0);
  WriteFile("rank-0-of-2.nmck", rank0);
  WriteFile("rank-1-of-2.nmck", rank1);

  normuon_config_t cfg;
  normuon_config_init(&cfg);
  if (column_axis) cfg.neuron_axis = NORMUON_NEURON_COLUMNS;
  normuon_runtime_t rt = 0;
  FUZZ_CHECK(normuon_create(&cfg, 0, &rt) == NORMUON_SUCCESS);
  std::vector<float> w(32), gw(32), b(8), gb(8);
  for (int i = 0; i < 32; ++i) {
    w[i] = 0.01f * static_cast<float>(i % 7);
    gw[i] = 0.1f * static_cast<float>(i % 5) - 0.2f;
  }
  for (int i = 0; i < 8; ++i) {
    b[i] = 0.1f * static_cast<float>(i);
    gb[i] = 0.05f * static_cast<float>(i % 3);
  }
  normuon_param_desc_t d;
  normuon_param_desc_init(&d);
  d.name = "w";
  d.rows = 8;
  d.cols = 4;
  d.row_count = 8;
  d.param = w.data();
  d.grad = gw.data();
  d.group = NORMUON_GROUP_MATRIX_DEFAULT;
  const int64_t splits[2] = {4, 4};
  if (two_blocks) {
    d.row_splits = splits;
    d.num_row_splits = 2;
  }
  normuon_param_t id = -1;
  FUZZ_CHECK(normuon_register_matrix(rt, &d, &id) == NORMUON_SUCCESS);
  d.row_splits = nullptr;
  d.num_row_splits = 0;
  d.name = "b";
  d.cols = 1;
  d.param = b.data();
  d.grad = gb.data();
  d.group = NORMUON_GROUP_ADAMW_DEFAULT;
  FUZZ_CHECK(normuon_register_adamw(rt, &d, &id) == NORMUON_SUCCESS);
  FUZZ_CHECK(normuon_finalize(rt) == NORMUON_SUCCESS);
  FUZZ_CHECK(normuon_step(rt, 0.01f, 0.0f, nullptr) == NORMUON_SUCCESS);  // non-zero state

  const size_t v_count = column_axis ? (two_blocks ? 8 : 4) : 8;
  const State before = ReadState(rt, v_count);
  const std::vector<float> w_before = w, b_before = b;
  const normuon_status_t st = normuon_load_checkpoint(rt, ScratchDir().c_str());
  // Loading never touches the parameters themselves.
  FUZZ_CHECK(std::memcmp(w.data(), w_before.data(), 128) == 0);
  FUZZ_CHECK(std::memcmp(b.data(), b_before.data(), 32) == 0);
  if (st != NORMUON_SUCCESS) {
    const char* msg = normuon_last_error(rt);
    FUZZ_CHECK(msg != nullptr && msg[0] != '\0');
    FUZZ_CHECK(ReadState(rt, v_count) == before);
  } else {
    // What was loaded is a state the runtime can step from.
    const normuon_status_t step = normuon_step(rt, 0.01f, 0.0f, nullptr);
    FUZZ_CHECK(step == NORMUON_SUCCESS || step == NORMUON_ERROR_NONFINITE);
  }
  FUZZ_CHECK(normuon_destroy(rt) == NORMUON_SUCCESS);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t mode = in.U8() % 3;
  const uint8_t flags = in.U8();
  const bool fix = (flags & 1) != 0;
  if (mode == 2) {
    std::string index = Take(in, true);
    std::string rank0 = Take(in, true);
    std::string rank1 = Take(in, false);
    if (fix) {
      FixChecksums(&index);
      FixChecksums(&rank0);
      FixChecksums(&rank1);
    }
    LoadFiles(index, rank0, rank1, (flags & 2) != 0, (flags & 4) != 0);
    return 0;
  }
  std::string bytes = in.Rest();
  if (fix) FixChecksums(&bytes);
  if (mode == 0) {
    DecodeIndexBytes(bytes);
  } else {
    DecodeRankBytes(bytes);
  }
  return 0;
}
